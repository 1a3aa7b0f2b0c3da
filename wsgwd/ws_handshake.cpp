#include "ws_handshake.h"

#include <algorithm>
#include <cctype>

namespace wsgw::daemon {

std::string_view trimOws(std::string_view item) noexcept {
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    return item;
}

bool hasToken(std::string_view value, std::string_view token) noexcept {
    std::size_t start = 0;
    while (start <= value.size()) {
        std::size_t end = value.find(',', start);
        if (end == std::string_view::npos) end = value.size();
        std::string_view item = trimOws(value.substr(start, end - start));
        if (item.size() == token.size() &&
            std::equal(item.begin(), item.end(), token.begin(),
                       [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; }))
            return true;
        start = end + 1;
    }
    return false;
}

bool validKey(std::string_view key) noexcept {
    if (key.size() != 24 || key.substr(22) != "==") return false;
    return std::all_of(key.begin(), key.begin() + 22,
                       [](unsigned char c) { return std::isalnum(c) || c == '+' || c == '/'; });
}

UpgradeVerdict checkUpgrade(const UpgradeRequest &req, const WsEndpoint *endpoint, ServerState server) {
    auto refuse = [](unsigned status, Refusal why, std::string message) {
        UpgradeVerdict v;
        v.status = status;
        v.reason = why;
        v.message = std::move(message);
        return v;
    };
    if (req.path.empty()) return refuse(400, Refusal::BadRequest, "a WebSocket upgrade is a GET");
    if (!endpoint) return refuse(404, Refusal::NotFound, "no WebSocket endpoint here");
    if (server.draining) return refuse(503, Refusal::Draining, "shutting down");
    if (!hasToken(req.connection, "upgrade")) return refuse(400, Refusal::BadRequest, "missing 'Connection: Upgrade'");
    if (!validKey(req.key))
        return refuse(400, Refusal::BadRequest, "missing or malformed Sec-WebSocket-Key (16 bytes, base64)");
    if (req.version != "13")
        return refuse(426, Refusal::Version, "unsupported Sec-WebSocket-Version: this server speaks 13 (RFC 6455)");

    // A browser sends Origin; only the listed ones may connect. Other clients send none.
    if (!endpoint->allowedOrigins.empty() && !req.origin.empty()) {
        std::string origin(req.origin);
        std::transform(origin.begin(), origin.end(), origin.begin(), [](unsigned char c) { return std::tolower(c); });
        if (std::find(endpoint->allowedOrigins.begin(), endpoint->allowedOrigins.end(), origin) ==
            endpoint->allowedOrigins.end())
            return refuse(403, Refusal::Origin, "origin not allowed");
    }
    if (server.atCapacity) return refuse(503, Refusal::Capacity, "too many connections; retry later");
    // A new connection's open event would overshoot a backlog that is full already.
    if (server.eventsPaused) return refuse(503, Refusal::Backpressure, "event backlog full; retry later");

    UpgradeVerdict ok;
    if (!req.protocol.empty()) {
        std::string_view first = trimOws(req.protocol.substr(0, req.protocol.find(',')));
        if (first.empty()) return refuse(400, Refusal::BadRequest, "invalid Sec-WebSocket-Protocol");
        ok.subprotocol = first;
    }
    return ok;
}

} // namespace wsgw::daemon
