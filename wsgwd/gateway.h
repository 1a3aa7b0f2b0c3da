#pragma once

#include "config.h"

#include <chrono>
#include <memory>
#include <string>

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

    /// Graceful stop: refuses new connections, closes every connection with 1001 "going away"
    /// (waiting up to `grace` for the closing handshakes), stops the control API, and flushes
    /// the event sinks for up to `flushFor`. Idempotent.
    void stop(std::chrono::milliseconds grace, std::chrono::milliseconds flushFor);

    Hub &hub();
    const Config &config() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// Why this build cannot run `config` (a configured feature it does not have yet), or "".
std::string unavailableFeature(const Config &config);

/// The number of shard threads a config asks for (threads: 0 means one per CPU).
unsigned shardCount(const Config &config);

} // namespace wsgw::daemon
