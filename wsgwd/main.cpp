// wsgwd: flags, signals and exit codes. Everything else lives in the core library.
#include "config.h"
#include "gateway.h"
#include "log.h"

#include <wsgw/version.h>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <pthread.h>
#include <thread>

namespace {

// Exit codes.
constexpr int kOk = 0;
constexpr int kRuntimeError = 1; // could not start (a port in use, ...)
constexpr int kConfigError = 2;  // bad flags or config

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
    bool checkOnly = false;
    bool version = false;
    app.add_option("-c,--config", configPath, "the config file")->capture_default_str();
    app.add_flag("--check-config", checkOnly, "validate the config file and exit (0: valid, 2: invalid)");
    app.add_option("--log-level", logLevel, "trace, debug, info, warn, error or off (overrides log_level)");
    app.add_flag("-V,--version", version, "print the version and exit");
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

    std::string error;
    auto config = wsgw::daemon::loadConfig(configPath, &error);
    if (!config) {
        std::fprintf(stderr, "%s\n", error.c_str());
        return kConfigError;
    }
    if (std::string why = wsgw::daemon::unavailableFeature(*config); !why.empty()) {
        std::fprintf(stderr, "%s\n", why.c_str());
        return kConfigError;
    }
    if (checkOnly) {
        std::printf("%s: OK\n", configPath.c_str());
        return kOk;
    }
    std::string level = logLevel.empty() ? config->logLevel : logLevel;
    if (!wsgw::daemon::setupLogging(level)) {
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

    wsgw::daemon::Gateway gateway(std::move(*config));
    if (!gateway.start(&error)) {
        spdlog::error("{}", error);
        return kRuntimeError;
    }

    // SIGHUP reloads; SIGTERM drains over drain_s; SIGINT does the same without the spread.
    int sig = 0;
    for (;;) {
        sigwait(&signals, &sig);
        if (sig != SIGHUP) break;
        std::string why;
        auto next = wsgw::daemon::loadConfig(configPath, &why);
        if (next && !(why = wsgw::daemon::unavailableFeature(*next)).empty()) next.reset();
        if (!next) {
            spdlog::error("SIGHUP: {} is not valid, the running configuration stays: {}", configPath, why);
            continue;
        }
        std::vector<std::string> later = gateway.reload(*next);
        std::string list;
        for (const std::string &k : later) list += (list.empty() ? "" : ", ") + k;
        if (later.empty())
            spdlog::info("SIGHUP: reloaded {}", configPath);
        else
            spdlog::warn("SIGHUP: reloaded {}; these changes need a restart and were not applied: {}", configPath, list);
    }
    const bool quick = sig == SIGINT;
    const std::chrono::seconds drain = quick ? std::chrono::seconds(0) : gateway.config().drain;
    const std::chrono::seconds flushFor = gateway.config().shutdownFlush;
    spdlog::info("{}: refusing new connections, closing the open ones (1012 service restart){}, then flushing "
                 "events; {} again to quit at once",
                 quick ? "SIGINT" : "SIGTERM",
                 quick ? std::string() : " over " + std::to_string(drain.count()) + " s",
                 quick ? "Ctrl-C" : "SIGTERM");
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
