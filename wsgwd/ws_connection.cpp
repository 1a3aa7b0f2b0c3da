#include "ws_connection.h"

#include "close_frame.h"
#include "lws_workarounds.h"
#include "peer_address.h"
#include "socket_stats.h"
#include "utf8.h"
#include "ws_shard.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

namespace wsgw::daemon {

namespace {

// A connection that has not finished closing this long after close() is dropped.
constexpr int kCloseTimeoutS = 5;

} // namespace

WsConnection::WsConnection(ShardState &shard, lws *wsi, std::size_t endpointIndex, bool compressed,
                           std::optional<ConnectionId> id)
    : Connection(id                      ? *id
                 : shard.settings.idPrefix ? ConnectionId::random(*shard.settings.idPrefix)
                                           : ConnectionId::random()),
      shard_(shard), wsi_(wsi), endpoint_(static_cast<std::uint32_t>(endpointIndex)),
      compressed_(compressed),
      out_(OutboundOptions{ep().slowConsumer.maxOutboundBytes, ep().slowConsumer.policy,
                           compressed ? std::size_t{1} : kCoalesceBytes}) {
    lastActivityMs = nowMs();
    // The handshake's bytes are not a sign of life after it: without this, the first idle check
    // took them for one, and a silent client was closed only after 1.5 times the idle timeout.
    rxBytesSeen_ = tcpBytesReceived(lws_get_socket_fd(wsi)).value_or(0);
}

const WsEndpoint &WsConnection::ep() const { return shard_.settings.endpoints[endpoint_]; }

SendStatus WsConnection::send(const MessagePtr &msg) {
    if (closing_) {
        shard_.counters.framesDropped.add();
        return SendStatus::Closed;
    }
    const std::uint64_t droppedBefore = out_.stats().dropped;
    const SendStatus status = out_.push(msg);
    shard_.counters.framesDropped.add(out_.stats().dropped - droppedBefore);
    if (out_.closing()) {
        // The Close policy: the queue is gone and the close begun (1008); lws does the rest.
        shard_.counters.slowConsumerCloses.add();
        close(out_.closeCode(), out_.closeReason());
        return SendStatus::Dropped;
    }
    if (status != SendStatus::Queued) return status;
    if (!compressed_ && !writeRequested_) {
        // Written when the shard has run this wake-up's commands (flushPending): whatever
        // they queued for this connection goes out in one send(), without a trip through
        // the event loop. (flushPending checks lws' own backlog, so the lws state is
        // touched once per connection and wake-up, not once per message.)
        if (!pendingFlush_) {
            pendingFlush_ = true;
            shard_.toFlush.push_back(this);
        }
    } else {
        requestWrite();
    }
    return SendStatus::Queued;
}

void WsConnection::flushPending() {
    pendingFlush_ = false;
    if (!out_.hasQueued() || writeRequested_ || closing_) return;
    if (lws_partial_buffered(wsi_)) {
        requestWrite();
        return;
    }
    if (writeRaw() < 0) {
        closing_ = true;
        out_.clearQueued();
        lws_set_timeout(wsi_, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        return;
    }
    if (out_.hasQueued()) requestWrite();
}

void WsConnection::close(std::uint16_t code, std::string_view reason) {
    if (closing_) return;
    closing_ = true;
    setClose(code, reason);
    // If the peer never lets us write the close frame, drop it anyway.
    lws_set_timeout(wsi_, PENDING_TIMEOUT_USER_OK, kCloseTimeoutS);
    requestWrite();
}

void WsConnection::setClose(std::uint16_t code, std::string_view reason) {
    closeCode_ = code;
    reason = cutCloseReason(reason);
    if (reason.empty())
        closeReason_.reset();
    else if (closeReason_)
        closeReason_->assign(reason);
    else
        closeReason_ = std::make_unique<std::string>(reason);
}

void WsConnection::lwsCloseReason(std::uint16_t code) {
    std::string_view reason = closeReason();
    // lws copies the reason into its close frame; its parameter is not const.
    lws_close_reason(wsi_, static_cast<lws_close_status>(code),
                     reinterpret_cast<unsigned char *>(const_cast<char *>(reason.data())), reason.size());
}

std::string WsConnection::remoteAddress() const { return peerAddress(lws_get_socket_fd(wsi_)); }

std::string_view WsConnection::endpoint() const { return ep().path; }

int WsConnection::onWriteable() {
    writeRequested_ = false;
    // The close is lws' now: it writes our close frame and then waits (5 s at most) for the
    // client's before it closes the socket. Another -1 from here would cut that wait short,
    // and a client still sending would get a reset that can swallow the close frame.
    if (closeHandedOver_) return 0;
    // A compressed write may read its input until the next WRITEABLE (lws drains the
    // deflate output over several callbacks); only now is the previous message free.
    out_.finishWrite();
    inflightCopy_ = nullptr;

    if (pingDue) {
        pingDue = false;
        // Not empty: lws 4.1 reports a pong to us only when it carries a payload.
        unsigned char buf[LWS_PRE + 4] = {};
        std::memcpy(buf + LWS_PRE, "wsgw", 4);
        if (lws_write(wsi_, buf + LWS_PRE, 4, LWS_WRITE_PING) < 0) return -1;
        if (out_.hasQueued() || closing_) requestWrite();
        return 0;
    }
    if (!out_.hasQueued()) {
        if (!closing_) return 0;
        lwsCloseReason(closeCode_);
        return -1;
    }
    int rc = compressed_ ? writeCompressed() : writeRaw();
    if (rc < 0) return -1;
    if (out_.hasQueued() || closing_) requestWrite();
    return 0;
}

int WsConnection::onReceive(const void *in, std::size_t len) {
    if (closeHandedOver_) return 0; // lws is closing politely: drop what still arrives
    if (rxDiscard_) return -1;
    touch();
    if (!rxActive_) {
        rxActive_ = true;
        rxBinary_ = lws_frame_is_binary(wsi_) != 0;
        rx_.clear();
        rxUtf8Whole_ = 0;
        if (compressed_ && !watched_) {
            watched_ = true;
            shard_.partialCompressed.push_back(id());
        }
    }
    const WsEndpoint &e = ep();
    if (rx_.size() + len > e.maxMessageBytes) {
        shard_.counters.oversizeCloses.add();
        return closeNow(close_code::kMessageTooBig,
                        "message too big: limit is " + std::to_string(e.maxMessageBytes) + " bytes");
    }
    rx_.append(static_cast<const char *>(in), len);
    // Text is checked as it arrives, from the last whole character on: the piece that makes a
    // message invalid closes the connection (RFC 6455 8.1), not the end of the message.
    if (!rxBinary_) {
        Utf8Prefix u = checkUtf8Prefix(std::string_view(rx_).substr(rxUtf8Whole_));
        if (!u.valid) return invalidUtf8();
        rxUtf8Whole_ += static_cast<std::uint32_t>(u.whole);
    }
    if (!lws_is_final_fragment(wsi_) || lws_remaining_packet_payload(wsi_) > 0) return 0;

    rxActive_ = false;
    if (e.rateLimit.perSecond > 0 && !takeToken(e.rateLimit)) {
        if (e.rateLimit.policy == RateLimit::Policy::Drop) {
            shard_.counters.rateLimitDrops.add();
            return 0;
        }
        shard_.counters.rateLimitCloses.add();
        return closeNow(close_code::kPolicyViolation,
                        "rate limit exceeded: at most " + std::to_string(e.rateLimit.perSecond) + " messages per second");
    }
    if (shard_.shard.hub().events().paused(e.path)) pauseReading(); // its backends' backpressure only
    if (!rxBinary_ && rxUtf8Whole_ != rx_.size()) return invalidUtf8(); // ends inside a character
    shard_.counters.messagesReceived.add();
    shard_.counters.bytesReceived.add(rx_.size());
    shard_.shard.message(*this, rxBinary_ ? Opcode::Binary : Opcode::Text, rx_, e.events);
    if (rx_.capacity() > 4 * kRxBufferSize) std::string().swap(rx_); // do not keep a big buffer idle
    return 0;
}

int WsConnection::invalidUtf8() {
    shard_.counters.invalidUtf8Closes.add();
    return closeNow(close_code::kInvalidPayload, "text message is not valid UTF-8");
}

void WsConnection::closeHandedOver() {
    // Not a close of ours: lws is failing the connection (or the client went away).
    if (!closing_) {
        closeSilentFailure(wsi_);
        scheduleFailCut(shard_, id());
    }
    closeHandedOver_ = true;
}

int WsConnection::onPeerClose(const void *in, std::size_t len) {
    touch();
    auto fault = checkCloseFrame(std::string_view(static_cast<const char *>(in), in ? len : 0));
    if (!fault) return 0;
    spdlog::debug("connection {}: client's close frame answered with {} ({})", id().toString(), fault->code,
                  fault->reason);
    closing_ = true;
    rxDiscard_ = true;
    closeHandedOver_ = true; // nothing more from WRITEABLE or RECEIVE
    out_.clearQueued();
    // lws 4.1 can only echo a client's close frame (lws_workarounds.h): ours goes out as raw
    // bytes, and the -1 has lws close TCP right after it (the client has closed already).
    writeCloseFrame(wsi_, fault->code, fault->reason);
    return -1;
}

void WsConnection::touch() {
    lastActivityMs = nowMs();
    pinged = false;
    // Move to the tail of the idle list: it is now the most recently active.
    if (shard_.idleTail == this) return;
    unlinkIdle();
    linkIdle();
}

void WsConnection::linkIdle() {
    prev = shard_.idleTail;
    next = nullptr;
    if (prev)
        prev->next = this;
    else
        shard_.idleHead = this;
    shard_.idleTail = this;
}

void WsConnection::unlinkIdle() {
    if (prev)
        prev->next = next;
    else if (shard_.idleHead == this)
        shard_.idleHead = next;
    if (next)
        next->prev = prev;
    else if (shard_.idleTail == this)
        shard_.idleTail = prev;
    prev = next = nullptr;
}

void WsConnection::schedulePing() {
    pingDue = true;
    pinged = true;
    requestWrite();
}

bool WsConnection::takeToken(const RateLimit &limit) {
    std::int64_t now = nowMs();
    if (tokensAtMs_ == 0) {
        tokens_ = static_cast<double>(limit.burst);
    } else {
        tokens_ = std::min<double>(limit.burst, tokens_ + (now - tokensAtMs_) * limit.perSecond / 1000.0);
    }
    tokensAtMs_ = now;
    if (tokens_ < 1.0) return false;
    tokens_ -= 1.0;
    return true;
}

bool WsConnection::messageInProgress() {
    // A closeNow() in the middle of a compressed message is ignored by lws until it has
    // inflated the rest, which it may never do: keep watching until lws has the close.
    if (rxActive_ && !stallHandled_ && (!closing_ || (rxDiscard_ && !closeHandedOver_))) return true;
    watched_ = false;
    return false;
}

void WsConnection::closeStalled() {
    stallHandled_ = true;
    shard_.counters.inflateStalls.add();
    if (!closing_) {
        spdlog::warn("connection {}: a compressed message stalled inside libwebsockets' permessage-deflate; "
                     "closing with 1011 so the client reconnects",
                     id().toString());
        closing_ = true;
        out_.clearQueued();
        setClose(close_code::kInternalError, "compressed message could not be completed; please reconnect");
    } else {
        spdlog::debug("connection {}: stuck inside permessage-deflate while closing with {}", id().toString(),
                      closeCode_);
    }
    rxDiscard_ = true;
    closeHandedOver_ = true; // nothing more from WRITEABLE or RECEIVE, should lws come back
    writeCloseFrameAndCut(wsi_, closeCode_, closeReason(), 1);
}

void WsConnection::cut(std::uint16_t code, std::string_view reason) {
    if (closeHandedOver_ || stallHandled_) return;
    closing_ = true;
    out_.clearQueued();
    setClose(code, reason);
    rxDiscard_ = true;
    closeHandedOver_ = true; // nothing more from WRITEABLE or RECEIVE
    writeCloseFrameAndCut(wsi_, code, closeReason(), 0);
}

void WsConnection::pauseReading() {
    if (rxPaused_) return;
    rxPaused_ = true;
    spdlog::debug("connection {}: reading paused (event backlog full)", id().toString());
    lws_rx_flow_control(wsi_, 0);
    shard_.pausedReading.push_back(id());
}

void WsConnection::resumeReading() {
    if (!rxPaused_) return;
    rxPaused_ = false;
    spdlog::debug("connection {}: reading resumed", id().toString());
    lws_rx_flow_control(wsi_, 1);
}

bool WsConnection::receivedSinceLastCheck() {
    auto bytes = tcpBytesReceived(lws_get_socket_fd(wsi_));
    if (!bytes || *bytes == rxBytesSeen_) return false;
    rxBytesSeen_ = *bytes;
    return true;
}

void WsConnection::requestWrite() {
    if (writeRequested_) return;
    writeRequested_ = true;
    lws_callback_on_writable(wsi_);
}

// Returning -1 from RECEIVE closes right away with the reason set here, except while lws is
// still handing out the inflated pieces of a compressed frame, where it ignores the -1: then
// the close frame goes out from the next WRITEABLE, and the kill timeout covers a peer that
// never lets us write. Whatever else the client sends meanwhile is dropped.
int WsConnection::closeNow(std::uint16_t code, const std::string &reason) {
    spdlog::debug("connection {}: closing at once with {} ({})", id().toString(), code, reason);
    closing_ = true;
    rxDiscard_ = true;
    out_.clearQueued();
    setClose(code, reason);
    lwsCloseReason(code);
    lws_set_timeout(wsi_, PENDING_TIMEOUT_USER_OK, kCloseTimeoutS);
    scheduleFailCut(shard_, id());
    requestWrite();
    return -1;
}

int WsConnection::writeRaw() {
    // lws writes (or keeps a copy of) what it is given at once, so the batch is done on return.
    const std::vector<MessagePtr> &batch = out_.startWrite(); // up to kCoalesceBytes; a large frame alone
    if (batch.empty()) return 0;                              // out of memory: try again later
    if (batch.size() == 1) {
        std::string_view frame = batch.front()->frame();
        if (lws_write(wsi_, reinterpret_cast<unsigned char *>(const_cast<char *>(frame.data())), frame.size(),
                      LWS_WRITE_HTTP) < 0)
            return -1;
        shard_.counters.messagesSent.add();
        shard_.counters.bytesSent.add(frame.size());
        out_.finishWrite();
        return 0;
    }
    std::string &buf = shard_.coalesce;
    buf.clear();
    for (const MessagePtr &m : batch) buf.append(m->frame());
    if (lws_write(wsi_, reinterpret_cast<unsigned char *>(buf.data()), buf.size(), LWS_WRITE_HTTP) < 0) return -1;
    shard_.counters.messagesSent.add(batch.size());
    shard_.counters.bytesSent.add(buf.size());
    out_.finishWrite();
    return 0;
}

int WsConnection::writeCompressed() {
    // One message per write (maxWriteBytes 1), in flight until the next WRITEABLE: lws reads it
    // until then (lws_workarounds.h).
    const std::vector<MessagePtr> &batch = out_.startWrite();
    if (batch.empty()) return 0; // out of memory: try again later
    MessagePtr msg = batch.front();
    if (msg->headroom() + msg->frameHeaderSize() < LWS_PRE) {
        // Made without room for lws (not by wsgwd's own API): copy once for this connection.
        msg = Message::create(msg->opcode(), msg->payload(), LWS_PRE);
        inflightCopy_ = msg;
    }
    auto type = msg->isText() ? LWS_WRITE_TEXT : LWS_WRITE_BINARY;
    if (lws_write(wsi_, const_cast<unsigned char *>(msg->data()), msg->size(), type) < 0) return -1;
    shard_.counters.messagesSent.add();
    shard_.counters.bytesSent.add(msg->size());
    return 0;
}

} // namespace wsgw::daemon
