// The webhook sink (makeHttpSink) on a real EventBus against a real HTTP backend (python3's
// http.server, tests/integration/http_backend.py), which checks the Standard Webhooks signature
// with its own HMAC. wsgwd's stream_http section is tested in stream_http_test.cpp.
#include "harness.h"
#include "http_backend.h"
#include "skip.h"

#include <wsgw/sink.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>
#include <thread>

using namespace wsgw;
using namespace wsgw::itest;
using json = nlohmann::json;

namespace {

const wsgw::test::Prerequisite python{"python3 is not installed (the HTTP backend of these tests)", haveHttpBackend};

// 24 random-looking bytes, base64.
const std::string kSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

Event message(ConnectionId conn, const std::string &text) {
    Event e;
    e.action = EventAction::Message;
    e.connection = conn;
    e.endpoint = "/connect";
    e.message = text;
    return e;
}

struct Delivered {
    std::vector<json> requests;               // answered 2xx
    std::vector<json> events;                 // their events, in the order received
    std::set<std::uint64_t> ids;              // distinct event ids delivered
    std::size_t failedRequests = 0;           // answered otherwise
};

Delivered delivered(const HttpBackend &b) {
    Delivered d;
    for (const json &r : b.received()) {
        if (r["status"].get<int>() / 100 != 2) {
            ++d.failedRequests;
            continue;
        }
        d.requests.push_back(r);
        for (const json &e : json::parse(r["body"].get<std::string>())) {
            d.events.push_back(e);
            d.ids.insert(e["event_id"].get<std::uint64_t>());
        }
    }
    return d;
}

HttpSinkOptions optionsFor(const HttpBackend &b) {
    HttpSinkOptions o;
    o.url = b.url("/events");
    o.secret = kSecret;
    o.node = "test-node";
    o.timeout = 2000ms;
    return o;
}

SinkOptions busOptions(const HttpSinkOptions &o) {
    SinkOptions s;
    s.maxBatch = o.batchMaxEvents * o.maxInFlight;
    s.minBackoff = 50ms;
    s.maxBackoff = 400ms;
    return s;
}

} // namespace

TEST_CASE("invalid options are refused with a reason") {
    std::string why;
    HttpSinkOptions o;
    o.url = "ftp://example.com/";
    CHECK(makeHttpSink(o, &why) == nullptr);
    CHECK(why.find("http://") != std::string::npos);
    o.url = "http:///events";
    CHECK(makeHttpSink(o, &why) == nullptr);
    o.url = "http://127.0.0.1:1/events";
    o.secret = "whsec_not*base64!";
    CHECK(makeHttpSink(o, &why) == nullptr);
    CHECK(why.find("base64") != std::string::npos);
    o.secret = kSecret;
    o.batchMaxEvents = 0;
    CHECK(makeHttpSink(o, &why) == nullptr);
    o.batchMaxEvents = 1;
    CHECK(makeHttpSink(o, &why) != nullptr);
}

TEST_CASE("events arrive as a signed JSON array, each request with its own webhook-id") {
    HttpBackend backend(kSecret);
    HttpSinkOptions o = optionsFor(backend);
    EventBus bus;
    bus.addSink(makeHttpSink(o), busOptions(o));
    REQUIRE(bus.start());
    const ConnectionId conn = ConnectionId::random();
    std::vector<std::uint64_t> ids;
    for (int i = 0; i < 5; ++i) {
        ids.push_back(bus.publish(message(conn, "hello " + std::to_string(i))));
        std::this_thread::sleep_for(20ms); // separate requests, mostly
    }
    REQUIRE(eventually([&] { return delivered(backend).ids.size() == ids.size(); }));
    Delivered d = delivered(backend);
    std::set<std::string> msgIds;
    for (const json &r : d.requests) {
        CHECK(r["signature_ok"] == true);
        CHECK(r["headers"]["content-type"] == "application/json");
        CHECK(r["path"] == "/events");
        msgIds.insert(r["headers"]["webhook-id"].get<std::string>());
    }
    CHECK(msgIds.size() == d.requests.size());
    char text[ConnectionId::kTextLength];
    conn.format(text);
    for (std::size_t i = 0; i < d.events.size(); ++i) {
        const json &e = d.events[i];
        CHECK(e["event_id"] == ids[i]);
        CHECK(e["connection"] == std::string(text, sizeof text));
        CHECK(e["action"] == "message");
        CHECK(e["node"] == "test-node");
        CHECK(e["message"] == "hello " + std::to_string(i));
    }
    CHECK(bus.stop(1000ms) == 0);
}

