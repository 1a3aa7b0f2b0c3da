// The EventBus: per-producer bounded queues into each sink, one thread per sink.
//
// Each shard publishes into queues of its own, one per sink (EventQueue), so shards never share
// a lock or a counter on the inbound path except the event id; a sink's thread takes batches
// from all its queues (merged in id order), delivers them and pops what was acknowledged.
// Threads other than the shards publish through one more queue per sink, shared under a mutex.
//
// Routing: which sinks an event goes to is read from an immutable RouteTable (endpoint -> sinks)
// that producers load with one atomic read; setRoutes, addSink and removeSink build a new table
// and swap it in. Replaced tables and removed sinks stay allocated until the bus is destroyed,
// so a producer still holding an old table never touches freed memory.

#include "event_queue.h"

#include <wsgw/sink.h>

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <thread>

namespace wsgw {

namespace {

constexpr unsigned bit(EventAction a) { return 1u << static_cast<unsigned>(a); }

// How long an idle sink waits for more before it sleeps and asks producers to wake it, when
// its last batch had at least kLingerAfter events: a stream that fills batches comes back
// within the linger and is taken without a producer's wake-up. After a batch of one (events
// one at a time, where latency counts: a request and its answer) it sleeps at once, so the
// next event wakes it rather than waiting out the linger.
constexpr std::chrono::microseconds kLinger{500};
constexpr std::size_t kLingerAfter = 2;

// How often a sink waiting for its batch to fill (SinkOptions::batchWait) looks at its queues.
constexpr std::chrono::milliseconds kBatchPoll{1};

// A back-off wait between half of `backoff` and all of it.
std::chrono::milliseconds jittered(std::chrono::milliseconds backoff) {
    thread_local std::minstd_rand rng{std::random_device{}()};
    const auto half = backoff.count() / 2;
    if (half <= 0) return backoff;
    return std::chrono::milliseconds(half + std::uniform_int_distribution<long long>(0, half)(rng));
}

// One sink: its queues (one per producer), its thread and its counters.
struct SinkSlot {
    std::unique_ptr<EventSink> sink;
    std::string name;
    std::string backend;  // unique among the sinks not removed
    bool removed = false; // guarded by lifecycleMu
    SinkOptions options;
    unsigned acceptMask = 0; // bit per EventAction
    std::vector<std::unique_ptr<EventQueue>> queues;

    std::atomic<bool> pausing{false}; // PauseReading: over the bound, not yet back to half
    std::atomic<bool> exited{false};  // its thread has returned from run()
    // removeSink: stop once the backlog is delivered or `retireBy` has passed (written before).
    std::atomic<bool> retiring{false};
    std::chrono::steady_clock::time_point retireBy;
    std::atomic<std::uint64_t> published{0};
    std::atomic<std::uint64_t> failures{0};
    std::atomic<bool> connected{false};
    mutable std::mutex stateMu;
    std::string lastError; // guarded by stateMu

    // The sink thread sleeps in `parker` while its queues are empty; producers wake it there.
    // Back-offs wait on `wake` (stop() notifies it).
    Parker parker;
    std::mutex wakeMu;
    std::condition_variable wake;
    std::thread thread;

    bool anyQueued() const {
        for (const auto &q : queues)
            if (q->size.load(std::memory_order_seq_cst) > 0) return true; // see Parker::wake
        return false;
    }
    // The bounds hold for all queues together; each is read without its lock, so concurrent
    // producers may overshoot by an event each.
    std::size_t events() const {
        std::size_t n = 0;
        for (const auto &q : queues) n += q->size.load(std::memory_order_relaxed);
        return n;
    }
    std::size_t bytes() const {
        std::size_t n = 0;
        for (const auto &q : queues) n += q->sizeBytes.load(std::memory_order_relaxed);
        return n;
    }
    bool full(std::size_t extra) const {
        return events() >= options.maxBacklogEvents || bytes() + extra > options.maxBacklogBytes;
    }
    bool drainedToHalf() const {
        return events() <= options.maxBacklogEvents / 2 && bytes() <= options.maxBacklogBytes / 2;
    }
    void wakeUp() {
        {
            std::lock_guard lock(wakeMu);
            wake.notify_all();
        }
        parker.wakeAlways();
    }
};

// Which sinks get an endpoint's events. Immutable once published.
struct RouteTable {
    std::map<std::string, std::vector<SinkSlot *>, std::less<>> byEndpoint;
    std::vector<SinkSlot *> defaults; // every other endpoint's

