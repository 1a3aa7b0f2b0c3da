// A shard's listening socket: accepts what is pending and hands each connection to lws.

#include "ws_shard.h"

#include <spdlog/spdlog.h>

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace wsgw::daemon {

void acceptPending(ShardState &s) {
    // A bounded batch, so one busy listener cannot starve the connections.
    for (int i = 0; i < 64; ++i) {
        int fd = accept4(s.listenFd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK && !s.acceptErrorLogged) {
                // EMFILE and the like: log once per shard until an accept works again.
                s.acceptErrorLogged = true;
                spdlog::warn("accept: {} (raise the open-file limit?)", std::strerror(errno));
            }
            break;
        }
        s.acceptErrorLogged = false;
        if (s.draining.load(std::memory_order_relaxed)) {
            ::close(fd);
            continue;
        }
        // On a TLS vhost lws starts the server handshake; on a plain one ALLOW_SSL is ignored.
        lws_sock_file_fd_type desc;
        desc.sockfd = fd;
        lws_adopt_descriptor_vhost(
            s.vhost, static_cast<lws_adoption_type>(LWS_ADOPT_SOCKET | LWS_ADOPT_HTTP | LWS_ADOPT_ALLOW_SSL), desc,
            nullptr, nullptr); // closes fd itself on failure
    }
}

} // namespace wsgw::daemon
