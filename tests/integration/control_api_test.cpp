// The control API against the real wsgwd, with real WebSocket clients: the original gateway's
// endpoints and their exact answers.
#include "harness.h"

#include "ws_client.h"

#include <doctest/doctest.h>
#include <httplib.h>

#include <map>
#include <memory>
#include <set>
#include <sstream>

using namespace wsgw::itest;
using wsgw::test::ConnectOptions;
using wsgw::test::Opcode;
using wsgw::test::WsClient;

namespace {

// A connected client and the id wsgwd gave it (learned from its open event).
struct Client {
    std::unique_ptr<WsClient> ws = std::make_unique<WsClient>();
    std::string id;
};

Client connectClient(Daemon &d, const std::string &path = "/connect", ConnectOptions opts = {}) {
    Client c;
    auto before = d.events().size();
    auto hs = c.ws->connect("127.0.0.1", d.wsPort, path, opts);
    REQUIRE_MESSAGE(hs.ok(), hs.error);
    // The newest open event whose connection we have not seen yet is ours: wait for the count
    // to grow and take the last open.
    REQUIRE(eventually([&] { return d.events().size() > before; }));
    auto ev = d.events();
    for (auto it = ev.rbegin(); it != ev.rend(); ++it) {
        if ((*it)["action"] == "open") {
            c.id = (*it)["connection"];
            break;
        }
    }
    REQUIRE(c.id.size() == 36);
    return c;
}

std::string textOf(WsClient &ws) {
    auto r = ws.receive(3000ms);
    REQUIRE_MESSAGE(r.isText(), "expected a text message, got kind " << static_cast<int>(r.kind) << " " << r.error);
    return r.data;
}

// Lines of /status as id -> rest.
std::map<std::string, std::string> statusLines(std::uint16_t port, const std::string &query = "") {
    auto r = httpGet(port, "/status" + query);
    REQUIRE(r.status == 200);
    std::map<std::string, std::string> out;
    std::istringstream in(r.body);
    std::string line;
    while (std::getline(in, line)) {
        REQUIRE(line.rfind("id=", 0) == 0);
        auto sp = line.find(' ');
        out[line.substr(3, sp == std::string::npos ? std::string::npos : sp - 3)] =
            sp == std::string::npos ? "" : line.substr(sp + 1);
    }
    return out;
}

} // namespace

TEST_CASE("send: AND selectors, id lists, binary, exact counts") {
    auto d = Daemon::start();
    Client a = connectClient(*d), b = connectClient(*d), c = connectClient(*d);
    REQUIRE(httpPost(d->controlPort, "/settags?id=" + a.id, "admin=1&user=alice").body == "1");
    REQUIRE(httpPost(d->controlPort, "/settags?id=" + b.id, "user=bob").body == "1");

    auto r = httpPost(d->controlPort, "/send?group=default", "to everyone");
    CHECK(r.status == 200);
    CHECK(r.body == "3");
    CHECK(r.contentType.find("text/plain") == 0);
    for (Client *x : {&a, &b, &c}) CHECK(textOf(*x->ws) == "to everyone");

    CHECK(httpPost(d->controlPort, "/send?group=default&admin=1", "admins").body == "1");
    CHECK(textOf(*a.ws) == "admins");

    CHECK(httpPost(d->controlPort, "/send?id=" + b.id + "," + c.id + "&group=nomatch", "by id").body == "2");
    CHECK(textOf(*b.ws) == "by id");
    CHECK(textOf(*c.ws) == "by id");

    std::string bytes("\x00\x01\x02\xff\xfe", 5);
    CHECK(httpPost(d->controlPort, "/send?user=alice", bytes, "application/octet-stream").body == "1");
    auto got = a.ws->receive(3000ms);
    CHECK(got.isBinary());
    CHECK(got.data == bytes);

    // No selector, no match, unknown id: zero, and nothing is delivered.
    CHECK(httpPost(d->controlPort, "/send", "nobody").body == "0");
    CHECK(httpPost(d->controlPort, "/send?group=other", "nobody").body == "0");
    CHECK(httpPost(d->controlPort, "/send?id=00000000-0000-4000-8000-000000000000", "nobody").body == "0");
    // `?*` is the original's key `*` without a value: no one (Selector::parse("*") is everyone).
    CHECK(httpPost(d->controlPort, "/send?*", "nobody").body == "0");
    CHECK(a.ws->receive(200ms).kind == wsgw::test::Received::Kind::Timeout);
}

