// stream_amqp against a real RabbitMQ: what reaches the broker, routing keys, headers, confirms
// through a broker restart, bounded backlogs, clear failures (credentials, unreachable broker, an
// exchange of another type, a frozen broker noticed by heartbeats), and bounds: a memory alarm
// (connection.blocked) and a frozen broker never hold the sink or wsgwd's shutdown.
//
// One private broker (tests/integration/rabbitmq.h) serves every test case; each case uses its
// own exchange and queue names. Exit code 77 (meson: skipped) when rabbitmq-server is missing, or
// a failure under CI=true (tests/support/skip.h).
#define DOCTEST_CONFIG_IMPLEMENT
#include "clients.h"
#include "harness.h"
#include "rabbitmq.h"
#include "skip.h"
#if WSGW_TEST_WITH_REDIS
#include "redis_server.h"
#endif

#include "ws_client.h"

#include <doctest/doctest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <thread>

using namespace wsgw::itest;
using wsgw::test::WsClient;
using json = nlohmann::json;

namespace {

std::unique_ptr<RabbitBroker> theBroker;

RabbitBroker &broker() {
    if (!theBroker) {
        theBroker = std::make_unique<RabbitBroker>();
        std::string error;
        auto t0 = std::chrono::steady_clock::now();
        if (!theBroker->start(&error)) {
            std::fprintf(stderr, "%s\n", error.c_str());
            throw std::runtime_error("cannot start rabbitmq-server");
        }
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
        std::printf("rabbitmq-server up on port %u after %lld ms\n", broker().port(), (long long)ms.count());
    }
    return *theBroker;
}

std::string amqpConfig(const std::string &url, const std::string &exchange, const std::string &queue,
                       const std::string &more = "") {
    std::string c = "stream_amqp:\n  addr: '" + url + "'\n  exchange: " + exchange + "\n";
    if (!queue.empty()) c += "  queue: " + queue + "\n";
    return c + more;
}

void closeClient(WsClient &ws) {
    REQUIRE(ws.sendClose(1000));
    ws.waitClosed(5000ms);
}

bool ready(Daemon &d) { return httpGet(d.controlPort, "/readyz").status == 200; }

std::size_t count(const std::string &haystack, const std::string &needle) {
    std::size_t n = 0;
    for (std::size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) ++n;
    return n;
}

// The line of `text` that contains `needle` (without the newline), or "".
std::string lineWith(const std::string &text, const std::string &needle) {
    std::size_t at = text.find(needle);
    if (at == std::string::npos) return {};
    std::size_t begin = text.rfind('\n', at);
    begin = begin == std::string::npos ? 0 : begin + 1;
    return text.substr(begin, text.find('\n', at) - begin);
}

std::vector<json> bodies(const std::vector<Delivery> &ds) {
    std::vector<json> out;
    for (auto &m : ds) out.push_back(json::parse(m.body));
    return out;
}

} // namespace

