// Scenario "inbound": every connection sends text frames of --size bytes, at --send-rate in all or
// as fast as the sink keeps up (at most --inbound-window sent and not yet counted); reports the
// events/s counted at the sink (--sink-url, the number after --sink-pattern), and checks that,
// once sending stops, the sink's count reaches exactly what was sent.

#include "driver.h"

#include <chrono>
#include <optional>
#include <thread>

namespace wsgw::bench {

void Bench::inbound() {
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

} // namespace wsgw::bench
