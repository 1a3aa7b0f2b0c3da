// wsgwd as a process: flags, exit codes, config errors, start-up log, and graceful shutdown.
#include "harness.h"

#include "ws_client.h"

#include <doctest/doctest.h>
#include <httplib.h>

#include <csignal>
#include <memory>

using namespace wsgw::itest;
using wsgw::test::WsClient;

namespace {

// Runs wsgwd to completion with `args` (no config unless given) and returns its exit status.
int runToExit(Daemon &d) { return d.wait(10000ms); }

} // namespace

TEST_CASE("--version and --help") {
    Daemon v("", {"--version"});
    CHECK(runToExit(v) == 0);
    CHECK(v.out().rfind("wsgwd 0.", 0) == 0);
    Daemon h("", {"--help"});
    CHECK(runToExit(h) == 0);
    CHECK(h.out().find("--check-config") != std::string::npos);
    Daemon bad("", {"--no-such-flag"});
    CHECK(runToExit(bad) == 2);
}

TEST_CASE("--check-config: 0 for a valid file, 2 with FILE:LINE:COL for a bad one") {
    std::uint16_t ws = freePort(), ctl = freePort();
    Daemon ok(testConfig(ws, ctl), {"--check-config"});
    CHECK(runToExit(ok) == 0);
    CHECK(ok.out().find(": OK") != std::string::npos);

    Daemon bad("listen_addr: 127.0.0.1:1\nendpoints:\n  - path: /a\n    colour: red\n", {"--check-config"});
    CHECK(runToExit(bad) == 2);
    CHECK(bad.err().find("config.yml:4:5: unknown key 'colour' in endpoints[0]") != std::string::npos);
}

TEST_CASE("a bad config stops the start with exit code 2 and the position") {
    Daemon bad("threads: many\nendpoints: [{path: /a}]\n");
    CHECK(runToExit(bad) == 2);
    CHECK(bad.err().find("config.yml:1:10: threads:") != std::string::npos);
    Daemon missing("", {"--config", "/nonexistent/wsgw.yml"});
    CHECK(runToExit(missing) == 2);
    CHECK(missing.err().find("/nonexistent/wsgw.yml: cannot read") != std::string::npos);
}

TEST_CASE("sinks that are not built yet are refused clearly") {
    std::uint16_t ws = freePort(), ctl = freePort();
    Daemon redis(testConfig(ws, ctl, "stream_redis: {addr: 'redis://127.0.0.1:1'}\n"));
    CHECK(runToExit(redis) == 2);
    CHECK(redis.err().find("not available in this build yet") != std::string::npos);
}

TEST_CASE("a port in use: exit code 1 and a clear message, even when the holder is another wsgwd") {
    auto first = Daemon::start();
    // Shards share their port through SO_REUSEPORT; a second wsgwd must not join in.
    Daemon second(testConfig(first->wsPort, freePort()));
    CHECK(runToExit(second) == 1);
    CHECK(second.err().find("cannot listen on 127.0.0.1:" + std::to_string(first->wsPort) + ": Address already in use") !=
          std::string::npos);
    Daemon third(testConfig(freePort(), first->controlPort));
    CHECK(runToExit(third) == 1);
    CHECK(third.err().find("for the control API") != std::string::npos);
    CHECK(first->running());
}

TEST_CASE("a restart gets its ports back at once, even after the control API closed connections") {
    auto first = Daemon::start();
    const std::uint16_t ws = first->wsPort, ctl = first->controlPort;
    // Each request asks for Connection: close, so the server closes first and its side of every
    // connection waits in TIME_WAIT on the control port for a minute.
    for (int i = 0; i < 5; ++i) REQUIRE(httpGet(ctl, "/healthz").status == 200);
    REQUIRE(first->stop(SIGTERM) == 0);
    first.reset();
    Daemon second(testConfig(ws, ctl), {}, ctl); // throws if it is not healthy within 10 s
    CHECK(httpGet(ctl, "/healthz").status == 200);
}

TEST_CASE("the start-up log names the config, the limits, the endpoints and the addresses") {
    auto d = Daemon::start();
    std::string log = d->err();
    CHECK(log.find("Starting wsgwd") != std::string::npos);
    CHECK(log.find("CONFIG=") != std::string::npos);
    CHECK(log.find("NOFILES=") != std::string::npos);
    CHECK(log.find("THREADS=2") != std::string::npos);
    CHECK(log.find("NUMCPU=") != std::string::npos);
    CHECK(log.find("Creating websocket endpoint at path /connect") != std::string::npos);
    CHECK(log.find("Listening on 127.0.0.1:" + std::to_string(d->wsPort)) != std::string::npos);
}

TEST_CASE("SIGTERM and SIGINT: clients get 1001, events are flushed, exit 0") {
    for (int sig : {SIGTERM, SIGINT}) {
        auto d = Daemon::start();
        std::vector<std::unique_ptr<WsClient>> clients;
        for (int i = 0; i < 10; ++i) {
            clients.push_back(std::make_unique<WsClient>());
            REQUIRE(clients.back()->connect("127.0.0.1", d->wsPort, "/connect").ok());
        }
        REQUIRE(eventually([&] { return d->events().size() == 10; }));
        auto t0 = std::chrono::steady_clock::now();
        CHECK(d->stop(sig, 10000ms) == 0);
        CHECK(std::chrono::steady_clock::now() - t0 < 5000ms);
        for (auto &c : clients) {
            auto closed = c->waitClosed(2000ms);
            CHECK(closed.code == 1001);
            CHECK(closed.reason == "server shutting down");
        }
        std::size_t closes = 0;
        for (auto &e : d->events()) closes += e["action"] == "close";
        CHECK(closes == 10);
        CHECK(d->err().find("wsgwd stopped") != std::string::npos);
    }
}

TEST_CASE("SIGTERM is prompt even while a backend holds an idle keep-alive connection") {
    auto d = Daemon::start();
    httplib::Client backend("127.0.0.1", d->controlPort);
    backend.set_keep_alive(true);
    auto r = backend.Get("/status");
    REQUIRE(r);
    REQUIRE(r->status == 200);
    auto t0 = std::chrono::steady_clock::now();
    CHECK(d->stop(SIGTERM, 10000ms) == 0);
    CHECK(std::chrono::steady_clock::now() - t0 < 4000ms);
}
