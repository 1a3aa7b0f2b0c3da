#include "fake_connection.h"

#include <wsgw/hub.h>

#include <doctest/doctest.h>

#include <atomic>
#include <csignal>
#include <chrono>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

using namespace wsgw;
using namespace std::chrono_literals;
using wsgw::test::FakeConnection;

namespace {

Selector sel(std::string_view query) {
    auto s = Selector::parse(query);
    REQUIRE(s);
    return *s;
}

// Runs fn on a shard's thread and waits for it.
void onShard(Shard &shard, std::function<void(Shard &)> fn) {
    std::promise<void> done;
    REQUIRE(shard.post([&](Shard &s) {
        fn(s);
        done.set_value();
    }));
    done.get_future().wait();
}

// Counts deliveries with atomics so the test thread can read them while shards write.
class CountingConnection final : public Connection {
public:
    CountingConnection() : Connection(ConnectionId::random()) {}
    SendStatus send(const MessagePtr &) override {
        if (closed.load()) return SendStatus::Closed;
        received.fetch_add(1);
        return SendStatus::Queued;
    }
    void close(std::uint16_t, std::string_view) override { closed.store(true); }
    std::string remoteAddress() const override { return "127.0.0.1:1"; }
    std::string_view endpoint() const override { return "/c"; }
    std::atomic<int> received{0};
    std::atomic<bool> closed{false};
};

const EventSpec kNoEvents{};

// Keeps every event it is given (under `mu`).
struct CaptureSink final : EventSink {
    CaptureSink(std::mutex &m, std::vector<EventPtr> &o) : mu(m), out(o) {}
    std::string name() const override { return "capture"; }
    std::size_t publish(const std::vector<EventPtr> &batch) override {
        std::lock_guard lock(mu);
        out.insert(out.end(), batch.begin(), batch.end());
        return batch.size();
    }
    std::mutex &mu;
    std::vector<EventPtr> &out;
};

} // namespace

TEST_CASE("commands reach every shard; counts are exact sums") {
    std::vector<std::unique_ptr<FakeConnection>> conns; // outlives the hub
    Hub hub({.shards = 4, .inboxCapacity = 64, .ownThreads = true});
    REQUIRE(hub.start());
    for (std::size_t i = 0; i < 40; ++i) conns.push_back(std::make_unique<FakeConnection>());
    // 10 connections per shard: group g<i%2>, admin on every 5th.
    for (std::size_t i = 0; i < conns.size(); ++i) {
        TagList tags{{"group", "g" + std::to_string(i % 2)}};
        if (i % 5 == 0) tags.emplace_back("admin", "1");
        onShard(hub.shard(i % 4), [&](Shard &s) { REQUIRE(s.open(*conns[i], tags, kNoEvents)); });
    }

    CHECK(hub.send(sel("group=g0"), Message::text("hi")).get().value == 20);
    CHECK(hub.send(sel("group=g0&admin=1"), Message::text("boss")).get().value == 4);
    CHECK(hub.send(sel("group=none"), Message::text("x")).get().value == 0);
    CHECK(hub.send(sel(""), Message::text("x")).get().value == 0);
    CHECK(hub.send(Selector::all(), Message::text("all")).get().value == 40);

    auto st = hub.status(Selector::all()).get();
    REQUIRE(st.ok());
    REQUIRE(st.value.size() == 40);
    for (std::size_t i = 1; i < st.value.size(); ++i) CHECK(st.value[i - 1].id < st.value[i].id);
    std::set<std::size_t> shards;
    for (auto &c : st.value) shards.insert(c.shard);
    CHECK(shards.size() == 4);

    auto tree = hub.tree().get();
    REQUIRE(tree.ok());
    CHECK(tree.value == TagTree{{"admin", {{"1", 8}}}, {"group", {{"g0", 20}, {"g1", 20}}}});

    CHECK(hub.setTags(sel("group=g1"), {{"group", "g0"}, {"new", "yes"}}).get().value == 20);
    CHECK(hub.send(sel("group=g0"), Message::text("after")).get().value == 40);
    CHECK(hub.setTags(sel("new=yes"), {{"new", ""}}).get().value == 20);
    CHECK(hub.tree().get().value.count("new") == 0);

    // id selectors across shards
    std::string q = "id=" + conns[1]->id().toString() + "," + conns[2]->id().toString();
    CHECK(hub.send(sel(q), Message::binary("b")).get().value == 2);
    auto some = hub.status(sel(q)).get();
    CHECK(some.value.size() == 2);

    CHECK(hub.close(sel("admin=1"), 1000, "Closed by server", Message::text("bye")).get().value == 8);
    hub.stop();

    // Per-connection results: everyone got "hi"/"all"/"after" etc. exactly once each.
    for (std::size_t i = 0; i < conns.size(); ++i) {
        std::multiset<std::string> got;
        for (auto &m : conns[i]->received) got.insert(std::string(m->payload()));
        CHECK(got.count("all") == 1);
        CHECK(got.count("after") == 1);
        CHECK(got.count("hi") == (i % 2 == 0 ? 1u : 0u));
        CHECK(got.count("boss") == (i % 2 == 0 && i % 5 == 0 ? 1u : 0u));
        if (i % 5 == 0) {
            CHECK(conns[i]->closeCode == 1000);
            CHECK(conns[i]->closeReason == "Closed by server");
            CHECK(conns[i]->received.back()->payload() == "bye");
        } else {
            CHECK(conns[i]->closeCode == 0);
        }
    }
    CHECK(conns[1]->received.back()->opcode() == Opcode::Binary);
}

