#pragma once

// A worker of wsgw-bench: one thread with its own epoll loop and its share of the connections
// (connection i belongs to worker i mod T). It opens them (worker_connect.cpp), receives, checks
// and accounts for every frame (worker_receive.cpp) and, in the inbound scenario, sends
// (worker_send.cpp). worker.cpp holds the loop and the tasks the driver runs on it.
//
// Hot paths allocate nothing per message: frames are parsed straight out of the per-thread read
// buffer, the payload carries its own sequence number, publish time and checksum, and delivery
// accounting is a per-thread array indexed by publish id plus one atomic add per (message,
// worker), not per frame.

#include "bench_options.h"
#include "common.h"
#include "delivery.h"

#include <zlib.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace wsgw::bench {

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

/// Thread-bound to its own thread, except call() (the driver's thread) and the atomics below
/// (read anywhere). Everything marked "through call()" runs on the worker's thread.
class Worker {
public:
    Worker(Shared &shared, int index, std::size_t capacity, Url url);
    ~Worker();

    void start() { thread_ = std::thread([this] { loop(); }); }
    void join() {
        if (thread_.joinable()) thread_.join();
    }

    /// Runs `fn` on the worker's thread and waits for it. Driver thread only; a worker that does
    /// not answer within 60 s ends the process (exit 2) rather than hanging the run.
    void call(std::function<void()> fn);

    // Through call():
    /// Adds this worker's share of connections [from, to) to those to be opened.
    void addConnections(std::uint32_t from, std::uint32_t to, int threads);
    /// Closes every connection whose index is `index` or more.
    void closeFrom(std::uint32_t index);
    /// Counts this worker's open connections per target, for delivery accounting.
    void prepare();
    void setSending(bool on, double rate, int batch);
    void takeLatency(Histogram *out, bool reset);
    void takeConnectTimes(Histogram *out) { out->merge(connectTimes_); }
    /// Adds up frames missing and extra against the publisher's sequence numbers, and keeps the
    /// first discrepancy in *first.
    void verify(int streams, std::uint64_t *missing, std::uint64_t *extra, std::string *first);

    std::uint32_t allMembers() const { return allMembers_; }
    std::uint32_t groupMembers(std::size_t g) const { return groupMembers_[g]; }
    const std::string &firstError() const { return firstError_; }

    // Read by the driver at any time (single writer: this worker).
    std::atomic<std::uint64_t> framesA{0}, sentA{0};
    std::atomic<std::uint32_t> openedA{0}, failedA{0}, retriesA{0};
    std::atomic<std::uint64_t> errorsA{0};
    std::atomic<std::int64_t> firstOpenNs{0}, lastOpenNs{0};
    WorkerStats stats; // this thread's; read by the driver through call()

private:
    struct Local { // this worker's share of one publish
        std::uint64_t pid = ~0ull;
        std::uint32_t count = 0;
        std::int64_t lastNs = 0;
    };

    // worker.cpp
    void loop();
    void runTask();
    void error(const std::string &what);
    void closeConn(Conn &c, State to);

    // worker_connect.cpp
    void startConnects();
    void beginConnect(Conn &c);
    void retryOrFail(Conn &c);
    void failConn(Conn &c);
    std::string requestPath(const Conn &c) const;
    void sendHandshake(Conn &c);
    void handshakeFailed(Conn &c, const std::string &why);
    void onHandshakeData(Conn &c);
    void sweepTimeouts();

    // worker_receive.cpp
    void onEvent(Conn &c, std::uint32_t ev);
    void onReadable(Conn &c);
    // Parses every complete frame in p[0, n) and keeps the rest in c.rx; `inRx`: p is c.rx's
    // own buffer (its capacity is kept, so a connection allocates only for its largest frame).
    void consume(Conn &c, unsigned char *p, std::size_t n, bool inRx);
    void protocolError(Conn &c, const std::string &what);
    void onFrame(Conn &c, const FrameHeader &h, unsigned char *payload, std::size_t len);
    void inflateMessage(Conn &c, unsigned char *data, std::size_t len);
    void onMessage(Conn &c, const char *data, std::size_t len);

    // worker_send.cpp
    void queueOut(Conn &c, const char *data, std::size_t n);
    void flushOut(Conn &c);
    void sendRound();

    Shared &s_;
    int index_;
    Url url_;
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

} // namespace wsgw::bench
