// Limits and bad input on the WebSocket side of the real wsgwd: connection caps, origins, rate
// limits, slow consumers, connection lifetimes, malformed upgrades and protocol violations.
// Each case is a row of the "Bad input" table in the README.
#include "clients.h"
#include "harness.h"

#include "ws_client.h"

#include <doctest/doctest.h>

#include <memory>
#include <thread>

using namespace wsgw::itest;
using wsgw::test::ConnectOptions;
using wsgw::test::Received;
using wsgw::test::RawFrame;
using wsgw::test::WsClient;

namespace {

std::size_t messageEvents(Daemon &d) {
    std::size_t n = 0;
    for (auto &e : d.events()) n += e["action"] == "message";
    return n;
}

// A handshake written by hand, and what the server answered.
wsgw::test::HandshakeResult rawHandshake(Daemon &d, const std::string &request) {
    WsClient c;
    ConnectOptions o;
    o.rawRequest = request;
    o.timeout = 3000ms;
    return c.connect("127.0.0.1", d.wsPort, "/raw", o);
}

const std::string kKey = "dGhlIHNhbXBsZSBub25jZQ==";

std::string upgrade(const std::string &extra, const std::string &method = "GET") {
    return method + " /raw HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" + extra + "\r\n";
}

} // namespace

TEST_CASE("max_connections: the global cap and an endpoint's own; 503 beyond them, room again after a close") {
    auto d = Daemon::start("max_connections: 3\n");
    auto a = connect(*d, "/raw"), b = connect(*d, "/raw"), c = connect(*d, "/raw");
    REQUIRE(eventually([&] { return metric(*d, "active_connections_gauge") == 3; }));
    WsClient over;
    auto hs = over.connect("127.0.0.1", d->wsPort, "/raw");
    CHECK(hs.status == 503);
    CHECK(hs.body.find("too many connections") != std::string::npos);
    CHECK(metric(*d, "wsgw_upgrades_refused_total{reason=\"capacity\"}") == 1);
    REQUIRE(a->sendClose(1000));
    a->waitClosed(2000ms);
    REQUIRE(eventually([&] { return metric(*d, "active_connections_gauge") == 2; }));
    CHECK(WsClient().connect("127.0.0.1", d->wsPort, "/raw").ok());
}

TEST_CASE("an endpoint's max_connections leaves the other endpoints alone") {
    std::uint16_t ws = freePort(), ctl = freePort();
    Daemon d("listen_addr: 127.0.0.1:" + std::to_string(ws) + "\ncontrol_addr: 127.0.0.1:" + std::to_string(ctl) +
                 "\nendpoints:\n  - {path: /one, max_connections: 1}\n  - {path: /many}\n",
             {}, ctl);
    WsClient first, second, other;
    REQUIRE(first.connect("127.0.0.1", ws, "/one").ok());
    // Counted once established (a handshake in flight on another shard may slip past the cap).
    REQUIRE(eventually([&] { return httpGet(ctl, "/metrics").body.find("wsgw_endpoint_connections{endpoint=\"/one\"} 1") != std::string::npos; }));
    CHECK(second.connect("127.0.0.1", ws, "/one").status == 503);
    CHECK(other.connect("127.0.0.1", ws, "/many").ok());
}

TEST_CASE("allowed_origins: a browser from another origin gets 403; listed origins and non-browsers pass") {
    std::uint16_t ws = freePort(), ctl = freePort();
    Daemon d("listen_addr: 127.0.0.1:" + std::to_string(ws) + "\ncontrol_addr: 127.0.0.1:" + std::to_string(ctl) +
                 "\nendpoints:\n  - path: /app\n    allowed_origins: [https://app.example, http://localhost:3000]\n",
             {}, ctl);
    ConnectOptions evil, good, other;
    evil.origin = "https://evil.example";
    good.origin = "HTTPS://App.Example"; // origins compare case-insensitively
    other.origin = "http://localhost:3000";
    WsClient a, b, c, e;
    auto refused = a.connect("127.0.0.1", ws, "/app", evil);
    CHECK(refused.status == 403);
    CHECK(refused.body.find("origin not allowed") != std::string::npos);
    CHECK(b.connect("127.0.0.1", ws, "/app", good).ok());
    CHECK(c.connect("127.0.0.1", ws, "/app", other).ok());
    CHECK(e.connect("127.0.0.1", ws, "/app").ok()); // no Origin: not a browser
}

