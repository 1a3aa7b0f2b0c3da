#pragma once

#include <cstdint>
#include <optional>

namespace wsgw::daemon {

/// Bytes the kernel has received on a TCP socket (TCP_INFO tcpi_bytes_received), or nullopt if
/// the kernel does not say. Lets the idle sweep notice traffic that libwebsockets does not
/// report to us, such as a client's pings.
std::optional<std::uint64_t> tcpBytesReceived(int fd) noexcept;

/// Whether a TCP socket is still ESTABLISHED: the peer has not closed its side (no FIN, no
/// reset). False when the kernel does not say.
bool tcpEstablished(int fd) noexcept;

} // namespace wsgw::daemon
