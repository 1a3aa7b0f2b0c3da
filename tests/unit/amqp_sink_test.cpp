// makeAmqpSink without a broker: options that can never work are refused up front, and an
// unreachable broker is a sink that is down with a reason while its backlog holds the events.
// (tests/integration/amqp_test.cpp runs it against a real RabbitMQ.)
#include <wsgw/sink.h>

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

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
