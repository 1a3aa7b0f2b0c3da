#include "ws_server.h"

#include "listener.h"
#include "socket_stats.h"
#include "tls.h"
#include "utf8.h"

#include <ev.h>
#include <libwebsockets.h>
#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <strings.h>

#include <algorithm>
#include <queue>
#include <random>
#include <atomic>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>

namespace wsgw::daemon {

namespace {

// Per-connection receive buffer inside libwebsockets: messages larger than this arrive in pieces
// and are reassembled here. Small, because every idle connection holds one: 512 bytes keeps an
// idle connection at 2.3 KiB of wsgwd's memory (2 KiB buffers: 4.1 KiB; bench/compare row 5).
constexpr std::size_t kRxBufferSize = 512;
// Frames pending for one uncompressed connection are coalesced into writes of up to this size.
constexpr std::size_t kCoalesceBytes = 64 * 1024;
// A connection that has not finished closing this long after close() is dropped.
constexpr int kCloseTimeoutS = 5;
// How often the idle sweep runs.
constexpr lws_usec_t kSweepIntervalUs = 1 * LWS_USEC_PER_SEC;
// permessage-deflate inflate buffer (see enlargeInflateBuffer) and its log2 as lws wants it.
constexpr std::size_t kInflateBuffer = 64 * 1024;
constexpr const char *kInflateBufferPower = "16";
// A compressed message that makes no progress this long while the client sends nothing more is
// stuck inside libwebsockets (see enlargeInflateBuffer): the connection is closed with 1011.
constexpr std::int64_t kInflateStallMs = 3000;

std::int64_t nowMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

struct ShardState;
class WsConnection;

std::string headerValue(lws *wsi, lws_token_indexes token) {
    int len = lws_hdr_total_length(wsi, token);
    if (len <= 0) return {};
    std::string out(static_cast<std::size_t>(len) + 1, '\0');
    int n = lws_hdr_copy(wsi, out.data(), len + 1, token);
    if (n < 0) return {};
    out.resize(static_cast<std::size_t>(n));
    return out;
}

std::string peerAddress(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getpeername(fd, reinterpret_cast<sockaddr *>(&ss), &len) != 0) return "unknown";
    char ip[INET6_ADDRSTRLEN] = "";
    if (ss.ss_family == AF_INET) {
        auto *in = reinterpret_cast<sockaddr_in *>(&ss);
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        return std::string(ip) + ":" + std::to_string(ntohs(in->sin_port));
    }
    if (ss.ss_family == AF_INET6) {
        auto *in6 = reinterpret_cast<sockaddr_in6 *>(&ss);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], ip, sizeof ip);
            return std::string(ip) + ":" + std::to_string(ntohs(in6->sin6_port));
        }
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        return "[" + std::string(ip) + "]:" + std::to_string(ntohs(in6->sin6_port));
    }
    return "unknown";
}

} // namespace

struct WsServer::Impl {
    Impl(Hub &h, Metrics &m, WsServerOptions o) : hub(h), metrics(m), options(std::move(o)) {}

    Hub &hub;
    Metrics &metrics;
    WsServerOptions options;
    std::vector<std::unique_ptr<ShardState>> shards;
    std::atomic<bool> running{false};
    std::mutex stopMu;
    bool stopped = false;
    // tls: lws 4.1.6 gives every TLS vhost a client context of its own, which we never use, and
    // leaks it: at destruction it looks up its bookkeeping through an OpenSSL ex-data index that
    // the next shard's context creation has replaced. The vhosts share this one instead, which
    // lws leaves alone; it outlives them (their contexts are destroyed by stop()).
    std::unique_ptr<SSL_CTX, void (*)(SSL_CTX *)> unusedClientTls{nullptr, SSL_CTX_free};
};

namespace {

struct ShardState {
    ShardState(WsServer::Impl &s, std::size_t i)
        : server(s), settings(s.options), shard(s.hub.shard(i)), counters(s.metrics.shard(i)), index(i) {}

    WsServer::Impl &server;
    WsServerOptions settings; // this shard's copy: a reload swaps it on the shard's thread
    Shard &shard;
    ShardCounters &counters;
    std::size_t index;

    lws_context *context = nullptr; // set before the thread serves, cleared by stop() after join
    std::mutex wakeMu;              // guards `context` for wake-ups from other threads
    std::thread thread;
    std::atomic<bool> quit{false};
    std::atomic<bool> draining{false};
    std::atomic<std::size_t> connections{0};
    // The idle sweep's timer; `sul` first, so the callback can find its shard from it.
    struct SweepTimer {
        lws_sorted_usec_list_t sul;
        ShardState *owner;
    } sweepTimer{};

    // Connections ordered by their last activity, oldest first: the idle sweep stops at the
    // first one that is recent enough.
    WsConnection *idleHead = nullptr;
    WsConnection *idleTail = nullptr;

    // Protocol table for this shard's vhost: [0] for requests without a subprotocol, [1] takes
    // the name of whatever subprotocol the client asks for first (see confirmUpgrade), [2]
    // serves the listening socket.
    char echoedProtocol[64] = "wsgw-echo-subprotocol";
    lws_protocols protocols[4]{};

    int listenFd = -1;          // owned by `listener` once adopted
    lws *listener = nullptr;    // the adopted listening socket
    lws_vhost *vhost = nullptr;
    bool acceptErrorLogged = false;

    std::string coalesce; // scratch for coalesced raw writes

    // Connections with frames queued by the commands being drained, written after the drain.
    std::vector<WsConnection *> toFlush;

    // Connections that stopped reading while the event sinks were backed up (pause_reading).
    std::vector<ConnectionId> pausedReading;
    // Compressed connections with a message in progress, for the inflate stall watchdog.
    std::vector<ConnectionId> partialCompressed;
    // max_connection_lifetime_s: when each connection is due, earliest first.
    using Due = std::pair<std::int64_t, ConnectionId>;
    std::priority_queue<Due, std::vector<Due>, std::greater<>> lifetimes;
    std::minstd_rand jitter{std::random_device{}()};
    std::size_t drainInitial = 0; // connections when a drain began
    struct ev_loop *loop = nullptr; // this shard's epoll loop (libev), run by its thread

