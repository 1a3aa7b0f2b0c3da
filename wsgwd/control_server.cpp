#include "control_server.h"

#include "control_acceptor.h"
#include "control_connections.h"
#include "metrics.h"
#include "tls.h"
#include "work_queue.h"

#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

namespace wsgw::daemon {

namespace {

using Clock = std::chrono::steady_clock;
using Conn = ControlConnection;
using Phase = ConnPhase;

constexpr std::uint64_t kListenerId = 0;
constexpr std::uint64_t kWakeId = 1;
constexpr std::size_t kReadChunk = 64 * 1024;
constexpr std::size_t kAcceptBatch = 64;        // per wake-up, so connections already open get their turn
constexpr std::size_t kLingerMaxBytes = 4 << 20; // a peer that keeps sending while we close is cut off
constexpr auto kTick = std::chrono::milliseconds(100); // deadline granularity
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

void numericAddress(const sockaddr_storage &ss, socklen_t len, std::string &ip, int &port) {
    char host[NI_MAXHOST] = "";
    if (getnameinfo(reinterpret_cast<const sockaddr *>(&ss), len, host, sizeof host, nullptr, 0, NI_NUMERICHOST) == 0)
        ip = host;
    if (ss.ss_family == AF_INET)
        port = ntohs(reinterpret_cast<const sockaddr_in *>(&ss)->sin_port);
    else if (ss.ss_family == AF_INET6)
        port = ntohs(reinterpret_cast<const sockaddr_in6 *>(&ss)->sin6_port);
}

Peer peerOf(int fd) {
    Peer p;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getpeername(fd, reinterpret_cast<sockaddr *>(&ss), &len) == 0) numericAddress(ss, len, p.remoteAddr, p.remotePort);
    len = sizeof ss;
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len) == 0) numericAddress(ss, len, p.localAddr, p.localPort);
    return p;
}

} // namespace

struct ControlServer::Impl {
    Impl(ControlServerOptions o, ControlCounters &c, std::function<Lane(const RequestHead &)> f)
        : opt(std::move(o)), counters(c), classify(std::move(f)), requestTimeoutMs(opt.requestTimeout.count()),
          scratch(kReadChunk) {}

    ControlServerOptions opt;
    ControlCounters &counters;
    std::function<Lane(const RequestHead &)> classify;
    HttpRouter router;
    std::atomic<bool> stopping{false};
    std::atomic<long long> requestTimeoutMs;

    std::mutex lifecycle;
    bool started = false;
    bool stopped = false;
    ControlAcceptor acceptor;
    int epollFd = -1;
    int wakeFd = -1;
    SSL_CTX *sslCtx = nullptr;
    std::unique_ptr<WorkQueue> commands, aux;
    std::thread loop;

    // Answers from the lanes, for the loop.
    std::mutex doneMu;
    std::vector<std::pair<std::uint64_t, Exchange>> done;
    std::atomic<bool> stopRequested{false};

    // The loop thread's own.
    ConnectionTable conns;
    std::vector<std::uint64_t> ready; // connections with work to do without a socket event
    std::uint64_t nextId = 2;
    std::vector<std::uint64_t> streams; // connections in Streaming
    std::vector<char> scratch;
    bool shuttingDown = false;
    Clock::time_point shutdownDeadline;
    Clock::time_point listenerPausedUntil;
    std::size_t bufferBudget() const {
        return opt.maxBufferedBytes ? opt.maxBufferedBytes : std::max<std::size_t>(64 << 20, 8 * maxBuffered());
    }

    std::chrono::milliseconds requestTimeout() const { return std::chrono::milliseconds(requestTimeoutMs.load()); }
    std::size_t maxBuffered() const {
        return opt.limits.maxHeaderBytes + 2 * opt.limits.maxBodyBytes + 128 * 1024;
    }

    void wake() {
        std::uint64_t one = 1;
        ssize_t r = ::write(wakeFd, &one, sizeof one);
        (void)r; // a full counter still wakes the loop
    }

