// At the open-file limit: no busy loop, one warning per episode with a count, new clients
// refused at once (503), and service back by itself when descriptors free up.

#include "clients.h"
#include "harness.h"

#include <doctest/doctest.h>

#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

using namespace wsgw::itest;
using wsgw::test::ConnectOptions;
using wsgw::test::HandshakeFailure;
using wsgw::test::WsClient;

namespace {

std::size_t openFds(int pid) {
    std::size_t n = 0;
    DIR *d = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
    if (!d) return 0;
    while (dirent *e = readdir(d))
        if (e->d_name[0] != '.') ++n;
    closedir(d);
    return n;
}

// User + system CPU time of a process, in seconds (utime and stime of /proc/PID/stat).
double cpuSeconds(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), {});
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));
    std::string f;
    unsigned long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && fields >> f; ++i) {
        if (i == 14) utime = std::stoul(f);
        if (i == 15) stime = std::stoul(f);
    }
    return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::size_t count(const std::string &text, const std::string &what) {
    std::size_t n = 0;
    for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
}

} // namespace

TEST_CASE("at the open-file limit wsgwd refuses new clients at once without spinning, and recovers") {
    auto d = Daemon::start("idle_timeout_s: 0\ndrain_s: 1\n");
    // Room for 24 more descriptors; the clients below take them all.
    rlimit lim{};
    lim.rlim_cur = lim.rlim_max = openFds(d->pid()) + 24;
    REQUIRE(prlimit(d->pid(), RLIMIT_NOFILE, &lim, nullptr) == 0);

    std::vector<std::unique_ptr<WsClient>> held;
    int refused = 0;
    for (int i = 0; i < 60 && refused < 3; ++i) {
        auto ws = std::make_unique<WsClient>();
        ConnectOptions o;
        o.timeout = 3000ms;
        auto hs = ws->connect("127.0.0.1", d->wsPort, "/raw", o);
        if (hs.ok()) {
            held.push_back(std::move(ws));
            continue;
        }
        // Refused at once with a 503 that says why: not left hanging until a timeout.
        INFO("attempt ", i, ": ", hs.error);
        CHECK(hs.failure == HandshakeFailure::NotUpgraded);
        CHECK(hs.status == 503);
        CHECK(hs.body.find("open-file limit") != std::string::npos);
        ++refused;
    }
    REQUIRE(refused == 3);
    REQUIRE(held.size() >= 10);

    // Held at the limit while clients keep knocking: wsgwd stays nearly idle, each knock is
    // answered quickly.
    const double cpu0 = cpuSeconds(d->pid());
    const auto t0 = std::chrono::steady_clock::now();
    int knocks = 0, slow = 0;
    while (std::chrono::steady_clock::now() - t0 < 3s) {
        WsClient ws;
        ConnectOptions o;
        o.timeout = 2000ms;
        auto start = std::chrono::steady_clock::now();
        auto hs = ws.connect("127.0.0.1", d->wsPort, "/raw", o);
        CHECK_FALSE(hs.ok());
        if (std::chrono::steady_clock::now() - start > 1s) ++slow;
        ++knocks;
        std::this_thread::sleep_for(50ms);
    }
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double cpuShare = (cpuSeconds(d->pid()) - cpu0) / elapsed;
    INFO("wsgwd used ", cpuShare * 100, "% of a core over ", knocks, " refused knocks");
    CHECK(cpuShare < 0.05);
    CHECK(slow == 0);
    CHECK(metric(*d, "wsgw_upgrades_refused_total{reason=\"fd_limit\"}") >= 3 + knocks / 2);

    // Clients in bursts, so that one shard gives up its reserve while another accepts: each is
    // refused at once or served, none is left hanging (a shard whose reserve another shard's
    // accept took must get one back, or every client the kernel sends it waits).
    int hung = 0, served = 0, refusedInBursts = 0;
    for (int round = 0; round < 15; ++round) {
        std::vector<std::thread> burst;
        std::mutex mu;
        std::vector<std::unique_ptr<WsClient>> kept;
        for (int i = 0; i < 12; ++i)
            burst.emplace_back([&] {
                auto ws = std::make_unique<WsClient>();
                ConnectOptions o;
                o.timeout = 2000ms;
                auto hs = ws->connect("127.0.0.1", d->wsPort, "/raw", o);
                std::lock_guard<std::mutex> lock(mu);
                if (hs.ok()) {
                    ++served;
                    kept.push_back(std::move(ws));
                } else if (hs.failure == HandshakeFailure::NotUpgraded && hs.status == 503) {
                    ++refusedInBursts;
                } else {
                    ++hung;
                    MESSAGE("a client in a burst: ", hs.error);
                }
            });
        for (auto &t : burst) t.join();
        // Served clients keep their descriptors until the round is over, then leave.
    }
    INFO("in bursts: ", served, " served, ", refusedInBursts, " refused, ", hung, " neither");
    CHECK(hung == 0);
    CHECK(refusedInBursts >= 150);

    // One warning for the whole episode, however many accepts failed.
    CHECK(count(d->err(), "at the open-file limit") == 1);

    // Descriptors free up: service comes back by itself, and the end of the episode is logged
    // with the count.
    held.resize(held.size() - 5);
    bool back = eventually(
        [&] {
            WsClient ws;
            return ws.connect("127.0.0.1", d->wsPort, "/raw").ok();
        },
        5000ms);
    CHECK(back);
    INFO("wsgwd's log: ", d->err());
    CHECK(eventually([&] { return d->err().find("below the open-file limit again") != std::string::npos; }, 5000ms));
    CHECK(d->stop(SIGTERM) == 0);
}
