// A worker opens its connections: TCP connect from a 127.0.0.x source address, the WebSocket
// handshake (checked: status, accept key, subprotocol, extensions), retries with back-off and the
// handshake timeout. At most --connect-concurrency / threads handshakes in flight per worker.

#include "worker.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

namespace wsgw::bench {

void Worker::startConnects() {
    for (std::size_t i = 0; i < retry_.size();) {
        if (retry_[i]->startNs <= now_) {
            pending_.insert(pending_.begin(), retry_[i]);
            retry_[i] = retry_.back();
            retry_.pop_back();
        } else {
            ++i;
        }
    }
    const int limit = std::max(1, s_.opt.connectConcurrency / s_.opt.threads);
    while (!pending_.empty() && connecting_ < limit) {
        Conn *c = pending_.back();
        pending_.pop_back();
        beginConnect(*c);
    }
}

void Worker::beginConnect(Conn &c) {
    const Options &o = s_.opt;
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) {
        error(std::string("socket: ") + std::strerror(errno) + " (open-file limit?)");
        failConn(c);
        return;
    }
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(c.fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(0x7f000001u + (c.index % std::uint32_t(std::max(1, o.sources))));
    if (bind(c.fd, reinterpret_cast<sockaddr *>(&src), sizeof src) != 0) {
        error(std::string("bind source address: ") + std::strerror(errno));
        closeConn(c, State::Failed);
        retryOrFail(c);
        return;
    }
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(url_.addr.port);
    inet_pton(AF_INET, url_.addr.host.c_str(), &dst.sin_addr);
    c.startNs = monoNs();
    c.state = State::Connecting;
    ++connecting_;
    if (connect(c.fd, reinterpret_cast<sockaddr *>(&dst), sizeof dst) != 0 && errno != EINPROGRESS) {
        error(std::string("connect: ") + std::strerror(errno));
        --connecting_;
        closeConn(c, State::Failed);
        retryOrFail(c);
        return;
    }
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.ptr = &c;
    epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev);
}

void Worker::retryOrFail(Conn &c) {
    if (++c.tries <= s_.opt.connectRetries) {
        retriesA.fetch_add(1, std::memory_order_relaxed);
        c.state = State::Idle;
        c.startNs = monoNs() + 100'000'000 * std::int64_t(std::min<int>(c.tries, 20)); // back off a little
        retry_.push_back(&c);
        return;
    }
    failConn(c);
}

void Worker::failConn(Conn &c) {
    c.state = State::Failed;
    failedA.fetch_add(1, std::memory_order_relaxed);
}

std::string Worker::requestPath(const Conn &c) const {
    std::string path = url_.path;
    std::size_t at = path.find("{group}");
    if (at != std::string::npos) path.replace(at, 7, std::to_string(c.group));
    return path;
}

void Worker::sendHandshake(Conn &c) {
    const Options &o = s_.opt;
    std::string key = websocketKey();
    c.acceptKey = websocketAccept(key);
    std::string req = "GET " + requestPath(c) + " HTTP/1.1\r\nHost: " + url_.addr.host + ":" +
                      std::to_string(url_.addr.port) +
                      "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
                      "\r\nSec-WebSocket-Version: 13\r\n";
    if (!o.subprotocol.empty()) req += "Sec-WebSocket-Protocol: " + o.subprotocol + "\r\n";
    if (o.deflate) req += "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    req += "\r\n";
    if (!writeAll(c.fd, req.data(), req.size(), 1000)) {
        handshakeFailed(c, "cannot send the handshake");
        return;
    }
    c.state = State::Handshake;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = &c;
    epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
}

void Worker::handshakeFailed(Conn &c, const std::string &why) {
    error("handshake of connection " + std::to_string(c.index) + ": " + why);
    --connecting_;
    closeConn(c, State::Failed);
    retryOrFail(c);
}

void Worker::onHandshakeData(Conn &c) {
    char buf[4096];
    for (;;) {
        ssize_t n = recv(c.fd, buf, sizeof buf, 0);
        if (n > 0) {
            c.rx.append(buf, std::size_t(n));
            if (c.rx.size() > 16384) return handshakeFailed(c, "response header too large");
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n < 0 && errno == EINTR) continue;
        return handshakeFailed(c, n == 0 ? "connection closed" : std::strerror(errno));
    }
    std::size_t end = c.rx.find("\r\n\r\n");
    if (end == std::string::npos) return;
    std::string_view head(c.rx.data(), end + 2);
    if (head.compare(0, 12, "HTTP/1.1 101") != 0)
        return handshakeFailed(c, "answered '" + std::string(head.substr(0, head.find("\r\n"))) + "'");
    auto accept = headerValue(head, "Sec-WebSocket-Accept");
    if (!accept || *accept != c.acceptKey) return handshakeFailed(c, "wrong Sec-WebSocket-Accept");
    const Options &o = s_.opt;
    if (!o.subprotocol.empty()) {
        auto proto = headerValue(head, "Sec-WebSocket-Protocol");
        if (!proto || *proto != o.subprotocol) return handshakeFailed(c, "subprotocol not echoed");
    }
    auto ext = headerValue(head, "Sec-WebSocket-Extensions");
    if (ext && ext->find("permessage-deflate") != std::string_view::npos) {
        if (!o.deflate) return handshakeFailed(c, "server chose permessage-deflate, which was not offered");
        c.deflate = true;
        c.serverNoContext = ext->find("server_no_context_takeover") != std::string_view::npos;
        c.inflater = new z_stream{};
        if (inflateInit2(c.inflater, -15) != Z_OK) return handshakeFailed(c, "inflateInit2 failed");
    }
    std::uint32_t m = static_cast<std::uint32_t>(std::mt19937(c.index * 2654435761u + 1)());
    std::memcpy(c.mask, &m, 4);
    c.state = State::Open;
    --connecting_;
    connectTimes_.record(now_ - c.startNs);
    std::int64_t first = firstOpenNs.load(std::memory_order_relaxed);
    if (first == 0 || c.startNs < first) firstOpenNs.store(c.startNs, std::memory_order_relaxed);
    lastOpenNs.store(now_, std::memory_order_relaxed);
    openedA.fetch_add(1, std::memory_order_relaxed);
    std::string rest = c.rx.substr(end + 4);
    c.rx.clear();
    c.rx.shrink_to_fit();
    c.rx.reserve(256);
    if (!rest.empty()) consume(c, reinterpret_cast<unsigned char *>(rest.data()), rest.size(), false);
}

void Worker::sweepTimeouts() {
    if (connecting_ == 0) return;
    const std::int64_t limit = std::int64_t(s_.opt.timeoutS) * 1'000'000'000;
    for (Conn &c : conns_) {
        if ((c.state == State::Connecting || c.state == State::Handshake) && now_ - c.startNs > limit)
            handshakeFailed(c, "timed out");
    }
}

} // namespace wsgw::bench
