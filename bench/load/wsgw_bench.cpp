// wsgw-bench: a WebSocket load generator that checks what it receives.
//
// It opens N WebSocket connections (spread over several 127.0.0.x source addresses and over
// worker threads, each with its own epoll loop), publishes through a server's HTTP publish API
// from the same process, and counts, orders and times every frame the connections receive. See
// bench/README.md for the scenarios and the output; `wsgw-bench --help` for the options.
//
// Hot paths allocate nothing per message: frames are parsed straight out of a per-thread read
// buffer, the payload carries its own sequence number, publish time and checksum, and delivery
// accounting is a per-thread array indexed by publish id plus one atomic add per (message,
// thread) — not per frame.

#include "common.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <zlib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

namespace wsgw::bench {
namespace {

constexpr int kMaxStreams = 32;         // publisher connections (each an ordered stream)
constexpr std::size_t kRing = 16384;    // publish slots: more than any window
constexpr std::size_t kReadBuffer = 256 * 1024;

std::atomic<bool> gQuit{false};

// ---- Options ----------------------------------------------------------------------------------

struct Options {
    std::string url = "ws://127.0.0.1:5000/connect";
    std::string name = "server";
    int connections = 1000;
    int threads = 2;
    int groups = 1;
    int sources = 8;
    std::string subprotocol;
    bool deflate = false;
    int connectConcurrency = 256;
    int connectRetries = 3;
    std::string publish;
    int publishers = 4;
    int groupPublishers = 0; // 0: same as publishers
    int window = 32;
    int groupWindow = 512;
    int latencyWindow = 10;
    int size = 100;
    std::vector<std::string> scenarios{"connect", "throughput", "latency"};
    double warmup = 2;
    double duration = 10;
    double latencyDuration = -1;
    double groupsDuration = -1;
    double inboundDuration = -1;
    int latencyIntervalMs = 100;
    int idleConnections = 15000;
    double sendRate = 0;
    int sendBatch = 1;
    int inboundWindow = 200000;
    std::string sinkUrl;
    std::string sinkPattern;
    std::vector<int> serverPids;
    double settle = 1.0;
    int timeoutS = 10;
    std::string jsonFile;

    bool wants(std::string_view s) const { return std::find(scenarios.begin(), scenarios.end(), s) != scenarios.end(); }
};

enum class PublishKind { Wsgw, Nchan, Pushpin };

// ---- Shared state -----------------------------------------------------------------------------

// Delivery accounting of one publish, indexed by pid % kRing. The publisher owns the slot from
// publish to retirement; each worker adds one to threadsDone when all of its own recipients of
// that pid have it.
struct Slot {
    std::atomic<std::uint64_t> pid{~0ull};
    std::atomic<std::uint32_t> threadsDone{0};
    std::atomic<std::int64_t> lastRecvNs{0};
    // publisher-only
    std::int64_t publishNs = 0;
    std::uint32_t target = 0;
    bool active = false;
};

struct Shared {
    explicit Shared(const Options &o)
        : opt(o), slots(new Slot[kRing]), threadsForGroup(new std::atomic<std::uint16_t>[std::size_t(o.groups)]) {
        for (int g = 0; g < o.groups; ++g) threadsForGroup[std::size_t(g)] = 0;
    }
    const Options &opt;
    std::unique_ptr<Slot[]> slots;
    // How many workers have recipients of a broadcast / of each group (set by main between
    // phases): a publish is delivered when that many workers have reported it.
    std::atomic<std::uint16_t> threadsForAll{0};
    std::unique_ptr<std::atomic<std::uint16_t>[]> threadsForGroup;
    int publisherWake = -1; // eventfd: a publish may have completed
    std::atomic<std::int64_t> sendCredit{0};
    // The publisher's per-stream sequence numbers, read by workers when verifying (after the
    // publisher is idle).
    std::vector<std::uint32_t> publishedAll;   // [stream]
    std::vector<std::uint32_t> publishedGroup; // [stream * groups + group]

    std::uint16_t threadsFor(std::uint32_t target) const {
        if (target == kAllGroup) return threadsForAll.load(std::memory_order_relaxed);
        if (target >= std::uint32_t(opt.groups)) return 0;
        return threadsForGroup[target].load(std::memory_order_relaxed);
    }
};

void atomicMax(std::atomic<std::int64_t> &a, std::int64_t v) {
    std::int64_t cur = a.load(std::memory_order_relaxed);
    while (cur < v && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
    }
}

// ---- Connections and workers ------------------------------------------------------------------

enum class State : std::uint8_t { Idle, Connecting, Handshake, Open, Closed, Failed };

struct Conn {
    int fd = -1;
    std::uint32_t index = 0;
    std::uint32_t group = 0;
    State state = State::Idle;
    std::uint8_t tries = 0;
    bool deflate = false;          // permessage-deflate negotiated
    bool serverNoContext = false;  // the server resets its compressor after each message
    bool assembling = false;       // inside a fragmented message
    bool assemblingCompressed = false;
    bool closedByServer = false;
    std::int64_t startNs = 0;
    std::string acceptKey;         // expected Sec-WebSocket-Accept
    std::string rx;                // handshake response, then bytes of an incomplete frame
    std::string out;               // bytes of a frame that did not fit into the socket
    std::string message;           // a fragmented message being assembled
    z_stream *inflater = nullptr;
    std::uint32_t sendSeq = 0;
    unsigned char mask[4] = {};
    std::uint32_t seqAll[kMaxStreams] = {};
    std::uint32_t seqGroup[kMaxStreams] = {};
};

struct WorkerStats {
    std::uint64_t frames = 0;        // data frames received
    std::uint64_t corrupt = 0;       // payload failed its check
    std::uint64_t outOfOrder = 0;    // seq not the expected one
    std::uint64_t misrouted = 0;     // a group message at a connection of another group
    std::uint64_t unexpected = 0;    // data frames that are no bench payload (inbound mode)
    std::uint64_t serverCloses = 0;  // connections the server closed or reset
    std::uint64_t protocolErrors = 0;
    std::uint64_t sent = 0;          // frames sent (inbound)
};

class Worker {
public:
    Worker(Shared &shared, int index, std::size_t capacity) : s_(shared), index_(index) {
        conns_.reserve(capacity);
        readBuf_.resize(kReadBuffer);
        inflateBuf_.resize(64 * 1024);
        local_.resize(kRing);
        groupMembers_.assign(std::size_t(shared.opt.groups), 0);
        ep_ = epoll_create1(EPOLL_CLOEXEC);
        wake_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = nullptr;
        epoll_ctl(ep_, EPOLL_CTL_ADD, wake_, &ev);
    }
    ~Worker() {
        for (Conn &c : conns_) closeConn(c, State::Closed);
        close(ep_);
        close(wake_);
    }

    void start() { thread_ = std::thread([this] { loop(); }); }
    void join() {
        if (thread_.joinable()) thread_.join();
    }

