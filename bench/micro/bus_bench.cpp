// EventBus inbound cost: CPU per event on the producer threads (the hub's shards) and on the
// sink's thread, at a fixed offered rate, with a sink that takes a fixed time per batch (a
// broker's round trip) and does nothing per event. It isolates what the bus itself costs the
// shards from the WebSocket side and the broker, which bench/redis-bench measures together.
//
//   bus_bench [--producers P] [--rate EVENTS_PER_S] [--seconds S] [--batch-us US] [--bytes N]
//
// Built against the bus of this tree; with -DWSGW_BUS_SINGLE_QUEUE it uses only the API the
// single-queue bus of earlier trees had (EventBus(firstId), publish(event)), so the same file
// measures both (A/B in one run: see bench/README.md).
#include <wsgw/sink.h>

#include <pthread.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace wsgw;
using Clock = std::chrono::steady_clock;

namespace {

std::int64_t threadCpuNs() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return std::int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

struct TimedSink final : EventSink {
    std::chrono::microseconds perBatch;
    std::atomic<std::uint64_t> events{0}, batches{0};
    std::atomic<std::int64_t> cpuNs{0};
    std::int64_t firstCpu = -1;
    explicit TimedSink(std::chrono::microseconds d) : perBatch(d) {}
    std::string name() const override { return "bench"; }
    std::size_t publish(const std::vector<EventPtr> &batch) override {
        if (firstCpu < 0) firstCpu = threadCpuNs();
        if (perBatch.count() > 0) std::this_thread::sleep_for(perBatch);
        events.fetch_add(batch.size(), std::memory_order_relaxed);
        batches.fetch_add(1, std::memory_order_relaxed);
        cpuNs.store(threadCpuNs() - firstCpu, std::memory_order_relaxed);
        return batch.size();
    }
};

} // namespace

int main(int argc, char **argv) {
    std::size_t producers = 2, bytes = 100;
    double rate = 100000, seconds = 5;
    long batchUs = 50;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string k = argv[i];
        const char *v = argv[i + 1];
        if (k == "--producers") producers = std::strtoul(v, nullptr, 10);
        else if (k == "--rate") rate = std::strtod(v, nullptr);
        else if (k == "--seconds") seconds = std::strtod(v, nullptr);
        else if (k == "--batch-us") batchUs = std::strtol(v, nullptr, 10);
        else if (k == "--bytes") bytes = std::strtoul(v, nullptr, 10);
        else {
            std::fprintf(stderr, "usage: bus_bench [--producers P] [--rate N] [--seconds S] [--batch-us US] [--bytes N]\n");
            return 2;
        }
    }
    if (producers == 0 || rate <= 0 || seconds <= 0) return 2;

#ifdef WSGW_BUS_SINGLE_QUEUE
    EventBus bus(1);
#else
    EventBus bus(1, producers);
#endif
    auto owned = std::make_unique<TimedSink>(std::chrono::microseconds(batchUs));
    TimedSink *sink = owned.get();
    bus.addSink(std::move(owned));
#ifdef WSGW_BUS_SINGLE_QUEUE
    bus.start();
#else
    if (!bus.start()) return 1;
#endif

    const std::string payload(bytes, 'x');
    const double perProducer = rate / double(producers);
    std::vector<std::int64_t> cpu(producers, 0);
    std::vector<std::uint64_t> sent(producers, 0);
    const auto begin = Clock::now();
    const auto end = begin + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    std::vector<std::thread> threads;
    for (std::size_t p = 0; p < producers; ++p)
        threads.emplace_back([&, p] {
            const std::int64_t c0 = threadCpuNs();
            // Paced in steps of 1 ms, as a shard takes a loop's worth of messages at a time.
            const auto step = std::chrono::milliseconds(1);
            const std::uint64_t perStep = std::max<std::uint64_t>(1, std::uint64_t(perProducer / 1000.0));
            auto next = Clock::now();
            std::uint64_t n = 0;
            while (Clock::now() < end) {
                for (std::uint64_t i = 0; i < perStep; ++i) {
                    Event e;
                    e.action = EventAction::Message;
                    e.connection = ConnectionId::random();
                    e.endpoint = "/in";
                    e.message = payload;
#ifdef WSGW_BUS_SINGLE_QUEUE
                    bus.publish(std::move(e));
#else
                    bus.publish(p, std::move(e));
#endif
                    ++n;
                }
                next += step;
                std::this_thread::sleep_until(next);
            }
            cpu[p] = threadCpuNs() - c0;
            sent[p] = n;
        });
    for (auto &t : threads) t.join();
    const double wall = std::chrono::duration<double>(Clock::now() - begin).count();
    bus.stop(std::chrono::milliseconds(5000));

    std::uint64_t total = 0;
    for (auto n : sent) total += n;
    std::printf("offered %.0f events/s for %.1f s over %zu producers, %zu-byte messages, %ld us per batch\n", rate,
                wall, producers, bytes, batchUs);
    for (std::size_t p = 0; p < producers; ++p)
        std::printf("producer %zu: %llu events, %.3f us CPU per event\n", p, (unsigned long long)sent[p],
                    sent[p] ? cpu[p] / 1000.0 / double(sent[p]) : 0.0);
    const std::uint64_t delivered = sink->events.load();
    std::printf("sink: %llu events in %llu batches (%.1f per batch), %.3f us CPU per event\n",
                (unsigned long long)delivered, (unsigned long long)sink->batches.load(),
                sink->batches ? double(delivered) / double(sink->batches.load()) : 0.0,
                delivered ? sink->cpuNs.load() / 1000.0 / double(delivered) : 0.0);
    return delivered == total ? 0 : 1;
}