TEST_CASE("settags: add, change, delete; /status and /tree follow") {
    auto d = Daemon::start();
    Client a = connectClient(*d), b = connectClient(*d);
    CHECK(httpPost(d->controlPort, "/settags?group=default", "room=r1&role=user").body == "2");
    CHECK(httpPost(d->controlPort, "/settags?id=" + a.id, "role=admin").body == "1");

    auto lines = statusLines(d->controlPort);
    REQUIRE(lines.size() == 2);
    CHECK(lines[a.id] == "group=default role=admin room=r1");
    CHECK(lines[b.id] == "group=default role=user room=r1");

    auto tree = httpGet(d->controlPort, "/tree");
    CHECK(tree.status == 200);
    CHECK(tree.body == "group\n - default\nrole\n - admin\n - user\nroom\n - r1\n");

    // The key `id` is the selector's: a tag by that name could never be selected, so it is refused
    // and nothing changes, not even the other keys of the request.
    auto reserved = httpPost(d->controlPort, "/settags?group=default", "x=1&id=7");
    CHECK(reserved.status == 400);
    CHECK(reserved.body.find("tag key 'id' is reserved") == 0);
    CHECK(statusLines(d->controlPort)[a.id] == "group=default role=admin room=r1");

    // An empty value deletes; the last user of a value takes it out of the tree.
    CHECK(httpPost(d->controlPort, "/settags?role=admin", "role=").body == "1");
    CHECK(statusLines(d->controlPort)[a.id] == "group=default room=r1");
    CHECK(httpGet(d->controlPort, "/tree").body == "group\n - default\nrole\n - user\nroom\n - r1\n");

    // A selector on /status lists only the matches.
    auto only = statusLines(d->controlPort, "?role=user");
    CHECK(only.size() == 1);
    CHECK(only.count(b.id) == 1);

    // JSON forms.
    auto js = httpGet(d->controlPort, "/status", "application/json");
    CHECK(js.contentType == "application/json");
    auto j = nlohmann::json::parse(js.body);
    CHECK(j["count"] == 2);
    for (auto &conn : j["connections"]) {
        CHECK(conn["endpoint"] == "/connect");
        CHECK(conn["remote_addr"].get<std::string>().rfind("127.0.0.1:", 0) == 0);
        CHECK(conn["tags"]["group"] == "default");
    }
    auto jt = nlohmann::json::parse(httpGet(d->controlPort, "/tree", "application/json").body);
    CHECK(jt["room"]["r1"] == 2);
    CHECK(jt["role"]["user"] == 1);
    CHECK_FALSE(jt.contains("admin"));
}

TEST_CASE("close: the body first, then 1000 \"Closed by server\"; without a body just the close") {
    auto d = Daemon::start();
    Client a = connectClient(*d), b = connectClient(*d);
    CHECK(httpPost(d->controlPort, "/close?id=" + a.id, "goodbye").body == "1");
    CHECK(textOf(*a.ws) == "goodbye");
    auto closed = a.ws->waitClosed(3000ms);
    CHECK(closed.code == 1000);
    CHECK(closed.reason == "Closed by server");

    CHECK(httpPost(d->controlPort, "/close?id=" + b.id, "").body == "1");
    auto closedB = b.ws->waitClosed(3000ms);
    CHECK(closedB.discardedMessages == 0);
    CHECK(closedB.code == 1000);

    // Both are gone, and their close events carry their tags.
    CHECK(eventually([&] { return statusLines(d->controlPort).empty(); }));
    auto ev = d->waitEvent([&](auto &e) { return e["action"] == "close" && e["connection"] == a.id; });
    REQUIRE(ev);
    CHECK((*ev)["tags"] == "group=default");
}

