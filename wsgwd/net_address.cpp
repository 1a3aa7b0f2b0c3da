#include "net_address.h"

#include "text_scan.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

namespace wsgw::daemon {

namespace {

bool fail(std::string *error, std::string message) {
    if (error) *error = std::move(message);
    return false;
}

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

bool isHostChar(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || isDigit(c) || c == '.' || c == '-' || c == '_';
}

} // namespace

bool hasOnlyHostNameChars(std::string_view host) noexcept {
    return std::all_of(host.begin(), host.end(), isHostChar);
}

bool isIpv6Literal(std::string_view text) {
    auto ip = parseIp(text);
    return ip && ip->v6;
}

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
        if (!hasOnlyHostNameChars(out.host)) {
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

} // namespace wsgw::daemon
