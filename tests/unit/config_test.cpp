// Unit tests for the daemon's config.yml loader (wsgwd/config.h).

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "broker_url.h"
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

using namespace wsgw::daemon;
using namespace std::chrono_literals;

namespace {

const char *const kEndpoint = "endpoints:\n  - path: /connect\n";

/// The error for `yaml`, which must not parse.
std::string errorOf(const std::string &yaml) {
    std::string error;
    auto config = parseConfig(yaml, "t.yml", &error);
    CHECK_MESSAGE(!config, "parsed although an error was expected:\n" << yaml);
    CHECK_FALSE(error.empty());
    return error;
}

/// The error for `yaml`, which must parse but fail at its files (loadConfigText).
std::string loadErrorOf(const std::string &yaml) {
    std::string error;
    REQUIRE_MESSAGE(parseConfig(yaml, "t.yml", &error), error);
    CHECK_FALSE(loadConfigText(yaml, "t.yml", &error));
    return error;
}

/// Checks that parsing `yaml` fails with a message that begins with `prefix`.
#define CHECK_ERROR(yaml, prefix)                                                                            \
    do {                                                                                                     \
        std::string e_ = errorOf(yaml);                                                                      \
        std::string p_ = (prefix);                                                                           \
        CHECK_MESSAGE(e_.compare(0, p_.size(), p_) == 0,                                                     \
                      "got:      " << e_ << "\nexpected: " << p_ << "...");                                  \
    } while (0)

Config parseOk(const std::string &yaml) {
    std::string error;
    auto config = parseConfig(yaml, "t.yml", &error);
    REQUIRE_MESSAGE(config, error);
    return *config;
}

std::string redisError(const std::string &url) {
    std::string error;
    CHECK_FALSE(RedisAddress::parse(url, &error));
    return error;
}

Cidr net(const char *text) {
    std::string error;
    auto c = Cidr::parse(text, &error);
    REQUIRE_MESSAGE(c, text << ": " << error);
    return *c;
}

} // namespace

// ---------------------------------------------------------------------------------------------
// Whole files

TEST_CASE("a config with every key parses to the right values") {
    const std::string yaml = R"(listen_addr: "[::]:5001"
control_addr: 127.0.0.1:7000
internal_endpoint_access_whitelist:
  - 10.0.0.0/8
  - fc00::/7
connection_redis_sync:
  addr: redis://:s3cr%40t@redis.local:6380/2?client_name=wsgw
stream_redis:
  addr: redis://localhost?client_name=stream&pool_size=1000
  stream_name: "events.{tag.group:none}"
stream_amqp:
  addr: amqps://user:pa%2Fss@mq.local/vh
  exchange: ex
  queue: q
  routing_key: "r.{json.command}"
  headers:
    source: wsgw
    n: 5
max_message_size_kb: 2048
endpoints:
  - path: /connect
    set_tags: {group: default, version: 2}
    stream_include_tags: [group, user, group]
    max_message_size_kb: 64
    json_extract_vars:
      command: data.command
      first: items[0].id
    compression: false
  - path: /connect/v2
prometheus:
  enabled: false
threads: 4
idle_timeout_s: 0
max_outbound_kb: 512
event_log: stderr
log_level: debug
)";
    Config c = parseOk(yaml);
    CHECK(c.file == "t.yml");
    CHECK(c.ws.addr == HostPort{"::", 5001});
    CHECK(c.control.addr == HostPort{"127.0.0.1", 7000});
    REQUIRE(c.control.allow.size() == 2);
    CHECK(c.control.allow[0].toString() == "10.0.0.0/8");
    CHECK(c.control.allow[1].toString() == "fc00::/7");

    REQUIRE(c.connectionRedisSync);
    const wsgw::RedisEndpoint &sync = c.connectionRedisSync->options.redis;
    CHECK(sync.host == "redis.local");
    CHECK(sync.port == 6380);
    CHECK(sync.db == 2);
    CHECK(sync.user.empty());
    CHECK(sync.password == "s3cr@t");
    CHECK(sync.clientName == "wsgw");
    CHECK(sync.commandTimeout == 5000ms);
    CHECK(sync.connectTimeout == 2000ms);
    CHECK(c.connectionRedisSync->url == "redis://:s3cr%40t@redis.local:6380/2?client_name=wsgw");
    CHECK_FALSE(c.connectionRedisSync->tls);

    REQUIRE(c.streamRedis);
    const wsgw::RedisStreamOptions &stream = c.streamRedis->options;
    CHECK(stream.redis.host == "localhost");
    CHECK(stream.redis.port == 6379);
    CHECK(stream.redis.db == 0);
    CHECK(stream.redis.clientName == "stream");
    CHECK(stream.streamName == "events.{tag.group:none}");
    CHECK(stream.node.empty()); // the gateway's to set
    // go-redis options are accepted (and not used)
    CHECK(RedisAddress::parse(c.streamRedis->url)->options.at("pool_size") == "1000");

    REQUIRE(c.streamAmqp);
    const wsgw::AmqpSinkOptions &amqp = c.streamAmqp->options;
    CHECK(amqp.tls);
    CHECK(amqp.host == "mq.local");
    CHECK(amqp.port == 5671);
    CHECK(amqp.user == "user");
    CHECK(amqp.password == "pa/ss");
    CHECK(amqp.vhost == "vh");
    CHECK(amqp.exchange == "ex");
    CHECK(amqp.queue == "q");
    CHECK(amqp.routingKey == "r.{json.command}");
    CHECK(amqp.headers == std::map<std::string, std::string>{{"n", "5"}, {"source", "wsgw"}});
    CHECK(c.streamAmqp->url == "amqps://user:pa%2Fss@mq.local/vh");

    CHECK(c.defaults.maxMessageBytes == 2048 * 1024);
    REQUIRE(c.ws.endpoints.size() == 2);
    const WsEndpoint &a = c.ws.endpoints[0];
    CHECK(a.path == "/connect");
    CHECK(a.setTags == wsgw::TagList{{"group", "default"}, {"version", "2"}});
    CHECK(a.events.includeTags == std::vector<std::string>{"group", "user"});
    CHECK(a.maxMessageBytes == 64 * 1024);
    CHECK(a.events.json.names() == std::vector<std::string>{"command", "first"});
    CHECK(a.events.json.extract(R"({"data": {"command": "go"}, "items": [{"id": 7}]})") ==
          wsgw::Vars{{"command", "go"}, {"first", "7"}});
    CHECK_FALSE(a.compression);
    const WsEndpoint &b = c.ws.endpoints[1];
    CHECK(b.path == "/connect/v2");
    CHECK(b.setTags.empty());
    CHECK(b.events.includeTags.empty());
    CHECK(b.maxMessageBytes == 2048 * 1024); // the global value, given after the endpoints
    CHECK(b.events.json.empty());
    CHECK(b.compression); // on unless turned off, as in the original
    CHECK(c.findEndpoint("/connect/v2") == &b);
    CHECK(c.findEndpoint("/nope") == nullptr);

    CHECK_FALSE(c.control.metrics);
    CHECK(c.control.maxBodyBytes == 2048 * 1024); // max_message_size_kb, without max_body_kb
    CHECK(c.threads == 4);
    CHECK(c.ws.idleTimeout == 0s);
    CHECK(c.ws.endpoints[0].slowConsumer.maxOutboundBytes == 512 * 1024);
    CHECK(c.eventLog == Config::EventLog::Stderr);
    CHECK(c.effectiveEventLog() == Config::EventLog::Stderr);
    CHECK(c.logLevel == "debug");
}

TEST_CASE("absent keys take their defaults") {
    Config c = parseOk(kEndpoint);
    CHECK(c.ws.addr == HostPort{"0.0.0.0", 5000});
    CHECK(c.control.addr == HostPort{"127.0.0.1", 6666});
    REQUIRE(c.control.allow.size() == 2);
    CHECK(c.control.allow[0].toString() == "127.0.0.0/8");
    CHECK(c.control.allow[1].toString() == "::1/128");
    CHECK_FALSE(c.connectionRedisSync);
    CHECK_FALSE(c.streamRedis);
    CHECK_FALSE(c.streamAmqp);
    CHECK(c.defaults.maxMessageBytes == 1024 * 1024);
    REQUIRE(c.ws.endpoints.size() == 1);
    CHECK(c.ws.endpoints[0].path == "/connect");
    CHECK(c.ws.endpoints[0].maxMessageBytes == 1024 * 1024);
    CHECK(c.ws.endpoints[0].compression);
    CHECK(c.control.metrics);
    CHECK(c.control.maxBodyBytes == 1024 * 1024);
    CHECK(c.threads == 0);
    CHECK(c.ws.idleTimeout == 60s);
    CHECK(c.ws.endpoints[0].slowConsumer.maxOutboundBytes == 4096 * 1024);
    CHECK(c.eventLog == Config::EventLog::Auto);
    CHECK(c.effectiveEventLog() == Config::EventLog::Stdout);
    CHECK(c.logLevel == "info");
}