    const std::vector<SinkSlot *> &sinksFor(std::string_view endpoint) const {
        if (byEndpoint.empty()) return defaults;
        auto it = byEndpoint.find(endpoint);
        return it == byEndpoint.end() ? defaults : it->second;
    }
};

} // namespace

struct EventBus::Impl {
    Impl(std::uint64_t firstId, std::size_t producerCount)
        : producers(producerCount), lastId(firstId - 1), publishing(new Publishing[producerCount + 1]) {}

    // The last id whose event is queued, and every one before it: a sink takes no event with a
    // greater id, so that it delivers in id order without gaps a later batch would fill. A
    // producer caught between taking an id and queueing it holds that id back (and every later
    // one) without making the sink wait: its slot holds a lower bound of the id it takes.
    // (Waiting for it, as before, cost the sink a yield loop whenever a producer was preempted
    // there, which on a busy machine was often: bench/redis-bench.)
    std::uint64_t settledId() const {
        std::uint64_t settled = lastId.load(std::memory_order_seq_cst);
        for (std::size_t p = 0; p <= producers; ++p) {
            const std::uint64_t floor = publishing[p].floor.load(std::memory_order_seq_cst);
            if (floor != 0 && floor - 1 < settled) settled = floor - 1;
        }
        return settled;
    }

    const std::size_t producers; // shard queues; index `producers` is the shared queue
    // Every sink ever added, removed ones too (see the file comment). Guarded by lifecycleMu;
    // sink threads hold a SinkSlot& of their own.
    std::vector<std::unique_ptr<SinkSlot>> sinks;
    // The routes as given (setRoutes), by backend name; `routed` false: every sink gets every
    // endpoint's events. Guarded by lifecycleMu.
    EventRoutes spec;
    bool routed = false;
    std::atomic<const RouteTable *> routes{nullptr};
    std::vector<std::unique_ptr<const RouteTable>> tables; // current and replaced; lifecycleMu
    std::atomic<const std::vector<std::string> *> tagsUsedNow{nullptr};
    std::vector<std::unique_ptr<const std::vector<std::string>>> tagLists; // lifecycleMu
    std::atomic<std::uint64_t> lastId;            // the last id handed out (open/close/message)
    // One per producer queue slot (and the shared one): while that producer is between taking
    // an id and having queued its event for every sink, a lower bound of that id; else 0.
    // Proof that settledId() never passes an unqueued id: the producer stores the bound before
    // its fetch_add on lastId, so a sink whose load of lastId sees the id (seq_cst) sees the
    // bound, or 0 after the event is queued, or a later publish's bound, which is smaller than
    // nothing it must hold back.
    struct alignas(64) Publishing {
        std::atomic<std::uint64_t> floor{0};
    };
    std::unique_ptr<Publishing[]> publishing;
    std::mutex sharedMu;                          // publishes through the shared queue
    std::mutex lifecycleMu;                       // addSink, removeSink, setRoutes, start, stop, stats
    std::mutex stopMu;                            // stop() joins the threads under it
    bool started = false;                         // guarded by lifecycleMu
    std::atomic<bool> stopping{false};
    std::chrono::steady_clock::time_point deadline; // written before `stopping`
    std::atomic<unsigned> wanted{0};
    std::vector<std::string> tagsUsed; // by some sink; lifecycleMu (readers: tagsUsedNow)
    std::atomic<int> pausingSinks{0};
    std::atomic<std::uint64_t> lost{0};
    std::mutex exitMu; // with exitCv: sink threads say when they return
    std::condition_variable exitCv;
    StateListener stateListener;                   // set before start
    std::function<void(bool)> backpressureListener; // set before start

