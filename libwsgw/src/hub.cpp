#include <wsgw/hub.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace wsgw {

namespace {

// A command as queued: what to run on the shard, and what to do instead if the hub stops first.
struct Command {
    std::function<void(Shard &)> run;
    std::function<void()> abort;
};

// Sums the shards' answers and calls `done` once, when the last shard has answered.
class CountJoin {
public:
    CountJoin(std::size_t shards, Hub::CountCallback done) : remaining_(shards), done_(std::move(done)) {}

    void add(std::size_t n) {
        sum_.fetch_add(n, std::memory_order_relaxed);
        finishOne();
    }
    void abort() {
        stopped_.store(true, std::memory_order_relaxed);
        finishOne();
    }
    // No shard took the command: answer at once.
    void busy() { done_(CountResult{CommandStatus::Busy, 0}); }

private:
    void finishOne() {
        if (remaining_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
        CountResult r;
        r.status = stopped_.load(std::memory_order_relaxed) ? CommandStatus::Stopped : CommandStatus::Ok;
        r.value = r.status == CommandStatus::Ok ? sum_.load(std::memory_order_relaxed) : 0;
        done_(r);
    }

    std::atomic<std::size_t> remaining_;
    std::atomic<std::size_t> sum_{0};
    std::atomic<bool> stopped_{false};
    Hub::CountCallback done_;
};

// Collects per-shard results of type T and merges them with `merge` under a mutex.
template <class T> class GatherJoin {
public:
    using Done = std::function<void(CommandResult<T>)>;
    GatherJoin(std::size_t shards, Done done) : remaining_(shards), done_(std::move(done)) {}

    template <class Merge> void add(Merge &&merge) {
        std::unique_lock lock(mu_);
        merge(result_.value);
        finishOne(lock);
    }
    void abort() {
        std::unique_lock lock(mu_);
        result_.status = CommandStatus::Stopped;
        finishOne(lock);
    }
    void busy() { done_(CommandResult<T>{CommandStatus::Busy, T{}}); }

private:
    void finishOne(std::unique_lock<std::mutex> &lock) {
        if (--remaining_ != 0) return;
        CommandResult<T> r = std::move(result_);
        if (r.status != CommandStatus::Ok) r.value = T{};
        lock.unlock();
        done_(std::move(r));
    }

    std::mutex mu_;
    std::size_t remaining_;
    CommandResult<T> result_;
    Done done_;
};

template <class T> std::future<T> futureOf(const std::function<void(std::function<void(T)>)> &start) {
    auto promise = std::make_shared<std::promise<T>>();
    auto future = promise->get_future();
    start([promise](T r) { promise->set_value(std::move(r)); });
    return future;
}

} // namespace

struct Shard::Impl {
    explicit Impl(std::size_t cap) : capacity(cap) {}

    Registry registry;
    const std::size_t capacity;
    std::atomic<std::size_t> reserved{0}; // inbox slots promised to callers, queued or about to be

    std::mutex mu;
    std::vector<Command> inbox; // guarded by mu
    bool stopped = false;       // guarded by mu
    std::condition_variable signal; // own-thread mode: new commands or stop
    std::function<void()> wake;

    std::vector<Command> running; // drained batch; only the shard thread touches it
    std::thread thread;           // own-thread mode

    bool reserve() {
        if (reserved.fetch_add(1, std::memory_order_acq_rel) >= capacity) {
            reserved.fetch_sub(1, std::memory_order_acq_rel);
            return false;
        }
        return true;
    }
    void unreserve() { reserved.fetch_sub(1, std::memory_order_acq_rel); }

    // Queues a command whose slot was reserved and returns true. If the shard is stopped,
    // returns false and calls its abort instead.
    bool enqueue(Command cmd) {
        bool queued = false;
        {
            std::lock_guard lock(mu);
            if (!stopped) {
                inbox.push_back(std::move(cmd));
                signal.notify_one();
                queued = true;
            }
        }
        if (!queued) {
            unreserve();
            if (cmd.abort) cmd.abort();
            return false;
        }
        if (wake) wake();
        return true;
    }

