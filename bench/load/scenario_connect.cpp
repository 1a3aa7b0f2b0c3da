// Scenario "connect": opens --connections connections, --connect-concurrency handshakes in flight,
// and reports handshakes/s (first connect to last 101), handshake p50/p99, failures and retries.
// openConnections() also serves idle-memory.

#include "driver.h"

#include <algorithm>
#include <chrono>
#include <thread>

namespace wsgw::bench {

bool Bench::openConnections(std::uint32_t from, std::uint32_t to, double *seconds, Histogram *times,
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

bool Bench::connectPhase(std::uint32_t n) {
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

} // namespace wsgw::bench
