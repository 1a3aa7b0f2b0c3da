#include "config.h"

#include <wsgw/event.h>
#include <wsgw/template.h>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <sstream>
#include <vector>

namespace wsgw::daemon {

namespace {

// ---------------------------------------------------------------------------------------------
// Small text helpers

bool isDigit(char c) noexcept { return c >= '0' && c <= '9'; }

/// Decimal digits only (no sign, no spaces), at most `max`.
bool parseDecimal(std::string_view s, std::uint64_t max, std::uint64_t &out) {
    if (s.empty() || s.size() > 19) return false;
    std::uint64_t v = 0;
    for (char c : s) {
        if (!isDigit(c)) return false;
        v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    if (v > max) return false;
    out = v;
    return true;
}

int hexValue(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/// RFC 3986 percent-decoding: '+' stays '+'.
std::optional<std::string> percentDecode(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out.push_back(s[i]);
            continue;
        }
        if (i + 2 >= s.size()) return std::nullopt;
        int hi = hexValue(s[i + 1]), lo = hexValue(s[i + 2]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
    }
    return out;
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (char &c : out)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
}

std::string joinNames(std::initializer_list<std::string_view> names) {
    std::string out;
    for (std::string_view n : names) {
        if (!out.empty()) out += ", ";
        out += n;
    }
    return out;
}

bool fail(std::string *error, std::string message) {
    if (error) *error = std::move(message);
    return false;
}

// ---------------------------------------------------------------------------------------------
// IP addresses

/// An address in 16 bytes: IPv4 in the first 4 bytes with v6 = false.
struct IpBytes {
    bool v6 = false;
    std::uint8_t bytes[16] = {};
};

std::optional<IpBytes> parseIp(std::string_view text) {
    if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
    std::string s(text);
    IpBytes ip;
    if (inet_pton(AF_INET, s.c_str(), ip.bytes) == 1) return ip;
    if (inet_pton(AF_INET6, s.c_str(), ip.bytes) == 1) {
        ip.v6 = true;
        return ip;
    }
    return std::nullopt;
}

bool isV4Mapped(const std::uint8_t *b) {
    for (int i = 0; i < 10; ++i)
        if (b[i] != 0) return false;
    return b[10] == 0xff && b[11] == 0xff;
}

/// The first `prefix` bits of a and b are equal.
bool prefixEqual(const std::uint8_t *a, const std::uint8_t *b, unsigned prefix) {
    unsigned full = prefix / 8;
    if (std::memcmp(a, b, full) != 0) return false;
    unsigned rest = prefix % 8;
    if (rest == 0) return true;
    auto mask = static_cast<std::uint8_t>(0xff << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

bool networkContains(const Cidr &net, IpBytes peer) {
    if (peer.v6 && isV4Mapped(peer.bytes)) {
        IpBytes v4;
        std::memcpy(v4.bytes, peer.bytes + 12, 4);
        peer = v4;
    }
    if (!net.v6) return !peer.v6 && prefixEqual(net.bytes, peer.bytes, net.prefix);
    if (!peer.v6) {
        // An IPv6 network may hold IPv4 addresses in their mapped form (::ffff:0:0/96).
        IpBytes mapped;
        mapped.v6 = true;
        mapped.bytes[10] = mapped.bytes[11] = 0xff;
        std::memcpy(mapped.bytes + 12, peer.bytes, 4);
        peer = mapped;
    }
    return prefixEqual(net.bytes, peer.bytes, net.prefix);
}

bool isHostChar(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || isDigit(c) || c == '.' || c == '-' || c == '_';
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
        auto ip = parseIp(host);
        if (!ip || !ip->v6) return fail(error, "'" + host + "' is not an IPv6 address");
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
        if (!std::all_of(host.begin(), host.end(), isHostChar))
            return fail(error, "invalid host '" + host + "'");
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
    std::string scheme; ///< lower case
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
    auto u = percentDecode(info.substr(0, colon));
    if (!u) return fail(error, "malformed %-escape in the user name");
    user = *u;
    hasUser = !user.empty();
    if (colon != std::string_view::npos) {
        auto p = percentDecode(info.substr(colon + 1));
        if (!p) return fail(error, "malformed %-escape in the password");
        password = *p;
        hasPassword = true;
    }
    return true;
}

// Options go-redis accepts in a URL; wsgw keeps them but does not act on them.
constexpr std::string_view kGoRedisOptions[] = {
    "protocol",         "max_retries",    "min_retry_backoff", "max_retry_backoff", "dial_timeout",
    "read_timeout",     "write_timeout",  "pool_fifo",         "pool_size",         "pool_timeout",
    "min_idle_conns",   "max_idle_conns", "max_active_conns",  "conn_max_idle_time", "conn_max_lifetime",
    "idle_timeout",     "idle_check_frequency", "max_conn_age", "skip_verify",
};

} // namespace

// ---------------------------------------------------------------------------------------------
// HostPort

std::optional<HostPort> HostPort::parse(std::string_view text, std::string *error) {
    if (text.empty()) {
        fail(error, "empty address: write HOST:PORT, e.g. 0.0.0.0:5000");
        return std::nullopt;
    }
    HostPort out;
    std::string_view portText;
    if (text.front() == '[') {
        std::size_t close = text.find(']');
        if (close == std::string_view::npos) {
            fail(error, "missing ']' after the IPv6 address in '" + std::string(text) + "'");
            return std::nullopt;
        }
        out.host = std::string(text.substr(1, close - 1));
        auto ip = parseIp(out.host);
        if (!ip || !ip->v6) {
            fail(error, "'" + out.host + "' is not an IPv6 address");
            return std::nullopt;
        }
        std::string_view rest = text.substr(close + 1);
        if (rest.empty() || rest.front() != ':') {
            fail(error, "missing port in '" + std::string(text) + "': write [IPV6]:PORT, e.g. [::1]:5000");
            return std::nullopt;
        }
        portText = rest.substr(1);
    } else {
        std::size_t colon = text.rfind(':');
        if (colon == std::string_view::npos) {
            fail(error, "missing port in '" + std::string(text) + "': write HOST:PORT, e.g. 0.0.0.0:5000");
            return std::nullopt;
        }
        out.host = std::string(text.substr(0, colon));
        if (out.host.find(':') != std::string::npos) {
            fail(error, "an IPv6 address must be in brackets: write [" + out.host + "]:PORT");
            return std::nullopt;
        }
        if (!std::all_of(out.host.begin(), out.host.end(), isHostChar)) {
            fail(error, "invalid host '" + out.host + "'");
            return std::nullopt;
        }
        portText = text.substr(colon + 1);
    }
    std::uint64_t port = 0;
    if (!parseDecimal(portText, 65535, port) || port == 0) {
        fail(error, "invalid port '" + std::string(portText) + "': use 1..65535");
        return std::nullopt;
    }
    out.port = static_cast<std::uint16_t>(port);
    return out;
}

std::string HostPort::toString() const {
    std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return h + ":" + std::to_string(port);
}

// ---------------------------------------------------------------------------------------------
// Cidr

std::optional<Cidr> Cidr::parse(std::string_view text, std::string *error) {
    std::size_t slash = text.find('/');
    std::string_view addrText = text.substr(0, slash);
    auto ip = parseIp(addrText);
    if (!ip) {
        fail(error, "'" + std::string(addrText) + "' is not an IP address");
        return std::nullopt;
    }
    Cidr net;
    net.v6 = ip->v6;
    unsigned maxPrefix = net.v6 ? 128 : 32;
    net.prefix = maxPrefix;
    if (slash != std::string_view::npos) {
        std::string_view prefixText = text.substr(slash + 1);
        std::uint64_t prefix = 0;
        if (!parseDecimal(prefixText, maxPrefix, prefix) || (prefixText.size() > 1 && prefixText[0] == '0')) {
            fail(error, "invalid prefix length '" + std::string(prefixText) + "': use 0.." +
                            std::to_string(maxPrefix) + (net.v6 ? " for IPv6" : " for IPv4"));
            return std::nullopt;
        }
        net.prefix = static_cast<unsigned>(prefix);
    }
    // Keep the network address only, like net.ParseCIDR's IPNet.
    for (unsigned bit = 0; bit < net.prefix; ++bit) {
        auto mask = static_cast<std::uint8_t>(0x80 >> (bit % 8));
        net.bytes[bit / 8] |= static_cast<std::uint8_t>(ip->bytes[bit / 8] & mask);
    }
    return net;
}

bool Cidr::contains(const std::string &ip) const {
    std::string_view text = ip;
    if (text.size() >= 2 && text.front() == '[' && text.back() == ']') text = text.substr(1, text.size() - 2);
    text = text.substr(0, text.find('%'));
    auto peer = parseIp(text);
    return peer && networkContains(*this, *peer);
}

bool Cidr::contains(const sockaddr *addr) const {
    if (!addr) return false;
    IpBytes peer;
    if (addr->sa_family == AF_INET) {
        sockaddr_in in;
        std::memcpy(&in, addr, sizeof in);
        std::memcpy(peer.bytes, &in.sin_addr, 4);
    } else if (addr->sa_family == AF_INET6) {
        sockaddr_in6 in6;
        std::memcpy(&in6, addr, sizeof in6);
        std::memcpy(peer.bytes, &in6.sin6_addr, 16);
        peer.v6 = true;
    } else {
        return false;
    }
    return networkContains(*this, peer);
}

std::string Cidr::toString() const {
    char buf[INET6_ADDRSTRLEN] = {};
    inet_ntop(v6 ? AF_INET6 : AF_INET, bytes, buf, sizeof buf);
    return std::string(buf) + "/" + std::to_string(prefix);
}

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
        auto path = percentDecode(rest);
        if (!path) return bad("malformed %-escape in the socket path");
        if (path->size() < 2) return bad("missing socket path: write unix:///PATH/TO/redis.sock");
        out.unixPath = *path;
    } else {
        return bad("unsupported scheme '" + parts.scheme + "': use redis://, rediss:// or unix://");
    }
    std::string_view query = parts.query;
    while (!query.empty()) {
        std::size_t amp = query.find('&');
        std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        if (pair.empty()) continue;
        std::size_t eq = pair.find('=');
        auto key = percentDecode(pair.substr(0, eq));
        auto value = percentDecode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1));
        if (!key || !value) return bad("malformed %-escape in option '" + std::string(pair) + "'");
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

std::optional<AmqpAddress> AmqpAddress::parse(std::string_view url, std::string *error) {
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
        auto vhost = percentDecode(path.substr(1));
        if (!vhost) return bad("malformed %-escape in the vhost");
        out.vhost = *vhost;
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Config

Config::EventLog Config::effectiveEventLog() const {
    if (eventLog != EventLog::Auto) return eventLog;
    return streamRedis || streamAmqp ? EventLog::None : EventLog::Stdout;
}

const EndpointConfig *Config::findEndpoint(std::string_view path) const {
    for (const auto &ep : endpoints)
        if (ep.path == path) return &ep;
    return nullptr;
}

namespace {

// ---------------------------------------------------------------------------------------------
// The YAML walk. Problems are thrown as ConfigError, caught in parseConfig: nothing escapes.

struct ConfigError {
    YAML::Mark mark;
    std::string message;
};

constexpr std::size_t kMaxSizeKb = 1024 * 1024; // 1 GiB
constexpr unsigned kMaxThreads = 256;
constexpr unsigned kMaxIdleTimeoutS = 86400;
constexpr std::uint64_t kMaxEvents = 1'000'000'000;
constexpr std::uint64_t kMaxTimeoutMs = 600'000;
constexpr std::uint64_t kMaxKeyTtlS = 7 * 86'400; // connection_redis_sync.key_ttl_s: a week
constexpr std::uint64_t kMaxConnections = 10'000'000;
constexpr std::uint64_t kMaxLifetimeS = 365ull * 86400;
constexpr std::uint64_t kMaxBacklogMb = 1024 * 1024;

struct Entry {
    std::string key;
    YAML::Node keyNode;
    YAML::Node value;
};

const char *kindName(const YAML::Node &n) {
    switch (n.Type()) {
    case YAML::NodeType::Map:
        return "a map";
    case YAML::NodeType::Sequence:
        return "a list";
    case YAML::NodeType::Null:
        return "nothing";
    default:
        return "a value";
    }
}

std::size_t editDistance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diag = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            std::size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

class Walker {
public:
    explicit Walker(std::string_view text) : text_(text) {}

    [[noreturn]] void fail(const YAML::Mark &mark, std::string message) const {
        throw ConfigError{mark, std::move(message)};
    }

    /// The map's entries in order. Keys must be scalars and unique; when `known` is not empty
    /// every key must be one of them. A null node is an empty map.
    std::vector<Entry> entries(const YAML::Node &map, const std::string &where,
                               std::initializer_list<std::string_view> known) const {
        std::vector<Entry> out;
        if (map.IsNull()) return out;
        for (const auto &pair : map) {
            const YAML::Node k = pair.first; // a handle: copies share the node
            if (!k.IsScalar())
                fail(k.Mark(), in(where) + "a key must be a name, not " + std::string(kindName(k)));
            std::string key = k.Scalar();
            for (const Entry &e : out)
                if (e.key == key)
                    fail(k.Mark(), in(where) + "duplicate key '" + key + "' (first given on line " +
                                       std::to_string(e.keyNode.Mark().line + 1) + "): remove one");
            if (known.size() != 0 && std::find(known.begin(), known.end(), key) == known.end())
                fail(k.Mark(), unknownKey(key, where, known));
            out.push_back(Entry{key, k, pair.second});
        }
        return out;
    }

    /// A scalar's text. `what` describes what is expected, for the message.
    std::string scalar(const Entry &e, const std::string &name, std::string_view what) const {
        if (e.value.IsNull()) fail(e.keyNode.Mark(), name + ": missing value: expected " + std::string(what));
        return scalarNode(e.value, name, what);
    }

    std::string scalarNode(const YAML::Node &n, const std::string &name, std::string_view what) const {
        if (n.IsNull()) fail(n.Mark(), name + ": missing value: expected " + std::string(what));
        if (!n.IsScalar())
            fail(n.Mark(), name + ": expected " + std::string(what) + ", got " + std::string(kindName(n)));
        return n.Scalar();
    }

    std::string nonEmpty(const Entry &e, const std::string &name, std::string_view what) const {
        std::string s = scalar(e, name, what);
        if (s.empty()) fail(e.value.Mark(), name + ": must not be empty: expected " + std::string(what));
        return s;
    }

    std::uint64_t number(const Entry &e, const std::string &name, std::uint64_t min,
                         std::uint64_t max) const {
        std::string what = "a whole number " + std::to_string(min) + ".." + std::to_string(max);
        std::string s = scalar(e, name, what);
        if (s.empty() || !std::all_of(s.begin(), s.end(), isDigit))
            fail(e.value.Mark(), name + ": expected " + what + ", got '" + s + "'");
        std::uint64_t v = UINT64_MAX; // more than 19 digits: too large anyway
        if (s.size() <= 19) parseDecimal(s, UINT64_MAX, v);
        if (v < min) fail(e.value.Mark(), name + ": must be at least " + std::to_string(min) + ", got " + s);
        if (v > max) fail(e.value.Mark(), name + ": must be at most " + std::to_string(max) + ", got " + s);
        return v;
    }

    bool boolean(const Entry &e, const std::string &name) const {
        std::string s = lower(scalar(e, name, "true or false"));
        if (s == "true" || s == "yes" || s == "on") return true;
        if (s == "false" || s == "no" || s == "off") return false;
        fail(e.value.Mark(), name + ": expected true or false, got '" + e.value.Scalar() + "'");
    }

    /// One of `choices`, exactly.
    std::string choice(const Entry &e, const std::string &name,
                       std::initializer_list<std::string_view> choices) const {
        std::string s = scalar(e, name, "one of " + joinNames(choices));
        if (std::find(choices.begin(), choices.end(), s) == choices.end())
            fail(e.value.Mark(), name + ": unknown value '" + s + "': use one of " + joinNames(choices));
        return s;
    }

    /// A map value (null is an empty map).
    const YAML::Node &map(const Entry &e, const std::string &name, std::string_view what) const {
        if (!e.value.IsNull() && !e.value.IsMap())
            fail(e.value.Mark(), name + ": expected " + std::string(what) + ", got " + kindName(e.value));
        return e.value;
    }

    /// A list value (null is an empty list).
    const YAML::Node &list(const Entry &e, const std::string &name, std::string_view what) const {
        if (!e.value.IsNull() && !e.value.IsSequence())
            fail(e.value.Mark(), name + ": expected " + std::string(what) + ", got " + kindName(e.value));
        return e.value;
    }

    /// Where character `index` of scalar `n`'s value is in the file. Exact when the value is
    /// written on one line as its own text (plain, or quoted without escapes); otherwise the
    /// scalar's own position, and `*exact` is false.
    YAML::Mark charMark(const YAML::Node &n, std::size_t index, bool *exact) const {
        YAML::Mark m = n.Mark();
        *exact = false;
        if (m.pos < 0 || static_cast<std::size_t>(m.pos) >= text_.size()) return m;
        auto start = static_cast<std::size_t>(m.pos);
        if (text_[start] == '"' || text_[start] == '\'') ++start;
        const std::string &value = n.Scalar();
        if (index > value.size() || value.find('\n') != std::string::npos ||
            text_.substr(start, value.size()) != value)
            return m;
        *exact = true;
        m.column += static_cast<int>(start - static_cast<std::size_t>(m.pos) + index);
        m.pos = static_cast<int>(start + index);
        return m;
    }

    /// Fails at the character a library message's "at column N" names, within scalar `n`, and
    /// drops that phrase from the message when the position is exact.
    [[noreturn]] void failWithin(const YAML::Node &n, const std::string &prefix, std::string inner) const {
        static constexpr std::string_view kAt = " at column ";
        std::size_t at = inner.find(kAt);
        if (at != std::string::npos) {
            std::size_t digits = at + kAt.size(), end = digits;
            while (end < inner.size() && isDigit(inner[end])) ++end;
            std::uint64_t col = 0;
            if (parseDecimal(std::string_view(inner).substr(digits, end - digits), 1u << 30, col) &&
                col > 0) {
                bool exact = false;
                YAML::Mark m = charMark(n, static_cast<std::size_t>(col - 1), &exact);
                if (exact) inner.erase(at, end - at);
                fail(m, prefix + inner);
            }
        }
        fail(n.Mark(), prefix + inner);
    }

private:
    static std::string in(const std::string &where) { return where.empty() ? std::string() : where + ": "; }

    static std::string unknownKey(const std::string &key, const std::string &where,
                                  std::initializer_list<std::string_view> known) {
        std::string msg =
            "unknown key '" + key + "'" + (where.empty() ? " at the top level" : " in " + where);
        std::string_view best;
        std::size_t bestDistance = 3;
        for (std::string_view k : known) {
            std::size_t d = editDistance(key, k);
            if (d < bestDistance) {
                bestDistance = d;
                best = k;
            }
        }
        if (!best.empty()) return msg + ": did you mean '" + std::string(best) + "'?";
        return msg + ": known keys are " + joinNames(known);
    }

    std::string_view text_;
};

class ConfigParser {
public:
    ConfigParser(std::string_view text, Config &config) : w_(text), config_(config) {}

    void parse(const YAML::Node &root) {
        if (root.IsNull()) noEndpoints(YAML::Mark::null_mark());
        if (!root.IsMap())
            w_.fail(root.Mark(), "expected settings as 'key: value' lines at the top level, got " +
                                     std::string(kindName(root)));
        std::optional<Entry> endpoints, listen, control, token;
        for (const Entry &e : w_.entries(root, "",
                                         {"listen_addr", "control_addr", "internal_endpoint_access_whitelist",
                                          "connection_redis_sync", "stream_redis", "stream_amqp",
                                          "max_message_size_kb", "endpoints", "prometheus", "threads",
                                          "idle_timeout_s", "max_outbound_kb", "event_log", "log_level", "node_id",
                                          "backlog_max_events", "backlog_max_mb", "backlog_overflow",
                                          "shutdown_flush_s", "max_connections", "rate_limit", "slow_consumer",
                                          "max_connection_lifetime_s", "max_tags_per_connection",
                                          "max_tag_key_len", "max_tag_value_len", "max_body_kb",
                                          "control_timeout_s", "control_token", "control_token_file", "tls",
                                          "control_tls", "drain_s"})) {
            const std::string &k = e.key;
            if (k == "listen_addr") {
                config_.listen = hostPort(e, k);
                listen = e;
            } else if (k == "control_addr") {
                config_.control = hostPort(e, k);
                control = e;
            } else if (k == "internal_endpoint_access_whitelist") {
                whitelist(e);
            } else if (k == "connection_redis_sync") {
                redisSync(e);
            } else if (k == "stream_redis") {
                streamRedis(e);
            } else if (k == "stream_amqp") {
                streamAmqp(e);
            } else if (k == "max_message_size_kb") {
                config_.maxMessageSizeKb = static_cast<std::size_t>(w_.number(e, k, 1, kMaxSizeKb));
            } else if (k == "endpoints") {
                endpoints = e;
            } else if (k == "prometheus") {
                for (const Entry &p : w_.entries(w_.map(e, k, "a map with 'enabled'"), k, {"enabled"}))
                    config_.prometheusEnabled = w_.boolean(p, "prometheus.enabled");
            } else if (k == "threads") {
                config_.threads = static_cast<unsigned>(w_.number(e, k, 0, kMaxThreads));
            } else if (k == "idle_timeout_s") {
                config_.idleTimeoutS = static_cast<unsigned>(w_.number(e, k, 0, kMaxIdleTimeoutS));
            } else if (k == "max_outbound_kb") {
                // The first spelling of slow_consumer.max_outbound_kb; kept working.
                config_.slowConsumer.maxOutboundKb = static_cast<std::size_t>(w_.number(e, k, 1, kMaxSizeKb));
            } else if (k == "event_log") {
                std::string v = w_.choice(e, k, {"auto", "stdout", "stderr", "none", "discard"});
                config_.eventLog = v == "stdout"    ? Config::EventLog::Stdout
                                   : v == "stderr"  ? Config::EventLog::Stderr
                                   : v == "none"    ? Config::EventLog::None
                                   : v == "discard" ? Config::EventLog::Discard
                                                    : Config::EventLog::Auto;
            } else if (k == "log_level") {
                config_.logLevel = w_.choice(e, k, {"trace", "debug", "info", "warn", "error", "off"});
            } else if (k == "node_id") {
                config_.nodeId = w_.nonEmpty(e, k, "a name for this node, e.g. gw-1");
                if (config_.nodeId.find_first_of(" \t\r\n{}") != std::string::npos)
                    w_.fail(e.value.Mark(), k + ": must not contain spaces or braces, got '" + config_.nodeId + "'");
            } else if (k == "backlog_max_events") {
                config_.backlogMaxEvents = static_cast<std::size_t>(w_.number(e, k, 1, kMaxEvents));
            } else if (k == "backlog_max_mb") {
                config_.backlogMaxMb = static_cast<std::size_t>(w_.number(e, k, 1, kMaxBacklogMb));
            } else if (k == "backlog_overflow") {
                config_.backlogOverflow = w_.choice(e, k, {"drop_oldest", "pause_reading"}) == "pause_reading"
                                              ? Config::BacklogOverflow::PauseReading
                                              : Config::BacklogOverflow::DropOldest;
            } else if (k == "shutdown_flush_s") {
                config_.shutdownFlushS = static_cast<unsigned>(w_.number(e, k, 0, kMaxIdleTimeoutS));
            } else if (k == "max_connections") {
                config_.maxConnections = static_cast<unsigned>(w_.number(e, k, 0, kMaxConnections));
            } else if (k == "rate_limit") {
                config_.rateLimit = rateLimit(e, k);
            } else if (k == "slow_consumer") {
                config_.slowConsumer = slowConsumer(e, k, config_.slowConsumer);
            } else if (k == "max_connection_lifetime_s") {
                config_.maxConnectionLifetimeS = static_cast<unsigned>(w_.number(e, k, 0, kMaxLifetimeS));
            } else if (k == "max_tags_per_connection") {
                config_.maxTagsPerConnection = static_cast<unsigned>(w_.number(e, k, 1, 100000));
            } else if (k == "max_tag_key_len") {
                config_.maxTagKeyLen = static_cast<unsigned>(w_.number(e, k, 1, 1 << 20));
            } else if (k == "max_tag_value_len") {
                config_.maxTagValueLen = static_cast<unsigned>(w_.number(e, k, 1, 1 << 20));
            } else if (k == "max_body_kb") {
                config_.maxBodyKb = static_cast<std::size_t>(w_.number(e, k, 1, kMaxSizeKb));
            } else if (k == "control_timeout_s") {
                config_.controlTimeoutS = static_cast<unsigned>(w_.number(e, k, 1, 3600));
            } else if (k == "control_token") {
                if (token) w_.fail(e.keyNode.Mark(), "give control_token or control_token_file, not both");
                config_.controlToken = w_.nonEmpty(e, k, "a secret string");
                token = e;
            } else if (k == "control_token_file") {
                if (token) w_.fail(e.keyNode.Mark(), "give control_token or control_token_file, not both");
                config_.controlToken = tokenFile(e, k);
                token = e;
            } else if (k == "tls") {
                config_.tls = tlsFiles(e, k);
            } else if (k == "control_tls") {
                config_.controlTls = tlsFiles(e, k);
            } else if (k == "drain_s") {
                config_.drainS = static_cast<unsigned>(w_.number(e, k, 0, 3600));
            }
        }
        if (!endpoints) noEndpoints(YAML::Mark::null_mark());
        parseEndpoints(*endpoints);
        resolveInherited();
        checkSetTags(*endpoints);
        if (config_.controlAllow.empty()) {
            config_.controlAllow.push_back(*Cidr::parse("127.0.0.1/8"));
            config_.controlAllow.push_back(*Cidr::parse("::1/128"));
        }
        checkAddressClash(listen, control);
    }

private:
    [[noreturn]] void noEndpoints(const YAML::Mark &mark) const {
        w_.fail(mark, "no endpoints configured: add an 'endpoints' list with at least one entry, e.g. "
                      "'endpoints: [{path: /connect}]'");
    }

    HostPort hostPort(const Entry &e, const std::string &name) const {
        std::string s = w_.nonEmpty(e, name, "HOST:PORT, e.g. 0.0.0.0:5000");
        std::string why;
        auto hp = HostPort::parse(s, &why);
        if (!hp) w_.fail(e.value.Mark(), name + ": " + why);
        return *hp;
    }

    void whitelist(const Entry &e) {
        const std::string name = e.key;
        const YAML::Node &list = w_.list(e, name, "a list of networks, e.g. [127.0.0.1/8, ::1/128]");
        std::size_t i = 0;
        for (const YAML::Node &item : list) {
            std::string itemName = name + "[" + std::to_string(i++) + "]";
            std::string s = w_.scalarNode(item, itemName, "a network such as 10.0.0.0/8");
            std::string why;
            auto net = Cidr::parse(s, &why);
            if (!net) w_.fail(item.Mark(), itemName + ": invalid network '" + s + "': " + why);
            config_.controlAllow.push_back(*net);
        }
    }

    RedisAddress redisAddress(const Entry &e, const std::string &name) const {
        std::string s = w_.nonEmpty(e, name, "a Redis URL, e.g. redis://localhost:6379/0");
        std::string why;
        auto addr = RedisAddress::parse(s, &why);
        if (!addr) w_.fail(e.value.Mark(), name + ": invalid Redis URL '" + s + "': " + why);
        return *addr;
    }

    wsgw::Template templ(const Entry &e, const std::string &name, bool allowEmpty) const {
        std::string s = allowEmpty ? w_.scalar(e, name, "a name") : w_.nonEmpty(e, name, "a name");
        std::string why;
        auto t = wsgw::Template::parse(s, &why);
        if (!t) w_.failWithin(e.value, name + ": invalid template '" + s + "': ", why);
        return *t;
    }

    [[noreturn]] void missing(const Entry &section, std::string_view key, std::string_view example) const {
        w_.fail(section.keyNode.Mark(), section.key + ": missing '" + std::string(key) + "', e.g. " +
                                            std::string(example));
    }

    void redisSync(const Entry &e) {
        const std::string &k = e.key;
        const YAML::Node &node = w_.map(e, k, "a map with 'addr'");
        if (node.IsNull()) return; // present but empty: not configured
        std::optional<RedisAddress> addr;
        unsigned timeoutMs = 5000;
        unsigned keyTtlS = 120;
        for (const Entry &s : w_.entries(node, k, {"addr", "timeout_ms", "key_ttl_s"})) {
            if (s.key == "addr")
                addr = redisAddress(s, k + ".addr");
            else if (s.key == "key_ttl_s") // the mirror's keys outlive a dead node by at most this
                keyTtlS = static_cast<unsigned>(w_.number(s, k + ".key_ttl_s", 3, kMaxKeyTtlS));
            else
                timeoutMs = static_cast<unsigned>(w_.number(s, k + ".timeout_ms", 10, kMaxTimeoutMs));
        }
        if (!addr) missing(e, "addr", "'addr: redis://localhost:6379/0'");
        config_.connectionRedisSync = RedisSyncConfig{*addr, timeoutMs, keyTtlS};
    }

    void streamRedis(const Entry &e) {
        const std::string &k = e.key;
        const YAML::Node &node = w_.map(e, k, "a map with 'addr' and 'stream_name'");
        if (node.IsNull()) return;
        StreamRedisConfig out;
        bool hasAddr = false;
        for (const Entry &s : w_.entries(node, k, {"addr", "stream_name", "stream_maxlen", "timeout_ms"})) {
            if (s.key == "addr") {
                out.addr = redisAddress(s, k + ".addr");
                hasAddr = true;
            } else if (s.key == "timeout_ms") {
                out.timeoutMs = static_cast<unsigned>(w_.number(s, k + ".timeout_ms", 10, kMaxTimeoutMs));
            } else if (s.key == "stream_maxlen") {
                out.streamMaxLen = static_cast<std::size_t>(w_.number(s, k + ".stream_maxlen", 0, kMaxEvents));
            } else {
                out.streamName = templ(s, k + ".stream_name", false).source();
            }
        }
        if (!hasAddr) missing(e, "addr", "'addr: redis://localhost:6379/0'");
        config_.streamRedis = std::move(out);
    }

    void streamAmqp(const Entry &e) {
        const std::string &k = e.key;
        const YAML::Node &node =
            w_.map(e, k, "a map with 'addr', 'exchange', 'queue', 'routing_key', 'headers'");
        if (node.IsNull()) return;
        StreamAmqpConfig out;
        bool hasAddr = false;
        for (const Entry &s : w_.entries(node, k, {"addr", "exchange", "queue", "routing_key", "headers"})) {
            std::string name = k + "." + s.key;
            if (s.key == "addr") {
                std::string url =
                    w_.nonEmpty(s, name, "an AMQP URL, e.g. amqp://guest:guest@localhost:5672/");
                std::string why;
                auto addr = AmqpAddress::parse(url, &why);
                if (!addr) w_.fail(s.value.Mark(), name + ": invalid AMQP URL '" + url + "': " + why);
                out.addr = *addr;
                hasAddr = true;
            } else if (s.key == "exchange") {
                out.exchange = w_.scalar(s, name, "an exchange name");
            } else if (s.key == "queue") {
                out.queue = w_.scalar(s, name, "a queue name");
            } else if (s.key == "routing_key") {
                out.routingKey = templ(s, name, true).source();
            } else {
                for (const Entry &h : w_.entries(w_.map(s, name, "a map of header: value"), name, {}))
                    out.headers[h.key] = w_.scalar(h, name + "." + h.key, "a header value");
            }
        }
        if (!hasAddr) missing(e, "addr", "'addr: amqp://guest:guest@localhost:5672/'");
        config_.streamAmqp = std::move(out);
    }

    void parseEndpoints(const Entry &e) {
        const std::string &k = e.key;
        if (e.value.IsNull()) noEndpoints(e.keyNode.Mark());
        const YAML::Node &list = w_.list(e, k, "a list of endpoints ('- path: /connect')");
        if (list.size() == 0) noEndpoints(e.value.Mark());
        std::size_t i = 0;
        for (const YAML::Node &item : list) {
            std::string name = k + "[" + std::to_string(i++) + "]";
            if (!item.IsMap())
                w_.fail(item.Mark(), name +
                                         ": expected an endpoint ('path: /connect' and its settings), got " +
                                         std::string(kindName(item)));
            EndpointConfig ep;
            ep.line = item.Mark().line + 1;
            ep.maxMessageSizeKb = 0;
            std::optional<Entry> path;
            bool ownRateLimit = false, ownSlowConsumer = false;
            for (const Entry &s : w_.entries(item, name,
                                             {"path", "set_tags", "stream_include_tags", "max_message_size_kb",
                                              "json_extract_vars", "compression", "max_connections",
                                              "allowed_origins", "rate_limit", "slow_consumer"})) {
                std::string field = name + "." + s.key;
                if (s.key == "path") {
                    ep.path = w_.nonEmpty(s, field, "a URL path such as /connect");
                    if (ep.path.front() != '/')
                        w_.fail(s.value.Mark(), field + ": must start with '/', got '" + ep.path + "'");
                    if (ep.path.find_first_of("?# \t") != std::string::npos)
                        w_.fail(s.value.Mark(), field + ": a path has no query, fragment or spaces, got '" +
                                                    ep.path + "'");
                    path = s;
                } else if (s.key == "set_tags") {
                    for (const Entry &t : w_.entries(w_.map(s, field, "a map of tag: value"), field, {})) {
                        std::string tagField = field + "." + t.key;
                        if (t.key.empty())
                            w_.fail(t.keyNode.Mark(), field + ": a tag name must not be empty");
                        std::string v = w_.nonEmpty(t, tagField, "a tag value");
                        ep.setTags.emplace_back(t.key, v);
                    }
                } else if (s.key == "stream_include_tags") {
                    std::size_t j = 0;
                    for (const YAML::Node &t : w_.list(s, field, "a list of tag names")) {
                        std::string tagField = field + "[" + std::to_string(j++) + "]";
                        std::string tag = w_.scalarNode(t, tagField, "a tag name");
                        if (tag.empty()) w_.fail(t.Mark(), tagField + ": a tag name must not be empty");
                        if (std::find(ep.streamIncludeTags.begin(), ep.streamIncludeTags.end(), tag) ==
                            ep.streamIncludeTags.end())
                            ep.streamIncludeTags.push_back(tag);
                    }
                } else if (s.key == "max_message_size_kb") {
                    ep.maxMessageSizeKb = static_cast<std::size_t>(w_.number(s, field, 1, kMaxSizeKb));
                } else if (s.key == "json_extract_vars") {
                    jsonVars(s, field, ep);
                } else if (s.key == "max_connections") {
                    ep.maxConnections = static_cast<unsigned>(w_.number(s, field, 0, kMaxConnections));
                } else if (s.key == "allowed_origins") {
                    std::size_t j = 0;
                    for (const YAML::Node &o : w_.list(s, field, "a list of origins, e.g. [https://app.example]")) {
                        std::string originField = field + "[" + std::to_string(j++) + "]";
                        std::string origin = w_.scalarNode(o, originField, "an origin such as https://app.example");
                        if (origin.empty() || origin.find("://") == std::string::npos || origin.back() == '/')
                            w_.fail(o.Mark(), originField + ": expected SCHEME://HOST[:PORT] with no path, got '" +
                                                  origin + "'");
                        ep.allowedOrigins.push_back(lower(origin));
                    }
                } else if (s.key == "rate_limit") {
                    ep.rateLimit = rateLimit(s, field);
                    ownRateLimit = true;
                } else if (s.key == "slow_consumer") {
                    ep.slowConsumer = slowConsumer(s, field, SlowConsumer{});
                    ownSlowConsumer = true;
                } else {
                    ep.compression = w_.boolean(s, field);
                }
            }
            inherited_.push_back({!ownRateLimit, !ownSlowConsumer});
            if (!path) w_.fail(item.Mark(), name + ": missing 'path', e.g. 'path: /connect'");
            for (std::size_t j = 0; j < config_.endpoints.size(); ++j)
                if (config_.endpoints[j].path == ep.path)
                    w_.fail(path->value.Mark(), name + ".path: duplicate endpoint path '" + ep.path +
                                                    "' (also endpoints[" + std::to_string(j) + "] on line " +
                                                    std::to_string(config_.endpoints[j].line) + ")");
            config_.endpoints.push_back(std::move(ep));
        }
        for (auto &ep : config_.endpoints)
            if (ep.maxMessageSizeKb == 0) ep.maxMessageSizeKb = config_.maxMessageSizeKb;
    }

    // Every connection starts with its endpoint's set_tags: they must fit the tag limits too.
    void checkSetTags(const Entry &endpoints) const {
        for (std::size_t i = 0; i < config_.endpoints.size(); ++i) {
            const EndpointConfig &ep = config_.endpoints[i];
            std::string name = "endpoints[" + std::to_string(i) + "].set_tags";
            YAML::Mark at = endpoints.value[i].Mark();
            if (ep.setTags.size() > config_.maxTagsPerConnection)
                w_.fail(at, name + ": " + std::to_string(ep.setTags.size()) + " tags, more than max_tags_per_connection (" +
                                std::to_string(config_.maxTagsPerConnection) + ")");
            for (const auto &[k, v] : ep.setTags)
                if (k.size() > config_.maxTagKeyLen || v.size() > config_.maxTagValueLen)
                    w_.fail(at, name + "." + k + ": longer than max_tag_key_len or max_tag_value_len");
        }
    }

    // Endpoints without their own rate_limit / slow_consumer take the global ones, which may
    // come later in the file.
    void resolveInherited() {
        for (std::size_t i = 0; i < config_.endpoints.size(); ++i) {
            if (inherited_[i].first) config_.endpoints[i].rateLimit = config_.rateLimit;
            if (inherited_[i].second) config_.endpoints[i].slowConsumer = config_.slowConsumer;
        }
    }

    RateLimit rateLimit(const Entry &e, const std::string &name) const {
        RateLimit r;
        bool hasRate = false;
        for (const Entry &f : w_.entries(w_.map(e, name, "a map with max_messages_per_s, burst and policy"), name,
                                         {"max_messages_per_s", "burst", "policy"})) {
            std::string field = name + "." + f.key;
            if (f.key == "max_messages_per_s") {
                r.perSecond = static_cast<unsigned>(w_.number(f, field, 0, 1'000'000));
                hasRate = true;
            } else if (f.key == "burst") {
                r.burst = static_cast<unsigned>(w_.number(f, field, 1, 1'000'000));
            } else {
                r.policy = w_.choice(f, field, {"close", "drop"}) == "drop" ? RateLimit::Policy::Drop
                                                                            : RateLimit::Policy::Close;
            }
        }
        if (!hasRate && !e.value.IsNull())
            missing(e, "max_messages_per_s", "'max_messages_per_s: 50' (0 turns the limit off)");
        if (r.burst == 0) r.burst = std::max(1u, r.perSecond);
        return r;
    }

    SlowConsumer slowConsumer(const Entry &e, const std::string &name, SlowConsumer base) const {
        SlowConsumer c = base;
        for (const Entry &f : w_.entries(w_.map(e, name, "a map with max_outbound_kb and policy"), name,
                                         {"max_outbound_kb", "policy"})) {
            std::string field = name + "." + f.key;
            if (f.key == "max_outbound_kb") {
                c.maxOutboundKb = static_cast<std::size_t>(w_.number(f, field, 1, kMaxSizeKb));
            } else {
                std::string p = w_.choice(f, field, {"close", "drop_newest", "drop_oldest"});
                c.policy = p == "drop_newest"   ? SlowConsumer::Policy::DropNewest
                           : p == "drop_oldest" ? SlowConsumer::Policy::DropOldest
                                                : SlowConsumer::Policy::Close;
            }
        }
        return c;
    }

    TlsFiles tlsFiles(const Entry &e, const std::string &name) const {
        TlsFiles t;
        for (const Entry &f : w_.entries(w_.map(e, name, "a map with cert and key (PEM files)"), name, {"cert", "key"})) {
            std::string field = name + "." + f.key;
            std::string path = w_.nonEmpty(f, field, "the path of a PEM file");
            if (std::FILE *fp = std::fopen(path.c_str(), "rb"))
                std::fclose(fp);
            else
                w_.fail(f.value.Mark(), field + ": cannot read '" + path + "': " + std::strerror(errno));
            (f.key == "cert" ? t.cert : t.key) = path;
        }
        if (t.cert.empty()) missing(e, "cert", "'cert: /etc/wsgw/tls.crt'");
        if (t.key.empty()) missing(e, "key", "'key: /etc/wsgw/tls.key'");
        return t;
    }

    std::string tokenFile(const Entry &e, const std::string &name) const {
        std::string path = w_.nonEmpty(e, name, "the path of a file holding the token");
        std::FILE *fp = std::fopen(path.c_str(), "rb");
        if (!fp) w_.fail(e.value.Mark(), name + ": cannot read '" + path + "': " + std::strerror(errno));
        std::string token;
        char buf[4096];
        std::size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, fp)) > 0 && token.size() < 65536) token.append(buf, n);
        std::fclose(fp);
        while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ')) token.pop_back();
        if (token.empty()) w_.fail(e.value.Mark(), name + ": '" + path + "' is empty");
        return token;
    }