TEST_CASE("empty sections and lists mean their defaults") {
    Config c = parseOk(
        std::string("internal_endpoint_access_whitelist: []\nstream_redis:\nstream_amqp:\n"
                    "connection_redis_sync:\nprometheus:\n") +
        "endpoints:\n  - path: /a\n    set_tags:\n    stream_include_tags:\n    json_extract_vars:\n");
    CHECK(c.control.allow.size() == 2);
    CHECK_FALSE(c.streamRedis);
    CHECK_FALSE(c.streamAmqp);
    CHECK_FALSE(c.connectionRedisSync);
    CHECK(c.control.metrics);
    CHECK(c.ws.endpoints[0].setTags.empty());
}

TEST_CASE("set_tags refuses the tag name id, which no selector could match, naming where it is") {
    std::string e = errorOf("endpoints:\n  - path: /a\n    set_tags: {group: a, id: x}\n");
    CHECK(e.find("t.yml:3:") == 0);
    CHECK(e.find("endpoints[0].set_tags: tag name 'id' is reserved") != std::string::npos);
}

TEST_CASE("scalars: numbers as strings, YAML booleans, quoting") {
    Config c = parseOk("endpoints:\n  - path: \"/a\"\n    set_tags: {1: 2, admin: true, 'x y': \"z w\"}\n"
                       "    stream_include_tags: [1]\n    compression: no\n"
                       "  - path: /b\n    compression: On\nprometheus: {enabled: YES}\nthreads: \"8\"\n");
    CHECK(c.ws.endpoints[0].path == "/a");
    CHECK(c.ws.endpoints[0].setTags == wsgw::TagList{{"1", "2"}, {"admin", "true"}, {"x y", "z w"}});
    CHECK(c.ws.endpoints[0].events.includeTags == std::vector<std::string>{"1"});
    CHECK_FALSE(c.ws.endpoints[0].compression);
    CHECK(c.ws.endpoints[1].compression);
    CHECK(c.control.metrics);
    CHECK(c.threads == 8);
}

TEST_CASE("event_log: discard is its own choice, kept as it is") {
    Config c = parseOk(std::string("event_log: discard\n") + kEndpoint);
    CHECK(c.eventLog == Config::EventLog::Discard);
    CHECK(c.effectiveEventLog() == Config::EventLog::Discard);
    c = parseOk(std::string("stream_redis:\n  addr: redis://localhost\nevent_log: discard\n") + kEndpoint);
    CHECK(c.effectiveEventLog() == Config::EventLog::Discard);
    CHECK(errorOf(std::string("event_log: null\n") + kEndpoint).find("discard") != std::string::npos);
}

TEST_CASE("the event log is off by default once a stream is configured") {
    Config c = parseOk(std::string("stream_redis:\n  addr: redis://localhost\n") + kEndpoint);
    CHECK(c.eventLog == Config::EventLog::Auto);
    CHECK(c.effectiveEventLog() == Config::EventLog::None);
    CHECK(c.streamRedis->options.streamName == "connectionevents");
    c = parseOk(std::string("stream_amqp:\n  addr: amqp://localhost\nevent_log: stdout\n") + kEndpoint);
    CHECK(c.effectiveEventLog() == Config::EventLog::Stdout);
    CHECK(c.streamAmqp->options.user == "guest");
    CHECK(c.streamAmqp->options.password == "guest");
    CHECK(c.streamAmqp->options.port == 5672);
    CHECK(c.streamAmqp->options.vhost == "/");
    CHECK(c.streamAmqp->options.routingKey.empty());
    CHECK(c.streamAmqp->options.heartbeat == 10s); // the sink's default: the URL gives none
}

TEST_CASE("sink sections compare what the config sets (what a reload compares)") {
    auto sections = [](const std::string &yaml) { return parseOk(std::string(kEndpoint) + yaml); };
    const std::string redis = "stream_redis: {addr: 'redis://h:6379/1', stream_name: s, stream_maxlen: 10}\n"
                              "connection_redis_sync: {addr: 'redis://h', key_ttl_s: 60}\n"
                              "stream_amqp: {addr: 'amqp://h', exchange: x, headers: {a: b}}\n";
    Config a = sections(redis), b = sections(redis);
    CHECK(a.streamRedis == b.streamRedis);
    CHECK(a.connectionRedisSync == b.connectionRedisSync);
    CHECK(a.streamAmqp == b.streamAmqp);
    // What the gateway adds at start is not config.
    b.streamRedis->options.node = "n";
    b.connectionRedisSync->options.node = "n";
    b.connectionRedisSync->options.onResync = [](const std::string &, std::size_t) {};
    b.streamAmqp->options.node = "n";
    CHECK(a.streamRedis == b.streamRedis);
    CHECK(a.connectionRedisSync == b.connectionRedisSync);
    CHECK(a.streamAmqp == b.streamAmqp);

    CHECK(sections("stream_redis: {addr: 'redis://h:6379/2', stream_name: s, stream_maxlen: 10}\n").streamRedis !=
          a.streamRedis);
    CHECK(sections("stream_redis: {addr: 'redis://h:6379/1', stream_name: t, stream_maxlen: 10}\n").streamRedis !=
          a.streamRedis);
    CHECK(sections("stream_redis: {addr: 'redis://h:6379/1', stream_name: s, stream_maxlen: 10, timeout_ms: 99}\n")
              .streamRedis != a.streamRedis);
    CHECK(sections("connection_redis_sync: {addr: 'redis://h', key_ttl_s: 61}\n").connectionRedisSync !=
          a.connectionRedisSync);
    CHECK(sections("stream_amqp: {addr: 'amqp://h', exchange: x, headers: {a: c}}\n").streamAmqp != a.streamAmqp);
    CHECK(sections("stream_amqp: {addr: 'amqp://h?heartbeat=3', exchange: x, headers: {a: b}}\n").streamAmqp !=
          a.streamAmqp);
    CHECK(sections("").streamAmqp != a.streamAmqp);
}

TEST_CASE("the original wsgateway config.yml is accepted") {
    // The shape and values of the original project's sample config.
    const std::string yaml = R"(listen_addr: 0.0.0.0:5000
internal_endpoint_access_whitelist:
  - 127.0.0.1/8
  - 192.168.0.0/16
  - ::1/128
  - fc00::/7
connection_redis_sync:
  # Connection state and tags updated here to the hash key connection:<id>
  addr: redis://localhost:6379/0?client_name=wsgateway
stream_redis:
  addr: redis://localhost:6379/0?client_name=wsgatewaystream&pool_size=1000
  stream_name: connectionevents
max_message_size_kb: 1024
endpoints:
  - path: /connect
    set_tags:
      foo: bar
    stream_include_tags:
      - foo
      - group
    max_message_size_kb: 1024
    json_extract_vars:
      command: "command"
      other: "data.actionRef"

  - path: /connect/v2
    set_tags:
      version: 2
    stream_include_tags:
      - version
prometheus:
  enabled: true
)";
    Config c = parseOk(yaml);
    CHECK(c.ws.endpoints.size() == 2);
    CHECK(c.ws.endpoints[1].setTags == wsgw::TagList{{"version", "2"}});
    CHECK(c.streamRedis->options.redis.clientName == "wsgatewaystream");
}

TEST_CASE("the shipped config.yml loads") {
    const char *dir = std::getenv("WSGW_SOURCE_DIR");
    REQUIRE_MESSAGE(dir, "WSGW_SOURCE_DIR is not set (meson sets it)");
    std::string error;
    auto c = loadConfig(std::string(dir) + "/config.yml", &error);
    REQUIRE_MESSAGE(c, error);
    CHECK(c->ws.addr == HostPort{"0.0.0.0", 5000});
    CHECK(c->control.addr == HostPort{"127.0.0.1", 6666});
    CHECK_FALSE(c->streamRedis);
    CHECK_FALSE(c->streamAmqp);
    CHECK_FALSE(c->connectionRedisSync);
    CHECK(c->effectiveEventLog() == Config::EventLog::Stdout);
    REQUIRE(c->findEndpoint("/connect"));
    CHECK(c->findEndpoint("/connect")->setTags == wsgw::TagList{{"group", "default"}});
    CHECK_FALSE(c->findEndpoint("/connect")->events.includeTags.empty());
    REQUIRE(c->findEndpoint("/connect/v2"));
    CHECK_FALSE(c->findEndpoint("/connect/v2")->events.json.empty());
}

