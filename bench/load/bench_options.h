#pragma once

// wsgw-bench's settings (filled from the command line in wsgw_bench.cpp), its fixed limits and
// the one flag that stops a run. See bench/README.md for what each option does.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace wsgw::bench {

constexpr int kMaxStreams = 32;                 // publisher connections (each an ordered stream)
constexpr std::size_t kRing = 16384;            // publish slots: more than any window
constexpr std::size_t kReadBuffer = 256 * 1024; // per worker thread

/// Set by SIGINT/SIGTERM and when the run ends: every loop (workers, publisher, driver) stops.
/// Thread-safe.
extern std::atomic<bool> gQuit;

/// Thread-compatible; the driver owns it and the workers and the publisher read it (never
/// changed once the run has started).
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

/// Which HTTP publish API --publish speaks.
enum class PublishKind { Wsgw, Nchan, Pushpin };

} // namespace wsgw::bench