TEST_CASE("events reach RabbitMQ as persistent JSON with every field, routing keys and headers") {
    AmqpClient admin(broker().port());
    // The test binds a second queue to one routing key before wsgwd starts; declaring the exchange
    // the way wsgwd does lets it do so (and proves wsgwd's declaration is durable + topic).
    admin.declareExchange("t1", "topic");
    admin.declareQueue("t1-ping");
    admin.bindQueue("t1-ping", "t1", "room.r1.command-ping");

    auto d = Daemon::start("node_id: node-a\n" +
                           amqpConfig(broker().url(), "t1", "t1-all",
                                      "  routing_key: 'room.{tag.room:none}.command-{json.command:unknown_command}'\n"
                                      "  headers:\n    source: wsgw\n    env: test\n"));
    REQUIRE_MESSAGE(eventually([&] { return ready(*d); }, 10000ms), d->err());

    const auto before = std::chrono::system_clock::now();
    auto ws = connect(*d, "/json");
    REQUIRE(eventually([&] { return metric(*d, "wsgw_events_published_total{sink=\"amqp\",backend=\"stream_amqp\"}") >= 1; }));
    std::string status = httpGet(d->controlPort, "/status").body;
    REQUIRE(status.rfind("id=", 0) == 0);
    std::string id = status.substr(3, status.find_first_of(" \n") - 3);
    REQUIRE(httpPost(d->controlPort, "/settags?id=" + id, "room=r1").body == "1");
    REQUIRE(ws->sendText(R"({"data":{"command":"ping"}})"));
    REQUIRE(ws->sendText(R"({"data":{"command":"pong"}})"));
    REQUIRE(ws->sendText("not json"));
    REQUIRE(ws->sendBinary(std::string("\x00\xff\x10", 3)));
    // A routing key over AMQP's 255 bytes can never be published: refused for good and counted.
    REQUIRE(ws->sendText(R"({"data":{"command":")" + std::string(300, 'x') + R"("}})"));
    closeClient(*ws);

    auto all = admin.consume("t1-all", 6);
    REQUIRE(all.size() == 6);
    auto events = bodies(all);
    for (std::size_t i = 0; i < all.size(); ++i) {
        INFO("message " << i << ": " << all[i].body);
        CHECK(all[i].exchange == "t1");
        CHECK(all[i].contentType == "application/json");
        CHECK(all[i].deliveryMode == 2);
        auto sent = std::chrono::system_clock::time_point(std::chrono::seconds(all[i].timestamp));
        CHECK(sent >= std::chrono::time_point_cast<std::chrono::seconds>(before));
        CHECK(sent <= std::chrono::system_clock::now());
        CHECK(all[i].headers == std::map<std::string, std::string>{{"source", "wsgw"}, {"env", "test"}});
        CHECK(events[i]["connection"] == id);
        CHECK(events[i]["node"] == "node-a");
        CHECK(events[i]["endpoint"] == "/json");
        if (i < 5) CHECK(events[i]["event_id"].get<std::uint64_t>() == events[0]["event_id"].get<std::uint64_t>() + i);
    }
    CHECK(events[0]["action"] == "open");
    CHECK(events[0]["tags"] == "");
    CHECK(all[0].routingKey == "room.none.command-unknown_command");
    CHECK_FALSE(events[0].contains("message"));

    CHECK(events[1]["action"] == "message");
    CHECK(events[1]["type"] == "text");
    CHECK(events[1]["message"] == R"({"data":{"command":"ping"}})");
    CHECK(events[1]["tags"] == "room=r1");
    CHECK(all[1].routingKey == "room.r1.command-ping");
    CHECK(all[2].routingKey == "room.r1.command-pong");
    CHECK(events[3]["message"] == "not json");
    CHECK(all[3].routingKey == "room.r1.command-unknown_command");
    CHECK(events[4]["type"] == "binary");
    CHECK(events[4]["encoding"] == "base64");
    CHECK(events[4]["message"] == "AP8Q");
    CHECK(events[5]["action"] == "close");
    CHECK(events[5]["event_id"].get<std::uint64_t>() == events[0]["event_id"].get<std::uint64_t>() + 6); // +5 was refused
    CHECK(events[5]["tags"] == "room=r1");

    // Only the event with the bound key reached the second queue.
    auto ping = admin.consume("t1-ping", 1, 5000ms);
    REQUIRE(ping.size() == 1);
    CHECK(json::parse(ping[0].body)["message"] == R"({"data":{"command":"ping"}})");

    // A tag the routing key reads but the endpoint does not include (/connect includes group and
    // user): it shapes the key and stays out of `tags`.
    auto other = connect(*d, "/connect");
    REQUIRE(eventually([&] { return httpPost(d->controlPort, "/settags?group=default", "room=r2").body == "1"; }));
    REQUIRE(other->sendText("from /connect"));
    closeClient(*other);
    auto more = admin.consume("t1-all", 3);
    REQUIRE(more.size() == 3);
    CHECK(more[1].routingKey == "room.r2.command-unknown_command");
    CHECK(json::parse(more[1].body)["tags"] == "group=default");

    CHECK(metric(*d, "wsgw_events_rejected_total{sink=\"amqp\",backend=\"stream_amqp\"}") == 1);
    CHECK(metric(*d, "wsgw_event_sink_up{sink=\"amqp\",backend=\"stream_amqp\"}") == 1);
    // With a stream sink configured the stdout event log is off (event_log: auto).
    CHECK(d->out().empty());
    // wsgwd's declarations were durable topic exchange and durable queue: redeclaring them so
    // succeeds (the broker refuses a declaration that differs).
    admin.declareExchange("t1", "topic", true);
    admin.declareQueue("t1-all", true);
    CHECK(d->stop(SIGTERM) == 0);
}

