// The AMQP sink without a broker: options that can never work are refused up front; an
// unreachable broker, or one that accepts the connection and then says nothing, is a sink that
// is down with a reason (within its connect timeout) while its backlog holds the events. And its
// private parts alone: the confirms of a batch, and the socket watchdog that bounds rabbitmq-c's
// writes. (tests/integration/amqp_test.cpp runs the sink against a real RabbitMQ, including one
// that blocks publishing.)
#include "amqp_confirms.h"
#include "socket_watchdog.h"

#include <wsgw/sink.h>

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <thread>
#include <vector>

using namespace wsgw;
using namespace std::chrono_literals;

namespace {

// A loopback port that nothing listens on.
std::uint16_t closedPort() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

// A listening loopback socket and its port.
std::pair<int, std::uint16_t> listener() {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0);
    REQUIRE(listen(fd, 8) == 0);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
    return {fd, ntohs(a.sin_port)};
}

// A connected loopback TCP pair: {non-blocking client, server side}.
std::pair<int, int> tcpPair() {
    auto [l, port] = listener();
    int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    int rc = ::connect(c, reinterpret_cast<sockaddr *>(&a), sizeof a);
    REQUIRE((rc == 0 || errno == EINPROGRESS));
    int s = accept(l, nullptr, nullptr);
    REQUIRE(s >= 0);
    ::close(l);
    pollfd p{c, POLLOUT, 0};
    REQUIRE(poll(&p, 1, 2000) == 1);
    return {c, s};
}

// Fills `fd`'s send buffer (and the peer's receive buffer) until a send would block.
void fill(int fd) {
    std::vector<char> chunk(64 * 1024, 'x');
    for (int i = 0; i < 100'000; ++i)
        if (send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) < 0) break;
    REQUIRE(errno == EAGAIN);
}

// What rabbitmq-c 0.11 does for a write to a peer that does not read: poll for room without a
// timeout, then send. Returns send()'s errno (0 if it sent).
int blockingWrite(int fd) {
    pollfd p{fd, POLLOUT, 0};
    while (poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    char byte = 'y';
    return send(fd, &byte, 1, MSG_NOSIGNAL) == 1 ? 0 : errno;
}

} // namespace

TEST_CASE("options that can never work are refused with a reason") {
    std::string error;
    AmqpSinkOptions o;
    o.routingKey = "events.{json.}";
    CHECK(makeAmqpSink(o, &error) == nullptr);
    CHECK(error.find("routing key 'events.{json.}'") == 0);

    o = {};
    o.host = "";
    CHECK(makeAmqpSink(o, &error) == nullptr);
    CHECK(error == "no broker host");

    o = {};
    o.routingKey = std::string(256, 'k');
    CHECK(makeAmqpSink(o, &error) == nullptr);
    CHECK(error == "routing key longer than 255 bytes");

    o = {};
    o.exchange = std::string(256, 'x');
    CHECK(makeAmqpSink(o, &error) == nullptr);

    o = {};
    o.headers[""] = "v";
    CHECK(makeAmqpSink(o, &error) == nullptr);

    o = {};
    o.routingKey = "commmand-{json.command:unknown_command}";
    auto sink = makeAmqpSink(o, &error);
    REQUIRE(sink);
    CHECK(sink->name() == "amqp");
    CHECK(sink->rejected() == 0);
}

TEST_CASE("an unreachable broker: the sink is down with the reason and the backlog keeps the events") {
    AmqpSinkOptions o;
    o.host = "127.0.0.1";
    o.port = closedPort();
    o.exchange = "x";
    o.connectTimeout = 500ms;
    auto sink = makeAmqpSink(o);
    REQUIRE(sink);
    EventBus bus;
    bus.addSink(std::move(sink));
    REQUIRE(bus.start());
    for (int i = 0; i < 3; ++i) bus.publish(Event::make(EventAction::Open, ConnectionId::random(), "/e", Tags{}, {}));
    std::vector<SinkStats> stats;
    for (int i = 0; i < 200; ++i) {
        stats = bus.stats();
        if (!stats[0].lastError.empty()) break;
        std::this_thread::sleep_for(10ms);
    }
    CHECK_FALSE(stats[0].connected);
    CHECK(stats[0].lastError == "cannot connect to 127.0.0.1:" + std::to_string(o.port) + ": Connection refused");
    CHECK(stats[0].backlog == 3);
    CHECK_FALSE(bus.ready());
    CHECK(bus.stop(0ms) == 3);
}

