// The connect authorizer against the real wsgwd and a real HTTP backend (python3,
// http_backend.py): what it is asked, admission with its tags and id, its 4xx passed on, and
// 503 when it is slow, down or talks nonsense (unless fail_open).
#include "clients.h"
#include "harness.h"
#include "http_backend.h"
#include "skip.h"

#include <doctest/doctest.h>

using namespace wsgw::itest;
using wsgw::test::ConnectOptions;
using wsgw::test::WsClient;
using json = nlohmann::json;

namespace {

const wsgw::test::Prerequisite python{"python3 is not installed (the HTTP backend of these tests)", haveHttpBackend};

struct AuthGateway {
    HttpBackend backend;
    std::unique_ptr<Daemon> d;
    std::uint16_t closedPort = freePort(); // nothing listens there

    AuthGateway() {
        const std::uint16_t ws = freePort();
        std::uint16_t control = freePort();
        while (control == ws) control = freePort();
        const std::string closed = "http://127.0.0.1:" + std::to_string(closedPort) + "/auth";
        const std::string config =
            "listen_addr: 127.0.0.1:" + std::to_string(ws) + "\n" +
            "control_addr: 127.0.0.1:" + std::to_string(control) + "\n" +
            "threads: 2\n"
            "endpoints:\n"
            "  - path: /connect\n"
            "    set_tags: {group: default}\n"
            "    stream_include_tags: [group, user, plan]\n"
            "    authorize: {url: '" + backend.url("/auth") + "', timeout_ms: 3000}\n"
            "  - path: /fwd\n"
            "    authorize: {url: '" + backend.url("/fwd") + "', forward_headers: [Authorization, X-App]}\n"
            "  - path: /slow\n"
            "    authorize: {url: '" + backend.url("/slow") + "', timeout_ms: 300}\n"
            "  - path: /closed\n"
            "    authorize: {url: '" + closed + "'}\n"
            "  - path: /open\n"
            "    set_tags: {group: open}\n"
            "    stream_include_tags: [group, user]\n"
            "    authorize: {url: '" + closed + "', fail_open: true}\n"
            "  - path: /plain\n";
        d = std::make_unique<Daemon>(config, std::vector<std::string>{}, control);
        d->wsPort = ws;
        d->controlPort = control;
    }
    wsgw::test::HandshakeResult connect(WsClient &c, const std::string &target, ConnectOptions o = {}) {
        return c.connect("127.0.0.1", d->wsPort, target, o);
    }
    std::vector<json> asked(const std::string &path) {
        std::vector<json> out;
        for (const json &r : backend.received())
            if (r["path"] == path) out.push_back(json::parse(r["body"].get<std::string>()));
        return out;
    }
};

} // namespace

TEST_CASE("2xx admits with the authorizer's tags; it is told the connection id, path, query, headers, address") {
    AuthGateway g;
    g.backend.setMode("/auth", 200, 0, R"({"tags":{"user":"u1","plan":"pro"}})");
    WsClient c;
    ConnectOptions o;
    o.headers.push_back({"X-App", "demo"});
    o.headers.push_back({"Cookie", "s=1"});
    auto hs = g.connect(c, "/connect?room=a&x=%20y", o);
    REQUIRE_MESSAGE(hs.ok(), hs.error << " " << hs.status << " " << hs.body);
    auto open = g.d->waitEvent([](const json &e) { return e["action"] == "open"; });
    REQUIRE(open);
    CHECK((*open)["tags"] == "group=default&plan=pro&user=u1"); // sorted by key
    auto asked = g.asked("/auth");
    REQUIRE(asked.size() == 1);
    const json &q = asked[0];
    CHECK(q["connection_id"] == (*open)["connection"]);
    CHECK(q["endpoint"] == "/connect");
    CHECK(q["path"] == "/connect");
    CHECK(q["query"] == "room=a&x=%20y");
    CHECK(q["headers"]["x-app"] == "demo");
    CHECK(q["headers"]["cookie"] == "s=1");
    CHECK(q["headers"].contains("host"));
    CHECK_FALSE(q["headers"].contains("sec-websocket-key")); // the handshake's own are not forwarded
    CHECK_FALSE(q["headers"].contains("connection"));
    CHECK(q["remote_addr"].get<std::string>().rfind("127.0.0.1:", 0) == 0);
    // The connection works as any other.
    REQUIRE(c.sendText("hi"));
    CHECK(g.d->waitEvent([](const json &e) { return e["action"] == "message" && e["message"] == "hi"; }));
    CHECK(metric(*g.d, "wsgw_authorize_duration_seconds_count{outcome=\"accepted\"}") == 1);
}

