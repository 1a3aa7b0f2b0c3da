// Scenarios "throughput", "latency" and "groups": the publisher publishes while the workers count,
// order and time every frame; then every connection must have every message of every stream.
// They differ only in how they publish:
//   throughput  broadcasts back to back from --publishers streams, --window in flight
//   latency     one broadcast every --latency-interval-ms (skipped, not queued, while
//               --latency-window are on their way); reports publish -> last recipient per broadcast
//   groups      each message to a random group from --group-publishers streams, --group-window

#include "driver.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace wsgw::bench {

void Bench::fanout(const char *scenario, Publisher::Mode mode) {
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

} // namespace wsgw::bench