    void run(SinkSlot &slot);
    std::uint64_t enqueue(std::size_t queue, Event &&event);
    bool startThread(SinkSlot *s, std::string *error) noexcept;
    void retire(SinkSlot *slot, std::chrono::milliseconds flushFor);
    std::size_t join(SinkSlot *slot);

    // With lifecycleMu: a slot for `sink`, its actions and tags counted in.
    std::unique_ptr<SinkSlot> makeSlot(std::unique_ptr<EventSink> sink, const SinkOptions &options, std::string backend) {
        auto slot = std::make_unique<SinkSlot>();
        slot->name = sink->name();
        slot->backend = std::move(backend);
        for (EventAction a : {EventAction::Open, EventAction::Close, EventAction::Message})
            if (sink->accepts(a)) slot->acceptMask |= bit(a);
        wanted.fetch_or(slot->acceptMask);
        for (std::string &tag : sink->tagsUsed())
            if (std::find(tagsUsed.begin(), tagsUsed.end(), tag) == tagsUsed.end()) tagsUsed.push_back(std::move(tag));
        slot->sink = std::move(sink);
        slot->options = options;
        for (std::size_t i = 0; i <= producers; ++i) slot->queues.push_back(std::make_unique<EventQueue>());
        return slot;
    }

    // With lifecycleMu: the live sink named `backend`, or nullptr.
    SinkSlot *findLive(std::string_view backend) const {
        for (const auto &s : sinks)
            if (!s->removed && s->backend == backend) return s.get();
        return nullptr;
    }

    // With lifecycleMu: builds the table for `spec` (or every live sink) and swaps it in. False
    // with a message when `spec` names no live sink.
    bool publishRoutes(const EventRoutes &next, bool nextRouted, std::string *error) {
        auto table = std::make_unique<RouteTable>();
        auto resolve = [&](const std::vector<std::string> &names, std::vector<SinkSlot *> &out) {
            for (const std::string &n : names) {
                SinkSlot *s = findLive(n);
                if (!s) {
                    if (error) *error = "unknown backend '" + n + "'";
                    return false;
                }
                if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
            }
            return true;
        };
        if (nextRouted) {
            if (!resolve(next.defaults, table->defaults)) return false;
            for (const auto &[endpoint, names] : next.endpoints)
                if (!resolve(names, table->byEndpoint[endpoint])) return false;
        } else {
            for (const auto &s : sinks)
                if (!s->removed) table->defaults.push_back(s.get());
        }
        spec = next;
        routed = nextRouted;
        routes.store(table.get(), std::memory_order_release);
        tables.push_back(std::move(table));
        return true;
    }

    // With lifecycleMu: publishes the current tagsUsed for readers.
    void publishTags() {
        auto list = std::make_unique<const std::vector<std::string>>(tagsUsed);
        tagsUsedNow.store(list.get(), std::memory_order_release);
        tagLists.push_back(std::move(list));
    }

    // `slot` enters or leaves its PauseReading state (once each way): tells the listener when
    // that changes whether the bus as a whole asks to pause.
    // Each sink's change is told: paused(endpoint) depends on which one it is.
    void sinkPausing(SinkSlot &slot, bool on) {
        if (slot.pausing.exchange(on) == on) return; // another thread got there first
        pausingSinks.fetch_add(on ? 1 : -1, std::memory_order_acq_rel);
        if (backpressureListener) backpressureListener(on);
    }

    // The bus is stopping, or this sink is being removed.
    bool stopRequested(const SinkSlot &slot) const {
        return stopping.load(std::memory_order_acquire) || slot.retiring.load(std::memory_order_acquire);
    }
    std::chrono::steady_clock::time_point deadlineFor(const SinkSlot &slot) const {
        if (slot.retiring.load(std::memory_order_acquire))
            return stopping.load(std::memory_order_acquire) ? std::min(slot.retireBy, deadline) : slot.retireBy;
        return deadline;
    }