TEST_CASE("the authorizer may name the connection's id") {
    AuthGateway g;
    const std::string id = "0b6cb7d2-4b57-4e43-9d8e-6f1a2c3b4d5e";
    g.backend.setMode("/auth", 201, 0, R"({"tags":{},"id":")" + id + "\"}");
    WsClient c;
    REQUIRE(g.connect(c, "/connect").ok());
    auto open = g.d->waitEvent([](const json &e) { return e["action"] == "open"; });
    REQUIRE(open);
    CHECK((*open)["connection"] == id);
    CHECK(httpGet(g.d->controlPort, "/status?id=" + id).body.find(id) != std::string::npos);
}

TEST_CASE("forward_headers sends only the headers named") {
    AuthGateway g;
    WsClient c;
    ConnectOptions o;
    o.headers.push_back({"Authorization", "Bearer t"});
    o.headers.push_back({"X-App", "a"});
    o.headers.push_back({"Cookie", "secret"});
    REQUIRE(g.connect(c, "/fwd", o).ok());
    auto asked = g.asked("/fwd");
    REQUIRE(asked.size() == 1);
    CHECK(asked[0]["headers"] == json{{"authorization", "Bearer t"}, {"x-app", "a"}});
}

TEST_CASE("a 4xx answers the upgrade with that status and body") {
    AuthGateway g;
    g.backend.setMode("/auth", 403, 0, "not you");
    WsClient c;
    auto hs = g.connect(c, "/connect");
    CHECK(hs.status == 403);
    CHECK(hs.body.find("not you") != std::string::npos);
    g.backend.setMode("/auth", 429, 0, "");
    WsClient c2;
    CHECK(g.connect(c2, "/connect").status == 429);
    CHECK(metric(*g.d, "wsgw_upgrades_refused_total{reason=\"authorizer\"}") == 2);
    CHECK(metric(*g.d, "wsgw_authorize_duration_seconds_count{outcome=\"refused\"}") == 2);
    CHECK(g.d->events().empty());
}

TEST_CASE("slow, down, 5xx or nonsense: 503, unless fail_open") {
    AuthGateway g;
    g.backend.setMode("/slow", 200, 5000);
    {
        WsClient c;
        const auto before = std::chrono::steady_clock::now();
        auto hs = g.connect(c, "/slow");
        CHECK(hs.status == 503);
        CHECK(std::chrono::steady_clock::now() - before < 2500ms); // timeout_ms 300, not the backend's 5 s
    }
    {
        WsClient c;
        CHECK(g.connect(c, "/closed").status == 503);
    }
    // A pair, not a structured binding: CAPTURE's lambda cannot capture a binding before clang 16.
    for (const auto &answer : std::vector<std::pair<int, std::string>>{
             {500, "{}"}, {200, "not json"}, {200, R"({"tags":"x"})"}, {200, R"({"id":"nope"})"}}) {
        const int status = answer.first;
        const std::string &body = answer.second;
        CAPTURE(body);
        g.backend.setMode("/auth", status, 0, body);
        WsClient c;
        CHECK(g.connect(c, "/connect").status == 503);
    }
    CHECK(g.d->events().empty());
    // fail_open: admitted with set_tags only
    WsClient c;
    REQUIRE(g.connect(c, "/open").ok());
    auto open = g.d->waitEvent([](const json &e) { return e["action"] == "open"; });
    REQUIRE(open);
    CHECK((*open)["tags"] == "group=open");
    CHECK(metric(*g.d, "wsgw_authorize_duration_seconds_count{outcome=\"failed_open\"}") == 1);
    CHECK(metric(*g.d, "wsgw_authorize_duration_seconds_count{outcome=\"failed\"}") == 6);
}

TEST_CASE("endpoints without authorize:, plain HTTP and bad requests are served as before") {
    AuthGateway g;
    WsClient c;
    REQUIRE(g.connect(c, "/plain").ok());
    CHECK(httpGet(g.d->wsPort, "/plain").status == 426);
    CHECK(httpGet(g.d->wsPort, "/nowhere").status == 404);
    CHECK(g.asked("/auth").empty());
    // A client that sends half a request head and goes away costs nothing lasting.
    WsClient half;
    ConnectOptions o;
    o.rawRequest = "GET /connect HTTP/1.1\r\nHost: x\r\n";
    o.timeout = 300ms;
    CHECK_FALSE(half.connect("127.0.0.1", g.d->wsPort, "/connect", o).ok());
    WsClient again;
    REQUIRE(g.connect(again, "/plain").ok());
}

TEST_CASE("authorize: with tls: is refused by the config") {
    TempDir dir;
    writeFile(dir.file("c.pem"), "x");
    Daemon d("tls: {cert: " + dir.file("c.pem") + ", key: " + dir.file("c.pem") +
                 "}\nendpoints:\n  - path: /a\n    authorize: {url: 'http://127.0.0.1:1/'}\n",
             {"--check-config"});
    CHECK(d.wait(10000ms) == 1); // --check-config: 1 invalid (wsgwd(8))
    CHECK_MESSAGE(d.err().find("endpoints[0].authorize: not available with tls:") != std::string::npos, d.err());
}
