#include <wsgw/hub.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace wsgw {

namespace {

// A command as queued: what to run on the shard, how to end it without running (Stopped,
// TimedOut, Failed; null for a plain post, which has nobody to answer), and by when it must
// have started.
struct Command {
    std::function<void(Shard &)> run;
    std::function<void(CommandStatus)> end;
    Deadline deadline = kNoDeadline;

    void endWith(CommandStatus status) noexcept {
        if (!end) return;
        try {
            end(status);
        } catch (...) {
            // A join's end() does not throw; a caller's done is called inside a try.
        }
    }
};

// Calls a caller's `done`; what it throws is dropped (the contract says it must not throw).
template <class Done, class Result> void answer(Done &done, Result &&r) noexcept {
    try {
        done(std::forward<Result>(r));
    } catch (...) {
    }
}

// How bad an ending is: the worst one over the shards is the command's status.
constexpr unsigned rank(CommandStatus s) noexcept {
    switch (s) {
    case CommandStatus::Stopped: return 3;
    case CommandStatus::Failed: return 2;
    case CommandStatus::TimedOut: return 1;
    default: return 0;
    }
}
constexpr CommandStatus statusOfRank(unsigned r) noexcept {
    return r == 3 ? CommandStatus::Stopped : r == 2 ? CommandStatus::Failed : r == 1 ? CommandStatus::TimedOut
                                                                                   : CommandStatus::Ok;
}

// Sums the shards' answers and calls `done` once, when the last shard has answered (ran it or
// ended it without running).
class CountJoin {
public:
    using Result = CountResult;
    using Done = Hub::CountCallback;
    CountJoin(std::size_t shards, Hub::CountCallback done) : remaining_(shards), done_(std::move(done)) {}

    void add(std::size_t n) noexcept {
        sum_.fetch_add(n, std::memory_order_relaxed);
        ran_.fetch_add(1, std::memory_order_relaxed);
        finishOne();
    }
    void end(CommandStatus why) noexcept {
        unsigned r = rank(why), cur = worst_.load(std::memory_order_relaxed);
        while (r > cur && !worst_.compare_exchange_weak(cur, r, std::memory_order_relaxed)) {
        }
        finishOne();
    }
    // Not queued anywhere: answer at once.
    void refuse(CommandStatus why) noexcept { answer(done_, CountResult{why, 0, 0}); }

private:
    void finishOne() noexcept {
        if (remaining_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
        CountResult r;
        r.status = statusOfRank(worst_.load(std::memory_order_relaxed));
        r.value = sum_.load(std::memory_order_relaxed);
        r.shards = ran_.load(std::memory_order_relaxed);
        answer(done_, r);
    }

    std::atomic<std::size_t> remaining_;
    std::atomic<std::size_t> sum_{0};
    std::atomic<std::size_t> ran_{0};
    std::atomic<unsigned> worst_{0};
    Hub::CountCallback done_;
};

// Collects per-shard results of type T and merges them under a mutex.
template <class T> class GatherJoin {
public:
    using Result = CommandResult<T>;
    using Done = std::function<void(Result)>;
    GatherJoin(std::size_t shards, Done done) : remaining_(shards), done_(std::move(done)) {}

    // `merge` folds one shard's answer into the result; what it throws ends that shard as Failed.
    template <class Merge> void add(Merge &&merge) noexcept {
        std::unique_lock lock(mu_);
        try {
            merge(result_.value);
            ++result_.shards;
        } catch (...) {
            worsen(CommandStatus::Failed);
        }
        finishOne(lock);
    }
    void end(CommandStatus why) noexcept {
        std::unique_lock lock(mu_);
        worsen(why);
        finishOne(lock);
    }
    void refuse(CommandStatus why) noexcept {
        Result r;
        r.status = why;
        answer(done_, std::move(r));
    }

private:
    void worsen(CommandStatus why) noexcept {
        if (rank(why) > rank(result_.status)) result_.status = why;
    }
    void finishOne(std::unique_lock<std::mutex> &lock) noexcept {
        if (--remaining_ != 0) return;
        Result r = std::move(result_);
        lock.unlock();
        answer(done_, std::move(r));
    }

    std::mutex mu_;
    std::size_t remaining_;
    Result result_;
    Done done_;
};

} // namespace

struct Shard::Impl {
    explicit Impl(std::size_t cap) : capacity(cap) {}

