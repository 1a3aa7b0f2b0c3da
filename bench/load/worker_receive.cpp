// A worker receives: frames parsed straight out of the per-thread read buffer, fragmented and
// permessage-deflate messages put together, every payload checked (checksum, order, group) and
// counted towards its publish's delivery. The hot path of every fan-out scenario.

#include "worker.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace wsgw::bench {

void Worker::onEvent(Conn &c, std::uint32_t ev) {
    switch (c.state) {
    case State::Connecting: {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0 || (ev & (EPOLLERR | EPOLLHUP))) {
            handshakeFailed(c, std::string("connect: ") + std::strerror(err ? err : ECONNRESET));
            return;
        }
        sendHandshake(c);
        return;
    }
    case State::Handshake:
        onHandshakeData(c);
        return;
    case State::Open:
        if (ev & EPOLLOUT) flushOut(c);
        if (c.state == State::Open && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) onReadable(c);
        return;
    default:
        return;
    }
}

void Worker::onReadable(Conn &c) {
    for (int round = 0; round < 4; ++round) {
        ssize_t n = recv(c.fd, readBuf_.data(), readBuf_.size(), 0);
        if (n > 0) {
            now_ = monoNs();
            if (c.rx.empty()) {
                consume(c, readBuf_.data(), std::size_t(n), false);
            } else { // a frame began in an earlier read: join the pieces in c.rx
                c.rx.append(reinterpret_cast<char *>(readBuf_.data()), std::size_t(n));
                consume(c, reinterpret_cast<unsigned char *>(c.rx.data()), c.rx.size(), true);
            }
            if (c.state != State::Open || std::size_t(n) < readBuf_.size()) return;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0 && errno == EINTR) continue;
        ++stats.serverCloses;
        error("connection " + std::to_string(c.index) + ": " +
              (n == 0 ? std::string("closed by the server") : std::strerror(errno)));
        closeConn(c, State::Closed);
        return;
    }
}

void Worker::consume(Conn &c, unsigned char *p, std::size_t n, bool inRx) {
    std::size_t at = 0;
    while (at < n && c.state == State::Open) {
        FrameHeader h;
        if (!parseFrameHeader(p + at, n - at, &h)) break;
        if (h.length > (64u << 20)) {
            protocolError(c, "frame too large");
            return;
        }
        if (n - at < h.headerSize + h.length) break;
        unsigned char *payload = p + at + h.headerSize;
        if (h.masked) {
            protocolError(c, "the server masked a frame");
            return;
        }
        onFrame(c, h, payload, std::size_t(h.length));
        at += h.headerSize + std::size_t(h.length);
    }
    if (c.state != State::Open) return;
    if (inRx)
        c.rx.erase(0, at);
    else if (at < n)
        c.rx.assign(reinterpret_cast<char *>(p + at), n - at);
}

void Worker::protocolError(Conn &c, const std::string &what) {
    ++stats.protocolErrors;
    error("connection " + std::to_string(c.index) + ": " + what);
    closeConn(c, State::Closed);
}

void Worker::onFrame(Conn &c, const FrameHeader &h, unsigned char *payload, std::size_t len) {
    switch (h.opcode) {
    case 0x0: // continuation
        if (!c.assembling) return protocolError(c, "continuation without a message");
        c.message.append(reinterpret_cast<char *>(payload), len);
        if (h.fin) {
            c.assembling = false;
            if (c.assemblingCompressed)
                inflateMessage(c, reinterpret_cast<unsigned char *>(c.message.data()), c.message.size());
            else
                onMessage(c, c.message.data(), c.message.size());
        }
        return;
    case 0x1:
    case 0x2:
        if (c.assembling) return protocolError(c, "new message inside a fragmented one");
        if (h.rsv1 && !c.deflate) return protocolError(c, "RSV1 without permessage-deflate");
        if (!h.fin) {
            c.assembling = true;
            c.assemblingCompressed = h.rsv1;
            c.message.assign(reinterpret_cast<char *>(payload), len);
            return;
        }
        if (h.rsv1)
            inflateMessage(c, payload, len);
        else
            onMessage(c, reinterpret_cast<char *>(payload), len);
        return;
    case 0x8: {
        ++stats.serverCloses;
        unsigned code = len >= 2 ? (unsigned(payload[0]) << 8) | payload[1] : 1005;
        std::string reason = len > 2 ? std::string(reinterpret_cast<char *>(payload) + 2, len - 2) : "";
        error("connection " + std::to_string(c.index) + ": the server closed it (" + std::to_string(code) +
              (reason.empty() ? "" : " " + reason) + ")");
        unsigned char frame[8];
        std::size_t hs = writeFrameHeader(frame, 0x8, 2, true, c.mask);
        frame[hs] = static_cast<unsigned char>((code >> 8) ^ c.mask[0]);
        frame[hs + 1] = static_cast<unsigned char>((code & 0xff) ^ c.mask[1]);
        (void)!send(c.fd, frame, hs + 2, MSG_NOSIGNAL | MSG_DONTWAIT);
        closeConn(c, State::Closed);
        return;
    }
    case 0x9: { // ping: answer with a pong carrying the same payload
        if (len > 125) return protocolError(c, "ping too long");
        unsigned char frame[14 + 125];
        std::size_t hs = writeFrameHeader(frame, 0xA, len, true, c.mask);
        std::memcpy(frame + hs, payload, len);
        applyMask(frame + hs, len, c.mask);
        queueOut(c, reinterpret_cast<char *>(frame), hs + len);
        return;
    }
    case 0xA:
        return;
    default:
        return protocolError(c, "unknown opcode " + std::to_string(h.opcode));
    }
}

