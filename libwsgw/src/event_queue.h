#pragma once

// One producer's backlog of events for one sink: the per-shard queues of the EventBus.

#include <wsgw/event.h>

#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>

namespace wsgw {

/// A FIFO of events from one producer (a shard) to one sink. The producer pushes under `mu`; the
/// sink's thread copies a batch from the front under `mu`, delivers it without the lock, and
/// pops what the destination acknowledged (by position: `seq`), so the producer's DropOldest
/// may drop any event, one in delivery included, and an unacknowledged one is simply taken
/// again. The two share nothing else.
///
/// Sizes are mirrored in atomics so that the sink's bound over all its queues, its wake-up test
/// and the stats read them without the lock.
///
/// Thread-safe: `entries`, `pushed` and `bytes` under `mu`.
/// A mutex that spins briefly before it sleeps (glibc's adaptive mutex): the queue's lock is held
/// for a push, a pop or the copy of one batch of pointers, so a producer that finds it taken
/// nearly always gets it within the spin, without a futex wait (bench/lock-check).
class AdaptiveMutex {
public:
    AdaptiveMutex() noexcept {
        pthread_mutexattr_t attr;
        pthread_mutexattr_init(&attr);
        pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
        pthread_mutex_init(&m_, &attr);
        pthread_mutexattr_destroy(&attr);
    }
    ~AdaptiveMutex() { pthread_mutex_destroy(&m_); }
    AdaptiveMutex(const AdaptiveMutex &) = delete;
    AdaptiveMutex &operator=(const AdaptiveMutex &) = delete;
    void lock() noexcept { pthread_mutex_lock(&m_); }
    void unlock() noexcept { pthread_mutex_unlock(&m_); }

private:
    pthread_mutex_t m_;
};

/// Where a sink's thread sleeps while its queues are empty. A producer wakes it with one futex
/// wake and no lock, so producers never wait for the sink here; a wake that comes between the
/// sink's last look at its queues and its sleep is not lost (the futex word has changed).
///
/// Thread-safe: one sleeper (the sink thread), any number of wakers.
class Parker {
public:
    /// Sink thread: the token to sleep on; take it before the last look at the queues.
    std::uint32_t prepare() noexcept {
        sleeping_.store(true, std::memory_order_seq_cst);
        return word_.load(std::memory_order_seq_cst);
    }
    /// Sink thread: sleeps until woken (after prepare()) or `limit` passes.
    void sleep(std::uint32_t token, std::chrono::nanoseconds limit) noexcept {
        timespec ts{static_cast<time_t>(limit.count() / 1'000'000'000), static_cast<long>(limit.count() % 1'000'000'000)};
        syscall(SYS_futex, reinterpret_cast<std::uint32_t *>(&word_), FUTEX_WAIT_PRIVATE, token, &ts, nullptr, 0);
        sleeping_.store(false, std::memory_order_relaxed);
    }
    void cancel() noexcept { sleeping_.store(false, std::memory_order_relaxed); }
    /// Producer, after its push: wakes the sink if it is asleep (or about to be).
    void wake() noexcept {
        // Dekker: the producer's seq_cst store of the queue size (EventQueue::mirror) then this
        // seq_cst load, against prepare()'s seq_cst store of the flag then the sink's seq_cst
        // loads of the sizes: one of the two sees the other. The first waker takes the flag, so
        // one futex wake per sleep, not one per event.
        if (!sleeping_.load(std::memory_order_seq_cst)) return;
        if (!sleeping_.exchange(false, std::memory_order_seq_cst)) return;
        word_.fetch_add(1, std::memory_order_seq_cst);
        syscall(SYS_futex, reinterpret_cast<std::uint32_t *>(&word_), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
    }
    /// Any thread: wakes the sink whether or not it sleeps (stop).
    void wakeAlways() noexcept {
        word_.fetch_add(1, std::memory_order_seq_cst);
        syscall(SYS_futex, reinterpret_cast<std::uint32_t *>(&word_), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
    }

private:
    std::atomic<std::uint32_t> word_{0};
    std::atomic<bool> sleeping_{false};
};
static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));

struct EventQueue {
    struct Entry {
        EventPtr event;
        std::size_t bytes;
        std::uint64_t seq; ///< how many events this queue took before it: a stable position
    };

    AdaptiveMutex mu;
    std::deque<Entry> entries;
    std::uint64_t pushed = 0;
    std::size_t bytes = 0;

    std::atomic<std::size_t> size{0};
    std::atomic<std::size_t> sizeBytes{0};
    std::atomic<std::uint64_t> dropped{0};

    /// With `mu` held.
    void push(EventPtr e, std::size_t n) {
        entries.push_back(Entry{std::move(e), n, pushed++});
        bytes += n;
        mirror();
    }
    /// With `mu` held. Precondition: !entries.empty().
    void popFront() {
        bytes -= entries.front().bytes;
        entries.pop_front();
        mirror();
    }

private:
    void mirror() {
        sizeBytes.store(bytes, std::memory_order_relaxed);
        size.store(entries.size(), std::memory_order_seq_cst); // see Parker::wake
    }
};

} // namespace wsgw