    // Called by the lanes' threads.
    void complete(std::uint64_t id, Exchange ex) {
        {
            std::lock_guard lock(doneMu);
            done.emplace_back(id, std::move(ex));
        }
        wake();
    }

    // --- the loop -------------------------------------------------------------------------

    void enterPhase(Conn &c, Phase p, Clock::time_point deadline) { conns.enter(c, p, deadline); }
    void enterPhase(Conn &c, Phase p) {
        auto now = Clock::now();
        switch (p) {
        case Phase::Handshake:
        case Phase::Reading:
        case Phase::Writing:
            return enterPhase(c, p, now + requestTimeout());
        case Phase::Idle:
            return enterPhase(c, p, now + opt.keepAliveTimeout);
        case Phase::Lingering:
            return enterPhase(c, p, now + opt.lingerTimeout);
        default:
            return enterPhase(c, p, Clock::time_point::max());
        }
    }

    void close(Conn &c) {
        bool onSpare = c.onSpare;
        if (c.phase == Phase::Streaming) streams.erase(std::find(streams.begin(), streams.end(), c.id));
        counters.connections.add(-1);
        conns.remove(c); // closes the socket, which takes it out of epoll
        if (onSpare && acceptor.fd() >= 0) acceptor.replenish();
    }

    // After anything done to a connection: what it waits for, and what its buffers hold.
    void settle(std::uint64_t id) {
        Conn *c = conns.find(id);
        if (!c) return;
        conns.account(*c);
        updateInterest(*c);
        // Over the budget (thousands of clients each sending most of a large body, say): the
        // connections holding the most go.
        while (conns.buffered() > bufferBudget()) {
            Conn *victim = conns.largest();
            if (!victim) break;
            if (victim->phase != Phase::Idle && victim->phase != Phase::Lingering) counters.refuse(ControlRefusal::Evicted);
            close(*victim);
        }
    }

    void updateInterest(Conn &c) {
        constexpr std::uint32_t rd = EPOLLIN, wr = EPOLLOUT;
        std::uint32_t want = 0;
        switch (c.phase) {
        case Phase::Handshake:
            want = c.readWantsWrite ? wr : rd;
            break;
        case Phase::Reading:
            want = (c.readWantsWrite ? wr : rd) | (c.outPos < c.out.size() ? wr : 0u);
            break;
        case Phase::Writing:
            want = c.writeWantsRead ? rd : wr;
            break;
        case Phase::Idle:
        case Phase::Lingering:
            want = c.readWantsWrite ? wr : rd;
            break;
        case Phase::Streaming:
            want = c.readWantsWrite ? wr : rd; // the peer's end (or its bytes, dropped)
            if (c.outPos < c.out.size()) want |= c.writeWantsRead ? rd : wr;
            break;
        case Phase::Working:
        case Phase::Count:
            break; // errors and hang-ups are reported regardless
        }
        if (want == c.interest) return;
        epoll_event ev{};
        ev.events = want;
        ev.data.u64 = c.id;
        if (epoll_ctl(epollFd, EPOLL_CTL_MOD, c.io.fd(), &ev) == 0) c.interest = want;
    }

    enum class ReadResult { Ok, Eof, Error };

    // Reads what the socket has, up to the buffer's bound.
    ReadResult readAvailable(Conn &c) {
        while (c.in.size() - c.inStart < maxBuffered()) {
            std::size_t n = 0;
            switch (c.io.read(scratch.data(), std::min(scratch.size(), maxBuffered() - (c.in.size() - c.inStart)), n)) {
            case ControlTransport::Io::Done:
                c.in.append(scratch.data(), n);
                continue;
            case ControlTransport::Io::WantRead:
                c.readWantsWrite = false;
                return ReadResult::Ok;
            case ControlTransport::Io::WantWrite:
                c.readWantsWrite = true;
                return ReadResult::Ok;
            case ControlTransport::Io::Eof:
                return ReadResult::Eof;
            case ControlTransport::Io::Error:
                return ReadResult::Error;
            }
        }
        return ReadResult::Ok;
    }

