// RFC 6455 details of the real wsgwd that the Autobahn|Testsuite found (tests/conformance runs
// the suite itself): the socket options of an accepted connection, close frames, UTF-8 checked
// as fragments arrive, pings, permessage-deflate offers, and the closing handshake's end.
#include "clients.h"
#include "harness.h"

#include "ws_client.h"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

using namespace wsgw::itest;
using wsgw::test::ConnectOptions;
using wsgw::test::Opcode;
using wsgw::test::Received;
using wsgw::test::WsClient;

namespace {

std::string endpointOf(const sockaddr_storage &ss) {
    char host[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_INET) {
        const auto &a = reinterpret_cast<const sockaddr_in &>(ss);
        inet_ntop(AF_INET, &a.sin_addr, host, sizeof host);
        return std::string(host) + ":" + std::to_string(ntohs(a.sin_port));
    }
    const auto &a = reinterpret_cast<const sockaddr_in6 &>(ss);
    inet_ntop(AF_INET6, &a.sin6_addr, host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(a.sin6_port));
}

// A duplicate of the socket in process `pid` whose peer is `peer` ("addr:port"), taken with
// pidfd_getfd (the test started the process, so it may; glibc 2.36's <sys/pidfd.h> cannot be
// linked from C++, so through syscall()); nullopt if there is none.
std::optional<int> socketOfPeer(int pid, const std::string &peer, std::string *why) {
    int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0) {
        *why = std::string("pidfd_open: ") + std::strerror(errno);
        return std::nullopt;
    }
    std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    DIR *d = opendir(dir.c_str());
    std::optional<int> found;
    if (!d) *why = "cannot list " + dir;
    while (d && !found) {
        dirent *e = readdir(d);
        if (!e) break;
        if (e->d_name[0] == '.') continue;
        char target[64] = {};
        if (readlink((dir + "/" + e->d_name).c_str(), target, sizeof target - 1) <= 0) continue;
        if (std::strncmp(target, "socket:", 7) != 0) continue;
        int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, std::atoi(e->d_name), 0));
        if (fd < 0) {
            *why = std::string("pidfd_getfd: ") + std::strerror(errno);
            continue;
        }
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        if (getpeername(fd, reinterpret_cast<sockaddr *>(&ss), &len) == 0 && endpointOf(ss) == peer)
            found = fd;
        else
            ::close(fd);
    }
    if (d) closedir(d);
    ::close(pidfd);
    if (!found && why->empty()) *why = "no socket of wsgwd has the peer " + peer;
    return found;
}

} // namespace

TEST_CASE("every accepted WebSocket socket has TCP_NODELAY (no Nagle wait for a delayed ACK)") {
    auto d = Daemon::start();
    for (const char *path : {"/connect", "/raw"}) {
        auto ws = connect(*d, path);
        std::string why;
        auto fd = socketOfPeer(d->pid(), ws->localEndpoint(), &why);
        REQUIRE_MESSAGE(fd, why);
        int on = -1;
        socklen_t len = sizeof on;
        REQUIRE(getsockopt(*fd, IPPROTO_TCP, TCP_NODELAY, &on, &len) == 0);
        ::close(*fd);
        CHECK_MESSAGE(on == 1, path);
        // The connection still works.
        REQUIRE(ws->sendText("hello"));
        CHECK(d->waitEvent([](auto &e) { return e["action"] == "message" && e["message"] == "hello"; }));
    }
}
