#include "listener.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace wsgw::daemon {

int openListener(const std::string &host, std::uint16_t port, std::string *error, bool probe, bool sharePort) {
    sockaddr_storage ss{};
    socklen_t len;
    if (host.empty() || host == "::") {
        auto *a = reinterpret_cast<sockaddr_in6 *>(&ss);
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_any;
        a->sin6_port = htons(port);
        len = sizeof *a;
    } else if (in_addr a4{}; inet_pton(AF_INET, host.c_str(), &a4) == 1) {
        auto *a = reinterpret_cast<sockaddr_in *>(&ss);
        a->sin_family = AF_INET;
        a->sin_addr = a4;
        a->sin_port = htons(port);
        len = sizeof *a;
    } else if (in6_addr a6{}; inet_pton(AF_INET6, host.c_str(), &a6) == 1) {
        auto *a = reinterpret_cast<sockaddr_in6 *>(&ss);
        a->sin6_family = AF_INET6;
        a->sin6_addr = a6;
        a->sin6_port = htons(port);
        len = sizeof *a;
    } else {
        *error = "'" + host + "' is not an IP address";
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *error = std::string("socket: ") + std::strerror(errno);
        return -1;
    }
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (!probe && sharePort) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (ss.ss_family == AF_INET6 && (host.empty() || host == "::"))
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero); // dual-stack
    if (bind(fd, reinterpret_cast<sockaddr *>(&ss), len) != 0 || (!probe && listen(fd, 4096) != 0)) {
        *error = std::string(std::strerror(errno));
        ::close(fd);
        return -1;
    }
    if (probe) {
        ::close(fd);
        return 0;
    }
    return fd;
}


} // namespace wsgw::daemon