TEST_CASE("the shipped config.yml loads with its optional sections uncommented") {
    // Guards the commented-out examples: uncomment every "# key:" block and parse again.
    const char *dir = std::getenv("WSGW_SOURCE_DIR");
    REQUIRE(dir);
    std::FILE *f = std::fopen((std::string(dir) + "/config.yml").c_str(), "rb");
    REQUIRE(f);
    std::string text, out;
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) text.append(buf, n);
    std::fclose(f);
    bool inBlock = false;
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        std::string line = text.substr(start, end - start);
        start = end + 1;
        bool sectionStart =
            line == "# stream_redis:" || line == "# stream_amqp:" || line == "# connection_redis_sync:" ||
            line == "# cluster:" || line == "# stream_http:" || line == "# backends:" ||
            line == "# command_redis:" || line == "# command_amqp:";
        if (sectionStart) inBlock = true;
        else if (inBlock && line.rfind("#   ", 0) != 0) inBlock = false;
        out += (inBlock ? line.substr(2) : line) + "\n";
    }
    std::string error;
    auto c = parseConfig(out, "config.yml (uncommented)", &error);
    REQUIRE_MESSAGE(c, error << "\n" << out);
    CHECK(c->streamRedis);
    CHECK(c->streamAmqp);
    CHECK(c->connectionRedisSync);
    CHECK(c->cluster);
    CHECK(c->commandRedis);
    CHECK(c->commandAmqp);
    REQUIRE(c->streamHttp);
    CHECK(c->streamHttp->options.batchMaxEvents == 100);
    CHECK(c->effectiveEventLog() == Config::EventLog::None);
    CHECK(c->backends.size() == 3);
}

TEST_CASE("cluster: its keys, their bounds, and the checks across keys") {
    Config c = parseOk(std::string(kEndpoint) + "cluster:\n  addr: redis://10.0.0.9:6380/2\n  heartbeat_ms: 250\n"
                                                "  dead_after_ms: 900\n  command_timeout_ms: 1500\n");
    REQUIRE(c.cluster);
    CHECK(c.cluster->options.redis.host == "10.0.0.9");
    CHECK(c.cluster->options.redis.port == 6380);
    CHECK(c.cluster->options.redis.db == 2);
    CHECK(c.cluster->options.heartbeat == std::chrono::milliseconds(250));
    CHECK(c.cluster->options.deadAfter == std::chrono::milliseconds(900));
    CHECK(c.cluster->commandTimeout == std::chrono::milliseconds(1500));
    Config d = parseOk(std::string(kEndpoint) + "cluster: {addr: 'redis://localhost'}\n");
    CHECK(d.cluster->options.heartbeat == std::chrono::milliseconds(1000));
    CHECK(d.cluster->options.deadAfter == std::chrono::milliseconds(3000));
    CHECK(d.cluster->commandTimeout == std::chrono::milliseconds(2000));
    CHECK_FALSE(parseOk(kEndpoint).cluster); // left out: a single node

    CHECK_ERROR(std::string(kEndpoint) + "cluster:\n  heartbeat_ms: 100\n", "t.yml:3:1: ");
    CHECK_ERROR(std::string(kEndpoint) + "cluster:\n  addr: redis://x\n  heartbeat_ms: 5\n", "t.yml:5:17: ");
    CHECK_ERROR(std::string(kEndpoint) + "cluster:\n  addr: redis://x\n  hartbeat_ms: 5\n", "t.yml:5:3: ");
    CHECK_ERROR(std::string(kEndpoint) + "cluster:\n  addr: redis://x\n  heartbeat_ms: 500\n  dead_after_ms: 500\n",
                "t.yml:6:18: cluster.dead_after_ms (500) must be longer than cluster.heartbeat_ms (500)");
    CHECK_ERROR(std::string(kEndpoint) + "connection_redis_sync: {addr: 'redis://a:6379/0'}\n"
                                         "cluster:\n  addr: redis://a:6379/1\n",
                "t.yml:5:9: cluster.addr (redis://a:6379/1) and connection_redis_sync.addr");
    parseOk(std::string(kEndpoint) + "connection_redis_sync: {addr: 'redis://a:6379/1?client_name=m'}\n"
                                     "cluster:\n  addr: redis://a:6379/1\n");
}

TEST_CASE("command_redis: its keys, their defaults and bounds") {
    Config c = parseOk(std::string(kEndpoint) + "command_redis:\n  addr: redis://10.0.0.9:6380/2\n  stream: cmds\n"
                                                "  group: gw\n  claim_idle_ms: 5000\n  dedup_window_s: 60\n"
                                                "  timeout_ms: 700\n");
    REQUIRE(c.commandRedis);
    const wsgw::RedisCommandOptions &o = c.commandRedis->options;
    CHECK(o.redis.host == "10.0.0.9");
    CHECK(o.redis.port == 6380);
    CHECK(o.redis.db == 2);
    CHECK(o.stream == "cmds");
    CHECK(o.group == "gw");
    CHECK(o.claimIdle == std::chrono::milliseconds(5000));
    CHECK(o.dedupWindow == std::chrono::seconds(60));
    CHECK(o.redis.commandTimeout == std::chrono::milliseconds(700));
    Config d = parseOk(std::string(kEndpoint) + "command_redis: {addr: 'redis://localhost'}\n");
    REQUIRE(d.commandRedis);
    CHECK(d.commandRedis->options.stream == "wsgw:commands");
    CHECK(d.commandRedis->options.group == "wsgw");
    CHECK(d.commandRedis->options.claimIdle == std::chrono::milliseconds(30000));
    CHECK(d.commandRedis->options.dedupWindow == std::chrono::seconds(300));
    CHECK_FALSE(parseOk(kEndpoint).commandRedis); // left out: commands over HTTP only

    CHECK_ERROR(std::string(kEndpoint) + "command_redis:\n  stream: x\n", "t.yml:3:1: ");
    CHECK_ERROR(std::string(kEndpoint) + "command_redis:\n  addr: redis://x\n  claim_idle_ms: 5\n", "t.yml:5:18: ");
    CHECK_ERROR(std::string(kEndpoint) + "command_redis:\n  addr: redis://x\n  stream: ''\n", "t.yml:5:11: ");
    CHECK_ERROR(std::string(kEndpoint) + "command_redis:\n  addr: redis://x\n  gruop: a\n", "t.yml:5:3: ");
    CHECK_ERROR(std::string(kEndpoint) + "command_redis:\n  addr: ftp://x\n", "t.yml:4:9: ");
}

TEST_CASE("command_amqp: its keys, their defaults and bounds") {
    Config c = parseOk(std::string(kEndpoint) + "command_amqp:\n  addr: amqp://u:p@10.0.0.9:5673/v?heartbeat=3\n"
                                                "  queue: cmds\n  prefetch: 7\n  dedup_window_s: 60\n");
    REQUIRE(c.commandAmqp);
    const wsgw::AmqpCommandOptions &o = c.commandAmqp->options;
    CHECK(o.broker.host == "10.0.0.9");
    CHECK(o.broker.port == 5673);
    CHECK(o.broker.user == "u");
    CHECK(o.broker.password == "p");
    CHECK(o.broker.vhost == "v");
    CHECK(o.broker.heartbeat == std::chrono::seconds(3));
    CHECK(o.queue == "cmds");
    CHECK(o.prefetch == 7);
    CHECK(o.dedupWindow == std::chrono::seconds(60));
    CHECK_FALSE(o.dedupRedis); // the gateway picks the Redis, not the config
    Config d = parseOk(std::string(kEndpoint) + "command_amqp: {addr: 'amqp://localhost'}\n");
    REQUIRE(d.commandAmqp);
    CHECK(d.commandAmqp->options.queue == "wsgw.commands");
    CHECK(d.commandAmqp->options.prefetch == 100);
    CHECK(d.commandAmqp->options.dedupWindow == std::chrono::seconds(300));
    CHECK_FALSE(parseOk(kEndpoint).commandAmqp);
    CHECK(c.commandAmqp != d.commandAmqp);

    CHECK_ERROR(std::string(kEndpoint) + "command_amqp:\n  queue: x\n", "t.yml:3:1: ");
    CHECK_ERROR(std::string(kEndpoint) + "command_amqp:\n  addr: amqp://x\n  prefetch: 0\n", "t.yml:5:13: ");
    CHECK_ERROR(std::string(kEndpoint) + "command_amqp:\n  addr: amqp://x\n  queue: ''\n", "t.yml:5:10: ");
    CHECK_ERROR(std::string(kEndpoint) + "command_amqp:\n  addr: amqp://x\n  queue: " + std::string(256, 'q') + "\n",
                "t.yml:5:10: command_amqp.queue: a queue name has at most 255 bytes");
    CHECK_ERROR(std::string(kEndpoint) + "command_amqp:\n  addr: amqp://x\n  qeueu: a\n", "t.yml:5:3: ");
    CHECK_ERROR(std::string(kEndpoint) + "command_amqp:\n  addr: redis://x\n", "t.yml:4:9: ");
}

TEST_CASE("loadConfig reports an unreadable file") {
    std::string error;
    CHECK_FALSE(loadConfig("/nonexistent/wsgw.yml", &error));
    CHECK(error == "/nonexistent/wsgw.yml: cannot read: No such file or directory");
    CHECK_FALSE(loadConfig("/", &error));
    CHECK(error == "/: cannot read: Is a directory");
}

