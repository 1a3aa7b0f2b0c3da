// wsgwd's stream_http section against a real HTTP backend (python3, http_backend.py): the events
// of a WebSocket connection arrive signed, and the config's mistakes are refused with their line.
// The sink's own behaviour (batching, outages, a hanging backend) is http_sink_test.cpp's.
#include "clients.h"
#include "harness.h"
#include "http_backend.h"
#include "skip.h"

#include <doctest/doctest.h>

#include <csignal>

using namespace wsgw::itest;
using json = nlohmann::json;

namespace {

const wsgw::test::Prerequisite python{"python3 is not installed (the HTTP backend of these tests)", haveHttpBackend};

const std::string kSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

std::vector<json> eventsAt(const HttpBackend &b) {
    std::vector<json> out;
    for (const json &r : b.received())
        if (r["status"] == 200 && r["signature_ok"] == true)
            for (const json &e : json::parse(r["body"].get<std::string>())) out.push_back(e);
    return out;
}

} // namespace

TEST_CASE("a connection's open, message and close events are POSTed, signed, to the webhook") {
    HttpBackend backend(kSecret);
    TempDir secrets;
    writeFile(secrets.file("webhook.key"), kSecret + "\n");
    auto d = Daemon::start("node_id: gw-http\nstream_http:\n  url: " + backend.url("/events") +
                           "\n  secret_file: " + secrets.file("webhook.key") + "\n  batch_ms: 5\n");
    {
        auto ws = connect(*d);
        REQUIRE(ws->sendText("hello webhook"));
        REQUIRE(eventually([&] { return eventsAt(backend).size() >= 2; }));
        REQUIRE(ws->sendClose(1000));
    }
    REQUIRE(eventually([&] { return eventsAt(backend).size() >= 3; }));
    auto events = eventsAt(backend);
    CHECK(events[0]["action"] == "open");
    CHECK(events[1]["action"] == "message");
    CHECK(events[1]["message"] == "hello webhook");
    CHECK(events[1]["tags"] == "group=default");
    CHECK(events[1]["node"] == "gw-http");
    CHECK(events[2]["action"] == "close");
    CHECK(events[0]["connection"] == events[2]["connection"]);
    CHECK(events[1]["event_id"].get<std::uint64_t>() == events[0]["event_id"].get<std::uint64_t>() + 1);
    // Nothing on stdout: a stream sink turns the default event log off.
    CHECK(d->events().empty());
    CHECK(eventually([&] { return metric(*d, "wsgw_events_published_total{sink=\"http\",backend=\"stream_http\"}") >= 3; }));
    CHECK(d->stop(SIGTERM) == 0);
}

TEST_CASE("stream_http mistakes stop wsgwd with the line to fix") {
    TempDir dir;
    writeFile(dir.file("bad.key"), "whsec_ab*d\n");
    struct Case {
        std::string yaml;
        std::string expect;
    } cases[] = {
        {"stream_http:\n  url: ftp://127.0.0.1/x\n", "config.yml:2:8: stream_http.url: 'ftp://127.0.0.1/x' is not an http"},
        {"stream_http:\n  batch_ms: 5\n", "stream_http: missing 'url'"},
        {"stream_http:\n  url: http://127.0.0.1:1/\n  max_in_flight: 0\n", "config.yml:3:18: stream_http.max_in_flight"},
        {"stream_http:\n  url: http://127.0.0.1:1/\n  secret_file: " + dir.file("bad.key") + "\n",
         "config.yml:3:16: stream_http.secret_file: '" + dir.file("bad.key") + "': the secret is not valid base64"},
        {"stream_http:\n  url: http://127.0.0.1:1/\n  secret_file: " + dir.file("missing.key") + "\n",
         "stream_http.secret_file: cannot read"},
    };
    for (const Case &c : cases) {
        CAPTURE(c.yaml);
        Daemon d(c.yaml + "endpoints: [{path: /connect}]\n", {"--check-config"});
        CHECK(d.wait(10000ms) == 1); // --check-config: 1 invalid (wsgwd(8))
        CHECK(d.err().find(c.expect) != std::string::npos);
        if (d.err().find(c.expect) == std::string::npos) MESSAGE(d.err());
    }
}
