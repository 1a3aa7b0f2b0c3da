// The Redis stream sink against a real redis-server: stream entries, templated names, outages (a
// stopped and a restarted server), bounded backlogs and their policies. (The connection mirror:
// redis_mirror_test.cpp.)
#include "clients.h"
#include "harness.h"
#include "redis_server.h"
#include "skip.h"

#include "ws_client.h"

#include <doctest/doctest.h>

#include <csignal>
#include <future>
#include <memory>
#include <thread>

using namespace wsgw::itest;
using wsgw::test::ConnectOptions;
using wsgw::test::WsClient;

namespace {

std::string idOf(Daemon &d, std::size_t nth = 0) {
    std::string id;
    REQUIRE(eventually([&] {
        auto st = nlohmann::json::parse(httpGet(d.controlPort, "/status", "application/json").body);
        if (st["connections"].size() <= nth) return false;
        id = st["connections"][nth]["id"];
        return true;
    }));
    return id;
}

// How often each message body stands in the connectionevents stream (at-least-once: a retried
// batch may add copies).
std::map<std::string, int> messagesIn(RedisProbe &probe) {
    std::map<std::string, int> seen;
    for (auto &e : probe.stream("connectionevents"))
        if (e["action"] == "message") ++seen[e["message"]];
    return seen;
}

int extraCopies(const std::map<std::string, int> &seen) {
    int n = 0;
    for (const auto &[message, copies] : seen) n += copies - 1;
    return n;
}

// Every test here needs a redis-server: without one the program is skipped (exit 77), or fails
// under CI=true (tests/support/skip.h).
const wsgw::test::Prerequisite redisServer{"redis-server is not installed (Debian package redis-server; "
                                           "scripts/bootstrap installs it)",
                                           [] { return haveRedisServer(); }};

} // namespace

TEST_CASE("stream entries carry every field; binary payloads are byte-exact") {
    RedisServer redis;
    auto d = Daemon::start("node_id: gw-test\nstream_redis: {addr: '" + redis.url() + "'}\n");
    RedisProbe probe(redis.port());
    CHECK(eventually([&] { return httpGet(d->controlPort, "/readyz").status == 200; }));

    auto ws = connect(*d);
    std::string id = idOf(*d);
    REQUIRE(httpPost(d->controlPort, "/settags?id=" + id, "user=ann&secret=x").body == "1");
    REQUIRE(ws->sendText("hello"));
    std::string bytes("\x00\x01\xfe\xff\r\n", 6);
    REQUIRE(ws->sendBinary(bytes));
    REQUIRE(ws->sendClose(1000));
    ws->waitClosed(2000ms);

    std::vector<std::map<std::string, std::string>> entries;
    REQUIRE(eventually([&] { return (entries = probe.stream("connectionevents")).size() == 4; }));
    CHECK(entries[0] == std::map<std::string, std::string>{{"connection", id}, {"action", "open"},
                                                           {"tags", "group=default"}, {"event_id", entries[0]["event_id"]},
                                                           {"node", "gw-test"}});
    CHECK(entries[1]["action"] == "message");
    CHECK(entries[1]["type"] == "text");
    CHECK(entries[1]["message"] == "hello");
    CHECK(entries[1]["tags"] == "group=default&user=ann"); // stream_include_tags only
    CHECK(entries[2]["type"] == "binary");
    CHECK(entries[2]["message"] == bytes);
    CHECK(entries[3]["action"] == "close");
    CHECK(entries[3].count("message") == 0);
    for (std::size_t i = 1; i < entries.size(); ++i)
        CHECK(std::stoull(entries[i]["event_id"]) == std::stoull(entries[i - 1]["event_id"]) + 1);
    // The stdout log is off once a stream is configured (event_log: auto).
    CHECK(d->out().empty());
}

TEST_CASE("a unix socket address with a database, a password and a client name") {
    RedisServer redis;
    RedisProbe probe(redis.port());
    REQUIRE(probe.command({"CONFIG", "SET", "requirepass", "s3cret:@"}) == "OK");
    REQUIRE(probe.command({"AUTH", "s3cret:@"}) == "OK");
    auto d = Daemon::start("stream_redis: {addr: 'unix://:s3cret%3A%40@" + redis.unixSocket() +
                           "?db=3&client_name=wsgw-stream', stream_name: ux}\n" +
                           "connection_redis_sync: {addr: 'redis://:wrong@127.0.0.1:" + std::to_string(redis.port()) +
                           "/0'}\n");
    // The stream logs in over the unix socket, with the percent-decoded password, in db 3.
    auto ws = connect(*d);
    REQUIRE(probe.command({"SELECT", "3"}) == "OK");
    REQUIRE(eventually([&] { return probe.command({"XLEN", "ux"}) == "1"; }));
    CHECK(probe.command({"CLIENT", "LIST"}).find("name=wsgw-stream") != std::string::npos);
    // A wrong password is an outage with a clear reason, retried with back-off.
    CHECK_MESSAGE(eventually([&] { return d->err().find("connection mirror 'redis-mirror' is down: AUTH refused") != std::string::npos; }),
                  d->err());
    CHECK(httpGet(d->controlPort, "/readyz").body.find("redis-mirror") != std::string::npos);
}

