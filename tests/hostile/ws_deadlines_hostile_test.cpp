// Deadlines on the WebSocket port: slow or unfinished requests of any method are closed within
// the handshake timeout, and idle_timeout_s and max_connection_lifetime_s close within 10% of
// their settings.

#include "clients.h"
#include "harness.h"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

using namespace wsgw::itest;
using wsgw::test::ConnectOptions;
using wsgw::test::Received;
using wsgw::test::WsClient;
using Clock = std::chrono::steady_clock;

namespace {

// A plain TCP connection to 127.0.0.1:port, closed on destruction.
struct RawSocket {
    explicit RawSocket(std::uint16_t port) {
        fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0);
    }
    ~RawSocket() { ::close(fd); }
    bool send(std::string_view bytes) { return ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == ssize_t(bytes.size()); }
    // Reads what arrives within `wait`; sets `closed` when the server closed (EOF or reset).
    std::string read(Millis wait) {
        std::string out;
        auto until = Clock::now() + wait;
        while (!closed && Clock::now() < until) {
            pollfd p{fd, POLLIN, 0};
            int left = static_cast<int>(std::chrono::duration_cast<Millis>(until - Clock::now()).count());
            if (::poll(&p, 1, std::max(left, 0)) <= 0) break;
            char buf[4096];
            ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0) {
                closed = true;
                break;
            }
            out.append(buf, static_cast<std::size_t>(n));
        }
        return out;
    }
    int fd = -1;
    bool closed = false;
};

} // namespace

TEST_CASE("a POST on the WebSocket port is answered 405 and closed at once, however slowly its body comes") {
    auto d = Daemon::start();
    RawSocket s(d->wsPort);
    REQUIRE(s.send("POST /raw HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nab"));
    auto t0 = Clock::now();
    std::string got;
    // Keep trickling the body, as a slow-body attacker does.
    while (!s.closed && Clock::now() - t0 < 5s) {
        got += s.read(200ms);
        if (!s.closed) (void)s.send("x");
    }
    CHECK(got.rfind("HTTP/1.1 405", 0) == 0);
    CHECK(s.closed);
    CHECK(Clock::now() - t0 < 2s);
}

TEST_CASE("headers sent slowly are cut off within the handshake timeout (10 s)") {
    auto d = Daemon::start();
    RawSocket s(d->wsPort);
    auto t0 = Clock::now();
    REQUIRE(s.send("GET /raw HTTP/1.1\r\nHost: x\r\n"));
    // One more header byte every 500 ms: never a complete request.
    while (!s.closed && Clock::now() - t0 < 15s) {
        (void)s.read(500ms);
        if (!s.closed) (void)s.send("X");
    }
    CHECK(s.closed);
    CHECK(Clock::now() - t0 < 11500ms);
}

TEST_CASE("idle_timeout_s and max_connection_lifetime_s close within 10% of their settings") {
    auto d = Daemon::start("idle_timeout_s: 10\nmax_connection_lifetime_s: 20\n");
    // A frozen client: sends nothing, answers no ping, and would not answer a close either.
    ConnectOptions frozenOpts;
    frozenOpts.answerPings = false;
    frozenOpts.answerClose = false;
    WsClient frozen, healthy;
    auto t0 = Clock::now();
    REQUIRE(frozen.connect("127.0.0.1", d->wsPort, "/raw", frozenOpts).ok());
    REQUIRE(healthy.connect("127.0.0.1", d->wsPort, "/raw").ok());

    std::optional<Clock::duration> frozenGone, healthyClosed;
    Received closeFrame;
    std::uint16_t frozenCode = 0;
    while (Clock::now() - t0 < 25s && !(frozenGone && healthyClosed)) {
        if (!frozenGone) {
            auto r = frozen.receive(20ms);
            if (r.kind == Received::Kind::Close) frozenCode = r.closeCode;
            if (r.kind == Received::Kind::Eof) frozenGone = Clock::now() - t0;
        }
        if (!healthyClosed) {
            auto r = healthy.receive(20ms); // answers pings while it reads
            if (r.kind == Received::Kind::Close) {
                healthyClosed = Clock::now() - t0;
                closeFrame = r;
            }
        }
    }
    REQUIRE(frozenGone);
    REQUIRE(healthyClosed);
    INFO("frozen client gone after ", std::chrono::duration<double>(*frozenGone).count(), " s; healthy closed after ",
         std::chrono::duration<double>(*healthyClosed).count(), " s");
    // The frozen client got the close frame, then the connection was cut: no 5 s wait for an
    // answer that will not come.
    CHECK(frozenCode == 1001);
    CHECK(*frozenGone >= 10s);
    CHECK(*frozenGone <= 11s);
    CHECK(closeFrame.closeCode == 1012);
    CHECK(*healthyClosed >= 18s);
    CHECK(*healthyClosed <= 22s);
    CHECK(d->stop(SIGTERM) == 0);
}
