// wsgwd: flags, signals and exit codes. Everything else lives in the core library.
#include "config.h"
#include "gateway.h"
#include "log.h"
#include "systemd_notify.h"

#include <wsgw/hub.h>
#include <wsgw/version.h>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <sys/resource.h>

#include <cerrno>
#include <chrono>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <pthread.h>
#include <thread>

namespace {

// Exit codes (wsgwd(8), EXIT STATUS).
constexpr int kOk = 0;
constexpr int kRuntimeError = 1; // could not start (a port in use, ...); --check-config: invalid
constexpr int kConfigError = 2;  // bad flags or config

// How often systemd's STATUS= line is refreshed (more often with a short WatchdogSec=).
constexpr std::chrono::milliseconds kStatusEvery{5000};

const char *const kHelpFooter = R"(Signals:
  SIGTERM  drain: refuse new clients, close every connection (1012) over drain_s, flush events, exit 0
  SIGINT   the same without the spread; a second SIGTERM or SIGINT quits at once
  SIGHUP   reload the config file; an invalid file is refused and the running configuration stays

Exit status: 0 clean stop (or --check-config: valid), 1 could not start (or --check-config:
invalid), 2 bad flags or config.

Under systemd (Type=notify) wsgwd reports READY=1, STATUS=, RELOADING=1, STOPPING=1 and, with
WatchdogSec=, WATCHDOG=1. See wsgwd(8).)";

// Raises the soft open-file limit to the hard one: every connection is a file descriptor.
rlim_t raiseFileLimit() {
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return 0;
    if (lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
        getrlimit(RLIMIT_NOFILE, &lim);
    }
    return lim.rlim_cur;
}

} // namespace