// ---------------------------------------------------------------------------------------------
// Errors: FILE:LINE:COL of the offending node, then what to do

TEST_CASE("empty and endpoint-less configs") {
    CHECK_ERROR("", "t.yml:1:1: no endpoints configured: add an 'endpoints' list");
    CHECK_ERROR("# only a comment\n", "t.yml:1:1: no endpoints configured");
    CHECK_ERROR("threads: 2\n", "t.yml:1:1: no endpoints configured");
    CHECK_ERROR("threads: 2\nendpoints:\n", "t.yml:2:1: no endpoints configured");
    CHECK_ERROR("threads: 2\nendpoints: []\n", "t.yml:2:12: no endpoints configured");
}

TEST_CASE("malformed YAML reports the parser's position") {
    CHECK_ERROR("listen_addr: [1\n", "t.yml:2:1: invalid YAML: end of sequence flow not found");
    CHECK_ERROR("endpoints:\n  - path: /a\n   threads: 2: 3\n",
                "t.yml:3:4: invalid YAML: end of sequence not found");
    CHECK_ERROR(std::string(kEndpoint) + "---\nthreads: 1\n",
                "t.yml:4:1: more than one YAML document ('---'): a config file holds one");
    CHECK(parseOk(std::string("---\n") + kEndpoint + "...\n").ws.endpoints.size() == 1);
    CHECK(parseOk(std::string("---\n---\n") + kEndpoint + "---\n").ws.endpoints.size() == 1);
    CHECK_ERROR("- a\n- b\n",
                "t.yml:1:1: expected settings as 'key: value' lines at the top level, got a list");
}

TEST_CASE("unknown keys at any level") {
    CHECK_ERROR(std::string("listen_adr: 0.0.0.0:5000\n") + kEndpoint,
                "t.yml:1:1: unknown key 'listen_adr' at the top level: did you mean 'listen_addr'?");
    CHECK_ERROR(
        std::string("colour: red\n") + kEndpoint,
        "t.yml:1:1: unknown key 'colour' at the top level: known keys are listen_addr, control_addr,");
    CHECK_ERROR("endpoints:\n  - path: /a\n    colour: red\n",
                "t.yml:3:5: unknown key 'colour' in endpoints[0]: known keys are path, set_tags, "
                "stream_include_tags, max_message_size_kb, json_extract_vars, compression");
    CHECK_ERROR("endpoints:\n  - path: /a\n  - path: /b\n    set_tag: {a: b}\n",
                "t.yml:4:5: unknown key 'set_tag' in endpoints[1]: did you mean 'set_tags'?");
    CHECK_ERROR(std::string("stream_redis:\n  addr: redis://x\n  name: y\n") + kEndpoint,
                "t.yml:3:3: unknown key 'name' in stream_redis");
    CHECK_ERROR(std::string("stream_amqp:\n  addr: amqp://x\n  routingkey: y\n") + kEndpoint,
                "t.yml:3:3: unknown key 'routingkey' in stream_amqp: did you mean 'routing_key'?");
    CHECK_ERROR(std::string("connection_redis_sync: {addr: redis://x, db: 1}\n") + kEndpoint,
                "t.yml:1:42: unknown key 'db' in connection_redis_sync");
    CHECK_ERROR(std::string("prometheus:\n  enable: true\n") + kEndpoint,
                "t.yml:2:3: unknown key 'enable' in prometheus: did you mean 'enabled'?");
}

TEST_CASE("duplicate keys") {
    CHECK_ERROR(std::string("threads: 1\nthreads: 2\n") + kEndpoint,
                "t.yml:2:1: duplicate key 'threads' (first given on line 1): remove one");
    CHECK_ERROR("endpoints:\n  - path: /a\n    set_tags:\n      g: 1\n      g: 2\n",
                "t.yml:5:7: endpoints[0].set_tags: duplicate key 'g' (first given on line 4)");
    CHECK_ERROR("endpoints:\n  - path: /a\n    path: /b\n",
                "t.yml:3:5: endpoints[0]: duplicate key 'path' (first given on line 2)");
    CHECK_ERROR("endpoints:\n  - path: /a\n    json_extract_vars: {a: x, a: y}\n",
                "t.yml:3:31: endpoints[0].json_extract_vars: duplicate key 'a' (first given on line 3)");
    CHECK_ERROR(std::string(kEndpoint) + "endpoints:\n  - path: /b\n",
                "t.yml:3:1: duplicate key 'endpoints' (first given on line 1)");
}

TEST_CASE("wrong types") {
    CHECK_ERROR(std::string("listen_addr: {host: x}\n") + kEndpoint,
                "t.yml:1:14: listen_addr: expected HOST:PORT, e.g. 0.0.0.0:5000, got a map");
    CHECK_ERROR(std::string("listen_addr:\n") + kEndpoint,
                "t.yml:1:1: listen_addr: missing value: expected HOST:PORT");
    CHECK_ERROR(std::string("listen_addr: \"\"\n") + kEndpoint, "t.yml:1:14: listen_addr: must not be empty");
    CHECK_ERROR(std::string("threads: [1]\n") + kEndpoint,
                "t.yml:1:10: threads: expected a whole number 0..256, got a list");
    CHECK_ERROR(std::string("threads: -1\n") + kEndpoint,
                "t.yml:1:10: threads: expected a whole number 0..256, got '-1'");
    CHECK_ERROR(std::string("threads: many\n") + kEndpoint,
                "t.yml:1:10: threads: expected a whole number 0..256, got 'many'");
    CHECK_ERROR(std::string("max_message_size_kb: 1.5\n") + kEndpoint,
                "t.yml:1:22: max_message_size_kb: expected a whole number 1..1048576, got '1.5'");
    CHECK_ERROR(std::string("max_outbound_kb: 99999999999999999999999\n") + kEndpoint,
                "t.yml:1:18: max_outbound_kb: must be at most 1048576, got 99999999999999999999999");
    CHECK_ERROR(std::string("prometheus: {enabled: maybe}\n") + kEndpoint,
                "t.yml:1:23: prometheus.enabled: expected true or false, got 'maybe'");
    CHECK_ERROR(std::string("prometheus: true\n") + kEndpoint,
                "t.yml:1:13: prometheus: expected a map with 'enabled' and 'legacy_names', got a value");
    CHECK_ERROR(std::string("prometheus: {legacy_names: no_thanks}\n") + kEndpoint,
                "t.yml:1:28: prometheus.legacy_names: expected true or false, got 'no_thanks'");
    CHECK_ERROR(std::string("stream_redis: redis://localhost\n") + kEndpoint,
                "t.yml:1:15: stream_redis: expected a map with 'addr' and 'stream_name', got a value");
    CHECK_ERROR(std::string("internal_endpoint_access_whitelist: 10.0.0.0/8\n") + kEndpoint,
                "t.yml:1:37: internal_endpoint_access_whitelist: expected a list of networks");
    CHECK_ERROR(std::string("internal_endpoint_access_whitelist:\n  - [10.0.0.0/8]\n") + kEndpoint,
                "t.yml:2:5: internal_endpoint_access_whitelist[0]: expected a network such as 10.0.0.0/8, "
                "got a list");
    CHECK_ERROR("endpoints: {path: /a}\n", "t.yml:1:12: endpoints: expected a list of endpoints");
    CHECK_ERROR("endpoints:\n  - /a\n",
                "t.yml:2:5: endpoints[0]: expected an endpoint ('path: /connect' and its "
                "settings), got a value");
    CHECK_ERROR("endpoints:\n  - path: /a\n    set_tags: [group]\n",
                "t.yml:3:15: endpoints[0].set_tags: expected a map of tag: value, got a list");
    CHECK_ERROR("endpoints:\n  - path: /a\n    set_tags: {group: {x: 1}}\n",
                "t.yml:3:23: endpoints[0].set_tags.group: expected a tag value, got a map");
    CHECK_ERROR("endpoints:\n  - path: /a\n    set_tags: {group: \"\"}\n",
                "t.yml:3:23: endpoints[0].set_tags.group: must not be empty");
    CHECK_ERROR("endpoints:\n  - path: /a\n    stream_include_tags: group\n",
                "t.yml:3:26: endpoints[0].stream_include_tags: expected a list of tag names, got a value");
    CHECK_ERROR("endpoints:\n  - path: /a\n    stream_include_tags: [a, {b: c}]\n",
                "t.yml:3:30: endpoints[0].stream_include_tags[1]: expected a tag name, got a map");
    CHECK_ERROR("endpoints:\n  - path: /a\n    compression: 1\n",
                "t.yml:3:18: endpoints[0].compression: expected true or false, got '1'");
    CHECK_ERROR("endpoints:\n  - path: /a\n    max_message_size_kb: -5\n",
                "t.yml:3:26: endpoints[0].max_message_size_kb: expected a whole number 1..1048576, got '-5'");
    CHECK_ERROR(std::string("stream_amqp:\n  addr: amqp://x\n  headers: [a]\n") + kEndpoint,
                "t.yml:3:12: stream_amqp.headers: expected a map of header: value, got a list");
    CHECK_ERROR(std::string("stream_amqp:\n  addr: amqp://x\n  headers:\n    a:\n") + kEndpoint,
                "t.yml:4:5: stream_amqp.headers.a: missing value: expected a header value");
    CHECK_ERROR("endpoints:\n  - path: /a\n    ? [x]\n    : y\n",
                "t.yml:3:7: endpoints[0]: a key must be a name");
}

