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

namespace {

using Clock = std::chrono::steady_clock;

} // namespace

TEST_CASE("a close frame whose reason is not UTF-8 gets 1007, not an echo, and TCP is closed (Autobahn 7.5.1)") {
    auto d = Daemon::start();
    for (const char *path : {"/raw", "/connect"}) {
        CAPTURE(path);
        auto ws = connect(*d, path);
        REQUIRE(ws->sendClose(1000, "\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80\x65\x64\x69\x74\x65\x64"));
        auto closed = ws->waitClosed(3000ms);
        CHECK(closed.kind == wsgw::test::CloseResult::Kind::CloseFrame);
        CHECK(closed.code == 1007);
        CHECK(closed.tcpClosed);
    }
    // A valid reason is still echoed.
    auto ws = connect(*d, "/raw");
    REQUIRE(ws->sendClose(1000, "bye \xC3\xA9"));
    auto closed = ws->waitClosed(3000ms);
    CHECK(closed.code == 1000);
    CHECK(closed.tcpClosed);
}

TEST_CASE("a close frame with a 1-byte payload gets 1002 and TCP is closed (Autobahn 7.3.2)") {
    auto d = Daemon::start();
    auto ws = connect(*d, "/raw");
    wsgw::test::RawFrame f;
    f.opcode = 0x8;
    f.payload = "\x03";
    REQUIRE(ws->sendRaw(f));
    auto closed = ws->waitClosed(3000ms);
    CHECK(closed.kind == wsgw::test::CloseResult::Kind::CloseFrame);
    CHECK(closed.code == 1002);
    CHECK(closed.tcpClosed);
}

TEST_CASE("text is checked as its fragments arrive: the fragment that makes it invalid closes with 1007 (Autobahn 6.4.x)") {
    auto d = Daemon::start();
    for (const char *path : {"/raw", "/connect"}) {
        CAPTURE(path);
        ConnectOptions opts;
        opts.deflate.enabled = std::string(path) == "/connect";
        auto ws = connect(*d, path, opts);
        wsgw::test::RawFrame first;
        first.opcode = 0x1;
        first.fin = false;
        first.payload = "\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5"; // valid on its own
        REQUIRE(ws->sendRaw(first));
        // The first fragment is fine: nothing comes back.
        CHECK(ws->receive(300ms).kind == Received::Kind::Timeout);
        wsgw::test::RawFrame second;
        second.opcode = 0x0;
        second.fin = false;
        second.payload = "\xF4\x90\x80\x80"; // can never be UTF-8 (above U+10FFFF)
        REQUIRE(ws->sendRaw(second));
        // Closed now, with the message still unfinished.
        auto closed = ws->waitClosed(2000ms);
        CHECK(closed.kind == wsgw::test::CloseResult::Kind::CloseFrame);
        CHECK(closed.code == 1007);
    }
    // Within one frame too: the first half of a frame that is cut off after the bad bytes.
    auto ws = connect(*d, "/raw");
    wsgw::test::RawFrame big;
    big.opcode = 0x1;
    big.payload = std::string(100, 'a') + "\xF4\x90\x80\x80";
    big.declaredLength = 2000; // the rest never comes
    REQUIRE(ws->sendRaw(big));
    CHECK(ws->waitClosed(2000ms).code == 1007);
    CHECK(metric(*d, "wsgw_invalid_utf8_closes_total") >= 3);
}

TEST_CASE("permessage-deflate offers naming server_max_window_bits are accepted, echoed and honoured (Autobahn 13.3-13.6)") {
    auto d = Daemon::start();
    for (int bits : {9, 12, 15}) {
        CAPTURE(bits);
        ConnectOptions opts;
        opts.deflate.enabled = true;
        opts.deflate.serverMaxWindowBits = bits;
        auto ws = connect(*d, "/connect", opts); // our client refuses a 101 that does not echo it
        REQUIRE(ws->negotiatedDeflate());
        CHECK(ws->negotiatedDeflate()->serverMaxWindowBits == bits);
        // A message the server compresses: repeats 2 KiB apart, which only a window of more
        // than 9 bits can reach back to. Our client inflates with 15 bits; what it checks is
        // the content.
        std::string block;
        for (int i = 0; i < 2048; ++i) block += static_cast<char>('a' + (i * 7919 % 26));
        std::string msg = block + block + block + block;
        const std::string hello = "hello " + std::to_string(bits);
        REQUIRE(ws->sendText(hello));
        auto ev = d->waitEvent([&](auto &e) { return e["action"] == "message" && e["message"] == hello; });
        REQUIRE(ev);
        auto r = httpPost(d->controlPort, "/send?id=" + (*ev)["connection"].get<std::string>(), msg);
        REQUIRE(r.status == 200);
        auto got = ws->receive(3000ms);
        REQUIRE(got.isText());
        CHECK(got.compressed);
        CHECK(got.data == msg);
        REQUIRE(ws->sendClose(1000));
        CHECK(ws->waitClosed(3000ms).tcpClosed);
    }
    // 8 bits cannot be honoured (zlib deflates raw with 9 at least): a 101 without compression.
    ConnectOptions opts;
    opts.deflate.enabled = true;
    opts.deflate.serverMaxWindowBits = 8;
    auto ws = connect(*d, "/connect", opts);
    CHECK_FALSE(ws->negotiatedDeflate());
}