TEST_CASE("a broadcast shares one buffer per shard: the recipients of a shard hold the same message") {
    std::vector<std::unique_ptr<FakeConnection>> conns; // outlives the hub
    Hub hub({.shards = 3, .inboxCapacity = 64, .ownThreads = true});
    REQUIRE(hub.start());
    for (std::size_t i = 0; i < 12; ++i) {
        conns.push_back(std::make_unique<FakeConnection>());
        onShard(hub.shard(i % 3), [&](Shard &s) { REQUIRE(s.open(*conns[i], {{"g", "1"}}, kNoEvents)); });
    }
    MessagePtr msg = Message::binary(std::string(300, 'x') + "end", 16);
    REQUIRE(hub.send(Selector::all(), msg).get().value == 12);
    hub.stop();

    std::set<const Message *> buffers;
    for (std::size_t i = 0; i < conns.size(); ++i) {
        REQUIRE(conns[i]->received.size() == 1);
        const MessagePtr &got = conns[i]->received[0];
        CHECK(got.get() == conns[i % 3]->received[0].get()); // one buffer per shard
        CHECK(got->payload() == msg->payload());
        CHECK(got->opcode() == Opcode::Binary);
        CHECK(got->frame() == msg->frame());
        CHECK(got->headroom() >= 16); // a transport's room in front survives the copy
        buffers.insert(got.get());
    }
    CHECK(buffers.size() == 3);
    CHECK(buffers.count(msg.get()) == 1); // the caller's buffer serves one shard
}

TEST_CASE("broadcasts from several threads reach each match exactly once while connections churn") {
    constexpr std::size_t kShards = 3, kStable = 300, kBroadcasts = 200;
    std::vector<std::unique_ptr<CountingConnection>> stable; // outlives the hub
    Hub hub({.shards = kShards, .inboxCapacity = 1024, .ownThreads = true});
    REQUIRE(hub.start());
    for (std::size_t i = 0; i < kStable; ++i) {
        stable.push_back(std::make_unique<CountingConnection>());
        onShard(hub.shard(i % kShards), [&](Shard &s) { REQUIRE(s.open(*stable[i], {{"group", "all"}}, kNoEvents)); });
    }

    // Churn: connections in the same group open and close on the shard threads while broadcasts
    // run; a connection closed mid-broadcast must be skipped safely (never touched after close).
    std::atomic<bool> stop{false};
    std::thread churn([&] {
        std::size_t round = 0;
        while (!stop.load() && round < 100000) {
            Shard &s = hub.shard(round++ % kShards);
            auto c = std::make_shared<CountingConnection>();
            bool posted = s.post([c](Shard &sh) {
                REQUIRE(sh.open(*c, {{"group", "all"}}, kNoEvents));
            });
            if (!posted) continue;
            // Close it a little later, from the shard thread, and free it right there.
            while (!s.post([c](Shard &sh) { sh.closed(*c, kNoEvents); })) std::this_thread::yield();
        }
    });

    std::atomic<std::size_t> busy{0};
    std::vector<std::thread> senders;
    for (int t = 0; t < 2; ++t) {
        senders.emplace_back([&] {
            for (std::size_t i = 0; i < kBroadcasts / 2; ++i) {
                for (;;) {
                    auto r = hub.send(sel("group=all"), Message::text("x")).get();
                    if (r.status == CommandStatus::Busy) {
                        busy.fetch_add(1);
                        std::this_thread::yield();
                        continue;
                    }
                    REQUIRE(r.ok());
                    REQUIRE(r.value >= kStable);
                    break;
                }
            }
        });
    }
    for (auto &t : senders) t.join();
    stop.store(true);
    churn.join();
    // Let every queued close run (an inbox is FIFO): stop() discards what is still queued, and a
    // connection must not go while registered.
    for (std::size_t i = 0; i < kShards; ++i) onShard(hub.shard(i), [](Shard &) {});
    hub.stop();
    for (auto &c : stable) CHECK(c->received.load() == static_cast<int>(kBroadcasts));
}