    // Connections opened with shared ownership, until closed; then `released` until the next
    // open, closed or drain drops them. Declared before the registry, so they outlive it when
    // the hub goes (its destructor unmarks the ones still registered).
    std::unordered_map<ConnectionId, std::shared_ptr<Connection>, ConnectionIdHash> held;
    std::vector<std::shared_ptr<Connection>> released; // capacity kept >= held + released

    // One at a time, each out of the vector before it goes: a destructor may call back into
    // the shard (closed() of another connection), which then finds the vector in order.
    void dropReleased() noexcept {
        while (!released.empty()) {
            std::shared_ptr<Connection> last = std::move(released.back());
            released.pop_back();
            last.reset();
        }
    }

    Registry registry;
    const std::size_t capacity;
    std::atomic<std::size_t> reserved{0}; // inbox slots promised to callers, queued or about to be

    std::mutex mu;
    std::vector<Command> inbox; // guarded by mu
    bool stopped = false;       // guarded by mu
    std::condition_variable signal; // own-thread mode: new commands or stop
    std::function<void()> wake;

    std::atomic<std::size_t> connections{0};         // opened and not yet closed
    std::atomic<std::uint64_t> connectionErrors{0};  // Connection methods that threw

    std::vector<Command> running; // drained batch; only the shard thread touches it
    std::thread thread;           // own-thread mode

    bool reserve() noexcept {
        if (reserved.fetch_add(1, std::memory_order_acq_rel) >= capacity) {
            reserved.fetch_sub(1, std::memory_order_acq_rel);
            return false;
        }
        return true;
    }
    void unreserve() noexcept { reserved.fetch_sub(1, std::memory_order_acq_rel); }

    // Queues a command whose slot was reserved and returns true. If the shard takes no more
    // commands, or the queue cannot grow (out of memory), ends it (Stopped, Failed) instead.
    bool enqueue(Command cmd) noexcept {
        CommandStatus refused = CommandStatus::Ok;
        {
            std::lock_guard lock(mu);
            if (stopped) {
                refused = CommandStatus::Stopped;
            } else {
                try {
                    inbox.push_back(std::move(cmd));
                    signal.notify_one();
                } catch (...) {
                    refused = CommandStatus::Failed;
                }
            }
        }
        if (refused != CommandStatus::Ok) {
            unreserve();
            cmd.endWith(refused);
            return false;
        }
        if (wake) {
            try {
                wake();
            } catch (...) {
                // The transport's wake-up must not throw; the command waits for the next one.
            }
        }
        return true;
    }

