// The driver: checks the options, starts the workers and the publisher, runs the scenarios in
// their fixed order (connect, idle-memory, throughput, latency, groups, inbound), and the helpers
// the scenarios share (CPU and memory of the servers, counters summed over the workers).

#include "driver.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <thread>

namespace wsgw::bench {

std::atomic<bool> gQuit{false};

int Bench::run() {
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
    // --publish is checked before any thread starts, so that a usage error leaves nothing running.
    PublishKind publishKind = PublishKind::Wsgw;
    std::optional<HostPort> publishAddr;
    if (publishing) {
        auto at = opt_.publish.find('@');
        std::string kind = opt_.publish.substr(0, at);
        if (kind == "wsgw" || kind == "raw")
            publishKind = PublishKind::Wsgw;
        else if (kind == "nchan")
            publishKind = PublishKind::Nchan;
        else if (kind == "pushpin")
            publishKind = PublishKind::Pushpin;
        else
            return usage("--publish wants wsgw|raw|nchan|pushpin@HOST:PORT, got " + opt_.publish);
        if (at != std::string::npos) publishAddr = parseHostPort(opt_.publish.substr(at + 1));
        if (!publishAddr) return usage("--publish wants KIND@HOST:PORT, got " + opt_.publish);
    }

    std::int64_t rssBefore = serverRss();
    int total = opt_.connections;
    if (opt_.wants("idle-memory")) total = std::max(total, opt_.idleConnections);
    for (int t = 0; t < opt_.threads; ++t)
        workers_.push_back(std::make_unique<Worker>(shared_, t, std::size_t(total / opt_.threads + 1), *url));
    for (auto &w : workers_) w->start();

    if (publishing) {
        publisher_ = std::make_unique<Publisher>(shared_, publishKind, *publishAddr);
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

int Bench::usage(const std::string &what) {
    std::fprintf(stderr, "wsgw-bench: %s\n", what.c_str());
    return 2;
}

int Bench::setupFailed(const std::string &what) {
    std::fprintf(stderr, "wsgw-bench: %s\n", what.c_str());
    finish();
    return 2;
}

void Bench::finish() {
    if (publisher_) publisher_->stopThread();
    gQuit = true;
    for (auto &w : workers_) w->join();
    workers_.clear();
}

CpuSample Bench::cpu() {
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

std::int64_t Bench::serverRss() {
    std::int64_t sum = 0;
    for (int pid : opt_.serverPids) sum += processRssBytes(pid).value_or(0);
    return sum;
}

std::uint64_t Bench::sumFrames() {
    std::uint64_t n = 0;
    for (auto &w : workers_) n += w->framesA.load(std::memory_order_relaxed);
    return n;
}

std::uint64_t Bench::sumSent() {
    std::uint64_t n = 0;
    for (auto &w : workers_) n += w->sentA.load(std::memory_order_relaxed);
    return n;
}

std::uint64_t Bench::sumErrors() {
    std::uint64_t n = 0;
    for (auto &w : workers_) n += w->errorsA.load(std::memory_order_relaxed);
    return n;
}

std::string Bench::firstWorkerError() {
    std::string e;
    for (auto &w : workers_) w->call([&] {
        if (e.empty()) e = w->firstError();
    });
    return e;
}

bool Bench::sleepFor(double seconds) {
    std::int64_t end = monoNs() + std::int64_t(seconds * 1e9);
    while (monoNs() < end) {
        if (gQuit) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
}

Publisher::Targets Bench::prepareTargets() {
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

} // namespace wsgw::bench
