// The control API's routes (wsgwd/control_api.h) in process: a real Hub with its own shard
// threads and in-memory connections, the API on a free port, and cpp-httplib's client. The
// integration tests check the same answers through the real wsgwd; these also reach what a
// process cannot easily show: a shard that does not answer, and a stop in the middle.
#include "control_api.h"
#include "metrics.h"

#include "fake_connection.h"

#include <wsgw/hub.h>

#include <doctest/doctest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <future>
#include <memory>
#include <mutex>
#include <thread>

using namespace std::chrono_literals;
using namespace wsgw;
using namespace wsgw::daemon;
using wsgw::test::FakeConnection;
using Clock = std::chrono::steady_clock;

namespace {

const EventSpec kNoEvents{};

// Runs fn on a shard's thread and waits for it (also a barrier: what the shard did before is
// visible after).
void onShard(Shard &shard, std::function<void(Shard &)> fn) {
    std::promise<void> done;
    REQUIRE(shard.post([&](Shard &s) {
        fn(s);
        done.set_value();
    }));
    done.get_future().wait();
}

struct Api {
    explicit Api(ControlApiOptions o = options()) {
        std::signal(SIGPIPE, SIG_IGN);
        REQUIRE(hub.start());
        onShard(hub.shard(0), [&](Shard &s) { REQUIRE(s.open(a, {{"group", "g"}, {"admin", "1"}}, kNoEvents)); });
        onShard(hub.shard(1), [&](Shard &s) {
            REQUIRE(s.open(b, {{"group", "g"}}, kNoEvents));
            REQUIRE(s.open(c, {{"group", "h"}}, kNoEvents));
        });
        ControlApiContext ctx{hub, metrics, 0, [this] { return notReady(); }, nullptr, "test", ""};
        api = std::make_unique<ControlApi>(ctx, o);
        std::string error;
        REQUIRE_MESSAGE(api->start(&error), error);
        client = std::make_unique<httplib::Client>("127.0.0.1", api->port());
        client->set_read_timeout(10, 0);
    }
    ~Api() {
        releaseShard();
        api->stop();
        hub.stop();
    }

    static ControlApiOptions options() {
        ControlApiOptions o;
        o.addr = HostPort{"127.0.0.1", 0};
        o.maxBodyBytes = 1024;
        o.commandTimeout = 2000ms;
        return o;
    }
    std::string notReady() {
        std::lock_guard lock(mu);
        return why;
    }
    // Holds shard 1's thread until releaseShard(): commands wait for it.
    void holdShard() {
        REQUIRE(hub.shard(1).post([this](Shard &) {
            std::unique_lock lock(mu);
            held = true;
            cv.wait(lock, [this] { return !holding; });
        }));
        auto until = Clock::now() + 2s;
        while (Clock::now() < until) {
            {
                std::lock_guard lock(mu);
                if (held) return;
            }
            std::this_thread::sleep_for(1ms);
        }
        FAIL("shard 1 did not start the holding job");
    }
    void releaseShard() {
        {
            std::lock_guard lock(mu);
            holding = false;
        }
        cv.notify_all();
    }
    std::size_t received(FakeConnection &conn, std::size_t shard) {
        std::size_t n = 0;
        onShard(hub.shard(shard), [&](Shard &) { n = conn.received.size(); });
        return n;
    }

    FakeConnection a, b, c; // outlive the hub
    Hub hub{HubOptions{.shards = 2, .inboxCapacity = 64, .ownThreads = true}};
    Metrics metrics{2, {"/connect"}};
    std::mutex mu;
    std::condition_variable cv;
    std::string why;
    bool holding = true, held = false;
    std::unique_ptr<ControlApi> api;
    std::unique_ptr<httplib::Client> client;
};

} // namespace

TEST_CASE("commands: /send, /settags, /status, /tree and /close answer counts and act on the shards") {
    Api t;
    auto r = t.client->Post("/send?group=g", "hi", "text/plain");
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->body == "2");
    CHECK(r->get_header_value("Content-Type") == "text/plain; charset=utf-8");
    CHECK(t.received(t.a, 0) == 1);
    CHECK(t.received(t.b, 1) == 1);
    CHECK(t.received(t.c, 1) == 0);

    CHECK(t.client->Post("/send?group=g&admin=1", std::string("\x00\xff", 2), "application/octet-stream")->body == "1");
    onShard(t.hub.shard(0), [&](Shard &) {
        REQUIRE(t.a.received.size() == 2);
        CHECK(t.a.received[1]->opcode() == Opcode::Binary);
    });

    CHECK(t.client->Post(("/settags?id=" + t.c.id().toString()).c_str(), "x=1&group=", "text/plain")->body == "1");
    auto status = t.client->Get("/status?x=1");
    CHECK(status->body == "id=" + t.c.id().toString() + " x=1\n");
    CHECK(t.client->Get("/tree")->body == "admin\n - 1\ngroup\n - g\nx\n - 1\n");

    CHECK(t.client->Post(("/close?id=" + t.a.id().toString()).c_str(), "bye", "text/plain")->body == "1");
    onShard(t.hub.shard(0), [&](Shard &) {
        CHECK(t.a.closeCode == 1000);
        CHECK(t.a.closeReason == "Closed by server");
        CHECK(t.a.received.back()->payload() == "bye");
    });
}

