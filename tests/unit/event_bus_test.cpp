#include <wsgw/sink.h>

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

using namespace wsgw;
using namespace std::chrono_literals;

namespace {

// A destination that can be switched down and up, and acknowledges at most `limit` per call.
struct Flaky final : EventSink {
    struct State {
        std::mutex mu;
        bool up = true;
        std::size_t limit = SIZE_MAX;
        std::vector<std::uint64_t> delivered; // event ids, in delivery order (duplicates possible)
        std::size_t calls = 0;
        std::size_t failures = 0;
    };
    explicit Flaky(State &s) : state(s) {}
    std::string name() const override { return "flaky"; }
    std::size_t publish(const std::vector<EventPtr> &batch) override {
        std::lock_guard lock(state.mu);
        ++state.calls;
        if (!state.up) return 0;
        std::size_t n = std::min(batch.size(), state.limit);
        for (std::size_t i = 0; i < n; ++i) state.delivered.push_back(batch[i]->id);
        return n;
    }
    void onFailure() override {
        std::lock_guard lock(state.mu);
        ++state.failures;
    }
    State &state;
};

Event makeEvent(std::string payload = "m") {
    Event e;
    e.action = EventAction::Message;
    e.connection = ConnectionId::random();
    e.message = std::move(payload);
    return e;
}

template <class Pred> bool waitFor(Pred pred, std::chrono::milliseconds limit = 5000ms) {
    auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
        if (pred()) return true;
        std::this_thread::sleep_for(2ms);
    }
    return pred();
}

} // namespace

TEST_CASE("events get increasing ids and reach every sink in order") {
    EventBus bus;
    Flaky::State a, b;
    bus.addSink(std::make_unique<Flaky>(a));
    bus.addSink(std::make_unique<Flaky>(b));
    REQUIRE(bus.start());
    for (int i = 0; i < 1000; ++i) CHECK(bus.publish(makeEvent()) == static_cast<std::uint64_t>(i + 1));
    CHECK(bus.stop(5000ms) == 0);
    for (Flaky::State *s : {&a, &b}) {
        REQUIRE(s->delivered.size() == 1000);
        for (std::size_t i = 0; i < 1000; ++i) CHECK(s->delivered[i] == i + 1);
    }
    auto stats = bus.stats();
    REQUIRE(stats.size() == 2);
    CHECK(stats[0].published == 1000);
    CHECK(stats[0].dropped == 0);
    CHECK(stats[0].backlog == 0);
    CHECK(bus.lastEventId() == 1000);
}

TEST_CASE("ids can start anywhere") {
    EventBus bus(5000);
    CHECK(bus.lastEventId() == 4999);
    CHECK(bus.publish(makeEvent()) == 5000);
    CHECK(bus.publish(makeEvent()) == 5001);
    CHECK(bus.lastEventId() == 5001);
}

TEST_CASE("an outage keeps events in the backlog and retries; nothing is lost") {
    EventBus bus;
    Flaky::State s;
    s.up = false;
    bus.addSink(std::make_unique<Flaky>(s),
                SinkOptions{.maxBacklogEvents = 10000, .minBackoff = 1ms, .maxBackoff = 20ms});
    REQUIRE(bus.start());
    for (int i = 0; i < 500; ++i) bus.publish(makeEvent());
    REQUIRE(waitFor([&] { return bus.stats()[0].failures >= 3; }));
    CHECK_FALSE(bus.ready());
    CHECK(bus.stats()[0].backlog == 500);
    {
        std::lock_guard lock(s.mu);
        CHECK(s.failures >= 3);
        s.up = true;
        s.limit = 7; // partial acknowledgements on the way back
    }
    REQUIRE(waitFor([&] { return bus.stats()[0].backlog == 0; }));
    CHECK(bus.ready());
    bus.stop(1000ms);
    REQUIRE(s.delivered.size() == 500);
    for (std::size_t i = 0; i < 500; ++i) CHECK(s.delivered[i] == i + 1);
    CHECK(bus.stats()[0].published == 500);
}