    void setState(SinkSlot &slot, bool connected, const std::string &error) {
        bool changed;
        {
            std::lock_guard lock(slot.stateMu);
            changed = slot.connected.load() != connected || (!connected && slot.lastError != error);
            slot.connected.store(connected);
            slot.lastError = connected ? std::string() : error;
        }
        if (changed && stateListener) stateListener(slot.backend, connected, error);
    }

    // Waits out the back-off, or until stop's deadline when stopping (also when the stop comes
    // during the wait).
    // The wait is drawn from [backoff/2, backoff] (jitter), so that many nodes that lost the same
    // destination do not all retry in step when it comes back.
    void backOff(SinkSlot &slot, std::chrono::milliseconds &backoff) {
        const auto until = std::chrono::steady_clock::now() + jittered(backoff);
        std::unique_lock lock(slot.wakeMu);
        for (;;) {
            const bool stop = stopRequested(slot);
            const auto limit = stop ? std::min(until, deadlineFor(slot)) : until;
            if (std::chrono::steady_clock::now() >= limit) break;
            slot.wake.wait_until(lock, limit, [&] { return !stop && stopRequested(slot); });
        }
        backoff = std::min(backoff * 2, slot.options.maxBackoff);
    }

    bool finished(const SinkSlot &slot) const {
        return stopRequested(slot) && (!slot.anyQueued() || std::chrono::steady_clock::now() >= deadlineFor(slot));
    }
};

std::uint64_t EventBus::Impl::enqueue(std::size_t queue, Event &&event) {
    auto shared = std::make_shared<Event>(std::move(event));
    const std::size_t bytes = shared->footprint();
    const unsigned action = bit(shared->action);
    // From before the id is taken until the event is in every queue (settledId()).
    struct Publish {
        std::atomic<std::uint64_t> &floor;
        Publish(std::atomic<std::uint64_t> &f, std::uint64_t bound) : floor(f) { floor.store(bound, std::memory_order_seq_cst); }
        ~Publish() { floor.store(0, std::memory_order_release); }
    } publish(publishing[queue].floor, lastId.load(std::memory_order_seq_cst) + 1);
    shared->id = lastId.fetch_add(1, std::memory_order_seq_cst) + 1;
    const std::uint64_t id = shared->id;
    EventPtr ptr = std::move(shared);
    const RouteTable *table = routes.load(std::memory_order_acquire);
    if (!table) return id;
    for (SinkSlot *s : table->sinksFor(ptr->endpoint)) {
        SinkSlot &slot = *s;
        if (!(slot.acceptMask & action)) continue;
        EventQueue &q = *slot.queues[queue];
        bool pauseNow = false, queued = true;
        {
            std::lock_guard lock(q.mu);
            if (slot.full(bytes)) {
                switch (slot.options.overflow) {
                case OverflowPolicy::PauseReading:
                    // Keep it: the transport stops reading and refuses new connections instead,
                    // so what still comes is bounded by what is already under way.
                    pauseNow = !slot.pausing.load();
                    break;
                case OverflowPolicy::DropNewest:
                    q.dropped.fetch_add(1, std::memory_order_relaxed);
                    queued = false;
                    break;
                case OverflowPolicy::DropOldest:
                    // This producer's oldest (another's queue is not ours to touch). With none
                    // of its own left, the new event goes instead.
                    while (!q.entries.empty() && slot.full(bytes)) {
                        q.popFront();
                        q.dropped.fetch_add(1, std::memory_order_relaxed);
                    }
                    if (slot.full(bytes)) {
                        q.dropped.fetch_add(1, std::memory_order_relaxed);
                        queued = false;
                    }
                    break;
                }
            }
            if (queued) q.push(ptr, bytes);
        }
        if (pauseNow) sinkPausing(slot, true);
        if (queued) slot.parker.wake();
    }
    return id;
}

void EventBus::Impl::run(SinkSlot &slot) {
    struct Taken {
        EventPtr event;
        std::size_t queue;
        std::uint64_t seq;
    };
    std::vector<Taken> taken;
    std::vector<EventPtr> batch;
    const std::size_t nq = slot.queues.size();
    std::vector<std::uint64_t> ackedSeq(nq);
    std::vector<bool> ackedAny(nq);
    const std::size_t maxBatch = std::max<std::size_t>(slot.options.maxBatch, 1);
    std::chrono::milliseconds backoff = slot.options.minBackoff;
    bool connected = false;
    std::size_t lastBatch = 0; // events in the last batch published; see kLinger
    for (;;) {
        if (finished(slot)) return;

        if (!connected) {
            bool ok = false;
            try {
                ok = slot.sink->connect();
            } catch (...) {
            }
            if (!ok) {
                slot.failures.fetch_add(1, std::memory_order_relaxed);
                std::string error = slot.sink->lastError();
                setState(slot, false, error.empty() ? "cannot connect" : error);
                backOff(slot, backoff);
                continue;
            }
            connected = true;
            backoff = slot.options.minBackoff;
            setState(slot, true, "");
        }

        if (!slot.anyQueued()) {
            // Linger a moment before going to sleep: under a steady stream, the next events come
            // within it and are taken as a batch, without a producer having to wake us for each.
            if (lastBatch >= kLingerAfter) {
                lastBatch = 0;
                std::this_thread::sleep_for(kLinger);
                if (slot.anyQueued() || stopRequested(slot)) continue;
            }
            const std::uint32_t token = slot.parker.prepare();
            if (slot.anyQueued() || stopRequested(slot)) {
                slot.parker.cancel();
                continue;
            }
            const auto slept = std::chrono::steady_clock::now();
            slot.parker.sleep(token, slot.options.idleInterval);
            if (slot.anyQueued() || stopRequested(slot) ||
                std::chrono::steady_clock::now() - slept < slot.options.idleInterval)
                continue;
            bool ok = false;
            try {
                ok = slot.sink->idle();
            } catch (...) {
            }
            if (!ok) {
                slot.sink->onFailure();
                connected = false;
                slot.failures.fetch_add(1, std::memory_order_relaxed);
                std::string error = slot.sink->lastError();
                setState(slot, false, error.empty() ? "connection lost" : error);
            }
            continue;
        }

        // SinkOptions::batchWait: let a short batch fill up for a moment (bounded; polled, as
        // producers wake a sleeping sink only).
        if (slot.options.batchWait.count() > 0 && slot.events() < maxBatch) {
            const auto until = std::chrono::steady_clock::now() + slot.options.batchWait;
            while (slot.events() < maxBatch && !stopRequested(slot)) {
                const auto now = std::chrono::steady_clock::now();
                if (now >= until) break;
                std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(until - now, kBatchPoll));
            }
        }

        // Up to a batch from each queue's front (copies: the queue keeps them until they are
        // acknowledged), no further than the settled id, then the oldest of those overall: the
        // destination gets the events in id order.
        taken.clear();
        const std::uint64_t settled = settledId();
        for (std::size_t qi = 0; qi < nq; ++qi) {
            EventQueue &q = *slot.queues[qi];
            if (q.size.load(std::memory_order_acquire) == 0) continue;
            std::lock_guard lock(q.mu);
            const std::size_t n = std::min(q.entries.size(), maxBatch);
            for (std::size_t i = 0; i < n && q.entries[i].event->id <= settled; ++i)
                taken.push_back(Taken{q.entries[i].event, qi, q.entries[i].seq});
        }
        if (taken.empty()) {
            // Only events after one still being published (its producer preempted in between):
            // let it run.
            std::this_thread::yield();
            continue;
        }
        std::stable_sort(taken.begin(), taken.end(),
                         [](const Taken &x, const Taken &y) { return x.event->id < y.event->id; });
        if (taken.size() > maxBatch) taken.resize(maxBatch);
        batch.clear();
        for (const Taken &t : taken) batch.push_back(t.event);

        std::size_t acked = 0;
        try {
            acked = std::min(slot.sink->publish(batch), batch.size());
        } catch (...) {
            acked = 0; // a sink must not throw; treat it as a failed delivery and retry
        }
        const bool failed = acked < batch.size();
        lastBatch = batch.size();

        if (acked > 0) {
            // DropOldest may have dropped some of the batch from its queue meanwhile: pop by
            // position. The acknowledged ones are a prefix of each queue's share of the batch.
            std::fill(ackedAny.begin(), ackedAny.end(), false);
            for (std::size_t i = 0; i < acked; ++i) {
                ackedSeq[taken[i].queue] = taken[i].seq;
                ackedAny[taken[i].queue] = true;
            }
            for (std::size_t qi = 0; qi < nq; ++qi) {
                if (!ackedAny[qi]) continue;
                EventQueue &q = *slot.queues[qi];
                std::lock_guard lock(q.mu);
                while (!q.entries.empty() && q.entries.front().seq <= ackedSeq[qi]) q.popFront();
            }
            slot.published.fetch_add(acked, std::memory_order_relaxed);
            if (slot.pausing.load() && slot.drainedToHalf()) sinkPausing(slot, false);
        }
        if (!failed) {
            backoff = slot.options.minBackoff;
            continue;
        }
        slot.sink->onFailure();
        std::string error = slot.sink->lastError();
        slot.failures.fetch_add(1, std::memory_order_relaxed);
        connected = false;
        setState(slot, false, error.empty() ? "publish failed" : error);
        backOff(slot, backoff);
    }
}