TEST_CASE("a full inbox refuses the command everywhere with Busy") {
    // External threads: nobody drains until we say so.
    FakeConnection a; // outlives the hub
    Hub hub({.shards = 2, .inboxCapacity = 2, .ownThreads = false});
    std::atomic<int> wakes{0};
    for (std::size_t i = 0; i < 2; ++i) hub.shard(i).setWakeup([&] { wakes.fetch_add(1); });
    REQUIRE(hub.start());
    REQUIRE(hub.shard(0).post([&](Shard &s) { REQUIRE(s.open(a, {{"g", "1"}}, kNoEvents)); }));
    std::vector<CountResult> results;
    auto record = [&](CountResult r) { results.push_back(r); };
    hub.send(sel("g=1"), Message::text("1"), record); // shard0: 2/2, shard1: 1/2
    hub.send(sel("g=1"), Message::text("2"), record); // shard0 full: Busy, shard1 untouched
    REQUIRE(results.size() == 1);
    CHECK(results[0].status == CommandStatus::Busy);
    CHECK(wakes.load() == 3);
    CHECK(hub.shard(0).drain() == 2);
    CHECK(hub.shard(1).drain() == 1);
    REQUIRE(results.size() == 2);
    CHECK(results[1].ok());
    CHECK(results[1].value == 1);
    CHECK(a.received.size() == 1);
    // Room again after draining.
    hub.send(sel("g=1"), Message::text("3"), record);
    CHECK(hub.shard(0).drain() == 1);
    CHECK(hub.shard(1).drain() == 1);
    REQUIRE(results.size() == 3);
    CHECK(results[2].value == 1);
}

TEST_CASE("stopping the hub ends queued commands with Stopped") {
    Hub hub({.shards = 2, .inboxCapacity = 16, .ownThreads = false});
    for (std::size_t i = 0; i < 2; ++i) hub.shard(i).setWakeup([] {});
    REQUIRE(hub.start());
    auto pending = hub.send(Selector::all(), Message::text("x"));
    CHECK(hub.shard(0).drain() == 1); // one shard answered, the other never will
    hub.stop();
    auto r = pending.get();
    CHECK(r.status == CommandStatus::Stopped);
    CHECK(hub.send(Selector::all(), Message::text("late")).get().status == CommandStatus::Stopped);
    CHECK_FALSE(hub.shard(0).post([](Shard &) {}));
}

TEST_CASE("forEachShard runs on each shard's own thread") {
    Hub hub({.shards = 3, .inboxCapacity = 8, .ownThreads = true});
    REQUIRE(hub.start());
    std::mutex mu;
    std::set<std::thread::id> threads;
    auto r = std::promise<CountResult>();
    hub.forEachShard(
        [&](Shard &s) {
            std::lock_guard lock(mu);
            threads.insert(std::this_thread::get_id());
            return s.index() + 1;
        },
        [&](CountResult res) { r.set_value(res); });
    CHECK(r.get_future().get().value == 6);
    CHECK(threads.size() == 3);
    CHECK(threads.count(std::this_thread::get_id()) == 0);
}

TEST_CASE("open, message and close events carry the included tags and vars") {
    FakeConnection c("/connect/v2"); // outlives the hub
    Hub hub({.shards = 1, .ownThreads = true});
    std::mutex mu;
    std::vector<EventPtr> events;
    hub.events().addSink(std::make_unique<CaptureSink>(mu, events));
    REQUIRE(hub.start());

    EventSpec spec;
    spec.includeTags = {"group", "absent"};
    spec.contextTags = {"tenant"};
    spec.json = *JsonExtractor::create({{"cmd", "data.command"}});
    onShard(hub.shard(0), [&](Shard &s) {
        REQUIRE(s.open(c, {{"group", "g"}, {"tenant", "t"}, {"secret", "s"}}, spec));
        s.message(c, Opcode::Text, R"({"data":{"command":"join"}})", spec);
        s.message(c, Opcode::Binary, std::string_view("\x00\xff", 2), spec);
        s.registry().setTags(c.id(), {{"group", "h"}});
        s.closed(c, spec);
        CHECK(s.registry().find(c.id()) == nullptr);
        s.closed(c, spec); // twice: no second event
    });
    hub.stop(2000ms);
    REQUIRE(events.size() == 4);
    CHECK(events[0]->action == EventAction::Open);
    CHECK(events[0]->tags == Tags{{"group", "g"}});
    CHECK(events[0]->context == Tags{{"tenant", "t"}});
    CHECK(events[0]->endpoint == "/connect/v2");
    CHECK(events[1]->action == EventAction::Message);
    CHECK(events[1]->type == Opcode::Text);
    CHECK(events[1]->vars == Vars{{"cmd", "join"}});
    CHECK(events[2]->type == Opcode::Binary);
    CHECK(events[2]->message == std::string("\x00\xff", 2));
    CHECK(events[3]->action == EventAction::Close);
    CHECK(events[3]->tags == Tags{{"group", "h"}}); // the tags it had when it left
    for (std::size_t i = 0; i < 4; ++i) {
        CHECK(events[i]->id == i + 1);
        CHECK(events[i]->connection == c.id());
    }
}