TEST_CASE("overflow: drop-oldest keeps the newest, drop-newest keeps the oldest, both counted") {
    for (OverflowPolicy policy : {OverflowPolicy::DropOldest, OverflowPolicy::DropNewest}) {
        EventBus bus;
        Flaky::State s;
        s.up = false;
        bus.addSink(std::make_unique<Flaky>(s), SinkOptions{.maxBacklogEvents = 100,
                                                            .overflow = policy,
                                                            .maxBatch = 1000,
                                                            .minBackoff = 1ms,
                                                            .maxBackoff = 5ms});
        REQUIRE(bus.start());
        for (int i = 0; i < 250; ++i) bus.publish(makeEvent());
        auto st = bus.stats()[0];
        CHECK(st.backlog == 100);
        CHECK(st.dropped == 150);
        {
            std::lock_guard lock(s.mu);
            s.up = true;
        }
        REQUIRE(waitFor([&] { return bus.stats()[0].backlog == 0; }));
        bus.stop(1000ms);
        REQUIRE(s.delivered.size() >= 100);
        // The last 100 delivered are the survivors (an in-flight batch may add earlier ones first).
        std::vector<std::uint64_t> tail(s.delivered.end() - 100, s.delivered.end());
        std::uint64_t first = policy == OverflowPolicy::DropOldest ? 151 : 1;
        for (std::size_t i = 0; i < 100; ++i) CHECK(tail[i] == first + i);
    }
}

TEST_CASE("the byte bound applies too") {
    EventBus bus;
    Flaky::State s;
    s.up = false;
    bus.addSink(std::make_unique<Flaky>(s), SinkOptions{.maxBacklogBytes = 64 * 1024, .minBackoff = 50ms});
    REQUIRE(bus.start());
    for (int i = 0; i < 100; ++i) bus.publish(makeEvent(std::string(4096, 'x')));
    auto st = bus.stats()[0];
    CHECK(st.backlogBytes <= 64 * 1024);
    CHECK(st.backlog < 16);
    CHECK(st.dropped == 100 - st.backlog);
    CHECK(bus.stop(0ms) == st.backlog);
}

TEST_CASE("stop flushes what it can within the deadline and reports the rest") {
    EventBus bus;
    Flaky::State s;
    s.up = false;
    bus.addSink(std::make_unique<Flaky>(s), SinkOptions{.minBackoff = 10ms, .maxBackoff = 10ms});
    REQUIRE(bus.start());
    for (int i = 0; i < 10; ++i) bus.publish(makeEvent());
    auto t0 = std::chrono::steady_clock::now();
    CHECK(bus.stop(200ms) == 10);
    auto took = std::chrono::steady_clock::now() - t0;
    CHECK(took >= 150ms);
    CHECK(took < 3000ms);
    CHECK(bus.publish(makeEvent()) == 0); // discarded after stop
}

TEST_CASE("the log sink writes one JSON object per line") {
    std::FILE *f = std::tmpfile();
    REQUIRE(f);
    {
        EventBus bus;
        bus.addSink(makeLogSink(f, "node-a"));
        REQUIRE(bus.start());
        Event open;
        open.action = EventAction::Open;
        open.connection = ConnectionId::random();
        open.endpoint = "/connect";
        open.tags = {{"group", "a b"}, {"x", "1"}};
        bus.publish(std::move(open));
        Event text = makeEvent("h\xC3\xA9llo \"q\"");
        text.tags = {{"group", "a"}};
        bus.publish(std::move(text));
        Event bin = makeEvent(std::string("\x00\x01\xfe\xff", 4));
        bin.type = Opcode::Binary;
        bus.publish(std::move(bin));
        bus.stop(2000ms);
    }
    std::rewind(f);
    std::vector<nlohmann::json> lines;
    char buf[4096];
    while (std::fgets(buf, sizeof buf, f)) lines.push_back(nlohmann::json::parse(buf));
    std::fclose(f);
    REQUIRE(lines.size() == 3);
    CHECK(lines[0]["action"] == "open");
    CHECK(lines[0]["tags"] == "group=a+b&x=1");
    CHECK(lines[0]["node"] == "node-a");
    CHECK(lines[0]["event_id"] == 1);
    CHECK(lines[0]["endpoint"] == "/connect");
    CHECK(lines[0]["connection"].get<std::string>().size() == 36);
    CHECK_FALSE(lines[0].contains("message"));
    CHECK(lines[1]["action"] == "message");
    CHECK(lines[1]["type"] == "text");
    CHECK(lines[1]["message"] == "h\xC3\xA9llo \"q\"");
    CHECK_FALSE(lines[1].contains("encoding"));
    CHECK(lines[2]["type"] == "binary");
    CHECK(lines[2]["message"] == "AAH+/w==");
    CHECK(lines[2]["encoding"] == "base64");
}

