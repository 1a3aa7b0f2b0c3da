// The WebSocket side of the real wsgwd: handshakes, limits, framing, compression, idle timeouts,
// events, and delivery across shards.
#include "clients.h"
#include "harness.h"

#include "ws_client.h"

#include <doctest/doctest.h>

#include <map>
#include <memory>
#include <set>

using namespace wsgw::itest;
using wsgw::test::CloseResult;
using wsgw::test::Compression;
using wsgw::test::ConnectOptions;
using wsgw::test::Opcode;
using wsgw::test::Received;
using wsgw::test::WsClient;

namespace {

std::size_t countEvents(Daemon &d, const std::string &action) {
    std::size_t n = 0;
    for (auto &e : d.events()) n += e["action"] == action;
    return n;
}

} // namespace

TEST_CASE("client messages become events with the documented fields") {
    auto d = Daemon::start();
    auto ws = connect(*d);
    auto open = d->waitEvent([](auto &e) { return e["action"] == "open"; });
    REQUIRE(open);
    std::string id = (*open)["connection"];
    CHECK((*open)["endpoint"] == "/connect");
    CHECK((*open)["tags"] == "group=default");
    CHECK((*open)["event_id"].get<std::uint64_t>() >= 1);
    CHECK_FALSE((*open).contains("message"));

    REQUIRE(httpPost(d->controlPort, "/settags?id=" + id, "user=Zo%C3%AB+X&hidden=1").body == "1");
    REQUIRE(ws->sendText("h\xC3\xA9llo"));
    auto msg = d->waitEvent([](auto &e) { return e["action"] == "message"; });
    REQUIRE(msg);
    CHECK((*msg)["connection"] == id);
    CHECK((*msg)["type"] == "text");
    CHECK((*msg)["message"] == "h\xC3\xA9llo");
    // Only stream_include_tags (group, user) are in `tags`, form-encoded.
    CHECK((*msg)["tags"] == "group=default&user=Zo%C3%AB+X");

    std::string bytes("\x00\xff\x10\x80", 4);
    REQUIRE(ws->sendBinary(bytes));
    auto bin = d->waitEvent([](auto &e) { return e["action"] == "message" && e["type"] == "binary"; });
    REQUIRE(bin);
    CHECK((*bin)["message"] == "AP8QgA==");
    CHECK((*bin)["encoding"] == "base64");

    // A fragmented message is one event.
    std::string big(10000, 'z');
    REQUIRE(ws->sendFragmented(Opcode::Text, big, {1000, 4000, 5000}));
    auto frag = d->waitEvent([&](auto &e) { return e["action"] == "message" && e["message"] == big; });
    CHECK(frag);

    REQUIRE(ws->sendClose(1000, "bye"));
    ws->waitClosed(2000ms);
    auto closed = d->waitEvent([&](auto &e) { return e["action"] == "close" && e["connection"] == id; });
    REQUIRE(closed);
    CHECK((*closed)["tags"] == "group=default&user=Zo%C3%AB+X");
    // Event ids increase by one in the log.
    auto all = d->events();
    for (std::size_t i = 1; i < all.size(); ++i)
        CHECK(all[i]["event_id"].get<std::uint64_t>() == all[i - 1]["event_id"].get<std::uint64_t>() + 1);
}

TEST_CASE("unknown paths get 404; plain HTTP gets 426 on an endpoint, 404 elsewhere") {
    auto d = Daemon::start();
    WsClient ws;
    auto hs = ws.connect("127.0.0.1", d->wsPort, "/nope");
    CHECK_FALSE(hs.ok());
    CHECK(hs.status == 404);
    CHECK(httpGet(d->wsPort, "/connect").status == 426);
    CHECK(httpGet(d->wsPort, "/status").status == 404); // no control API on the WebSocket port
    CHECK(httpGet(d->wsPort, "/").status == 404);
    CHECK(countEvents(*d, "open") == 0);
}

TEST_CASE("any subprotocol is accepted and the first offered one is echoed") {
    auto d = Daemon::start();
    ConnectOptions opts;
    opts.subprotocols = {"chat.v2", "chat.v1"};
    WsClient ws;
    auto hs = ws.connect("127.0.0.1", d->wsPort, "/connect", opts);
    REQUIRE_MESSAGE(hs.ok(), hs.error);
    CHECK(hs.subprotocol == "chat.v2");
    WsClient plain;
    auto hs2 = plain.connect("127.0.0.1", d->wsPort, "/connect");
    REQUIRE(hs2.ok());
    CHECK(hs2.subprotocol.empty());
    REQUIRE(httpPost(d->controlPort, "/send?group=default", "both").body == "2");
    CHECK(ws.receive(2000ms).data == "both");
    CHECK(plain.receive(2000ms).data == "both");
}