    /// Runs `fn` on the worker's thread and waits for it. Main thread only.
    void call(std::function<void()> fn) {
        std::unique_lock lock(mu_);
        task_ = std::move(fn);
        taskDone_ = false;
        std::uint64_t one = 1;
        (void)!write(wake_, &one, sizeof one);
        if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return taskDone_; })) {
            std::fprintf(stderr, "wsgw-bench: worker %d did not answer for 60 s; giving up\n", index_);
            std::_Exit(2);
        }
    }

    // Called through call():
    void addConnections(std::uint32_t from, std::uint32_t to, int threads) {
        for (std::uint32_t i = from; i < to; ++i) {
            if (int(i % std::uint32_t(threads)) != index_) continue;
            Conn &c = conns_.emplace_back();
            c.index = i;
            c.group = i % std::uint32_t(s_.opt.groups);
            pending_.push_back(&c);
        }
    }
    void closeFrom(std::uint32_t index) {
        for (Conn &c : conns_)
            if (c.index >= index && c.state != State::Closed && c.state != State::Failed) closeConn(c, State::Closed);
    }
    // Counts this worker's open connections per target, for delivery accounting.
    void prepare() {
        open_.clear();
        std::fill(groupMembers_.begin(), groupMembers_.end(), 0);
        for (Conn &c : conns_) {
            if (c.state != State::Open) continue;
            open_.push_back(&c);
            ++groupMembers_[c.group];
        }
        allMembers_ = std::uint32_t(open_.size());
        for (auto &l : local_) l = Local{};
    }
    void setSending(bool on, double rate, int batch) {
        sending_ = on;
        if (on) inbound_ = true;
        sendRate_ = rate;
        sendBatch_ = std::max(1, batch);
        tokens_ = 0;
        lastTickNs_ = monoNs();
    }
    void takeLatency(Histogram *out, bool reset) {
        out->merge(latency_);
        if (reset) latency_.clear();
    }
    void takeConnectTimes(Histogram *out) { out->merge(connectTimes_); }
    // Missing frames against the publisher's sequence numbers, and the first discrepancy.
    void verify(int streams, std::uint64_t *missing, std::uint64_t *extra, std::string *first) {
        for (Conn *c : open_) {
            for (int k = 0; k < streams; ++k) {
                auto check = [&](std::uint32_t got, std::uint32_t want, const char *what) {
                    if (got == want) return;
                    if (got < want)
                        *missing += want - got;
                    else
                        *extra += got - want;
                    if (first->empty())
                        *first = "connection " + std::to_string(c->index) + " stream " + std::to_string(k) + " " +
                                 what + ": received up to seq " + std::to_string(got) + ", published " +
                                 std::to_string(want);
                };
                check(c->seqAll[k], s_.publishedAll[std::size_t(k)], "broadcasts");
                check(c->seqGroup[k], s_.publishedGroup[std::size_t(k) * std::size_t(s_.opt.groups) + c->group],
                      ("group " + std::to_string(c->group)).c_str());
            }
            if (c->state != State::Open && first->empty())
                *first = "connection " + std::to_string(c->index) + " was closed during the run";
        }
    }

    std::uint32_t allMembers() const { return allMembers_; }
    std::uint32_t groupMembers(std::size_t g) const { return groupMembers_[g]; }
    const std::string &firstError() const { return firstError_; }

    // Read by main at any time (single writer: this worker).
    std::atomic<std::uint64_t> framesA{0}, sentA{0};
    std::atomic<std::uint32_t> openedA{0}, failedA{0}, retriesA{0};
    std::atomic<std::uint64_t> errorsA{0};
    std::atomic<std::int64_t> firstOpenNs{0}, lastOpenNs{0};
    WorkerStats stats; // this thread's; read by main through call()