TEST_CASE("base64") {
    CHECK(base64Encode("") == "");
    CHECK(base64Encode("f") == "Zg==");
    CHECK(base64Encode("fo") == "Zm8=");
    CHECK(base64Encode("foo") == "Zm9v");
    CHECK(base64Encode("foobar") == "Zm9vYmFy");
}

namespace {
// A sink whose connect() fails a given number of times; records idle() calls and what it got.
struct Connecting final : EventSink {
    struct State {
        std::mutex mu;
        int refuseConnects = 0;
        int connects = 0;
        int idles = 0;
        bool idleBreaks = false;
        std::vector<EventAction> got;
    };
    explicit Connecting(State &s) : state(s) {}
    std::string name() const override { return "connecting"; }
    bool connect() override {
        std::lock_guard lock(state.mu);
        ++state.connects;
        return state.refuseConnects-- <= 0;
    }
    std::string lastError() const override { return "refused for the test"; }
    bool idle() override {
        std::lock_guard lock(state.mu);
        ++state.idles;
        if (state.idleBreaks) {
            state.idleBreaks = false;
            return false;
        }
        return true;
    }
    std::size_t publish(const std::vector<EventPtr> &batch) override {
        std::lock_guard lock(state.mu);
        for (auto &e : batch) state.got.push_back(e->action);
        return batch.size();
    }
    State &state;
};
} // namespace

TEST_CASE("connect() is retried with back-off; state changes are reported once each") {
    EventBus bus;
    Connecting::State s;
    s.refuseConnects = 3;
    bus.addSink(std::make_unique<Connecting>(s), SinkOptions{.minBackoff = 1ms, .maxBackoff = 5ms, .idleInterval = 10ms});
    std::mutex mu;
    std::vector<std::pair<bool, std::string>> changes;
    bus.onStateChange([&](const std::string &sink, bool up, const std::string &error) {
        CHECK(sink == "connecting");
        std::lock_guard lock(mu);
        changes.emplace_back(up, error);
    });
    CHECK_FALSE(bus.ready()); // not connected before the first connect()
    REQUIRE(bus.start());
    bus.publish(makeEvent());
    REQUIRE(waitFor([&] { return bus.stats()[0].published == 1; }));
    CHECK(bus.ready());
    {
        std::lock_guard lock(s.mu);
        CHECK(s.connects == 4);
    }
    // Three refusals report "down" once (same error), then "up" once.
    {
        std::lock_guard lock(mu);
        REQUIRE(changes.size() == 2);
        CHECK(changes[0] == std::pair<bool, std::string>{false, "refused for the test"});
        CHECK(changes[1].first);
    }
    CHECK(bus.stats()[0].failures == 3);

    // Idle: idle() runs; when it reports a broken connection, connect() runs again.
    REQUIRE(waitFor([&] {
        std::lock_guard lock(s.mu);
        return s.idles >= 2;
    }));
    {
        std::lock_guard lock(s.mu);
        s.idleBreaks = true;
    }
    REQUIRE(waitFor([&] {
        std::lock_guard lock(s.mu);
        return s.connects == 5;
    }));
    REQUIRE(waitFor([&] { return bus.ready(); }));
    bus.stop(100ms);
}

TEST_CASE("sinks get only the actions they accept; wants() tells producers") {
    struct OnlyMessages final : EventSink {
        std::vector<EventAction> got;
        std::string name() const override { return "messages"; }
        bool accepts(EventAction a) const override { return a == EventAction::Message; }
        std::size_t publish(const std::vector<EventPtr> &batch) override {
            for (const EventPtr &e : batch) got.push_back(e->action);
            return batch.size();
        }
    };
    EventBus picky;
    auto owned = std::make_unique<OnlyMessages>();
    OnlyMessages &sink = *owned;
    picky.addSink(std::move(owned));
    CHECK(picky.wants(EventAction::Message));
    CHECK_FALSE(picky.wants(EventAction::Open));
    REQUIRE(picky.start());
    for (EventAction act : {EventAction::Open, EventAction::Message, EventAction::Close}) {
        Event e = makeEvent();
        e.action = act;
        picky.publish(std::move(e));
    }
    picky.stop(2000ms);
    CHECK(sink.got == std::vector<EventAction>{EventAction::Message});

    EventBus plain;
    Connecting::State a;
    plain.addSink(std::make_unique<Connecting>(a));
    CHECK(plain.wants(EventAction::Open));
    CHECK(plain.wants(EventAction::Close));
}