TEST_CASE("a message over the endpoint's limit closes with 1009") {
    auto d = Daemon::start();
    auto ws = connect(*d, "/raw"); // 4 KiB limit
    REQUIRE(ws->sendText(std::string(4096, 'a')));
    REQUIRE(d->waitEvent([](auto &e) { return e["action"] == "message"; }));
    REQUIRE(ws->sendText(std::string(4097, 'a')));
    auto closed = ws->waitClosed(3000ms);
    CHECK(closed.code == 1009);
    CHECK(closed.reason.find("message too big") == 0);
    // Fragments add up to the limit too.
    auto ws2 = connect(*d, "/raw");
    REQUIRE(ws2->sendFragmented(Opcode::Binary, std::string(6000, 'b'), {3000, 3000}));
    CHECK(ws2->waitClosed(3000ms).code == 1009);
    CHECK(countEvents(*d, "message") == 1);
}

TEST_CASE("invalid UTF-8 in a text message closes with 1007 and emits no message event") {
    auto d = Daemon::start();
    auto ws = connect(*d);
    REQUIRE(ws->sendInvalidUtf8Text());
    auto closed = ws->waitClosed(3000ms);
    CHECK(closed.code == 1007);
    // Split inside a multi-byte character across fragments is fine.
    auto ws2 = connect(*d);
    REQUIRE(ws2->sendFragmented(Opcode::Text, "\xC3\xA9\xC3\xA9", {1, 3}));
    CHECK(d->waitEvent([](auto &e) { return e["action"] == "message" && e["message"] == "\xC3\xA9\xC3\xA9"; }));
    CHECK(countEvents(*d, "message") == 1);
}

TEST_CASE("compression: negotiated where enabled, large messages intact both ways") {
    auto d = Daemon::start("", {}, 2048);
    ConnectOptions opts;
    opts.deflate.enabled = true;
    WsClient ws;
    auto hs = ws.connect("127.0.0.1", d->wsPort, "/connect", opts);
    REQUIRE_MESSAGE(hs.ok(), hs.error);
    REQUIRE(hs.deflate.has_value());

    std::string big;
    for (int i = 0; big.size() < 1024 * 1024; ++i) big += "line " + std::to_string(i) + " of a compressible text\n";
    big.resize(1024 * 1024);
    REQUIRE(httpPost(d->controlPort, "/send?group=default", big).body == "1");
    auto got = ws.receive(10000ms);
    REQUIRE(got.isText());
    CHECK(got.compressed);
    CHECK(got.data == big);

    std::string up = big.substr(0, 512 * 1024);
    REQUIRE(ws.sendText(up));
    auto ev = d->waitEvent([&](auto &e) { return e["action"] == "message"; }, 10000ms);
    REQUIRE(ev);
    CHECK((*ev)["message"] == up);

    // An offer that limits the server's window is accepted and the limit echoed (rfc6455_test
    // checks that it is honoured); 8 bits, which zlib cannot deflate with, is declined.
    ConnectOptions limited = opts;
    limited.deflate.serverMaxWindowBits = 10;
    WsClient small;
    auto hs3 = small.connect("127.0.0.1", d->wsPort, "/connect", limited);
    REQUIRE_MESSAGE(hs3.ok(), hs3.error);
    REQUIRE(hs3.deflate.has_value());
    CHECK(hs3.deflate->serverMaxWindowBits == 10);
    limited.deflate.serverMaxWindowBits = 8;
    WsClient tiny;
    auto hs4 = tiny.connect("127.0.0.1", d->wsPort, "/connect", limited);
    REQUIRE_MESSAGE(hs4.ok(), hs4.error);
    CHECK_FALSE(hs4.deflate.has_value());

    // The /raw endpoint does not negotiate it, and its frames go out uncompressed.
    WsClient raw;
    auto hs2 = raw.connect("127.0.0.1", d->wsPort, "/raw", opts);
    REQUIRE(hs2.ok());
    CHECK_FALSE(hs2.deflate.has_value());
    REQUIRE(httpPost(d->controlPort, "/send?id=" + std::string((*ev)["connection"]), "still").body == "1");
    CHECK(ws.receive(3000ms).data == "still");
}