    // Takes every queued command out and refuses new ones; returns them for the caller to end.
    std::vector<Command> stop() noexcept {
        std::lock_guard lock(mu);
        stopped = true;
        signal.notify_all();
        std::vector<Command> left = std::move(inbox);
        inbox = {};
        reserved.fetch_sub(left.size(), std::memory_order_acq_rel);
        return left;
    }
};

Shard::Shard(Hub &hub, std::size_t index, std::size_t inboxCapacity)
    : hub_(hub), index_(index), impl_(std::make_unique<Impl>(std::max<std::size_t>(inboxCapacity, 1))) {}

Shard::~Shard() = default;

Registry &Shard::registry() noexcept { return impl_->registry; }

template <class F> bool Shard::reach(F &&f) noexcept {
    try {
        f();
        return true;
    } catch (...) {
        impl_->connectionErrors.fetch_add(1, std::memory_order_relaxed);
        return false;
    }
}

namespace {
Event::TagLookup lookupIn(const Registry &registry, ConnectionId id) {
    return [&registry, id](std::string_view key) { return registry.tag(id, key); };
}

// The event for a connection, carrying what its endpoint includes and what the sinks read.
Event eventFor(EventAction action, const Connection &conn, const Registry &reg, const EventSpec &spec,
               const EventBus &bus) {
    Event e = Event::make(action, conn.id(), conn.endpoint(), lookupIn(reg, conn.id()), spec);
    for (const std::string &name : bus.tagsUsed()) {
        if (e.tags.count(name) || e.context.count(name)) continue;
        if (std::string_view v = reg.tag(conn.id(), name); !v.empty()) e.context.emplace(name, v);
    }
    return e;
}
} // namespace

bool Shard::open(Connection &conn, const TagList &tags, const EventSpec &spec) noexcept {
    Registry &reg = impl_->registry;
    try {
        if (!reg.add(conn, tags)) return false;
    } catch (...) {
        reg.remove(conn.id()); // whatever part of it was registered
        return false;
    }
    try {
        hub_.events().publish(index_, eventFor(EventAction::Open, conn, reg, spec, hub_.events()));
        if (ConnectionMirror *m = hub_.mirror()) m->opened(index_, conn, reg.tags(conn.id()));
    } catch (...) {
        // No open event, so no connection: the transport refuses it and no close event follows.
        reg.remove(conn.id());
        return false;
    }
    impl_->connections.fetch_add(1, std::memory_order_relaxed);
    return true;
}

bool Shard::open(std::shared_ptr<Connection> conn, const TagList &tags, const EventSpec &spec) noexcept {
    Impl &d = *impl_;
    d.dropReleased();
    if (!conn) return false;
    const ConnectionId id = conn->id();
    try {
        if (!d.held.try_emplace(id, conn).second) return false; // that id is open already
        d.released.reserve(d.held.size() + d.released.size());  // so that closed() never allocates
    } catch (...) {
        d.held.erase(id);
        return false;
    }
    if (!open(*conn, tags, spec)) {
        d.held.erase(id);
        return false;
    }
    return true;
}

bool Shard::message(const Connection &conn, Opcode type, std::string_view payload, const EventSpec &spec) noexcept {
    try {
        Event e = eventFor(EventAction::Message, conn, impl_->registry, spec, hub_.events());
        e.type = type;
        e.message.assign(payload);
        if (!spec.json.empty()) e.vars = spec.json.extract(payload);
        return hub_.events().publish(index_, std::move(e)) != 0;
    } catch (...) {
        hub_.events().countLost();
        return false;
    }
}

void Shard::closed(const Connection &conn, const EventSpec &spec) noexcept {
    Registry &reg = impl_->registry;
    impl_->dropReleased();
    if (!reg.find(conn.id())) return;
    // Released after this call (see open with a shared_ptr): `conn` may be the caller itself.
    if (auto it = impl_->held.find(conn.id()); it != impl_->held.end()) {
        impl_->released.push_back(std::move(it->second)); // capacity reserved by open
        impl_->held.erase(it);
    }
    impl_->connections.fetch_sub(1, std::memory_order_relaxed);
    // The close event carries the tags the connection had; it is published once the connection
    // has left the registry, so a consumer reacting to it no longer finds it there.
    if (ConnectionMirror *m = hub_.mirror()) m->closed(index_, conn.id());
    try {
        Event e = eventFor(EventAction::Close, conn, reg, spec, hub_.events());
        reg.remove(conn.id());
        hub_.events().publish(index_, std::move(e));
    } catch (...) {
        reg.remove(conn.id());
        hub_.events().countLost();
    }
}

std::size_t Shard::drain() noexcept {
    Impl &d = *impl_;
    d.dropReleased();
    {
        std::lock_guard lock(d.mu);
        if (d.inbox.empty()) return 0;
        std::swap(d.running, d.inbox);
    }
    std::size_t n = d.running.size();
    d.reserved.fetch_sub(n, std::memory_order_acq_rel);
    bool anyDeadline = false;
    for (const Command &cmd : d.running) anyDeadline |= cmd.deadline != kNoDeadline;
    const Deadline now = anyDeadline ? std::chrono::steady_clock::now() : Deadline();
    for (Command &cmd : d.running) {
        if (cmd.deadline != kNoDeadline && now > cmd.deadline) {
            cmd.endWith(CommandStatus::TimedOut); // its caller has given up: never run it late
            continue;
        }
        try {
            cmd.run(*this);
        } catch (...) {
            // Out of memory inside the command: this shard's part failed; its caller learns so
            // (a join's run answers only after the work, so it has not answered yet).
            cmd.endWith(CommandStatus::Failed);
        }
    }
    d.running.clear();
    return n;
}

void Shard::setWakeup(std::function<void()> wake) { impl_->wake = std::move(wake); }

bool Shard::post(std::function<void(Shard &)> fn) noexcept {
    if (!impl_->reserve()) return false;
    return impl_->enqueue(Command{std::move(fn), nullptr, kNoDeadline});
}

struct Hub::Impl {
    // Each shard publishes its events through queues of its own (EventBus producers).
    Impl(std::uint64_t firstEventId, std::size_t shardCount) : events(firstEventId, shardCount) {}

