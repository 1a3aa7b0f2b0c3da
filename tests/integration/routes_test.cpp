// Routing endpoints to backends against real servers: two redis-servers, an HTTP backend
// (python3's http.server) and, when rabbitmq-server is installed, a RabbitMQ node with two
// vhosts. Each backend gets exactly its endpoints' events, in order; one backend stopped
// (SIGSTOP) holds no other back and gets what it missed once back; reloads add, remove and
// re-route backends; config errors name the line.
#include "clients.h"
#include "harness.h"
#include "http_backend.h"
#include "redis_server.h"
#include "skip.h"
#if WSGW_TEST_WITH_AMQP
#include "rabbitmq.h"
#endif

#include "ws_client.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <csignal>
#include <memory>
#include <thread>

using namespace wsgw::itest;
using wsgw::test::WsClient;
using json = nlohmann::json;
using Entry = std::map<std::string, std::string>;

namespace {

const wsgw::test::Prerequisite redisServer{"redis-server is not installed (Debian package redis-server; "
                                           "scripts/bootstrap installs it)",
                                           [] { return haveRedisServer(); }};
const wsgw::test::Prerequisite httpBackend{"python3 is not installed (the HTTP backend is python3's http.server)",
                                           [] { return haveHttpBackend(); }};

// A config with /chat, /pay and /legacy, and `sinks` (backends: and top-level keys) appended.
struct Ports {
    std::uint16_t ws = freePort();
    std::uint16_t control = freePort();
};

std::string routesConfig(const Ports &p, const std::string &sinks) {
    return "listen_addr: 127.0.0.1:" + std::to_string(p.ws) + "\ncontrol_addr: 127.0.0.1:" +
           std::to_string(p.control) +
           "\nthreads: 2\n"
           "endpoints:\n"
           "  - path: /chat\n"
           "    backends: [chat, audit]\n"
           "  - path: /pay\n"
           "    backends: [billing, audit]\n"
           "  - path: /legacy\n" +
           sinks;
}

std::unique_ptr<Daemon> startDaemon(const Ports &p, const std::string &yaml) {
    auto d = std::make_unique<Daemon>(yaml, std::vector<std::string>{}, p.control);
    d->wsPort = p.ws;
    d->controlPort = p.control;
    return d;
}

std::unique_ptr<WsClient> client(Daemon &d, const std::string &path) { return connect(d, path); }

// The messages of a Redis stream, in stream order, and the endpoint of every entry.
std::vector<std::string> messagesOf(const std::vector<Entry> &entries) {
    std::vector<std::string> out;
    for (const Entry &e : entries)
        if (e.at("action") == "message") out.push_back(e.at("message"));
    return out;
}

// What the HTTP backend received at `path`, as events.
std::vector<json> httpEvents(const HttpBackend &b, const std::string &path) {
    std::vector<json> out;
    for (const json &r : b.received())
        if (r["path"] == path && r["status"] == 200)
            for (const json &e : json::parse(r["body"].get<std::string>())) out.push_back(e);
    return out;
}

std::vector<std::string> sent(const std::string &prefix, int n) {
    std::vector<std::string> v;
    for (int i = 0; i < n; ++i) v.push_back(prefix + std::to_string(i));
    return v;
}

void sendAll(WsClient &ws, const std::vector<std::string> &messages) {
    for (const std::string &m : messages) REQUIRE(ws.sendText(m));
}

// Events with the same message counted once (at-least-once delivery may repeat a batch).
std::vector<std::string> distinctInOrder(const std::vector<std::string> &v) {
    std::vector<std::string> out;
    for (const std::string &s : v)
        if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
    return out;
}

const std::string kAuditHttp = "  audit:\n    http: {url: '%AUDIT%', batch_ms: 0}\n";

std::string withAudit(const HttpBackend &audit) {
    std::string s = kAuditHttp;
    s.replace(s.find("%AUDIT%"), 7, audit.url("/audit"));
    return s;
}

} // namespace