private:
    struct Local { // this worker's share of one publish
        std::uint64_t pid = ~0ull;
        std::uint32_t count = 0;
        std::int64_t lastNs = 0;
    };

    void loop() {
        epoll_event events[512];
        std::int64_t lastSweep = monoNs();
        while (!gQuit.load(std::memory_order_relaxed)) {
            int timeout = 50;
            if (sending_) timeout = idleRound_ ? 1 : 0;
            else if (!pending_.empty() || !retry_.empty() || connecting_ > 0) timeout = 5;
            int n = epoll_wait(ep_, events, 512, timeout);
            now_ = monoNs();
            for (int i = 0; i < n; ++i) {
                if (!events[i].data.ptr) {
                    std::uint64_t v;
                    (void)!read(wake_, &v, sizeof v);
                    runTask();
                    continue;
                }
                Conn &c = *static_cast<Conn *>(events[i].data.ptr);
                onEvent(c, events[i].events);
            }
            startConnects();
            if (sending_) sendRound();
            if (now_ - lastSweep > 100'000'000) {
                lastSweep = now_;
                sweepTimeouts();
            }
            framesA.store(stats.frames, std::memory_order_relaxed);
            sentA.store(stats.sent, std::memory_order_relaxed);
            errorsA.store(stats.corrupt + stats.outOfOrder + stats.misrouted + stats.serverCloses +
                              stats.protocolErrors,
                          std::memory_order_relaxed);
        }
    }

    void runTask() {
        std::function<void()> fn;
        {
            std::lock_guard lock(mu_);
            fn = std::move(task_);
            task_ = nullptr;
        }
        if (!fn) return;
        fn();
        {
            std::lock_guard lock(mu_);
            taskDone_ = true;
        }
        cv_.notify_all();
    }

    void error(const std::string &what) {
        if (firstError_.empty()) firstError_ = what;
    }

    // -- connecting --

    void startConnects() {
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

    void beginConnect(Conn &c) {
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

    void retryOrFail(Conn &c) {
        if (++c.tries <= s_.opt.connectRetries) {
            retriesA.fetch_add(1, std::memory_order_relaxed);
            c.state = State::Idle;
            c.startNs = monoNs() + 100'000'000 * std::int64_t(std::min<int>(c.tries, 20)); // back off a little
            retry_.push_back(&c);
            return;
        }
        failConn(c);
    }

    void failConn(Conn &c) {
        c.state = State::Failed;
        failedA.fetch_add(1, std::memory_order_relaxed);
    }

    std::string requestPath(const Conn &c) const {
        std::string path = url_.path;
        std::size_t at = path.find("{group}");
        if (at != std::string::npos) path.replace(at, 7, std::to_string(c.group));
        return path;
    }

    void sendHandshake(Conn &c) {
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

    void handshakeFailed(Conn &c, const std::string &why) {
        error("handshake of connection " + std::to_string(c.index) + ": " + why);
        --connecting_;
        closeConn(c, State::Failed);
        retryOrFail(c);
    }

    void onHandshakeData(Conn &c) {
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

    void sweepTimeouts() {
        if (connecting_ == 0) return;
        const std::int64_t limit = std::int64_t(s_.opt.timeoutS) * 1'000'000'000;
        for (Conn &c : conns_) {
            if ((c.state == State::Connecting || c.state == State::Handshake) && now_ - c.startNs > limit)
                handshakeFailed(c, "timed out");
        }
    }

    // -- events --

    void onEvent(Conn &c, std::uint32_t ev) {
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

    void onReadable(Conn &c) {
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

    // Parses every complete frame in p[0, n) and keeps the rest in c.rx; `inRx`: p is c.rx's
    // own buffer (its capacity is kept, so a connection allocates only for its largest frame).
    void consume(Conn &c, unsigned char *p, std::size_t n, bool inRx) {
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

    void protocolError(Conn &c, const std::string &what) {
        ++stats.protocolErrors;
        error("connection " + std::to_string(c.index) + ": " + what);
        closeConn(c, State::Closed);
    }

    void onFrame(Conn &c, const FrameHeader &h, unsigned char *payload, std::size_t len) {
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

    void inflateMessage(Conn &c, unsigned char *data, std::size_t len) {
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

    void onMessage(Conn &c, const char *data, std::size_t len) {
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

    // -- sending (inbound scenario) --

    void queueOut(Conn &c, const char *data, std::size_t n) {
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

    void flushOut(Conn &c) {
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

    void sendRound() {
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

    void closeConn(Conn &c, State to) {
        if (c.fd >= 0) {
            epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
            close(c.fd);
            c.fd = -1;
        }
        if (c.inflater) {
            inflateEnd(c.inflater);
            delete c.inflater;
            c.inflater = nullptr;
        }
        c.rx.clear();
        c.state = to;
    }

public:
    Url url_;

private:
    Shared &s_;
    int index_;
    int ep_ = -1;
    int wake_ = -1;
    std::thread thread_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::function<void()> task_;
    bool taskDone_ = false;

    std::vector<Conn> conns_;
    std::vector<Conn *> pending_;
    std::vector<Conn *> retry_; // failed connections waiting to be tried again
    std::vector<Conn *> open_;
    int connecting_ = 0;
    std::int64_t now_ = 0;

    std::vector<unsigned char> readBuf_;
    std::vector<unsigned char> inflateBuf_;
    std::vector<unsigned char> sendBuf_;
    std::vector<Local> local_;
    std::vector<std::uint32_t> groupMembers_;
    std::uint32_t allMembers_ = 0;

    bool sending_ = false;
    bool inbound_ = false; // from the first inbound run on: frames from the server are not checked
    bool idleRound_ = false;
    double sendRate_ = 0;
    int sendBatch_ = 1;
    double tokens_ = 0;
    std::int64_t lastTickNs_ = 0;
    std::size_t cursor_ = 0;

    Histogram latency_;
    Histogram connectTimes_;
    std::string firstError_;
};

// ---- The publisher ----------------------------------------------------------------------------

// Publishes through a server's HTTP API over `streams` keep-alive connections, one request in
// flight on each, so that the messages of one stream reach the server in order. At most
// `window` messages are published but not yet delivered to every recipient: back-to-back
// publishing that the slowest delivery paces, rather than queues growing without bound.
class Publisher {
public:
    enum class Mode { Idle, Broadcast, Groups, Paced };

    Publisher(Shared &s, PublishKind kind, HostPort addr) : s_(s), kind_(kind), addr_(std::move(addr)) {
        ep_ = epoll_create1(EPOLL_CLOEXEC);
        s_.publisherWake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = ~0ull;
        epoll_ctl(ep_, EPOLL_CTL_ADD, s_.publisherWake, &ev);
        s_.publishedAll.assign(kMaxStreams, 0);
        s_.publishedGroup.assign(std::size_t(kMaxStreams) * std::size_t(s_.opt.groups), 0);
        payload_.resize(std::size_t(s_.opt.size));
        rng_.seed(12345);
    }
    ~Publisher() {
        stopThread();
        for (Stream &st : streams_)
            if (st.fd >= 0) close(st.fd);
        close(ep_);
        close(s_.publisherWake);
    }

    bool open(int count, std::string *error) {
        streams_.resize(std::size_t(count));
        for (std::size_t k = 0; k < streams_.size(); ++k) {
            if (!reconnect(streams_[k], k, error)) return false;
        }
        return true;
    }

    void startThread() { thread_ = std::thread([this] { loop(); }); }
    void stopThread() {
        quit_ = true;
        if (thread_.joinable()) thread_.join();
    }

    struct Targets {
        std::uint64_t all = 0;               // recipients of a broadcast
        std::vector<std::uint64_t> group;    // recipients per group
    };

    /// Starts publishing. `streams` <= the number opened.
    void run(Mode mode, int window, int streams, std::int64_t intervalNs, Targets targets) {
        std::lock_guard lock(mu_);
        targets_ = std::move(targets);
        groupsWithMembers_.clear();
        for (std::size_t g = 0; g < targets_.group.size(); ++g)
            if (targets_.group[g] > 0) groupsWithMembers_.push_back(std::uint32_t(g));
        window_ = window;
        activeStreams_ = std::min<int>(streams, int(streams_.size()));
        intervalNs_ = intervalNs;
        nextDueNs_ = monoNs();
        // Each scenario is judged on its own: what failed before stays in that scenario's report.
        published_ = completed_ = timedOut_ = httpErrors_ = countMismatches_ = skipped_ = 0;
        firstError_.clear();
        lastRecipients_.clear();
        loaded_.clear();
        mode_.store(mode);
    }

    /// Stops publishing and waits for what is in flight to be delivered (or to time out).
    bool idle(int timeoutS) {
        mode_.store(Mode::Idle);
        std::int64_t deadline = monoNs() + std::int64_t(timeoutS) * 1'000'000'000;
        while (monoNs() < deadline) {
            {
                std::lock_guard lock(mu_);
                if (active_ == 0 && busyStreams() == 0) return true;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        return false;
    }

    struct Report {
        std::uint64_t published = 0, completed = 0, timedOut = 0, httpErrors = 0, countMismatches = 0;
        std::uint64_t skipped = 0; // Paced: broadcasts not published because too many were in flight
        std::vector<std::int64_t> lastRecipient; // per message: publish -> last recipient (Paced)
        Histogram loaded;                        // the same, for every message (Broadcast, Groups)
        std::string firstError;
    };
    Report report() {
        std::lock_guard lock(mu_);
        Report r;
        r.published = published_;
        r.completed = completed_;
        r.timedOut = timedOut_;
        r.httpErrors = httpErrors_;
        r.countMismatches = countMismatches_;
        r.skipped = skipped_;
        r.lastRecipient = lastRecipients_;
        r.loaded = loaded_;
        r.firstError = firstError_;
        return r;
    }
    void resetLoaded() {
        std::lock_guard lock(mu_);
        loaded_.clear();
    }
    std::uint64_t publishedCount() {
        std::lock_guard lock(mu_);
        return published_;
    }
    int streamsOpen() const { return int(streams_.size()); }

private:
    struct Stream {
        int fd = -1;
        std::string out;
        std::size_t outAt = 0;
        std::string in;
        bool busy = false;
        std::int64_t sentNs = 0;
        std::uint64_t pid = 0;
        std::uint32_t target = 0;
        int retries = 0;
    };

    int busyStreams() const {
        int n = 0;
        for (const Stream &st : streams_) n += st.busy;
        return n;
    }

    bool reconnect(Stream &st, std::size_t k, std::string *error) {
        if (st.fd >= 0) {
            epoll_ctl(ep_, EPOLL_CTL_DEL, st.fd, nullptr);
            close(st.fd);
        }
        st.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(addr_.port);
        inet_pton(AF_INET, addr_.host.c_str(), &sa.sin_addr);
        if (st.fd < 0 || connect(st.fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) != 0) {
            if (error)
                *error = "publisher: connect " + addr_.host + ":" + std::to_string(addr_.port) + ": " +
                         std::strerror(errno);
            if (st.fd >= 0) close(st.fd);
            st.fd = -1;
            return false;
        }
        tuneSocket(st.fd);
        st.in.clear();
        st.in.reserve(4096);
        st.out.reserve(1024 + std::size_t(s_.opt.size) * 2);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = k;
        epoll_ctl(ep_, EPOLL_CTL_ADD, st.fd, &ev);
        return true;
    }

    void fail(const std::string &what) {
        if (firstError_.empty()) firstError_ = what;
    }

    void loop() {
        epoll_event events[64];
        while (!quit_ && !gQuit.load(std::memory_order_relaxed)) {
            Mode mode = mode_.load();
            int timeout = 20;
            if (mode == Mode::Paced) {
                std::int64_t wait = nextDueNs_ - monoNs();
                timeout = int(std::clamp<std::int64_t>(wait / 1'000'000, 0, 20));
            } else if (mode != Mode::Idle) {
                timeout = 2;
            }
            int n = epoll_wait(ep_, events, 64, timeout);
            std::lock_guard lock(mu_);
            for (int i = 0; i < n; ++i) {
                if (events[i].data.u64 == ~0ull) { // a worker saw a publish complete
                    std::uint64_t v;
                    (void)!read(s_.publisherWake, &v, sizeof v);
                    continue;
                }
                std::size_t k = events[i].data.u64;
                if (events[i].events & EPOLLOUT) flush(streams_[k], k);
                if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) readResponses(streams_[k], k);
            }
            retire(monoNs());
            publishMore(mode_.load());
        }
    }

    // Retires delivered publishes; gives up on those older than the timeout.
    void retire(std::int64_t now) {
        if (active_ == 0) return;
        const std::int64_t limit = std::int64_t(s_.opt.timeoutS) * 1'000'000'000;
        for (std::size_t i = 0; i < activeList_.size();) {
            Slot &slot = s_.slots[activeList_[i] % kRing];
            std::uint32_t need = s_.threadsFor(slot.target);
            bool done = slot.threadsDone.load(std::memory_order_acquire) >= need;
            bool late = !done && now - slot.publishNs > limit;
            if (!done && !late) {
                ++i;
                continue;
            }
            if (done) {
                std::int64_t lat = need == 0 ? 0 : slot.lastRecvNs.load(std::memory_order_relaxed) - slot.publishNs;
                ++completed_;
                if (mode_.load() == Mode::Paced)
                    lastRecipients_.push_back(lat);
                else
                    loaded_.record(lat);
            } else {
                ++timedOut_;
                fail("publish " + std::to_string(activeList_[i]) + " was not delivered to every recipient within " +
                     std::to_string(s_.opt.timeoutS) + " s");
            }
            slot.active = false;
            slot.pid.store(~0ull, std::memory_order_release);
            activeList_[i] = activeList_.back();
            activeList_.pop_back();
            --active_;
        }
    }

    void publishMore(Mode mode) {
        if (mode == Mode::Idle || !firstError_.empty()) return;
        std::int64_t now = monoNs();
        if (mode == Mode::Paced) {
            if (now < nextDueNs_) return;
            Stream &st = streams_[0];
            if (st.busy || active_ >= window_) {
                // Still busy with earlier broadcasts: this one is skipped, and the server is
                // reported as not keeping up (a backlog would only grow).
                if (now - nextDueNs_ >= intervalNs_) {
                    ++skipped_;
                    nextDueNs_ += intervalNs_;
                }
                return;
            }
            publish(st, 0, kAllGroup, now);
            nextDueNs_ += intervalNs_;
            if (nextDueNs_ < now) nextDueNs_ = now + intervalNs_;
            return;
        }
        for (int k = 0; k < activeStreams_ && active_ < window_; ++k) {
            Stream &st = streams_[std::size_t(k)];
            if (st.busy) continue;
            std::uint32_t target = kAllGroup;
            if (mode == Mode::Groups) {
                if (groupsWithMembers_.empty()) return;
                target = groupsWithMembers_[rng_() % groupsWithMembers_.size()];
            }
            publish(st, std::size_t(k), target, monoNs());
        }
    }

    void publish(Stream &st, std::size_t k, std::uint32_t target, std::int64_t now) {
        std::uint64_t pid = nextPid_++;
        Slot &slot = s_.slots[pid % kRing];
        if (slot.active) { // a publish kRing ago never completed: give up on it now
            ++timedOut_;
            fail("publish " + std::to_string(slot.pid.load()) + " was never delivered to everyone");
            activeList_.erase(std::find(activeList_.begin(), activeList_.end(), slot.pid.load()));
            --active_;
        }
        slot.threadsDone.store(0, std::memory_order_relaxed);
        slot.lastRecvNs.store(0, std::memory_order_relaxed);
        slot.publishNs = now;
        slot.target = target;
        slot.active = true;
        slot.pid.store(pid, std::memory_order_release);
        activeList_.push_back(pid);
        ++active_;

        PayloadFields f;
        f.stream = std::uint32_t(k);
        f.group = target;
        std::uint32_t &seq = target == kAllGroup ? s_.publishedAll[k]
                                                 : s_.publishedGroup[k * std::size_t(s_.opt.groups) + target];
        f.seq = seq++;
        f.pid = pid;
        f.ts = now;
        writePayload(payload_.data(), payload_.size(), f);
        buildRequest(st, target);
        st.pid = pid;
        st.target = target;
        st.retries = 0;
        st.busy = true;
        st.sentNs = now;
        ++published_;
        flush(st, k);
    }

    void buildRequest(Stream &st, std::uint32_t target) {
        char path[64];
        std::string_view body(payload_.data(), payload_.size());
        std::string &o = st.out;
        o.clear();
        st.outAt = 0;
        switch (kind_) {
        case PublishKind::Wsgw:
            if (target == kAllGroup)
                std::snprintf(path, sizeof path, "/send?all=1");
            else
                std::snprintf(path, sizeof path, "/send?group=g%u", target);
            break;
        case PublishKind::Nchan:
            if (target == kAllGroup)
                std::snprintf(path, sizeof path, "/pub/all");
            else
                std::snprintf(path, sizeof path, "/pub/g%u", target);
            break;
        case PublishKind::Pushpin:
            std::snprintf(path, sizeof path, "/publish/");
            break;
        }
        char channel[16];
        if (target == kAllGroup)
            std::snprintf(channel, sizeof channel, "all");
        else
            std::snprintf(channel, sizeof channel, "g%u", target);
        std::size_t length = body.size();
        static constexpr std::string_view kPre = R"({"items":[{"channel":")";
        static constexpr std::string_view kMid = R"(","formats":{"ws-message":{"content":")";
        static constexpr std::string_view kPost = R"("}}}]})";
        if (kind_ == PublishKind::Pushpin) length += kPre.size() + std::strlen(channel) + kMid.size() + kPost.size();
        char head[256];
        int n = std::snprintf(head, sizeof head,
                              "POST %s HTTP/1.1\r\nHost: %s:%u\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                              path, addr_.host.c_str(), unsigned(addr_.port),
                              kind_ == PublishKind::Pushpin ? "application/json" : "text/plain", length);
        o.append(head, std::size_t(n));
        if (kind_ == PublishKind::Pushpin) {
            o.append(kPre);
            o.append(channel);
            o.append(kMid);
            o.append(body);
            o.append(kPost);
        } else {
            o.append(body);
        }
    }

    void flush(Stream &st, std::size_t k) {
        while (st.outAt < st.out.size()) {
            ssize_t w = send(st.fd, st.out.data() + st.outAt, st.out.size() - st.outAt, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
                st.outAt += std::size_t(w);
                continue;
            }
            if (w < 0 && errno == EINTR) continue;
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                epoll_event ev{};
                ev.events = EPOLLIN | EPOLLOUT;
                ev.data.u64 = k;
                epoll_ctl(ep_, EPOLL_CTL_MOD, st.fd, &ev);
                return;
            }
            fail(std::string("publisher: send: ") + std::strerror(errno));
            return;
        }
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = k;
        epoll_ctl(ep_, EPOLL_CTL_MOD, st.fd, &ev);
    }

    void readResponses(Stream &st, std::size_t k) {
        char buf[8192];
        bool eof = false;
        for (;;) {
            ssize_t n = recv(st.fd, buf, sizeof buf, 0);
            if (n > 0) {
                st.in.append(buf, std::size_t(n));
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) eof = true;
            break;
        }
        for (;;) {
            std::size_t end = st.in.find("\r\n\r\n");
            if (end == std::string::npos) break;
            std::string_view head(st.in.data(), end + 2);
            std::size_t bodyLen = 0;
            bool chunked = false;
            if (auto cl = headerValue(head, "Content-Length")) {
                bodyLen = std::strtoul(std::string(*cl).c_str(), nullptr, 10);
            } else if (auto te = headerValue(head, "Transfer-Encoding"); te && te->find("chunked") != std::string_view::npos) {
                chunked = true;
            }
            std::size_t total;
            if (chunked) {
                std::size_t last = st.in.find("\r\n0\r\n\r\n", end);
                if (st.in.compare(end + 4, 5, "0\r\n\r\n") == 0)
                    total = end + 9;
                else if (last != std::string::npos)
                    total = last + 7;
                else
                    break;
            } else {
                total = end + 4 + bodyLen;
                if (st.in.size() < total) break;
            }
            int status = head.size() > 12 ? std::atoi(std::string(head.substr(9, 3)).c_str()) : 0;
            std::string body = chunked ? std::string() : st.in.substr(end + 4, bodyLen);
            bool closeAfter = false;
            if (auto conn = headerValue(head, "Connection"))
                closeAfter = conn->find("close") != std::string_view::npos;
            st.in.erase(0, total);
            onResponse(st, k, status, body);
            if (closeAfter) {
                eof = false;
                std::string error;
                if (!reconnect(st, k, &error)) fail(error);
                return;
            }
        }
        if (eof) {
            if (st.busy) fail("publisher: the server closed a connection with a request in flight");
            std::string error;
            if (!reconnect(st, k, &error)) fail(error);
        }
    }

    void onResponse(Stream &st, std::size_t k, int status, const std::string &body) {
        if (!st.busy) {
            fail("publisher: an answer nobody asked for");
            return;
        }
        if (status < 200 || status > 299) {
            ++httpErrors_;
            if (status == 503 && st.retries < 50) { // busy: the same request again, in order
                ++st.retries;
                st.outAt = 0;
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
                flush(st, k);
                return;
            }
            fail("publisher: HTTP " + std::to_string(status) + ": " + body.substr(0, 200));
            st.busy = false;
            return;
        }
        if (kind_ == PublishKind::Wsgw) {
            std::uint64_t want = st.target == kAllGroup ? targets_.all : targets_.group[st.target];
            std::uint64_t got = std::strtoull(body.c_str(), nullptr, 10);
            if (got != want) {
                ++countMismatches_;
                fail("publisher: the server queued a message for " + std::to_string(got) + " connections, expected " +
                     std::to_string(want));
            }
        }
        st.busy = false;
    }

    Shared &s_;
    PublishKind kind_;
    HostPort addr_;
    int ep_ = -1;
    std::vector<Stream> streams_;
    std::thread thread_;
    std::atomic<bool> quit_{false};
    std::atomic<Mode> mode_{Mode::Idle};

    std::mutex mu_; // everything below, between the publisher thread and main
    Targets targets_;
    std::vector<std::uint32_t> groupsWithMembers_;
    int window_ = 1;
    int activeStreams_ = 1;
    std::int64_t intervalNs_ = 0;
    std::int64_t nextDueNs_ = 0;
    std::uint64_t nextPid_ = 0;
    int active_ = 0;
    std::vector<std::uint64_t> activeList_;
    std::uint64_t published_ = 0, completed_ = 0, timedOut_ = 0, httpErrors_ = 0, countMismatches_ = 0, skipped_ = 0;
    std::vector<std::int64_t> lastRecipients_;
    Histogram loaded_;
    std::string firstError_;
    std::vector<char> payload_;
    std::mt19937 rng_;
};

// ---- Orchestration ----------------------------------------------------------------------------

struct CpuSample {
    std::int64_t ns = 0;
    std::int64_t server = 0;
    std::int64_t client = 0;
    bool serverKnown = true;
};

class Bench {
public:
    explicit Bench(Options o) : opt_(std::move(o)), shared_(opt_) {}

    int run() {
        auto url = parseUrl(opt_.url);
        if (!url || url->scheme != "ws") return usage("--url must be ws://HOST:PORT/PATH, got " + opt_.url);
        if (opt_.size < int(kMinPayload) || opt_.size > int(kMaxPayload))
            return usage("--size must be between " + std::to_string(kMinPayload) + " and " + std::to_string(kMaxPayload));
        if (opt_.groups < 1 || opt_.groups >= int(kAllGroup)) return usage("--groups must be 1..65534");
        if (opt_.threads < 1 || opt_.threads > 64) return usage("--threads must be 1..64");
        if (opt_.publishers < 1 || opt_.publishers > kMaxStreams) return usage("--publishers must be 1..32");
        if (opt_.groupPublishers == 0) opt_.groupPublishers = opt_.publishers;
        if (opt_.groupPublishers > kMaxStreams) return usage("--group-publishers must be 1..32");
        for (const std::string &s : opt_.scenarios) {
            static const char *known[] = {"connect", "idle-memory", "throughput", "latency", "groups", "inbound"};
            if (std::find_if(std::begin(known), std::end(known), [&](const char *k) { return s == k; }) == std::end(known))
                return usage("unknown scenario '" + s + "'");
        }
        bool publishing = opt_.wants("throughput") || opt_.wants("latency") || opt_.wants("groups");
        if (publishing && opt_.publish.empty()) return usage("throughput, latency and groups need --publish KIND@HOST:PORT");
        if (opt_.wants("inbound") && (opt_.sinkUrl.empty() || opt_.sinkPattern.empty()))
            return usage("inbound needs --sink-url and --sink-pattern");
        if (opt_.latencyDuration < 0) opt_.latencyDuration = opt_.duration;
        if (opt_.groupsDuration < 0) opt_.groupsDuration = opt_.duration;
        if (opt_.inboundDuration < 0) opt_.inboundDuration = opt_.duration;

        std::int64_t rssBefore = serverRss();
        int total = opt_.connections;
        if (opt_.wants("idle-memory")) total = std::max(total, opt_.idleConnections);
        for (int t = 0; t < opt_.threads; ++t) {
            auto w = std::make_unique<Worker>(shared_, t, std::size_t(total / opt_.threads + 1));
            w->url_ = *url;
            workers_.push_back(std::move(w));
        }
        for (auto &w : workers_) w->start();

        if (publishing) {
            auto at = opt_.publish.find('@');
            std::string kind = opt_.publish.substr(0, at);
            auto hp = at == std::string::npos ? std::nullopt : parseHostPort(opt_.publish.substr(at + 1));
            PublishKind pk;
            if (kind == "wsgw" || kind == "raw")
                pk = PublishKind::Wsgw;
            else if (kind == "nchan")
                pk = PublishKind::Nchan;
            else if (kind == "pushpin")
                pk = PublishKind::Pushpin;
            else
                return usage("--publish wants wsgw|raw|nchan|pushpin@HOST:PORT, got " + opt_.publish);
            if (!hp) return usage("--publish wants KIND@HOST:PORT, got " + opt_.publish);
            publisher_ = std::make_unique<Publisher>(shared_, pk, *hp);
            std::string error;
            if (!publisher_->open(std::max(opt_.publishers, opt_.groupPublishers), &error)) return setupFailed(error);
            publisher_->startThread();
        }

        bool ok = connectPhase(std::uint32_t(opt_.connections));
        if (!ok) {
            finish();
            printTable();
            return 2;
        }
        if (opt_.wants("idle-memory")) idleMemory(rssBefore);
        if (opt_.wants("throughput")) fanout("throughput", Publisher::Mode::Broadcast);
        if (opt_.wants("latency")) fanout("latency", Publisher::Mode::Paced);
        if (opt_.wants("groups")) fanout("groups", Publisher::Mode::Groups);
        if (opt_.wants("inbound")) inbound();
        finish();
        printTable();
        return allOk_ ? 0 : 1;
    }

private:
    int usage(const std::string &what) {
        std::fprintf(stderr, "wsgw-bench: %s\n", what.c_str());
        return 2;
    }
    int setupFailed(const std::string &what) {
        std::fprintf(stderr, "wsgw-bench: %s\n", what.c_str());
        finish();
        return 2;
    }

    void finish() {
        if (publisher_) publisher_->stopThread();
        gQuit = true;
        for (auto &w : workers_) w->join();
        workers_.clear();
    }

    void log(const std::string &line) { std::fprintf(stderr, "[%s] %s\n", opt_.name.c_str(), line.c_str()); }

    CpuSample cpu() {
        CpuSample s;
        s.ns = monoNs();
        s.client = selfCpuNs();
        for (int pid : opt_.serverPids) {
            auto v = processCpuNs(pid);
            if (!v) s.serverKnown = false;
            s.server += v.value_or(0);
        }
        if (opt_.serverPids.empty()) s.serverKnown = false;
        return s;
    }

    std::int64_t serverRss() {
        std::int64_t sum = 0;
        for (int pid : opt_.serverPids) sum += processRssBytes(pid).value_or(0);
        return sum;
    }

    std::uint64_t sumFrames() {
        std::uint64_t n = 0;
        for (auto &w : workers_) n += w->framesA.load(std::memory_order_relaxed);
        return n;
    }
    std::uint64_t sumSent() {
        std::uint64_t n = 0;
        for (auto &w : workers_) n += w->sentA.load(std::memory_order_relaxed);
        return n;
    }
    std::uint64_t sumErrors() {
        std::uint64_t n = 0;
        for (auto &w : workers_) n += w->errorsA.load(std::memory_order_relaxed);
        return n;
    }
    std::string firstWorkerError() {
        std::string e;
        for (auto &w : workers_) w->call([&] {
            if (e.empty()) e = w->firstError();
        });
        return e;
    }

    // Sleeps in small steps; false if interrupted.
    bool sleepFor(double seconds) {
        std::int64_t end = monoNs() + std::int64_t(seconds * 1e9);
        while (monoNs() < end) {
            if (gQuit) return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        return true;
    }

    nlohmann::json baseResult(const char *scenario) {
        return nlohmann::json{{"tool", "wsgw-bench"}, {"server", opt_.name},      {"scenario", scenario},
                              {"connections", opt_.connections}, {"threads", opt_.threads}, {"size", opt_.size},
                              {"deflate", opt_.deflate}};
    }

    void emit(nlohmann::json r, const std::string &summary) {
        bool ok = r.value("ok", false);
        if (!ok) allOk_ = false;
        std::string line = r.dump();
        std::fprintf(stdout, "%s\n", line.c_str());
        std::fflush(stdout);
        if (!opt_.jsonFile.empty()) {
            if (FILE *f = std::fopen(opt_.jsonFile.c_str(), "a")) {
                std::fprintf(f, "%s\n", line.c_str());
                std::fclose(f);
            }
        }
        table_.push_back({r["scenario"].get<std::string>(), summary, ok ? "ok" : "FAIL: " + r.value("error", "")});
        log(std::string(r["scenario"].get<std::string>()) + ": " + summary + (ok ? "" : "  FAILED: " + r.value("error", "")));
    }

    void addCpu(nlohmann::json &r, const CpuSample &a, const CpuSample &b, double units, const char *per) {
        double secs = double(b.ns - a.ns) / 1e9;
        r["client_cpu_util"] = double(b.client - a.client) / 1e9 / secs;
        if (units > 0) r[std::string("client_cpu_ns_per_") + per] = double(b.client - a.client) / units;
        if (a.serverKnown && b.serverKnown) {
            r["server_cpu_util"] = double(b.server - a.server) / 1e9 / secs;
            if (units > 0) r[std::string("server_cpu_ns_per_") + per] = double(b.server - a.server) / units;
        }
    }

    // Opens connections [from, to) on every worker and waits for them.
    bool openConnections(std::uint32_t from, std::uint32_t to, double *seconds, Histogram *times,
                         std::uint32_t *failed, std::uint32_t *retries) {
        std::vector<std::uint32_t> opened0, failed0, retries0;
        for (auto &w : workers_) {
            opened0.push_back(w->openedA.load());
            failed0.push_back(w->failedA.load());
            retries0.push_back(w->retriesA.load());
            w->firstOpenNs.store(0);
            w->call([&, wp = w.get()] { wp->addConnections(from, to, opt_.threads); });
        }
        std::uint32_t want = to - from;
        std::int64_t start = monoNs();
        std::int64_t deadline = start + std::int64_t(opt_.timeoutS + 5) * 1'000'000'000 * std::max<std::int64_t>(1, want / 5000);
        std::uint32_t done = 0, ok = 0, bad = 0, retry = 0;
        while (monoNs() < deadline && !gQuit) {
            ok = bad = retry = 0;
            for (std::size_t i = 0; i < workers_.size(); ++i) {
                ok += workers_[i]->openedA.load() - opened0[i];
                bad += workers_[i]->failedA.load() - failed0[i];
                retry += workers_[i]->retriesA.load() - retries0[i];
            }
            done = ok + bad;
            if (done >= want) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        std::int64_t first = INT64_MAX, last = 0;
        for (auto &w : workers_) {
            std::int64_t f = w->firstOpenNs.load();
            if (f) first = std::min(first, f);
            last = std::max(last, w->lastOpenNs.load());
        }
        if (seconds) *seconds = first == INT64_MAX ? 0 : double(last - first) / 1e9;
        if (times)
            for (auto &w : workers_) w->call([&, wp = w.get()] { wp->takeConnectTimes(times); });
        if (failed) *failed = bad + (want - std::min(want, done));
        if (retries) *retries = retry;
        return ok == want;
    }

    bool connectPhase(std::uint32_t n) {
        log("opening " + std::to_string(n) + " connections to " + opt_.url);
        double secs = 0;
        Histogram times;
        std::uint32_t failed = 0, retries = 0;
        CpuSample a = cpu();
        bool ok = openConnections(0, n, &secs, &times, &failed, &retries);
        CpuSample b = cpu();
        nlohmann::json r = baseResult("connect");
        r["ok"] = ok;
        r["handshakes_per_s"] = secs > 0 ? double(n - failed) / secs : 0.0;
        r["seconds"] = secs;
        r["handshake_p50_ms"] = double(times.quantile(0.5)) / 1e6;
        r["handshake_p99_ms"] = double(times.quantile(0.99)) / 1e6;
        r["handshake_max_ms"] = double(times.max()) / 1e6;
        r["failed"] = failed;
        r["retries"] = retries;
        addCpu(r, a, b, double(n), "handshake");
        if (!ok) r["error"] = "not every connection opened: " + firstWorkerError();
        if (opt_.wants("connect") || !ok)
            emit(r, humanCount(r.value("handshakes_per_s", 0.0)) + " handshakes/s, p99 " +
                        humanNs(double(times.quantile(0.99))));
        return ok;
    }

    void idleMemory(std::int64_t rssBefore) {
        std::uint32_t extra = opt_.idleConnections > opt_.connections ? std::uint32_t(opt_.idleConnections - opt_.connections) : 0;
        nlohmann::json r = baseResult("idle-memory");
        r["connections"] = std::max(opt_.connections, opt_.idleConnections);
        bool ok = true;
        std::string error;
        if (extra > 0) {
            log("opening " + std::to_string(extra) + " more connections (idle memory)");
            std::uint32_t failed = 0;
            ok = openConnections(std::uint32_t(opt_.connections), std::uint32_t(opt_.idleConnections), nullptr, nullptr,
                                 &failed, nullptr);
            if (!ok) error = std::to_string(failed) + " connections failed: " + firstWorkerError();
        }
        sleepFor(opt_.settle);
        std::int64_t rssAfter = serverRss();
        int total = std::max(opt_.connections, opt_.idleConnections);
        if (opt_.serverPids.empty()) {
            ok = false;
            error = "needs --server-pid";
        }
        r["ok"] = ok;
        r["rss_before_bytes"] = rssBefore;
        r["rss_after_bytes"] = rssAfter;
        r["bytes_per_connection"] = double(rssAfter - rssBefore) / total;
        if (!ok) r["error"] = error;
        emit(r, humanCount(double(rssAfter - rssBefore) / total) + " B per connection (" +
                    std::to_string(rssBefore >> 20) + " MiB -> " + std::to_string(rssAfter >> 20) + " MiB)");
        if (extra > 0) {
            for (auto &w : workers_) w->call([&, wp = w.get()] { wp->closeFrom(std::uint32_t(opt_.connections)); });
            sleepFor(0.5); // let the server see them go
        }
    }

    Publisher::Targets prepareTargets() {
        for (auto &w : workers_) w->call([wp = w.get()] { wp->prepare(); });
        Publisher::Targets t;
        t.group.assign(std::size_t(opt_.groups), 0);
        std::uint16_t allThreads = 0;
        std::vector<std::uint16_t> groupThreads(std::size_t(opt_.groups), 0);
        for (auto &w : workers_) {
            t.all += w->allMembers();
            allThreads += w->allMembers() > 0;
            for (std::size_t g = 0; g < std::size_t(opt_.groups); ++g) {
                t.group[g] += w->groupMembers(g);
                groupThreads[g] += w->groupMembers(g) > 0;
            }
        }
        shared_.threadsForAll = allThreads;
        for (std::size_t g = 0; g < std::size_t(opt_.groups); ++g) shared_.threadsForGroup[g] = groupThreads[g];
        return t;
    }

    void fanout(const char *scenario, Publisher::Mode mode) {
        const bool paced = mode == Publisher::Mode::Paced;
        const bool groups = mode == Publisher::Mode::Groups;
        double duration = paced ? opt_.latencyDuration : groups ? opt_.groupsDuration : opt_.duration;
        int streams = groups ? opt_.groupPublishers : paced ? 1 : opt_.publishers;
        int window = groups ? opt_.groupWindow : paced ? opt_.latencyWindow : opt_.window;
        Publisher::Targets targets = prepareTargets();
        log(std::string(scenario) + ": " + (paced ? "one broadcast every " + std::to_string(opt_.latencyIntervalMs) + " ms"
                                                  : std::to_string(streams) + " publishers, window " + std::to_string(window)) +
            ", " + std::to_string(opt_.warmup) + " s warm-up, " + std::to_string(duration) + " s measured");
        for (auto &w : workers_) {
            Histogram discard;
            w->call([&, wp = w.get()] { wp->takeLatency(&discard, true); });
        }
        publisher_->run(mode, window, streams, std::int64_t(opt_.latencyIntervalMs) * 1'000'000, targets);
        bool interrupted = !sleepFor(paced ? 0.5 : opt_.warmup);
        std::uint64_t f0 = sumFrames(), p0 = publisher_->publishedCount();
        CpuSample a = cpu();
        for (auto &w : workers_) {
            Histogram discard;
            w->call([&, wp = w.get()] { wp->takeLatency(&discard, true); });
        }
        std::uint64_t e0 = sumErrors();
        Publisher::Report r0 = publisher_->report();
        publisher_->resetLoaded();
        interrupted |= !sleepFor(duration);
        std::uint64_t f1 = sumFrames(), p1 = publisher_->publishedCount();
        CpuSample b = cpu();
        std::uint64_t e1 = sumErrors();
        Histogram frameLatency;
        for (auto &w : workers_) w->call([&, wp = w.get()] { wp->takeLatency(&frameLatency, false); });
        bool drained = publisher_->idle(opt_.timeoutS);
        Publisher::Report rep = publisher_->report();

        // Verify: every connection got every message of every stream, in order, intact.
        std::uint64_t missing = 0, extra = 0;
        std::string firstGap;
        for (auto &w : workers_)
            w->call([&, wp = w.get()] { wp->verify(kMaxStreams, &missing, &extra, &firstGap); });
        std::uint64_t errors = sumErrors();

        double secs = double(b.ns - a.ns) / 1e9;
        double frames = double(f1 - f0);
        nlohmann::json r = baseResult(scenario);
        r["publishers"] = streams;
        r["seconds"] = secs;
        r["frames"] = f1 - f0;
        r["frames_per_s"] = frames / secs;
        r["publishes_per_s"] = double(p1 - p0) / secs;
        r["bytes_per_s"] = frames * opt_.size / secs;
        addCpu(r, a, b, frames, "frame");
        r["missing"] = missing;
        r["extra"] = extra;
        r["errors"] = errors;
        r["errors_in_window"] = e1 - e0;
        r["published_total"] = rep.published;
        r["timed_out"] = rep.timedOut;
        r["http_errors"] = rep.httpErrors;
        if (paced) r["skipped"] = rep.skipped;
        r["frame_latency_p50_ms"] = double(frameLatency.quantile(0.5)) / 1e6;
        r["frame_latency_p99_ms"] = double(frameLatency.quantile(0.99)) / 1e6;
        std::string summary;
        if (paced) {
            std::vector<std::int64_t> v = rep.lastRecipient;
            // Only the broadcasts published inside the measured window.
            std::size_t skip = std::min<std::size_t>(v.size(), r0.lastRecipient.size());
            v.erase(v.begin(), v.begin() + std::ptrdiff_t(skip));
            std::sort(v.begin(), v.end());
            auto q = [&](double p) {
                if (v.empty()) return 0.0;
                auto rank = std::size_t(std::ceil(p * double(v.size())));
                return double(v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)]) / 1e6;
            };
            r["messages"] = v.size();
            r["last_recipient_p50_ms"] = q(0.5);
            r["last_recipient_p99_ms"] = q(0.99);
            r["last_recipient_min_ms"] = v.empty() ? 0.0 : double(v.front()) / 1e6;
            r["last_recipient_max_ms"] = v.empty() ? 0.0 : double(v.back()) / 1e6;
            char buf[160];
            std::snprintf(buf, sizeof buf, "publish -> last recipient p50 %.2f ms, p99 %.2f ms (%zu broadcasts); frame p50 %.2f ms",
                          q(0.5), q(0.99), v.size(), r.value("frame_latency_p50_ms", 0.0));
            summary = buf;
            // Not a failed check: the server is slower than the pace. What it did deliver is
            // measured; the skipped ones are reported beside it.
            if (rep.skipped > 0)
                summary += "; did not keep up: " + std::to_string(rep.skipped) + " broadcasts skipped (" +
                           std::to_string(window) + " still on their way)";
        } else {
            Histogram loaded = rep.loaded;
            r["last_recipient_p50_ms"] = double(loaded.quantile(0.5)) / 1e6;
            r["last_recipient_p99_ms"] = double(loaded.quantile(0.99)) / 1e6;
            summary = humanCount(frames / secs) + " frames/s (" + humanCount(double(p1 - p0) / secs) + " publishes/s)";
            if (r.contains("server_cpu_ns_per_frame"))
                summary += ", server " + humanNs(r.value("server_cpu_ns_per_frame", 0.0)) + "/frame";
            if (r.contains("client_cpu_ns_per_frame"))
                summary += ", client " + humanNs(r.value("client_cpu_ns_per_frame", 0.0)) + "/frame";
        }
        std::string error;
        if (!rep.firstError.empty()) error = rep.firstError;
        else if (missing || extra) error = std::to_string(missing) + " frames missing, " + std::to_string(extra) + " extra: " + firstGap;
        else if (errors) error = firstWorkerError();
        else if (!drained) error = "publishes still undelivered after " + std::to_string(opt_.timeoutS) + " s";
        else if (!firstGap.empty()) error = firstGap;
        else if (interrupted) error = "interrupted";
        else if (frames == 0) error = "no frames arrived";
        r["ok"] = error.empty();
        if (!error.empty()) r["error"] = error;
        emit(r, summary);
    }

    void inbound() {
        auto sinkUrl = parseUrl(opt_.sinkUrl);
        nlohmann::json r = baseResult("inbound");
        // A busy server may take a while to answer a status request: each read may take up to
        // the timeout, and a failed one is tried again until the timeout has passed in all.
        auto count = [&](std::string *error) -> std::optional<double> {
            std::int64_t deadline = monoNs() + std::int64_t(opt_.timeoutS) * 1'000'000'000;
            do {
                auto body = httpGet(*sinkUrl, opt_.timeoutS * 1000, error);
                if (body) {
                    auto v = numberAfter(*body, opt_.sinkPattern);
                    if (!v && error) *error = "'" + opt_.sinkPattern + "' not found in " + opt_.sinkUrl;
                    return v;
                }
            } while (monoNs() < deadline && !gQuit);
            return std::nullopt;
        };
        std::string error;
        if (!sinkUrl) error = "--sink-url must be http://HOST:PORT/PATH";
        std::optional<double> c0 = sinkUrl ? count(&error) : std::nullopt;
        if (!c0) {
            r["ok"] = false;
            r["error"] = "cannot read the event count: " + error;
            emit(r, "no event count");
            return;
        }
        prepareTargets();
        log("inbound: " + std::string(opt_.sendRate > 0 ? humanCount(opt_.sendRate) + " frames/s" : "as fast as the server takes them") +
            ", " + std::to_string(opt_.warmup) + " s warm-up, " + std::to_string(opt_.inboundDuration) + " s measured");
        std::uint64_t sent0 = sumSent();
        shared_.sendCredit = opt_.inboundWindow;
        for (auto &w : workers_)
            w->call([&, wp = w.get()] { wp->setSending(true, opt_.sendRate / opt_.threads, opt_.sendBatch); });
        // The credit is what may be sent beyond what the sink has counted: a bounded backlog.
        double counted = *c0;
        auto poll = [&]() -> bool {
            std::string e;
            auto v = count(&e);
            if (!v) {
                error = "cannot read the event count: " + e;
                return false;
            }
            counted = *v;
            double inFlight = double(sumSent() - sent0) - (counted - *c0);
            shared_.sendCredit = std::int64_t(opt_.inboundWindow - inFlight);
            return true;
        };
        auto pump = [&](double seconds) -> bool {
            std::int64_t end = monoNs() + std::int64_t(seconds * 1e9);
            while (monoNs() < end && !gQuit) {
                if (!poll()) return false;
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
            return !gQuit;
        };
        // The window runs from one fresh count to another; CPU and sends are read right after each.
        bool ok = pump(opt_.warmup) && poll();
        double k0 = counted;
        std::uint64_t s0 = sumSent();
        CpuSample a = cpu();
        ok = ok && pump(opt_.inboundDuration) && poll();
        double k1 = counted;
        std::uint64_t s1 = sumSent();
        CpuSample b = cpu();
        for (auto &w : workers_) w->call([wp = w.get()] { wp->setSending(false, 0, 1); });
        std::uint64_t totalSent = sumSent() - sent0;
        // Drain: everything sent must reach the sink.
        std::int64_t deadline = monoNs() + std::int64_t(opt_.timeoutS) * 1'000'000'000;
        double final = counted;
        while (ok && monoNs() < deadline) {
            std::string e;
            auto v = count(&e);
            if (v) final = *v;
            if (final - *c0 >= double(totalSent)) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        double secs = double(b.ns - a.ns) / 1e9;
        double events = k1 - k0;
        r["seconds"] = secs;
        r["events_per_s"] = events / secs;
        r["sent_per_s"] = double(s1 - s0) / secs;
        r["sent_total"] = totalSent;
        r["counted_total"] = final - *c0;
        addCpu(r, a, b, events, "event");
        std::uint64_t errors = sumErrors();
        if (ok && final - *c0 < double(totalSent))
            error = std::to_string(std::uint64_t(double(totalSent) - (final - *c0))) + " of " + std::to_string(totalSent) +
                    " messages never reached the sink";
        else if (ok && final - *c0 > double(totalSent))
            error = "the sink counted " + std::to_string(std::uint64_t(final - *c0 - double(totalSent))) + " more than were sent";
        else if (errors)
            error = firstWorkerError();
        else if (events <= 0 && error.empty())
            error = "no events reached the sink";
        r["ok"] = error.empty();
        if (!error.empty()) r["error"] = error;
        std::string summary = humanCount(events / secs) + " events/s at the sink (clients sent " +
                              humanCount(double(s1 - s0) / secs) + "/s)";
        if (r.contains("server_cpu_ns_per_event"))
            summary += ", server " + humanNs(r.value("server_cpu_ns_per_event", 0.0)) + "/event";
        emit(r, summary);
    }

    void printTable() {
        std::fprintf(stderr, "\n%-12s  %-90s  %s\n", "scenario", "result", "check");
        for (const auto &row : table_)
            std::fprintf(stderr, "%-12s  %-90s  %s\n", row[0].c_str(), row[1].c_str(), row[2].c_str());
    }

    Options opt_;
    Shared shared_;
    std::vector<std::unique_ptr<Worker>> workers_;
    std::unique_ptr<Publisher> publisher_;
    std::vector<std::array<std::string, 3>> table_;
    bool allOk_ = true;
};

} // namespace
} // namespace wsgw::bench

int main(int argc, char **argv) {
    using wsgw::bench::Options;
    Options o;
    CLI::App app{"wsgw-bench: WebSocket load generator that checks every frame it receives.\n"
                 "Scenarios run in this order: connect, idle-memory, throughput, latency, groups, inbound.\n"
                 "One JSON line per scenario goes to stdout; progress and a table to stderr.\n"
                 "Exit: 0 all checks passed, 1 a check failed, 2 could not run."};
    app.add_option("--url", o.url, "ws://HOST:PORT/PATH; {group} in the path becomes the connection's group number")
        ->capture_default_str();
    app.add_option("--name", o.name, "server name for the results")->capture_default_str();
    app.add_option("-c,--connections", o.connections, "connections")->capture_default_str();
    app.add_option("-t,--threads", o.threads, "worker threads (each its own epoll loop)")->capture_default_str();
    app.add_option("--groups", o.groups, "connection i is in group i % GROUPS")->capture_default_str();
    app.add_option("--sources", o.sources, "source addresses 127.0.0.1.. to spread connections over")->capture_default_str();
    app.add_option("--subprotocol", o.subprotocol, "Sec-WebSocket-Protocol to ask for (must be echoed)");
    app.add_flag("--deflate", o.deflate, "offer permessage-deflate (client_max_window_bits)");
    app.add_option("--connect-concurrency", o.connectConcurrency, "handshakes in progress at once")->capture_default_str();
    app.add_option("--connect-retries", o.connectRetries, "times a failed connection is tried again")->capture_default_str();
    app.add_option("--publish", o.publish, "publish API: wsgw|raw|nchan|pushpin@HOST:PORT");
    app.add_option("--publishers", o.publishers, "publisher connections (ordered streams), broadcasts")->capture_default_str();
    app.add_option("--group-publishers", o.groupPublishers, "publisher connections for groups (default: --publishers)");
    app.add_option("--window", o.window, "broadcasts published but not yet delivered to everyone, at most")->capture_default_str();
    app.add_option("--group-window", o.groupWindow, "the same for group messages")->capture_default_str();
    app.add_option("--latency-window", o.latencyWindow,
                   "latency: broadcasts in flight before the server counts as not keeping up")
        ->capture_default_str();
    app.add_option("--size", o.size, "payload bytes")->capture_default_str();
    app.add_option("--scenarios", o.scenarios, "connect,idle-memory,throughput,latency,groups,inbound")
        ->delimiter(',')
        ->capture_default_str();
    app.add_option("--warmup", o.warmup, "seconds before measuring")->capture_default_str();
    app.add_option("--duration", o.duration, "seconds measured (throughput; default of the others)")->capture_default_str();
    app.add_option("--latency-duration", o.latencyDuration, "seconds measured (latency)");
    app.add_option("--groups-duration", o.groupsDuration, "seconds measured (groups)");
    app.add_option("--inbound-duration", o.inboundDuration, "seconds measured (inbound)");
    app.add_option("--latency-interval-ms", o.latencyIntervalMs, "one broadcast every this many ms (latency)")
        ->capture_default_str();
    app.add_option("--idle-connections", o.idleConnections, "connections for idle-memory")->capture_default_str();
    app.add_option("--send-rate", o.sendRate, "inbound frames/s in all; 0 = as fast as the server takes them")
        ->capture_default_str();
    app.add_option("--send-batch", o.sendBatch, "inbound frames per write")->capture_default_str();
    app.add_option("--inbound-window", o.inboundWindow, "inbound frames sent but not yet counted at the sink, at most")
        ->capture_default_str();
    app.add_option("--sink-url", o.sinkUrl, "http URL whose body holds the sink's event count (inbound)");
    app.add_option("--sink-pattern", o.sinkPattern, "text right before that count in the body");
    app.add_option("--server-pid", o.serverPids, "server process (repeat for several): CPU and memory");
    app.add_option("--settle", o.settle, "seconds to wait before reading memory")->capture_default_str();
    app.add_option("--timeout", o.timeoutS, "seconds before a connect or a delivery counts as failed")->capture_default_str();
    app.add_option("--json", o.jsonFile, "also append the result lines to this file");
    CLI11_PARSE(app, argc, argv);

    std::signal(SIGPIPE, SIG_IGN);
    auto stop = [](int) { wsgw::bench::gQuit = true; };
    std::signal(SIGINT, stop);
    std::signal(SIGTERM, stop);
    return wsgw::bench::Bench(std::move(o)).run();
}
