// wsgwd as a process: flags, exit codes, config errors, start-up log, and graceful shutdown.
#include "harness.h"

#include "ws_client.h"

#include <doctest/doctest.h>
#include <httplib.h>

#include <algorithm>
#include <csignal>
#include <future>
#include <memory>
#include <sstream>

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
    // The signals and exit codes are in --help too, not only in the man page.
    CHECK(h.out().find("SIGHUP   reload the config file") != std::string::npos);
    CHECK(h.out().find("Exit status: 0 clean stop") != std::string::npos);
    Daemon bad("", {"--no-such-flag"});
    CHECK(runToExit(bad) == 2);
}

TEST_CASE("--check-config [FILE]: 0 for a valid file, 1 with FILE:LINE:COL for a bad one") {
    std::uint16_t ws = freePort(), ctl = freePort();
    Daemon ok(testConfig(ws, ctl), {"--check-config"});
    CHECK(runToExit(ok) == 0);
    CHECK(ok.out().find("config.yml: OK") != std::string::npos);

    const std::string badYaml = "listen_addr: 127.0.0.1:1\nendpoints:\n  - path: /a\n    colour: red\n";
    Daemon bad(badYaml, {"--check-config"});
    CHECK(runToExit(bad) == 1);
    CHECK(bad.err().find("config.yml:4:5: unknown key 'colour' in endpoints[0]") != std::string::npos);

    // A file named after the flag, whatever --config says; the same message a start gives (there
    // with exit code 2).
    TempDir dir;
    writeFile(dir.file("other.yml"), badYaml);
    Daemon named(testConfig(ws, ctl), {"--check-config", dir.file("other.yml")});
    CHECK(runToExit(named) == 1);
    CHECK(named.err().rfind(dir.file("other.yml") + ":4:5: unknown key 'colour' in endpoints[0]", 0) == 0);
    Daemon start("", {"--config", dir.file("other.yml")});
    CHECK(runToExit(start) == 2);
    CHECK(start.err() == named.err());
    writeFile(dir.file("good.yml"), testConfig(ws, ctl));
    Daemon good("", {"--check-config", dir.file("good.yml")});
    CHECK(runToExit(good) == 0);
    CHECK(good.out() == dir.file("good.yml") + ": OK\n");
    Daemon missing("", {"--check-config", dir.file("absent.yml")});
    CHECK(runToExit(missing) == 1);
    CHECK(missing.err().find(dir.file("absent.yml") + ": cannot read") != std::string::npos);
}

TEST_CASE("log_format: json: every diagnostic is one JSON object per line") {
    auto d = Daemon::start("log_format: json\n");
    WsClient c;
    REQUIRE(c.connect("127.0.0.1", d->wsPort, "/connect").ok());
    CHECK(d->stop(SIGTERM) == 0);
    std::istringstream lines(d->err());
    std::string line;
    std::size_t count = 0;
    bool sawListening = false, sawStopped = false;
    while (std::getline(lines, line)) {
        ++count;
        INFO("line: " << line);
        nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
        REQUIRE(j.is_object());
        REQUIRE(j.size() == 3);
        REQUIRE(j["time"].is_string());
        REQUIRE(j["level"].is_string());
        REQUIRE(j["msg"].is_string());
        const std::string t = j["time"];
        // 2026-01-31T12:00:00.123Z
        CHECK(t.size() == 24);
        CHECK(t[10] == 'T');
        CHECK(t.back() == 'Z');
        CHECK((j["level"] == "info" || j["level"] == "warning" || j["level"] == "error"));
        sawListening |= j["msg"].get<std::string>().rfind("Listening on 127.0.0.1:", 0) == 0;
        sawStopped |= j["msg"] == "wsgwd stopped";
    }
    CHECK(count >= 4);
    CHECK(sawListening);
    CHECK(sawStopped);
}

