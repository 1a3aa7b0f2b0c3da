#pragma once

// The connect authorizer's HTTP side (an endpoint's authorize: section): what is asked, how the
// answer is read, and the pool of client threads that ask. The shard's side (holding the upgrade
// meanwhile) is ws_authorize.h.
//
// On an upgrade wsgwd POSTs {"connection_id","endpoint","path","query","headers","remote_addr"}
// to the URL. 2xx with {"tags":{...}} (and optionally "id", a UUID) admits the client with those
// tags over set_tags; 4xx answers the upgrade with that status; 5xx, a timeout, a refused
// connection or an answer that is not such JSON answer 503 (fail closed), or with fail_open
// admit the client with set_tags only.

#include <wsgw/connection_id.h>
#include <wsgw/tags.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wsgw::daemon {

/// endpoints[].authorize. Plain value, thread-compatible.
struct AuthorizeSettings {
    std::string url;                             ///< url: http://HOST[:PORT]/PATH
    std::chrono::milliseconds timeout{2000};     ///< timeout_ms: the whole exchange, then 503
    /// forward_headers, lower case: the request headers sent; empty: all but the hop-by-hop ones
    /// and the WebSocket handshake's own.
    std::vector<std::string> forwardHeaders;
    bool failOpen = false; ///< fail_open: admit with set_tags when the authorizer cannot answer

    friend bool operator==(const AuthorizeSettings &, const AuthorizeSettings &) = default;
};

/// What the authorizer is told about one upgrade.
struct AuthorizeQuestion {
    ConnectionId connectionId;
    std::string endpoint;
    std::string path;
    std::string query; ///< as received, without '?'
    std::vector<std::pair<std::string, std::string>> headers; ///< as received (names as sent)
    std::string remoteAddr;
};

/// The JSON body POSTed for `q`, with the headers `settings` forwards.
std::string authorizeBody(const AuthorizeQuestion &q, const AuthorizeSettings &settings);

/// An authorizer's raw answer.
struct AuthorizeAnswer {
    int status = 0;     ///< HTTP status; 0: no answer (see error)
    std::string body;
    std::string error;  ///< why there was no answer ("connection refused", "timeout")
};

/// What to do with the upgrade.
struct AuthorizeDecision {
    enum class Outcome {
        Accepted,   ///< 2xx with valid JSON
        Refused,    ///< 4xx: answered with that status
        Failed,     ///< no usable answer: 503
        FailedOpen, ///< no usable answer, fail_open: admitted with set_tags only
    };
    Outcome outcome = Outcome::Failed;
    unsigned status = 503;           ///< the HTTP status to answer when not admitted
    std::string message;             ///< the refusal's body, or why it failed (for the log)
    TagList tags;                    ///< admitted: the tags to add
    std::optional<ConnectionId> id;  ///< admitted: the id the authorizer gave
};
const char *outcomeName(AuthorizeDecision::Outcome o) noexcept;

/// Reads `answer` (pure). A 2xx body must be a JSON object; its "tags", if present, an object
/// of strings (numbers and booleans are taken as their JSON text); its "id", if present, a UUID.
AuthorizeDecision decideAuthorize(const AuthorizeAnswer &answer, bool failOpen);

/// A small pool of HTTP client threads, each with keep-alive connections of its own, that POSTs
/// the questions. At most `threads` requests are under way; up to `maxQueued` more wait; beyond
/// that submit() refuses at once. Thread-safe.
class AuthorizerPool {
public:
    AuthorizerPool(std::size_t threads, std::size_t maxQueued);
    ~AuthorizerPool(); ///< waits for the requests under way (each bounded by its timeout)
    AuthorizerPool(const AuthorizerPool &) = delete;
    AuthorizerPool &operator=(const AuthorizerPool &) = delete;

    /// POSTs `body` to `url`, giving up after `timeout`; `done` runs on a pool thread with the
    /// answer. False (and `done` never runs) when the queue is full or the pool is stopping.
    bool submit(std::string url, std::string body, std::chrono::milliseconds timeout,
                std::function<void(AuthorizeAnswer)> done);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace wsgw::daemon
