#include <wsgw/sink.h>

#include <algorithm>
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

// One sink with its backlog and thread. All fields but `sink` and `thread` are guarded by the
// bus mutex.
struct SinkSlot {
    std::unique_ptr<EventSink> sink;
    std::string name;
    SinkOptions options;
    std::deque<Queued> queue;
    std::size_t bytes = 0;
    std::uint64_t published = 0;
    std::uint64_t dropped = 0;
    std::uint64_t failures = 0;
    bool connected = true;
    std::condition_variable wake;
    std::thread thread;
};

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
    std::uint64_t lastId = 0;
    bool started = false;
    bool stopping = false;
    std::chrono::steady_clock::time_point deadline;

    void run(SinkSlot &slot);
};

void EventBus::Impl::run(SinkSlot &slot) {
    std::vector<EventPtr> batch;
    std::chrono::milliseconds backoff = slot.options.minBackoff;
    std::unique_lock lock(mu);
    for (;;) {
        slot.wake.wait(lock, [&] { return !slot.queue.empty() || stopping; });
        if (stopping && (slot.queue.empty() || std::chrono::steady_clock::now() >= deadline)) return;

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
        if (failed) slot.sink->onFailure();
        lock.lock();

        if (acked > 0) {
            // Overflow may have dropped some of the batch from the queue meanwhile; pop by id.
            std::uint64_t last = batch[acked - 1]->id;
            while (!slot.queue.empty() && slot.queue.front().event->id <= last) {
                slot.bytes -= slot.queue.front().bytes;
                slot.queue.pop_front();
            }
            slot.published += acked;
        }
        if (!failed) {
            slot.connected = true;
            backoff = slot.options.minBackoff;
            continue;
        }
        ++slot.failures;
        slot.connected = false;
        // Back off, but never past the flush deadline once stopping.
        auto until = std::chrono::steady_clock::now() + backoff;
        if (stopping) until = std::min(until, deadline);
        slot.wake.wait_until(lock, until, [&] { return stopping && std::chrono::steady_clock::now() >= deadline; });
        backoff = std::min(backoff * 2, slot.options.maxBackoff);
    }
}

EventBus::EventBus() : impl_(std::make_unique<Impl>()) {}

EventBus::~EventBus() { stop(std::chrono::milliseconds(0)); }

std::size_t EventBus::addSink(std::unique_ptr<EventSink> sink, SinkOptions options) {
    std::lock_guard lock(impl_->mu);
    auto slot = std::make_unique<SinkSlot>();
    slot->name = sink->name();
    slot->sink = std::move(sink);
    slot->options = options;
    impl_->sinks.push_back(std::move(slot));
    return impl_->sinks.size() - 1;
}

std::size_t EventBus::sinkCount() const {
    std::lock_guard lock(impl_->mu);
    return impl_->sinks.size();
}

void EventBus::start() {
    std::lock_guard lock(impl_->mu);
    if (impl_->started) return;
    impl_->started = true;
    for (auto &slot : impl_->sinks) {
        SinkSlot *s = slot.get();
        s->thread = std::thread([this, s] { impl_->run(*s); });
    }
}

std::uint64_t EventBus::publish(Event &&event) {
    auto shared = std::make_shared<Event>(std::move(event));
    std::size_t bytes = shared->footprint();
    Impl &d = *impl_;
    std::unique_lock lock(d.mu);
    if (d.stopping) return 0;
    shared->id = ++d.lastId;
    EventPtr ptr = std::move(shared);
    for (auto &slot : d.sinks) {
        SinkSlot &s = *slot;
        const SinkOptions &o = s.options;
        auto full = [&] { return s.queue.size() >= o.maxBacklogEvents || s.bytes + bytes > o.maxBacklogBytes; };
        if (full()) {
            if (o.overflow == OverflowPolicy::DropNewest || s.queue.empty()) {
                ++s.dropped;
                continue;
            }
            while (!s.queue.empty() && full()) {
                s.bytes -= s.queue.front().bytes;
                s.queue.pop_front();
                ++s.dropped;
            }
        }
        s.queue.push_back(Queued{ptr, bytes});
        s.bytes += bytes;
        if (s.queue.size() == 1) s.wake.notify_one();
    }
    return ptr->id;
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
        s.backlog = slot->queue.size();
        s.backlogBytes = slot->bytes;
        s.connected = slot->connected;
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