void Worker::inflateMessage(Conn &c, unsigned char *data, std::size_t len) {
    static const unsigned char tail[4] = {0x00, 0x00, 0xff, 0xff};
    z_stream &z = *c.inflater;
    std::size_t produced = 0;
    auto run = [&](const unsigned char *in, std::size_t inLen) -> bool {
        z.next_in = const_cast<unsigned char *>(in);
        z.avail_in = static_cast<uInt>(inLen);
        while (z.avail_in > 0) {
            if (produced == inflateBuf_.size()) inflateBuf_.resize(inflateBuf_.size() * 2);
            z.next_out = inflateBuf_.data() + produced;
            z.avail_out = static_cast<uInt>(inflateBuf_.size() - produced);
            int rc = inflate(&z, Z_SYNC_FLUSH);
            produced = inflateBuf_.size() - z.avail_out;
            if (rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END) return false;
            if (rc == Z_BUF_ERROR && z.avail_out != 0) break;
        }
        return true;
    };
    if (!run(data, len) || !run(tail, 4)) return protocolError(c, "inflate failed");
    if (c.serverNoContext) inflateReset(&z);
    onMessage(c, reinterpret_cast<char *>(inflateBuf_.data()), produced);
}

void Worker::onMessage(Conn &c, const char *data, std::size_t len) {
    ++stats.frames;
    PayloadFields f;
    if (!readPayload(data, len, &f)) {
        if (inbound_) { // inbound runs: servers may answer (nchan) or echo; not ours to check
            ++stats.unexpected;
            return;
        }
        ++stats.corrupt;
        error("connection " + std::to_string(c.index) + ": a message failed its check: '" +
              std::string(data, std::min<std::size_t>(len, 60)) + "'");
        return;
    }
    if (f.stream >= kMaxStreams) {
        ++stats.corrupt;
        return;
    }
    std::uint32_t *expected;
    std::uint32_t localTarget;
    if (f.group == kAllGroup) {
        expected = &c.seqAll[f.stream];
        localTarget = allMembers_;
    } else {
        if (f.group != c.group) {
            ++stats.misrouted;
            error("connection " + std::to_string(c.index) + " of group " + std::to_string(c.group) +
                  " received a message for group " + std::to_string(f.group));
            return;
        }
        expected = &c.seqGroup[f.stream];
        localTarget = groupMembers_[f.group];
    }
    if (f.seq != *expected) {
        ++stats.outOfOrder;
        error("connection " + std::to_string(c.index) + " stream " + std::to_string(f.stream) + ": seq " +
              std::to_string(f.seq) + " where " + std::to_string(*expected) + " was due");
    }
    *expected = f.seq + 1;
    latency_.record(now_ - f.ts);

    // Delivery accounting: once per (publish, worker), not per frame, touch shared memory.
    Local &l = local_[f.pid % kRing];
    if (l.pid != f.pid) {
        l.pid = f.pid;
        l.count = 0;
        l.lastNs = 0;
    }
    ++l.count;
    l.lastNs = std::max(l.lastNs, now_);
    if (l.count == localTarget) {
        Slot &slot = s_.slots[f.pid % kRing];
        if (slot.pid.load(std::memory_order_acquire) != f.pid) return; // retired already (timed out)
        atomicMax(slot.lastRecvNs, l.lastNs);
        std::uint32_t done = slot.threadsDone.fetch_add(1, std::memory_order_acq_rel) + 1;
        if (done >= s_.threadsFor(f.group)) {
            std::uint64_t one = 1;
            (void)!write(s_.publisherWake, &one, sizeof one);
        }
    }
}

} // namespace wsgw::bench