TEST_CASE("each backend receives exactly its endpoints' events, in order, and nothing else") {
    RedisServer chatRedis, billingRedis;
    HttpBackend audit;
    Ports p;
    // billing takes messages only; /legacy names no backend: the top-level stream_redis.
    auto d = startDaemon(p, routesConfig(p, "stream_redis: {addr: '" + billingRedis.url(5) +
                                                "', stream_name: legacy}\n"
                                                "backends:\n"
                                                "  chat:\n    redis: {addr: '" +
                                                chatRedis.url() +
                                                "', stream_name: 'chat.{tag.room:lobby}'}\n"
                                                "  billing:\n    redis: {addr: '" +
                                                billingRedis.url() +
                                                "', stream_name: billing}\n    actions: [message]\n" +
                                                withAudit(audit)));
    // The startup log lists each endpoint's route.
    CHECK(eventually([&] { return d->err().find("Events of /chat -> chat (redis), audit (http)") != std::string::npos; }));
    CHECK(d->err().find("Events of /legacy -> stream_redis (the top-level sinks)") != std::string::npos);

    auto chat = client(*d, "/chat");
    auto pay = client(*d, "/pay");
    auto legacy = client(*d, "/legacy");
    const auto chatMsgs = sent("c", 50), payMsgs = sent("p", 50), legacyMsgs = sent("l", 50);
    for (int i = 0; i < 50; ++i) {
        REQUIRE(chat->sendText(chatMsgs[i]));
        REQUIRE(pay->sendText(payMsgs[i]));
        REQUIRE(legacy->sendText(legacyMsgs[i]));
    }
    RedisProbe chatProbe(chatRedis.port()), billingProbe(billingRedis.port());
    REQUIRE(eventually([&] { return messagesOf(chatProbe.stream("chat.lobby")).size() >= 50; }, 10000ms));
    REQUIRE(eventually([&] { return billingProbe.stream("billing").size() >= 50; }, 10000ms));
    REQUIRE(eventually([&] { return httpEvents(audit, "/audit").size() >= 102; }, 10000ms));
    REQUIRE(billingProbe.command({"SELECT", "5"}) == "OK");
    REQUIRE(eventually([&] { return billingProbe.stream("legacy").size() >= 51; }, 10000ms));
    REQUIRE(billingProbe.command({"SELECT", "0"}) == "OK");

    // chat: /chat's open and messages, in order; nothing of /pay or /legacy.
    auto chatEntries = chatProbe.stream("chat.lobby");
    CHECK(distinctInOrder(messagesOf(chatEntries)) == chatMsgs);
    CHECK(chatEntries.front().at("action") == "open");
    CHECK(chatProbe.list({"KEYS", "*"}) == std::vector<std::string>{"chat.lobby"});
    // billing: /pay's messages only (actions: [message]), in order.
    auto billingEntries = billingProbe.stream("billing");
    CHECK(std::all_of(billingEntries.begin(), billingEntries.end(), [](const Entry &e) { return e.at("action") == "message"; }));
    CHECK(distinctInOrder(messagesOf(billingEntries)) == payMsgs);
    // audit: /chat's and /pay's events, each connection's in order; nothing of /legacy.
    std::vector<std::string> auditChat, auditPay;
    for (const json &e : httpEvents(audit, "/audit")) {
        CHECK(e["endpoint"] != "/legacy");
        if (e["action"] != "message") continue;
        (e["endpoint"] == "/chat" ? auditChat : auditPay).push_back(e.value("message", ""));
    }
    CHECK(distinctInOrder(auditChat) == chatMsgs);
    CHECK(distinctInOrder(auditPay) == payMsgs);
    // the default route: /legacy only.
    REQUIRE(billingProbe.command({"SELECT", "5"}) == "OK");
    auto legacyEntries = billingProbe.stream("legacy");
    CHECK(distinctInOrder(messagesOf(legacyEntries)) == legacyMsgs);
    CHECK(billingProbe.list({"KEYS", "*"}) == std::vector<std::string>{"legacy"});

    // Every sink metric names its backend; the top-level sink keeps its labels.
    CHECK(metric(*d, "wsgw_events_published_total{sink=\"redis\",backend=\"billing\"}") >= 50);
    CHECK(metric(*d, "wsgw_events_published_total{sink=\"http\",backend=\"audit\"}") >= 102);
    CHECK(metric(*d, "wsgw_event_sink_up{sink=\"redis\",backend=\"chat\"}") == 1);
    CHECK(metric(*d, "wsgw_events_published_total{sink=\"redis\",backend=\"stream_redis\"}") >= 51);
}