TEST_CASE("a backend with another secret sees signatures that do not verify") {
    HttpBackend backend("whsec_" + std::string("QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"));
    HttpSinkOptions o = optionsFor(backend);
    EventBus bus;
    bus.addSink(makeHttpSink(o), busOptions(o));
    REQUIRE(bus.start());
    bus.publish(message(ConnectionId::random(), "x"));
    REQUIRE(eventually([&] { return !backend.received().empty(); }));
    CHECK(backend.received()[0]["signature_ok"] == false);
    bus.stop(500ms);
}

TEST_CASE("events are batched: batch_max_events per request, batch_ms lets a batch fill") {
    HttpBackend backend(kSecret);
    HttpSinkOptions o = optionsFor(backend);
    o.batchMaxEvents = 10;
    o.maxInFlight = 1;
    EventBus bus;
    SinkOptions so = busOptions(o);
    so.batchWait = 200ms;
    bus.addSink(makeHttpSink(o), so);
    REQUIRE(bus.start());
    const int n = 95;
    for (int i = 0; i < n; ++i) bus.publish(message(ConnectionId::random(), "m"));
    REQUIRE(eventually([&] { return delivered(backend).ids.size() == n; }));
    Delivered d = delivered(backend);
    std::size_t full = 0;
    for (const json &r : d.requests) {
        const std::size_t k = json::parse(r["body"].get<std::string>()).size();
        CHECK(k <= 10);
        if (k == 10) ++full;
    }
    // 95 events, published at once: nine full requests and the rest.
    CHECK(full >= 9);
    CHECK(d.requests.size() <= 11);
    CHECK(bus.stop(1000ms) == 0);
}

TEST_CASE("a backend that fails for seconds then recovers gets every event, in order per connection") {
    HttpBackend backend(kSecret);
    HttpSinkOptions o = optionsFor(backend);
    o.batchMaxEvents = 8;
    o.maxInFlight = 4;
    EventBus bus;
    bus.addSink(makeHttpSink(o), busOptions(o));
    REQUIRE(bus.start());
    backend.setMode("/events", 503);
    std::vector<ConnectionId> conns;
    for (int c = 0; c < 6; ++c) conns.push_back(ConnectionId::random());
    std::set<std::uint64_t> published;
    for (int i = 0; i < 300; ++i) {
        published.insert(bus.publish(message(conns[static_cast<std::size_t>(i) % conns.size()], std::to_string(i))));
        if (i == 150) backend.setMode("/events", 500); // another failure, mid-stream
        if (i % 50 == 0) std::this_thread::sleep_for(100ms);
    }
    REQUIRE(eventually([&] { return bus.stats()[0].failures >= 3; }, 10000ms));
    // Between a back-off and the next failed POST the sink counts as connected again (it has
    // nothing to connect): look for a moment when it is down, with the status as the reason.
    CHECK(eventually([&] {
        const SinkStats s = bus.stats()[0];
        return !s.connected && s.lastError.find("HTTP 50") != std::string::npos;
    }));
    std::this_thread::sleep_for(1500ms);
    CHECK(delivered(backend).ids.empty());
    backend.setMode("/events", 204);
    REQUIRE(eventually([&] { return delivered(backend).ids == published; }, 20000ms));
    Delivered d = delivered(backend);
    CHECK(d.failedRequests > 0);
    // Per connection, the first delivery of each event comes in publishing order.
    std::map<std::string, std::uint64_t> last;
    std::set<std::uint64_t> seen;
    for (const json &e : d.events) {
        const auto id = e["event_id"].get<std::uint64_t>();
        if (!seen.insert(id).second) continue;
        std::uint64_t &prev = last[e["connection"].get<std::string>()];
        CHECK(id > prev);
        prev = id;
    }
    for (const json &r : d.requests) CHECK(r["signature_ok"] == true);
    const SinkStats s = bus.stats()[0];
    CHECK(s.dropped == 0);
    CHECK(bus.stop(1000ms) == 0);
}

