// wsgwd under systemd's notify protocol (Type=notify): a real unix datagram socket stands in for
// systemd's, named in NOTIFY_SOCKET, and receives what sd_notify(3) sends from a real wsgwd:
// READY=1 with a STATUS= line, periodic STATUS= with the connection counts, WATCHDOG=1 when
// WATCHDOG_USEC is set, RELOADING=1 and READY=1 around SIGHUP, STOPPING=1 on SIGTERM. The kernel
// tells who sent each datagram (SO_PASSCRED), so the test knows it was wsgwd's main process.
#include "harness.h"

#include "skip.h"
#include "ws_client.h"

#include <doctest/doctest.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

using namespace wsgw::itest;
using wsgw::test::WsClient;

namespace {

// wsgwd is built without libsystemd (meson -Dsystemd=disabled, or libsystemd-dev missing): then
// it sends nothing, by design, and there is nothing to test here.
const wsgw::test::Prerequisite systemdBuilt{
    "wsgwd was built without libsystemd (install libsystemd-dev and reconfigure: meson -Dsystemd=enabled)", [] {
        const char *v = std::getenv("WSGW_SYSTEMD");
        return v != nullptr && std::string(v) == "true";
    }};

struct Notice {
    std::string text; ///< the datagram: NAME=VALUE lines
    pid_t pid = 0;    ///< the sender, as the kernel saw it
    bool has(const std::string &line) const {
        return ("\n" + text + "\n").find("\n" + line + "\n") != std::string::npos;
    }
    std::string value(const std::string &name) const {
        std::string all = "\n" + text + "\n";
        std::size_t at = all.find("\n" + name + "=");
        if (at == std::string::npos) return {};
        at += name.size() + 2;
        return all.substr(at, all.find('\n', at) - at);
    }
};

// systemd's end of the protocol: a bound AF_UNIX datagram socket that asks for the sender's
// credentials with every message.
class NotifySocket {
public:
    explicit NotifySocket(std::string path) : path_(std::move(path)) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd_ < 0) throw std::runtime_error("socket: " + std::string(std::strerror(errno)));
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        if (path_.size() >= sizeof a.sun_path) throw std::runtime_error("socket path too long: " + path_);
        std::memcpy(a.sun_path, path_.c_str(), path_.size() + 1);
        if (::bind(fd_, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0)
            throw std::runtime_error("bind " + path_ + ": " + std::strerror(errno));
        int one = 1;
        ::setsockopt(fd_, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
    }
    ~NotifySocket() {
        ::close(fd_);
        ::unlink(path_.c_str());
    }
    NotifySocket(const NotifySocket &) = delete;
    NotifySocket &operator=(const NotifySocket &) = delete;

    /// The next datagram within `limit`, else nullopt.
    std::optional<Notice> receive(Millis limit) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(limit.count())) != 1) return std::nullopt;
        char buf[4096];
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
        iovec iov{buf, sizeof buf};
        msghdr m{};
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = control;
        m.msg_controllen = sizeof control;
        ssize_t n = ::recvmsg(fd_, &m, 0);
        if (n < 0) return std::nullopt;
        Notice notice;
        notice.text.assign(buf, static_cast<std::size_t>(n));
        for (cmsghdr *c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(&m, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
                ucred cred{};
                std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
                notice.pid = cred.pid;
            }
        seen.push_back(notice);
        return notice;
    }

    /// Receives until a datagram satisfies `pred` (returned) or `limit` passes (nullopt).
    std::optional<Notice> waitFor(const std::function<bool(const Notice &)> &pred, Millis limit = 10000ms) {
        auto until = std::chrono::steady_clock::now() + limit;
        for (;;) {
            auto left = std::chrono::duration_cast<Millis>(until - std::chrono::steady_clock::now());
            if (left.count() <= 0) return std::nullopt;
            auto n = receive(left);
            if (!n) return std::nullopt;
            if (pred(*n)) return n;
        }
    }

    std::vector<Notice> seen; ///< every datagram received, in order

private:
    std::string path_;
    int fd_ = -1;
};

// Sets environment variables for the wsgwd started while it lives (spawnTied passes environ
// on), and removes them after, so the other tests run as without systemd.
class ScopedEnv {
public:
    void set(const std::string &name, const std::string &value) {
        ::setenv(name.c_str(), value.c_str(), 1);
        names_.push_back(name);
    }
    ~ScopedEnv() {
        for (const std::string &n : names_) ::unsetenv(n.c_str());
    }

private:
    std::vector<std::string> names_;
};

} // namespace