TEST_CASE("a broker restart while clients send loses no event; backlogs stay within their bound") {
    // `a` keeps everything (a bound it never reaches); `b` has a tiny bound and drops the oldest.
    auto a = Daemon::start(amqpConfig(broker().url(), "t2", "t2-all") + "backlog_max_events: 100000\n");
    auto b = Daemon::start(amqpConfig(broker().url(), "t2b", "t2b-all") +
                           "backlog_max_events: 20\nbacklog_overflow: drop_oldest\n");
    REQUIRE(eventually([&] { return ready(*a) && ready(*b); }, 10000ms));

    std::atomic<bool> stop{false};
    std::atomic<std::size_t> sentA{0}, sentB{0};
    constexpr int kClients = 3;
    auto sender = [&](Daemon &d, std::atomic<std::size_t> &sent, int n) {
        std::vector<std::unique_ptr<WsClient>> clients;
        for (int i = 0; i < n; ++i) {
            auto ws = std::make_unique<WsClient>();
            if (!ws->connect("127.0.0.1", d.wsPort, "/connect").ok()) return;
            clients.push_back(std::move(ws));
        }
        // Bounded: a broker that restarts slowly on a loaded machine must not make the test
        // send (and then consume) without limit; 4,000 rounds last 20 s or more.
        for (std::size_t k = 0; !stop && k < 4000; ++k) {
            for (auto &ws : clients)
                if (ws->sendText("m" + std::to_string(k))) ++sent;
            std::this_thread::sleep_for(5ms);
        }
        for (auto &ws : clients) {
            (void)ws->sendClose(1000);
            ws->waitClosed(5000ms);
        }
    };
    std::thread ta(sender, std::ref(*a), std::ref(sentA), kClients);
    std::thread tb(sender, std::ref(*b), std::ref(sentB), 1);

    std::this_thread::sleep_for(500ms);
    broker().stop(/*andEpmd=*/false);
    CHECK(eventually([&] { return !ready(*a); }, 10000ms));
    std::size_t maxB = 0;
    for (int i = 0; i < 20; ++i) { // 2 s of outage while the clients keep sending
        maxB = std::max(maxB, static_cast<std::size_t>(metric(*b, "wsgw_event_backlog{sink=\"amqp\",backend=\"stream_amqp\"}")));
        std::this_thread::sleep_for(100ms);
    }
    CHECK(metric(*a, "wsgw_event_backlog{sink=\"amqp\",backend=\"stream_amqp\"}") > 20);
    CHECK(maxB <= 20);
    CHECK(metric(*b, "wsgw_events_dropped_total{sink=\"amqp\",backend=\"stream_amqp\"}") > 0);
    CHECK(a->err().find("event sink 'amqp' is down") != std::string::npos);

    std::string error;
    REQUIRE_MESSAGE(broker().start(&error), error);
    // The sinks reconnect after their back-off (at most 10 s).
    CHECK(eventually([&] { return ready(*a) && ready(*b); }, 20000ms));
    std::this_thread::sleep_for(300ms);
    stop = true;
    ta.join();
    tb.join();
    // Everything reaches the broker before the stop: what this test checks is the restart, not
    // the shutdown's flush time (shutdown_flush_s), which a loaded machine can outrun.
    CHECK(eventually([&] { return metric(*a, "wsgw_event_backlog{sink=\"amqp\",backend=\"stream_amqp\"}") == 0; },
                     60000ms));
    CHECK(a->stop(SIGTERM) == 0);

    const std::size_t expected = sentA + 2 * kClients; // messages plus an open and a close each
    AmqpClient admin(broker().port());
    auto got = admin.consume("t2-all", expected, 60000ms);
    std::set<std::uint64_t> ids;
    for (auto &e : bodies(got)) ids.insert(e["event_id"].get<std::uint64_t>());
    CHECK(ids.size() == expected); // duplicates (at-least-once) collapse here
    CHECK(*ids.rbegin() - *ids.begin() + 1 == expected); // and none is missing
    CHECK(metric(*b, "wsgw_event_backlog{sink=\"amqp\",backend=\"stream_amqp\"}") <= 20);
    MESSAGE(lineWith(a->err(), "is down"));
    MESSAGE("sent " << sentA.load() << " messages through the restart; " << got.size() << " deliveries for "
                    << expected << " events");
    admin.deleteQueue("t2-all");
    admin.deleteQueue("t2b-all");
}

