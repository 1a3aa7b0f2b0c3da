#include "control_acceptor.h"

#include "listener.h"

#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace wsgw::daemon {

ControlAcceptor::~ControlAcceptor() { close(); }

bool ControlAcceptor::open(std::string host, std::uint16_t port, std::string *error) {
    if (host.empty()) host = "0.0.0.0";
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    std::string why;
    fd_ = openListener(host, port, &why, /*probe=*/false, /*sharePort=*/false);
    if (fd_ < 0) {
        std::string shown = host.find(':') != std::string::npos ? "[" + host + "]" : host;
        if (error) *error = "cannot listen on " + shown + ":" + std::to_string(port) + " for the control API: " + why;
        return false;
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getsockname(fd_, reinterpret_cast<sockaddr *>(&ss), &len) == 0)
        port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6 *>(&ss)->sin6_port
                                              : reinterpret_cast<sockaddr_in *>(&ss)->sin_port);
    replenish();
    return true;
}

void ControlAcceptor::close() {
    if (fd_ >= 0) ::close(fd_);
    if (spare_ >= 0) ::close(spare_);
    fd_ = spare_ = -1;
}

void ControlAcceptor::replenish() {
    if (spare_ < 0) spare_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}

ControlAcceptor::Accepted ControlAcceptor::next() {
    Accepted a;
    if (fd_ < 0) return a;
    for (;;) {
        a.fd = accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (a.fd >= 0) return a;
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EMFILE && errno != ENFILE) return a; // EAGAIN, or an error another try would repeat
        auto now = std::chrono::steady_clock::now();
        if (now - lastWarning_ >= std::chrono::seconds(10)) {
            lastWarning_ = now;
            spdlog::warn("control API: out of file descriptors (open-file limit reached): new control connections "
                         "are taken one at a time on a spare descriptor");
        }
        if (spare_ < 0) {
            a.exhausted = true;
            return a;
        }
        ::close(spare_);
        spare_ = -1;
        a.fd = accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        a.spare = a.fd >= 0;
        if (a.fd < 0) replenish();
        return a;
    }
}

} // namespace wsgw::daemon
