// The WebSocket port under slowhttptest: slow bodies (any method but GET is answered and closed
// at once) and slow headers (cut at the 10 s handshake timeout), 1,000 connections each, while a
// well-behaved client connects, gets a /send, and the control API answers.
#include "clients.h"
#include "hostile.h"

#include <doctest/doctest.h>

#include <iostream>

using namespace wsgw::itest;
using namespace wsgw::hostile;
using Clock = std::chrono::steady_clock;

namespace {

std::string wsUrl(const Daemon &d, const std::string &path) {
    return "http://127.0.0.1:" + std::to_string(d.wsPort) + path;
}

// A new client completes its handshake within a second.
bool wellBehavedServed(Daemon &d) {
    wsgw::test::WsClient ws;
    wsgw::test::ConnectOptions o;
    o.timeout = 3000ms;
    auto t0 = Clock::now();
    return ws.connect("127.0.0.1", d.wsPort, "/raw", o).ok() && Clock::now() - t0 < 1000ms;
}

// What the prober saw (the control API and a /send to a connected client, meanwhile).
void checkProber(Prober &prober) {
    prober.stop();
    CHECK(prober.deliveredInOrder(5000ms));
    CHECK(prober.sendsTried() >= 10);
    CHECK(prober.sendsAnswered() == prober.sendsTried());
    CHECK(prober.health().failures == 0);
}

} // namespace

TEST_CASE("slow bodies on the WebSocket port: 1,000 POSTs are answered and closed at once, none is held") {
    std::string tool = requireTool("slowhttptest", "slowhttptest");
    auto d = Daemon::start();
    Receiver rx(*d);
    Prober prober(d->controlPort, &rx);
    Tool attack({tool, "-B", "-c", "1000", "-r", "1000", "-l", "12", "-p", "3", "-i", "2", "-s", "8192", "-x", "16",
                 "-u", wsUrl(*d, "/raw")},
                d->dir().file("attack.log"));
    std::size_t peak = 0;
    int served = 0, tries = 0;
    auto until = Clock::now() + 8s;
    while (Clock::now() < until) {
        peak = std::max(peak, establishedOn(d->wsPort, d->pid()));
        served += wellBehavedServed(*d);
        ++tries;
        std::this_thread::sleep_for(200ms);
    }
    attack.stop();
    std::string refused = std::to_string(metric(*d, "wsgw_upgrades_refused_total{reason=\"not_websocket\"}"));
    std::cout << "HOSTILE ws slow body: at most " << peak << " held at once; " << refused << " answered 405; " << served
              << " of " << tries << " new clients served\n";
    MESSAGE("attack tool said:\n" << attack.output().substr(0, 2000));
    // slowhttptest opens its 1,000 in the first second; each is closed right after its 405.
    CHECK(metric(*d, "wsgw_upgrades_refused_total{reason=\"not_websocket\"}") >= 500);
    CHECK(peak < 200);
    CHECK(served == tries);
    checkProber(prober);
    CHECK(d->running());
}

TEST_CASE("slow headers on the WebSocket port: 1,000 are cut at the handshake timeout, clients still served") {
    std::string tool = requireTool("slowhttptest", "slowhttptest");
    auto d = Daemon::start();
    Receiver rx(*d);
    Prober prober(d->controlPort, &rx);
    auto t0 = Clock::now();
    Tool attack({tool, "-H", "-c", "1000", "-r", "1000", "-l", "16", "-p", "3", "-i", "2", "-x", "16", "-u",
                 wsUrl(*d, "/raw")},
                d->dir().file("attack.log"));
    std::size_t peak = 0;
    int served = 0, tries = 0;
    while (Clock::now() - t0 < 6s) {
        peak = std::max(peak, establishedOn(d->wsPort, d->pid()));
        served += wellBehavedServed(*d);
        ++tries;
        std::this_thread::sleep_for(200ms);
    }
    // The slow ones began within the first second or two; 10 s after they began, they are gone.
    bool cut = eventually([&] { return establishedOn(d->wsPort, d->pid()) < 50; }, 8000ms);
    auto took = std::chrono::duration<double>(Clock::now() - t0).count();
    attack.stop();
    std::cout << "HOSTILE ws slowloris: " << peak << " held at peak, cut after " << took << " s; " << served << " of "
              << tries << " new clients served meanwhile\n";
    MESSAGE("attack tool said:\n" << attack.output().substr(0, 2000));
    CHECK(peak >= 900); // the attack really held its connections
    CHECK(cut);
    CHECK(took < 13.5); // 10 s, plus the attack's ramp-up and the sampling
    CHECK(served == tries);
    checkProber(prober);
    CHECK(d->running());
}
