// A worker sends: control frames that did not fit into the socket (queueOut, flushOut), and the
// inbound scenario's text frames, paced by --send-rate and by the shared credit (what may be sent
// beyond what the sink has counted).

#include "worker.h"

#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace wsgw::bench {

void Worker::queueOut(Conn &c, const char *data, std::size_t n) {
    if (!c.out.empty()) {
        c.out.append(data, n);
        return;
    }
    ssize_t w = send(c.fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) return;
        w = 0;
    }
    if (std::size_t(w) == n) return;
    c.out.assign(data + w, n - std::size_t(w));
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.ptr = &c;
    epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
}

void Worker::flushOut(Conn &c) {
    if (!c.out.empty()) {
        ssize_t w = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) c.out.erase(0, std::size_t(w));
    }
    if (c.out.empty()) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = &c;
        epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
    }
}

void Worker::sendRound() {
    idleRound_ = true;
    if (open_.empty()) return;
    const std::size_t size = std::size_t(s_.opt.size);
    const int batch = sendBatch_;
    if (sendRate_ > 0) {
        tokens_ += double(now_ - lastTickNs_) * sendRate_ / 1e9;
        lastTickNs_ = now_;
        tokens_ = std::min(tokens_, sendRate_ * 0.01 + batch);
    }
    std::size_t frameSize = size + 14;
    if (sendBuf_.size() < frameSize * std::size_t(batch)) sendBuf_.resize(frameSize * std::size_t(batch));
    int budget = 1024;
    std::size_t tried = 0;
    while (budget > 0 && tried < open_.size()) {
        if (sendRate_ > 0 && tokens_ < batch) return;
        if (s_.sendCredit.fetch_sub(batch, std::memory_order_relaxed) < batch) {
            s_.sendCredit.fetch_add(batch, std::memory_order_relaxed);
            return;
        }
        Conn &c = *open_[cursor_++ % open_.size()];
        ++tried;
        if (c.state != State::Open || !c.out.empty()) {
            s_.sendCredit.fetch_add(batch, std::memory_order_relaxed);
            continue;
        }
        std::size_t len = 0;
        for (int b = 0; b < batch; ++b) {
            unsigned char *frame = sendBuf_.data() + len;
            std::size_t hs = writeFrameHeader(frame, 0x1, size, true, c.mask);
            PayloadFields f;
            f.stream = 0;
            f.group = c.group;
            f.seq = c.sendSeq++;
            f.pid = c.index;
            f.ts = now_;
            writePayload(reinterpret_cast<char *>(frame + hs), size, f);
            applyMask(frame + hs, size, c.mask);
            len += hs + size;
        }
        ssize_t w = send(c.fd, sendBuf_.data(), len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            c.sendSeq -= std::uint32_t(batch);
            s_.sendCredit.fetch_add(batch, std::memory_order_relaxed);
            if (errno == EAGAIN || errno == EWOULDBLOCK) continue;
            ++stats.serverCloses;
            error("connection " + std::to_string(c.index) + ": send: " + std::strerror(errno));
            closeConn(c, State::Closed);
            continue;
        }
        if (std::size_t(w) < len) {
            c.out.assign(reinterpret_cast<char *>(sendBuf_.data()) + w, len - std::size_t(w));
            epoll_event ev{};
            ev.events = EPOLLIN | EPOLLOUT;
            ev.data.ptr = &c;
            epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
        }
        stats.sent += std::uint64_t(batch);
        budget -= batch;
        tokens_ -= batch;
        idleRound_ = false;
    }
}

} // namespace wsgw::bench