EventBus::EventBus(std::uint64_t firstId, std::size_t producers)
    : impl_(std::make_unique<Impl>(std::max<std::uint64_t>(firstId, 1), producers)) {
    std::lock_guard lock(impl_->lifecycleMu);
    impl_->publishRoutes({}, false, nullptr);
    impl_->publishTags();
}

EventBus::~EventBus() { stop(std::chrono::milliseconds(0)); }

bool EventBus::Impl::startThread(SinkSlot *s, std::string *error) noexcept {
    try {
        s->thread = std::thread([this, s] {
            // "wsgw-sink" in top -H, perf and /proc/PID/task/*/comm.
            pthread_setname_np(pthread_self(), "wsgw-sink");
            run(*s);
            std::lock_guard exiting(exitMu);
            s->exited.store(true);
            exitCv.notify_all();
        });
        return true;
    } catch (const std::exception &e) {
        if (error) *error = std::string("cannot start an event sink thread: ") + e.what();
        return false;
    }
}

std::size_t EventBus::addSink(std::unique_ptr<EventSink> sink, SinkOptions options, std::string backend) {
    Impl &d = *impl_;
    std::lock_guard lock(d.lifecycleMu);
    if (!sink || d.stopping.load()) return std::numeric_limits<std::size_t>::max();
    if (backend.empty()) {
        // Unnamed sinks keep working as before routes: the sink's name, made unique.
        backend = sink->name();
        for (int n = 2; d.findLive(backend); ++n) backend = sink->name() + "#" + std::to_string(n);
    } else if (d.findLive(backend)) {
        return std::numeric_limits<std::size_t>::max();
    }
    auto slot = d.makeSlot(std::move(sink), options, std::move(backend));
    SinkSlot *added = slot.get();
    if (d.started && !d.startThread(added, nullptr)) return std::numeric_limits<std::size_t>::max();
    d.sinks.push_back(std::move(slot));
    d.publishTags();
    if (!d.routed) d.publishRoutes({}, false, nullptr);
    std::size_t index = 0;
    for (const auto &s : d.sinks)
        if (!s->removed && s.get() != added) ++index;
    return index;
}