TEST_CASE("a command that throws on a shard answers its caller once, with Failed and what the others did") {
    Hub hub({.shards = 2, .inboxCapacity = 8, .ownThreads = false});
    for (std::size_t i = 0; i < 2; ++i) hub.shard(i).setWakeup([] {});
    REQUIRE(hub.start());
    std::vector<CountResult> answers;
    hub.forEachShard(
        [](Shard &s) -> std::size_t {
            if (s.index() == 1) throw std::bad_alloc();
            return 5;
        },
        [&](CountResult r) { answers.push_back(r); });
    CHECK(hub.shard(0).drain() == 1);
    CHECK(answers.empty()); // shard 1 has not answered yet
    CHECK(hub.shard(1).drain() == 1);
    REQUIRE(answers.size() == 1);
    CHECK(answers[0].status == CommandStatus::Failed);
    CHECK(answers[0].value == 5);
    CHECK(answers[0].shards == 1);

    // A `done` that throws is the caller's bug; the shard goes on and nothing is answered twice.
    int calls = 0;
    hub.forEachShard([](Shard &) { return std::size_t{1}; },
                     [&](CountResult) {
                         ++calls;
                         throw std::runtime_error("done must not throw");
                     });
    CHECK(hub.shard(0).drain() == 1);
    CHECK(hub.shard(1).drain() == 1);
    CHECK(calls == 1);

    // A plain post that throws is dropped; the shard keeps running later commands.
    REQUIRE(hub.shard(0).post([](Shard &) { throw std::runtime_error("x"); }));
    bool ran = false;
    REQUIRE(hub.shard(0).post([&](Shard &) { ran = true; }));
    CHECK(hub.shard(0).drain() == 2);
    CHECK(ran);
}

TEST_CASE("a command past its deadline is not run late: TimedOut with what the prompt shards did") {
    FakeConnection a, b; // outlives the hub
    Hub hub({.shards = 2, .inboxCapacity = 8, .ownThreads = false});
    for (std::size_t i = 0; i < 2; ++i) hub.shard(i).setWakeup([] {});
    REQUIRE(hub.start());
    REQUIRE(hub.shard(0).post([&](Shard &s) { REQUIRE(s.open(a, {{"g", "1"}}, kNoEvents)); }));
    REQUIRE(hub.shard(1).post([&](Shard &s) { REQUIRE(s.open(b, {{"g", "1"}}, kNoEvents)); }));
    CHECK(hub.shard(0).drain() == 1);
    CHECK(hub.shard(1).drain() == 1);

    auto pending = hub.send(sel("g=1"), Message::text("late?"), std::chrono::steady_clock::now() + 50ms);
    CHECK(hub.shard(0).drain() == 1); // in time
    std::this_thread::sleep_for(80ms);
    CHECK(hub.shard(1).drain() == 1); // too late: skipped
    auto r = pending.get();
    CHECK(r.status == CommandStatus::TimedOut);
    CHECK(r.value == 1);
    CHECK(r.shards == 1);
    CHECK(a.received.size() == 1);
    CHECK(b.received.empty());

    // Without a deadline, the same delay is fine.
    auto relaxed = hub.send(sel("g=1"), Message::text("whenever"));
    std::this_thread::sleep_for(20ms);
    CHECK(hub.shard(0).drain() == 1);
    CHECK(hub.shard(1).drain() == 1);
    CHECK(relaxed.get().value == 2);
}

TEST_CASE("stopCommands answers every waiting caller at once, refuses new commands, and events still flow") {
    std::mutex mu;
    std::vector<EventPtr> events;
    FakeConnection c; // outlives the hub
    Hub hub({.shards = 2, .inboxCapacity = 8, .ownThreads = false});
    hub.events().addSink(std::make_unique<CaptureSink>(mu, events));
    for (std::size_t i = 0; i < 2; ++i) hub.shard(i).setWakeup([] {});
    REQUIRE(hub.start());
    auto queued = hub.status(Selector::all()); // no shard ever drains it
    auto t0 = std::chrono::steady_clock::now();
    hub.stopCommands();
    REQUIRE(queued.wait_for(1s) == std::future_status::ready);
    CHECK(queued.get().status == CommandStatus::Stopped);
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);
    CHECK(hub.send(Selector::all(), Message::text("x")).get().status == CommandStatus::Stopped);
    CHECK_FALSE(hub.shard(0).post([](Shard &) {}));
    CHECK(hub.shard(0).drain() == 0);

    // A transport still reports connections going away after its commands stopped.
    REQUIRE(hub.shard(0).open(c, {{"g", "1"}}, kNoEvents));
    hub.shard(0).closed(c, kNoEvents);
    hub.stop(2000ms);
    REQUIRE(events.size() == 2);
    CHECK(events[1]->action == EventAction::Close);
}