TEST_CASE("ranges and zero sizes") {
    CHECK_ERROR(std::string("threads: 257\n") + kEndpoint,
                "t.yml:1:10: threads: must be at most 256, got 257");
    CHECK(parseOk(std::string("threads: 256\n") + kEndpoint).threads == 256);
    CHECK_ERROR(std::string("max_message_size_kb: 0\n") + kEndpoint,
                "t.yml:1:22: max_message_size_kb: must be at least 1, got 0");
    CHECK_ERROR(std::string("max_outbound_kb: 0\n") + kEndpoint,
                "t.yml:1:18: max_outbound_kb: must be at least 1, got 0");
    CHECK_ERROR("endpoints:\n  - path: /a\n    max_message_size_kb: 0\n",
                "t.yml:3:26: endpoints[0].max_message_size_kb: must be at least 1, got 0");
    CHECK_ERROR(std::string("idle_timeout_s: 86401\n") + kEndpoint,
                "t.yml:1:17: idle_timeout_s: must be at most 86400, got 86401");
}

TEST_CASE("addresses") {
    CHECK_ERROR(std::string("listen_addr: 0.0.0.0:70000\n") + kEndpoint,
                "t.yml:1:14: listen_addr: invalid port '70000': use 1..65535");
    CHECK_ERROR(std::string("listen_addr: 0.0.0.0:0\n") + kEndpoint,
                "t.yml:1:14: listen_addr: invalid port '0': use 1..65535");
    CHECK_ERROR(std::string("control_addr: 5000\n") + kEndpoint,
                "t.yml:1:15: control_addr: missing port in '5000': write HOST:PORT, e.g. 0.0.0.0:5000");
    CHECK_ERROR(std::string("control_addr: ::1:6666\n") + kEndpoint,
                "t.yml:1:15: control_addr: an IPv6 address must be in brackets: write [::1]:PORT");
    CHECK_ERROR(
        std::string("listen_addr: 127.0.0.1:6666\n") + kEndpoint,
        "t.yml:1:14: listen_addr: listen_addr 127.0.0.1:6666 and control_addr 127.0.0.1:6666 overlap");
    CHECK_ERROR(std::string("listen_addr: :7000\ncontrol_addr: 127.0.0.1:7000\n") + kEndpoint,
                "t.yml:2:15: control_addr: listen_addr :7000 and control_addr 127.0.0.1:7000 overlap");
    CHECK(parseOk(std::string("listen_addr: 127.0.0.1:7000\ncontrol_addr: 127.0.0.2:7000\n") + kEndpoint)
              .control.addr.port == 7000);
}

TEST_CASE("invalid CIDR") {
    CHECK_ERROR(
        std::string("internal_endpoint_access_whitelist:\n  - 10.0.0.0/8\n  - 10.0.0.0/33\n") + kEndpoint,
        "t.yml:3:5: internal_endpoint_access_whitelist[1]: invalid network '10.0.0.0/33': invalid prefix "
        "length '33': use 0..32 for IPv4");
    CHECK_ERROR(
        std::string("internal_endpoint_access_whitelist: [localhost]\n") + kEndpoint,
        "t.yml:1:38: internal_endpoint_access_whitelist[0]: invalid network 'localhost': 'localhost' is "
        "not an IP address");
}

TEST_CASE("invalid Redis and AMQP URLs") {
    CHECK_ERROR(
        std::string("connection_redis_sync:\n  addr: http://localhost\n") + kEndpoint,
        "t.yml:2:9: connection_redis_sync.addr: invalid Redis URL 'http://localhost': unsupported scheme "
        "'http': use redis://, rediss:// or unix://");
    CHECK_ERROR(
        std::string("stream_redis:\n  addr: redis://localhost:99999\n") + kEndpoint,
        "t.yml:2:9: stream_redis.addr: invalid Redis URL 'redis://localhost:99999': invalid port '99999'");
    CHECK_ERROR(std::string("stream_redis:\n  stream_name: x\n") + kEndpoint,
                "t.yml:1:1: stream_redis: missing 'addr', e.g. 'addr: redis://localhost:6379/0'");
    CHECK_ERROR(std::string("connection_redis_sync: {}\n") + kEndpoint,
                "t.yml:1:1: connection_redis_sync: missing 'addr'");
    CHECK_ERROR(std::string("stream_amqp:\n  addr: http://mq\n") + kEndpoint,
                "t.yml:2:9: stream_amqp.addr: invalid AMQP URL 'http://mq': unsupported scheme 'http': use "
                "amqp:// or amqps://");
    CHECK_ERROR(std::string("stream_amqp:\n  addr: amqp://guest:guest@:5672/\n") + kEndpoint,
                "t.yml:2:9: stream_amqp.addr: invalid AMQP URL 'amqp://guest:guest@:5672/': missing host");
    CHECK_ERROR(std::string("stream_amqp:\n  exchange: x\n") + kEndpoint,
                "t.yml:1:1: stream_amqp: missing 'addr'");
}

TEST_CASE("invalid templates point into the string") {
    // Plain scalar: the value starts at column 16; the placeholder is its 8th character.
    CHECK_ERROR(std::string("stream_redis:\n  addr: redis://x\n  stream_name: events.{tag.group\n") +
                    kEndpoint,
                "t.yml:3:23: stream_redis.stream_name: invalid template 'events.{tag.group': unterminated "
                "placeholder: missing '}'");
    // Quoted: one more for the quote.
    CHECK_ERROR(std::string("stream_redis:\n  addr: redis://x\n  stream_name: \"events.{tag.group\"\n") +
                    kEndpoint,
                "t.yml:3:24: stream_redis.stream_name: invalid template");
    CHECK_ERROR(std::string("stream_amqp:\n  addr: amqp://x\n  routing_key: 'a.{json.bad-name}'\n") +
                    kEndpoint,
                "t.yml:3:19: stream_amqp.routing_key: invalid template 'a.{json.bad-name}': invalid name "
                "'bad-name' in placeholder: use letters, digits and '_'");
    // An escape shifts columns: the scalar's own position, and the column within the string.
    CHECK_ERROR(
        std::string("stream_redis:\n  addr: redis://x\n  stream_name: \"a\\tb{tag.x\"\n") + kEndpoint,
        "t.yml:3:16: stream_redis.stream_name: invalid template 'a\tb{tag.x': unterminated placeholder at "
        "column 4");
    CHECK_ERROR(std::string("stream_redis:\n  addr: redis://x\n  stream_name: \"\"\n") + kEndpoint,
                "t.yml:3:16: stream_redis.stream_name: must not be empty");
}

TEST_CASE("invalid json_extract_vars") {
    CHECK_ERROR(
        "endpoints:\n  - path: /a\n    json_extract_vars:\n      bad-name: data.x\n",
        "t.yml:4:7: endpoints[0].json_extract_vars: invalid variable name 'bad-name': use letters, digits "
        "and '_'");
    CHECK_ERROR(
        "endpoints:\n  - path: /a\n    json_extract_vars:\n      cmd: data..x\n",
        "t.yml:4:17: endpoints[0].json_extract_vars.cmd: variable 'cmd': empty segment in path 'data..x'");
    CHECK_ERROR(
        "endpoints:\n  - path: /a\n    json_extract_vars:\n      cmd: data.\n",
        "t.yml:4:12: endpoints[0].json_extract_vars.cmd: variable 'cmd': path 'data.' is empty or ends "
        "with '.'");
    CHECK_ERROR("endpoints:\n  - path: /a\n    json_extract_vars:\n      cmd:\n",
                "t.yml:4:7: endpoints[0].json_extract_vars.cmd: missing value");
}

TEST_CASE("endpoint paths") {
    CHECK_ERROR("endpoints:\n  - path: connect\n",
                "t.yml:2:11: endpoints[0].path: must start with '/', got 'connect'");
    CHECK_ERROR("endpoints:\n  - path: /a\n  - path: /b\n  - path: /a\n",
                "t.yml:4:11: endpoints[2].path: duplicate endpoint path '/a' (also endpoints[0] on line 2)");
    CHECK_ERROR("endpoints:\n  - set_tags: {a: b}\n",
                "t.yml:2:5: endpoints[0]: missing 'path', e.g. 'path: /connect'");
    CHECK_ERROR("endpoints:\n  - path: /a?b=1\n", "t.yml:2:11: endpoints[0].path: a path has no query");
}