TEST_CASE("one backend stopped holds no other back; once back it gets every event it missed") {
    RedisServer chatRedis, billingRedis;
    HttpBackend audit;
    Ports p;
    auto d = startDaemon(p, routesConfig(p, "backends:\n"
                                            "  chat:\n    redis: {addr: '" +
                                                chatRedis.url() +
                                                "', stream_name: chat, timeout_ms: 300}\n"
                                                "  billing:\n    redis: {addr: '" +
                                                billingRedis.url() + "', stream_name: billing}\n" + withAudit(audit)));
    RedisProbe chatProbe(chatRedis.port()), billingProbe(billingRedis.port());
    auto chat = client(*d, "/chat");
    auto pay = client(*d, "/pay");
    REQUIRE(eventually([&] { return httpGet(d->controlPort, "/readyz").status == 200; }));

    // Latency of one /pay message to billing's Redis with everything up.
    auto deliveredWithin = [&](const std::string &m) {
        auto t0 = std::chrono::steady_clock::now();
        REQUIRE(pay->sendText(m));
        bool ok = eventually(
            [&] {
                auto v = messagesOf(billingProbe.stream("billing"));
                return std::find(v.begin(), v.end(), m) != v.end();
            },
            5000ms);
        return ok ? std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - t0) : Millis(-1);
    };
    Millis before{0};
    for (int i = 0; i < 5; ++i) before = std::max(before, deliveredWithin("warm" + std::to_string(i)));
    REQUIRE(before.count() >= 0);

    chatRedis.pause(); // SIGSTOP: chat's connection stays up, nothing is answered
    struct Resume {
        RedisServer &r;
        ~Resume() { r.resume(); }
    } resumeOnFailure{chatRedis};
    const auto chatMsgs = sent("c", 200);
    sendAll(*chat, chatMsgs);
    // chat goes down (its 300 ms timeout) and /readyz names it...
    REQUIRE(eventually([&] { return metric(*d, "wsgw_event_sink_up{sink=\"redis\",backend=\"chat\"}") == 0; }));
    HttpResult ready = httpGet(d->controlPort, "/readyz");
    CHECK(ready.status == 503);
    CHECK_MESSAGE(ready.body.find("backend 'chat' (event sink 'redis') is not connected") != std::string::npos, ready.body);
    CHECK(metric(*d, "wsgw_event_backlog{sink=\"redis\",backend=\"chat\"}") > 0);
    CHECK(d->err().find("backend 'chat' (event sink 'redis') is down") != std::string::npos);
    // ...while billing and audit deliver at their usual latency for seconds.
    Millis worst{0};
    for (int i = 0; i < 10; ++i) {
        Millis t = deliveredWithin("during" + std::to_string(i));
        REQUIRE(t.count() >= 0);
        worst = std::max(worst, t);
        std::this_thread::sleep_for(200ms);
    }
    MESSAGE("billing latency: up to " << before.count() << " ms before, " << worst.count() << " ms while chat is stopped");
    CHECK(worst < std::max(Millis(1000), before * 5));
    CHECK(eventually([&] {
        auto ev = httpEvents(audit, "/audit");
        return std::count_if(ev.begin(), ev.end(), [](const json &e) { return e.value("message", "") == "during9"; }) >= 1;
    }));
    CHECK(metric(*d, "wsgw_event_sink_up{sink=\"redis\",backend=\"billing\"}") == 1);

    // chat back: every missed event, in order.
    chatRedis.resume();
    REQUIRE(eventually([&] { return distinctInOrder(messagesOf(chatProbe.stream("chat"))).size() >= 200; }, 20000ms));
    CHECK(distinctInOrder(messagesOf(chatProbe.stream("chat"))) == chatMsgs);
    CHECK(metric(*d, "wsgw_events_dropped_total{sink=\"redis\",backend=\"chat\"}") == 0);
    CHECK(eventually([&] { return httpGet(d->controlPort, "/readyz").status == 200; }));
}