TEST_CASE("a bounded setTags checks and changes each connection in one step") {
    FakeConnection small, full, dup; // outlives the hub
    Hub hub({.shards = 2, .inboxCapacity = 16, .ownThreads = true});
    REQUIRE(hub.start());
    onShard(hub.shard(0), [&](Shard &s) { REQUIRE(s.open(small, {{"g", "1"}}, kNoEvents)); });
    onShard(hub.shard(1), [&](Shard &s) { REQUIRE(s.open(full, {{"g", "1"}, {"a", "1"}, {"b", "1"}}, kNoEvents)); });
    onShard(hub.shard(1), [&](Shard &s) { REQUIRE(s.open(dup, {{"g", "1"}, {"x", "1"}, {"y", "1"}}, kNoEvents)); });

    // Limit 3: `small` goes to 2 tags; `full` would have 4 and keeps its 3; `dup` already has
    // x, and deleting y makes room for z.
    auto r = hub.setTags(sel("g=1"), {{"x", "2"}, {"z", "1"}, {"y", ""}}, 3).get();
    REQUIRE(r.ok());
    CHECK(r.value.changed == 2);
    CHECK(r.value.over == 1);
    CHECK(r.shards == 2);
    auto st = hub.status(Selector::all()).get().value;
    std::map<ConnectionId, Tags> tags;
    for (auto &c : st) tags[c.id] = c.tags;
    CHECK(tags[small.id()] == Tags{{"g", "1"}, {"x", "2"}, {"z", "1"}});
    CHECK(tags[full.id()] == Tags{{"g", "1"}, {"a", "1"}, {"b", "1"}});
    CHECK(tags[dup.id()] == Tags{{"g", "1"}, {"x", "2"}, {"z", "1"}});

    // The same key twice: the last entry wins, in the count as in the change.
    auto twice = hub.setTags(sel("id=" + small.id().toString()), {{"n", "1"}, {"n", ""}}, 3).get();
    CHECK(twice.value.changed == 1);
    CHECK(twice.value.over == 0);
    hub.stop();
}

TEST_CASE("a mirror hears every open, tag change and close on the shard threads, and starts and stops with the hub") {
    struct Recording final : ConnectionMirror {
        std::mutex mu;
        std::vector<std::string> log;
        bool started = false, stopped = false;
        std::string name() const override { return "recording"; }
        void opened(std::size_t shard, const Connection &c, const Tags &tags) noexcept override {
            std::lock_guard lock(mu);
            log.push_back("open " + std::to_string(shard) + " " + c.id().toString() + " " + encodeForm(tags));
        }
        void changed(std::size_t shard, ConnectionId id, const Tags &tags) noexcept override {
            std::lock_guard lock(mu);
            log.push_back("change " + std::to_string(shard) + " " + id.toString() + " " + encodeForm(tags));
        }
        void closed(std::size_t shard, ConnectionId id) noexcept override {
            std::lock_guard lock(mu);
            log.push_back("close " + std::to_string(shard) + " " + id.toString());
        }
        bool start(Hub &, std::string *) noexcept override { return started = true; }
        void stop(std::chrono::milliseconds) noexcept override { stopped = true; }
        MirrorStats stats() const override { return {}; }
    };
    auto owned = std::make_unique<Recording>();
    Recording &m = *owned;
    FakeConnection c; // outlives the hub
    Hub hub({.shards = 2, .ownThreads = true});
    hub.setMirror(std::move(owned));
    REQUIRE(hub.start());
    CHECK(m.started);
    onShard(hub.shard(1), [&](Shard &s) { REQUIRE(s.open(c, {{"g", "1"}}, kNoEvents)); });
    CHECK(hub.setTags(sel("g=1"), {{"x", "2"}, {"g", ""}}).get().value == 1);
    onShard(hub.shard(1), [&](Shard &s) { s.closed(c, kNoEvents); });
    hub.stop();
    CHECK(m.stopped);
    const std::string id = c.id().toString();
    CHECK(m.log == std::vector<std::string>{"open 1 " + id + " g=1", "change 1 " + id + " x=2", "close 1 " + id});
}