TEST_CASE("rate_limit close: a client over its rate is closed with 1008") {
    auto d = Daemon::start("rate_limit: {max_messages_per_s: 5, burst: 5, policy: close}\n");
    auto ws = connect(*d, "/raw");
    for (int i = 0; i < 20; ++i) (void)ws->sendText("m" + std::to_string(i));
    auto closed = ws->waitClosed(3000ms);
    CHECK(closed.code == 1008);
    CHECK(closed.reason == "rate limit exceeded: at most 5 messages per second");
    CHECK(eventually([&] { return messageEvents(*d) == 5; }));
    CHECK(metric(*d, "wsgw_rate_limit_closes_total") == 1);
    // Within the rate nothing happens.
    auto calm = connect(*d, "/raw");
    for (int i = 0; i < 6; ++i) {
        REQUIRE(calm->sendText("calm"));
        std::this_thread::sleep_for(250ms);
    }
    CHECK(calm->receive(200ms).kind == Received::Kind::Timeout);
    CHECK(calm->isOpen());
}

TEST_CASE("rate_limit drop: messages over the rate are discarded and counted; the connection stays") {
    auto d = Daemon::start("rate_limit: {max_messages_per_s: 2, burst: 4, policy: drop}\n");
    auto ws = connect(*d, "/raw");
    for (int i = 0; i < 12; ++i) REQUIRE(ws->sendText("m" + std::to_string(i)));
    // Every message is either an event (the log may lag the counter) or a drop.
    CHECK(eventually([&] { return messageEvents(*d) + metric(*d, "wsgw_rate_limit_drops_total") == 12; }));
    CHECK(metric(*d, "wsgw_rate_limit_drops_total") >= 7);
    CHECK(messageEvents(*d) <= 5); // the burst, and perhaps one refilled token
    CHECK(ws->isOpen());
    REQUIRE(httpPost(d->controlPort, "/send?id=" + std::string(d->events()[0]["connection"]), "still").body == "1");
    CHECK(ws->receive(2000ms).data == "still");
}

TEST_CASE("slow_consumer drop_newest and drop_oldest keep the connection and count what they drop") {
    for (const char *policy : {"drop_newest", "drop_oldest"}) {
        CAPTURE(policy);
        auto d = Daemon::start(std::string("slow_consumer: {max_outbound_kb: 64, policy: ") + policy + "}\n");
        auto slow = connect(*d, "/raw");
        REQUIRE(eventually([&] { return d->events().size() == 1; }));
        std::string id = d->events()[0]["connection"];
        std::string chunk(16 * 1024, 'x');
        // Unread, the socket buffers fill, then the queue; past 64 KiB the policy applies.
        int attempted = 0, accepted = 0;
        for (int i = 0; i < 1000 && metric(*d, "wsgw_frames_dropped_total") < 20; ++i) {
            chunk.replace(0, 8, std::to_string(10000000 + i));
            accepted += httpPost(d->controlPort, "/send?id=" + id, chunk).body == "1";
            ++attempted;
        }
        double dropped = metric(*d, "wsgw_frames_dropped_total");
        REQUIRE(dropped >= 20);
        CHECK(metric(*d, "wsgw_slow_consumer_closes_total") == 0);
        if (std::string(policy) == "drop_newest")
            CHECK(attempted - accepted == dropped); // the backend is told: /send counts 0 for it
        else
            CHECK(accepted == attempted); // queued, and older ones made room
        REQUIRE(httpPost(d->controlPort, "/send?id=" + id, "last-one").body == "1"); // tiny: fits
        // Read everything: the connection is alive, what arrives is in order, the dropped ones
        // are missing, and the last message arrives.
        std::vector<std::string> seen;
        for (;;) {
            auto m = slow->receive(1500ms);
            if (!m.isMessage()) break;
            seen.push_back(m.data.substr(0, 8));
        }
        CHECK(slow->isOpen());
        REQUIRE(seen.size() >= 2);
        CHECK(seen.back() == "last-one");
        for (std::size_t i = 1; i + 1 < seen.size(); ++i) CHECK(seen[i - 1] < seen[i]);
        CHECK(seen.size() == static_cast<std::size_t>(attempted) + 1 - static_cast<std::size_t>(dropped));
    }
}

