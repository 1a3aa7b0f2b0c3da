#pragma once

#include "metrics.h"
#include "ws_server.h"

#include <string>
#include <string_view>

namespace wsgw::daemon {

/// The parts of an upgrade request the gateway looks at (header values as received).
struct UpgradeRequest {
    std::string_view path;       ///< empty: not a GET
    std::string_view connection; ///< Connection
    std::string_view key;        ///< Sec-WebSocket-Key
    std::string_view version;    ///< Sec-WebSocket-Version
    std::string_view origin;     ///< Origin
    std::string_view protocol;   ///< Sec-WebSocket-Protocol
};

/// What to do with an upgrade request.
struct UpgradeVerdict {
    unsigned status = 0;         ///< 0: accept; else answer with this HTTP status and `message`
    Refusal reason = Refusal::BadRequest;
    std::string message;
    std::string_view subprotocol; ///< accepted: the subprotocol to echo (the first offered), or empty
};

/// What the server is going through, for checkUpgrade.
struct ServerState {
    bool draining = false;     ///< shutting down
    bool atCapacity = false;   ///< a connection limit (global or the endpoint's) is reached
    bool eventsPaused = false; ///< the event backlog is full (backlog_overflow: pause_reading)
};

/// Decides on an upgrade request for `endpoint` (nullptr: no endpoint at that path), in the
/// order a client is best told about (RFC 6455 4.2.1): what lws would accept or drop silently
/// gets a clear answer. Pure: no lws, no state.
UpgradeVerdict checkUpgrade(const UpgradeRequest &req, const WsEndpoint *endpoint, ServerState server);

/// An HTTP header list item without the spaces and tabs around it.
std::string_view trimOws(std::string_view item) noexcept;
/// Whether a comma-separated header value has `token` (ASCII case-insensitive; `token` lower case).
bool hasToken(std::string_view value, std::string_view token) noexcept;
/// RFC 6455 4.1: the key is 16 random bytes, base64: 22 characters and "==".
bool validKey(std::string_view key) noexcept;

} // namespace wsgw::daemon