TEST_CASE("the tags a sink's templates read reach every event's context, whatever the endpoint includes") {
    struct Reads final : EventSink {
        std::mutex mu;
        std::vector<EventPtr> got;
        std::string name() const override { return "reads"; }
        std::vector<std::string> tagsUsed() const override { return {"room", "group"}; }
        std::size_t publish(const std::vector<EventPtr> &batch) override {
            std::lock_guard lock(mu);
            got.insert(got.end(), batch.begin(), batch.end());
            return batch.size();
        }
    };
    auto owned = std::make_unique<Reads>();
    Reads &sink = *owned;
    FakeConnection c; // outlives the hub
    Hub hub({.shards = 1, .ownThreads = true});
    hub.events().addSink(std::move(owned));
    REQUIRE(hub.start());
    CHECK(hub.events().tagsUsed() == std::vector<std::string>{"room", "group"});
    EventSpec spec;
    spec.includeTags = {"group"};
    onShard(hub.shard(0), [&](Shard &s) {
        REQUIRE(s.open(c, {{"group", "g"}, {"room", "r1"}, {"other", "x"}}, spec));
        s.message(c, Opcode::Text, "hi", spec);
        s.closed(c, spec);
    });
    hub.stop(2000ms);
    REQUIRE(sink.got.size() == 3);
    for (const EventPtr &e : sink.got) {
        CHECK(e->tags == Tags{{"group", "g"}});  // included: written out
        CHECK(e->context == Tags{{"room", "r1"}}); // read by the sink's template only
        REQUIRE(e->findTag("room"));
        CHECK(*e->findTag("room") == "r1");
    }
}

namespace {
// A transport with a bug: its send or close throws (as Boost.Beast's close does for a reason
// over 123 bytes).
class ThrowingConnection final : public Connection {
public:
    ThrowingConnection(bool onSend, bool onClose) : Connection(ConnectionId::random()), onSend_(onSend), onClose_(onClose) {}
    SendStatus send(const MessagePtr &) override {
        if (onSend_) throw std::runtime_error("send");
        return SendStatus::Queued;
    }
    void close(std::uint16_t, std::string_view) override {
        if (onClose_) throw std::length_error("close reason too long");
    }
    std::string remoteAddress() const override { throw std::runtime_error("address"); }
    std::string_view endpoint() const override { return "/c"; }

private:
    bool onSend_, onClose_;
};
} // namespace

TEST_CASE("a Connection method that throws skips that recipient only; the command answers exactly once") {
    std::vector<std::unique_ptr<Connection>> conns; // outlives the hub
    Hub hub({.shards = 2, .inboxCapacity = 8, .ownThreads = true});
    REQUIRE(hub.start());
    // On each shard: a throwing connection first and last, a good one between.
    std::vector<FakeConnection *> good;
    for (std::size_t i = 0; i < 2; ++i) {
        onShard(hub.shard(i), [&](Shard &s) {
            auto bad1 = std::make_unique<ThrowingConnection>(true, true);
            auto ok = std::make_unique<FakeConnection>("/c");
            auto bad2 = std::make_unique<ThrowingConnection>(false, true);
            REQUIRE(s.open(*bad1, {{"g", "x"}}, kNoEvents));
            REQUIRE(s.open(*ok, {{"g", "x"}}, kNoEvents));
            REQUIRE(s.open(*bad2, {{"g", "x"}}, kNoEvents));
            good.push_back(ok.get());
            conns.push_back(std::move(bad1));
            conns.push_back(std::move(ok));
            conns.push_back(std::move(bad2));
        });
    }
    CHECK(hub.connectionCount() == 6);

    // Future form: the promise is kept, with Ok and the recipients that were reached.
    auto sent = hub.send(sel("g=x"), Message::text("hi")).get();
    CHECK(sent.status == CommandStatus::Ok);
    CHECK(sent.value == 4); // the good ones and bad2 (whose send works)
    CHECK(sent.shards == 2);
    CHECK(hub.connectionErrors() == 2);

    auto listed = hub.status(sel("g=x")).get();
    CHECK(listed.status == CommandStatus::Ok);
    CHECK(listed.value.size() == 2); // the throwing ones cannot say their address
    CHECK(hub.connectionErrors() == 6);

    // Callback form: done runs once, every good connection is closed.
    std::atomic<int> calls{0};
    std::promise<CountResult> closed;
    hub.close(sel("g=x"), close_code::kNormal, "bye", {}, [&](CountResult r) {
        if (calls.fetch_add(1) == 0) closed.set_value(r);
    });
    CountResult r = closed.get_future().get();
    CHECK(r.status == CommandStatus::Ok);
    CHECK(r.value == 2);
    for (std::size_t i = 0; i < 2; ++i) {
        onShard(hub.shard(i), [&](Shard &) { CHECK(good[i]->closeCode == close_code::kNormal); });
    }
    CHECK(hub.connectionErrors() == 10);
    for (std::size_t i = 0; i < 2; ++i) {
        onShard(hub.shard(i), [&](Shard &s) {
            for (std::size_t k = 0; k < 3; ++k) s.closed(*conns[3 * i + k], kNoEvents);
        });
    }
    CHECK(hub.connectionCount() == 0);
    hub.stop();
    CHECK(calls.load() == 1);
}

