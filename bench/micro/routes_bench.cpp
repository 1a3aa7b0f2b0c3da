// EventBus routing: events/s and p99 publish-to-sink latency with one global sink taking every
// endpoint's events, against three backends each routed one endpoint (EventBus::setRoutes), on
// the same run. The sinks only record the latency (no I/O): this measures what routing costs the
// bus, not a broker.
//
//   routes_bench [--events N] [--producers P] [--rate EVENTS_PER_S]
//
// Each producer thread publishes as a shard (its own queues), round-robin over /chat, /pay and
// /legacy, paced at --rate in total (0: as fast as it can); each event carries its publish time.
#include <wsgw/sink.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace wsgw;
using Clock = std::chrono::steady_clock;

namespace {

std::int64_t nowNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

struct Recorder final : EventSink {
    std::vector<std::int64_t> latencies; // ns, sink thread only until the bus stops
    std::string name() const override { return "bench"; }
    std::size_t publish(const std::vector<EventPtr> &batch) override {
        const std::int64_t now = nowNs();
        for (const EventPtr &e : batch) latencies.push_back(now - std::strtoll(e->message.c_str(), nullptr, 10));
        return batch.size();
    }
};

struct Result {
    double eventsPerS;
    double p50us, p99us;
};

Result run(bool routed, std::size_t events, std::size_t producers, double rate) {
    EventBus bus(1, producers);
    std::vector<Recorder *> sinks;
    const char *endpoints[] = {"/chat", "/pay", "/legacy"};
    if (routed) {
        EventRoutes routes;
        for (const char *ep : endpoints) {
            auto s = std::make_unique<Recorder>();
            sinks.push_back(s.get());
            bus.addSink(std::move(s), {}, ep + 1);
            routes.endpoints[ep] = {ep + 1};
        }
        if (!bus.setRoutes(routes)) std::abort();
    } else {
        auto s = std::make_unique<Recorder>();
        sinks.push_back(s.get());
        bus.addSink(std::move(s), {}, "global");
    }
    if (!bus.start()) std::abort();
    const std::size_t per = events / producers;
    const auto t0 = Clock::now();
    std::vector<std::thread> threads;
    for (std::size_t p = 0; p < producers; ++p)
        threads.emplace_back([&, p] {
            const double interval = rate > 0 ? 1e9 * static_cast<double>(producers) / rate : 0;
            for (std::size_t i = 0; i < per; ++i) {
                if (interval > 0) {
                    auto due = t0 + std::chrono::nanoseconds(static_cast<std::int64_t>(interval * static_cast<double>(i)));
                    while (Clock::now() < due) std::this_thread::yield();
                }
                Event e;
                e.action = EventAction::Message;
                e.endpoint = endpoints[(i + p) % 3];
                e.message = std::to_string(nowNs());
                bus.publish(p, std::move(e));
            }
        });
    for (auto &t : threads) t.join();
    const std::size_t total = per * producers;
    auto delivered = [&] {
        std::uint64_t n = 0;
        for (const SinkStats &s : bus.stats()) n += s.published;
        return n;
    };
    while (delivered() < total) std::this_thread::sleep_for(std::chrono::microseconds(200));
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    bus.stop(std::chrono::seconds(1));
    std::vector<std::int64_t> all;
    for (Recorder *r : sinks) all.insert(all.end(), r->latencies.begin(), r->latencies.end());
    std::sort(all.begin(), all.end());
    auto pct = [&](double q) { return static_cast<double>(all[static_cast<std::size_t>(q * static_cast<double>(all.size() - 1))]) / 1000.0; };
    return {static_cast<double>(total) / seconds, pct(0.50), pct(0.99)};
}

} // namespace

int main(int argc, char **argv) {
    std::size_t events = 1'000'000, producers = 2;
    double rate = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!std::strcmp(argv[i], "--events")) events = std::strtoull(argv[i + 1], nullptr, 10);
        else if (!std::strcmp(argv[i], "--producers")) producers = std::strtoull(argv[i + 1], nullptr, 10);
        else if (!std::strcmp(argv[i], "--rate")) rate = std::strtod(argv[i + 1], nullptr);
    }
    std::printf("%zu events, %zu producers, %s\n", events, producers,
                rate > 0 ? (std::to_string(static_cast<long>(rate)) + " events/s offered").c_str() : "unpaced");
    std::printf("| | events/s | p50 latency | p99 latency |\n|---|---|---|---|\n");
    for (int round = 0; round < 2; ++round)
        for (bool routed : {false, true}) {
            Result r = run(routed, events, producers, rate);
            std::printf("| %s (round %d) | %.0f k | %.1f us | %.1f us |\n",
                        routed ? "three routed backends" : "one global sink", round + 1, r.eventsPerS / 1000, r.p50us,
                        r.p99us);
            std::fflush(stdout);
        }
}