std::size_t EventBus::sinkCount() const {
    std::lock_guard lock(impl_->lifecycleMu);
    return static_cast<std::size_t>(std::count_if(impl_->sinks.begin(), impl_->sinks.end(),
                                                  [](const auto &s) { return !s->removed; }));
}

bool EventBus::setRoutes(const EventRoutes &routes, std::string *error) noexcept {
    try {
        std::lock_guard lock(impl_->lifecycleMu);
        return impl_->publishRoutes(routes, true, error);
    } catch (const std::exception &e) {
        if (error) *error = e.what();
        return false;
    }
}

// With lifecycleMu: `slot` takes no more events once the routes are rebuilt (the caller does),
// and its thread is told to deliver what it holds until `flushFor` has passed.
void EventBus::Impl::retire(SinkSlot *slot, std::chrono::milliseconds flushFor) {
    slot->removed = true;
    if (slot->pausing.load()) sinkPausing(*slot, false);
    slot->retireBy = std::chrono::steady_clock::now() + flushFor;
    slot->retiring.store(true, std::memory_order_release);
    slot->wakeUp();
}

// Without lifecycleMu (stats() and publish() go on meanwhile): waits for a retired sink's thread
// and returns what it left undelivered.
std::size_t EventBus::Impl::join(SinkSlot *slot) {
    if (slot->thread.joinable()) {
        {
            std::unique_lock lock(exitMu);
            exitCv.wait_until(lock, slot->retireBy + std::chrono::milliseconds(100), [&] { return slot->exited.load(); });
        }
        if (!slot->exited.load()) slot->sink->cancel();
        slot->thread.join();
    }
    std::size_t left = 0;
    for (auto &q : slot->queues) left += q->size.load();
    return left;
}