    // Writes what is pending; false if the connection was closed.
    bool flush(Conn &c) {
        while (c.outPos < c.out.size()) {
            std::size_t n = 0;
            switch (c.io.write(c.out.data() + c.outPos, c.out.size() - c.outPos, n)) {
            case ControlTransport::Io::Done:
                c.outPos += n;
                continue;
            case ControlTransport::Io::WantWrite:
                c.writeWantsRead = false;
                return true;
            case ControlTransport::Io::WantRead:
                c.writeWantsRead = true;
                return true;
            case ControlTransport::Io::Eof:
            case ControlTransport::Io::Error:
                close(c);
                return false;
            }
        }
        c.dropOutput();
        if (c.phase == Phase::Writing) return written(c);
        return true;
    }

    // An answer is out: close, or wait for the next request.
    bool written(Conn &c) {
        if (shuttingDown) {
            close(c);
            return false;
        }
        if (c.closeAfterWrite) {
            linger(c);
            return true;
        }
        enterPhase(c, c.nothingPending() ? Phase::Idle : Phase::Reading);
        ready.push_back(c.id); // pipelined bytes, or TLS bytes already decrypted
        return true;
    }

    // Shuts our side and drops what the peer still sends until it closes too: closing with
    // unread bytes would make the kernel reset the connection, and the peer could lose the
    // answer it has not read yet (a 413 sent before the body was read, say).
    void linger(Conn &c) {
        c.io.shutdownWrite();
        c.dropInput();
        c.lingered = 0;
        enterPhase(c, Phase::Lingering);
        ready.push_back(c.id);
    }

    void drainLinger(Conn &c) {
        for (;;) {
            std::size_t n = 0;
            auto io = c.io.read(scratch.data(), scratch.size(), n);
            if (io == ControlTransport::Io::Done) {
                c.lingered += n;
                if (c.lingered <= kLingerMaxBytes) continue;
            } else if (io == ControlTransport::Io::WantRead || io == ControlTransport::Io::WantWrite) {
                c.readWantsWrite = io == ControlTransport::Io::WantWrite;
                return;
            }
            close(c);
            return;
        }
    }

    // An answer of our own, then the connection ends.
    void answerAndClose(Conn &c, int status, const std::string &why) {
        c.out += plainResponse(status, why, true);
        c.closeAfterWrite = true;
        c.continueSent = false;
        c.dropInput();
        c.framer.reset();
        enterPhase(c, Phase::Writing, Clock::now() + opt.lingerTimeout);
        flush(c);
    }

    void onReadable(Conn &c) {
        ReadResult r = readAvailable(c);
        if (r == ReadResult::Error) return close(c);
        if (r == ReadResult::Eof) c.peerDone = true;
        if (c.phase == Phase::Idle) {
            if (c.nothingPending()) {
                if (c.peerDone) close(c);
                return;
            }
            enterPhase(c, Phase::Reading);
        }
        advance(c);
    }

    // Looks for a complete request in what has arrived.
    void advance(Conn &c) {
        switch (c.framer.scan(c.pending())) {
        case RequestFramer::Status::Invalid:
            counters.refuse(ControlRefusal::BadRequest);
            return answerAndClose(c, c.framer.errorStatus(), c.framer.error());
        case RequestFramer::Status::Complete:
            return dispatch(c);
        case RequestFramer::Status::NeedMore:
            break;
        }
        if (c.peerDone) return close(c); // it stopped sending in the middle: no one to answer
        if (c.framer.headComplete() && c.framer.head().expectContinue && !c.continueSent) {
            c.out += kContinue;
            c.continueSent = true;
            flush(c);
        }
    }

