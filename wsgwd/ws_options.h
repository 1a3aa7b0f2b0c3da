#pragma once

// What the WebSocket server runs with: its address, its endpoints and their limits. These are
// config.yml's own sections (listen_addr, endpoints[], idle_timeout_s, ...): the config parser
// fills them, units converted (bytes, std::chrono), and the gateway hands them to WsServer as
// they are.
//
// Plain values: thread-compatible.

#include "authorizer.h"
#include "jwt.h"
#include "net_address.h"
#include "tls.h"

#include <wsgw/event.h>
#include <wsgw/outbound.h>
#include <wsgw/tags.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace wsgw::daemon {

using wsgw::SlowConsumerPolicy; // the library's (wsgw/outbound.h): close | drop_newest | drop_oldest

/// An inbound rate limit per connection (rate_limit): a token bucket of `burst` messages
/// refilled at `perSecond`.
struct RateLimit {
    enum class Policy {
        Close, ///< close: close the connection with 1008
        Drop,  ///< drop: discard the message (counted)
    };
    unsigned perSecond = 0; ///< max_messages_per_s; 0: no limit
    /// burst; at least 1 where perSecond is not 0 (the parser makes an absent burst perSecond).
    unsigned burst = 0;
    Policy policy = Policy::Close;
};

/// What happens to a client that does not read fast enough (slow_consumer).
struct SlowConsumer {
    using Policy = SlowConsumerPolicy; ///< close | drop_newest | drop_oldest (all counted)
    /// max_outbound_kb: what is queued for one client beyond this applies the policy.
    std::size_t maxOutboundBytes = 4u << 20;
    Policy policy = Policy::Close;
};

/// One WebSocket endpoint (endpoints[]): a URL path and what its connections get.
struct WsEndpoint {
    std::string path; ///< starts with '/'; unique among endpoints
    TagList setTags;  ///< set_tags: every new connection starts with them, in the order written
    /// What its events carry: stream_include_tags (duplicates removed) and json_extract_vars.
    EventSpec events;
    /// max_message_size_kb: a larger client message closes with 1009.
    std::size_t maxMessageBytes = 1024 * 1024;
    /// compression: offer permessage-deflate. On by default, as in the original: the
    /// Autobahn|Testsuite found no fault of libwebsockets 4.1.6's inflater (README:
    /// Compression); the inflate stall watchdog stays (lws_workarounds.h).
    bool compression = true;
    std::size_t maxConnections = 0; ///< max_connections: 0: only the global limit; beyond it: 503
    /// allowed_origins, lower case; empty: any. Requests without Origin pass.
    std::vector<std::string> allowedOrigins;
    RateLimit rateLimit;       ///< rate_limit, else the global one
    SlowConsumer slowConsumer; ///< slow_consumer, else the global one
    /// jwt: upgrades must carry a valid token (jwt.h); its claims_to_tags join set_tags.
    std::optional<JwtSettings> jwt;
    /// authorize: each upgrade is put to this HTTP authorizer first (authorizer.h).
    std::optional<AuthorizeSettings> authorize;
    /// backends: the named backends (Config::backends) that get this endpoint's events; unset:
    /// the top-level stream_* sinks. Read by the gateway's routes, not by the WebSocket server.
    std::optional<std::vector<std::string>> backends;
};

struct WsServerOptions {
    /// listen_addr. WsServer needs an IP literal host (IPv4: IPv4 only), or "" for every
    /// interface: the gateway resolves a name before it hands the options over.
    HostPort addr{"0.0.0.0", 5000};
    std::vector<WsEndpoint> endpoints; ///< endpoints: at least one
    /// idle_timeout_s: no frame for this long: closed (a ping goes out at half); 0: never.
    std::chrono::seconds idleTimeout{60};
    std::size_t maxConnections = 0; ///< max_connections: 0: unlimited; beyond it upgrades get 503
    /// max_connection_lifetime_s: 0: none; else a connection is closed (1012) after this ±10%.
    std::chrono::seconds maxLifetime{0};
    /// tls: every accepted connection speaks TLS (wss://); a client that does not is dropped
    /// after its first bytes. start() fails with a message if the files cannot be used.
    std::optional<TlsFiles> tls;
    /// Not config: set by the gateway in a cluster, where every connection id starts with this
    /// node's 16 bits (wsgw::clusterIdPrefix), so `id=` commands go to their node only.
    std::optional<std::uint16_t> idPrefix;
};

} // namespace wsgw::daemon