TEST_CASE("refusals: 400, 404, 405, 413, 401 and 403, as plain text; health checks answer anyone") {
    ControlApiOptions o = Api::options();
    o.token = "tok";
    Api t(o);
    httplib::Headers auth{{"Authorization", "Bearer tok"}};
    auto r = t.client->Post("/send?a=%zz", auth, "x", "text/plain");
    CHECK(r->status == 400);
    CHECK(r->body == "bad selector: malformed %-escape at offset 2\n");
    r = t.client->Post("/send?group=g", auth, std::string("\xff", 1), "text/plain");
    CHECK(r->status == 400);
    CHECK(r->body.find("not valid UTF-8") != std::string::npos);
    r = t.client->Get("/send", auth);
    CHECK(r->status == 405);
    CHECK(r->get_header_value("Allow") == "POST");
    CHECK(t.client->Get("/nope", auth)->body == "not found: /nope\n");
    CHECK(t.client->Post("/send?group=g", auth, std::string(1025, 'x'), "text/plain")->status == 413);
    CHECK(t.client->Post("/send?group=g", auth, std::string(1024, 'x'), "text/plain")->body == "2");

    // The token: missing, wrong, a prefix of the right one, longer than it.
    for (const char *bad : {"", "Bearer tox", "Bearer to", "Bearer tokk", "Basic tok"}) {
        CAPTURE(bad);
        httplib::Headers h;
        if (*bad) h.emplace("Authorization", bad);
        auto refused = t.client->Get("/status", h);
        CHECK(refused->status == 401);
        CHECK(refused->get_header_value("WWW-Authenticate") == "Bearer");
    }

    // The allowlist, reloaded: loopback is out, health checks still answer.
    ControlApiOptions next = o;
    next.allow = {*Cidr::parse("10.0.0.0/8")};
    t.api->reload(next);
    r = t.client->Get("/status", auth);
    CHECK(r->status == 403);
    CHECK(r->body == "forbidden: 127.0.0.1 is not in internal_endpoint_access_whitelist\n");
    CHECK(t.client->Get("/healthz")->body == "ok\n");
    CHECK(t.client->Get("/readyz")->body == "ready\n");
    {
        std::lock_guard lock(t.mu);
        t.why = "event sink 'redis' is not connected";
    }
    r = t.client->Get("/readyz");
    CHECK(r->status == 503);
    CHECK(r->body == "not ready: event sink 'redis' is not connected\n");
}

TEST_CASE("health checks and /metrics never wait behind commands that wait for a shard") {
    Api t;
    t.holdShard();
    // Eight commands wait for shard 1: every command worker is busy.
    std::vector<std::future<httplib::Result>> waiting;
    for (int i = 0; i < 8; ++i)
        waiting.push_back(std::async(std::launch::async, [&t] {
            httplib::Client c("127.0.0.1", t.api->port());
            c.set_read_timeout(10, 0);
            return c.Get("/status");
        }));
    std::this_thread::sleep_for(200ms);
    for (const char *target : {"/healthz", "/readyz", "/metrics"}) {
        CAPTURE(target);
        auto t0 = Clock::now();
        auto r = t.client->Get(target);
        REQUIRE(r);
        CHECK(r->status == 200);
        CHECK(Clock::now() - t0 < 500ms);
    }
    auto m = t.client->Get("/metrics")->body;
    CHECK(m.find("wsgw_control_connections ") != std::string::npos);
    CHECK(m.find("wsgw_control_refused_total{reason=\"busy\"} 0") != std::string::npos);
    t.releaseShard();
    for (auto &w : waiting) CHECK(w.get()->status == 200);
}

TEST_CASE("a shard that does not answer: 504 after the command timeout; stop() answers a waiting command 503 at once") {
    ControlApiOptions o = Api::options();
    o.commandTimeout = 300ms;
    Api t(o);
    t.holdShard();
    auto t0 = Clock::now();
    auto late = t.client->Get("/status");
    REQUIRE(late);
    CHECK(late->status == 504);
    // Shard 0 answered; shard 1 is held inside another command, so the caller gives up a moment
    // after the deadline, and shard 1 will skip the command when it gets to it.
    CHECK(late->body == "status: a shard did not answer within control_timeout_s; a shard that had not started the "
                        "command will not run it\n");
    CHECK(Clock::now() - t0 >= 300ms);

    // With a long command timeout, a stop must not wait for it.
    ControlApiOptions patient = o;
    patient.commandTimeout = 30s;
    t.api->reload(patient);
    auto pending = std::async(std::launch::async, [&t] {
        httplib::Client c("127.0.0.1", t.api->port());
        c.set_read_timeout(10, 0);
        return c.Post("/send?group=g", "x", "text/plain");
    });
    std::this_thread::sleep_for(200ms);
    auto s0 = Clock::now();
    t.api->stop();
    CHECK(Clock::now() - s0 < 1000ms);
    auto r = pending.get();
    REQUIRE(r);
    CHECK(r->status == 503);
    CHECK(r->body == "send: shutting down before the shards answered (the command may or may not have been applied)\n");
}

TEST_CASE("a 504 means what it says: the shards that had not started the command skip it, and the answer says what ran") {
    ControlApiOptions o = Api::options();
    o.commandTimeout = 300ms;
    Api t(o);
    t.holdShard(); // shard 1 is busy past the deadline, then free again before the caller gives up
    auto release = std::async(std::launch::async, [&t] {
        std::this_thread::sleep_for(600ms);
        t.releaseShard();
    });
    auto r = t.client->Post("/send?group=g", "late", "text/plain");
    release.get();
    REQUIRE(r);
    CHECK(r->status == 504);
    CHECK(r->body == "send: not every shard started it within control_timeout_s; it ran on 1 of 2 shards and acted on "
                     "1 connection(s) there; the others skipped it and never will run it\n");
    // Shard 0's connection got it; shard 1's never will: a backend that retries does not
    // deliver twice to anyone.
    CHECK(t.received(t.a, 0) == 1);
    CHECK(t.received(t.b, 1) == 0);
    std::this_thread::sleep_for(200ms);
    CHECK(t.received(t.b, 1) == 0);
}