    void dispatch(Conn &c) {
        Lane lane = classify(c.framer.head());
        std::string request(c.pending().substr(c.framer.begin(), c.framer.length() - c.framer.begin()));
        c.consume(c.framer.length());
        c.framer.reset();
        ++c.requests;
        bool closeAfter = c.requests >= opt.maxRequestsPerConnection || c.peerDone || shuttingDown;
        enterPhase(c, Phase::Working);
        c.inFlight = request.size();
        if (lane == Lane::Inline) return finish(c, router.exchange(request, c.peer, closeAfter));
        WorkQueue &queue = lane == Lane::Aux ? *aux : *commands;
        bool queued = queue.tryPush([this, id = c.id, request = std::move(request), peer = c.peer, closeAfter] {
            complete(id, router.exchange(request, peer, closeAfter));
        });
        if (!queued) {
            counters.refuse(ControlRefusal::Busy);
            finish(c, Exchange{plainResponse(503, "busy: too many control requests at once; retry shortly", closeAfter, true),
                               closeAfter, nullptr});
        }
    }

    // A lane's answer for a connection in Working.
    void finish(Conn &c, Exchange ex) {
        c.inFlight = 0;
        if (ex.stream) {
            if (streams.size() < opt.maxStreams && !shuttingDown) return openStream(c, std::move(ex));
            counters.refuse(ControlRefusal::Busy);
            ex = Exchange{plainResponse(503, "busy: too many streams open on the control API (" +
                                                 std::to_string(opt.maxStreams) + "); retry shortly",
                                         true, true),
                          true, nullptr};
        }
        if (c.continueSent) {
            // cpp-httplib writes its own "100 Continue" for such a request: ours went out already.
            if (ex.response.compare(0, kContinue.size(), kContinue) == 0) ex.response.erase(0, kContinue.size());
            c.continueSent = false;
        }
        if (c.out.empty())
            c.out = std::move(ex.response);
        else
            c.out += ex.response; // after a "100 Continue" not yet written
        c.closeAfterWrite = ex.close;
        enterPhase(c, Phase::Writing);
        flush(c);
    }

    // The connection now only carries the stream: its head and first event at once, then an
    // event per interval (pumpStreams). What the peer still sends is read and dropped.
    void openStream(Conn &c, Exchange ex) {
        c.continueSent = false; // one of ours may still be in `out`: an interim answer, harmless
        c.dropInput();
        c.framer.reset();
        c.closeAfterWrite = true;
        c.stream = std::move(ex.stream);
        c.out += ex.response;
        enterPhase(c, Phase::Streaming, Clock::time_point::max());
        streams.push_back(c.id);
        c.nextEvent = Clock::now();
        pump(c, c.nextEvent);
    }

    // Writes the stream's next event if it is due; false if the connection was closed.
    bool pump(Conn &c, Clock::time_point now) {
        if (now >= c.nextEvent) {
            c.nextEvent = now + c.stream->interval;
            std::string event;
            try {
                event = c.stream->next();
            } catch (const std::exception &e) {
                spdlog::error("control API: a stream's source failed: {}", e.what());
                close(c);
                return false;
            }
            c.out += event;
        }
        if (!flush(c)) return false;
        // What the socket would not take: a reader that falls behind by more is not waited for.
        if (c.out.size() - c.outPos > opt.maxStreamBacklog) {
            spdlog::warn("control API: closed a stream to {}: more than {} bytes unread (a slow reader)",
                         c.peer.remoteAddr, opt.maxStreamBacklog);
            counters.refuse(ControlRefusal::Timeout);
            close(c);
            return false;
        }
        return true;
    }

    void pumpStreams(Clock::time_point now) {
        std::vector<std::uint64_t> ids = streams; // pump() may close, which edits `streams`
        for (std::uint64_t id : ids)
            if (Conn *c = conns.find(id); c && pump(*c, now)) settle(id);
    }

    // A stream's peer sent something: drop it; its end ends the stream.
    void drainStream(Conn &c) {
        for (std::size_t total = 0; total < kLingerMaxBytes;) {
            std::size_t n = 0;
            switch (c.io.read(scratch.data(), scratch.size(), n)) {
            case ControlTransport::Io::Done:
                total += n;
                continue;
            case ControlTransport::Io::WantRead:
                c.readWantsWrite = false;
                return;
            case ControlTransport::Io::WantWrite:
                c.readWantsWrite = true;
                return;
            default:
                return close(c);
            }
        }
    }