TEST_CASE("the hub counts open connections over all shards") {
    FakeConnection a, b, c; // outlives the hub
    Hub hub({.shards = 2, .inboxCapacity = 8, .ownThreads = false});
    for (std::size_t i = 0; i < 2; ++i) hub.shard(i).setWakeup([] {});
    REQUIRE(hub.start());
    CHECK(hub.connectionCount() == 0);
    REQUIRE(hub.shard(0).open(a, {}, kNoEvents));
    REQUIRE(hub.shard(1).open(b, {}, kNoEvents));
    REQUIRE(hub.shard(1).open(c, {}, kNoEvents));
    CHECK_FALSE(hub.shard(1).open(c, {}, kNoEvents)); // already registered: not counted twice
    CHECK(hub.connectionCount() == 3);
    hub.shard(1).closed(b, kNoEvents);
    hub.shard(1).closed(b, kNoEvents); // unknown now: no-op
    CHECK(hub.connectionCount() == 2);
    hub.shard(0).closed(a, kNoEvents);
    hub.shard(1).closed(c, kNoEvents);
    CHECK(hub.connectionCount() == 0);
}

TEST_CASE("close reasons: cut at 123 bytes on a UTF-8 boundary, by the hub") {
    CHECK(kMaxCloseReasonBytes == 123);
    CHECK(cutCloseReason("bye") == "bye");
    std::string exact(123, 'a');
    CHECK(cutCloseReason(exact) == exact);
    CHECK(cutCloseReason(exact + "b") == exact);
    // A 2-, 3- and 4-byte character straddling byte 123 goes as a whole.
    for (std::string ch : {std::string("\xc3\xa9"), std::string("\xe2\x82\xac"), std::string("\xf0\x9f\x98\x80")}) {
        for (std::size_t lead = 123 - ch.size() + 1; lead <= 122; ++lead) {
            std::string reason = std::string(lead, 'a') + ch + "tail";
            CHECK_MESSAGE(cutCloseReason(reason) == std::string(lead, 'a'), ch.size() << "-byte char at " << lead);
        }
        // Ending exactly at 123: kept.
        std::string fits = std::string(123 - ch.size(), 'a') + ch;
        CHECK(cutCloseReason(fits + "x") == fits);
    }
    // Not UTF-8 (continuation bytes only): cut at 123 bytes all the same.
    std::string junk(200, '\x80');
    CHECK(cutCloseReason(junk).size() == 123);

    FakeConnection conn("/c"), other("/c"); // outlive the hub: still registered when it goes
    Hub hub({.shards = 1, .inboxCapacity = 8, .ownThreads = true});
    REQUIRE(hub.start());
    onShard(hub.shard(0), [&](Shard &s) { REQUIRE(s.open(conn, {{"g", "x"}}, kNoEvents)); });
    std::string euros;
    for (int i = 0; i < 60; ++i) euros += "\xe2\x82\xac"; // 180 bytes, 3 per character
    CHECK(hub.close(sel("g=x"), close_code::kNormal, euros).get().value == 1);
    onShard(hub.shard(0), [&](Shard &) {
        CHECK(conn.closeReason.size() == 123); // 41 whole euros
        CHECK(conn.closeReason == euros.substr(0, 123));
    });
    std::string mixed = "x" + euros; // now byte 123 is inside a character
    onShard(hub.shard(0), [&](Shard &s) { REQUIRE(s.open(other, {{"g", "y"}}, kNoEvents)); });
    CHECK(hub.close(sel("g=y"), close_code::kNormal, mixed).get().value == 1);
    onShard(hub.shard(0), [&](Shard &) { CHECK(other.closeReason == mixed.substr(0, 121)); });
}