TEST_CASE("a pause_reading backend pauses only the endpoints routed to it") {
    RedisServer chatRedis, billingRedis;
    HttpBackend audit;
    Ports p;
    auto d = startDaemon(p, routesConfig(p, "backends:\n"
                                            "  chat:\n    redis: {addr: '" +
                                                chatRedis.url() +
                                                "', stream_name: chat, timeout_ms: 300}\n"
                                                "    backlog_max_events: 20\n    backlog_overflow: pause_reading\n"
                                                "  billing:\n    redis: {addr: '" +
                                                billingRedis.url() + "', stream_name: billing}\n" + withAudit(audit)));
    RedisProbe billingProbe(billingRedis.port());
    auto chat = client(*d, "/chat");
    chatRedis.pause();
    struct Resume {
        RedisServer &r;
        ~Resume() { r.resume(); }
    } resumeOnFailure{chatRedis};
    sendAll(*chat, sent("c", 40));
    REQUIRE(eventually([&] { return metric(*d, "wsgw_reading_paused") == 1; }));
    // /chat refuses new connections (503) while /pay takes them and delivers.
    wsgw::test::WsClient refused;
    CHECK(refused.connect("127.0.0.1", d->wsPort, "/chat").status == 503);
    auto pay = client(*d, "/pay");
    REQUIRE(pay->sendText("still flowing"));
    CHECK(eventually([&] {
        auto v = messagesOf(billingProbe.stream("billing"));
        return std::find(v.begin(), v.end(), "still flowing") != v.end();
    }));
    chatRedis.resume();
    CHECK(eventually([&] { return metric(*d, "wsgw_reading_paused") == 0; }, 20000ms));
}

TEST_CASE("SIGHUP: routes change, backends are added and removed without a restart") {
    RedisServer redisA, redisB;
    HttpBackend audit;
    Ports p;
    const std::string chatOnA = "  chat:\n    redis: {addr: '" + redisA.url() + "', stream_name: chat}\n";
    const std::string billingOnB = "  billing:\n    redis: {addr: '" + redisB.url() + "', stream_name: billing}\n";
    auto d = startDaemon(p, routesConfig(p, "backends:\n" + chatOnA + billingOnB + withAudit(audit)));
    RedisProbe probeA(redisA.port()), probeB(redisB.port());
    auto legacy = client(*d, "/legacy");
    REQUIRE(legacy->sendText("before"));
    auto chat = client(*d, "/chat");
    REQUIRE(chat->sendText("c1"));
    REQUIRE(eventually([&] { return messagesOf(probeA.stream("chat")).size() == 1; }));

    // /legacy now names a new backend 'archive' (on A); audit is gone; chat is reconfigured to
    // another stream name.
    std::string next = routesConfig(p, "backends:\n  chat:\n    redis: {addr: '" + redisA.url() +
                                           "', stream_name: chat2}\n" + billingOnB +
                                           "  archive:\n    redis: {addr: '" + redisA.url() +
                                           "', stream_name: archive}\n" + withAudit(audit));
    next.replace(next.find("  - path: /legacy\n"), 18, "  - path: /legacy\n    backends: [archive]\n");
    next.replace(next.find("backends: [chat, audit]"), 23, "backends: [chat]");
    next.replace(next.find("backends: [billing, audit]"), 26, "backends: [billing]");
    const std::string withoutAudit = next.substr(0, next.find("  audit:\n"));
    writeFile(d->dir().file("config.yml"), withoutAudit);
    ::kill(d->pid(), SIGHUP);
    REQUIRE(eventually([&] { return d->err().find("reload: backends removed: audit") != std::string::npos; }));
    CHECK(d->err().find("reload: backends added: archive") != std::string::npos);
    CHECK(d->err().find("reload: backends reconfigured: chat") != std::string::npos);
    CHECK(d->err().find("reload: events of /legacy -> archive (redis)") != std::string::npos);
    CHECK(d->err().find("need a restart") == std::string::npos);

    // The connections stay; their events follow the new routes.
    REQUIRE(legacy->sendText("after"));
    REQUIRE(chat->sendText("c2"));
    REQUIRE(eventually([&] { return messagesOf(probeA.stream("archive")) == std::vector<std::string>{"after"}; }));
    REQUIRE(eventually([&] { return messagesOf(probeA.stream("chat2")) == std::vector<std::string>{"c2"}; }));
    CHECK(messagesOf(probeA.stream("chat")) == std::vector<std::string>{"c1"});
    CHECK(metric(*d, "wsgw_events_published_total{sink=\"http\",backend=\"audit\"}") == -1); // gone
    CHECK(metric(*d, "wsgw_events_published_total{sink=\"redis\",backend=\"archive\"}") >= 1);
    const std::size_t auditBefore = httpEvents(audit, "/audit").size();
    REQUIRE(chat->sendText("c3"));
    REQUIRE(eventually([&] { return messagesOf(probeA.stream("chat2")).size() == 2; }));
    CHECK(httpEvents(audit, "/audit").size() == auditBefore);
}

