// EventBus routes: each endpoint's events go to its backends only, and one backend's outage,
// backpressure or removal never reaches the others.
#include <wsgw/sink.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace wsgw;
using namespace std::chrono_literals;

namespace {

// A destination that records (endpoint, id) of what it delivered, and can be switched down.
struct Recorder final : EventSink {
    struct State {
        std::mutex mu;
        bool up = true;
        std::vector<std::pair<std::string, std::uint64_t>> delivered;
        std::size_t count(const std::string &endpoint) {
            std::lock_guard lock(mu);
            return static_cast<std::size_t>(std::count_if(delivered.begin(), delivered.end(),
                                                          [&](const auto &d) { return d.first == endpoint; }));
        }
        std::size_t size() {
            std::lock_guard lock(mu);
            return delivered.size();
        }
        void setUp(bool on) {
            std::lock_guard lock(mu);
            up = on;
        }
        bool inOrder() {
            std::lock_guard lock(mu);
            return std::is_sorted(delivered.begin(), delivered.end(),
                                  [](const auto &a, const auto &b) { return a.second < b.second; });
        }
    };
    explicit Recorder(State &s) : state(s) {}
    std::string name() const override { return "recorder"; }
    std::size_t publish(const std::vector<EventPtr> &batch) override {
        std::lock_guard lock(state.mu);
        if (!state.up) return 0;
        for (const EventPtr &e : batch) state.delivered.emplace_back(e->endpoint, e->id);
        return batch.size();
    }
    State &state;
};

Event eventOn(std::string endpoint, EventAction action = EventAction::Message) {
    Event e;
    e.action = action;
    e.connection = ConnectionId::random();
    e.endpoint = std::move(endpoint);
    e.message = "m";
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

constexpr SinkOptions kFastRetry{.minBackoff = 1ms, .maxBackoff = 10ms};

} // namespace

TEST_CASE("each endpoint's events reach exactly its backends, in order; unlisted endpoints get the defaults") {
    EventBus bus(1, 2);
    Recorder::State chat, billing, audit, legacy;
    REQUIRE(bus.addSink(std::make_unique<Recorder>(chat), kFastRetry, "chat") == 0);
    REQUIRE(bus.addSink(std::make_unique<Recorder>(billing), kFastRetry, "billing") == 1);
    REQUIRE(bus.addSink(std::make_unique<Recorder>(audit), kFastRetry, "audit") == 2);
    REQUIRE(bus.addSink(std::make_unique<Recorder>(legacy), kFastRetry, "legacy") == 3);
    EventRoutes routes;
    routes.endpoints["/chat"] = {"chat", "audit"};
    routes.endpoints["/pay"] = {"billing", "audit"};
    routes.endpoints["/quiet"] = {};
    routes.defaults = {"legacy"};
    std::string error;
    REQUIRE(bus.setRoutes(routes, &error));
    REQUIRE(bus.start());
    for (int i = 0; i < 300; ++i) {
        bus.publish(i % 2, eventOn("/chat"));
        bus.publish(i % 2, eventOn("/pay"));
        bus.publish(eventOn("/legacy"));
        bus.publish(eventOn("/quiet"));
    }
    CHECK(bus.stop(5000ms) == 0);
    CHECK(chat.size() == 300);
    CHECK(chat.count("/chat") == 300);
    CHECK(billing.size() == 300);
    CHECK(billing.count("/pay") == 300);
    CHECK(audit.size() == 600);
    CHECK(audit.count("/chat") == 300);
    CHECK(audit.count("/pay") == 300);
    CHECK(legacy.size() == 300);
    CHECK(legacy.count("/legacy") == 300);
    for (Recorder::State *s : {&chat, &billing, &audit, &legacy}) CHECK(s->inOrder());
    auto stats = bus.stats();
    REQUIRE(stats.size() == 4);
    CHECK(stats[0].backend == "chat");
    CHECK(stats[0].name == "recorder");
    CHECK(stats[2].published == 600);
}

TEST_CASE("routes naming an unknown backend are refused and change nothing; backend names are unique") {
    EventBus bus;
    Recorder::State a, b;
    REQUIRE(bus.addSink(std::make_unique<Recorder>(a), kFastRetry, "a") == 0);
    CHECK(bus.addSink(std::make_unique<Recorder>(b), kFastRetry, "a") == std::numeric_limits<std::size_t>::max());
    // Unnamed sinks keep working as before routes: their name, made unique.
    REQUIRE(bus.addSink(std::make_unique<Recorder>(b), kFastRetry) == 1);
    REQUIRE(bus.addSink(std::make_unique<Recorder>(b), kFastRetry) == 2);
    auto stats = bus.stats();
    CHECK(stats[1].backend == "recorder");
    CHECK(stats[2].backend == "recorder#2");
    EventRoutes bad;
    bad.endpoints["/x"] = {"a", "nope"};
    std::string error;
    CHECK_FALSE(bus.setRoutes(bad, &error));
    CHECK(error == "unknown backend 'nope'");
    REQUIRE(bus.start());
    bus.publish(eventOn("/x")); // no routes set: every sink
    REQUIRE(waitFor([&] { return a.size() == 1 && b.size() == 2; }));
    bus.stop(1000ms);
}

TEST_CASE("one backend down delays no other; it gets everything it missed once back") {
    EventBus bus(1, 1);
    Recorder::State up, down;
    down.up = false;
    bus.addSink(std::make_unique<Recorder>(up), kFastRetry, "up");
    bus.addSink(std::make_unique<Recorder>(down), kFastRetry, "down");
    EventRoutes routes;
    routes.endpoints["/a"] = {"up"};
    routes.endpoints["/b"] = {"down"};
    REQUIRE(bus.setRoutes(routes));
    REQUIRE(bus.start());
    for (int i = 0; i < 200; ++i) {
        bus.publish(0, eventOn("/a"));
        bus.publish(0, eventOn("/b"));
    }
    REQUIRE(waitFor([&] { return up.size() == 200; }));
    CHECK(down.size() == 0);
    CHECK(bus.stats()[1].backlog == 200);
    CHECK_FALSE(bus.stats()[1].connected);
    down.setUp(true);
    REQUIRE(waitFor([&] { return down.size() == 200; }));
    CHECK(down.inOrder());
    CHECK(down.count("/b") == 200);
    bus.stop(1000ms);
}

TEST_CASE("a pause-reading backend pauses only the endpoints routed to it") {
    EventBus bus(1, 1);
    Recorder::State slow, fast;
    slow.up = false;
    std::atomic<int> pauses{0}, resumes{0};
    bus.onBackpressure([&](bool p) { (p ? pauses : resumes).fetch_add(1); });
    SinkOptions o = kFastRetry;
    o.maxBacklogEvents = 10;
    o.overflow = OverflowPolicy::PauseReading;
    bus.addSink(std::make_unique<Recorder>(slow), o, "slow");
    bus.addSink(std::make_unique<Recorder>(fast), kFastRetry, "fast");
    EventRoutes routes;
    routes.endpoints["/slow"] = {"slow", "fast"};
    routes.defaults = {"fast"};
    REQUIRE(bus.setRoutes(routes));
    REQUIRE(bus.start());
    for (int i = 0; i < 12; ++i) bus.publish(0, eventOn("/slow"));
    CHECK(bus.paused());
    CHECK(bus.paused("/slow"));
    CHECK_FALSE(bus.paused("/other"));
    CHECK(pauses.load() == 1);
    CHECK(bus.stats()[1].dropped == 0);
    slow.setUp(true);
    REQUIRE(waitFor([&] { return !bus.paused("/slow"); }));
    CHECK(resumes.load() == 1);
    REQUIRE(waitFor([&] { return slow.size() == 12 && fast.size() == 12; }));
    bus.stop(1000ms);
}

TEST_CASE("backends are added and removed while running; routes swap whole") {
    EventBus bus(1, 1);
    Recorder::State first, second;
    bus.addSink(std::make_unique<Recorder>(first), kFastRetry, "first");
    EventRoutes routes;
    routes.endpoints["/e"] = {"first"};
    REQUIRE(bus.setRoutes(routes));
    REQUIRE(bus.start());
    bus.publish(0, eventOn("/e"));
    REQUIRE(waitFor([&] { return first.size() == 1; }));

    // A new backend starts at once but gets events only once a route names it.
    REQUIRE(bus.addSink(std::make_unique<Recorder>(second), kFastRetry, "second") == 1);
    bus.publish(0, eventOn("/e"));
    routes.endpoints["/e"] = {"second"};
    REQUIRE(bus.setRoutes(routes));
    bus.publish(0, eventOn("/e"));
    REQUIRE(waitFor([&] { return first.size() == 2 && second.size() == 1; }));
    CHECK(bus.stats().size() == 2);

    // Removed: its backlog is flushed first, and it leaves the stats.
    first.setUp(false);
    routes.endpoints["/e"] = {"first", "second"};
    REQUIRE(bus.setRoutes(routes));
    for (int i = 0; i < 5; ++i) bus.publish(0, eventOn("/e"));
    REQUIRE(waitFor([&] { return second.size() == 6; }));
    routes.endpoints["/e"] = {"second"};
    REQUIRE(bus.setRoutes(routes));
    std::thread upAgain([&] {
        std::this_thread::sleep_for(50ms);
        first.setUp(true);
    });
    CHECK(bus.removeSink("first", 5000ms) == 0);
    upAgain.join();
    CHECK(first.size() == 7);
    CHECK(bus.stats().size() == 1);
    CHECK(bus.stats()[0].backend == "second");
    CHECK(bus.removeSink("first", 0ms) == std::numeric_limits<std::size_t>::max());
    // The name is free again.
    Recorder::State third;
    CHECK(bus.addSink(std::make_unique<Recorder>(third), kFastRetry, "first") == 1);
    bus.publish(0, eventOn("/e"));
    REQUIRE(waitFor([&] { return second.size() == 7; }));
    CHECK(bus.stop(1000ms) == 0);
    CHECK(third.size() == 0);
}