TEST_CASE("READY=1, STATUS= with connection counts, WATCHDOG=1, RELOADING=1 on SIGHUP, STOPPING=1 on SIGTERM") {
    TempDir dir;
    NotifySocket systemd(dir.file("notify"));
    ScopedEnv env;
    env.set("NOTIFY_SOCKET", dir.file("notify"));
    env.set("WATCHDOG_USEC", "1000000"); // WatchdogSec=1: a ping every 0.5 s
    auto d = Daemon::start("drain_s: 0\n");

    auto ready = systemd.waitFor([](const Notice &n) { return n.has("READY=1"); });
    REQUIRE(ready);
    CHECK(ready->pid == d->pid());
    CHECK(ready->value("STATUS").find("0 WebSocket connections") != std::string::npos);
    CHECK(eventually([&] { return d->err().find("systemd watchdog: a ping every 500 ms") != std::string::npos; }));

    // Two connections: the next status line says so; watchdog pings come with it.
    WsClient a, b;
    REQUIRE(a.connect("127.0.0.1", d->wsPort, "/connect").ok());
    REQUIRE(b.connect("127.0.0.1", d->wsPort, "/connect").ok());
    auto two = systemd.waitFor(
        [](const Notice &n) { return n.value("STATUS").find("2 WebSocket connections") != std::string::npos; }, 5000ms);
    REQUIRE(two);
    CHECK(two->has("WATCHDOG=1"));
    CHECK(two->pid == d->pid());
    auto t0 = std::chrono::steady_clock::now();
    REQUIRE(systemd.waitFor([](const Notice &n) { return n.has("WATCHDOG=1"); }, 2000ms));
    REQUIRE(systemd.waitFor([](const Notice &n) { return n.has("WATCHDOG=1"); }, 2000ms));
    // Two pings at 0.5 s apart, well inside the 1 s watchdog.
    CHECK(std::chrono::steady_clock::now() - t0 < 1500ms);

    // SIGHUP: RELOADING=1 (with the monotonic clock newer systemd checks), then READY=1.
    REQUIRE(::kill(d->pid(), SIGHUP) == 0);
    auto reloading = systemd.waitFor([](const Notice &n) { return n.has("RELOADING=1"); });
    REQUIRE(reloading);
    CHECK(!reloading->value("MONOTONIC_USEC").empty());
    auto again = systemd.waitFor([](const Notice &n) { return n.has("READY=1"); });
    REQUIRE(again);
    CHECK(again->value("STATUS").find("2 WebSocket connections") != std::string::npos);

    // SIGTERM: STOPPING=1 before the drain, then a clean exit.
    REQUIRE(::kill(d->pid(), SIGTERM) == 0);
    auto stopping = systemd.waitFor([](const Notice &n) { return n.has("STOPPING=1"); });
    REQUIRE(stopping);
    CHECK(stopping->value("STATUS").find("SIGTERM: draining") != std::string::npos);
    CHECK(d->wait(10000ms) == 0);
    for (const Notice &n : systemd.seen) CHECK(n.pid == d->pid());
}

TEST_CASE("an invalid config on SIGHUP: READY=1 again, with the refusal in STATUS") {
    TempDir dir;
    NotifySocket systemd(dir.file("notify"));
    ScopedEnv env;
    env.set("NOTIFY_SOCKET", dir.file("notify"));
    auto d = Daemon::start();
    REQUIRE(systemd.waitFor([](const Notice &n) { return n.has("READY=1"); }));
    writeFile(d->dir().file("config.yml"), "threads: many\n");
    REQUIRE(::kill(d->pid(), SIGHUP) == 0);
    REQUIRE(systemd.waitFor([](const Notice &n) { return n.has("RELOADING=1"); }));
    auto back = systemd.waitFor([](const Notice &n) { return n.has("READY=1"); });
    REQUIRE(back);
    CHECK(back->value("STATUS").find("reload refused: ") != std::string::npos);
    CHECK(back->value("STATUS").find("config.yml:1:10: threads:") != std::string::npos);
    CHECK(d->running());
}

TEST_CASE("without a watchdog: STATUS= every 5 s and no WATCHDOG=1") {
    TempDir dir;
    NotifySocket systemd(dir.file("notify"));
    ScopedEnv env;
    env.set("NOTIFY_SOCKET", dir.file("notify"));
    // A watchdog meant for another process (systemd sets WATCHDOG_PID to the main PID) is not ours.
    env.set("WATCHDOG_USEC", "1000000");
    env.set("WATCHDOG_PID", "1");
    auto d = Daemon::start();
    REQUIRE(systemd.waitFor([](const Notice &n) { return n.has("READY=1"); }));
    auto status = systemd.waitFor([](const Notice &n) { return !n.value("STATUS").empty(); }, 8000ms);
    REQUIRE(status);
    for (const Notice &n : systemd.seen) CHECK(!n.has("WATCHDOG=1"));
    CHECK(d->stop(SIGTERM) == 0);
}

TEST_CASE("a NOTIFY_SOCKET nobody listens on: wsgwd warns once and serves as without systemd") {
    TempDir dir;
    ScopedEnv env;
    env.set("NOTIFY_SOCKET", dir.file("nobody"));
    auto d = Daemon::start();
    CHECK(httpGet(d->controlPort, "/readyz").status == 200);
    REQUIRE(eventually([&] { return d->err().find("cannot notify systemd") != std::string::npos; }));
    CHECK(d->stop(SIGTERM) == 0);
    std::string err = d->err();
    CHECK(err.find("cannot notify systemd") == err.rfind("cannot notify systemd"));
}