TEST_CASE("config errors name the file, line and column; wsgwd does not start") {
    Ports p;
    TempDir dir;
    const std::string file = dir.file("bad.yml");
    writeFile(file, routesConfig(p, "backends:\n  chat: {redis: {addr: 'redis://127.0.0.1:1/0'}}\n"
                                    "  billing: {redis: {addr: 'redis://127.0.0.1:1/0'}}\n"));
    Daemon bad("", {"--config", file});
    CHECK(bad.wait(10000ms) == 2); // a config error (wsgwd(8))
    CHECK_MESSAGE(bad.err().find(file + ":6:22: endpoints[0].backends[1]: unknown backend 'audit'") != std::string::npos,
                  bad.err());
}

#if WSGW_TEST_WITH_AMQP
TEST_CASE("AMQP backends on two vhosts of one RabbitMQ get their own endpoints' events") {
    if (!RabbitBroker::installed()) {
        wsgw::test::skipCase("rabbitmq-server is not installed (Debian package rabbitmq-server)");
        return;
    }
    RabbitBroker broker;
    std::string error;
    REQUIRE_MESSAGE(broker.start(&error), error);
    REQUIRE_MESSAGE(broker.addVhost("chat", &error), error);
    REQUIRE_MESSAGE(broker.addVhost("billing", &error), error);
    HttpBackend audit;
    Ports p;
    auto url = [&](const std::string &vhost) {
        return "amqp://guest:guest@127.0.0.1:" + std::to_string(broker.port()) + "/" + vhost;
    };
    auto d = startDaemon(p, routesConfig(p, "backends:\n"
                                            "  chat:\n    amqp: {addr: '" +
                                                url("chat") +
                                                "', exchange: events, queue: q}\n"
                                                "  billing:\n    amqp: {addr: '" +
                                                url("billing") + "', exchange: events, queue: q}\n" +
                                                withAudit(audit)));
    REQUIRE(eventually([&] { return httpGet(d->controlPort, "/readyz").status == 200; }, 20000ms));
    auto chat = client(*d, "/chat");
    auto pay = client(*d, "/pay");
    auto legacy = client(*d, "/legacy");
    sendAll(*chat, sent("c", 20));
    sendAll(*pay, sent("p", 20));
    REQUIRE(legacy->sendText("nowhere"));
    auto messages = [&](const std::string &vhost) {
        AmqpClient c(broker.port(), "guest", "guest", vhost);
        std::vector<std::string> out, endpoints;
        for (const Delivery &m : c.consume("q", 21, std::chrono::seconds(15))) {
            json e = json::parse(m.body);
            endpoints.push_back(e["endpoint"]);
            if (e["action"] == "message") out.push_back(e["message"]);
        }
        for (const std::string &e : endpoints) CHECK(e == (vhost == "chat" ? "/chat" : "/pay"));
        return distinctInOrder(out);
    };
    CHECK(messages("chat") == sent("c", 20));
    CHECK(messages("billing") == sent("p", 20));
    // Nothing of any endpoint reached the default vhost.
    AmqpClient root(broker.port());
    CHECK(root.declareQueue("q") == 0);
}
#endif