TEST_CASE("while the backend is down the backlog is bounded, and what it drops is counted") {
    HttpBackend backend(kSecret);
    backend.setMode("/events", 500);
    HttpSinkOptions o = optionsFor(backend);
    EventBus bus;
    SinkOptions so = busOptions(o);
    so.maxBacklogEvents = 40;
    bus.addSink(makeHttpSink(o), so);
    REQUIRE(bus.start());
    REQUIRE(eventually([&] {
        bus.publish(message(ConnectionId::random(), "probe"));
        return bus.stats()[0].failures > 0;
    }));
    std::set<std::uint64_t> last;
    for (int i = 0; i < 100; ++i) last.insert(bus.publish(message(ConnectionId::random(), "m")));
    const SinkStats s = bus.stats()[0];
    CHECK(s.backlog <= 41);
    CHECK(s.dropped >= 60);
    backend.setMode("/events", 200);
    REQUIRE(eventually([&] { return bus.stats()[0].backlog == 0; }, 10000ms));
    // The newest events survived (drop_oldest).
    const auto ids = delivered(backend).ids;
    std::size_t kept = 0;
    for (auto id : last) kept += ids.count(id);
    CHECK(kept >= 39);
    CHECK(bus.stats()[0].published + bus.stats()[0].dropped >= 100);
    bus.stop(500ms);
}

TEST_CASE("a backend that hangs times out, is retried, and a stop does not wait for it") {
    HttpBackend backend(kSecret);
    backend.setMode("/events", 200, 30000);
    HttpSinkOptions o = optionsFor(backend);
    o.timeout = 300ms;
    EventBus bus;
    bus.addSink(makeHttpSink(o), busOptions(o));
    REQUIRE(bus.start());
    const std::uint64_t id = bus.publish(message(ConnectionId::random(), "slow"));
    REQUIRE(eventually([&] { return bus.stats()[0].failures >= 2; }, 10000ms));
    CHECK_FALSE(bus.stats()[0].lastError.empty());
    backend.setMode("/events", 200);
    REQUIRE(eventually([&] { return delivered(backend).ids.count(id) == 1; }, 10000ms));

    backend.setMode("/events", 200, 30000);
    bus.publish(message(ConnectionId::random(), "stuck"));
    std::this_thread::sleep_for(100ms); // let it be under way
    const auto before = std::chrono::steady_clock::now();
    CHECK(bus.stop(100ms) == 1);
    CHECK(std::chrono::steady_clock::now() - before < 3s);
}

TEST_CASE("https: the server's certificate is verified against ca_file") {
    if (wsgw::test::findInPath("openssl").empty()) {
        wsgw::test::skipCase("the openssl command is not installed (it makes the test certificate)");
        return;
    }
    TempDir dir;
    const std::string cert = dir.file("backend.crt"), key = dir.file("backend.key");
    const std::string command = "openssl req -x509 -newkey rsa:2048 -nodes -keyout '" + key + "' -out '" + cert +
                                "' -days 1 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1";
    REQUIRE(std::system(command.c_str()) == 0);
    HttpBackend backend(kSecret, cert, key);
    REQUIRE(backend.url("/events").rfind("https://", 0) == 0);

    HttpSinkOptions o = optionsFor(backend);
    o.caFile = cert;
    EventBus bus;
    bus.addSink(makeHttpSink(o), busOptions(o));
    REQUIRE(bus.start());
    const std::uint64_t id = bus.publish(message(ConnectionId::random(), "over tls"));
    REQUIRE(eventually([&] { return delivered(backend).ids.count(id) == 1; }, 10000ms));
    CHECK(delivered(backend).requests[0]["signature_ok"] == true);
    bus.stop(500ms);

    // The system's CAs do not know this certificate: nothing is delivered, the error says why.
    HttpSinkOptions untrusted = optionsFor(backend);
    EventBus bus2;
    bus2.addSink(makeHttpSink(untrusted), busOptions(untrusted));
    REQUIRE(bus2.start());
    bus2.publish(message(ConnectionId::random(), "refused"));
    REQUIRE(eventually([&] { return bus2.stats()[0].failures >= 1; }, 10000ms));
    CHECK_FALSE(bus2.stats()[0].lastError.empty());
    CHECK(delivered(backend).ids.size() == 1);
    bus2.stop(200ms);
}