TEST_CASE("log_format: text is the default, and SIGHUP switches the format") {
    auto d = Daemon::start();
    // The control API answers (Daemon::start's readiness) a moment before this line is written.
    CHECK(eventually([&] { return d->err().find(" info Listening on ") != std::string::npos; }));
    CHECK(d->err().find("{\"time\"") == std::string::npos);
    std::string cfg = readFile(d->dir().file("config.yml"));
    writeFile(d->dir().file("config.yml"), cfg + "log_format: json\n");
    REQUIRE(::kill(d->pid(), SIGHUP) == 0);
    // The reload's own line is the first in the new format.
    CHECK(eventually([&] { return d->err().find("{\"time\"") != std::string::npos; }));
    std::string err = d->err();
    std::size_t at = err.find("{\"time\"");
    nlohmann::json j = nlohmann::json::parse(err.substr(at, err.find('\n', at) - at), nullptr, false);
    REQUIRE(j.is_object());
    CHECK(j["msg"].get<std::string>().rfind("SIGHUP: reloaded", 0) == 0);
}

TEST_CASE("a bad config stops the start with exit code 2 and the position") {
    Daemon bad("threads: many\nendpoints: [{path: /a}]\n");
    CHECK(runToExit(bad) == 2);
    CHECK(bad.err().find("config.yml:1:10: threads:") != std::string::npos);
    Daemon missing("", {"--config", "/nonexistent/wsgw.yml"});
    CHECK(runToExit(missing) == 2);
    CHECK(missing.err().find("/nonexistent/wsgw.yml: cannot read") != std::string::npos);
}

TEST_CASE("a Redis URL this build cannot serve (rediss://) is refused clearly") {
    std::uint16_t ws = freePort(), ctl = freePort();
    Daemon redis(testConfig(ws, ctl, "stream_redis: {addr: 'rediss://127.0.0.1:1'}\n"));
    CHECK(runToExit(redis) == 2);
    CHECK(redis.err().find("rediss:// (TLS) is not supported") != std::string::npos);
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
    // The control API answers /healthz as soon as it listens, a moment before the last lines.
    REQUIRE(eventually([&] { return d->err().find("Control API on") != std::string::npos; }));
    std::string log = d->err();
    CHECK(log.find("Starting wsgwd") != std::string::npos);
    CHECK(log.find("CONFIG=") != std::string::npos);
    CHECK(log.find("NOFILES=") != std::string::npos);
    CHECK(log.find("THREADS=2") != std::string::npos);
    CHECK(log.find("NUMCPU=") != std::string::npos);
    CHECK(log.find("Creating websocket endpoint at path /connect") != std::string::npos);
    CHECK(log.find("Listening on 127.0.0.1:" + std::to_string(d->wsPort)) != std::string::npos);
}

TEST_CASE("SIGTERM and SIGINT: clients get 1012, events are flushed, exit 0") {
    for (int sig : {SIGTERM, SIGINT}) {
        auto d = Daemon::start("drain_s: 1\n");
        std::vector<std::unique_ptr<WsClient>> clients;
        for (int i = 0; i < 10; ++i) {
            clients.push_back(std::make_unique<WsClient>());
            REQUIRE(clients.back()->connect("127.0.0.1", d->wsPort, "/connect").ok());
        }
        REQUIRE(eventually([&] { return d->events().size() == 10; }));
        auto t0 = std::chrono::steady_clock::now();
        // The clients read meanwhile and answer the close, as real ones do.
        auto stopped = std::async(std::launch::async, [&] { return d->stop(sig, 10000ms); });
        for (auto &c : clients) {
            auto closed = c->waitClosed(5000ms);
            CHECK(closed.code == 1012);
            CHECK(closed.reason == "service restart");
        }
        CHECK(stopped.get() == 0);
        CHECK(std::chrono::steady_clock::now() - t0 < 3000ms);
        std::size_t closes = 0;
        for (auto &e : d->events()) closes += e["action"] == "close";
        CHECK(closes == 10);
        CHECK(d->err().find("wsgwd stopped") != std::string::npos);
    }
}

