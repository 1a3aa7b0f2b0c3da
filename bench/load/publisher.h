#pragma once

// wsgw-bench's publisher: publishes through a server's HTTP API (wsgwd and raw-fanout's /send,
// nchan's /pub, Pushpin's /publish) over `streams` keep-alive connections, one request in flight
// on each, so that the messages of one stream reach the server in order. At most `window`
// messages are published but not yet delivered to every recipient: back-to-back publishing that
// the slowest delivery paces, rather than queues growing without bound.

#include "bench_options.h"
#include "common.h"
#include "delivery.h"

#include <atomic>
#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace wsgw::bench {

/// Runs on its own thread (startThread); the public calls are thread-safe (the driver's thread
/// makes them while the publisher's thread runs).
class Publisher {
public:
    enum class Mode { Idle, Broadcast, Groups, Paced };

    Publisher(Shared &s, PublishKind kind, HostPort addr);
    ~Publisher();

    /// Opens `count` publisher connections; false (and why in *error) if one cannot connect.
    /// Before startThread() only.
    bool open(int count, std::string *error);

    void startThread() { thread_ = std::thread([this] { loop(); }); }
    void stopThread() {
        quit_ = true;
        if (thread_.joinable()) thread_.join();
    }

    struct Targets {
        std::uint64_t all = 0;            // recipients of a broadcast
        std::vector<std::uint64_t> group; // recipients per group
    };

    /// Starts publishing. `streams` <= the number opened. Resets the report: each scenario is
    /// judged on its own.
    void run(Mode mode, int window, int streams, std::int64_t intervalNs, Targets targets);

    /// Stops publishing and waits for what is in flight to be delivered (or to time out); false
    /// if something is still on its way after `timeoutS`.
    bool idle(int timeoutS);

    struct Report {
        std::uint64_t published = 0, completed = 0, timedOut = 0, httpErrors = 0, countMismatches = 0;
        std::uint64_t skipped = 0; // Paced: broadcasts not published because too many were in flight
        std::vector<std::int64_t> lastRecipient; // per message: publish -> last recipient (Paced)
        Histogram loaded;                        // the same, for every message (Broadcast, Groups)
        std::string firstError;
    };
    Report report();
    void resetLoaded();
    std::uint64_t publishedCount();
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

    int busyStreams() const;
    bool reconnect(Stream &st, std::size_t k, std::string *error);
    void fail(const std::string &what);
    void loop();
    // Retires delivered publishes; gives up on those older than the timeout.
    void retire(std::int64_t now);
    void publishMore(Mode mode);
    void publish(Stream &st, std::size_t k, std::uint32_t target, std::int64_t now);
    void buildRequest(Stream &st, std::uint32_t target);
    void flush(Stream &st, std::size_t k);
    void readResponses(Stream &st, std::size_t k);
    void onResponse(Stream &st, std::size_t k, int status, const std::string &body);

    Shared &s_;
    PublishKind kind_;
    HostPort addr_;
    int ep_ = -1;
    std::vector<Stream> streams_;
    std::thread thread_;
    std::atomic<bool> quit_{false};
    std::atomic<Mode> mode_{Mode::Idle};

    std::mutex mu_; // everything below, between the publisher thread and the driver
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

} // namespace wsgw::bench