TEST_CASE("pause-reading keeps every event, pauses over the bound and resumes at half") {
    EventBus bus;
    Flaky::State s;
    s.up = false;
    bus.addSink(std::make_unique<Flaky>(s), SinkOptions{.maxBacklogEvents = 10,
                                                        .overflow = OverflowPolicy::PauseReading,
                                                        .maxBatch = 2,
                                                        .minBackoff = 1ms,
                                                        .maxBackoff = 2ms});
    std::mutex mu;
    std::vector<bool> signals;
    bus.onBackpressure([&](bool paused) {
        std::lock_guard lock(mu);
        signals.push_back(paused);
    });
    REQUIRE(bus.start());
    for (int i = 0; i < 10; ++i) bus.publish(makeEvent());
    CHECK_FALSE(bus.paused());
    for (int i = 0; i < 5; ++i) bus.publish(makeEvent()); // over the bound: kept, and paused
    CHECK(bus.paused());
    CHECK(bus.stats()[0].backlog == 15);
    CHECK(bus.stats()[0].dropped == 0);
    {
        std::lock_guard lock(s.mu);
        s.up = true;
    }
    REQUIRE(waitFor([&] { return !bus.paused(); }));
    REQUIRE(waitFor([&] { return bus.stats()[0].backlog == 0; }));
    bus.stop(1000ms);
    CHECK(s.delivered.size() == 15);
    std::lock_guard lock(mu);
    CHECK(signals == std::vector<bool>{true, false});
}

TEST_CASE("producers publish through queues of their own: all delivered in id order, each producer's order kept") {
    constexpr std::size_t kProducers = 3, kEach = 20000;
    struct Recorder final : EventSink {
        std::mutex mu;
        std::vector<EventPtr> got;
        std::string name() const override { return "recorder"; }
        std::size_t publish(const std::vector<EventPtr> &batch) override {
            std::lock_guard lock(mu);
            got.insert(got.end(), batch.begin(), batch.end());
            return batch.size();
        }
    };
    auto owned = std::make_unique<Recorder>();
    Recorder &r = *owned;
    EventBus bus(1, kProducers);
    SinkOptions o;
    o.maxBacklogEvents = kProducers * kEach; // room for all: nothing dropped
    bus.addSink(std::move(owned), o);
    REQUIRE(bus.start());
    std::vector<std::thread> threads;
    for (std::size_t p = 0; p < kProducers; ++p)
        threads.emplace_back([&, p] {
            for (std::size_t i = 0; i < kEach; ++i) {
                Event e = makeEvent(std::to_string(p) + ":" + std::to_string(i));
                REQUIRE(bus.publish(p, std::move(e)) != 0);
            }
        });
    for (auto &t : threads) t.join();
    CHECK(bus.stop(10000ms) == 0);
    REQUIRE(r.got.size() == kProducers * kEach);
    std::vector<std::size_t> next(kProducers, 0);
    std::vector<bool> seen(kProducers * kEach + 1, false);
    // The sink got them in id order, without a gap: a consumer can check the stream by its ids.
    std::size_t outOfOrder = 0;
    for (std::size_t i = 0; i < r.got.size(); ++i) outOfOrder += r.got[i]->id != i + 1;
    CHECK(outOfOrder == 0);
    for (const EventPtr &e : r.got) {
        auto colon = e->message.find(':');
        std::size_t p = std::stoul(e->message.substr(0, colon)), i = std::stoul(e->message.substr(colon + 1));
        CHECK(i == next[p]); // in order, none twice
        next[p] = i + 1;
        REQUIRE(e->id >= 1);
        REQUIRE(e->id <= kProducers * kEach);
        CHECK_FALSE(seen[e->id]);
        seen[e->id] = true;
    }
}