TEST_CASE("stream names from tags and JSON variables, with defaults and the missing marker") {
    RedisServer redis;
    auto d = Daemon::start("stream_redis: {addr: '" + redis.url(2) + "', stream_name: 'ev.{tag.room:lobby}.{json.command}'}\n");
    RedisProbe probe(redis.port());
    REQUIRE(probe.command({"SELECT", "2"}) == "OK");
    auto ws = connect(*d, "/json");
    REQUIRE(ws->sendText(R"({"data":{"command":"join"}})"));
    REQUIRE(ws->sendText("not json"));
    REQUIRE(ws->sendText(R"({"data":{"other":1}})"));
    std::string id = idOf(*d);
    REQUIRE(httpPost(d->controlPort, "/settags?id=" + id, "room=r1").body == "1");
    REQUIRE(ws->sendText(R"({"data":{"command":"leave"}})"));
    REQUIRE(eventually([&] { return probe.command({"XLEN", "ev.r1.leave"}) == "1"; }));
    CHECK(probe.command({"XLEN", "ev.lobby.join"}) == "1");
    CHECK(probe.command({"XLEN", "ev.lobby._"}) == "3"); // open, "not json", no command
    auto entries = probe.stream("ev.r1.leave");
    CHECK(entries[0]["tags"] == "room=r1");
}

TEST_CASE("stream_maxlen bounds a stream") {
    RedisServer redis;
    auto d = Daemon::start("stream_redis: {addr: '" + redis.url() + "', stream_maxlen: 10}\n");
    RedisProbe probe(redis.port());
    auto ws = connect(*d, "/raw");
    for (int i = 0; i < 600; ++i) REQUIRE(ws->sendText("m" + std::to_string(i)));
    REQUIRE(eventually([&] { return metric(*d, "wsgw_events_published_total{sink=\"redis\",backend=\"stream_redis\"}") == 601; }));
    long len = std::stol(probe.command({"XLEN", "connectionevents"}));
    CHECK(len < 601);
    CHECK(len <= 10 + 200); // "~": Redis trims whole nodes of up to 100 entries
    auto entries = probe.stream("connectionevents");
    CHECK(entries.back()["message"] == "m599");
}

TEST_CASE("an outage (Redis stopped) loses nothing: every event arrives once Redis answers again") {
    RedisServer redis;
    auto d = Daemon::start("stream_redis: {addr: '" + redis.url() + "'}\n");
    RedisProbe probe(redis.port());
    auto ws = connect(*d, "/raw");
    REQUIRE(eventually([&] { return probe.command({"XLEN", "connectionevents"}) == "1"; }));
    constexpr int kMessages = 300;
    for (int i = 0; i < kMessages; ++i) {
        if (i == 100) redis.pause();
        if (i == 200) {
            // Stopped for a while: wsgwd notices (no reply within its timeout) and keeps events.
            std::this_thread::sleep_for(1500ms);
            CHECK(metric(*d, "wsgw_event_backlog{sink=\"redis\",backend=\"stream_redis\"}") >= 100);
            redis.resume();
        }
        REQUIRE(ws->sendText("m" + std::to_string(i)));
        std::this_thread::sleep_for(2ms);
    }
    std::map<std::string, int> seen;
    REQUIRE(eventually([&] { return (seen = messagesIn(probe)).size() == kMessages; }, 20000ms));
    int duplicates = extraCopies(seen);
    MESSAGE("duplicates after the outage (at-least-once): " << duplicates);
    CHECK(duplicates <= 512); // at most one retried batch
    CHECK(metric(*d, "wsgw_events_dropped_total{sink=\"redis\",backend=\"stream_redis\"}") == 0);
    CHECK(eventually([&] { return httpGet(d->controlPort, "/readyz").status == 200; }));
}