    void takeAnswers() {
        std::vector<std::pair<std::uint64_t, Exchange>> batch;
        {
            std::lock_guard lock(doneMu);
            batch.swap(done);
        }
        for (auto &[id, ex] : batch) {
            Conn *c = conns.find(id);
            if (!c || c->phase != Phase::Working) continue; // closed meanwhile
            finish(*c, std::move(ex));
            settle(id);
        }
    }

    void handshake(Conn &c) {
        switch (c.io.handshake()) {
        case ControlTransport::Io::Done:
            c.readWantsWrite = false;
            enterPhase(c, Phase::Reading, c.deadline); // the first request's deadline runs from the accept
            return onReadable(c);
        case ControlTransport::Io::WantRead:
            c.readWantsWrite = false;
            return;
        case ControlTransport::Io::WantWrite:
            c.readWantsWrite = true;
            return;
        default:
            return close(c);
        }
    }

    void service(Conn &c, std::uint32_t events) {
        if (events & EPOLLERR) return close(c);
        switch (c.phase) {
        case Phase::Handshake:
            return handshake(c);
        case Phase::Reading:
            if (c.outPos < c.out.size() && !flush(c)) return;
            return onReadable(c);
        case Phase::Idle:
            return onReadable(c);
        case Phase::Writing:
            flush(c);
            return;
        case Phase::Lingering:
            return drainLinger(c);
        case Phase::Streaming:
            if (events & EPOLLHUP) return close(c);
            if (c.outPos < c.out.size() && !flush(c)) return;
            return drainStream(c);
        case Phase::Working:
        case Phase::Count:
            if (events & EPOLLHUP) close(c); // gone both ways: the answer has nowhere to go
            return;
        }
    }

    // Room for one more connection (see ConnectionTable::longestWaiting).
    bool makeRoom() {
        Conn *victim = conns.longestWaiting();
        if (!victim) return false;
        if (victim->phase != Phase::Lingering && victim->phase != Phase::Idle) counters.refuse(ControlRefusal::Evicted);
        close(*victim);
        return true;
    }

    // Over the connection limit: a short answer and a close, never a wait.
    void refuse(int fd) {
        counters.refuse(ControlRefusal::Capacity);
        if (!sslCtx) {
            char drop[4096];
            while (::recv(fd, drop, sizeof drop, MSG_DONTWAIT) > 0) {
            }
            std::string a = plainResponse(503, "too many connections to the control API; retry shortly", true, true);
            ssize_t r = ::send(fd, a.data(), a.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
            (void)r;
        }
        ::close(fd);
    }

    // false (and the socket closed) if it cannot be served.
    bool addConnection(int fd, bool onSpare) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        SSL *ssl = nullptr;
        if (sslCtx) {
            ssl = SSL_new(sslCtx);
            if (!ssl || SSL_set_fd(ssl, fd) != 1) {
                if (ssl) SSL_free(ssl);
                ::close(fd);
                return false;
            }
            SSL_set_accept_state(ssl);
        }
        std::uint64_t id = nextId++;
        auto c = std::make_unique<Conn>(id, fd, ssl, opt.limits);
        c->peer = peerOf(fd);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = id;
        if (epoll_ctl(epollFd, EPOLL_CTL_ADD, fd, &ev) != 0) return false; // c closes the socket
        c->interest = EPOLLIN;
        c->onSpare = onSpare;
        Conn &ref = conns.add(std::move(c));
        counters.connections.add(1);
        enterPhase(ref, sslCtx ? Phase::Handshake : Phase::Reading);
        return true;
    }

