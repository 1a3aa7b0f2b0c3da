// Scenario "idle-memory": opens more connections, up to --idle-connections, waits --settle
// seconds, reads the servers' RSS and reports (RSS after - RSS before the first connection) per
// connection; then closes the extra ones.

#include "driver.h"

#include <algorithm>

namespace wsgw::bench {

void Bench::idleMemory(std::int64_t rssBefore) {
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

} // namespace wsgw::bench
