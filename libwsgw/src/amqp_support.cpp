#include "amqp_support.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace wsgw::amqp {

std::string closeReason(const amqp_method_t &m) {
    if (m.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const auto *c = static_cast<const amqp_connection_close_t *>(m.decoded);
        return std::to_string(c->reply_code) + " " + text(c->reply_text);
    }
    if (m.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const auto *c = static_cast<const amqp_channel_close_t *>(m.decoded);
        return std::to_string(c->reply_code) + " " + text(c->reply_text);
    }
    char id[32];
    std::snprintf(id, sizeof id, "unexpected method 0x%08x", static_cast<unsigned>(m.id));
    return id;
}

int connectTcp(const std::string &host, std::uint16_t port, std::chrono::milliseconds timeout, std::string *error) {
    const std::string where = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
                              std::to_string(port);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo *res = nullptr;
    std::string portText = std::to_string(port);
    if (int rc = getaddrinfo(host.c_str(), portText.c_str(), &hints, &res); rc != 0 || !res) {
        *error = "cannot resolve '" + host + "': " + gai_strerror(rc);
        return -1;
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string why = "no address";
    int fd = -1;
    for (addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            why = std::strerror(errno);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        int err = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0 ? 0 : errno;
        if (err == EINPROGRESS) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            pollfd p{fd, POLLOUT, 0};
            int n = ::poll(&p, 1, static_cast<int>(std::max<long long>(left.count(), 0)));
            if (n == 0) {
                err = ETIMEDOUT;
            } else if (n < 0) {
                err = errno;
            } else {
                socklen_t len = sizeof err;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
            }
        }
        if (err != 0) {
            why = err == ETIMEDOUT ? "timed out after " + seconds(timeout) : std::strerror(err);
            ::close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) *error = "cannot connect to " + where + ": " + why;
    return fd;
}

std::string caFile(const std::string &configured) {
    if (!configured.empty()) return configured;
    if (const char *env = std::getenv("SSL_CERT_FILE"); env && *env) return env;
    return "/etc/ssl/certs/ca-certificates.crt";
}

} // namespace wsgw::amqp