    HubOptions options;
    std::vector<std::unique_ptr<Shard>> shards;
    EventBus events;
    std::unique_ptr<ConnectionMirror> mirror; // set before start, then read-only
    std::atomic<bool> started{false};
    std::atomic<bool> commandsStopped{false};
    std::atomic<bool> stopped{false};

    // Runs run(shard, *join) on every shard; the join answers the caller exactly once. All or
    // none: an inbox slot is reserved on every shard before anything is queued.
    template <class Join, class Run>
    void postJoined(typename Join::Done done, Run run, Deadline deadline) noexcept {
        std::shared_ptr<Join> join;
        try {
            join = std::make_shared<Join>(shards.size(), std::move(done));
        } catch (...) {
            answer(done, typename Join::Result{CommandStatus::Failed, {}, 0});
            return;
        }
        std::vector<Command> commands;
        try {
            auto shared = std::make_shared<Run>(std::move(run));
            commands.reserve(shards.size());
            for (std::size_t i = 0; i < shards.size(); ++i)
                commands.push_back(Command{[join, shared](Shard &s) { (*shared)(s, *join); },
                                           [join](CommandStatus why) { join->end(why); }, deadline});
        } catch (...) {
            join->refuse(CommandStatus::Failed);
            return;
        }
        if (commandsStopped.load(std::memory_order_acquire)) {
            join->refuse(CommandStatus::Stopped);
            return;
        }
        std::size_t reservedCount = 0;
        for (; reservedCount < shards.size(); ++reservedCount) {
            if (!shards[reservedCount]->impl_->reserve()) break;
        }
        if (reservedCount < shards.size()) {
            for (std::size_t i = 0; i < reservedCount; ++i) shards[i]->impl_->unreserve();
            join->refuse(CommandStatus::Busy);
            return;
        }
        for (std::size_t i = 0; i < shards.size(); ++i) shards[i]->impl_->enqueue(std::move(commands[i]));
    }
};

Hub::Hub(HubOptions options)
    : impl_(std::make_unique<Impl>(std::max<std::uint64_t>(options.firstEventId, 1), std::max<std::size_t>(options.shards, 1))) {
    if (options.shards == 0) options.shards = 1;
    impl_->options = options;
    for (std::size_t i = 0; i < options.shards; ++i)
        impl_->shards.push_back(std::unique_ptr<Shard>(new Shard(*this, i, options.inboxCapacity)));
}

Hub::~Hub() { stop(); }

std::size_t Hub::shardCount() const noexcept { return impl_->shards.size(); }

std::size_t Hub::connectionCount() const noexcept {
    std::size_t n = 0;
    for (const auto &s : impl_->shards) n += s->impl_->connections.load(std::memory_order_relaxed);
    return n;
}

std::uint64_t Hub::connectionErrors() const noexcept {
    std::uint64_t n = 0;
    for (const auto &s : impl_->shards) n += s->impl_->connectionErrors.load(std::memory_order_relaxed);
    return n;
}

Shard &Hub::shard(std::size_t index) noexcept {
    if (index >= impl_->shards.size()) {
        std::fprintf(stderr, "wsgw::Hub::shard(%zu): the hub has %zu shards\n", index, impl_->shards.size());
        std::abort();
    }
    return *impl_->shards[index];
}

EventBus &Hub::events() noexcept { return impl_->events; }

void Hub::setMirror(std::unique_ptr<ConnectionMirror> mirror) { impl_->mirror = std::move(mirror); }

ConnectionMirror *Hub::mirror() noexcept { return impl_->mirror.get(); }

ConnectionMirror::~ConnectionMirror() = default;

bool Hub::start(std::string *error) noexcept {
    if (impl_->started.exchange(true)) return true;
    if (!impl_->events.start(error)) return false;
    if (impl_->mirror && !impl_->mirror->start(*this, error)) {
        impl_->events.stop(std::chrono::milliseconds(0));
        return false;
    }
    if (!impl_->options.ownThreads) return true;
    for (auto &s : impl_->shards) {
        Shard *shard = s.get();
        Shard::Impl &d = *shard->impl_;
        try {
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
        } catch (const std::exception &e) {
            if (error) *error = std::string("cannot start a shard thread: ") + e.what();
            stop();
            return false;
        }
    }
    return true;
}

void Hub::stopCommands() noexcept {
    impl_->commandsStopped.store(true, std::memory_order_release);
    for (auto &s : impl_->shards) {
        for (Command &cmd : s->impl_->stop()) cmd.endWith(CommandStatus::Stopped);
    }
}

std::size_t Hub::stop(std::chrono::milliseconds flushFor) noexcept {
    if (impl_->stopped.exchange(true)) return 0;
    stopCommands();
    for (auto &s : impl_->shards)
        if (s->impl_->thread.joinable()) s->impl_->thread.join();
    // The mirror gets what is left of the flush time after the event sinks.
    const auto deadline = std::chrono::steady_clock::now() + flushFor;
    std::size_t left = 0;
    try {
        left = impl_->events.stop(flushFor);
    } catch (...) {
        // EventBus::stop is not noexcept; whatever it threw, the sinks are past helping.
    }
    if (impl_->mirror)
        impl_->mirror->stop(std::max(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         deadline - std::chrono::steady_clock::now()),
                                     std::chrono::milliseconds(0)));
    return left;
}