TEST_CASE("a broker that accepts the connection and then says nothing: login gives up after the connect timeout") {
    auto [l, port] = listener();
    // The kernel completes the TCP handshake from the backlog; nobody ever answers.
    AmqpSinkOptions o;
    o.host = "127.0.0.1";
    o.port = port;
    o.connectTimeout = 300ms;
    auto sink = makeAmqpSink(o);
    REQUIRE(sink);
    EventSink &s = *sink;
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(s.connect());
    const auto took = std::chrono::steady_clock::now() - t0;
    CHECK(s.lastError() == "no answer to the AMQP login from 127.0.0.1:" + std::to_string(port) +
                               " within 300 ms (is this an AMQP 0-9-1 port?)");
    CHECK(took >= 250ms);
    CHECK(took < 5s); // 300 ms, plus a loaded machine's margin
    CHECK(s.publish({std::make_shared<Event>(Event::make(EventAction::Open, ConnectionId::random(), "/e", Tags{}, {}))}) == 0);
    CHECK(s.lastError() == "not connected");
    ::close(l);
}

TEST_CASE("batch confirms: acks, multiple acks, nacks, events settled here, and tags of other batches") {
    using wsgw::amqp::BatchConfirms;
    // Five events; event 2 is refused for good before sending; the others go out with tags 10..13.
    BatchConfirms c(5, 10);
    c.sent(0);
    c.sent(1);
    c.settledHere(2);
    c.sent(3);
    c.sent(4);
    CHECK(c.outstanding() == 4);
    CHECK(c.leading() == 0);

    c.settle(9, true, false);  // an earlier batch's late confirm: ignored
    c.settle(14, false, false); // a tag not sent in this batch: ignored
    CHECK(c.outstanding() == 4);

    c.settle(11, false, false); // event 1 alone
    CHECK(c.leading() == 0);
    c.settle(10, false, false); // event 0: the leading run is now 0, 1 and the settled 2
    CHECK(c.leading() == 3);
    c.settle(13, false, true); // event 4 nacked
    CHECK(c.nacked() == 1);
    c.settle(12, true, false); // multiple up to event 3: 0..2 are settled already, 4 stays nacked
    CHECK(c.outstanding() == 0);
    CHECK(c.nacked() == 1);
    CHECK(c.leading() == 4);

    BatchConfirms all(3, 1);
    for (std::size_t i = 0; i < 3; ++i) all.sent(i);
    all.settle(3, true, false);
    CHECK(all.outstanding() == 0);
    CHECK(all.leading() == 3);
}

TEST_CASE("the socket watchdog frees a write that waits for a peer that stopped reading") {
    // Not a structured binding: the lambdas below capture c, which clang 14 refuses for a binding.
    const auto [cFd, sFd] = tcpPair();
    const int c = cFd, s = sFd;
    fill(c);
    SocketWatchdog dog;

    SUBCASE("the deadline passes: the socket is shut down, the write fails, disarm() says so") {
        const auto t0 = std::chrono::steady_clock::now();
        dog.arm(c, t0 + 200ms);
        std::atomic<int> err{-1};
        std::thread writer([&] { err = blockingWrite(c); });
        writer.join(); // without the watchdog: never
        const auto took = std::chrono::steady_clock::now() - t0;
        CHECK(err == EPIPE);
        CHECK(took >= 150ms);
        CHECK(took < 5s);
        CHECK(dog.disarm());
        CHECK_FALSE(dog.disarm()); // reported once
    }
    SUBCASE("disarmed in time: the socket stays usable") {
        dog.arm(c, std::chrono::steady_clock::now() + 200ms);
        CHECK_FALSE(dog.disarm());
        std::this_thread::sleep_for(400ms);
        // Still connected: the peer reads, and the write goes through.
        std::atomic<bool> written{false};
        std::thread reader([&, s = s] {
            std::vector<char> buffer(1 << 20);
            const auto until = std::chrono::steady_clock::now() + 10s;
            while (!written && std::chrono::steady_clock::now() < until)
                if (recv(s, buffer.data(), buffer.size(), MSG_DONTWAIT) <= 0) std::this_thread::sleep_for(1ms);
        });
        CHECK(blockingWrite(c) == 0);
        written = true;
        reader.join();
    }
    SUBCASE("abort(): the armed socket now, and every later one at once") {
        dog.arm(c, std::chrono::steady_clock::now() + 1h);
        std::atomic<int> err{-1};
        std::thread writer([&] { err = blockingWrite(c); });
        std::this_thread::sleep_for(100ms);
        dog.abort();
        writer.join();
        CHECK(err == EPIPE);
        CHECK(dog.disarm());
        auto [c2, s2] = tcpPair();
        dog.arm(c2, std::chrono::steady_clock::now() + 1h);
        CHECK(dog.disarm());
        char byte = 'z';
        CHECK(send(c2, &byte, 1, MSG_NOSIGNAL) < 0);
        ::close(c2);
        ::close(s2);
    }
    ::close(c);
    ::close(s);
}