int main(int argc, char **argv) {
    CLI::App app{"wsgwd: a WebSocket gateway. Holds WebSocket connections, addresses them by tags, "
                 "and streams their events to your backends."};
    std::string configPath = "config.yml";
    std::string logLevel;
    std::string checkPath;
    bool version = false;
    app.add_option("-c,--config", configPath, "the config file")->capture_default_str();
    CLI::Option *check =
        app.add_option("--check-config", checkPath,
                       "validate FILE (default: the --config file) and exit: 0 valid, 1 invalid, with FILE:LINE:COL")
            ->expected(0, 1)
            ->type_name("[FILE]");
    app.add_option("--log-level", logLevel, "trace, debug, info, warn, error or off (overrides log_level)");
    app.add_flag("-V,--version", version, "print the version and exit");
    app.footer(kHelpFooter);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError &e) {
        int rc = app.exit(e);
        return rc == 0 ? kOk : kConfigError;
    }
    if (version) {
        std::printf("wsgwd %s\n", wsgw::libraryVersion());
        return kOk;
    }
    const bool checkOnly = check->count() > 0;
    if (checkOnly && checkPath.empty()) checkPath = configPath;
    if (checkOnly) configPath = checkPath;
    const int badConfig = checkOnly ? kRuntimeError : kConfigError;

    std::string error;
    auto config = wsgw::daemon::loadConfig(configPath, &error);
    if (!config) {
        std::fprintf(stderr, "%s\n", error.c_str());
        return badConfig;
    }
    if (std::string why = wsgw::daemon::unavailableFeature(*config); !why.empty()) {
        std::fprintf(stderr, "%s\n", why.c_str());
        return badConfig;
    }
    if (checkOnly) {
        std::printf("%s: OK\n", configPath.c_str());
        return kOk;
    }
    std::string level = logLevel.empty() ? config->logLevel : logLevel;
    if (!wsgw::daemon::setupLogging(level, config->logFormat)) {
        std::fprintf(stderr, "--log-level: unknown level '%s': use trace, debug, info, warn, error or off\n",
                     level.c_str());
        return kConfigError;
    }

    // Signals are taken synchronously by this thread; every other thread inherits the block.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    rlim_t files = raiseFileLimit();
    spdlog::info("Starting wsgwd {}. CONFIG={} NOFILES={} THREADS={} NUMCPU={}", wsgw::libraryVersion(), configPath,
                 static_cast<unsigned long long>(files), wsgw::daemon::shardCount(*config),
                 wsgw::daemon::usableCpus());

    wsgw::daemon::SystemdNotifier systemd;
    wsgw::daemon::Gateway gateway(std::move(*config));
    if (!gateway.start(&error)) {
        spdlog::error("{}", error);
        return kRuntimeError;
    }
    // The listeners are bound and every sink's thread runs (a sink still connecting is named in
    // the status line, and /readyz says so; systemd's readiness is the process's).
    systemd.ready(gateway.statusLine());
    if (systemd.watchdog().count() > 0)
        spdlog::info("systemd watchdog: a ping every {} ms",
                     systemd.tickInterval(kStatusEvery).count());

    // SIGHUP reloads; SIGTERM drains over drain_s; SIGINT does the same without the spread.
    // Between signals, every tick refreshes systemd's status line and pings its watchdog.
    const std::chrono::milliseconds tick = systemd.tickInterval(kStatusEvery);
    const timespec tickSpec{static_cast<std::time_t>(tick.count() / 1000), static_cast<long>(tick.count() % 1000) * 1'000'000};
    // Each tick asks every shard to run an empty command; the next tick pings the watchdog only
    // if all of them did, so a stuck shard thread gets wsgwd restarted, not just a dead process.
    // A probe that could not be queued (an inbox full) counts as unanswered and is sent again.
    struct Probe {
        std::atomic<bool> answered{true};
        std::atomic<bool> inFlight{false};
    };
    auto shardsProbe = std::make_shared<Probe>();
    auto probe = [&gateway, shardsProbe] {
        const bool alive = shardsProbe->answered.exchange(false);
        if (!shardsProbe->inFlight.exchange(true))
            gateway.hub().forEachShard([](wsgw::Shard &) -> std::size_t { return 0; },
                                       [shardsProbe](wsgw::CountResult r) {
                                           if (r.ok()) shardsProbe->answered.store(true);
                                           shardsProbe->inFlight.store(false);
                                       });
        return alive;
    };
    int sig = 0;
    for (;;) {
        sig = systemd.active() ? sigtimedwait(&signals, nullptr, &tickSpec) : sigwaitinfo(&signals, nullptr);
        if (sig < 0) {
            if (errno == EAGAIN) {
                const bool alive = probe();
                systemd.tick(gateway.statusLine(), alive);
            }
            continue; // EAGAIN: the tick; EINTR: a signal not in the set (a debugger's)
        }
        if (sig != SIGHUP) break;
        systemd.reloading("reloading " + configPath);
        std::string why;
        auto next = wsgw::daemon::loadConfig(configPath, &why);
        if (next && !(why = wsgw::daemon::unavailableFeature(*next)).empty()) next.reset();
        if (!next) {
            spdlog::error("SIGHUP: {} is not valid, the running configuration stays: {}", configPath, why);
            systemd.ready("reload refused: " + why + "; " + gateway.statusLine());
            continue;
        }
        std::vector<std::string> later = gateway.reload(*next);
        std::string list;
        for (const std::string &k : later) list += (list.empty() ? "" : ", ") + k;
        if (later.empty())
            spdlog::info("SIGHUP: reloaded {}", configPath);
        else
            spdlog::warn("SIGHUP: reloaded {}; these changes need a restart and were not applied: {}", configPath, list);
        systemd.ready(gateway.statusLine());
    }
    const bool quick = sig == SIGINT;
    const std::chrono::seconds drain = quick ? std::chrono::seconds(0) : gateway.config().drain;
    const std::chrono::seconds flushFor = gateway.config().shutdownFlush;
    spdlog::info("{}: refusing new connections, closing the open ones (1012 service restart){}, then flushing "
                 "events; {} again to quit at once",
                 quick ? "SIGINT" : "SIGTERM",
                 quick ? std::string() : " over " + std::to_string(drain.count()) + " s",
                 quick ? "Ctrl-C" : "SIGTERM");
    systemd.stopping(std::string(quick ? "SIGINT" : "SIGTERM") + ": draining; " + gateway.statusLine());
    // A second signal ends the process immediately.
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
    std::signal(SIGHUP, SIG_IGN);
    sigdelset(&signals, SIGHUP);
    pthread_sigmask(SIG_UNBLOCK, &signals, nullptr);

    gateway.stop(drain, std::chrono::seconds(3), flushFor);
    spdlog::info("wsgwd stopped");
    return kOk;
}
