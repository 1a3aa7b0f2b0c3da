// wsgwd/broker_url.h beyond what config_test covers: the AMQP URL's query options, parsed once
// at config load (they used to be read again when the sink was built, and a bad one stopped
// the start instead of failing the config).

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "broker_url.h"
#include "config.h"

#include <chrono>
#include <string>

using namespace wsgw::daemon;

namespace {

AmqpAddress amqp(const std::string &url) {
    std::string error;
    std::size_t optionAt = 0;
    auto a = AmqpAddress::parse(url, &error, &optionAt);
    REQUIRE_MESSAGE(a, url << ": " << error);
    CHECK(optionAt == std::string::npos);
    return *a;
}

struct Refused {
    std::string error;
    std::size_t optionAt = 0;
};

Refused refused(const std::string &url) {
    Refused r;
    CHECK_FALSE_MESSAGE(AmqpAddress::parse(url, &r.error, &r.optionAt), url);
    return r;
}

} // namespace

TEST_CASE("AMQP query: heartbeat and connection_timeout are read, absent ones left to the sink") {
    AmqpAddress none = amqp("amqp://h/");
    CHECK_FALSE(none.heartbeatS);
    CHECK_FALSE(none.connectionTimeoutMs);

    AmqpAddress both = amqp("amqps://u:p@h:5999/vh?heartbeat=5&connection_timeout=2500");
    CHECK(both.heartbeatS == 5u);
    CHECK(both.connectionTimeoutMs == 2500u);
    CHECK(both.vhost == "vh");
    CHECK(both.port == 5999);

    CHECK(amqp("amqp://h?heartbeat=0").heartbeatS == 0u); // 0 turns heartbeats off
    CHECK(amqp("amqp://h?heartbeat=65535").heartbeatS == 65535u);
    CHECK(amqp("amqp://h?connection_timeout=1").connectionTimeoutMs == 1u);
    CHECK(amqp("amqp://h?connection_timeout=600000").connectionTimeoutMs == 600000u);
    // Percent-encoded keys and values, empty pairs, the last of a repeated option.
    CHECK(amqp("amqp://h?heart%62eat=%31%30").heartbeatS == 10u);
    CHECK(amqp("amqp://h?&&heartbeat=1&&heartbeat=2&").heartbeatS == 2u);
}

TEST_CASE("AMQP query: RabbitMQ's other options are accepted and ignored") {
    AmqpAddress a = amqp("amqp://h/?channel_max=9&frame_max=x&auth_mechanism=PLAIN&odd=%zz&flag&heartbeat=3");
    CHECK(a.heartbeatS == 3u);
    CHECK_FALSE(a.connectionTimeoutMs);
}

TEST_CASE("AMQP query: a bad value is refused, naming the option and where it is") {
    struct Case {
        const char *url;
        const char *error;
        std::size_t at;
    };
    const Case cases[] = {
        {"amqp://h/?heartbeat=soon", "heartbeat='soon': use seconds, 0 to 65535", 10},
        {"amqp://h/?heartbeat=65536", "heartbeat='65536': use seconds, 0 to 65535", 10},
        {"amqp://h/?heartbeat=-1", "heartbeat='-1': use seconds, 0 to 65535", 10},
        {"amqp://h/?heartbeat=", "heartbeat='': use seconds, 0 to 65535", 10},
        {"amqp://h/?heartbeat", "heartbeat='': use seconds, 0 to 65535", 10},
        {"amqp://h/?heartbeat=+5", "heartbeat='+5': use seconds, 0 to 65535", 10},
        {"amqp://h/?heartbeat=%zz", "heartbeat='%zz': use seconds, 0 to 65535", 10},
        {"amqp://h/?heartbeat=99999999999999999999999",
         "heartbeat='99999999999999999999999': use seconds, 0 to 65535", 10},
        {"amqp://u:p@h/v?frame_max=1&connection_timeout=0",
         "connection_timeout='0': use milliseconds, 1 to 600000", 27},
        {"amqp://h?connection_timeout=600001", "connection_timeout='600001': use milliseconds, 1 to 600000",
         9},
        {"amqp://h?connection_timeout=5s", "connection_timeout='5s': use milliseconds, 1 to 600000", 9},
    };
    for (const Case &c : cases) {
        CAPTURE(c.url);
        Refused r = refused(c.url);
        CHECK(r.error == c.error);
        CHECK(r.optionAt == c.at);
    }
}

TEST_CASE("AMQP: a malformed URL is no option's fault") {
    CHECK(refused("amqp://h:0/?heartbeat=5").optionAt == std::string::npos);
    CHECK(refused("amqp://u%zz@h").optionAt == std::string::npos);
    CHECK(refused("redis://h?heartbeat=x").optionAt == std::string::npos);
    CHECK(refused("amqp://h/%zz?heartbeat=1").error == "malformed %-escape in the vhost");
}

TEST_CASE("AMQP and Redis URLs keep '+' in user, password and path: it is not a space there") {
    auto a = AmqpAddress::parse("amqp://a+b:c+d@h/v+w");
    REQUIRE(a);
    CHECK(a->user == "a+b");
    CHECK(a->password == "c+d");
    CHECK(a->vhost == "v+w");
    auto r = RedisAddress::parse("unix://:p+q@/run/r+s.sock?client_name=x+y");
    REQUIRE(r);
    CHECK(r->password == "p+q");
    CHECK(r->unixPath == "/run/r+s.sock");
    CHECK(r->clientName == "x+y");
}

TEST_CASE("stream_amqp.addr: the options land in the config; a bad one is a config error at its place") {
    const std::string endpoint = "endpoints:\n  - path: /connect\n";
    std::string error;
    auto c =
        parseConfig("stream_amqp:\n  addr: amqp://127.0.0.1/?heartbeat=7&connection_timeout=900\n" + endpoint,
                    "t.yml", &error);
    REQUIRE_MESSAGE(c, error);
    CHECK(c->streamAmqp->options.heartbeat == std::chrono::seconds(7));
    CHECK(c->streamAmqp->options.connectTimeout == std::chrono::milliseconds(900));

    // Column 9 is where the URL starts; the option is 18 characters into it.
    CHECK_FALSE(
        parseConfig("stream_amqp:\n  addr: amqp://127.0.0.1/?heartbeat=soon\n" + endpoint, "t.yml", &error));
    CHECK(error == "t.yml:2:27: stream_amqp.addr: heartbeat='soon': use seconds, 0 to 65535");
    // Quoted: one column more.
    CHECK_FALSE(
        parseConfig("stream_amqp:\n  addr: 'amqp://h?connection_timeout=0'\n" + endpoint, "t.yml", &error));
    CHECK(error == "t.yml:2:19: stream_amqp.addr: connection_timeout='0': use milliseconds, 1 to 600000");
    // The URL's form: the whole URL, as before.
    CHECK_FALSE(parseConfig("stream_amqp:\n  addr: amqp://h:0?heartbeat=1\n" + endpoint, "t.yml", &error));
    CHECK(error == "t.yml:2:9: stream_amqp.addr: invalid AMQP URL 'amqp://h:0?heartbeat=1': invalid port "
                   "'0': use 1..65535");
}
