#include "socket_stats.h"

// Only the kernel's header has the full struct tcp_info; glibc's <netinet/tcp.h> stops short.
#include <linux/tcp.h>
#include <sys/socket.h>

#include <cstddef>

namespace wsgw::daemon {

std::optional<std::uint64_t> tcpBytesReceived(int fd) noexcept {
    tcp_info info{};
    socklen_t len = sizeof info;
    if (getsockopt(fd, 6 /* IPPROTO_TCP */, TCP_INFO, &info, &len) != 0) return std::nullopt;
    if (len < offsetof(tcp_info, tcpi_bytes_received) + sizeof info.tcpi_bytes_received) return std::nullopt;
    return info.tcpi_bytes_received;
}

bool tcpEstablished(int fd) noexcept {
    tcp_info info{};
    socklen_t len = sizeof info;
    if (getsockopt(fd, 6 /* IPPROTO_TCP */, TCP_INFO, &info, &len) != 0) return false;
    return info.tcpi_state == 1; // TCP_ESTABLISHED
}

} // namespace wsgw::daemon