std::size_t EventBus::removeSink(const std::string &backend, std::chrono::milliseconds flushFor) {
    Impl &d = *impl_;
    SinkSlot *slot = nullptr;
    {
        std::lock_guard lock(d.lifecycleMu);
        slot = d.findLive(backend);
        if (!slot) return std::numeric_limits<std::size_t>::max();
        d.retire(slot, flushFor);
        // Routes that still name it lose it (the caller should have routed around it first).
        EventRoutes spec = d.spec;
        auto drop = [&](std::vector<std::string> &names) {
            names.erase(std::remove(names.begin(), names.end(), backend), names.end());
        };
        drop(spec.defaults);
        for (auto &[endpoint, names] : spec.endpoints) drop(names);
        d.publishRoutes(spec, d.routed, nullptr);
    }
    return d.join(slot);
}

std::size_t EventBus::replaceSink(const std::string &backend, std::unique_ptr<EventSink> sink, SinkOptions options,
                                  std::chrono::milliseconds flushFor) {
    Impl &d = *impl_;
    SinkSlot *old = nullptr;
    {
        std::lock_guard lock(d.lifecycleMu);
        old = d.findLive(backend);
        if (!old || !sink || d.stopping.load()) return std::numeric_limits<std::size_t>::max();
        auto slot = d.makeSlot(std::move(sink), options, backend);
        if (d.started && !d.startThread(slot.get(), nullptr)) return std::numeric_limits<std::size_t>::max();
        d.retire(old, flushFor);
        d.sinks.push_back(std::move(slot));
        d.publishTags();
        // The same routes, now resolving the name to the new sink.
        d.publishRoutes(EventRoutes(d.spec), d.routed, nullptr);
    }
    return d.join(old);
}

bool EventBus::start(std::string *error) noexcept {
    {
        std::lock_guard lock(impl_->lifecycleMu);
        if (impl_->started) return true;
        impl_->started = true;
        bool ok = true;
        for (auto &slot : impl_->sinks)
            if (!slot->removed && !(ok = impl_->startThread(slot.get(), error))) break;
        if (ok) return true;
    }
    stop(std::chrono::milliseconds(0));
    return false;
}

void EventBus::onStateChange(StateListener listener) { impl_->stateListener = std::move(listener); }

void EventBus::onBackpressure(std::function<void(bool)> listener) { impl_->backpressureListener = std::move(listener); }

bool EventBus::wants(EventAction action) const noexcept { return (impl_->wanted.load() & bit(action)) != 0; }

const std::vector<std::string> &EventBus::tagsUsed() const noexcept {
    return *impl_->tagsUsedNow.load(std::memory_order_acquire);
}

bool EventBus::paused() const noexcept { return impl_->pausingSinks.load(std::memory_order_acquire) > 0; }

bool EventBus::paused(std::string_view endpoint) const noexcept {
    if (!paused()) return false;
    const RouteTable *table = impl_->routes.load(std::memory_order_acquire);
    for (const SinkSlot *s : table->sinksFor(endpoint))
        if (s->pausing.load(std::memory_order_acquire)) return true;
    return false;
}