TEST_CASE("max_connection_lifetime_s: connections are closed with 1012 after the lifetime, ±10%") {
    auto d = Daemon::start("max_connection_lifetime_s: 2\n");
    auto t0 = std::chrono::steady_clock::now();
    auto ws = connect(*d, "/raw");
    Received closed;
    while (std::chrono::steady_clock::now() - t0 < 5000ms && (closed = ws->receive(50ms)).kind == Received::Kind::Timeout) {
    }
    auto took = std::chrono::steady_clock::now() - t0;
    CHECK(closed.kind == Received::Kind::Close);
    CHECK(closed.closeCode == 1012);
    CHECK(closed.closeReason == "connection lifetime reached; please reconnect");
    CHECK(took >= 1700ms); // 2 s - 10%, minus the sweep's granularity
    CHECK(took <= 3300ms); // 2 s + 10% + 1 s sweep
    CHECK(metric(*d, "wsgw_lifetime_closes_total") == 1);
}

TEST_CASE("malformed upgrades get a clear HTTP answer") {
    auto d = Daemon::start();
    auto version = rawHandshake(*d, upgrade("Connection: Upgrade\r\nSec-WebSocket-Key: " + kKey +
                                            "\r\nSec-WebSocket-Version: 12\r\n"));
    CHECK(version.status == 426);
    CHECK(wsgw::test::findHeader(version.headers, "Sec-WebSocket-Version") == "13");
    CHECK(rawHandshake(*d, upgrade("Connection: Upgrade\r\nSec-WebSocket-Key: " + kKey + "\r\n")).status == 426);
    CHECK(rawHandshake(*d, upgrade("Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n")).status == 400);
    CHECK(rawHandshake(*d, upgrade("Connection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n"))
              .status == 400);
    auto noConnection = rawHandshake(*d, upgrade("Sec-WebSocket-Key: " + kKey + "\r\nSec-WebSocket-Version: 13\r\n"));
    CHECK(noConnection.status == 400);
    CHECK(noConnection.body.find("Connection: Upgrade") != std::string::npos);
    CHECK(rawHandshake(*d, upgrade("Connection: Upgrade\r\nSec-WebSocket-Key: " + kKey +
                                   "\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n",
                                   "POST"))
              .status == 400);
    CHECK(metric(*d, "wsgw_upgrades_refused_total{reason=\"version\"}") == 2);
    CHECK(metric(*d, "wsgw_upgrades_refused_total{reason=\"bad_request\"}") == 4);
    // A well-formed one still works, and nothing was registered by the refused ones.
    WsClient good;
    CHECK(good.connect("127.0.0.1", d->wsPort, "/raw").ok());
    CHECK(eventually([&] { return d->events().size() == 1; }));
}

TEST_CASE("protocol violations close the connection (1002) and publish nothing") {
    auto d = Daemon::start();
    struct Row {
        const char *what;
        RawFrame frame;
        std::uint16_t code;
    };
    auto frame = [](std::uint8_t opcode, std::string payload, bool fin = true, bool rsv2 = false) {
        RawFrame f;
        f.opcode = opcode;
        f.payload = std::move(payload);
        f.fin = fin;
        f.rsv2 = rsv2;
        return f;
    };
    const Row rows[] = {
        {"fragmented ping", frame(0x9, "x", false), 1002},
        {"unknown data opcode 3", frame(0x3, "x"), 1002},
        {"unknown control opcode 0xB", frame(0xB, "x"), 1002},
        {"reserved bit without an extension", frame(0x1, "x", true, true), 1002},
        {"continuation with no message", frame(0x0, "x"), 1002},
        {"close with an invalid code", frame(0x8, std::string("\x00\x05", 2)), 1002},
    };
    for (const Row &row : rows) {
        CAPTURE(row.what);
        auto ws = connect(*d, "/raw");
        REQUIRE(ws->sendRaw(row.frame));
        auto closed = ws->waitClosed(3000ms);
        CHECK(closed.code == row.code);
    }
    // libwebsockets drops a control frame over 125 bytes without a close frame (the client sees
    // 1006): still gone, still nothing published.
    for (std::uint8_t opcode : {0x9, 0x8}) {
        auto ws = connect(*d, "/raw");
        REQUIRE(ws->sendRaw(frame(opcode, std::string(opcode == 0x8 ? "\x03\xe8" : "", opcode == 0x8 ? 2 : 0) +
                                              std::string(200, 'p'))));
        auto closed = ws->waitClosed(3000ms);
        CHECK(closed.tcpClosed);
    }
    CHECK(messageEvents(*d) == 0);
    REQUIRE(eventually([&] { return metric(*d, "active_connections_gauge") == 0; }));
}
