#pragma once

#include <string>

namespace wsgw::daemon {

/// The peer of a connected socket as "ip:port" ("[v6]:port"; an IPv4-mapped IPv6 address as
/// plain IPv4), or "unknown".
std::string peerAddress(int fd);

} // namespace wsgw::daemon