void Hub::forEachShard(std::function<std::size_t(Shard &)> fn, CountCallback done, Deadline deadline) noexcept {
    impl_->postJoined<CountJoin>(std::move(done), [fn = std::move(fn)](Shard &s, CountJoin &join) { join.add(fn(s)); },
                                 deadline);
}

namespace {
// Runs a counting command: its per-shard work is made a std::function first, so that running
// out of memory there leaves `done` the caller's, to answer Failed.
template <class Work> void countCommand(Hub &hub, Work &&work, Hub::CountCallback &done, Deadline deadline) noexcept {
    std::function<std::size_t(Shard &)> fn;
    try {
        fn = std::forward<Work>(work);
    } catch (...) {
        answer(done, CountResult{CommandStatus::Failed, 0, 0});
        return;
    }
    hub.forEachShard(std::move(fn), std::move(done), deadline);
}
} // namespace

void Hub::send(Selector sel, MessagePtr msg, CountCallback done, Deadline deadline) noexcept {
    // One copy of the message per shard: every recipient's queue takes a reference, and a
    // reference count shared by shards on different cores would bounce its cache line between
    // them once per recipient. Shard 0 uses the caller's message; another shard makes its copy
    // on its own thread, and only once it has a recipient (an id= send copies nothing).
    countCommand(
        *this,
        [sel = std::move(sel), msg = std::move(msg)](Shard &s) {
            MessagePtr copy;
            const MessagePtr &mine = s.index() == 0 ? msg : copy;
            std::size_t queued = 0;
            s.registry().match(sel, [&](Connection &c) {
                if (!mine) copy = Message::create(msg->opcode(), msg->payload(), msg->headroom());
                s.reach([&] { queued += c.send(mine) == SendStatus::Queued; });
            });
            return queued;
        },
        done, deadline);
}