    // Takes every queued command out; returns them for the caller to abort.
    std::vector<Command> stop() {
        std::lock_guard lock(mu);
        stopped = true;
        signal.notify_all();
        std::vector<Command> left = std::move(inbox);
        inbox.clear();
        reserved.fetch_sub(left.size(), std::memory_order_acq_rel);
        return left;
    }
};

Shard::Shard(Hub &hub, std::size_t index, std::size_t inboxCapacity)
    : hub_(hub), index_(index), impl_(std::make_unique<Impl>(std::max<std::size_t>(inboxCapacity, 1))) {}

Shard::~Shard() = default;

Registry &Shard::registry() noexcept { return impl_->registry; }

namespace {
Event::TagLookup lookupIn(const Registry &registry, ConnectionId id) {
    return [&registry, id](std::string_view key) { return registry.tag(id, key); };
}
} // namespace

bool Shard::open(Connection &conn, const TagList &tags, const EventSpec &spec) {
    Registry &reg = impl_->registry;
    if (!reg.add(conn, tags)) return false;
    Event e = Event::make(EventAction::Open, conn.id(), conn.endpoint(), lookupIn(reg, conn.id()), spec);
    if (spec.connectionDetails) {
        e.allTags = reg.tags(conn.id());
        e.remoteAddress = conn.remoteAddress();
    }
    hub_.events().publish(std::move(e));
    return true;
}

void Shard::message(const Connection &conn, Opcode type, std::string_view payload, const EventSpec &spec) {
    Event e = Event::make(EventAction::Message, conn.id(), conn.endpoint(), lookupIn(impl_->registry, conn.id()), spec);
    e.type = type;
    e.message.assign(payload);
    if (!spec.json.empty()) e.vars = spec.json.extract(payload);
    hub_.events().publish(std::move(e));
}

void Shard::closed(const Connection &conn, const EventSpec &spec) {
    Registry &reg = impl_->registry;
    if (!reg.find(conn.id())) return;
    // The close event carries the tags the connection had; it is published once the connection
    // has left the registry, so a consumer reacting to it no longer finds it there.
    Event e = Event::make(EventAction::Close, conn.id(), conn.endpoint(), lookupIn(reg, conn.id()), spec);
    reg.remove(conn.id());
    hub_.events().publish(std::move(e));
}

std::size_t Shard::drain() {
    Impl &d = *impl_;
    {
        std::lock_guard lock(d.mu);
        if (d.inbox.empty()) return 0;
        std::swap(d.running, d.inbox);
    }
    std::size_t n = d.running.size();
    d.reserved.fetch_sub(n, std::memory_order_acq_rel);
    for (Command &cmd : d.running) {
        try {
            cmd.run(*this);
        } catch (...) {
            // A command that throws (out of memory) must not take the shard down; its caller
            // already got or will get its answer through the join.
        }
    }
    d.running.clear();
    return n;
}

void Shard::setWakeup(std::function<void()> wake) { impl_->wake = std::move(wake); }

bool Shard::post(std::function<void(Shard &)> fn) {
    if (!impl_->reserve()) return false;
    return impl_->enqueue(Command{std::move(fn), nullptr});
}

struct Hub::Impl {
    explicit Impl(std::uint64_t firstEventId) : events(firstEventId) {}

    HubOptions options;
    std::vector<std::unique_ptr<Shard>> shards;
    EventBus events;
    std::atomic<bool> started{false};
    std::atomic<bool> stopped{false};

    // Posts one command per shard, all or none: reserves an inbox slot on every shard first.
    template <class Make> bool postAll(Make &&make) {
        std::size_t reservedCount = 0;
        for (; reservedCount < shards.size(); ++reservedCount) {
            if (!shards[reservedCount]->impl_->reserve()) break;
        }
        if (reservedCount < shards.size()) {
            for (std::size_t i = 0; i < reservedCount; ++i) shards[i]->impl_->unreserve();
            return false;
        }
        for (auto &s : shards) s->impl_->enqueue(make());
        return true;
    }