TEST_CASE("event_log and log_level values") {
    CHECK_ERROR(std::string("event_log: file\n") + kEndpoint,
                "t.yml:1:12: event_log: unknown value 'file': use one of auto, stdout, stderr, none");
    CHECK_ERROR(
        std::string("log_level: verbose\n") + kEndpoint,
        "t.yml:1:12: log_level: unknown value 'verbose': use one of trace, debug, info, warn, error, off");
    CHECK(parseOk(std::string("event_log: none\nlog_level: off\n") + kEndpoint).eventLog ==
          Config::EventLog::None);
}

TEST_CASE("log_format: text (the default) or json") {
    CHECK(parseOk(kEndpoint).logFormat == wsgw::daemon::LogFormat::Text);
    CHECK(parseOk(std::string("log_format: json\n") + kEndpoint).logFormat == wsgw::daemon::LogFormat::Json);
    CHECK(parseOk(std::string("log_format: text\n") + kEndpoint).logFormat == wsgw::daemon::LogFormat::Text);
    CHECK_ERROR(std::string("log_format: logfmt\n") + kEndpoint,
                "t.yml:1:13: log_format: unknown value 'logfmt': use one of text, json");
}

TEST_CASE("prometheus.legacy_names: true by default") {
    CHECK(parseOk(kEndpoint).control.legacyMetricNames);
    CHECK(parseOk(std::string("prometheus: {enabled: true}\n") + kEndpoint).control.legacyMetricNames);
    CHECK_FALSE(parseOk(std::string("prometheus: {legacy_names: false}\n") + kEndpoint).control.legacyMetricNames);
}

TEST_CASE("an unnamed file is called <config>") {
    std::string error;
    CHECK_FALSE(parseConfig("", "", &error));
    CHECK(error.rfind("<config>:1:1: no endpoints configured", 0) == 0);
    CHECK_FALSE(parseConfig("", "x.yml")); // no error out-parameter: fine
}

// ---------------------------------------------------------------------------------------------
// Cidr

TEST_CASE("Cidr::parse") {
    CHECK(net("127.0.0.1/8").toString() == "127.0.0.0/8");
    CHECK(net("10.1.2.3/32").toString() == "10.1.2.3/32");
    CHECK(net("10.1.2.3").toString() == "10.1.2.3/32");
    CHECK(net("0.0.0.0/0").toString() == "0.0.0.0/0");
    CHECK(net("::1/128").toString() == "::1/128");
    CHECK(net("2001:db8::1234/32").toString() == "2001:db8::/32");
    CHECK(net("fe80::1").toString() == "fe80::1/128");
    CHECK(net("10.255.255.255/13").toString() == "10.248.0.0/13");
    std::string error;
    CHECK_FALSE(Cidr::parse("", &error));
    CHECK(error == "'' is not an IP address");
    CHECK_FALSE(Cidr::parse("10.0.0.0/", &error));
    CHECK(error == "invalid prefix length '': use 0..32 for IPv4");
    CHECK_FALSE(Cidr::parse("10.0.0.0/-1", &error));
    CHECK_FALSE(Cidr::parse("10.0.0.0/8/8", &error));
    CHECK_FALSE(Cidr::parse("::/129", &error));
    CHECK(error == "invalid prefix length '129': use 0..128 for IPv6");
    CHECK_FALSE(Cidr::parse("256.0.0.0/8", &error));
    CHECK(error == "'256.0.0.0' is not an IP address");
    CHECK_FALSE(Cidr::parse("10.0.0.0 /8", &error));
    CHECK_FALSE(Cidr::parse("10.0.0.0/08", &error));
}

TEST_CASE("Cidr::contains") {
    SUBCASE("IPv4") {
        Cidr n = net("127.0.0.1/8");
        CHECK(n.contains("127.0.0.1"));
        CHECK(n.contains("127.255.255.255"));
        CHECK_FALSE(n.contains("128.0.0.1"));
        CHECK_FALSE(n.contains("::1"));
        CHECK_FALSE(n.contains("not an ip"));
        CHECK_FALSE(n.contains(""));
        Cidr odd = net("192.168.4.0/22");
        CHECK(odd.contains("192.168.7.255"));
        CHECK_FALSE(odd.contains("192.168.8.0"));
        CHECK_FALSE(odd.contains("192.168.3.255"));
    }
    SUBCASE("IPv4-mapped IPv6 peers count as IPv4") {
        Cidr n = net("127.0.0.1/8");
        CHECK(n.contains("::ffff:127.0.0.1"));
        CHECK(n.contains("::ffff:7f00:2"));
        CHECK_FALSE(n.contains("::ffff:10.0.0.1"));
        CHECK_FALSE(net("::1/128").contains("::ffff:127.0.0.1"));
        // ...and an IPv6 network of mapped addresses holds the IPv4 ones.
        Cidr mapped = net("::ffff:0:0/96");
        CHECK(mapped.contains("1.2.3.4"));
        CHECK(mapped.contains("::ffff:1.2.3.4"));
        CHECK_FALSE(mapped.contains("::1"));
    }
    SUBCASE("IPv6") {
        Cidr n = net("fc00::/7");
        CHECK(n.contains("fc00::1"));
        CHECK(n.contains("fdff:ffff::1"));
        CHECK_FALSE(n.contains("fe00::1"));
        CHECK_FALSE(n.contains("10.0.0.1"));
        CHECK(net("::1/128").contains("::1"));
        CHECK(net("::1/128").contains("[::1]"));
        CHECK(net("fe80::/10").contains("fe80::1%eth0"));
        CHECK_FALSE(net("::1/128").contains("::2"));
    }
    SUBCASE("prefix 0 holds everything of its family") {
        CHECK(net("0.0.0.0/0").contains("1.2.3.4"));
        CHECK(net("0.0.0.0/0").contains("255.255.255.255"));
        CHECK(net("0.0.0.0/0").contains("::ffff:8.8.8.8"));
        CHECK_FALSE(net("0.0.0.0/0").contains("2001:db8::1"));
        CHECK(net("::/0").contains("2001:db8::1"));
        CHECK(net("::/0").contains("1.2.3.4"));
    }
    SUBCASE("/32 and a bare address hold one host") {
        CHECK(net("10.0.0.5/32").contains("10.0.0.5"));
        CHECK_FALSE(net("10.0.0.5/32").contains("10.0.0.4"));
        CHECK(net("10.0.0.5").contains("10.0.0.5"));
        CHECK_FALSE(net("10.0.0.5").contains("10.0.0.6"));
        CHECK(net("2001:db8::5").contains("2001:db8::5"));
        CHECK_FALSE(net("2001:db8::5").contains("2001:db8::6"));
    }
    SUBCASE("socket addresses") {
        sockaddr_in in{};
        in.sin_family = AF_INET;
        inet_pton(AF_INET, "127.0.0.7", &in.sin_addr);
        sockaddr_in6 in6{};
        in6.sin6_family = AF_INET6;
        inet_pton(AF_INET6, "::ffff:127.0.0.7", &in6.sin6_addr);
        sockaddr_in6 lo6{};
        lo6.sin6_family = AF_INET6;
        inet_pton(AF_INET6, "::1", &lo6.sin6_addr);
        sockaddr unix{};
        unix.sa_family = AF_UNIX;
        Cidr v4 = net("127.0.0.1/8"), v6 = net("::1/128");
        CHECK(v4.contains(reinterpret_cast<const sockaddr *>(&in)));
        CHECK(v4.contains(reinterpret_cast<const sockaddr *>(&in6)));
        CHECK_FALSE(v4.contains(reinterpret_cast<const sockaddr *>(&lo6)));
        CHECK(v6.contains(reinterpret_cast<const sockaddr *>(&lo6)));
        CHECK_FALSE(v6.contains(reinterpret_cast<const sockaddr *>(&in)));
        CHECK_FALSE(v4.contains(&unix));
        CHECK_FALSE(v4.contains(static_cast<const sockaddr *>(nullptr)));
    }
}

// ---------------------------------------------------------------------------------------------
// RedisAddress