namespace {

// Applies `changes` to one connection and tells the mirror, if there is one.
void changeTags(Shard &s, Connection &c, const TagList &changes) {
    s.registry().setTags(c.id(), changes);
    if (ConnectionMirror *m = s.hub().mirror()) m->changed(s.index(), c.id(), s.registry().tags(c.id()));
}

// How many tags the connection would have after `changes`.
std::size_t tagCountAfter(const Registry &reg, ConnectionId id, const TagList &changes) {
    // Later entries for the same key win, as in Registry::setTags.
    std::vector<std::pair<std::string_view, bool>> last; // key -> sets (true) or deletes
    for (const auto &change : changes) {
        const std::string &key = change.first;
        const bool sets = !change.second.empty();
        auto it = std::find_if(last.begin(), last.end(), [&key](const auto &p) { return p.first == key; });
        if (it == last.end())
            last.emplace_back(key, sets);
        else
            it->second = sets;
    }
    std::size_t n = reg.tagCount(id);
    for (const auto &[k, sets] : last) {
        bool has = !reg.tag(id, k).empty();
        if (sets && !has) ++n;
        if (!sets && has) --n;
    }
    return n;
}

} // namespace

void Hub::setTags(Selector sel, TagList changes, CountCallback done, Deadline deadline) noexcept {
    countCommand(
        *this,
        [sel = std::move(sel), changes = std::move(changes)](Shard &s) {
            return s.registry().match(sel, [&](Connection &c) { changeTags(s, c, changes); });
        },
        done, deadline);
}

void Hub::setTags(Selector sel, TagList changes, std::size_t maxTags, std::function<void(SetTagsResult)> done,
                  Deadline deadline) noexcept {
    using Join = GatherJoin<TagChangeCount>;
    impl_->postJoined<Join>(
            std::move(done),
            [sel = std::move(sel), changes = std::move(changes), maxTags](Shard &s, Join &join) {
                Registry &reg = s.registry();
                TagChangeCount mine;
                reg.match(sel, [&](Connection &c) {
                    if (maxTags > 0 && tagCountAfter(reg, c.id(), changes) > maxTags) {
                        ++mine.over;
                        return;
                    }
                    changeTags(s, c, changes); // registry and mirror only: no call into the transport
                    ++mine.changed;
                });
                join.add([&](TagChangeCount &all) {
                    all.changed += mine.changed;
                    all.over += mine.over;
                });
            },
            deadline);
}

void Hub::close(Selector sel, std::uint16_t code, std::string reason, MessagePtr last, CountCallback done,
                Deadline deadline) noexcept {
    reason.resize(cutCloseReason(reason).size()); // a prefix: shrinking never allocates
    countCommand(
        *this,
        [sel = std::move(sel), code, reason = std::move(reason), last = std::move(last)](Shard &s) {
            std::size_t closed = 0;
            s.registry().match(sel, [&](Connection &c) {
                closed += s.reach([&] {
                    if (last) (void)c.send(last);
                    c.close(code, reason);
                });
            });
            return closed;
        },
        done, deadline);
}

void Hub::status(Selector sel, std::function<void(StatusResult)> done, Deadline deadline) noexcept {
    status(std::move(sel), StatusPage{}, std::move(done), deadline);
}

void Hub::count(Selector sel, CountCallback done, Deadline deadline) noexcept {
    countCommand(
        *this, [sel = std::move(sel)](Shard &s) { return s.registry().count(sel); }, done, deadline);
}