TEST_CASE("idle timeout: a silent client is closed; one that answers pings stays") {
    auto d = Daemon::start("idle_timeout_s: 2\n");
    ConnectOptions deaf;
    deaf.answerPings = false;
    WsClient silent, alive;
    REQUIRE(silent.connect("127.0.0.1", d->wsPort, "/connect", deaf).ok());
    REQUIRE(alive.connect("127.0.0.1", d->wsPort, "/connect").ok());
    // The test client answers pings only while it reads: keep reading on `alive` meanwhile.
    auto start = std::chrono::steady_clock::now();
    Received closed;
    while (std::chrono::steady_clock::now() - start < 6000ms) {
        CHECK(alive.receive(20ms).kind == Received::Kind::Timeout);
        closed = silent.receive(20ms);
        if (closed.kind != Received::Kind::Timeout) break;
    }
    auto took = std::chrono::steady_clock::now() - start;
    CHECK(closed.kind == Received::Kind::Close);
    CHECK(closed.closeCode == 1001);
    CHECK(closed.closeReason == "idle timeout");
    CHECK(took >= 1500ms);
    CHECK(took <= 4500ms);
    CHECK_FALSE(silent.receivedPings().empty()); // it was pinged first

    // The other one answered its pings (the client does by default) and is still there.
    for (int i = 0; i < 15; ++i) CHECK(alive.receive(100ms).kind == Received::Kind::Timeout);
    CHECK(alive.isOpen());
    CHECK_FALSE(alive.receivedPings().empty());
    CHECK(httpPost(d->controlPort, "/send?group=default", "still here").body == "1");
    CHECK(alive.receive(2000ms).data == "still here");
    CHECK(httpGet(d->controlPort, "/metrics").body.find("wsgw_idle_closes_total 1") != std::string::npos);
}

TEST_CASE("several shards: every connection gets a broadcast exactly once and counts are exact") {
    auto d = Daemon::start("");
    constexpr int kClients = 40;
    std::vector<std::unique_ptr<WsClient>> clients;
    for (int i = 0; i < kClients; ++i) clients.push_back(connect(*d, i % 2 ? "/connect" : "/raw"));
    REQUIRE(eventually([&] { return countEvents(*d, "open") == kClients; }));
    REQUIRE(httpPost(d->controlPort, "/settags?group=default", "all=yes").body == std::to_string(kClients / 2));
    // /raw connections have no group; tag them too.
    for (auto &e : d->events())
        if (e["endpoint"] == "/raw")
            REQUIRE(httpPost(d->controlPort, "/settags?id=" + std::string(e["connection"]), "all=yes").body == "1");

    auto st = nlohmann::json::parse(httpGet(d->controlPort, "/status", "application/json").body);
    std::set<int> shards;
    for (auto &c : st["connections"]) shards.insert(c["shard"].get<int>());
    CHECK(shards.size() == 2); // the kernel spread them (40 connections: both shards get some)

    for (int round = 0; round < 5; ++round) {
        std::string text = "round " + std::to_string(round);
        REQUIRE(httpPost(d->controlPort, "/send?all=yes", text).body == std::to_string(kClients));
        for (auto &c : clients) {
            auto got = c->receive(3000ms);
            REQUIRE(got.isText());
            CHECK(got.data == text);
        }
    }
    for (auto &c : clients) CHECK(c->receive(100ms).kind == Received::Kind::Timeout); // nothing twice
}