TEST_CASE("a stop longer than timeout_ms: wsgwd reconnects, retries, loses nothing (duplicates counted)") {
    RedisServer redis;
    auto d = Daemon::start("stream_redis: {addr: '" + redis.url() + "', timeout_ms: 300}\n");
    RedisProbe probe(redis.port());
    auto ws = connect(*d, "/raw");
    REQUIRE(eventually([&] { return probe.command({"XLEN", "connectionevents"}) == "1"; }));
    redis.pause();
    for (int i = 0; i < 100; ++i) {
        REQUIRE(ws->sendText("p" + std::to_string(i)));
        std::this_thread::sleep_for(10ms);
    }
    REQUIRE(eventually([&] { return d->err().find("event sink 'redis' is down") != std::string::npos; }));
    CHECK(httpGet(d->controlPort, "/readyz").status == 503);
    redis.resume();
    std::map<std::string, int> seen;
    REQUIRE(eventually([&] { return (seen = messagesIn(probe)).size() == 100; }, 20000ms));
    int duplicates = extraCopies(seen);
    MESSAGE("duplicates after a timed-out outage (at-least-once): " << duplicates);
    CHECK(eventually([&] { return httpGet(d->controlPort, "/readyz").status == 200; }));
}

TEST_CASE("a restarted Redis (same port) gets the events sent while it was down") {
    RedisServer redis;
    auto d = Daemon::start("stream_redis: {addr: '" + redis.url() + "'}\n");
    auto ws = connect(*d, "/raw");
    // Acknowledged, not just written: else the open event is retried into the new server.
    REQUIRE(eventually([&] { return metric(*d, "wsgw_events_published_total{sink=\"redis\",backend=\"stream_redis\"}") == 1; }));
    redis.kill();
    for (int i = 0; i < 50; ++i) REQUIRE(ws->sendText("while-down-" + std::to_string(i)));
    REQUIRE(eventually([&] { return httpGet(d->controlPort, "/readyz").status == 503; }));
    CHECK(httpGet(d->controlPort, "/readyz").body.find("event sink 'redis' is not connected") != std::string::npos);
    redis.start();
    RedisProbe probe(redis.port());
    REQUIRE_MESSAGE(eventually([&] { return probe.command({"XLEN", "connectionevents"}) == "50"; }, 20000ms),
                    "XLEN " << probe.command({"XLEN", "connectionevents"}) << "; wsgwd's log:\n" << d->err());
    auto entries = probe.stream("connectionevents");
    for (int i = 0; i < 50; ++i) CHECK(entries[static_cast<std::size_t>(i)]["message"] == "while-down-" + std::to_string(i));
}

TEST_CASE("a tiny backlog with drop_oldest: memory stays bounded, the newest survive, drops are counted") {
    RedisServer redis;
    auto d = Daemon::start("backlog_max_events: 20\nstream_redis: {addr: '" + redis.url() + "'}\n");
    auto ws = connect(*d, "/raw");
    // The open event must be in the old server before it goes (with its data).
    REQUIRE(eventually([&] { return metric(*d, "wsgw_events_published_total{sink=\"redis\",backend=\"stream_redis\"}") == 1; }));
    redis.kill();
    for (int i = 0; i < 100; ++i) REQUIRE(ws->sendText("m" + std::to_string(i)));
    REQUIRE(eventually([&] { return metric(*d, "wsgw_events_dropped_total{sink=\"redis\",backend=\"stream_redis\"}") >= 80; }));
    CHECK(metric(*d, "wsgw_event_backlog{sink=\"redis\",backend=\"stream_redis\"}") <= 20);
    redis.start();
    RedisProbe probe(redis.port());
    REQUIRE(eventually([&] { return probe.command({"XLEN", "connectionevents"}) == "20"; }, 20000ms));
    auto entries = probe.stream("connectionevents");
    CHECK(entries.back()["message"] == "m99");
    CHECK(entries.front()["message"] == "m80");
}

TEST_CASE("pause_reading: nothing is dropped; clients are not read while the backlog is full") {
    RedisServer redis;
    auto d = Daemon::start("backlog_max_events: 20\nbacklog_overflow: pause_reading\nstream_redis: {addr: '" +
                           redis.url() + "'}\n");
    auto ws = connect(*d, "/raw");
    REQUIRE(eventually([&] { return metric(*d, "wsgw_events_published_total{sink=\"redis\",backend=\"stream_redis\"}") == 1; }));
    redis.kill();
    for (int i = 0; i < 100; ++i) REQUIRE(ws->sendText("m" + std::to_string(i)));
    REQUIRE(eventually([&] { return metric(*d, "wsgw_reading_paused") == 1; }));
    // Reading stopped: the backlog stays near its bound, the rest waits in the socket.
    std::this_thread::sleep_for(300ms);
    CHECK(metric(*d, "wsgw_event_backlog{sink=\"redis\",backend=\"stream_redis\"}") <= 40);
    CHECK(metric(*d, "wsgw_events_dropped_total{sink=\"redis\",backend=\"stream_redis\"}") == 0);
    // New connections would add open events to the full backlog: refused until it drains.
    wsgw::test::WsClient late;
    auto refused = late.connect("127.0.0.1", d->wsPort, "/raw");
    CHECK(refused.status == 503);
    CHECK(refused.body.find("event backlog full") != std::string::npos);
    redis.start();
    RedisProbe probe(redis.port());
    REQUIRE_MESSAGE(eventually([&] { return probe.command({"XLEN", "connectionevents"}) == "100"; }, 20000ms),
                    "XLEN " << probe.command({"XLEN", "connectionevents"}) << "; wsgwd's log:\n" << d->err());
    CHECK(metric(*d, "wsgw_reading_paused") == 0);
    auto entries = probe.stream("connectionevents");
    for (int i = 0; i < 100; ++i) CHECK(entries[static_cast<std::size_t>(i)]["message"] == "m" + std::to_string(i));
}