    void jsonVars(const Entry &s, const std::string &field, EndpointConfig &ep) const {
        for (const Entry &v : w_.entries(w_.map(s, field, "a map of VAR: dotted.path"), field, {})) {
            std::string varField = field + "." + v.key;
            std::string path = w_.nonEmpty(v, varField, "a dotted path into the message, e.g. data.command");
            std::string why;
            std::vector<std::pair<std::string, std::string>> one{{v.key, path}};
            if (!wsgw::JsonExtractor::create(one, &why)) {
                // The name is checked first; blame the key for it, the path otherwise.
                if (!wsgw::JsonExtractor::create({{v.key, "x"}}))
                    w_.fail(v.keyNode.Mark(), field + ": " + why);
                w_.failWithin(v.value, varField + ": ", why);
            }
            ep.jsonExtractVars.emplace_back(v.key, path);
        }
    }

    static bool isWildcard(const std::string &host) {
        return host.empty() || host == "0.0.0.0" || host == "::";
    }

    void checkAddressClash(const std::optional<Entry> &listen, const std::optional<Entry> &control) const {
        const HostPort &a = config_.listen, &b = config_.control;
        if (a.port != b.port) return;
        if (a.host != b.host && !isWildcard(a.host) && !isWildcard(b.host)) return;
        const std::optional<Entry> &blame = control ? control : listen;
        YAML::Mark mark = blame ? blame->value.Mark() : YAML::Mark::null_mark();
        w_.fail(
            mark,
            std::string(control ? "control_addr" : "listen_addr") + ": listen_addr " + a.toString() +
                " and control_addr " + b.toString() +
                " overlap: give the control API a port of its own (control_addr, default 127.0.0.1:6666)");
    }