TEST_CASE("wrong credentials or no broker: one clear log line, WebSockets keep working, /readyz says why") {
    std::uint16_t closedPort = freePort();
    auto bad = Daemon::start(amqpConfig(broker().url("guest", "wrong"), "t3", ""));
    auto gone = Daemon::start(amqpConfig("amqp://guest:guest@127.0.0.1:" + std::to_string(closedPort) + "/", "t3", ""));

    for (Daemon *d : {bad.get(), gone.get()}) {
        auto r = httpGet(d->controlPort, "/readyz");
        CHECK(r.status == 503);
        CHECK(r.body.find("event sink 'amqp' is not connected") != std::string::npos);
        CHECK(metric(*d, "wsgw_event_sink_up{sink=\"amqp\",backend=\"stream_amqp\"}") == 0);
        // WebSockets are served regardless, and commands reach the clients.
        auto ws = connect(*d, "/connect");
        REQUIRE(eventually([&] { return httpPost(d->controlPort, "/send?group=default", "hi").body == "1"; }));
        auto m = ws->receive(5000ms);
        CHECK(m.data == "hi");
        REQUIRE(ws->sendText("kept in the backlog"));
        closeClient(*ws);
    }
    CHECK(eventually([&] { return bad->err().find("login refused for user 'guest'") != std::string::npos; }));
    CHECK(eventually([&] { return gone->err().find("Connection refused") != std::string::npos; }));
    // Several retries later (back-off 0.1, 0.2, 0.4 ... s) the state was still logged once.
    std::this_thread::sleep_for(2000ms);
    CHECK(metric(*gone, "wsgw_event_backlog{sink=\"amqp\",backend=\"stream_amqp\"}") == 3);
    CHECK(count(bad->err(), "is down") == 1);
    CHECK(count(gone->err(), "is down") == 1);
    MESSAGE(lineWith(bad->err(), "is down"));
    MESSAGE(lineWith(gone->err(), "is down"));
    CHECK(metric(*gone, "wsgw_event_publish_failures_total{sink=\"amqp\",backend=\"stream_amqp\"}") >= 3);
    CHECK(bad->running());
    CHECK(gone->running());
}

TEST_CASE("an exchange of another type: the channel error is logged and retried until it is fixed") {
    AmqpClient admin(broker().port());
    admin.declareExchange("t4", "direct");
    // The stdout event log as a second sink: it carries on while the AMQP sink is down.
    auto d = Daemon::start(amqpConfig(broker().url(), "t4", "t4-all") + "event_log: stdout\n");
    CHECK(eventually([&] {
        return d->err().find("declaring exchange 't4' (durable, topic): the broker refused: 406 PRECONDITION_FAILED - "
                             "inequivalent arg 'type'") != std::string::npos;
    }));
    CHECK_FALSE(ready(*d));
    auto ws = connect(*d, "/connect");
    REQUIRE(ws->sendText("waits for the fix"));
    closeClient(*ws);
    CHECK(d->waitEvent([](const json &e) { return e["action"] == "close"; }));
    CHECK(metric(*d, "wsgw_event_backlog{sink=\"amqp\",backend=\"stream_amqp\"}") == 3);

    admin.deleteExchange("t4");
    CHECK(eventually([&] { return ready(*d); }, 15000ms));
    auto got = admin.consume("t4-all", 3);
    CHECK(got.size() == 3);
    CHECK(d->err().find("event sink 'amqp' connected") != std::string::npos);
    admin.deleteQueue("t4-all");
}

TEST_CASE("heartbeats notice a broker that stopped answering") {
    auto d = Daemon::start(amqpConfig(broker().url() + "?heartbeat=1", "t5", ""));
    REQUIRE(eventually([&] { return ready(*d); }, 10000ms));
    REQUIRE(broker().freeze());
    bool noticed = eventually([&] { return !ready(*d); }, 10000ms);
    broker().thaw();
    CHECK(noticed);
    CHECK(d->err().find("no heartbeat from the broker") != std::string::npos);
    CHECK(eventually([&] { return ready(*d); }, 25000ms));
}