TEST_CASE("a Sec-WebSocket-Extensions header of 255 bytes or more gets a 101, not silence (Autobahn 13.7)") {
    auto d = Daemon::start();
    // The three offers of Autobahn 13.7.x, 254 bytes and more.
    const std::string threeOffers =
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits, "
        "permessage-deflate; client_no_context_takeover; client_max_window_bits, "
        "permessage-deflate; client_max_window_bits, x-webkit-deflate-frame; no_context_takeover; max_window_bits=15";
    REQUIRE(threeOffers.size() >= 255);
    ConnectOptions opts;
    opts.headers = {{"Sec-WebSocket-Extensions", threeOffers}};
    opts.deflate.enabled = true; // so that the client parses the answer
    auto ws = connect(*d, "/connect", opts);
    REQUIRE(ws->negotiatedDeflate()); // the first offer, as lws takes it
    CHECK(ws->negotiatedDeflate()->serverMaxWindowBits == 9);
    REQUIRE(ws->sendText("compressed"));
    CHECK(d->waitEvent([](auto &e) { return e["action"] == "message" && e["message"] == "compressed"; }));
    // An offer that itself reaches past the bound: a 101 without compression.
    ConnectOptions longOne;
    longOne.headers = {{"Sec-WebSocket-Extensions", "x-" + std::string(300, 'a') + ", permessage-deflate"}};
    longOne.deflate.enabled = true;
    auto ws2 = connect(*d, "/connect", longOne);
    CHECK_FALSE(ws2->negotiatedDeflate());
    REQUIRE(ws2->sendText("plain"));
    CHECK(d->waitEvent([](auto &e) { return e["action"] == "message" && e["message"] == "plain"; }));
}

TEST_CASE("a connection failed for a protocol error is closed on TCP right after the close frames (Autobahn 3.x, 5.14)") {
    auto d = Daemon::start();
    struct Row {
        std::string what;
        wsgw::test::RawFrame frame;
        std::uint16_t code;
    };
    wsgw::test::RawFrame rsv;
    rsv.rsv2 = true;
    rsv.payload = "Hello, world!";
    wsgw::test::RawFrame opcode;
    opcode.opcode = 0x3;
    opcode.payload = "reserved";
    wsgw::test::RawFrame stray;
    stray.opcode = 0x0;
    stray.payload = "continuation without a start";
    wsgw::test::RawFrame utf8;
    utf8.payload = std::string(200, 'a') + "\xF4\x90\x80\x80" + std::string(200, 'b');
    // The bad character far from both ends: it arrives in a piece of the frame with more behind.
    wsgw::test::RawFrame utf8Long;
    utf8Long.payload = std::string(3000, 'a') + "\xF4\x90\x80\x80" + std::string(3000, 'b');
    const Row rows[] = {
        {"reserved bit (lws fails it)", rsv, 1002},
        {"reserved opcode (lws fails it)", opcode, 1002},
        {"continuation with nothing to continue (lws fails it)", stray, 1002},
        {"invalid UTF-8 (wsgwd fails it)", utf8, 1007},
        {"invalid UTF-8 inside a 6 KB frame (wsgwd fails it)", utf8Long, 1007},
    };
    for (const Row &r : rows) {
        CAPTURE(r.what);
        auto ws = connect(*d, "/raw");
        REQUIRE(ws->sendRaw(r.frame));
        REQUIRE(ws->sendPing("after the bad frame")); // more bytes behind it, as Autobahn sends
        // waitClosed answers the server's close frame; the server must then close TCP, not
        // wait for a close frame of ours that its parser may no longer find (lws waits 5 s).
        auto start = Clock::now();
        auto closed = ws->waitClosed(4000ms);
        auto ms = std::chrono::duration_cast<Millis>(Clock::now() - start).count();
        CHECK(closed.kind == wsgw::test::CloseResult::Kind::CloseFrame);
        CHECK(closed.code == r.code);
        CHECK(closed.tcpClosed);
        CHECK(ms < 1500);
    }
}

TEST_CASE("a control frame over 125 bytes gets close 1002, not a dropped connection (RFC 6455 5.5)") {
    auto d = Daemon::start();
    auto ws = connect(*d, "/raw");
    wsgw::test::RawFrame ping;
    ping.opcode = 0x9;
    ping.payload = std::string(126, 'p');
    REQUIRE(ws->sendRaw(ping));
    auto closed = ws->waitClosed(3000ms);
    CHECK(closed.kind == wsgw::test::CloseResult::Kind::CloseFrame);
    CHECK(closed.code == 1002);
    CHECK(closed.tcpClosed);
    // A client that just goes away gets nothing written (and wsgwd carries on).
    auto gone = connect(*d, "/raw");
    gone->disconnect();
    auto ws2 = connect(*d, "/raw");
    REQUIRE(ws2->sendText("still here"));
    CHECK(d->waitEvent([](auto &e) { return e["action"] == "message" && e["message"] == "still here"; }));
}
