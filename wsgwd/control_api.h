#pragma once

#include "config.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace wsgw {
class Hub;
}

namespace wsgw::daemon {

class Metrics;

/// What the control API serves from.
struct ControlApiContext {
    Hub &hub;
    Metrics &metrics;
    std::size_t messageHeadroom = 0;          ///< headroom for messages built from /send bodies
    std::function<std::string()> notReady;    ///< empty when ready, else why not (for /readyz)
};

struct ControlApiOptions {
    HostPort addr{"127.0.0.1", 6666};
    std::vector<Cidr> allow;                 ///< empty: loopback only
    std::size_t maxBodyBytes = 1024 * 1024;  ///< larger bodies get 413
    bool metrics = true;                     ///< serve /metrics
    std::chrono::milliseconds commandTimeout{10'000}; ///< a command not answered by then: 504
    /// A request's headers and body must arrive within this (408 and a close otherwise), and
    /// its answer must be written within it (the connection is dropped otherwise).
    std::chrono::milliseconds requestTimeout{10'000};
    std::chrono::milliseconds keepAliveTimeout{5'000}; ///< an idle keep-alive connection is closed then
    std::size_t maxConnections = 4096;       ///< beyond: the longest-waiting idle or unfinished one is
                                             ///< closed to make room, else 503
    std::string token;                       ///< non-empty: every request but /healthz and /readyz needs
                                             ///< "Authorization: Bearer <token>" (401 otherwise)
    unsigned maxTagsPerConnection = 64;      ///< /settags that would exceed it: 400, nothing changed
    unsigned maxTagKeyLen = 128;
    unsigned maxTagValueLen = 1024;
    std::optional<TlsFiles> tls;             ///< set: HTTPS only; start() fails if the files cannot be used
};

/// The original gateway's HTTP control API, served by a ControlServer (control_server.h: one
/// event loop for every connection, workers only for complete requests):
///   POST /send?SEL      body to every selected connection (octet-stream: binary, else text)
///   POST /settags?SEL   form body k=v&k2=v2; an empty value deletes the tag
///   POST /close?SEL     optional body sent first; then close 1000 "Closed by server"
///   GET  /status[?SEL]  one line per connection: id=<id> k=v ...   (JSON with Accept: application/json)
///   GET  /tree          each key, its values below as " - value"    (JSON likewise)
///   GET  /metrics       Prometheus text format
///   GET  /healthz, /readyz
/// The commands answer the number of connections acted on, as plain text. /healthz and
/// /readyz are answered on the server's loop thread and /metrics on a thread of its own, so
/// none of them waits behind commands. A command's handler waits for the shards up to
/// commandTimeout (504 then), or until stop(), which answers it 503 at once.
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