TEST_CASE("Hub::stop returns the events it left undelivered") {
    struct Down final : EventSink {
        std::string name() const override { return "down"; }
        std::size_t publish(const std::vector<EventPtr> &) override { return 0; } // the broker is down
    };
    FakeConnection a("/c"), b("/c");
    Hub hub({.shards = 1, .inboxCapacity = 8, .ownThreads = false});
    hub.shard(0).setWakeup([] {});
    hub.events().addSink(std::make_unique<Down>(), SinkOptions{.minBackoff = 10ms, .maxBackoff = 10ms});
    REQUIRE(hub.start());
    EventSpec spec;
    REQUIRE(hub.shard(0).open(a, {}, spec));
    REQUIRE(hub.shard(0).open(b, {}, spec));
    hub.shard(0).closed(a, spec);
    CHECK(hub.stop(50ms) == 3); // two opens and a close
    CHECK(hub.stop(50ms) == 0);
}

namespace {
// Reports itself gone from inside its own close(), as a transport whose close completes at once
// may; the shard must not free it there.
class SelfClosing final : public Connection {
public:
    explicit SelfClosing(Shard &s) : Connection(ConnectionId::random()), shard_(s) {}
    SendStatus send(const MessagePtr &) override { return SendStatus::Queued; }
    void close(std::uint16_t code, std::string_view) override {
        shard_.closed(*this, kNoEvents);
        lastCode = code; // still alive here (ASan would see a use after free otherwise)
    }
    std::string remoteAddress() const override { return "127.0.0.1:1"; }
    std::string_view endpoint() const override { return "/c"; }
    std::uint16_t lastCode = 0;

private:
    Shard &shard_;
};
} // namespace

TEST_CASE("a connection opened with a shared_ptr lives from open until after closed") {
    Hub hub({.shards = 1, .inboxCapacity = 8, .ownThreads = false});
    hub.shard(0).setWakeup([] {});
    REQUIRE(hub.start());
    Shard &shard = hub.shard(0);

    auto conn = std::make_shared<FakeConnection>("/c");
    std::weak_ptr<FakeConnection> watch = conn;
    CHECK_FALSE(shard.open(std::shared_ptr<Connection>(), {}, kNoEvents));
    REQUIRE(shard.open(conn, {{"g", "x"}}, kNoEvents));
    CHECK_FALSE(shard.open(conn, {{"g", "x"}}, kNoEvents)); // open already
    conn.reset();                                           // the transport lets go: no owner but the shard
    CHECK_FALSE(watch.expired());
    std::future<CountResult> sent = hub.send(sel("g=x"), Message::text("hi"));
    shard.drain();
    CHECK(sent.get().value == 1);
    CHECK(watch.lock()->received.size() == 1);

    shard.closed(*watch.lock(), kNoEvents);
    CHECK_FALSE(watch.expired()); // not freed inside closed()
    CHECK(shard.drain() == 0);
    CHECK(watch.expired()); // dropped at the next drain
    CHECK(hub.connectionCount() == 0);

    // closed() from the connection's own close(): it is still alive when closed() returns.
    auto self = std::make_shared<SelfClosing>(shard);
    std::weak_ptr<SelfClosing> selfWatch = self;
    REQUIRE(shard.open(self, {{"g", "y"}}, kNoEvents));
    self.reset();
    std::future<CountResult> closed = hub.close(sel("g=y"), close_code::kGoingAway, "bye");
    CHECK(shard.drain() == 1);
    CHECK(closed.get().value == 1);
    REQUIRE_FALSE(selfWatch.expired());
    CHECK(selfWatch.lock()->lastCode == close_code::kGoingAway);
    CHECK(shard.registry().size() == 0);
    shard.drain();
    CHECK(selfWatch.expired());

    // Connections still held when the hub goes are released with it.
    auto last = std::make_shared<FakeConnection>("/c");
    std::weak_ptr<FakeConnection> lastWatch = last;
    REQUIRE(shard.open(std::move(last), {}, kNoEvents));
    hub.stop();
    CHECK_FALSE(lastWatch.expired());
}

TEST_CASE("destroying a connection that is still registered aborts with a message") {
    int err[2];
    REQUIRE(pipe(err) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        std::signal(SIGABRT, SIG_DFL); // not doctest's crash report
        dup2(err[1], 2);
        Registry reg;
        auto *c = new FakeConnection("/c");
        (void)reg.add(*c, {});
        delete c; // the bug
        _exit(0);
    }
    close(err[1]);
    std::string message;
    char buf[512];
    for (ssize_t n; (n = read(err[0], buf, sizeof buf)) > 0;) message.append(buf, static_cast<std::size_t>(n));
    close(err[0]);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGABRT);
    CHECK(message.find("destroyed while still registered") != std::string::npos);

    // Unregistered first, or outliving its registry: no complaint.
    {
        FakeConnection outlives("/c");
        Registry reg;
        REQUIRE(reg.add(outlives, {}));
    }
    Registry reg;
    {
        FakeConnection removed("/c");
        REQUIRE(reg.add(removed, {}));
        REQUIRE(reg.remove(removed.id()));
    }
    CHECK(reg.size() == 0);
}
