#include "broker_url.h"

#include "net_address.h"
#include "text_scan.h"

#include <wsgw/tags.h>

#include <algorithm>
#include <climits>
#include <iterator>
#include <vector>

namespace wsgw::daemon {

namespace {

bool fail(std::string *error, std::string message) {
    if (error) *error = std::move(message);
    return false;
}

/// A URL's user, password and path: '+' is a '+' there, not a space.
std::optional<std::string> decodeComponent(std::string_view s) {
    return wsgw::percentDecode(s, false);
}

/// Parses "host[:port]" or "[v6][:port]" of a URL authority. An absent port leaves `port`.
bool parseAuthorityHost(std::string_view hostport, std::string &host, std::uint16_t &port,
                        std::string *error) {
    std::string_view portText;
    bool hasPort = false;
    if (!hostport.empty() && hostport.front() == '[') {
        std::size_t close = hostport.find(']');
        if (close == std::string_view::npos) return fail(error, "missing ']' after the IPv6 address");
        host = std::string(hostport.substr(1, close - 1));
        if (!isIpv6Literal(host)) return fail(error, "'" + host + "' is not an IPv6 address");
        std::string_view rest = hostport.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':') return fail(error, "expected ':PORT' after ']'");
            portText = rest.substr(1);
            hasPort = true;
        }
    } else {
        std::size_t colon = hostport.find(':');
        if (colon != std::string_view::npos) {
            if (hostport.find(':', colon + 1) != std::string_view::npos)
                return fail(error, "an IPv6 address must be in brackets, e.g. [::1]:6379");
            portText = hostport.substr(colon + 1);
            hasPort = true;
        }
        host = std::string(hostport.substr(0, colon));
        if (host.empty()) return fail(error, "missing host");
        if (!hasOnlyHostNameChars(host)) return fail(error, "invalid host '" + host + "'");
    }
    if (hasPort) {
        std::uint64_t p = 0;
        if (!parseDecimal(portText, 65535, p) || p == 0)
            return fail(error, "invalid port '" + std::string(portText) + "': use 1..65535");
        port = static_cast<std::uint16_t>(p);
    }
    return true;
}

struct UrlParts {
    std::string scheme;     ///< lower case
    std::string_view rest;  ///< after "://", without the query
    std::string_view query; ///< after '?'
};

bool splitUrl(std::string_view url, UrlParts &parts, std::string *error) {
    std::size_t sep = url.find("://");
    if (sep == std::string_view::npos || sep == 0) return fail(error, "missing scheme");
    parts.scheme = lower(url.substr(0, sep));
    std::string_view rest = url.substr(sep + 3);
    if (rest.find('#') != std::string_view::npos)
        return fail(error, "unexpected '#' (percent-encode it as %23)");
    std::size_t q = rest.find('?');
    if (q != std::string_view::npos) {
        parts.query = rest.substr(q + 1);
        rest = rest.substr(0, q);
    }
    parts.rest = rest;
    return true;
}

/// Splits "user:password@" off `authority`; both parts percent-decoded.
bool splitUserInfo(std::string_view &authority, std::string &user, std::string &password, bool &hasUser,
                   bool &hasPassword, std::string *error) {
    std::size_t at = authority.rfind('@');
    hasUser = hasPassword = false;
    if (at == std::string_view::npos) return true;
    std::string_view info = authority.substr(0, at);
    authority = authority.substr(at + 1);
    std::size_t colon = info.find(':');
    auto u = decodeComponent(info.substr(0, colon));
    if (!u) return fail(error, "malformed %-escape in the user name");
    user = *u;
    hasUser = !user.empty();
    if (colon != std::string_view::npos) {
        auto p = decodeComponent(info.substr(colon + 1));
        if (!p) return fail(error, "malformed %-escape in the password");
        password = *p;
        hasPassword = true;
    }
    return true;
}

// Options go-redis accepts in a URL; wsgw keeps them but does not act on them.
constexpr std::string_view kGoRedisOptions[] = {
    "protocol",       "max_retries",          "min_retry_backoff", "max_retry_backoff",  "dial_timeout",
    "read_timeout",   "write_timeout",        "pool_fifo",         "pool_size",          "pool_timeout",
    "min_idle_conns", "max_idle_conns",       "max_active_conns",  "conn_max_idle_time", "conn_max_lifetime",
    "idle_timeout",   "idle_check_frequency", "max_conn_age",      "skip_verify",
};

/// One "key=value" of a URL's query, as written ('=' and value may be absent).
struct QueryOption {
    std::string_view text;  ///< the whole pair
    std::string_view key;   ///< before the first '='
    std::string_view value; ///< after it; empty without '='
};

/// The query's options in order; empty pairs ("a=1&&b=2", a trailing '&') are skipped.
std::vector<QueryOption> splitQuery(std::string_view query) {
    std::vector<QueryOption> out;
    while (!query.empty()) {
        std::size_t amp = query.find('&');
        std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        if (pair.empty()) continue;
        std::size_t eq = pair.find('=');
        out.push_back({pair, pair.substr(0, eq),
                       eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1)});
    }
    return out;
}

} // namespace

// ---------------------------------------------------------------------------------------------
// RedisAddress

