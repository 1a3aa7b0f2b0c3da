#pragma once

// Where the event brokers are, as config.yml writes them: Redis and AMQP URLs, parsed once at
// config load into plain values (hosts, ports, decoded credentials, options) that the sinks are
// built from. Plain values: thread-compatible; parse() is pure (no name resolution, no I/O).

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace wsgw::daemon {

/// Where a Redis server is and how to log in: parsed from a URL of the forms
///   redis://[[user]:password@]host[:port][/db][?client_name=NAME&...]
///   rediss://...                               (TLS)
///   unix://[[user]:password@]/path/to.sock[?db=N&client_name=NAME&...]
/// user and password are percent-decoded. Further options that go-redis understands
/// (pool_size, dial_timeout, ...) are accepted for compatibility and kept in `options`; any
/// other option is an error.
struct RedisAddress {
    std::string host; ///< empty for a unix socket
    std::uint16_t port = 6379;
    std::string unixPath; ///< non-empty for a unix socket
    bool tls = false;     ///< rediss://
    int db = 0;
    std::string user;                           ///< empty: no ACL user (AUTH password)
    std::string password;                       ///< empty: no AUTH
    std::string clientName;                     ///< CLIENT SETNAME; empty: none
    std::map<std::string, std::string> options; ///< accepted go-redis options wsgw does not use
    std::string url;                            ///< as written

    /// nullopt with a message in `*error` for a URL of another form.
    [[nodiscard]] static std::optional<RedisAddress> parse(std::string_view url,
                                                           std::string *error = nullptr);
};

/// Where an AMQP 0-9-1 broker is: amqp://[user[:password]@]host[:port][/vhost][?options] or
/// amqps://. Defaults as RabbitMQ: guest/guest, port 5672 (5671 for amqps), vhost "/". user,
/// password and vhost are percent-decoded ("/%2f" is the vhost "/"). Of the query, as in
/// RabbitMQ's URI spec, `heartbeat` (seconds, 0 = off) and `connection_timeout` (milliseconds)
/// are read; other options are accepted and ignored.
struct AmqpAddress {
    std::string host;
    std::uint16_t port = 5672;
    bool tls = false; ///< amqps://
    std::string user = "guest";
    std::string password = "guest";
    std::string vhost = "/";
    /// ?heartbeat=S: 0..65535, 0 turns heartbeats off. Absent: the sink's default.
    std::optional<unsigned> heartbeatS;
    /// ?connection_timeout=MS: 1..600000, bounds the TCP connect, TLS and login. Absent: the
    /// sink's default.
    std::optional<unsigned> connectionTimeoutMs;
    std::string url; ///< as written

    /// nullopt with a message in `*error` for a URL of another form or a bad option value. For
    /// a refused option ("heartbeat='soon': use seconds, 0 to 65535") `*optionAt` (if given) is
    /// its offset in `url`, so that a caller can point at it; npos for any other problem.
    [[nodiscard]] static std::optional<AmqpAddress> parse(std::string_view url, std::string *error = nullptr,
                                                          std::size_t *optionAt = nullptr);
};

} // namespace wsgw::daemon
