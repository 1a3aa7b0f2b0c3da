#pragma once

#include "config.h"
#include "metrics.h"
#include "outbound_queue.h"

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

/// One WebSocket endpoint (a URL path) and what its connections get.
struct WsEndpoint {
    std::string path;
    TagList setTags;             ///< tags every new connection starts with
    EventSpec events;            ///< what its events carry
    std::size_t maxMessageBytes = 1024 * 1024; ///< a larger client message closes with 1009
    bool compression = false;    ///< offer permessage-deflate
    std::size_t maxConnections = 0;          ///< 0: only the global limit; beyond it: 503
    std::vector<std::string> allowedOrigins; ///< lower case; empty: any. Requests without Origin pass.

    /// Inbound messages per second per connection (token bucket); 0: unlimited.
    unsigned ratePerSecond = 0;
    unsigned rateBurst = 1;
    bool rateDropInsteadOfClose = false; ///< drop the message instead of closing (1008)

    /// What is queued for a client beyond this applies the slow-consumer policy.
    std::size_t maxOutboundBytes = 4u << 20;
    using SlowConsumerPolicy = daemon::SlowConsumerPolicy;
    SlowConsumerPolicy slowConsumer = SlowConsumerPolicy::Close;
};

struct WsServerOptions {
    std::string host = "0.0.0.0"; ///< an IP literal (IPv4: IPv4 only), or "" for every interface
    std::uint16_t port = 5000;
    std::vector<WsEndpoint> endpoints;
    std::chrono::seconds idleTimeout{60};     ///< no frame for this long: closed (a ping goes out at half)
    std::size_t maxConnections = 0;           ///< 0: unlimited; beyond it upgrades get 503
    std::chrono::seconds maxLifetime{0};      ///< 0: none; else closed (1012) after this ±10%
    /// Set: every accepted connection speaks TLS (wss://); a client that does not is dropped
    /// after its first bytes. start() fails with a message if the files cannot be used.
    std::optional<TlsFiles> tls;
};

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