    // The endpoint for a request path; nullptr if none.
    const WsEndpoint *endpointFor(std::string_view path, std::size_t *at) const {
        for (std::size_t i = 0; i < settings.endpoints.size(); ++i) {
            if (settings.endpoints[i].path == path) {
                if (at) *at = i;
                return &settings.endpoints[i];
            }
        }
        return nullptr;
    }
};

int callback(lws *wsi, lws_callback_reasons reason, void *user, void *in, std::size_t len);

class WsConnection final : public Connection {
public:
    WsConnection(ShardState &shard, lws *wsi, std::size_t endpointIndex, bool compressed)
        : Connection(ConnectionId::random()), shard_(shard), wsi_(wsi),
          endpoint_(static_cast<std::uint32_t>(endpointIndex)), compressed_(compressed) {
        lastActivityMs = nowMs();
    }

    const WsEndpoint &ep() const { return shard_.settings.endpoints[endpoint_]; }
    std::size_t endpointIndex() const { return endpoint_; }

    SendStatus send(const MessagePtr &msg) override {
        if (closing_) {
            shard_.counters.framesDropped.add();
            return SendStatus::Closed;
        }
        std::size_t bytes = msg->frame().size();
        const WsEndpoint &e = ep();
        if (queuedBytes_ + bytes > e.maxOutboundBytes && queuedBytes_ > 0) {
            switch (e.slowConsumer) {
            case WsEndpoint::SlowConsumerPolicy::DropNewest:
                shard_.counters.framesDropped.add();
                return SendStatus::Dropped;
            case WsEndpoint::SlowConsumerPolicy::DropOldest:
                // Keep the newest; never the frame being written (it is no longer queued).
                while (queueSize() > 0 && queuedBytes_ + bytes > e.maxOutboundBytes) {
                    pop();
                    shard_.counters.framesDropped.add();
                }
                break;
            case WsEndpoint::SlowConsumerPolicy::Close:
                // A consumer this far behind would hold memory for everyone: cut it off.
                shard_.counters.framesDropped.add(queueSize() + 1);
                shard_.counters.slowConsumerCloses.add();
                clearQueue();
                close(close_code::kPolicyViolation, "slow consumer: outbound queue full");
                return SendStatus::Dropped;
            }
        }
        queue_.push_back(msg);
        queuedBytes_ += bytes;
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

    // After a drain: writes what the drain queued (see send()); if lws still holds part of an
    // earlier write, waits for WRITEABLE instead. A failed write closes the connection.
    void flushPending() {
        pendingFlush_ = false;
        if (queueSize() == 0 || writeRequested_ || closing_) return;
        if (lws_partial_buffered(wsi_)) {
            requestWrite();
            return;
        }
        if (writeRaw() < 0) {
            closing_ = true;
            clearQueue();
            lws_set_timeout(wsi_, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            return;
        }
        if (queueSize() > 0) requestWrite();
    }

    void close(std::uint16_t code, std::string_view reason) override {
        if (closing_) return;
        closing_ = true;
        closeCode_ = code;
        closeReason_.assign(reason.substr(0, 123));
        // If the peer never lets us write the close frame, drop it anyway.
        lws_set_timeout(wsi_, PENDING_TIMEOUT_USER_OK, kCloseTimeoutS);
        requestWrite();
    }

    std::string remoteAddress() const override { return peerAddress(lws_get_socket_fd(wsi_)); }
    std::string_view endpoint() const override { return ep().path; }

    // LWS_CALLBACK_SERVER_WRITEABLE. Returns -1 to have lws close the connection.
    int onWriteable() {
        writeRequested_ = false;
        // The close is lws' now: it writes our close frame and then waits (5 s at most) for the
        // client's before it closes the socket. Another -1 from here would cut that wait short,
        // and a client still sending would get a reset that can swallow the close frame.
        if (closeHandedOver_) return 0;
        // A compressed write may read its input until the next WRITEABLE (lws drains the
        // deflate output over several callbacks); only now is the previous message free.
        inflight_ = nullptr;

        if (pingDue) {
            pingDue = false;
            // Not empty: lws 4.1 reports a pong to us only when it carries a payload.
            unsigned char buf[LWS_PRE + 4] = {};
            std::memcpy(buf + LWS_PRE, "wsgw", 4);
            if (lws_write(wsi_, buf + LWS_PRE, 4, LWS_WRITE_PING) < 0) return -1;
            if (queueSize() > 0 || closing_) requestWrite();
            return 0;
        }
        if (queueSize() == 0) {
            if (!closing_) return 0;
            lws_close_reason(wsi_, static_cast<lws_close_status>(closeCode_),
                             reinterpret_cast<unsigned char *>(closeReason_.data()), closeReason_.size());
            return -1;
        }
        int rc = compressed_ ? writeCompressed() : writeRaw();
        if (rc < 0) return -1;
        if (queueSize() > 0 || closing_) requestWrite();
        return 0;
    }

    // LWS_CALLBACK_RECEIVE: a piece of a message. Returns -1 to close (after lws_close_reason).
    int onReceive(const void *in, std::size_t len) {
        if (closeHandedOver_) return 0; // lws is closing politely: drop what still arrives
        if (rxDiscard_) return -1;
        touch();
        if (!rxActive_) {
            rxActive_ = true;
            rxBinary_ = lws_frame_is_binary(wsi_) != 0;
            rx_.clear();
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
        if (!lws_is_final_fragment(wsi_) || lws_remaining_packet_payload(wsi_) > 0) return 0;

        rxActive_ = false;
        if (e.ratePerSecond > 0 && !takeToken(e)) {
            if (e.rateDropInsteadOfClose) {
                shard_.counters.rateLimitDrops.add();
                return 0;
            }
            shard_.counters.rateLimitCloses.add();
            return closeNow(close_code::kPolicyViolation,
                            "rate limit exceeded: at most " + std::to_string(e.ratePerSecond) + " messages per second");
        }
        if (shard_.shard.hub().events().paused()) pauseReading();
        if (!rxBinary_ && !isValidUtf8(rx_)) {
            shard_.counters.invalidUtf8Closes.add();
            return closeNow(close_code::kInvalidPayload, "text message is not valid UTF-8");
        }
        shard_.counters.messagesReceived.add();
        shard_.counters.bytesReceived.add(rx_.size());
        shard_.shard.message(*this, rxBinary_ ? Opcode::Binary : Opcode::Text, rx_, e.events);
        if (rx_.capacity() > 4 * kRxBufferSize) std::string().swap(rx_); // do not keep a big buffer idle
        return 0;
    }

    void closeHandedOver() { closeHandedOver_ = true; }

    void touch() {
        lastActivityMs = nowMs();
        pinged = false;
        // Move to the tail of the idle list: it is now the most recently active.
        if (shard_.idleTail == this) return;
        unlinkIdle();
        linkIdle();
    }

    void linkIdle() {
        prev = shard_.idleTail;
        next = nullptr;
        if (prev)
            prev->next = this;
        else
            shard_.idleHead = this;
        shard_.idleTail = this;
    }

    void unlinkIdle() {
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

    void schedulePing() {
        pingDue = true;
        pinged = true;
        requestWrite();
    }

    bool isClosing() const { return closing_; }

    // The inbound token bucket: refilled at ratePerSecond up to rateBurst; false when empty.
    bool takeToken(const WsEndpoint &e) {
        std::int64_t now = nowMs();
        if (tokensAtMs_ == 0) {
            tokens_ = static_cast<double>(e.rateBurst);
        } else {
            tokens_ = std::min<double>(e.rateBurst, tokens_ + (now - tokensAtMs_) * e.ratePerSecond / 1000.0);
        }
        tokensAtMs_ = now;
        if (tokens_ < 1.0) return false;
        tokens_ -= 1.0;
        return true;
    }

    // For the inflate stall watchdog: whether a message is still in progress; drops the watch
    // when it is not.
    bool messageInProgress() {
        // A closeNow() in the middle of a compressed message is ignored by lws until it has
        // inflated the rest, which it may never do: keep watching until lws has the close.
        if (rxActive_ && !stallHandled_ && (!closing_ || (rxDiscard_ && !closeHandedOver_))) return true;
        watched_ = false;
        return false;
    }

    // The inflate stall: the client sent a whole compressed message that lws cannot finish (or,
    // under load, lws' inflate failed on it). lws is stuck on this connection's input and would
    // not get to a WRITEABLE, so the close frame is written here (1011, or the code closeNow()
    // chose), and the connection cut a second later.
    void closeStalled() {
        stallHandled_ = true;
        shard_.counters.inflateStalls.add();
        if (!closing_) {
            spdlog::warn("connection {}: a compressed message stalled inside libwebsockets' permessage-deflate; "
                         "closing with 1011 so the client reconnects",
                         id().toString());
            closing_ = true;
            clearQueue();
            closeCode_ = close_code::kInternalError;
            closeReason_ = "compressed message could not be completed; please reconnect";
        } else {
            spdlog::debug("connection {}: stuck inside permessage-deflate while closing with {}", id().toString(),
                          closeCode_);
        }
        rxDiscard_ = true;
        closeHandedOver_ = true; // nothing more from WRITEABLE or RECEIVE, should lws come back
        // A whole close frame, written raw (lws 4.1 keeps LWS_WRITE_CLOSE to itself; a close
        // frame is never compressed).
        unsigned char frame[LWS_PRE + 4 + 123];
        unsigned char *p = frame + LWS_PRE;
        std::size_t n = std::min<std::size_t>(closeReason_.size(), 123);
        p[0] = 0x88; // FIN + close
        p[1] = static_cast<unsigned char>(2 + n);
        p[2] = static_cast<unsigned char>(closeCode_ >> 8);
        p[3] = static_cast<unsigned char>(closeCode_ & 0xff);
        std::memcpy(p + 4, closeReason_.data(), n);
        (void)lws_write(wsi_, p, 4 + n, LWS_WRITE_HTTP); // the cut below follows either way
        lws_set_timeout(wsi_, PENDING_TIMEOUT_USER_OK, 1);
    }

    // Stops reading from this client until resumeReading(): its messages wait in the kernel and
    // then in the client, instead of overflowing the event backlog.
    void pauseReading() {
        if (rxPaused_) return;
        rxPaused_ = true;
        spdlog::debug("connection {}: reading paused (event backlog full)", id().toString());
        lws_rx_flow_control(wsi_, 0);
        shard_.pausedReading.push_back(id());
    }
    void resumeReading() {
        if (!rxPaused_) return;
        rxPaused_ = false;
        spdlog::debug("connection {}: reading resumed", id().toString());
        lws_rx_flow_control(wsi_, 1);
    }

    // Whether the kernel received bytes for this connection since the last call: traffic lws
    // does not report to us (a client's pings) still proves the client alive.
    bool receivedSinceLastCheck() {
        auto bytes = tcpBytesReceived(lws_get_socket_fd(wsi_));
        if (!bytes || *bytes == rxBytesSeen_) return false;
        rxBytesSeen_ = *bytes;
        return true;
    }

    // Intrusive idle list links and state, owned by the shard's sweep.
    WsConnection *prev = nullptr;
    WsConnection *next = nullptr;
    std::int64_t lastActivityMs = 0;
    bool pingDue = false;
    bool pinged = false;

private:
    std::size_t queueSize() const { return queue_.size() - head_; }

    MessagePtr pop() {
        MessagePtr m = std::move(queue_[head_++]);
        queuedBytes_ -= m->frame().size();
        if (head_ == queue_.size()) {
            queue_.clear();
            head_ = 0;
            if (queue_.capacity() > 64) std::vector<MessagePtr>().swap(queue_);
        }
        return m;
    }

    void clearQueue() {
        queue_.clear();
        std::vector<MessagePtr>().swap(queue_);
        head_ = 0;
        queuedBytes_ = 0;
    }

    void requestWrite() {
        if (writeRequested_) return;
        writeRequested_ = true;
        lws_callback_on_writable(wsi_);
    }

    // Closes at once for a protocol violation (oversize, invalid UTF-8). Returning -1 from
    // RECEIVE closes right away with the reason set here, except while lws is still handing
    // out the inflated pieces of a compressed frame, where it ignores the -1: then the close
    // frame goes out from the next WRITEABLE, and the kill timeout covers a peer that never
    // lets us write. Whatever else the client sends meanwhile is dropped.
    int closeNow(std::uint16_t code, const std::string &reason) {
        spdlog::debug("connection {}: closing at once with {} ({})", id().toString(), code, reason);
        closing_ = true;
        rxDiscard_ = true;
        clearQueue();
        closeCode_ = code;
        closeReason_ = reason.substr(0, 123);
        lws_close_reason(wsi_, static_cast<lws_close_status>(code),
                         reinterpret_cast<unsigned char *>(closeReason_.data()), closeReason_.size());
        lws_set_timeout(wsi_, PENDING_TIMEOUT_USER_OK, kCloseTimeoutS);
        requestWrite();
        return -1;
    }

    // Uncompressed: the messages' prebuilt frames go out as they are, several per write.
    int writeRaw() {
        MessagePtr first = pop();
        std::string_view frame = first->frame();
        if (queueSize() == 0 || frame.size() >= kCoalesceBytes / 2) {
            if (lws_write(wsi_, reinterpret_cast<unsigned char *>(const_cast<char *>(frame.data())), frame.size(),
                          LWS_WRITE_HTTP) < 0)
                return -1;
            shard_.counters.messagesSent.add();
            shard_.counters.bytesSent.add(frame.size());
            return 0;
        }
        std::string &buf = shard_.coalesce;
        buf.assign(frame);
        std::size_t messages = 1;
        while (queueSize() > 0 && buf.size() + queue_[head_]->frame().size() <= kCoalesceBytes) {
            buf.append(pop()->frame());
            ++messages;
        }
        if (lws_write(wsi_, reinterpret_cast<unsigned char *>(buf.data()), buf.size(), LWS_WRITE_HTTP) < 0) return -1;
        shard_.counters.messagesSent.add(messages);
        shard_.counters.bytesSent.add(buf.size());
        return 0;
    }

    // permessage-deflate: lws frames and compresses; one message per WRITEABLE.
    int writeCompressed() {
        MessagePtr msg = pop();
        if (msg->headroom() + msg->frameHeaderSize() < LWS_PRE) {
            // Made without room for lws (not by wsgwd's own API): copy once for this connection.
            msg = Message::create(msg->opcode(), msg->payload(), LWS_PRE);
        }
        inflight_ = msg;
        auto type = msg->isText() ? LWS_WRITE_TEXT : LWS_WRITE_BINARY;
        if (lws_write(wsi_, const_cast<unsigned char *>(msg->data()), msg->size(), type) < 0) return -1;
        shard_.counters.messagesSent.add();
        shard_.counters.bytesSent.add(msg->size());
        return 0;
    }

    ShardState &shard_;
    lws *wsi_;
    std::uint32_t endpoint_;
    bool compressed_;
    bool closing_ = false;
    bool writeRequested_ = false;
    bool rxActive_ = false;
    bool rxBinary_ = false;
    bool rxDiscard_ = false; // closing for a protocol violation: ignore further input
    bool closeHandedOver_ = false; // lws runs the closing handshake now (WS_SERVER_DROP_PROTOCOL came)
    bool stallHandled_ = false;    // closeStalled() wrote the close frame itself
    bool rxPaused_ = false;  // reading stopped for event backpressure
    bool watched_ = false;   // in the shard's partialCompressed list
    bool pendingFlush_ = false; // in the shard's toFlush list
    std::uint16_t closeCode_ = 0;
    std::string closeReason_;
    std::vector<MessagePtr> queue_;
    std::size_t head_ = 0;
    std::size_t queuedBytes_ = 0;
    MessagePtr inflight_;
    std::string rx_;
    std::uint64_t rxBytesSeen_ = 0;
    double tokens_ = 0;           // rate limit bucket
    std::int64_t tokensAtMs_ = 0; // its last refill; 0 before the first message
};

struct SessionStorage {
    bool compressed;
    bool live;
    alignas(WsConnection) unsigned char conn[sizeof(WsConnection)];

    WsConnection *get() { return live ? std::launder(reinterpret_cast<WsConnection *>(conn)) : nullptr; }
};

ShardState &shardOf(lws *wsi) { return *static_cast<ShardState *>(lws_context_user(lws_get_context(wsi))); }

// Every minute or so a connection that has said nothing for half the idle timeout gets a ping;
// one silent for the whole timeout is closed.
void sweep(lws_sorted_usec_list_t *sul) {
    ShardState &s = *reinterpret_cast<ShardState::SweepTimer *>(sul)->owner;
    auto idle = std::chrono::duration_cast<std::chrono::milliseconds>(s.settings.idleTimeout).count();
    std::int64_t now = nowMs();

    // Compressed messages in progress: one silent for a while, with no bytes arriving either,
    // is stuck inside lws.
    auto &partial = s.partialCompressed;
    for (std::size_t i = 0; i < partial.size();) {
        auto *c = static_cast<WsConnection *>(s.shard.registry().find(partial[i]));
        if (!c || !c->messageInProgress()) {
            partial[i] = partial.back();
            partial.pop_back();
            continue;
        }
        if (now - c->lastActivityMs >= kInflateStallMs && !c->receivedSinceLastCheck()) c->closeStalled();
        ++i;
    }

    // max_connection_lifetime_s: 1012 so clients reconnect, likely elsewhere.
    while (!s.lifetimes.empty() && s.lifetimes.top().first <= now) {
        ConnectionId id = s.lifetimes.top().second;
        s.lifetimes.pop();
        auto *c = static_cast<WsConnection *>(s.shard.registry().find(id));
        if (!c || c->isClosing()) continue;
        s.counters.lifetimeCloses.add();
        c->close(close_code::kServiceRestart, "connection lifetime reached; please reconnect");
    }

    for (WsConnection *c = idle > 0 ? s.idleHead : nullptr; c;) {
        WsConnection *next = c->next;
        std::int64_t silent = now - c->lastActivityMs;
        if (silent < idle / 2) break; // the rest are more recent
        if (c->receivedSinceLastCheck()) {
            c->touch(); // moves it to the tail; `next` is still the right place to go on
            c = next;
            continue;
        }
        if (silent >= idle) {
            c->unlinkIdle(); // once is enough
            s.counters.idleCloses.add();
            c->close(close_code::kGoingAway, "idle timeout");
        } else if (!c->pinged && !c->isClosing()) {
            c->schedulePing();
        }
        c = next;
    }
    lws_sul_schedule(s.context, 0, &s.sweepTimer.sul, sweep, kSweepIntervalUs);
}

// libwebsockets 4.1.6's permessage-deflate stops inflating when its output buffer fills just as
// its input runs out: the rest of the message stays inside zlib until the client sends more, so
// the message never completes. Its buffer is 1 KiB by default, capped at the protocol's
// rx_buffer_size; a 64 KiB buffer (allocated by lws only once the client sends a compressed
// message) makes this rare for ordinary traffic. The cap is read at the time of the call, so the
// protocol's value is raised just for it (this shard's thread alone uses its vhost's table).
// What remains is caught by the stall watchdog in sweep().
void enlargeInflateBuffer(lws *wsi) {
    auto *proto = const_cast<lws_protocols *>(lws_get_protocol(wsi));
    if (!proto) return;
    std::size_t saved = proto->rx_buffer_size;
    proto->rx_buffer_size = kInflateBuffer;
    lws_set_extension_option(wsi, "permessage-deflate", "rx_buf_size", kInflateBufferPower);
    proto->rx_buffer_size = saved;
}

int refuse(lws *wsi, Refusal why, unsigned status, const char *message) {
    shardOf(wsi).counters.upgradesRefused[static_cast<std::size_t>(why)].add();
    if (lws_return_http_status(wsi, status, message)) return -1;
    return 1; // >0 from CONFIRM_UPGRADE: we answered; lws completes the transaction
}

// 426 with the version we speak: lws_return_http_status cannot add a header.
int refuseVersion(lws *wsi) {
    shardOf(wsi).counters.upgradesRefused[static_cast<std::size_t>(Refusal::Version)].add();
    static constexpr char kBody[] = "unsupported Sec-WebSocket-Version: this server speaks 13 (RFC 6455)\n";
    unsigned char buf[LWS_PRE + 512];
    unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
    if (lws_add_http_header_status(wsi, 426, &p, end) ||
        lws_add_http_header_by_name(wsi, reinterpret_cast<const unsigned char *>("sec-websocket-version:"),
                                    reinterpret_cast<const unsigned char *>("13"), 2, &p, end) ||
        lws_add_http_header_by_name(wsi, reinterpret_cast<const unsigned char *>("content-type:"),
                                    reinterpret_cast<const unsigned char *>("text/plain"), 10, &p, end) ||
        lws_add_http_header_content_length(wsi, sizeof kBody - 1, &p, end) || lws_finalize_http_header(wsi, &p, end))
        return -1;
    if (lws_write(wsi, start, static_cast<std::size_t>(p - start), LWS_WRITE_HTTP_HEADERS) < 0) return -1;
    unsigned char body[LWS_PRE + sizeof kBody];
    std::memcpy(body + LWS_PRE, kBody, sizeof kBody - 1);
    if (lws_write(wsi, body + LWS_PRE, sizeof kBody - 1, LWS_WRITE_HTTP_FINAL) < 0) return -1;
    return 1;
}

// An HTTP header list item without the spaces and tabs around it.
std::string_view trimOws(std::string_view item) {
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    return item;
}

// Whether a comma-separated header value has `token` (case-insensitive).
bool hasToken(const std::string &value, std::string_view token) {
    std::size_t start = 0;
    while (start <= value.size()) {
        std::size_t end = value.find(',', start);
        if (end == std::string::npos) end = value.size();
        std::string_view item = trimOws(std::string_view(value.data() + start, end - start));
        if (item.size() == token.size() &&
            std::equal(item.begin(), item.end(), token.begin(),
                       [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; }))
            return true;
        start = end + 1;
    }
    return false;
}

// RFC 6455 4.1: the key is 16 random bytes, base64: 22 characters and "==".
bool validKey(const std::string &key) {
    if (key.size() != 24 || key.compare(22, 2, "==") != 0) return false;
    return std::all_of(key.begin(), key.begin() + 22, [](unsigned char c) {
        return std::isalnum(c) || c == '+' || c == '/';
    });
}

std::size_t endpointConnections(const WsServer::Impl &server, std::size_t index);
std::size_t totalConnections(const WsServer::Impl &server);

// LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: the last look at an upgrade request before lws takes it.
int confirmUpgrade(lws *wsi) {
    ShardState &s = shardOf(wsi);
    std::string path = headerValue(wsi, WSI_TOKEN_GET_URI);
    std::size_t index = 0;
    const WsEndpoint *e = s.endpointFor(path, &index);
    if (path.empty()) return refuse(wsi, Refusal::BadRequest, HTTP_STATUS_BAD_REQUEST, "a WebSocket upgrade is a GET");
    if (!e) return refuse(wsi, Refusal::NotFound, HTTP_STATUS_NOT_FOUND, "no WebSocket endpoint here");
    if (s.draining.load(std::memory_order_relaxed))
        return refuse(wsi, Refusal::Draining, HTTP_STATUS_SERVICE_UNAVAILABLE, "shutting down");

    // What lws would accept or drop silently gets a clear answer (RFC 6455 4.2.1).
    if (!hasToken(headerValue(wsi, WSI_TOKEN_CONNECTION), "upgrade"))
        return refuse(wsi, Refusal::BadRequest, HTTP_STATUS_BAD_REQUEST, "missing 'Connection: Upgrade'");
    if (!validKey(headerValue(wsi, WSI_TOKEN_KEY)))
        return refuse(wsi, Refusal::BadRequest, HTTP_STATUS_BAD_REQUEST,
                      "missing or malformed Sec-WebSocket-Key (16 bytes, base64)");
    if (headerValue(wsi, WSI_TOKEN_VERSION) != "13") return refuseVersion(wsi);

    // A browser sends Origin; only the listed ones may connect. Other clients send none.
    if (!e->allowedOrigins.empty()) {
        std::string origin = headerValue(wsi, WSI_TOKEN_ORIGIN);
        std::transform(origin.begin(), origin.end(), origin.begin(), [](unsigned char c) { return std::tolower(c); });
        if (!origin.empty() &&
            std::find(e->allowedOrigins.begin(), e->allowedOrigins.end(), origin) == e->allowedOrigins.end())
            return refuse(wsi, Refusal::Origin, HTTP_STATUS_FORBIDDEN, "origin not allowed");
    }
    const WsServerOptions &o = s.settings;
    if ((o.maxConnections && totalConnections(s.server) >= o.maxConnections) ||
        (e->maxConnections && endpointConnections(s.server, index) >= e->maxConnections))
        return refuse(wsi, Refusal::Capacity, HTTP_STATUS_SERVICE_UNAVAILABLE, "too many connections; retry later");

    // lws accepts only subprotocols it has a protocol entry for. The original gateway accepted
    // any; so the spare entry takes the name of the first one the client offers, and lws binds
    // and echoes it. Safe because this shard's thread alone uses the table.
    std::string offered = headerValue(wsi, WSI_TOKEN_PROTOCOL);
    if (!offered.empty()) {
        std::string_view first(offered);
        first = first.substr(0, first.find(','));
        first = trimOws(first);
        if (first.empty() || first.size() >= sizeof s.echoedProtocol)
            return refuse(wsi, Refusal::BadRequest, HTTP_STATUS_BAD_REQUEST, "invalid Sec-WebSocket-Protocol");
        std::memcpy(s.echoedProtocol, first.data(), first.size());
        s.echoedProtocol[first.size()] = '\0';
    }
    return 0;
}

int callback(lws *wsi, lws_callback_reasons reason, void *user, void *in, std::size_t len) {
    try {
        auto *session = static_cast<SessionStorage *>(user);
        switch (reason) {
        case LWS_CALLBACK_HTTP: {
            // A plain HTTP request on the WebSocket port: nothing but upgrades is served here.
            ShardState &s = shardOf(wsi);
            char *uri = nullptr;
            int uriLen = 0;
            int method = lws_http_get_uri_and_method(wsi, &uri, &uriLen);
            std::string path = uri && uriLen > 0 ? std::string(uri, static_cast<std::size_t>(uriLen)) : std::string();
            bool known = s.endpointFor(path, nullptr) != nullptr;
            s.counters.upgradesRefused[static_cast<std::size_t>(known ? Refusal::NotWebSocket : Refusal::NotFound)].add();
            unsigned status = !known ? unsigned(HTTP_STATUS_NOT_FOUND) : method == LWSHUMETH_GET ? 426u : 405u;
            if (lws_return_http_status(wsi, status,
                                       !known ? "not found"
                                       : status == 426 ? "this endpoint speaks WebSocket only: send a GET with Upgrade: websocket"
                                                       : "a WebSocket upgrade is a GET"))
                return -1;
            return lws_http_transaction_completed(wsi) ? -1 : 0;
        }

        case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
            if (!in || strcasecmp(static_cast<const char *>(in), "websocket") != 0)
                return refuse(wsi, Refusal::BadRequest, HTTP_STATUS_BAD_REQUEST, "only WebSocket upgrades are served");
            return confirmUpgrade(wsi);

        case LWS_CALLBACK_CONFIRM_EXTENSION_OKAY: {
            ShardState &s = shardOf(wsi);
            const WsEndpoint *e = s.endpointFor(headerValue(wsi, WSI_TOKEN_GET_URI), nullptr);
            if (!e || !e->compression) return 1; // refuse the extension
            // lws 4.1 accepts server_max_window_bits without echoing it (the client must then
            // fail the connection) and, on a vhost with no listen port of its own, deflates with
            // the client's window size: decline compression for such offers instead.
            if (headerValue(wsi, WSI_TOKEN_EXTENSIONS).find("server_max_window_bits") != std::string::npos) return 1;
            if (session && in && std::strcmp(static_cast<const char *>(in), "permessage-deflate") == 0)
                session->compressed = true;
            return 0;
        }

        case LWS_CALLBACK_ESTABLISHED: {
            ShardState &s = shardOf(wsi);
            std::size_t index = 0;
            const WsEndpoint *e = s.endpointFor(headerValue(wsi, WSI_TOKEN_GET_URI), &index);
            if (!e || !session) return -1;
            auto *conn = new (session->conn) WsConnection(s, wsi, index, session->compressed);
            if (!s.shard.open(*conn, e->setTags, e->events)) { // an id clash: practically impossible
                conn->~WsConnection();
                return -1;
            }
            session->live = true;
            conn->linkIdle();
            if (auto life = s.settings.maxLifetime.count(); life > 0) {
                // Spread ±10% so connections made together do not all leave together.
                std::int64_t ms = life * 1000;
                std::uniform_int_distribution<std::int64_t> spread(-ms / 10, ms / 10);
                s.lifetimes.emplace(nowMs() + ms + spread(s.jitter), conn->id());
            }
            if (session->compressed) enlargeInflateBuffer(wsi);
            s.connections.fetch_add(1, std::memory_order_relaxed);
            s.counters.connectionsOpened.add();
            s.counters.endpointConnections[index].add(1);
            return 0;
        }

        case LWS_CALLBACK_RECEIVE:
            if (!session || !session->get()) return -1;
            return session->get()->onReceive(in, len);

        case LWS_CALLBACK_RECEIVE_PONG:
            if (session && session->get()) session->get()->touch();
            return 0;

        case LWS_CALLBACK_SERVER_WRITEABLE:
            if (!session || !session->get()) return 0;
            return session->get()->onWriteable();

        case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
            // lws took a close we asked for (a -1 after lws_close_reason): it writes the close
            // frame and waits for the client's.
            if (session && session->get()) session->get()->closeHandedOver();
            return 0;

        case LWS_CALLBACK_CLOSED: {
            if (!session || !session->get()) return 0;
            ShardState &s = shardOf(wsi);
            WsConnection *conn = session->get();
            conn->unlinkIdle();
            s.shard.closed(*conn, conn->ep().events);
            s.connections.fetch_sub(1, std::memory_order_relaxed);
            s.counters.connectionsClosed.add();
            s.counters.endpointConnections[conn->endpointIndex()].add(-1);
            conn->~WsConnection();
            session->live = false;
            return 0;
        }

        case LWS_CALLBACK_RAW_RX_FILE: {
            // The listening socket is readable: take what is pending (a bounded batch, so one
            // busy listener cannot starve the connections) and hand each to lws.
            ShardState &s = shardOf(wsi);
            if (wsi != s.listener) return 0;
            for (int i = 0; i < 64; ++i) {
                int fd = accept4(s.listenFd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                    if (errno == EINTR) continue;
                    if (errno != EAGAIN && errno != EWOULDBLOCK && !s.acceptErrorLogged) {
                        // EMFILE and the like: log once per shard until an accept works again.
                        s.acceptErrorLogged = true;
                        spdlog::warn("accept: {} (raise the open-file limit?)", std::strerror(errno));
                    }
                    break;
                }
                s.acceptErrorLogged = false;
                if (s.draining.load(std::memory_order_relaxed)) {
                    ::close(fd);
                    continue;
                }
                // On a TLS vhost lws starts the server handshake; on a plain one ALLOW_SSL is ignored.
                lws_sock_file_fd_type desc;
                desc.sockfd = fd;
                lws_adopt_descriptor_vhost(s.vhost,
                                           static_cast<lws_adoption_type>(LWS_ADOPT_SOCKET | LWS_ADOPT_HTTP |
                                                                          LWS_ADOPT_ALLOW_SSL),
                                           desc, nullptr, nullptr); // closes fd itself on failure
            }
            return 0;
        }

        case LWS_CALLBACK_RAW_CLOSE_FILE: {
            ShardState &s = shardOf(wsi);
            if (wsi == s.listener) {
                s.listener = nullptr;
                s.listenFd = -1;
            }
            return 0;
        }

        case LWS_CALLBACK_EVENT_WAIT_CANCELLED: {
            // Sent to every protocol of the vhost; run the inbox once per wake-up. lws copies the
            // protocol table, but the name pointers are ours.
            ShardState &s = shardOf(wsi);
            const lws_protocols *p = lws_get_protocol(wsi);
            if (p && p->name != s.protocols[0].name) return 0;
            if (s.quit.load(std::memory_order_acquire)) {
                ev_break(s.loop, EVBREAK_ALL);
                return 0;
            }
            s.shard.drain();
            // Connections cannot go away during a drain, so the list holds only live ones.
            for (WsConnection *c : s.toFlush) c->flushPending();
            s.toFlush.clear();
            return 0;
        }

        default:
            return 0;
        }
    } catch (const std::exception &e) {
        spdlog::error("websocket callback {}: {}", static_cast<int>(reason), e.what());
        return -1;
    } catch (...) {
        spdlog::error("websocket callback {}: unknown exception", static_cast<int>(reason));
        return -1;
    }
}

const lws_extension kExtensions[] = {
    {"permessage-deflate", lws_extension_callback_pm_deflate, "permessage-deflate; client_max_window_bits"},
    {nullptr, nullptr, nullptr},
};

std::size_t endpointConnections(const WsServer::Impl &server, std::size_t index) {
    std::size_t n = 0;
    for (const auto &sh : server.shards) n += static_cast<std::size_t>(std::max<std::int64_t>(0, sh->counters.endpointConnections[index].get()));
    return n;
}

std::size_t totalConnections(const WsServer::Impl &server) {
    std::size_t n = 0;
    for (const auto &sh : server.shards) n += sh->connections.load(std::memory_order_relaxed);
    return n;
}

// Ends every shard's service thread, then destroys its context on this thread: whatever
// connections are left close there (their CLOSED callbacks run here, the shard thread being gone).
void endThreads(WsServer::Impl &d) {
    for (auto &s : d.shards) {
        s->quit.store(true, std::memory_order_release);
        std::lock_guard lock(s->wakeMu);
        if (s->context) lws_cancel_service(s->context);
    }
    for (auto &s : d.shards) {
        if (s->thread.joinable()) s->thread.join();
        lws_context *ctx;
        {
            std::lock_guard lock(s->wakeMu);
            ctx = std::exchange(s->context, nullptr);
        }
        if (ctx) lws_context_destroy(ctx);
        if (s->loop) ev_loop_destroy(s->loop);
        s->loop = nullptr;
    }
}

} // namespace

WsServer::WsServer(Hub &hub, Metrics &metrics, WsServerOptions options)
    : impl_(std::make_unique<Impl>(hub, metrics, std::move(options))) {}

WsServer::~WsServer() {
    stop(close_code::kGoingAway, "server shutting down", std::chrono::milliseconds(0), std::chrono::milliseconds(0));
}

std::size_t WsServer::messageHeadroom() noexcept { return LWS_PRE; }

bool WsServer::listening() const noexcept { return impl_->running.load(); }

std::size_t WsServer::connections() const noexcept {
    std::size_t n = 0;
    for (const auto &s : impl_->shards) n += s->connections.load(std::memory_order_relaxed);
    return n;
}

bool WsServer::start(std::string *error) {
    Impl &d = *impl_;
    // libwebsockets would only log "problem getting cert" and fail every vhost: check the files
    // first, for a message that says what is wrong with which file.
    if (d.options.tls) {
        std::string tlsError;
        auto cert = checkTlsFiles(*d.options.tls, "tls", &tlsError);
        if (!cert) {
            if (error) *error = tlsError;
            return false;
        }
        logTlsCertificate("tls", *d.options.tls, *cert);
        d.unusedClientTls.reset(SSL_CTX_new(TLS_client_method()));
        if (!d.unusedClientTls) {
            if (error) *error = "tls: cannot create a TLS context";
            return false;
        }
    }
    const std::size_t shards = d.hub.shardCount();
    for (std::size_t i = 0; i < shards; ++i) d.shards.push_back(std::make_unique<ShardState>(d, i));

    // All listeners first: if the address is taken, nothing has started yet.
    std::string probeError;
    if (openListener(d.options.host, d.options.port, &probeError, /*probe=*/true) < 0) {
        d.shards.clear();
        if (error)
            *error = "cannot listen on " + d.options.host + ":" + std::to_string(d.options.port) + ": " + probeError;
        return false;
    }
    for (auto &ptr : d.shards) {
        ShardState *s = ptr.get();
        std::string listenError;
        s->listenFd = openListener(d.options.host, d.options.port, &listenError);
        if (s->listenFd < 0) {
            for (auto &other : d.shards)
                if (other->listenFd >= 0) ::close(other->listenFd);
            d.shards.clear();
            if (error)
                *error = "cannot listen on " + d.options.host + ":" + std::to_string(d.options.port) + ": " +
                         listenError;
            return false;
        }
    }

    std::vector<std::future<std::string>> started;
    for (auto &ptr : d.shards) {
        ShardState *s = ptr.get();
        for (int p = 0; p < 3; ++p) {
            lws_protocols &proto = s->protocols[p];
            proto.name = p == 0 ? "wsgw" : p == 1 ? s->echoedProtocol : "wsgw-listener";
            proto.callback = callback;
            proto.per_session_data_size = sizeof(SessionStorage);
            proto.rx_buffer_size = kRxBufferSize;
            // Else lws sends at most rx_buffer_size per write and copies the rest of a
            // coalesced write aside for later.
            proto.tx_packet_size = kCoalesceBytes + LWS_PRE + 16;
        }
        s->coalesce.reserve(kCoalesceBytes);
        auto promise = std::make_shared<std::promise<std::string>>();
        started.push_back(promise->get_future());
        s->thread = std::thread([s, promise, &d] {
            // "wsgw-shard-N" in top -H, perf and /proc/PID/task/*/comm (15 characters at most).
            pthread_setname_np(pthread_self(), ("wsgw-shard-" + std::to_string(s->index % 1000)).c_str());
            const std::optional<TlsFiles> &tls = d.options.tls;
            // lws 4.1 keeps OpenSSL ex-data indexes in globals that every TLS context's creation
            // sets: one shard at a time.
            static std::mutex tlsSetupMu;
            std::unique_lock tlsSetup(tlsSetupMu, std::defer_lock);
            if (tls) tlsSetup.lock();
            // epoll through libev rather than lws's own poll(), which hands the kernel every socket
            // on every loop iteration. The loop is ours ("foreign"), so lws installs no signal
            // watchers and the shard thread runs it.
            s->loop = ev_loop_new(static_cast<unsigned>(EVBACKEND_EPOLL) | static_cast<unsigned>(EVFLAG_NOENV));
            void *foreign[1] = {s->loop};
            lws_context_creation_info info{};
            info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_LIBEV;
            info.foreign_loops = foreign;
            if (tls) info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
            info.user = s;
            info.count_threads = 1;
            s->context = s->loop ? lws_create_context(&info) : nullptr;
            if (!s->context) {
                ::close(s->listenFd);
                s->listenFd = -1;
                if (s->loop) ev_loop_destroy(s->loop);
                s->loop = nullptr;
                promise->set_value("cannot create the libwebsockets context (with its libev event loop)");
                return;
            }
            lws_context_creation_info vinfo{};
            vinfo.vhost_name = "wsgw";
            vinfo.port = CONTEXT_PORT_NO_LISTEN_SERVER; // we accept on our own listener
            vinfo.protocols = s->protocols;
            vinfo.extensions = kExtensions;
            vinfo.keepalive_timeout = 5;
            vinfo.timeout_secs_ah_idle = 10;
            // No lws validity timers: the idle sweep pings and times out connections itself, and
            // lws keeps those timers in one sorted list that every connect walks.
            static const lws_retry_bo_t kNoValidityTimers{};
            vinfo.retry_and_idle_policy = &kNoValidityTimers;
            if (tls) {
                // With a certificate, lws 4.1.6 turns TLS on for a vhost without a listen socket
                // of its own too (tls-server.c: any port but CONTEXT_PORT_NO_LISTEN).
                vinfo.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
                vinfo.provided_client_ssl_ctx = d.unusedClientTls.get();
                vinfo.ssl_cert_filepath = tls->cert.c_str();
                vinfo.ssl_private_key_filepath = tls->key.c_str();
                vinfo.ssl_options_set = SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1;
                // Only HTTP/1.1 upgrades are served: never let ALPN pick h2.
                vinfo.alpn = "http/1.1";
            }
            s->vhost = lws_create_vhost(s->context, &vinfo);
            if (tlsSetup.owns_lock()) tlsSetup.unlock();
            lws_sock_file_fd_type fd;
            fd.filefd = s->listenFd;
            if (s->vhost)
                s->listener = lws_adopt_descriptor_vhost(s->vhost, LWS_ADOPT_RAW_FILE_DESC, fd, "wsgw-listener", nullptr);
            if (!s->listener) {
                if (!s->vhost) ::close(s->listenFd); // else the failed adoption closed it
                s->listenFd = -1;
                lws_context *failed = s->context;
                {
                    std::lock_guard lock(s->wakeMu);
                    s->context = nullptr;
                }
                lws_context_destroy(failed);
                promise->set_value(tls ? "cannot set up the WebSocket service with TLS (see libwebsockets' "
                                         "messages above)"
                                       : "cannot set up the WebSocket service");
                return;
            }
            lws_context *ctx = s->context;
            s->shard.setWakeup([s] {
                std::lock_guard lock(s->wakeMu);
                if (s->context) lws_cancel_service(s->context);
            });
            s->sweepTimer.owner = s;
            lws_sul_schedule(ctx, 0, &s->sweepTimer.sul, sweep, kSweepIntervalUs);
            promise->set_value("");
            // Runs until a wake-up finds `quit` set (EVENT_WAIT_CANCELLED breaks the loop).
            if (!s->quit.load(std::memory_order_acquire)) ev_run(s->loop, 0);
            lws_sul_cancel(&s->sweepTimer.sul);
            // The context is destroyed by stop() once this thread has ended.
        });
    }

    std::string firstError;
    for (auto &f : started) {
        std::string e = f.get();
        if (!e.empty() && firstError.empty()) firstError = e;
    }
    if (!firstError.empty()) {
        endThreads(d);
        d.shards.clear();
        if (error) *error = firstError;
        return false;
    }
    d.running.store(true);
    return true;
}

void WsServer::reload(WsServerOptions next) {
    for (auto &ptr : impl_->shards) {
        ShardState *s = ptr.get();
        if (!s->shard.post([s, next](Shard &) {
                // Same paths in the same order (the caller checks): connections keep their index.
                s->settings.endpoints = next.endpoints;
                s->settings.idleTimeout = next.idleTimeout;
                s->settings.maxConnections = next.maxConnections;
                s->settings.maxLifetime = next.maxLifetime;
            }))
            spdlog::warn("reload: shard {} is busy; its settings are unchanged until the next reload", s->index);
    }
}

void WsServer::resumeReading() {
    for (auto &ptr : impl_->shards) {
        ShardState *s = ptr.get();
        // If the inbox is full, the next resume (or the next message) catches up.
        (void)s->shard.post([s](Shard &shard) {
            for (ConnectionId id : s->pausedReading)
                if (Connection *c = shard.registry().find(id)) static_cast<WsConnection *>(c)->resumeReading();
            s->pausedReading.clear();
        });
    }
}

void WsServer::stop(std::uint16_t code, std::string_view reason, std::chrono::milliseconds spread,
                    std::chrono::milliseconds grace) {
    Impl &d = *impl_;
    std::lock_guard lock(d.stopMu);
    if (d.stopped || d.shards.empty()) {
        d.stopped = true;
        return;
    }
    d.stopped = true;
    d.running.store(false);
    for (auto &s : d.shards) {
        s->draining.store(true);
        // Close the listener on its own thread: new clients are refused by the kernel now.
        ShardState *sp = s.get();
        (void)s->shard.post([sp](Shard &) {
            if (sp->listener) lws_set_timeout(sp->listener, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        });
    }

    // Closes in even steps over `spread`: after step k of n, each shard has closed k/n of what
    // it held when the drain began.
    std::string why(reason);
    constexpr auto kStep = std::chrono::milliseconds(100);
    const auto start = std::chrono::steady_clock::now();
    const long steps = std::max<long>(1, static_cast<long>(spread / kStep));
    for (long step = 1; step < steps && connections() > 0; ++step) {
        for (auto &s : d.shards) {
            ShardState *sp = s.get();
            (void)s->shard.post([sp, step, steps, code, why](Shard &shard) {
                std::size_t open = 0;
                shard.registry().forEach([&](Connection &c, const Tags &) {
                    open += !static_cast<WsConnection &>(c).isClosing();
                });
                if (step == 1) sp->drainInitial = open;
                std::size_t keep = sp->drainInitial * static_cast<std::size_t>(steps - step) / static_cast<std::size_t>(steps);
                std::size_t quota = open > keep ? open - keep : 0;
                shard.registry().match(Selector::all(), [&](Connection &c) {
                    auto &ws = static_cast<WsConnection &>(c);
                    if (quota == 0 || ws.isClosing()) return;
                    ws.close(code, why);
                    --quota;
                });
            });
        }
        std::this_thread::sleep_until(start + step * kStep);
    }

    // The rest (and any that slipped in), until all are gone or grace runs out.
    auto deadline = std::chrono::steady_clock::now() + grace;
    do {
        auto closed = d.hub.close(Selector::all(), code, why, {});
        closed.wait_until(deadline);
        if (connections() == 0) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } while (std::chrono::steady_clock::now() < deadline);

    endThreads(d);
}

} // namespace wsgw::daemon
