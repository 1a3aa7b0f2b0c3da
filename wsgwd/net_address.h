#pragma once

// Network addresses as config.yml writes them: a TCP address to listen on (HostPort) and an
// IPv4/IPv6 network for the control API's access list (Cidr). Plain values: thread-compatible;
// the functions are pure (no name resolution, no I/O).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

struct sockaddr;

namespace wsgw::daemon {

/// A TCP address to listen on: "0.0.0.0:5000", "[::1]:5000", "localhost:5000". An empty host
/// (written ":5000") means every interface, IPv4 and IPv6.
struct HostPort {
    std::string host; ///< without brackets; empty = every interface
    std::uint16_t port = 0;

    /// Parses "HOST:PORT", "[IPV6]:PORT" or ":PORT". The port must be 1..65535; an IPv6 address
    /// must be in brackets. nullopt with a message in `*error` otherwise.
    [[nodiscard]] static std::optional<HostPort> parse(std::string_view text, std::string *error = nullptr);
    /// The address as it would be written in the config: brackets around IPv6 hosts.
    std::string toString() const;

    friend bool operator==(const HostPort &a, const HostPort &b) {
        return a.host == b.host && a.port == b.port;
    }
};

/// An IPv4 or IPv6 network, as in the control API's access list.
struct Cidr {
    bool v6 = false;
    std::uint8_t bytes[16] = {}; ///< the network address with host bits cleared; IPv4 uses 4 bytes
    unsigned prefix = 0;         ///< 0..32 for IPv4, 0..128 for IPv6

    /// Parses "ADDR/PREFIX" or a bare address (one host: /32 or /128). Host bits may be set
    /// ("127.0.0.1/8" is 127.0.0.0/8), as Go's net.ParseCIDR allows. nullopt with a message in
    /// `*error` for anything else.
    [[nodiscard]] static std::optional<Cidr> parse(std::string_view text, std::string *error = nullptr);

    /// Whether the address is in the network. An IPv4-mapped IPv6 address (::ffff:a.b.c.d), as a
    /// dual-stack socket reports IPv4 peers, counts as the IPv4 address a.b.c.d; an IPv6 network
    /// such as ::ffff:0:0/96 likewise contains IPv4 addresses. A text that is not an IP address
    /// (a zone suffix "%eth0" is ignored) is contained in no network.
    bool contains(const std::string &ip) const;
    /// The same for a socket address; families other than AF_INET and AF_INET6 are never
    /// contained. `addr` may be null (not contained).
    bool contains(const sockaddr *addr) const;

    /// Canonical form: the network address and the prefix, "127.0.0.0/8", "::1/128".
    std::string toString() const;
};

/// Whether every character of `host` may appear in a host name here: ASCII letters, digits,
/// '.', '-' and '_'. True for "" (callers decide whether a host may be empty). HostPort::parse
/// and the broker URLs (broker_url.h) accept host names by this rule.
bool hasOnlyHostNameChars(std::string_view host) noexcept;

/// Whether `text` is an IPv6 address literal, without brackets or zone ("::1", "fd00::5").
bool isIpv6Literal(std::string_view text);

} // namespace wsgw::daemon