TEST_CASE("a slow consumer is closed with 1008 once its outbound queue is full") {
    auto d = Daemon::start("max_outbound_kb: 64\n");
    auto slow = connect(*d, "/raw");
    auto fast = connect(*d, "/raw");
    REQUIRE(d->waitEvent([](auto &e) { return e["action"] == "open"; }));
    std::string chunk(8 * 1024, 'x');
    // The slow one never reads: the kernel buffers fill, then its queue, then it is cut off.
    // The fast one reads as it goes and must get every message.
    REQUIRE(eventually([&] { return d->events().size() == 2; }));
    std::string both = "/send?id=" + std::string(d->events()[0]["connection"]) + "," +
                       std::string(d->events()[1]["connection"]);
    std::size_t sent = 0, fastGot = 0;
    bool cut = false;
    for (int i = 0; i < 2000 && !cut; ++i) {
        auto body = httpPost(d->controlPort, both, chunk).body;
        ++sent;
        cut = body == "1"; // queued for one connection only: the slow one was cut off
        while (true) {
            auto m = fast->receive(0ms);
            if (!m.isMessage()) break;
            ++fastGot;
        }
    }
    REQUIRE(cut);
    while (fastGot < sent) {
        auto m = fast->receive(3000ms);
        REQUIRE(m.isMessage());
        ++fastGot;
    }
    CloseResult closed = slow->waitClosed(10000ms);
    CHECK(closed.code == 1008);
    CHECK(closed.reason.find("slow consumer") == 0);
    auto m = httpGet(d->controlPort, "/metrics").body;
    CHECK(m.find("wsgw_slow_consumer_closes_total 1") != std::string::npos);
}

TEST_CASE("compressed messages that break a limit near their end still close (1009, 1007; 1011 on a stall)") {
    // lws hands out an inflated frame in pieces and ignores a close request made on one of the
    // last pieces; wsgwd must close anyway, not leave the connection half dead. Compressed input
    // can also stall inside lws 4.1.6 (README: Compression): its inflater stops when its output
    // buffer (64 KiB in wsgwd) fills just as its input runs out. 64 KiB + 1 of 'a' is exactly
    // that case (the 64 KiB fill the buffer, the last byte waits in zlib), so the watchdog may
    // close with 1011 before the limit is crossed.
    auto d = Daemon::start(); // /connect: 64 KiB
    ConnectOptions opts;
    opts.deflate.enabled = true;
    WsClient big;
    REQUIRE(big.connect("127.0.0.1", d->wsPort, "/connect", opts).ok());
    REQUIRE(big.sendText(std::string(64 * 1024 + 1, 'a')));
    auto closed = big.waitClosed(8000ms);
    CHECK((closed.code == 1009 || closed.code == 1011));
    CHECK(closed.tcpClosed);

    // Below the inflate buffer's size nothing can stall: the close code is exact.
    WsClient bad;
    REQUIRE(bad.connect("127.0.0.1", d->wsPort, "/connect", opts).ok());
    REQUIRE(bad.sendText(std::string(5000, 'a') + "\x80" + std::string(100, 'b')));
    auto closedBad = bad.waitClosed(8000ms);
    CHECK(closedBad.code == 1007);
    CHECK(countEvents(*d, "message") == 0);
    CHECK(eventually([&] { return countEvents(*d, "close") == 2; }));
}

TEST_CASE("a compressed message over a limit below the inflate buffer closes with exactly 1009") {
    // /connect with a 16 KiB limit: 16 KiB + 1 inflated never fills lws' 64 KiB inflate buffer,
    // so no stall can get in the way; nor can fragments adding up past the limit.
    auto d = Daemon::start("", {}, 16);
    ConnectOptions opts;
    opts.deflate.enabled = true;
    WsClient whole;
    REQUIRE(whole.connect("127.0.0.1", d->wsPort, "/connect", opts).ok());
    REQUIRE(whole.sendText(std::string(16 * 1024, 'a'))); // at the limit: taken
    REQUIRE(d->waitEvent([](auto &e) { return e["action"] == "message"; }));
    REQUIRE(whole.sendText(std::string(16 * 1024 + 1, 'a')));
    auto closed = whole.waitClosed(8000ms);
    CHECK(closed.code == 1009);
    CHECK(closed.reason.find("message too big") == 0);
    CHECK(closed.tcpClosed);

    // The same in several frames (the compressed payload cut every 8 bytes): under the limit it
    // is taken, over it closed with 1009.
    WsClient fragments;
    REQUIRE(fragments.connect("127.0.0.1", d->wsPort, "/connect", opts).ok());
    REQUIRE(fragments.sendFragmented(Opcode::Text, std::string(12 * 1024, 'b'), {8, 8}));
    REQUIRE(d->waitEvent([](const nlohmann::json &e) {
        return e["action"] == "message" && e["message"].get<std::string>().size() == 12 * 1024;
    }));
    REQUIRE(fragments.sendFragmented(Opcode::Text, std::string(20 * 1024, 'd'), {8, 8}));
    auto closedFragments = fragments.waitClosed(8000ms);
    CHECK(closedFragments.code == 1009);
    CHECK(countEvents(*d, "message") == 2);
}