// Clears the broker's memory alarm when the test case ends, however it ends.
struct MemoryAlarm {
    MemoryAlarm() {
        std::string error;
        REQUIRE_MESSAGE(broker().setMemoryAlarm(true, &error), error);
    }
    ~MemoryAlarm() {
        std::string error;
        if (!broker().setMemoryAlarm(false, &error)) std::fprintf(stderr, "clearing the memory alarm: %s\n", error.c_str());
    }
    MemoryAlarm(const MemoryAlarm &) = delete;
    MemoryAlarm &operator=(const MemoryAlarm &) = delete;
};

TEST_CASE("a memory alarm blocks publishing: events are kept, /readyz says so, SIGTERM meanwhile exits in time, "
          "and after it every event arrives") {
    // `kept` rides the alarm out. `quitting` is stopped during it with 16 MiB of events on their
    // way, more than the TCP buffers between it and the broker hold: a sink that kept writing to
    // the blocked broker would never return from the write (rabbitmq-c has no send timeout).
    constexpr int kDrainS = 1, kFlushS = 2;
    auto kept = Daemon::start(amqpConfig(broker().url(), "t8", "t8-all"));
    auto quitting = Daemon::start(amqpConfig(broker().url(), "t8q", "t8q-all") + "drain_s: " + std::to_string(kDrainS) +
                                  "\nshutdown_flush_s: " + std::to_string(kFlushS) + "\n");
    REQUIRE_MESSAGE(eventually([&] { return ready(*kept) && ready(*quitting); }, 10000ms), kept->err());
    auto ws = connect(*kept, "/connect");
    REQUIRE(ws->sendText("before the alarm"));
    REQUIRE(eventually([&] { return metric(*kept, "wsgw_events_published_total{sink=\"amqp\",backend=\"stream_amqp\"}") >= 2; }));

    std::size_t sent = 2; // the open and the message above
    {
        MemoryAlarm alarm;
        MESSAGE("alarms: " << broker().alarms());
        // 40 KiB each (under the 64 KiB limit), incompressible enough to stay large on the wire.
        std::string filler;
        for (std::size_t i = 0; filler.size() < 40 * 1024; ++i) filler += std::to_string(i * 2654435761u % 1000003) + ",";
        auto q = connect(*quitting, "/connect");
        for (int i = 0; i < 400; ++i) REQUIRE(q->sendText(std::to_string(i) + ":" + filler));
        for (int i = 0; i < 50; ++i, ++sent) REQUIRE(ws->sendText("during the alarm " + std::to_string(i)));

        // Both sinks learn that the broker blocked them and say why; the events wait.
        for (Daemon *d : {kept.get(), quitting.get()}) {
            CHECK(eventually([&] { return !ready(*d); }, 15000ms));
            CHECK(eventually([&] { return d->err().find("blocked publishing: low on memory") != std::string::npos; },
                             15000ms));
            auto r = httpGet(d->controlPort, "/readyz");
            CHECK(r.status == 503);
            CHECK(r.body.find("event sink 'amqp' is not connected") != std::string::npos);
            CHECK(metric(*d, "wsgw_event_sink_up{sink=\"amqp\",backend=\"stream_amqp\"}") == 0);
        }
        MESSAGE(lineWith(kept->err(), "is down"));
        // (The publish that makes the broker block may still go through.)
        CHECK(eventually([&] { return metric(*kept, "wsgw_event_backlog{sink=\"amqp\",backend=\"stream_amqp\"}") >= 45; }));
        CHECK(metric(*kept, "wsgw_events_dropped_total{sink=\"amqp\",backend=\"stream_amqp\"}") == 0);

        // SIGTERM while blocked: the sink gives up when the flush time is over (its events are
        // lost, as after any flush that runs out), and wsgwd exits 0 in time.
        (void)q->sendClose(1000);
        const auto t0 = std::chrono::steady_clock::now();
        const int rc = quitting->stop(SIGTERM, std::chrono::seconds(kDrainS + kFlushS + 30));
        const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
        CHECK(rc == 0);
        CHECK(took < std::chrono::seconds(kDrainS + kFlushS + 3));
        MESSAGE("wsgwd exited " << rc << " " << took.count() << " ms after SIGTERM, with the broker blocking it");
        // `kept` is still blocked and still holds everything.
        std::this_thread::sleep_for(500ms);
        CHECK_FALSE(ready(*kept));
    } // the alarm clears

    closeClient(*ws);
    ++sent; // the close
    CHECK(eventually([&] { return ready(*kept); }, 20000ms)); // after its back-off (at most 10 s)
    // Duplicates (at least once: what was written before the block goes out again) collapse in
    // the set of ids; consume until every id is there.
    AmqpClient admin(broker().port());
    std::set<std::uint64_t> ids;
    std::size_t deliveries = 0;
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (ids.size() < sent && std::chrono::steady_clock::now() < until) {
        auto got = admin.consume("t8-all", 1, 1000ms);
        deliveries += got.size();
        for (auto &e : bodies(got)) ids.insert(e["event_id"].get<std::uint64_t>());
    }
    REQUIRE(!ids.empty());
    CHECK(ids.size() == sent);
    CHECK(*ids.rbegin() - *ids.begin() + 1 == sent); // none missing
    CHECK(eventually([&] { return metric(*kept, "wsgw_event_backlog{sink=\"amqp\",backend=\"stream_amqp\"}") == 0; }));
    MESSAGE(deliveries << " deliveries for " << sent << " events");
    CHECK(kept->err().find("event sink 'amqp' connected") != std::string::npos);
    CHECK(kept->stop(SIGTERM) == 0);
    admin.deleteQueue("t8-all");
    admin.deleteQueue("t8q-all");
}