TEST_CASE("the backlog bound holds for the producers' queues together; drop-oldest drops the full producer's oldest") {
    Flaky::State s;
    s.up = false;
    EventBus bus(1, 2);
    SinkOptions o;
    o.maxBacklogEvents = 100;
    o.overflow = OverflowPolicy::DropNewest;
    o.minBackoff = 10ms;
    bus.addSink(std::make_unique<Flaky>(s), o);
    REQUIRE(bus.start());
    for (int i = 0; i < 80; ++i) bus.publish(0, makeEvent());
    for (int i = 0; i < 30; ++i) bus.publish(1, makeEvent());
    auto st = bus.stats()[0];
    CHECK(st.backlog == 100); // producer 0 took 80 of the bound, producer 1 the 20 left
    CHECK(st.dropped == 10);
    {
        std::lock_guard lock(s.mu);
        s.up = true;
    }
    REQUIRE(waitFor([&] { return bus.stats()[0].backlog == 0; }));
    std::lock_guard lock(s.mu);
    CHECK(s.delivered.size() == 100);
}

TEST_CASE("drop-oldest at the shared bound: a producer with events of its own drops its oldest") {
    Flaky::State s;
    s.up = false;
    EventBus bus(1, 2);
    SinkOptions o;
    o.maxBacklogEvents = 10;
    o.overflow = OverflowPolicy::DropOldest;
    o.minBackoff = 10ms;
    bus.addSink(std::make_unique<Flaky>(s), o);
    REQUIRE(bus.start());
    for (int i = 0; i < 6; ++i) bus.publish(0, makeEvent("a" + std::to_string(i)));
    for (int i = 0; i < 10; ++i) bus.publish(1, makeEvent("b" + std::to_string(i)));
    auto st = bus.stats()[0];
    CHECK(st.backlog == 10);
    CHECK(st.dropped == 6); // producer 1 made room from its own oldest: b0..b5 ... then nothing
    {
        std::lock_guard lock(s.mu);
        s.up = true;
    }
    REQUIRE(waitFor([&] { return bus.stats()[0].backlog == 0; }));
}

TEST_CASE("an idle sink is woken by the next event at once, every time") {
    Flaky::State s;
    EventBus bus(1, 1);
    SinkOptions o;
    o.idleInterval = 10'000ms; // a lost wake-up would show as a 10 s wait
    bus.addSink(std::make_unique<Flaky>(s), o);
    REQUIRE(bus.start());
    for (std::size_t i = 1; i <= 200; ++i) {
        bus.publish(0, makeEvent());
        REQUIRE(waitFor(
            [&] {
                std::lock_guard lock(s.mu);
                return s.delivered.size() == i;
            },
            2000ms));
        if (i % 20 == 0) std::this_thread::sleep_for(5ms); // let it fall asleep now and then
    }
}

TEST_CASE("pause-reading: the producers' queues together pause the bus; it resumes once back to half") {
    Flaky::State s;
    s.up = false;
    EventBus bus(1, 2);
    SinkOptions o;
    o.maxBacklogEvents = 20;
    o.overflow = OverflowPolicy::PauseReading;
    o.minBackoff = 10ms;
    o.maxBackoff = 20ms;
    std::atomic<int> pauses{0}, resumes{0};
    bus.onBackpressure([&](bool paused) { (paused ? pauses : resumes).fetch_add(1); });
    bus.addSink(std::make_unique<Flaky>(s), o);
    REQUIRE(bus.start());
    for (int i = 0; i < 9; ++i) bus.publish(1, makeEvent());
    CHECK_FALSE(bus.paused());
    for (int i = 0; i < 10; ++i) bus.publish(0, makeEvent());
    CHECK_FALSE(bus.paused()); // 19 of 20
    for (int i = 0; i < 2; ++i) bus.publish(0, makeEvent());
    CHECK(bus.paused());
    CHECK(pauses.load() == 1);
    CHECK(bus.stats()[0].dropped == 0); // kept, all of them
    CHECK(bus.stats()[0].backlog == 21);
    {
        std::lock_guard lock(s.mu);
        s.up = true;
    }
    REQUIRE(waitFor([&] { return !bus.paused(); }));
    CHECK(resumes.load() == 1);
    REQUIRE(waitFor([&] { return bus.stats()[0].backlog == 0; }));
}