void EventBus::countLost() noexcept { impl_->lost.fetch_add(1, std::memory_order_relaxed); }

std::uint64_t EventBus::lost() const noexcept { return impl_->lost.load(std::memory_order_relaxed); }

std::uint64_t EventBus::publish(std::size_t producer, Event &&event) noexcept {
    Impl &d = *impl_;
    if (producer >= d.producers) return publish(std::move(event));
    if (d.stopping.load(std::memory_order_acquire)) return 0;
    try {
        return d.enqueue(producer, std::move(event));
    } catch (...) {
        countLost();
        return 0;
    }
}

std::uint64_t EventBus::publish(Event &&event) noexcept {
    Impl &d = *impl_;
    if (d.stopping.load(std::memory_order_acquire)) return 0;
    try {
        // Several threads may publish here: one at a time, so the queue stays in id order.
        std::lock_guard lock(d.sharedMu);
        return d.enqueue(d.producers, std::move(event));
    } catch (...) {
        countLost();
        return 0;
    }
}

std::size_t EventBus::stop(std::chrono::milliseconds flushFor) {
    Impl &d = *impl_;
    std::lock_guard serial(d.stopMu); // one stop() at a time joins the threads
    std::vector<SinkSlot *> live; // a removed sink's thread is joined by removeSink
    {
        std::lock_guard lifecycle(d.lifecycleMu);
        if (!d.stopping.load()) {
            d.deadline = std::chrono::steady_clock::now() + flushFor;
            d.stopping.store(true, std::memory_order_release);
        }
        for (auto &slot : d.sinks)
            if (!slot->removed) live.push_back(slot.get());
    }
    // stats() and ready() go on answering meanwhile (lifecycleMu is not held).
    for (SinkSlot *slot : live) slot->wakeUp();
    // Until the deadline (and a moment for a call that just ended), then a sink still inside a
    // call is told to give it up.
    {
        std::unique_lock lock(d.exitMu);
        auto allExited = [&] {
            return std::all_of(live.begin(), live.end(),
                               [](const SinkSlot *slot) { return !slot->thread.joinable() || slot->exited.load(); });
        };
        d.exitCv.wait_until(lock, d.deadline + std::chrono::milliseconds(100), allExited);
    }
    for (SinkSlot *slot : live)
        if (slot->thread.joinable() && !slot->exited.load()) slot->sink->cancel();
    std::size_t left = 0;
    for (SinkSlot *slot : live) {
        if (slot->thread.joinable()) slot->thread.join();
        for (auto &q : slot->queues) left += q->size.load();
    }
    return left;
}

std::vector<SinkStats> EventBus::stats() const {
    std::vector<SinkStats> out;
    std::lock_guard lifecycle(impl_->lifecycleMu);
    for (const auto &slot : impl_->sinks) {
        if (slot->removed) continue;
        SinkStats s;
        s.name = slot->name;
        s.backend = slot->backend;
        s.published = slot->published.load(std::memory_order_relaxed);
        s.failures = slot->failures.load(std::memory_order_relaxed);
        s.rejected = slot->sink->rejected();
        for (const auto &q : slot->queues) {
            s.dropped += q->dropped.load(std::memory_order_relaxed);
            s.backlog += q->size.load(std::memory_order_relaxed);
            s.backlogBytes += q->sizeBytes.load(std::memory_order_relaxed);
        }
        {
            std::lock_guard lock(slot->stateMu);
            s.connected = slot->connected.load();
            s.lastError = slot->lastError;
        }
        out.push_back(std::move(s));
    }
    return out;
}

bool EventBus::ready() const {
    std::lock_guard lifecycle(impl_->lifecycleMu);
    return std::all_of(impl_->sinks.begin(), impl_->sinks.end(),
                       [](const auto &s) { return s->removed || s->connected.load(); });
}

std::uint64_t EventBus::lastEventId() const { return impl_->lastId.load(std::memory_order_relaxed); }

} // namespace wsgw
