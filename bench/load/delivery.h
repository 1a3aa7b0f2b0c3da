#pragma once

// Delivery accounting between the publisher and the workers: which publishes are on their way,
// how many workers have recipients of each target, and the publisher's sequence numbers that the
// workers check their connections against at the end of a scenario.

#include "bench_options.h"
#include "common.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace wsgw::bench {

/// Delivery accounting of one publish, indexed by pid % kRing. The publisher owns the slot from
/// publish to retirement; each worker adds one to threadsDone when all of its own recipients of
/// that pid have it. The atomics are thread-safe; the rest is the publisher's.
struct Slot {
    std::atomic<std::uint64_t> pid{~0ull};
    std::atomic<std::uint32_t> threadsDone{0};
    std::atomic<std::int64_t> lastRecvNs{0};
    // publisher-only
    std::int64_t publishNs = 0;
    std::uint32_t target = 0;
    bool active = false;
};

/// What the workers, the publisher and the driver share. The atomics are thread-safe; the
/// vectors are written by the publisher and read by workers only once the publisher is idle.
struct Shared {
    explicit Shared(const Options &o)
        : opt(o), slots(new Slot[kRing]), threadsForGroup(new std::atomic<std::uint16_t>[std::size_t(o.groups)]) {
        for (int g = 0; g < o.groups; ++g) threadsForGroup[std::size_t(g)] = 0;
    }
    const Options &opt;
    std::unique_ptr<Slot[]> slots;
    // How many workers have recipients of a broadcast / of each group (set by the driver between
    // phases): a publish is delivered when that many workers have reported it.
    std::atomic<std::uint16_t> threadsForAll{0};
    std::unique_ptr<std::atomic<std::uint16_t>[]> threadsForGroup;
    int publisherWake = -1; // eventfd: a publish may have completed
    std::atomic<std::int64_t> sendCredit{0};
    // The publisher's per-stream sequence numbers, read by workers when verifying (after the
    // publisher is idle).
    std::vector<std::uint32_t> publishedAll;   // [stream]
    std::vector<std::uint32_t> publishedGroup; // [stream * groups + group]

    std::uint16_t threadsFor(std::uint32_t target) const {
        if (target == kAllGroup) return threadsForAll.load(std::memory_order_relaxed);
        if (target >= std::uint32_t(opt.groups)) return 0;
        return threadsForGroup[target].load(std::memory_order_relaxed);
    }
};

inline void atomicMax(std::atomic<std::int64_t> &a, std::int64_t v) {
    std::int64_t cur = a.load(std::memory_order_relaxed);
    while (cur < v && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
    }
}

} // namespace wsgw::bench
