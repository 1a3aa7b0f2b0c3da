#pragma once

#include "config.h"

#include <chrono>
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
    std::chrono::seconds ioTimeout{5};       ///< reading a request, writing a response
    std::string token;                       ///< non-empty: every request but /healthz and /readyz needs
                                             ///< "Authorization: Bearer <token>" (401 otherwise)
    unsigned maxTagsPerConnection = 64;      ///< /settags that would exceed it: 400, nothing changed
    unsigned maxTagKeyLen = 128;
    unsigned maxTagValueLen = 1024;
    std::optional<TlsFiles> tls;             ///< set: HTTPS only; start() fails if the files cannot be used
};

/// The original gateway's HTTP control API (cpp-httplib), on its own threads:
///   POST /send?SEL      body to every selected connection (octet-stream: binary, else text)
///   POST /settags?SEL   form body k=v&k2=v2; an empty value deletes the tag
///   POST /close?SEL     optional body sent first; then close 1000 "Closed by server"
///   GET  /status[?SEL]  one line per connection: id=<id> k=v ...   (JSON with Accept: application/json)
///   GET  /tree          each key, its values below as " - value"    (JSON likewise)
///   GET  /metrics       Prometheus text format
///   GET  /healthz, /readyz
/// The commands answer the number of connections acted on, as plain text.
///
/// Thread-safe.
class ControlApi {
public:
    ControlApi(ControlApiContext context, ControlApiOptions options);
    ~ControlApi(); ///< stop()s

    /// Binds the address and starts serving. false with a message if it cannot bind.
    bool start(std::string *error);
    /// Stops serving and joins the threads. Idempotent.
    void stop();

    /// Thread-safe: takes the allowlist, token, tag limits and command timeout of `next` for
    /// the requests that follow. The address, TLS and body limit stay as they are.
    void reload(const ControlApiOptions &next);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace wsgw::daemon