    Walker w_;
    Config &config_;
    std::vector<std::pair<bool, bool>> inherited_; // per endpoint: takes the global rate_limit, slow_consumer
};

std::string position(const std::string &file, const YAML::Mark &mark) {
    int line = mark.is_null() || mark.line < 0 ? 1 : mark.line + 1;
    int col = mark.is_null() || mark.column < 0 ? 1 : mark.column + 1;
    return (file.empty() ? std::string("<config>") : file) + ":" + std::to_string(line) + ":" +
           std::to_string(col);
}

} // namespace

namespace {

// Receives a document's events and drops them.
class IgnoreEvents final : public YAML::EventHandler {
public:
    void OnDocumentStart(const YAML::Mark &) override {}
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark &, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark &, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark &, const std::string &, YAML::anchor_t, const std::string &) override {}
    void OnSequenceStart(const YAML::Mark &, const std::string &, YAML::anchor_t, YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark &, const std::string &, YAML::anchor_t, YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
};

// yaml-cpp up to 0.8.0 never consumes a ',' that starts a document (",", "a: 1\n---\n,"): its
// parser reports an empty document again and again, and LoadAll keeps each one until memory
// runs out (upstream issue jbeder/yaml-cpp#1040; found by tests/fuzz/config_fuzz). Counted the
// way LoadAll loops, with the same parser: more documents than the text can hold (each one past
// the first needs a 3-byte marker) means that loop. Returns the offending ',' then.
std::optional<YAML::Mark> endlessDocuments(const std::string &text) {
    std::istringstream in(text);
    YAML::Parser parser(in);
    IgnoreEvents events;
    std::size_t documents = 0;
    while (parser.HandleNextDocument(events)) {
        if (++documents <= text.size() + 2) continue;
        // Where the stray ',' is: the first one at the start of a line's content.
        YAML::Mark mark;
        mark.line = 0;
        mark.column = 0;
        for (std::size_t i = 0, col = 0; i < text.size(); ++i) {
            char c = text[i];
            if (c == '\n') {
                ++mark.line;
                col = 0;
                continue;
            }
            if (c == ',' ) {
                mark.column = static_cast<int>(col);
                mark.pos = static_cast<int>(i);
                return mark;
            }
            ++col;
        }
        mark.line = 0;
        return mark;
    }
    return std::nullopt;
}

} // namespace