TEST_CASE("RedisAddress::parse") {
    SUBCASE("host only: default port and db") {
        auto a = RedisAddress::parse("redis://localhost");
        REQUIRE(a);
        CHECK(a->host == "localhost");
        CHECK(a->port == 6379);
        CHECK(a->db == 0);
        CHECK(a->unixPath.empty());
        CHECK_FALSE(a->tls);
        CHECK(a->user.empty());
        CHECK(a->password.empty());
        CHECK(a->clientName.empty());
        CHECK(a->url == "redis://localhost");
        CHECK(RedisAddress::parse("redis://localhost/")->db == 0);
    }
    SUBCASE("user, percent-encoded password, port, db, client_name") {
        auto a = RedisAddress::parse("redis://app:p%40ss%3Aw%2Fd+x@10.0.0.2:6380/3?client_name=my%20gw");
        REQUIRE(a);
        CHECK(a->user == "app");
        CHECK(a->password == "p@ss:w/d+x");
        CHECK(a->host == "10.0.0.2");
        CHECK(a->port == 6380);
        CHECK(a->db == 3);
        CHECK(a->clientName == "my gw");
    }
    SUBCASE("password only, an unescaped '@' in it, IPv6 host, TLS") {
        auto a = RedisAddress::parse("rediss://:se@cret@[::1]:7000/1");
        REQUIRE(a);
        CHECK(a->user.empty());
        CHECK(a->password == "se@cret");
        CHECK(a->host == "::1");
        CHECK(a->port == 7000);
        CHECK(a->db == 1);
        CHECK(a->tls);
        CHECK(RedisAddress::parse("REDIS://h")->host == "h");
    }
    SUBCASE("unix socket") {
        auto a = RedisAddress::parse("unix:///run/redis/redis.sock?db=4&client_name=gw");
        REQUIRE(a);
        CHECK(a->host.empty());
        CHECK(a->unixPath == "/run/redis/redis.sock");
        CHECK(a->db == 4);
        CHECK(a->clientName == "gw");
        auto b = RedisAddress::parse("unix://u:p%40@/tmp/r.sock");
        REQUIRE(b);
        CHECK(b->unixPath == "/tmp/r.sock");
        CHECK(b->user == "u");
        CHECK(b->password == "p@");
        CHECK(b->db == 0);
    }
    SUBCASE("go-redis options are kept, unknown ones rejected") {
        auto a = RedisAddress::parse("redis://h/0?pool_size=1000&dial_timeout=5s&&");
        REQUIRE(a);
        CHECK(a->options ==
              std::map<std::string, std::string>{{"dial_timeout", "5s"}, {"pool_size", "1000"}});
        CHECK(redisError("redis://h/0?colour=red") ==
              "unknown option 'colour' (wsgw uses db and client_name)");
    }
    SUBCASE("errors") {
        CHECK(redisError("http://h") == "unsupported scheme 'http': use redis://, rediss:// or unix://");
        CHECK(redisError("localhost:6379").rfind("missing scheme: write redis://", 0) == 0);
        CHECK(redisError("redis://h:0") == "invalid port '0': use 1..65535");
        CHECK(redisError("redis://h:65536") == "invalid port '65536': use 1..65535");
        CHECK(redisError("redis://h:port") == "invalid port 'port': use 1..65535");
        CHECK(redisError("redis://h:") == "invalid port '': use 1..65535");
        CHECK(redisError("redis://") == "missing host");
        CHECK(redisError("redis://:pw@:6379") == "missing host");
        CHECK(redisError("redis://::1:6379") == "an IPv6 address must be in brackets, e.g. [::1]:6379");
        CHECK(redisError("redis://[::1:6379") == "missing ']' after the IPv6 address");
        CHECK(redisError("redis://[nope]:6379") == "'nope' is not an IPv6 address");
        CHECK(redisError("redis://h/x") == "invalid database 'x' in the path: write /N, e.g. /0");
        CHECK(redisError("redis://h/-1") == "invalid database '-1' in the path: write /N, e.g. /0");
        CHECK(redisError("redis://h?db=x") == "invalid db 'x': use a number, e.g. db=0");
        CHECK(redisError("redis://u:p%4@h") == "malformed %-escape in the password");
        CHECK(redisError("redis://h#frag") == "unexpected '#' (percent-encode it as %23)");
        CHECK(redisError("unix://") == "missing socket path: write unix:///PATH/TO/redis.sock");
        CHECK(redisError("unix://relative.sock") ==
              "a unix socket needs an absolute path: write unix:///PATH/TO/redis.sock");
    }
}

TEST_CASE("AmqpAddress::parse") {
    auto a = AmqpAddress::parse("amqp://localhost");
    REQUIRE(a);
    CHECK(a->host == "localhost");
    CHECK(a->port == 5672);
    CHECK_FALSE(a->tls);
    CHECK(a->user == "guest");
    CHECK(a->password == "guest");
    CHECK(a->vhost == "/");
    auto b = AmqpAddress::parse("amqps://app:s%40cret@[fd00::5]:5999/%2f");
    REQUIRE(b);
    CHECK(b->tls);
    CHECK(b->host == "fd00::5");
    CHECK(b->port == 5999);
    CHECK(b->user == "app");
    CHECK(b->password == "s@cret");
    CHECK(b->vhost == "/");
    CHECK(AmqpAddress::parse("amqp://h/")->vhost == "/");
    CHECK(AmqpAddress::parse("amqp://h/prod")->vhost == "prod");
    CHECK(AmqpAddress::parse("amqp://h/prod?heartbeat=10")->vhost == "prod");
    std::string error;
    CHECK_FALSE(AmqpAddress::parse("redis://h", &error));
    CHECK(error == "unsupported scheme 'redis': use amqp:// or amqps://");
    CHECK_FALSE(AmqpAddress::parse("amqp://h:0", &error));
    CHECK(error == "invalid port '0': use 1..65535");
    CHECK_FALSE(AmqpAddress::parse("amqp://", &error));
    CHECK(error == "missing host");
    CHECK_FALSE(AmqpAddress::parse("mq.local:5672", &error));
    CHECK(error == "missing scheme: write amqp://USER:PASSWORD@HOST:PORT/VHOST or amqps://...");
    CHECK_FALSE(AmqpAddress::parse("amqp://h/#x", &error));
    CHECK(error == "unexpected '#' (percent-encode it as %23)");
}

// ---------------------------------------------------------------------------------------------
// HostPort

TEST_CASE("HostPort::parse") {
    auto check = [](const char *text, const char *host, std::uint16_t port) {
        std::string error;
        auto hp = HostPort::parse(text, &error);
        REQUIRE_MESSAGE(hp, text << ": " << error);
        CHECK(hp->host == host);
        CHECK(hp->port == port);
    };
    check("0.0.0.0:5000", "0.0.0.0", 5000);
    check("127.0.0.1:6666", "127.0.0.1", 6666);
    check("localhost:5000", "localhost", 5000);
    check("gw-1.example.com:443", "gw-1.example.com", 443);
    check("[::1]:5000", "::1", 5000);
    check("[::]:65535", "::", 65535);
    check(":5000", "", 5000);
    check("host:1", "host", 1);
    CHECK(HostPort::parse("[::1]:5000")->toString() == "[::1]:5000");
    CHECK(HostPort::parse(":5000")->toString() == ":5000");
    CHECK(HostPort{"0.0.0.0", 5000}.toString() == "0.0.0.0:5000");

    auto bad = [](const char *text) {
        std::string error;
        CHECK_FALSE_MESSAGE(HostPort::parse(text, &error), text);
        return error;
    };
    CHECK(bad("") == "empty address: write HOST:PORT, e.g. 0.0.0.0:5000");
    CHECK(bad("5000") == "missing port in '5000': write HOST:PORT, e.g. 0.0.0.0:5000");
    CHECK(bad("localhost") == "missing port in 'localhost': write HOST:PORT, e.g. 0.0.0.0:5000");
    CHECK(bad("localhost:") == "invalid port '': use 1..65535");
    CHECK(bad("localhost:0") == "invalid port '0': use 1..65535");
    CHECK(bad("localhost:65536") == "invalid port '65536': use 1..65535");
    CHECK(bad("localhost:-1") == "invalid port '-1': use 1..65535");
    CHECK(bad("localhost:http") == "invalid port 'http': use 1..65535");
    CHECK(bad("::1:5000") == "an IPv6 address must be in brackets: write [::1]:PORT");
    CHECK(bad("[::1]") == "missing port in '[::1]': write [IPV6]:PORT, e.g. [::1]:5000");
    CHECK(bad("[::1]5000") == "missing port in '[::1]5000': write [IPV6]:PORT, e.g. [::1]:5000");
    CHECK(bad("[::1:5000") == "missing ']' after the IPv6 address in '[::1:5000'");
    CHECK(bad("[127.0.0.1]:5000") == "'127.0.0.1' is not an IPv6 address");
    CHECK(bad("bad host:5000") == "invalid host 'bad host'");
}

