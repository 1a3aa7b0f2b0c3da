#pragma once

#include "control_options.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace wsgw {
class Hub;
class Cluster;
}

namespace wsgw::daemon {

class Metrics;

/// What the control API serves from.
struct ControlApiContext {
    Hub &hub;
    Metrics &metrics;
    std::size_t messageHeadroom = 0;          ///< headroom for messages built from /send bodies
    std::function<std::string()> notReady;    ///< empty when ready, else why not (for /readyz)
    /// In a cluster: commands, /status and /tree go through it (every live node), unless the
    /// request says `X-Wsgw-Scope: node`. nullptr: this node alone.
    Cluster *cluster = nullptr;
    std::string node;    ///< this node's name (GET /nodes)
    std::string address; ///< this node's control address (GET /nodes)
};

/// The original gateway's HTTP control API, served by a ControlServer (control_server.h: one
/// event loop for every connection, workers only for complete requests):
///   POST /send?SEL      body to every selected connection (octet-stream: binary, else text)
///   POST /settags?SEL   form body k=v&k2=v2; an empty value deletes the tag
///   POST /close?SEL     optional body sent first; then close 1000 "Closed by server"
///   GET  /status[?SEL]  one line per connection: id=<id> k=v ...   (JSON with Accept: application/json)
///   GET  /tree          each key, its values below as " - value"    (JSON likewise)
///   GET  /nodes         the live nodes of the cluster (JSON with Accept: application/json)
///   GET  /metrics       Prometheus text format
///   GET  /healthz, /readyz
///   GET  /v1/stream     server-sent events: the dashboard's live numbers, one event a second
///   GET  /dashboard     the dashboard page (allowlist only: no token, it holds no data)
/// The commands answer the number of connections acted on, as plain text. /healthz and
/// /readyz are answered on the server's loop thread and /metrics on a thread of its own, so
/// none of them waits behind commands. A command's handler waits for the shards up to
/// commandTimeout (504 then), or until stop(), which answers it 503 at once.
///
/// In a cluster the commands, /status and /tree cover every live node; an answer that lacks a
/// node's part names the missing nodes in the header X-Wsgw-Missing-Nodes (comma-separated).
/// The request header `X-Wsgw-Scope: node` asks for this node only (a query key cannot: every
/// query key is a tag).
///
/// Thread-safe.
class ControlApi {
public:
    ControlApi(ControlApiContext context, ControlApiOptions options);
    ~ControlApi(); ///< stop()s

    /// Binds the address and starts serving. false with a message if it cannot bind or load
    /// the TLS files.
    bool start(std::string *error);
    /// Stops serving within a fraction of a second, whatever clients are doing: closes the
    /// listener and every connection; commands still waiting for the shards answer 503.
    /// Idempotent.
    void stop();
    /// The bound port (after start(); useful with port 0).
    std::uint16_t port() const;

    /// Thread-safe: takes the allowlist, token, tag limits, command and request timeouts of
    /// `next` for the requests that follow. The address, TLS, body limit, keep-alive timeout
    /// and connection limit stay as they are.
    void reload(const ControlApiOptions &next);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace wsgw::daemon