void Hub::status(Selector sel, StatusPage page, std::function<void(StatusResult)> done, Deadline deadline) noexcept {
    using Join = GatherJoin<std::vector<ConnectionInfo>>;
    try {
        auto sorted = [done, limit = page.limit](StatusResult r) {
            std::sort(r.value.begin(), r.value.end(), [](const auto &a, const auto &b) { return a.id < b.id; });
            if (limit > 0 && r.value.size() > limit) r.value.resize(limit);
            done(std::move(r));
        };
        impl_->postJoined<Join>(
            std::move(sorted),
            [sel = std::move(sel), page](Shard &s, Join &join) {
                std::vector<ConnectionInfo> mine;
                Registry &reg = s.registry();
                auto describe = [&](Connection &c) {
                    std::string endpoint, address;
                    if (!s.reach([&] {
                            endpoint = std::string(c.endpoint());
                            address = c.remoteAddress();
                        }))
                        return; // the transport could not describe it: left out of the list
                    mine.push_back(ConnectionInfo{c.id(), std::move(endpoint), std::move(address), reg.tags(c.id()),
                                                  s.index()});
                };
                if (!page.after && page.limit == 0) {
                    reg.match(sel, describe);
                } else {
                    // This shard's part of the page: its first `limit` ids above `after`.
                    std::vector<ConnectionId> ids;
                    reg.match(sel, [&](Connection &c) {
                        if (!page.after || *page.after < c.id()) ids.push_back(c.id());
                    });
                    if (page.limit > 0 && ids.size() > page.limit) {
                        std::nth_element(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(page.limit), ids.end());
                        ids.resize(page.limit);
                    }
                    for (const ConnectionId &id : ids)
                        if (Connection *c = reg.find(id)) describe(*c);
                }
                join.add([&](std::vector<ConnectionInfo> &all) {
                    all.insert(all.end(), std::make_move_iterator(mine.begin()), std::make_move_iterator(mine.end()));
                });
            },
            deadline);
    } catch (...) {
        answer(done, StatusResult{CommandStatus::Failed, {}, 0});
    }
}

void Hub::tree(std::function<void(TreeResult)> done, Deadline deadline) noexcept {
    using Join = GatherJoin<TagTree>;
    impl_->postJoined<Join>(
            std::move(done),
            [](Shard &s, Join &join) {
                TagTree mine = s.registry().tree();
                join.add([&](TagTree &all) {
                    for (auto &[key, values] : mine)
                        for (auto &[value, count] : values) all[key][value] += count;
                });
            },
            deadline);
}

namespace {
// A future for a callback-taking command. Out of memory here ends the process (noexcept).
template <class T, class Start> std::future<T> futureOf(Start &&start) noexcept {
    auto promise = std::make_shared<std::promise<T>>();
    auto future = promise->get_future();
    start([promise](T r) { promise->set_value(std::move(r)); });
    return future;
}
} // namespace

std::future<CountResult> Hub::send(Selector sel, MessagePtr msg, Deadline deadline) noexcept {
    return futureOf<CountResult>(
        [&](auto done) { send(std::move(sel), std::move(msg), std::move(done), deadline); });
}

std::future<CountResult> Hub::setTags(Selector sel, TagList changes, Deadline deadline) noexcept {
    return futureOf<CountResult>(
        [&](auto done) { setTags(std::move(sel), std::move(changes), CountCallback(std::move(done)), deadline); });
}

std::future<SetTagsResult> Hub::setTags(Selector sel, TagList changes, std::size_t maxTags, Deadline deadline) noexcept {
    return futureOf<SetTagsResult>([&](auto done) {
        setTags(std::move(sel), std::move(changes), maxTags, std::function<void(SetTagsResult)>(std::move(done)),
                deadline);
    });
}

std::future<CountResult> Hub::close(Selector sel, std::uint16_t code, std::string reason, MessagePtr last,
                                    Deadline deadline) noexcept {
    return futureOf<CountResult>([&](auto done) {
        close(std::move(sel), code, std::move(reason), std::move(last), std::move(done), deadline);
    });
}

std::future<StatusResult> Hub::status(Selector sel, Deadline deadline) noexcept {
    return futureOf<StatusResult>([&](auto done) { status(std::move(sel), std::move(done), deadline); });
}

std::future<StatusResult> Hub::status(Selector sel, StatusPage page, Deadline deadline) noexcept {
    return futureOf<StatusResult>([&](auto done) { status(std::move(sel), page, std::move(done), deadline); });
}

std::future<CountResult> Hub::count(Selector sel, Deadline deadline) noexcept {
    return futureOf<CountResult>([&](auto done) { count(std::move(sel), std::move(done), deadline); });
}

std::future<TreeResult> Hub::tree(Deadline deadline) noexcept {
    return futureOf<TreeResult>([&](auto done) { tree(std::move(done), deadline); });
}

} // namespace wsgw