TEST_CASE("bad requests: 400 for malformed selectors and bodies, 405 for wrong methods, 404, 413") {
    auto d = Daemon::start();
    auto r = httpPost(d->controlPort, "/send?a=%zz", "x");
    CHECK(r.status == 400);
    CHECK(r.body == "bad selector: malformed %-escape at offset 2\n");
    CHECK(httpPost(d->controlPort, "/send?=x", "x").status == 400);
    r = httpPost(d->controlPort, "/settags?group=default", "a=%4");
    CHECK(r.status == 400);
    CHECK(r.body.find("bad body") == 0);
    CHECK(httpPost(d->controlPort, "/settags?group=default", "=v").status == 400);
    r = httpPost(d->controlPort, "/send?group=default", std::string("\xff\xfe", 2));
    CHECK(r.status == 400);
    CHECK(r.body.find("not valid UTF-8") != std::string::npos);

    r = httpGet(d->controlPort, "/send");
    CHECK(r.status == 405);
    CHECK(r.allow == "POST");
    r = httpPost(d->controlPort, "/status", "");
    CHECK(r.status == 405);
    CHECK(r.allow == "GET");
    CHECK(httpRequest(d->controlPort, "DELETE", "/close").status == 405);

    r = httpGet(d->controlPort, "/nope");
    CHECK(r.status == 404);
    CHECK(r.body == "not found: /nope\n");

    // max_message_size_kb is 64 in the test config.
    CHECK(httpPost(d->controlPort, "/send?group=default", std::string(65 * 1024, 'x')).status == 413);
    CHECK(httpPost(d->controlPort, "/send?group=default", std::string(63 * 1024, 'x')).status == 200);
}

TEST_CASE("a peer outside internal_endpoint_access_whitelist gets 403 and a log line") {
    auto d = Daemon::start("internal_endpoint_access_whitelist: [10.0.0.0/8]\n");
    for (const char *target : {"/status", "/tree", "/metrics"}) {
        auto r = httpGet(d->controlPort, target);
        CHECK(r.status == 403);
        CHECK(r.body == "forbidden: 127.0.0.1 is not in internal_endpoint_access_whitelist\n");
    }
    CHECK(httpPost(d->controlPort, "/send?group=default", "x").status == 403);
    CHECK(d->err().find("control API: refused GET /status from 127.0.0.1") != std::string::npos);
    // Health checks come from orchestrators anywhere and reveal nothing: always answered.
    CHECK(httpGet(d->controlPort, "/healthz").status == 200);
    CHECK(eventually([&] { return httpGet(d->controlPort, "/readyz").status == 200; }));
}

TEST_CASE("health, readiness and metrics") {
    auto d = Daemon::start();
    CHECK(httpGet(d->controlPort, "/healthz").body == "ok\n");
    // Ready once the event sink's thread has connected it: a moment after start.
    HttpResult ready;
    CHECK(eventually([&] { return (ready = httpGet(d->controlPort, "/readyz")).status == 200; }));
    CHECK(ready.body == "ready\n");

    Client a = connectClient(*d);
    REQUIRE(a.ws->sendText("hello"));
    REQUIRE(d->waitEvent([](auto &e) { return e["action"] == "message"; }));
    REQUIRE(httpPost(d->controlPort, "/send?group=default", "x").body == "1");
    REQUIRE(textOf(*a.ws) == "x");

    auto m = httpGet(d->controlPort, "/metrics");
    CHECK(m.status == 200);
    CHECK(m.contentType.find("text/plain") == 0);
    for (const char *line : {"connections_counter 1", "active_connections_gauge 1", "messages_recieved_counter 1",
                             "messages_sent_counter 1", "disconnections_counter 0",
                             "wsgw_endpoint_connections{endpoint=\"/connect\"} 1",
                             "wsgw_event_sink_up{sink=\"log\",backend=\"event_log\"} 1"})
        CHECK_MESSAGE(m.body.find(line) != std::string::npos, line << " not in\n" << m.body);
    CHECK(m.body.find("wsgw_command_duration_seconds_bucket{command=\"send\"") != std::string::npos);
}

TEST_CASE("metrics can be turned off") {
    auto d = Daemon::start("prometheus: {enabled: false}\n");
    CHECK(httpGet(d->controlPort, "/metrics").status == 404);
}