std::optional<RedisAddress> RedisAddress::parse(std::string_view url, std::string *error) {
    RedisAddress out;
    out.url = std::string(url);
    UrlParts parts;
    auto bad = [&](std::string message) -> std::optional<RedisAddress> {
        fail(error, std::move(message));
        return std::nullopt;
    };
    std::string why;
    if (!splitUrl(url, parts, &why))
        return bad(parts.scheme.empty()
                       ? why + ": write redis://HOST:PORT/DB, rediss://... or unix:///PATH/TO.sock"
                       : why);
    bool hasUser = false, hasPassword = false;
    if (parts.scheme == "redis" || parts.scheme == "rediss") {
        out.tls = parts.scheme == "rediss";
        std::string_view authority = parts.rest.substr(0, parts.rest.find('/'));
        std::string_view path = parts.rest.substr(authority.size());
        if (!splitUserInfo(authority, out.user, out.password, hasUser, hasPassword, &why)) return bad(why);
        if (!parseAuthorityHost(authority, out.host, out.port, &why)) return bad(why);
        if (path.size() > 1) {
            std::uint64_t db = 0;
            if (!parseDecimal(path.substr(1), INT_MAX, db))
                return bad("invalid database '" + std::string(path.substr(1)) +
                           "' in the path: write /N, e.g. /0");
            out.db = static_cast<int>(db);
        }
    } else if (parts.scheme == "unix") {
        std::string_view rest = parts.rest;
        if (!rest.empty() && rest.front() != '/') {
            std::size_t at = rest.find("@/");
            if (at == std::string_view::npos)
                return bad("a unix socket needs an absolute path: write unix:///PATH/TO/redis.sock");
            std::string_view authority = rest.substr(0, at + 1);
            if (!splitUserInfo(authority, out.user, out.password, hasUser, hasPassword, &why))
                return bad(why);
            rest = rest.substr(at + 1);
        }
        auto path = decodeComponent(rest);
        if (!path) return bad("malformed %-escape in the socket path");
        if (path->size() < 2) return bad("missing socket path: write unix:///PATH/TO/redis.sock");
        out.unixPath = *path;
    } else {
        return bad("unsupported scheme '" + parts.scheme + "': use redis://, rediss:// or unix://");
    }
    for (const QueryOption &option : splitQuery(parts.query)) {
        auto key = decodeComponent(option.key);
        auto value = decodeComponent(option.value);
        if (!key || !value) return bad("malformed %-escape in option '" + std::string(option.text) + "'");
        if (*key == "db") {
            std::uint64_t db = 0;
            if (!parseDecimal(*value, INT_MAX, db))
                return bad("invalid db '" + *value + "': use a number, e.g. db=0");
            out.db = static_cast<int>(db);
        } else if (*key == "client_name") {
            out.clientName = *value;
        } else if (std::find(std::begin(kGoRedisOptions), std::end(kGoRedisOptions), *key) !=
                   std::end(kGoRedisOptions)) {
            out.options[*key] = *value;
        } else {
            return bad("unknown option '" + *key + "' (wsgw uses db and client_name)");
        }
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// AmqpAddress

std::optional<AmqpAddress> AmqpAddress::parse(std::string_view url, std::string *error,
                                              std::size_t *optionAt) {
    if (optionAt) *optionAt = std::string_view::npos;
    AmqpAddress out;
    out.url = std::string(url);
    auto bad = [&](std::string message) -> std::optional<AmqpAddress> {
        fail(error, std::move(message));
        return std::nullopt;
    };
    UrlParts parts;
    std::string why;
    if (!splitUrl(url, parts, &why))
        return bad(parts.scheme.empty() ? why + ": write amqp://USER:PASSWORD@HOST:PORT/VHOST or amqps://..."
                                        : why);
    if (parts.scheme != "amqp" && parts.scheme != "amqps")
        return bad("unsupported scheme '" + parts.scheme + "': use amqp:// or amqps://");
    out.tls = parts.scheme == "amqps";
    out.port = out.tls ? 5671 : 5672;
    std::string_view authority = parts.rest.substr(0, parts.rest.find('/'));
    std::string_view path = parts.rest.substr(authority.size());
    bool hasUser = false, hasPassword = false;
    std::string user, password;
    if (!splitUserInfo(authority, user, password, hasUser, hasPassword, &why)) return bad(why);
    if (hasUser) out.user = user;
    if (hasPassword) out.password = password;
    if (!parseAuthorityHost(authority, out.host, out.port, &why)) return bad(why);
    if (path.size() > 1) {
        auto vhost = decodeComponent(path.substr(1));
        if (!vhost) return bad("malformed %-escape in the vhost");
        out.vhost = *vhost;
    }
    // RabbitMQ's URI spec has more options (channel_max, frame_max, auth_mechanism, ...):
    // accepted, as RabbitMQ's clients do, and ignored.
    for (const QueryOption &option : splitQuery(parts.query)) {
        auto key = decodeComponent(option.key);
        if (!key || (*key != "heartbeat" && *key != "connection_timeout")) continue;
        const bool heartbeat = *key == "heartbeat";
        const std::uint64_t min = heartbeat ? 0 : 1, max = heartbeat ? 65535 : 600'000;
        auto text = decodeComponent(option.value);
        std::uint64_t n = 0;
        if (!text || !parseDecimal(*text, max, n) || n < min) {
            if (optionAt) *optionAt = static_cast<std::size_t>(option.text.data() - url.data());
            return bad(*key + "='" + std::string(option.value) +
                       "': " + (heartbeat ? "use seconds, 0 to 65535" : "use milliseconds, 1 to 600000"));
        }
        (heartbeat ? out.heartbeatS : out.connectionTimeoutMs) = static_cast<unsigned>(n);
    }
    return out;
}

} // namespace wsgw::daemon