TEST_CASE("SIGTERM drains: ready turns 503 at once, new clients are refused, closes spread over drain_s") {
    auto d = Daemon::start("drain_s: 2\n");
    constexpr int kClients = 20;
    std::vector<std::unique_ptr<WsClient>> clients;
    for (int i = 0; i < kClients; ++i) {
        clients.push_back(std::make_unique<WsClient>());
        REQUIRE(clients.back()->connect("127.0.0.1", d->wsPort, "/raw").ok());
    }
    REQUIRE(eventually([&] { return d->events().size() == kClients; }));
    REQUIRE(eventually([&] { return httpGet(d->controlPort, "/readyz").status == 200; }));
    auto t0 = std::chrono::steady_clock::now();
    ::kill(d->pid(), SIGTERM);
    REQUIRE(eventually([&] { return httpGet(d->controlPort, "/readyz").status == 503; }, 1000ms));
    CHECK(httpGet(d->controlPort, "/readyz").body == "not ready: shutting down\n");
    // The listeners close: a new client cannot even connect.
    REQUIRE(eventually([&] { return !WsClient().connect("127.0.0.1", d->wsPort, "/raw").ok(); }, 1000ms));
    // Read every client as its close comes; note when.
    std::vector<std::chrono::milliseconds> when(kClients, std::chrono::milliseconds(-1));
    for (int round = 0; round < 400; ++round) {
        bool all = true;
        for (int i = 0; i < kClients; ++i) {
            if (when[static_cast<std::size_t>(i)].count() >= 0) continue;
            auto r = clients[static_cast<std::size_t>(i)]->receive(5ms);
            if (r.kind == wsgw::test::Received::Kind::Close) {
                CHECK(r.closeCode == 1012);
                when[static_cast<std::size_t>(i)] =
                    std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
            } else {
                all = false;
            }
        }
        if (all) break;
    }
    std::sort(when.begin(), when.end());
    REQUIRE(when.front().count() >= 0);
    CHECK(when.front() < 700ms);   // the first ones go at once...
    CHECK(when.back() >= 1400ms);  // ...the last ones near the end of drain_s
    CHECK(when.back() <= 4000ms);
    CHECK(d->wait(10000ms) == 0);
}

TEST_CASE("SIGHUP reloads: endpoint tags, limits and the allowlist change live; restart-only keys are reported") {
    std::uint16_t ws = freePort(), ctl = freePort();
    auto config = [&](const std::string &tags, const std::string &extra, int threads = 2) {
        return "listen_addr: 127.0.0.1:" + std::to_string(ws) + "\ncontrol_addr: 127.0.0.1:" + std::to_string(ctl) +
               "\nthreads: " + std::to_string(threads) + "\nendpoints:\n  - path: /a\n    set_tags: {" + tags +
               "}\n    stream_include_tags: [v]\n" + extra;
    };
    Daemon d(config("v: one", ""), {}, ctl);
    WsClient before;
    REQUIRE(before.connect("127.0.0.1", ws, "/a").ok());
    REQUIRE(eventually([&] { return d.events().size() == 1; }));

    writeFile(d.dir().file("config.yml"), config("v: two", "max_connections: 2\n", 1));
    ::kill(d.pid(), SIGHUP);
    REQUIRE(eventually([&] { return d.err().find("SIGHUP: reloaded") != std::string::npos; }));
    CHECK(d.err().find("need a restart and were not applied: threads") != std::string::npos);
    WsClient after;
    REQUIRE(after.connect("127.0.0.1", ws, "/a").ok());
    REQUIRE(eventually([&] { return d.events().size() == 2; }));
    CHECK(d.events()[1]["tags"] == "v=two");                        // new connections: new set_tags
    CHECK(httpGet(ctl, "/status").body.find("v=one") != std::string::npos); // the old one kept its tags
    CHECK(WsClient().connect("127.0.0.1", ws, "/a").status == 503); // max_connections: 2, live
    CHECK(before.isOpen());

    // A bad file is refused; the running configuration stays.
    writeFile(d.dir().file("config.yml"), "endpoints: [{path: /a, colour: red}]\n");
    ::kill(d.pid(), SIGHUP);
    REQUIRE(eventually([&] { return d.err().find("is not valid, the running configuration stays") != std::string::npos; }));
    CHECK(d.err().find("unknown key 'colour'") != std::string::npos);
    CHECK(httpGet(ctl, "/status").status == 200);

    // The allowlist reloads too.
    writeFile(d.dir().file("config.yml"),
              config("v: two", "internal_endpoint_access_whitelist: [10.0.0.0/8]\n"));
    ::kill(d.pid(), SIGHUP);
    REQUIRE(eventually([&] { return httpGet(ctl, "/status").status == 403; }));
    CHECK(before.isOpen());
    // The clients answer the drain's 1012 (a silent one would hold the drain for lws' 5 s wait).
    auto stopped = std::async(std::launch::async, [&] { return d.stop(SIGTERM, 20000ms); });
    CHECK(before.waitClosed(15000ms).code == 1012);
    CHECK(after.waitClosed(15000ms).code == 1012);
    CHECK(stopped.get() == 0);
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