TEST_CASE("a broker frozen while a large event is written: the write gives up after the reply timeout") {
    // One 16 MiB event, more than the TCP buffers between wsgwd and the broker hold: the sink's
    // write waits for a broker that reads nothing (and sends no connection.blocked). rabbitmq-c
    // would wait for ever; the sink's watchdog ends the write after the reply timeout (10 s)
    // plus 1 s, and SIGTERM meanwhile waits for that at most.
    constexpr int kDrainS = 1, kFlushS = 1, kWriteBoundS = 11;
    auto d = Daemon::start(amqpConfig(broker().url() + "?heartbeat=0", "t9", "") + "drain_s: " +
                               std::to_string(kDrainS) + "\nshutdown_flush_s: " + std::to_string(kFlushS) + "\n",
                           {}, 20 * 1024);
    REQUIRE(eventually([&] { return ready(*d); }, 10000ms));
    auto ws = connect(*d, "/json"); // no compression, the global 20 MiB limit
    REQUIRE(eventually([&] { return metric(*d, "wsgw_events_published_total{sink=\"amqp\",backend=\"stream_amqp\"}") >= 1; }));
    std::string big;
    for (std::size_t i = 0; big.size() < 16u << 20; ++i) big += std::to_string(i * 2654435761u % 1000003) + ",";
    REQUIRE(broker().freeze());
    struct Thaw {
        ~Thaw() { broker().thaw(); }
    } thaw;
    REQUIRE(ws->sendText(big));
    // Wait until wsgwd has the event (in the sink's backlog, where it stays: it is never
    // confirmed), then a moment for the sink to be inside the write.
    REQUIRE(eventually([&] { return metric(*d, "wsgw_event_backlog{sink=\"amqp\",backend=\"stream_amqp\"}") >= 1; }, 10000ms));
    std::this_thread::sleep_for(1000ms);
    // SIGTERM: the drain, then the flush, which waits for the write in progress (at most 11 s).
    const auto t0 = std::chrono::steady_clock::now();
    const int rc = d->stop(SIGTERM, std::chrono::seconds(kDrainS + kFlushS + kWriteBoundS + 30));
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
    CHECK(rc == 0);
    CHECK(took < std::chrono::seconds(kDrainS + kWriteBoundS + 3));
    CHECK(d->err().find("publishing: no progress with the broker at 127.0.0.1:" + std::to_string(broker().port()) +
                        " for 11 s (is it frozen, or the network down?); connection dropped") != std::string::npos);
    MESSAGE(lineWith(d->err(), "is down"));
    MESSAGE("wsgwd exited " << rc << " " << took.count() << " ms after SIGTERM, writing 16 MiB to a frozen broker");
}

