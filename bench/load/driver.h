#pragma once

// wsgw-bench's driver: checks the options, starts the workers and the publisher, runs the chosen
// scenarios in their fixed order and reports each. One file per scenario:
//
//   scenario_connect.cpp      connect      (and opening connections, which idle-memory uses too)
//   scenario_idle_memory.cpp  idle-memory
//   scenario_fanout.cpp       throughput, latency, groups (one path: how they publish differs)
//   scenario_inbound.cpp      inbound
//
// driver.cpp holds run() and what the scenarios share; report.cpp the JSON lines and the table.

#include "bench_options.h"
#include "common.h"
#include "delivery.h"
#include "publisher.h"
#include "worker.h"

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace wsgw::bench {

/// CPU time of this process and of the servers (--server-pid) at one moment.
struct CpuSample {
    std::int64_t ns = 0;
    std::int64_t server = 0;
    std::int64_t client = 0;
    bool serverKnown = true;
};

/// Thread-bound: the main thread makes it, calls run() once, and it drives the other threads.
class Bench {
public:
    explicit Bench(Options o) : opt_(std::move(o)), shared_(opt_) {}

    /// Runs every chosen scenario. Returns the exit code: 0 every check passed, 1 a check failed,
    /// 2 the run could not start (bad options, the server unreachable, connections failed).
    int run();

private:
    // driver.cpp
    int usage(const std::string &what);
    int setupFailed(const std::string &what);
    void finish();
    CpuSample cpu();
    std::int64_t serverRss();
    std::uint64_t sumFrames();
    std::uint64_t sumSent();
    std::uint64_t sumErrors();
    std::string firstWorkerError();
    // Sleeps in small steps; false if interrupted.
    bool sleepFor(double seconds);
    // Counts the open connections per target on every worker: who must receive a publish.
    Publisher::Targets prepareTargets();

    // report.cpp
    void log(const std::string &line);
    nlohmann::json baseResult(const char *scenario);
    // Prints the scenario's JSON line (and appends it to --json), and keeps a row for the table.
    void emit(nlohmann::json r, const std::string &summary);
    // Client and server CPU utilisation between a and b, and CPU per unit (frame, event, ...).
    void addCpu(nlohmann::json &r, const CpuSample &a, const CpuSample &b, double units, const char *per);
    void printTable();

    // scenario_connect.cpp
    // Opens connections [from, to) on every worker and waits for them.
    bool openConnections(std::uint32_t from, std::uint32_t to, double *seconds, Histogram *times,
                         std::uint32_t *failed, std::uint32_t *retries);
    bool connectPhase(std::uint32_t n);

    // scenario_idle_memory.cpp
    void idleMemory(std::int64_t rssBefore);

    // scenario_fanout.cpp
    void fanout(const char *scenario, Publisher::Mode mode);

    // scenario_inbound.cpp
    void inbound();

    Options opt_;
    Shared shared_;
    std::vector<std::unique_ptr<Worker>> workers_;
    std::unique_ptr<Publisher> publisher_;
    std::vector<std::array<std::string, 3>> table_;
    bool allOk_ = true;
};

} // namespace wsgw::bench