TEST_CASE("event delivery keys: node_id, backlog bounds and policy, flush time, stream_maxlen") {
    Config d = parseOk(kEndpoint);
    CHECK(d.nodeId.empty());
    CHECK(d.backlog.maxBacklogEvents == 1000000);
    CHECK(d.backlog.maxBacklogBytes == std::size_t(256) << 20);
    CHECK(d.backlog.overflow == wsgw::OverflowPolicy::DropOldest);
    CHECK(d.shutdownFlush == 5s);

    Config c = parseOk(std::string(kEndpoint) +
                       "node_id: gw-1\nbacklog_max_events: 5000\nbacklog_max_mb: 64\nbacklog_overflow: pause_reading\n"
                       "shutdown_flush_s: 0\nstream_redis: {addr: 'redis://127.0.0.1:6379', stream_maxlen: 100000, "
                       "timeout_ms: 250}\nconnection_redis_sync: {addr: 'redis://127.0.0.1:6379', timeout_ms: 50, "
                       "key_ttl_s: 30}\n");
    CHECK(c.nodeId == "gw-1");
    CHECK(c.backlog.maxBacklogEvents == 5000);
    CHECK(c.backlog.maxBacklogBytes == std::size_t(64) << 20);
    CHECK(c.backlog.overflow == wsgw::OverflowPolicy::PauseReading);
    CHECK(c.shutdownFlush == 0s);
    REQUIRE(c.streamRedis);
    CHECK(c.streamRedis->options.maxLen == 100000);
    CHECK(c.streamRedis->options.redis.commandTimeout == 250ms);
    CHECK(c.streamRedis->options.redis.connectTimeout == 250ms); // at most the command timeout
    REQUIRE(c.connectionRedisSync);
    CHECK(c.connectionRedisSync->options.redis.commandTimeout == 50ms);
    CHECK(c.connectionRedisSync->options.redis.connectTimeout == 50ms);
    CHECK(c.connectionRedisSync->options.keyTtl == 30s);
    // timeout_ms before addr: the URL does not reset it
    CHECK(parseOk(std::string(kEndpoint) + "stream_redis: {timeout_ms: 300, addr: 'redis://h'}\n")
              .streamRedis->options.redis.commandTimeout == 300ms);
    CHECK(parseOk(std::string(kEndpoint) + "connection_redis_sync: {addr: 'redis://h'}\n")
              .connectionRedisSync->options.keyTtl == 120s);
    CHECK(errorOf(std::string(kEndpoint) + "connection_redis_sync: {addr: 'redis://h', key_ttl_s: 2}\n") ==
          "t.yml:3:55: connection_redis_sync.key_ttl_s: must be at least 3, got 2");
    CHECK(d.streamRedis == std::nullopt);

    CHECK(errorOf(std::string(kEndpoint) + "backlog_overflow: drop_newest\n") ==
          "t.yml:3:19: backlog_overflow: unknown value 'drop_newest': use one of drop_oldest, pause_reading");
    CHECK(errorOf(std::string(kEndpoint) + "backlog_max_events: 0\n") ==
          "t.yml:3:21: backlog_max_events: must be at least 1, got 0");
    CHECK(errorOf(std::string(kEndpoint) + "node_id: 'a b'\n") ==
          "t.yml:3:10: node_id: must not contain spaces or braces, got 'a b'");
}

TEST_CASE("a document starting with ',' is an error, not an endless loop (yaml-cpp 0.7)") {
    CHECK(errorOf(",") == "t.yml:1:1: invalid YAML: a document cannot start with ','");
    CHECK(errorOf(" ,]") == "t.yml:1:2: invalid YAML: a document cannot start with ','");
    CHECK(errorOf("a: 1\n---\n,") == "t.yml:3:1: invalid YAML: a document cannot start with ','");
}

TEST_CASE("limits and security keys: defaults, values, inheritance, errors") {
    Config d = parseOk(kEndpoint);
    CHECK(d.ws.maxConnections == 0);
    CHECK(d.ws.endpoints[0].rateLimit.perSecond == 0);
    CHECK(d.ws.endpoints[0].slowConsumer.maxOutboundBytes == 4096 * 1024);
    CHECK(d.ws.endpoints[0].slowConsumer.policy == SlowConsumerPolicy::Close);
    CHECK(d.ws.maxLifetime == 0s);
    CHECK(d.control.maxTagsPerConnection == 64);
    CHECK(d.control.maxTagKeyLen == 128);
    CHECK(d.control.maxTagValueLen == 1024);
    CHECK(d.control.maxBodyBytes == 1024 * 1024); // max_message_size_kb's
    CHECK(d.control.commandTimeout == 10s);
    CHECK(d.control.requestTimeout == 10s);
    CHECK(d.control.token.empty());
    CHECK_FALSE(d.ws.tls);
    CHECK(d.drain == 10s);
    CHECK(d.ws.endpoints[0].allowedOrigins.empty());

    Config c = parseOk("endpoints:\n"
                       "  - path: /a\n"
                       "    max_connections: 5\n"
                       "    allowed_origins: [https://App.Example, 'http://localhost:3000']\n"
                       "    rate_limit: {max_messages_per_s: 100, policy: drop}\n"
                       "  - path: /b\n"
                       "    slow_consumer: {policy: drop_oldest}\n"
                       "max_connections: 1000\n"
                       "rate_limit: {max_messages_per_s: 10, burst: 20}\n"
                       "slow_consumer: {max_outbound_kb: 128, policy: drop_newest}\n"
                       "max_connection_lifetime_s: 3600\nmax_tags_per_connection: 8\nmax_body_kb: 64\n"
                       "control_timeout_s: 3\ncontrol_token: tok\ndrain_s: 2\ncontrol_request_timeout_s: 4\n");
    CHECK(c.ws.maxConnections == 1000);
    const WsEndpoint &a = c.ws.endpoints[0], &b = c.ws.endpoints[1];
    CHECK(a.maxConnections == 5);
    CHECK(a.allowedOrigins == std::vector<std::string>{"https://app.example", "http://localhost:3000"});
    CHECK(a.rateLimit.perSecond == 100);
    CHECK(a.rateLimit.burst == 100); // defaults to the rate
    CHECK(a.rateLimit.policy == RateLimit::Policy::Drop);
    CHECK(a.slowConsumer.maxOutboundBytes == 128 * 1024); // inherited, though given later in the file
    CHECK(a.slowConsumer.policy == SlowConsumerPolicy::DropNewest);
    CHECK(b.rateLimit.perSecond == 10); // inherited
    CHECK(b.rateLimit.burst == 20);
    CHECK(b.rateLimit.policy == RateLimit::Policy::Close);
    CHECK(b.slowConsumer.policy == SlowConsumerPolicy::DropOldest);
    CHECK(b.slowConsumer.maxOutboundBytes == 4096 * 1024); // its own section starts from the defaults
    CHECK(c.ws.maxLifetime == 3600s);
    CHECK(c.control.maxTagsPerConnection == 8);
    CHECK(c.control.maxBodyBytes == 64 * 1024);
    CHECK(c.control.commandTimeout == 3s);
    CHECK(c.control.requestTimeout == 4s);
    CHECK(c.control.token == "tok");
    CHECK(c.drain == 2s);

    CHECK(errorOf(std::string(kEndpoint) + "control_token: a\ncontrol_token_file: /etc/hostname\n") ==
          "t.yml:4:1: give control_token or control_token_file, not both");
    CHECK(loadErrorOf(std::string(kEndpoint) + "control_token_file: /nonexistent/tok\n") ==
          "t.yml:3:21: control_token_file: cannot read '/nonexistent/tok': No such file or directory");
    CHECK(loadErrorOf(std::string(kEndpoint) + "tls: {cert: /nonexistent.crt, key: /etc/hostname}\n") ==
          "t.yml:3:13: tls.cert: cannot read '/nonexistent.crt': No such file or directory");
    CHECK(errorOf(std::string(kEndpoint) + "tls: {cert: /etc/hostname}\n") ==
          "t.yml:3:1: tls: missing 'key', e.g. 'key: /etc/wsgw/tls.key'");
    CHECK(errorOf(std::string(kEndpoint) + "rate_limit: {burst: 3}\n") ==
          "t.yml:3:1: rate_limit: missing 'max_messages_per_s', e.g. 'max_messages_per_s: 50' (0 turns the limit off)");
    CHECK(errorOf("endpoints:\n  - path: /a\n    rate_limit: {burst: 3}\n") ==
          "t.yml:3:5: endpoints[0].rate_limit: missing 'max_messages_per_s', e.g. 'max_messages_per_s: 50' (0 turns "
          "the limit off)");
    CHECK(errorOf(std::string(kEndpoint) + "slow_consumer: {policy: wait}\n") ==
          "t.yml:3:25: slow_consumer.policy: unknown value 'wait': use one of close, drop_newest, drop_oldest");
    CHECK(errorOf("endpoints:\n  - path: /a\n    allowed_origins: [app.example]\n") ==
          "t.yml:3:23: endpoints[0].allowed_origins[0]: expected SCHEME://HOST[:PORT] with no path, got 'app.example'");
    CHECK(errorOf("max_tags_per_connection: 1\nendpoints:\n  - path: /a\n    set_tags: {a: 1, b: 2}\n") ==
          "t.yml:3:5: endpoints[0].set_tags: 2 tags, more than max_tags_per_connection (1)");
}
