#pragma once

#include "config.h"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace wsgw {
class Hub;
}

namespace wsgw::daemon {

/// wsgwd put together from a Config: the hub and its event sinks, the WebSocket shards and the
/// control API. Thread-safe.
class Gateway {
public:
    explicit Gateway(Config config);
    ~Gateway(); ///< stop(0) if running

    Gateway(const Gateway &) = delete;
    Gateway &operator=(const Gateway &) = delete;

    /// Starts everything. On failure (a port in use, a sink that cannot exist) returns false
    /// with a message, leaving nothing running.
    bool start(std::string *error);

    /// Graceful stop: /readyz turns 503 at once, new connections are refused, every connection
    /// is closed with 1012 "service restart" spread over `drain` (so clients do not all
    /// reconnect to the next node at once), the closing handshakes get up to `grace` more, then
    /// the control API stops and the event sinks flush for up to `flushFor`. Idempotent.
    void stop(std::chrono::milliseconds drain, std::chrono::milliseconds grace, std::chrono::milliseconds flushFor);

    /// Applies what can change without dropping connections (endpoint tags, limits, origins,
    /// compression, idle timeout and lifetime, the control API's allowlist, token, tag limits and
    /// timeout, the log level, drain and flush times, the event sinks, backends and routes) and
    /// returns the keys that differ but need a restart (listen addresses, threads, TLS, the
    /// mirror, the cluster, ...), which keep their running values. A replaced or removed backend
    /// first flushes its backlog for up to shutdown_flush_s (this call waits for it).
    std::vector<std::string> reload(const Config &next);

    /// One line for `systemctl status` (sd_notify STATUS=): open WebSocket and control
    /// connections, and which event sinks or the mirror are down. Safe to call from any thread
    /// once start() has returned true.
    std::string statusLine() const;

    Hub &hub();
    const Config &config() const;

private:
    struct Impl;
    static void reloadEventSinks(Impl &d, const Config &next);
    std::unique_ptr<Impl> impl_;
};

/// Why this build cannot run `config` (a configured feature it does not have yet), or "".
std::string unavailableFeature(const Config &config);

/// The CPUs this process may run on (its affinity mask: taskset and cpusets count).
unsigned usableCpus();
/// The number of shard threads a config asks for (threads: 0 means one per usable CPU).
unsigned shardCount(const Config &config);

} // namespace wsgw::daemon