std::optional<Config> parseConfig(std::string_view yamlText, const std::string &file, std::string *error) {
    Config config;
    config.file = file;
    try {
        if (auto comma = endlessDocuments(std::string(yamlText)))
            throw ConfigError{*comma, "invalid YAML: a document cannot start with ','"};
        // One document; empty ones around it (a stray '---') do no harm.
        std::vector<YAML::Node> docs = YAML::LoadAll(std::string(yamlText));
        docs.erase(std::remove_if(docs.begin(), docs.end(), [](const YAML::Node &d) { return d.IsNull(); }),
                   docs.end());
        if (docs.size() > 1)
            throw ConfigError{docs[1].Mark(), "more than one YAML document ('---'): a config file holds one"};
        ConfigParser(yamlText, config).parse(docs.empty() ? YAML::Node() : docs.front());
    } catch (const ConfigError &e) {
        if (error) *error = position(file, e.mark) + ": " + e.message;
        return std::nullopt;
    } catch (const YAML::ParserException &e) {
        if (error) *error = position(file, e.mark) + ": invalid YAML: " + e.msg;
        return std::nullopt;
    } catch (const YAML::Exception &e) {
        if (error) *error = position(file, e.mark) + ": " + e.msg;
        return std::nullopt;
    } catch (const std::exception &e) {
        if (error) *error = position(file, YAML::Mark::null_mark()) + ": " + e.what();
        return std::nullopt;
    }
    return config;
}

std::optional<Config> loadConfig(const std::string &path, std::string *error) {
    std::FILE *f = std::fopen(path.c_str(), "rb");
    if (!f) {
        if (error) *error = path + ": cannot read: " + std::strerror(errno);
        return std::nullopt;
    }
    std::string text;
    char buf[65536];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    bool failed = std::ferror(f) != 0;
    int err = errno;
    std::fclose(f);
    if (failed) {
        if (error) *error = path + ": cannot read: " + std::strerror(err);
        return std::nullopt;
    }
    return parseConfig(text, path, error);
}

} // namespace wsgw::daemon