    void acceptSome() {
        for (std::size_t i = 0; i < kAcceptBatch; ++i) {
            ControlAcceptor::Accepted a = acceptor.next();
            if (a.exhausted) {
                // Out of descriptors and the spare in use (accept() says so before it looks at
                // the queue, so nobody may be waiting): rest for a tick; a client waits in the
                // queue meanwhile.
                epoll_event ev{};
                ev.data.u64 = kListenerId;
                epoll_ctl(epollFd, EPOLL_CTL_MOD, acceptor.fd(), &ev);
                listenerPausedUntil = Clock::now() + kTick;
                return;
            }
            if (a.fd < 0) return;
            if (shuttingDown) {
                ::close(a.fd);
            } else if (conns.size() >= opt.maxConnections && !makeRoom()) {
                refuse(a.fd);
            } else if (addConnection(a.fd, a.spare)) {
                if (a.spare) return; // the last descriptor there is: nothing more to accept
                continue;
            }
            if (a.spare) acceptor.replenish();
        }
    }

    void sweep(Clock::time_point now) {
        if (acceptor.fd() >= 0 && listenerPausedUntil != Clock::time_point() && now >= listenerPausedUntil) {
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.u64 = kListenerId;
            epoll_ctl(epollFd, EPOLL_CTL_MOD, acceptor.fd(), &ev);
            listenerPausedUntil = Clock::time_point();
            acceptor.replenish();
        }
        for (std::uint64_t id : conns.expired(now)) {
            Conn *found = conns.find(id);
            if (!found) continue;
            Conn &c = *found;
            if (c.phase == Phase::Reading && (c.framer.started() || !c.nothingPending()) && c.out.empty()) {
                counters.refuse(ControlRefusal::Timeout);
                auto secs = std::chrono::duration_cast<std::chrono::duration<double>>(requestTimeout()).count();
                char why[160];
                std::snprintf(why, sizeof why,
                              "request timeout: the request was not complete within %g s (control_request_timeout_s)",
                              secs);
                answerAndClose(c, 408, why);
                settle(id);
                continue;
            }
            if (c.phase == Phase::Handshake || c.phase == Phase::Reading || c.phase == Phase::Writing)
                counters.refuse(ControlRefusal::Timeout);
            close(c);
        }
    }

    void beginShutdown() {
        shuttingDown = true;
        shutdownDeadline = Clock::now() + opt.stopGrace;
        if (acceptor.fd() >= 0) {
            epoll_ctl(epollFd, EPOLL_CTL_DEL, acceptor.fd(), nullptr);
            acceptor.close();
        }
        for (std::uint64_t id : conns.ids()) {
            Conn *c = conns.find(id);
            if (c->phase != Phase::Working && c->phase != Phase::Writing) close(*c);
        }
    }

    void run() {
        std::vector<epoll_event> events(256);
        auto lastSweep = Clock::now();
        for (;;) {
            int timeout = ready.empty() ? static_cast<int>(kTick.count()) : 0;
            int n = epoll_wait(epollFd, events.data(), static_cast<int>(events.size()), timeout);
            for (int i = 0; i < n; ++i) {
                std::uint64_t id = events[i].data.u64;
                if (id == kListenerId) {
                    acceptSome();
                } else if (id == kWakeId) {
                    std::uint64_t v;
                    ssize_t r = ::read(wakeFd, &v, sizeof v);
                    (void)r;
                    takeAnswers();
                } else if (Conn *c = conns.find(id)) {
                    service(*c, events[i].events);
                    settle(id);
                }
            }
            // Work that needs no socket event, one step per connection per round, so that a
            // connection with many pipelined requests cannot hold the loop.
            std::vector<std::uint64_t> now;
            now.swap(ready);
            for (std::uint64_t id : now) {
                Conn *c = conns.find(id);
                if (!c) continue;
                if (c->phase == Phase::Reading || c->phase == Phase::Idle)
                    onReadable(*c);
                else if (c->phase == Phase::Lingering)
                    drainLinger(*c);
                settle(id);
            }
            if (stopRequested.load() && !shuttingDown) beginShutdown();
            auto t = Clock::now();
            if (t - lastSweep >= kTick) {
                sweep(t);
                pumpStreams(t);
                lastSweep = t;
            }
            if (shuttingDown && (conns.empty() || t >= shutdownDeadline)) break;
        }
        for (std::uint64_t id : conns.ids()) close(*conns.find(id));
    }
};

