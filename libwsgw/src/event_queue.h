#pragma once

// One producer's backlog of events for one sink: the per-shard queues of the EventBus.

#include <wsgw/event.h>
#include <wsgw/sink.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>

namespace wsgw {

/// A FIFO of events from one producer (a shard) to one sink. Its producer pushes, the sink's
/// thread takes batches and pops what was acknowledged; the two share only this queue's mutex,
/// held for a push, a pop or the copy of a batch. Sizes are also kept in atomics, so that the
/// sink's bound (over all its queues), wake-up test and stats read them without the lock.
///
/// Thread-safe.
struct EventQueue {
    struct Entry {
        EventPtr event;
        std::size_t bytes;
        std::uint64_t seq; ///< this queue's count of events pushed before it: a stable position
    };

    std::mutex mu;
    std::deque<Entry> entries; // guarded by mu
    std::uint64_t pushed = 0;  // guarded by mu
    std::size_t bytes = 0;     // guarded by mu

    std::atomic<std::size_t> size{0}; // entries.size(), for lock-free reads
    std::atomic<std::size_t> sizeBytes{0};
    std::atomic<std::uint64_t> dropped{0};

    void push(EventPtr e, std::size_t n) {
        entries.push_back(Entry{std::move(e), n, pushed++});
        bytes += n;
        publishSizes();
    }
    void popFront() {
        bytes -= entries.front().bytes;
        entries.pop_front();
        publishSizes();
    }
    void publishSizes() {
        size.store(entries.size(), std::memory_order_release);
        sizeBytes.store(bytes, std::memory_order_relaxed);
    }
};

} // namespace wsgw