TEST_CASE("Redis unreachable at start: wsgwd serves WebSockets; /readyz says why until Redis is up") {
    std::uint16_t port = freePort();
    auto d = Daemon::start("stream_redis: {addr: 'redis://127.0.0.1:" + std::to_string(port) + "'}\n");
    auto ready = httpGet(d->controlPort, "/readyz");
    CHECK(ready.status == 503);
    CHECK(ready.body.find("not ready: event sink 'redis' is not connected") == 0);
    auto ws = connect(*d);
    REQUIRE(ws->sendText("early"));
    REQUIRE(httpPost(d->controlPort, "/send?group=default", "served").body == "1");
    CHECK(ws->receive(2000ms).data == "served");
    CHECK(eventually([&] { return d->err().find("event sink 'redis' is down: cannot connect to Redis") != std::string::npos; }));
    RedisServer redis(port);
    RedisProbe probe(port);
    REQUIRE(eventually([&] { return probe.command({"XLEN", "connectionevents"}) == "2"; }, 20000ms));
    CHECK(httpGet(d->controlPort, "/readyz").status == 200);
    // One warning for the outage, not one per retry.
    std::string log = d->err();
    std::size_t warnings = 0;
    for (auto at = log.find("is down"); at != std::string::npos; at = log.find("is down", at + 1)) ++warnings;
    CHECK(warnings == 1);
}

TEST_CASE("the original's backend flow: XREADGROUP the events, answer through /send?id=, /settags, /send?tag=") {
    RedisServer redis;
    RedisProbe backend(redis.port());
    // The backend's consumer group exists before any event, as a deployed backend's would.
    REQUIRE(backend.command({"XGROUP", "CREATE", "connectionevents", "backend", "$", "MKSTREAM"}) == "OK");
    auto d = Daemon::start("stream_redis: {addr: '" + redis.url() + "'}\n");
    auto ws = connect(*d, "/json");
    REQUIRE(ws->sendText(R"({"command": "join", "data": {"room": "r1"}})"));

    // The backend reads until the message arrives, acknowledging what it read.
    std::map<std::string, std::string> message;
    std::vector<std::string> actions;
    auto until = std::chrono::steady_clock::now() + 10s;
    while (message.empty() && std::chrono::steady_clock::now() < until) {
        for (auto &e : backend.readGroup("backend", "b1", "connectionevents", 500)) {
            actions.push_back(e["action"]);
            CHECK(backend.command({"XACK", "connectionevents", "backend", e["_id"]}) == "1");
            if (e["action"] == "message") message = e;
        }
    }
    REQUIRE_FALSE(message.empty());
    CHECK(actions == std::vector<std::string>{"open", "message"});
    CHECK(message["type"] == "text");
    const std::string id = message["connection"];
    CHECK(id == idOf(*d));

    // It answers that one connection, tags it, and then addresses it by the new tag.
    CHECK(httpPost(d->controlPort, "/send?id=" + id, "welcome").body == "1");
    CHECK(httpPost(d->controlPort, "/settags?id=" + id, "room=r1").body == "1");
    CHECK(httpPost(d->controlPort, "/send?room=r1", "hello room r1").body == "1");
    CHECK(ws->receive(3000ms).data == "welcome");
    CHECK(ws->receive(3000ms).data == "hello room r1");
}

TEST_CASE("shutdown flushes the backlog to Redis") {
    RedisServer redis;
    auto d = Daemon::start("stream_redis: {addr: '" + redis.url() + "'}\n");
    std::vector<std::unique_ptr<WsClient>> clients;
    for (int i = 0; i < 5; ++i) clients.push_back(connect(*d, "/raw"));
    for (auto &c : clients) REQUIRE(c->sendText("bye"));
    // The clients answer the 1012 like real ones, so the drain does not wait out their silence.
    auto stopped = std::async(std::launch::async, [&] { return d->stop(SIGTERM, 20000ms); });
    for (auto &c : clients) CHECK(c->waitClosed(15000ms).code == 1012);
    CHECK(stopped.get() == 0);
    RedisProbe probe(redis.port());
    CHECK(probe.command({"XLEN", "connectionevents"}) == "15"); // 5 open, 5 message, 5 close
}
