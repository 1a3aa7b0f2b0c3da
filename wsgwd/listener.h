#pragma once

#include <cstdint>
#include <string>

namespace wsgw::daemon {

/// A non-blocking listening TCP socket on `host`:`port` with SO_REUSEPORT, so that several
/// shards can each listen on the same address and the kernel spreads connections over them.
/// `host` is an IP literal; "" and "::" mean every interface, IPv4 and IPv6 (dual-stack); an
/// IPv4 address listens on IPv4 only. Returns the fd, or -1 with a message in `*error`.
///
/// With `probe`, only checks that nobody listens there yet: binds without SO_REUSEPORT (which
/// fails if anyone holds the address, even a process that would let us share it) and closes
/// again; returns 0 on success. Another wsgwd, or anything else using SO_REUSEPORT, would
/// otherwise share the port silently and take part of the connections.
///
/// Without `sharePort`, the socket has no SO_REUSEPORT: for a single listener (the control
/// API), whose bind then fails at once if anybody listens there.
int openListener(const std::string &host, std::uint16_t port, std::string *error, bool probe = false,
                 bool sharePort = true);

} // namespace wsgw::daemon
