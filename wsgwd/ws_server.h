#pragma once

#include "metrics.h"
#include "ws_options.h"

#include <wsgw/event.h>
#include <wsgw/hub.h>
#include <wsgw/tags.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wsgw::daemon {

/// The WebSocket side of wsgwd: one libwebsockets context per hub shard, each on its own thread,
/// all listening on the same address with SO_REUSEPORT so the kernel spreads connections over
/// them. A connection lives on the shard that accepted it; commands reach it through the hub.
///
/// Thread-safe.
class WsServer {
public:
    /// `hub` must have one shard per service thread wanted and must not be started yet: start()
    /// sets each shard's wake-up.
    WsServer(Hub &hub, Metrics &metrics, WsServerOptions options);
    ~WsServer(); ///< stop()s with 1001 and no grace if still running

    WsServer(const WsServer &) = delete;
    WsServer &operator=(const WsServer &) = delete;

    /// Opens every shard's listener and starts its thread. Returns false with a message if any
    /// shard cannot listen (then nothing is left running).
    bool start(std::string *error);

    /// Stops accepting (the listening sockets close, so clients are refused at once and retry
    /// elsewhere), then closes every connection with `code` and `reason`, spread evenly over
    /// `spread` so a fleet of clients does not reconnect all at once; waits up to `grace` more
    /// for the closing handshakes, then stops the threads. Idempotent.
    void stop(std::uint16_t code, std::string_view reason, std::chrono::milliseconds spread,
              std::chrono::milliseconds grace);

    /// True between a successful start() and stop().
    bool listening() const noexcept;

    /// Connections open now, over all shards.
    std::size_t connections() const noexcept;

    /// Thread-safe: new endpoint settings (same paths, same order), idle timeout, connection
    /// cap and lifetime, applied on each shard's thread; open connections keep going with them.
    /// Listen address and TLS are not changed.
    void reload(WsServerOptions next);

    /// Thread-safe: lets every connection paused for event backpressure read again. While the
    /// hub's EventBus::paused() is true, a connection that sends stops being read (TCP then
    /// slows the client down) until this is called.
    void resumeReading();

    /// Headroom messages should be created with (libwebsockets' LWS_PRE), so that compressed
    /// connections can write them without a copy.
    static std::size_t messageHeadroom() noexcept;

    struct Impl; // opaque; public so that the implementation's helpers can name it

private:
    std::unique_ptr<Impl> impl_;
};

} // namespace wsgw::daemon