TEST_CASE("control_token: a bearer token is required (compared in constant time); health checks are exempt") {
    auto d = Daemon::start("control_token: 's3cret-token'\n");
    auto noToken = httpGet(d->controlPort, "/status");
    CHECK(noToken.status == 401);
    CHECK(noToken.body == "unauthorized: send 'Authorization: Bearer <control_token>'\n");
    httplib::Client c("127.0.0.1", d->controlPort);
    auto wrong = c.Get("/status", httplib::Headers{{"Authorization", "Bearer s3cret-tokeX"}});
    REQUIRE(wrong);
    CHECK(wrong->status == 401);
    CHECK(wrong->get_header_value("WWW-Authenticate") == "Bearer");
    auto prefix = c.Get("/metrics", httplib::Headers{{"Authorization", "Bearer s3cret"}});
    CHECK(prefix->status == 401);
    auto good = c.Get("/status", httplib::Headers{{"Authorization", "Bearer s3cret-token"}});
    CHECK(good->status == 200);
    auto send = c.Post("/send?group=default", httplib::Headers{{"Authorization", "Bearer s3cret-token"}}, "x",
                       "text/plain");
    CHECK(send->body == "0");
    CHECK(httpGet(d->controlPort, "/healthz").status == 200);
    // The log names the refusal, never what was sent.
    CHECK(d->err().find("wrong bearer token") != std::string::npos);
    CHECK(d->err().find("s3cret") == std::string::npos);
}

TEST_CASE("control_token_file: the token is read from a file") {
    TempDir dir;
    writeFile(dir.file("token"), "from-a-file\n");
    auto d = Daemon::start("control_token_file: '" + dir.file("token") + "'\n");
    httplib::Client c("127.0.0.1", d->controlPort);
    CHECK(c.Get("/tree", httplib::Headers{{"Authorization", "Bearer from-a-file"}})->status == 200);
    CHECK(c.Get("/tree")->status == 401);
}

TEST_CASE("max_body_kb bounds control bodies on its own") {
    auto d = Daemon::start("max_body_kb: 2\n");
    CHECK(httpPost(d->controlPort, "/send?group=default", std::string(2 * 1024, 'x')).status == 200);
    CHECK(httpPost(d->controlPort, "/send?group=default", std::string(2 * 1024 + 1, 'x')).status == 413);
}

TEST_CASE("tag limits: no connection ever goes over max_tags_per_connection; lengths over theirs change nothing") {
    auto d = Daemon::start("max_tags_per_connection: 3\nmax_tag_key_len: 8\nmax_tag_value_len: 16\n");
    Client a = connectClient(*d), b = connectClient(*d);
    // a: group + x + y = 3 (full); b: group only.
    REQUIRE(httpPost(d->controlPort, "/settags?id=" + a.id, "x=1&y=2").body == "1");
    // Checked and changed in one step per connection: a keeps its tags, b (room left) changes.
    auto over = httpPost(d->controlPort, "/settags?group=default", "z=3");
    CHECK(over.status == 400);
    CHECK(over.body == "1 connection(s) would have had more than 3 tags (max_tags_per_connection) and kept theirs "
                       "unchanged; 1 changed\n");
    auto lines = statusLines(d->controlPort);
    CHECK(lines[a.id] == "group=default x=1 y=2");
    CHECK(lines[b.id] == "group=default z=3");
    REQUIRE(httpPost(d->controlPort, "/settags?id=" + b.id, "z=").body == "1");
    // Replacing a tag, or deleting one to make room, is fine.
    CHECK(httpPost(d->controlPort, "/settags?id=" + a.id, "x=&z=3").body == "1");
    CHECK(httpPost(d->controlPort, "/settags?id=" + a.id, "y=22").body == "1");
    // Lengths.
    auto longKey = httpPost(d->controlPort, "/settags?group=default", "abcdefghi=1");
    CHECK(longKey.status == 400);
    CHECK(longKey.body.find("max_tag_key_len (8 bytes)") != std::string::npos);
    auto longValue = httpPost(d->controlPort, "/settags?group=default", "k=" + std::string(17, 'v'));
    CHECK(longValue.status == 400);
    CHECK(longValue.body.find("max_tag_value_len (16 bytes)") != std::string::npos);
    CHECK(statusLines(d->controlPort)[b.id] == "group=default");
}

TEST_CASE("keep-alive requests answer without waiting for the client's delayed ACK") {
    auto d = Daemon::start();
    httplib::Client backend("127.0.0.1", d->controlPort);
    backend.set_keep_alive(true);
    backend.set_tcp_nodelay(true); // httplib's client writes header and body separately too
    // 20 requests on one connection take a few milliseconds; with Nagle's algorithm on the
    // server's side each would wait ~40 ms for the ACK of the answer's header.
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 20; ++i) {
        auto r = backend.Post("/send?group=nobody", "x", "text/plain");
        REQUIRE(r);
        REQUIRE(r->status == 200);
    }
    // Nagle would make it at least 800 ms; a loaded machine stays far below that without it.
    CHECK(std::chrono::steady_clock::now() - t0 < 700ms);
}