    // Runs run(shard, *join) on every shard; the join answers the caller.
    template <class Join, class Run> void postJoined(std::shared_ptr<Join> join, Run run) {
        auto shared = std::make_shared<Run>(std::move(run));
        bool ok = postAll([&] {
            return Command{[join, shared](Shard &s) { (*shared)(s, *join); }, [join] { join->abort(); }};
        });
        if (!ok) join->busy();
    }
};

Hub::Hub(HubOptions options) : impl_(std::make_unique<Impl>(std::max<std::uint64_t>(options.firstEventId, 1))) {
    if (options.shards == 0) options.shards = 1;
    impl_->options = options;
    for (std::size_t i = 0; i < options.shards; ++i)
        impl_->shards.push_back(std::unique_ptr<Shard>(new Shard(*this, i, options.inboxCapacity)));
}

Hub::~Hub() { stop(); }

std::size_t Hub::shardCount() const noexcept { return impl_->shards.size(); }

Shard &Hub::shard(std::size_t index) {
    if (index >= impl_->shards.size()) throw std::out_of_range("wsgw::Hub::shard: no such shard");
    return *impl_->shards[index];
}

EventBus &Hub::events() noexcept { return impl_->events; }

void Hub::start() {
    if (impl_->started.exchange(true)) return;
    impl_->events.start();
    if (!impl_->options.ownThreads) return;
    for (auto &s : impl_->shards) {
        Shard *shard = s.get();
        Shard::Impl &d = *shard->impl_;
        d.thread = std::thread([shard, &d] {
            for (;;) {
                {
                    std::unique_lock lock(d.mu);
                    d.signal.wait(lock, [&] { return !d.inbox.empty() || d.stopped; });
                    if (d.inbox.empty()) return; // stopped and nothing left
                }
                shard->drain();
            }
        });
    }
}

void Hub::stop(std::chrono::milliseconds flushFor) {
    if (impl_->stopped.exchange(true)) return;
    for (auto &s : impl_->shards) {
        for (Command &cmd : s->impl_->stop())
            if (cmd.abort) cmd.abort();
    }
    for (auto &s : impl_->shards)
        if (s->impl_->thread.joinable()) s->impl_->thread.join();
    impl_->events.stop(flushFor);
}

void Hub::forEachShard(std::function<std::size_t(Shard &)> fn, CountCallback done) {
    impl_->postJoined(std::make_shared<CountJoin>(impl_->shards.size(), std::move(done)),
              [fn = std::move(fn)](Shard &s, CountJoin &join) { join.add(fn(s)); });
}

void Hub::send(Selector sel, MessagePtr msg, CountCallback done) {
    // One copy of the message per shard: every recipient's queue takes a reference, and a
    // reference count shared by shards on different cores would bounce its cache line between
    // them once per recipient. Shard 0 uses the caller's message; another shard makes its copy
    // on its own thread, and only once it has a recipient (an id= send copies nothing).
    forEachShard(
        [sel = std::move(sel), msg = std::move(msg)](Shard &s) {
            MessagePtr copy;
            const MessagePtr &mine = s.index() == 0 ? msg : copy;
            std::size_t queued = 0;
            s.registry().match(sel, [&](Connection &c) {
                if (!mine) copy = Message::create(msg->opcode(), msg->payload(), msg->headroom());
                queued += c.send(mine) == SendStatus::Queued;
            });
            return queued;
        },
        std::move(done));
}

void Hub::setTags(Selector sel, TagList changes, CountCallback done) {
    forEachShard(
        [sel = std::move(sel), changes = std::move(changes)](Shard &s) {
            Registry &reg = s.registry();
            EventBus &events = s.hub().events();
            const bool mirrored = events.wants(EventAction::TagsChanged);
            return reg.match(sel, [&](Connection &c) {
                reg.setTags(c.id(), changes);
                if (!mirrored) return;
                Event e;
                e.action = EventAction::TagsChanged;
                e.connection = c.id();
                e.endpoint = std::string(c.endpoint());
                e.changes = changes;
                events.publish(std::move(e));
            });
        },
        std::move(done));
}

void Hub::close(Selector sel, std::uint16_t code, std::string reason, MessagePtr last, CountCallback done) {
    forEachShard(
        [sel = std::move(sel), code, reason = std::move(reason), last = std::move(last)](Shard &s) {
            return s.registry().match(sel, [&](Connection &c) {
                if (last) (void)c.send(last);
                c.close(code, reason);
            });
        },
        std::move(done));
}

void Hub::status(Selector sel, std::function<void(StatusResult)> done) {
    using Join = GatherJoin<std::vector<ConnectionInfo>>;
    auto sorted = [done = std::move(done)](StatusResult r) {
        std::sort(r.value.begin(), r.value.end(), [](const auto &a, const auto &b) { return a.id < b.id; });
        done(std::move(r));
    };
    impl_->postJoined(std::make_shared<Join>(impl_->shards.size(), std::move(sorted)),
              [sel = std::move(sel)](Shard &s, Join &join) {
                  std::vector<ConnectionInfo> mine;
                  Registry &reg = s.registry();
                  reg.match(sel, [&](Connection &c) {
                      mine.push_back(ConnectionInfo{c.id(), std::string(c.endpoint()), c.remoteAddress(),
                                                    reg.tags(c.id()), s.index()});
                  });
                  join.add([&](std::vector<ConnectionInfo> &all) {
                      all.insert(all.end(), std::make_move_iterator(mine.begin()), std::make_move_iterator(mine.end()));
                  });
              });
}

void Hub::tree(std::function<void(TreeResult)> done) {
    using Join = GatherJoin<TagTree>;
    impl_->postJoined(std::make_shared<Join>(impl_->shards.size(), std::move(done)), [](Shard &s, Join &join) {
        TagTree mine = s.registry().tree();
        join.add([&](TagTree &all) {
            for (auto &[key, values] : mine)
                for (auto &[value, count] : values) all[key][value] += count;
        });
    });
}

std::future<CountResult> Hub::send(Selector sel, MessagePtr msg) {
    return futureOf<CountResult>([&](auto done) { send(std::move(sel), std::move(msg), std::move(done)); });
}

std::future<CountResult> Hub::setTags(Selector sel, TagList changes) {
    return futureOf<CountResult>([&](auto done) { setTags(std::move(sel), std::move(changes), std::move(done)); });
}

std::future<CountResult> Hub::close(Selector sel, std::uint16_t code, std::string reason, MessagePtr last) {
    return futureOf<CountResult>(
        [&](auto done) { close(std::move(sel), code, std::move(reason), std::move(last), std::move(done)); });
}

std::future<StatusResult> Hub::status(Selector sel) {
    return futureOf<StatusResult>([&](auto done) { status(std::move(sel), std::move(done)); });
}

std::future<TreeResult> Hub::tree() {
    return futureOf<TreeResult>([&](auto done) { tree(std::move(done)); });
}

} // namespace wsgw
