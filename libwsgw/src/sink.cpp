#include <wsgw/sink.h>

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace wsgw {

EventSink::~EventSink() = default;

namespace {

struct Queued {
    EventPtr event;
    std::size_t bytes;
};

// One sink with its backlog and thread. All fields but `sink`, `acceptMask` and `thread` are
// guarded by the bus mutex.
struct SinkSlot {
    std::unique_ptr<EventSink> sink;
    std::string name;
    SinkOptions options;
    unsigned acceptMask = 0; // bit per EventAction
    std::deque<Queued> queue;
    std::size_t bytes = 0;
    std::uint64_t published = 0;
    std::uint64_t dropped = 0;
    std::uint64_t failures = 0;
    bool connected = false;
    bool pausing = false; // PauseReading: over the bound, not yet down to half
    std::string lastError;
    std::condition_variable wake;
    std::thread thread;

    bool full(std::size_t extraBytes) const {
        return queue.size() >= options.maxBacklogEvents || bytes + extraBytes > options.maxBacklogBytes;
    }
    bool drainedToHalf() const {
        return queue.size() <= options.maxBacklogEvents / 2 && bytes <= options.maxBacklogBytes / 2;
    }
};

constexpr unsigned bit(EventAction a) { return 1u << static_cast<unsigned>(a); }

class LogSink final : public EventSink {
public:
    LogSink(std::FILE *out, std::string node) : out_(out), node_(std::move(node)) {}
    std::string name() const override { return "log"; }
    std::size_t publish(const std::vector<EventPtr> &batch) override {
        std::size_t written = 0;
        for (const EventPtr &e : batch) {
            std::string line = toJson(*e, node_);
            line.push_back('\n');
            if (std::fwrite(line.data(), 1, line.size(), out_) != line.size()) break;
            ++written;
        }
        if (std::fflush(out_) != 0) return 0;
        return written;
    }

private:
    std::FILE *out_;
    std::string node_;
};

class NullSink final : public EventSink {
public:
    std::string name() const override { return "null"; }
    std::size_t publish(const std::vector<EventPtr> &batch) override { return batch.size(); }
};

} // namespace

struct EventBus::Impl {
    mutable std::mutex mu;
    std::vector<std::unique_ptr<SinkSlot>> sinks;
    std::uint64_t lastId = 0;       // the last event id handed out (open/close/message)
    std::uint64_t lastSequence = 0; // every event, for the queues' ordering
    bool started = false;
    bool stopping = false;
    std::chrono::steady_clock::time_point deadline;
    std::atomic<unsigned> wanted{0};
    std::atomic<bool> paused{false};
    std::atomic<std::uint64_t> lost{0};
    StateListener stateListener;
    std::function<void(bool)> backpressureListener;

    void run(SinkSlot &slot);

    // Recomputes `paused` from the sinks (mutex held); returns whether it changed.
    bool updatePaused() {
        bool any = false;
        for (auto &s : sinks) any = any || s->pausing;
        return paused.exchange(any) != any;
    }

    // Records a state change and tells the listener (mutex held on entry and exit; released
    // around the call so the listener may read stats()).
    void setState(SinkSlot &slot, bool connected, const std::string &error, std::unique_lock<std::mutex> &lock) {
        bool changed = slot.connected != connected || (!connected && slot.lastError != error);
        slot.connected = connected;
        slot.lastError = connected ? std::string() : error;
        if (!changed || !stateListener) return;
        lock.unlock();
        stateListener(slot.name, connected, error);
        lock.lock();
    }

    // Waits for the back-off, or until stop's deadline when stopping.
    void backOff(SinkSlot &slot, std::chrono::milliseconds &backoff, std::unique_lock<std::mutex> &lock) {
        auto until = std::chrono::steady_clock::now() + backoff;
        if (stopping) until = std::min(until, deadline);
        slot.wake.wait_until(lock, until, [&] { return stopping && std::chrono::steady_clock::now() >= deadline; });
        backoff = std::min(backoff * 2, slot.options.maxBackoff);
    }
};

void EventBus::Impl::run(SinkSlot &slot) {
    std::vector<EventPtr> batch;
    std::chrono::milliseconds backoff = slot.options.minBackoff;
    bool connected = false;
    std::unique_lock lock(mu);
    for (;;) {
        if (stopping && (slot.queue.empty() || std::chrono::steady_clock::now() >= deadline)) return;

        if (!connected) {
            lock.unlock();
            bool ok = false;
            try {
                ok = slot.sink->connect();
            } catch (...) {
            }
            std::string error = ok ? std::string() : slot.sink->lastError();
            lock.lock();
            if (!ok) {
                ++slot.failures;
                setState(slot, false, error.empty() ? "cannot connect" : error, lock);
                backOff(slot, backoff, lock);
                continue;
            }
            connected = true;
            backoff = slot.options.minBackoff;
            setState(slot, true, "", lock);
        }

        if (slot.queue.empty()) {
            bool woke = slot.wake.wait_for(lock, slot.options.idleInterval,
                                           [&] { return !slot.queue.empty() || stopping; });
            if (woke) continue;
            lock.unlock();
            bool ok = false;
            try {
                ok = slot.sink->idle();
            } catch (...) {
            }
            if (!ok) slot.sink->onFailure();
            std::string error = ok ? std::string() : slot.sink->lastError();
            lock.lock();
            if (!ok) {
                connected = false;
                ++slot.failures;
                setState(slot, false, error.empty() ? "connection lost" : error, lock);
            }
            continue;
        }

        batch.clear();
        std::size_t n = std::min(slot.queue.size(), std::max<std::size_t>(slot.options.maxBatch, 1));
        for (std::size_t i = 0; i < n; ++i) batch.push_back(slot.queue[i].event);
        lock.unlock();
        std::size_t acked = 0;
        try {
            acked = std::min(slot.sink->publish(batch), batch.size());
        } catch (...) {
            acked = 0; // a sink must not throw; treat it as a failed delivery and retry
        }
        bool failed = acked < batch.size();
        std::string error;
        if (failed) {
            slot.sink->onFailure();
            error = slot.sink->lastError();
        }
        lock.lock();

        if (acked > 0) {
            // Overflow may have dropped some of the batch from the queue meanwhile; pop by id.
            std::uint64_t last = batch[acked - 1]->sequence;
            while (!slot.queue.empty() && slot.queue.front().event->sequence <= last) {
                slot.bytes -= slot.queue.front().bytes;
                slot.queue.pop_front();
            }
            slot.published += acked;
            if (slot.pausing && slot.drainedToHalf()) {
                slot.pausing = false;
                if (updatePaused() && backpressureListener) {
                    lock.unlock();
                    backpressureListener(false);
                    lock.lock();
                }
            }
        }
        if (!failed) {
            backoff = slot.options.minBackoff;
            continue;
        }
        ++slot.failures;
        connected = false;
        setState(slot, false, error.empty() ? "publish failed" : error, lock);
        backOff(slot, backoff, lock);
    }
}

EventBus::EventBus(std::uint64_t firstId) : impl_(std::make_unique<Impl>()) { impl_->lastId = firstId - 1; }

EventBus::~EventBus() { stop(std::chrono::milliseconds(0)); }

std::size_t EventBus::addSink(std::unique_ptr<EventSink> sink, SinkOptions options) {
    std::lock_guard lock(impl_->mu);
    auto slot = std::make_unique<SinkSlot>();
    slot->name = sink->name();
    for (EventAction a : {EventAction::Open, EventAction::Close, EventAction::Message, EventAction::TagsChanged})
        if (sink->accepts(a)) slot->acceptMask |= bit(a);
    impl_->wanted.fetch_or(slot->acceptMask);
    slot->sink = std::move(sink);
    slot->options = options;
    impl_->sinks.push_back(std::move(slot));
    return impl_->sinks.size() - 1;
}

std::size_t EventBus::sinkCount() const {
    std::lock_guard lock(impl_->mu);
    return impl_->sinks.size();
}

bool EventBus::start(std::string *error) noexcept {
    {
        std::lock_guard lock(impl_->mu);
        if (impl_->started) return true;
        impl_->started = true;
        try {
            for (auto &slot : impl_->sinks) {
                SinkSlot *s = slot.get();
                s->thread = std::thread([this, s] {
                    // "wsgw-sink" in top -H, perf and /proc/PID/task/*/comm.
                    pthread_setname_np(pthread_self(), "wsgw-sink");
                    impl_->run(*s);
                });
            }
            return true;
        } catch (const std::exception &e) {
            if (error) *error = std::string("cannot start an event sink thread: ") + e.what();
        }
    }
    stop(std::chrono::milliseconds(0));
    return false;
}

void EventBus::countLost() noexcept { impl_->lost.fetch_add(1, std::memory_order_relaxed); }

std::uint64_t EventBus::lost() const noexcept { return impl_->lost.load(std::memory_order_relaxed); }

void EventBus::onStateChange(StateListener listener) {
    std::lock_guard lock(impl_->mu);
    impl_->stateListener = std::move(listener);
}

void EventBus::onBackpressure(std::function<void(bool)> listener) {
    std::lock_guard lock(impl_->mu);
    impl_->backpressureListener = std::move(listener);
}

bool EventBus::wants(EventAction action) const noexcept { return (impl_->wanted.load() & bit(action)) != 0; }

bool EventBus::paused() const noexcept { return impl_->paused.load(std::memory_order_relaxed); }

std::uint64_t EventBus::publish(Event &&event) noexcept {
    try {
        return publishOrThrow(std::move(event));
    } catch (...) {
        countLost();
        return 0;
    }
}

std::uint64_t EventBus::publishOrThrow(Event &&event) {
    auto shared = std::make_shared<Event>(std::move(event));
    std::size_t bytes = shared->footprint();
    const unsigned action = bit(shared->action);
    Impl &d = *impl_;
    std::unique_lock lock(d.mu);
    if (d.stopping) return 0;
    shared->sequence = ++d.lastSequence;
    // Ids count the events of the streams only, so a stream consumer sees no gaps.
    if (shared->action != EventAction::TagsChanged) shared->id = ++d.lastId;
    EventPtr ptr = std::move(shared);
    bool pauseNow = false;
    for (auto &slot : d.sinks) {
        SinkSlot &s = *slot;
        if (!(s.acceptMask & action)) continue;
        if (s.full(bytes)) {
            switch (s.options.overflow) {
            case OverflowPolicy::PauseReading:
                // Keep it: the transport stops reading instead, so the overshoot is bounded by
                // what is already in flight.
                if (!s.pausing) {
                    s.pausing = true;
                    pauseNow = d.updatePaused() || pauseNow;
                }
                break;
            case OverflowPolicy::DropNewest:
                ++s.dropped;
                continue;
            case OverflowPolicy::DropOldest:
                if (s.queue.empty()) {
                    ++s.dropped;
                    continue;
                }
                while (!s.queue.empty() && s.full(bytes)) {
                    s.bytes -= s.queue.front().bytes;
                    s.queue.pop_front();
                    ++s.dropped;
                }
                break;
            }
        }
        s.queue.push_back(Queued{ptr, bytes});
        s.bytes += bytes;
        if (s.queue.size() == 1) s.wake.notify_one();
    }
    std::uint64_t id = ptr->id ? ptr->id : ptr->sequence;
    if (pauseNow && d.backpressureListener) {
        auto listener = d.backpressureListener;
        lock.unlock();
        listener(true);
    }
    return id;
}

std::size_t EventBus::stop(std::chrono::milliseconds flushFor) {
    Impl &d = *impl_;
    {
        std::lock_guard lock(d.mu);
        if (!d.stopping) {
            d.stopping = true;
            d.deadline = std::chrono::steady_clock::now() + flushFor;
        }
        for (auto &slot : d.sinks) slot->wake.notify_all();
    }
    std::size_t left = 0;
    for (auto &slot : d.sinks) {
        if (slot->thread.joinable()) slot->thread.join();
        std::lock_guard lock(d.mu);
        left += slot->queue.size();
    }
    return left;
}

std::vector<SinkStats> EventBus::stats() const {
    std::lock_guard lock(impl_->mu);
    std::vector<SinkStats> out;
    for (const auto &slot : impl_->sinks) {
        SinkStats s;
        s.name = slot->name;
        s.published = slot->published;
        s.dropped = slot->dropped;
        s.failures = slot->failures;
        s.rejected = slot->sink->rejected();
        s.backlog = slot->queue.size();
        s.backlogBytes = slot->bytes;
        s.connected = slot->connected;
        s.lastError = slot->lastError;
        out.push_back(std::move(s));
    }
    return out;
}

bool EventBus::ready() const {
    std::lock_guard lock(impl_->mu);
    return std::all_of(impl_->sinks.begin(), impl_->sinks.end(), [](const auto &s) { return s->connected; });
}

std::uint64_t EventBus::lastEventId() const {
    std::lock_guard lock(impl_->mu);
    return impl_->lastId;
}

std::unique_ptr<EventSink> makeLogSink(std::FILE *out, std::string node) {
    return std::make_unique<LogSink>(out, std::move(node));
}

std::unique_ptr<EventSink> makeNullSink() { return std::make_unique<NullSink>(); }

} // namespace wsgw