ControlServer::ControlServer(ControlServerOptions options, ControlCounters &counters,
                             std::function<Lane(const RequestHead &)> classify)
    : impl_(std::make_unique<Impl>(std::move(options), counters, std::move(classify))) {}

ControlServer::~ControlServer() {
    stop();
    Impl &d = *impl_;
    if (d.epollFd >= 0) ::close(d.epollFd);
    if (d.wakeFd >= 0) ::close(d.wakeFd);
    if (d.sslCtx) SSL_CTX_free(d.sslCtx);
}

HttpRouter &ControlServer::router() noexcept { return impl_->router; }

bool ControlServer::stopping() const noexcept { return impl_->stopping.load(); }

std::uint16_t ControlServer::port() const noexcept { return impl_->acceptor.port(); }

void ControlServer::setRequestTimeout(std::chrono::milliseconds timeout) noexcept {
    impl_->requestTimeoutMs.store(timeout.count());
}

bool ControlServer::start(std::string *error) {
    Impl &d = *impl_;
    std::lock_guard lock(d.lifecycle);
    auto fail = [&](std::string why) {
        if (error) *error = std::move(why);
        return false;
    };
    if (d.started) return fail("the control API is started already");

    if (d.opt.tls) {
        d.sslCtx = SSL_CTX_new(TLS_server_method());
        if (!d.sslCtx) return fail("control_tls: cannot set up TLS");
        SSL_CTX_set_options(d.sslCtx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION);
        SSL_CTX_set_min_proto_version(d.sslCtx, TLS1_2_VERSION);
        // Partial writes from a buffer that may move: the loop writes what the socket takes.
        // Idle connections give their buffers back.
        SSL_CTX_set_mode(d.sslCtx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                       SSL_MODE_RELEASE_BUFFERS);
        std::string why;
        auto cert = loadTlsFiles(*d.sslCtx, *d.opt.tls, "control_tls", &why);
        if (!cert) return fail(why.empty() ? "control_tls: cannot set up TLS" : why);
        logTlsCertificate("control_tls", *d.opt.tls, *cert);
    }

    if (!d.acceptor.open(d.opt.host, d.opt.port, error)) return false;

    d.epollFd = epoll_create1(EPOLL_CLOEXEC);
    d.wakeFd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (d.epollFd < 0 || d.wakeFd < 0) return fail(std::string("control API: ") + std::strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenerId;
    epoll_ctl(d.epollFd, EPOLL_CTL_ADD, d.acceptor.fd(), &ev);
    ev.data.u64 = kWakeId;
    epoll_ctl(d.epollFd, EPOLL_CTL_ADD, d.wakeFd, &ev);

    // What cpp-httplib writes in its Keep-Alive header, and its own body bound (the framer's
    // comes first).
    auto keepAlive = std::chrono::duration_cast<std::chrono::seconds>(d.opt.keepAliveTimeout).count();
    d.router.set_keep_alive_timeout(std::max<time_t>(1, static_cast<time_t>(keepAlive)));
    d.router.set_keep_alive_max_count(d.opt.maxRequestsPerConnection);
    d.router.set_payload_max_length(d.opt.limits.maxBodyBytes);

    d.commands = std::make_unique<WorkQueue>("wsgw-control", d.opt.commandWorkers, d.opt.commandQueue);
    d.aux = std::make_unique<WorkQueue>("wsgw-control-aux", 1, d.opt.auxQueue);
    d.loop = std::thread([&d] { d.run(); });
    pthread_setname_np(d.loop.native_handle(), "wsgw-ctl-loop");
    d.started = true;
    return true;
}

void ControlServer::stop() {
    Impl &d = *impl_;
    std::lock_guard lock(d.lifecycle);
    if (!d.started || d.stopped) return;
    d.stopped = true;
    d.stopping.store(true);
    d.stopRequested.store(true);
    d.wake();
    if (d.loop.joinable()) d.loop.join();
    d.commands->stop();
    d.aux->stop();
}

} // namespace wsgw::daemon