TEST_CASE("amqps: TLS with the broker's certificate and name verified") {
    if (broker().tlsPort() == 0) {
        wsgw::test::skipCase("no openssl command to make the broker's certificates (Debian package openssl)");
        return;
    }
    const std::string url = "amqps://guest:guest@localhost:" + std::to_string(broker().tlsPort()) + "/";
    // wsgwd takes the CA bundle from SSL_CERT_FILE, as OpenSSL does.
    setenv("SSL_CERT_FILE", broker().caFile().c_str(), 1);
    auto d = Daemon::start(amqpConfig(url, "t7", "t7-all"));
    // A CA that did not sign the broker's certificate: the connection is refused.
    setenv("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt", 1);
    auto untrusted = Daemon::start(amqpConfig(url, "t7", ""));
    unsetenv("SSL_CERT_FILE");

    REQUIRE_MESSAGE(eventually([&] { return ready(*d); }, 10000ms), d->err());
    auto ws = connect(*d, "/connect");
    REQUIRE(ws->sendText("over TLS"));
    closeClient(*ws);
    AmqpClient admin(broker().port());
    auto got = bodies(admin.consume("t7-all", 3));
    REQUIRE(got.size() == 3);
    CHECK(got[1]["message"] == "over TLS");
    admin.deleteQueue("t7-all");

    CHECK(eventually([&] { return untrusted->err().find("is down: TLS with localhost:") != std::string::npos; }));
    MESSAGE(lineWith(untrusted->err(), "is down"));
    CHECK_FALSE(ready(*untrusted));
}

#if WSGW_TEST_WITH_REDIS
TEST_CASE("stream_redis and stream_amqp together: every event reaches both") {
    if (!haveRedisServer()) {
        wsgw::test::skipCase("redis-server is not installed (Debian package redis-server; scripts/bootstrap installs it)");
        return;
    }
    RedisServer redis;
    RedisProbe probe(redis.port());
    AmqpClient admin(broker().port());
    auto d = Daemon::start("stream_redis: {addr: '" + redis.url() + "'}\n" + amqpConfig(broker().url(), "t6", "t6-all"));
    REQUIRE(eventually([&] { return ready(*d); }, 10000ms));
    auto ws = connect(*d, "/connect");
    REQUIRE(ws->sendText("to both"));
    closeClient(*ws);
    auto got = bodies(admin.consume("t6-all", 3));
    std::vector<std::map<std::string, std::string>> entries;
    REQUIRE(eventually([&] { return (entries = probe.stream("connectionevents")).size() == 3; }));
    REQUIRE(got.size() == 3);
    for (std::size_t i = 0; i < 3; ++i) {
        CHECK(got[i]["event_id"].get<std::uint64_t>() == std::stoull(entries[i]["event_id"]));
        CHECK(got[i]["action"] == entries[i]["action"]);
        CHECK(got[i]["connection"] == entries[i]["connection"]);
    }
    CHECK(got[1]["message"] == "to both");
    admin.deleteQueue("t6-all");
}
#endif

TEST_CASE("a stream_amqp URL option that is not a number is refused (--check-config: exit code 1)") {
    Daemon bad(testConfig(freePort(), freePort(), amqpConfig("amqp://127.0.0.1/?heartbeat=soon", "x", "")),
               {"--check-config"});
    CHECK(bad.wait(10000ms) == 1);
    CHECK(bad.err().find("stream_amqp.addr: heartbeat='soon': use seconds, 0 to 65535") != std::string::npos);
    Daemon good(testConfig(freePort(), freePort(), amqpConfig("amqp://127.0.0.1/?heartbeat=5&channel_max=9", "x", "")),
                {"--check-config"});
    CHECK(good.wait(10000ms) == 0);
}

int main(int argc, char **argv) {
    if (!RabbitBroker::installed())
        return wsgw::test::missingPrerequisite("rabbitmq-server is not installed (Debian package rabbitmq-server; "
                                               "scripts/bootstrap installs it)");
    doctest::Context context(argc, argv);
    int rc = context.run();
    theBroker.reset(); // stops the broker and its epmd
    if (context.shouldExit()) return rc;
    return wsgw::test::finish(rc);
}
