// backends: and endpoints[].backends (wsgwd/config.h), and the routes the gateway makes of them
// (wsgwd/event_routes.h).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "config.h"
#include "event_routes.h"

#include <string>

using namespace wsgw;
using namespace wsgw::daemon;

namespace {

std::string errorOf(const std::string &yaml) {
    std::string error;
    auto config = parseConfig(yaml, "t.yml", &error);
    CHECK_MESSAGE(!config, "parsed although an error was expected:\n" << yaml);
    return error;
}

// The issue's example (README: Routing endpoints to backends).
const char *const kExample = R"(stream_redis:
  addr: redis://127.0.0.1:6379/1
backlog_max_events: 5000
backends:
  chat:
    redis:
      addr: redis://127.0.0.1:6379/0
      stream_name: chat.{tag.room:lobby}
  billing:
    amqp:
      addr: amqp://guest:guest@127.0.0.1:5672/billing
      exchange: billing
    actions: [message]
    backlog_overflow: pause_reading
  audit:
    http:
      url: http://127.0.0.1:8080/audit
      batch_ms: 5
    backlog_max_events: 70
endpoints:
  - path: /chat
    backends: [chat, audit]
  - path: /pay
    backends: [billing, audit]
  - path: /legacy
  - path: /quiet
    backends: []
)";

} // namespace

TEST_CASE("backends and the endpoints' routes parse") {
    std::string error;
    auto c = parseConfig(kExample, "t.yml", &error);
    REQUIRE_MESSAGE(c, error);
    REQUIRE(c->backends.size() == 3);
    const BackendConfig &chat = c->backends[0], &billing = c->backends[1], &audit = c->backends[2];
    CHECK(chat.name == "chat");
    REQUIRE(chat.redis);
    CHECK_FALSE(chat.amqp);
    CHECK(std::string(chat.kind()) == "redis");
    CHECK(chat.redis->options.streamName == "chat.{tag.room:lobby}");
    CHECK(chat.redis->options.redis.db == 0);
    CHECK(chat.actions.size() == 3);
    CHECK(chat.backlog.maxBacklogEvents == 5000); // the top-level default, though written after it
    CHECK(chat.at == "t.yml:5:3");
    REQUIRE(billing.amqp);
    CHECK(billing.amqp->options.vhost == "billing");
    CHECK(billing.actions == std::vector<EventAction>{EventAction::Message});
    CHECK(billing.backlog.overflow == OverflowPolicy::PauseReading);
    REQUIRE(audit.http);
    CHECK(audit.http->options.url == "http://127.0.0.1:8080/audit");
    CHECK(audit.backlog.maxBacklogEvents == 70);
    CHECK(c->ws.endpoints[0].backends == std::vector<std::string>{"chat", "audit"});
    CHECK_FALSE(c->ws.endpoints[2].backends);
    CHECK(c->ws.endpoints[3].backends == std::vector<std::string>{});
    CHECK(c->effectiveEventLog() == Config::EventLog::None);

    EventRoutes routes = routesOf(*c);
    CHECK(routes.defaults == std::vector<std::string>{kStreamRedisBackend});
    CHECK(routes.endpoints.size() == 3);
    CHECK(routes.endpoints["/pay"] == std::vector<std::string>{"billing", "audit"});
    CHECK(routes.endpoints["/quiet"].empty());
    auto lines = describeRoutes(*c);
    REQUIRE(lines.size() == 4);
    CHECK(lines[0] == "/chat -> chat (redis), audit (http)");
    CHECK(lines[2] == "/legacy -> stream_redis (the top-level sinks)");
    CHECK(lines[3] == "/quiet -> nothing");
}

TEST_CASE("without backends, every endpoint gets the top-level sinks") {
    std::string error;
    auto c = parseConfig("endpoints: [{path: /a}]\n", "t.yml", &error);
    REQUIRE(c);
    CHECK(c->effectiveEventLog() == Config::EventLog::Stdout);
    EventRoutes routes = routesOf(*c);
    CHECK(routes.endpoints.empty());
    CHECK(routes.defaults == std::vector<std::string>{kEventLogBackend});
}

TEST_CASE("backend sections compare what they set (what a reload compares)") {
    auto a = parseConfig(kExample, "t.yml");
    auto b = parseConfig(kExample, "t.yml");
    REQUIRE(a);
    REQUIRE(b);
    CHECK(a->backends[0] == b->backends[0]);
    b->backends[0].redis->options.streamName = "other";
    CHECK_FALSE(a->backends[0] == b->backends[0]);
    b->backends[1].backlog.maxBacklogEvents = 1;
    CHECK_FALSE(a->backends[1] == b->backends[1]);
}

TEST_CASE("route and backend errors name the file, line and column") {
    const std::string backends = "backends:\n  chat:\n    redis: {addr: 'redis://127.0.0.1:6379/0'}\n";
    // An unknown backend, where it is named.
    CHECK(errorOf(backends + "endpoints:\n  - path: /a\n    backends: [chat, nope]\n") ==
          "t.yml:6:22: endpoints[0].backends[1]: unknown backend 'nope' (configured backends: chat)");
    CHECK(errorOf("endpoints:\n  - path: /a\n    backends: [x]\n") ==
          "t.yml:3:16: endpoints[0].backends[0]: unknown backend 'x' (no backends: are configured)");
    CHECK(errorOf(backends + "endpoints:\n  - path: /a\n    backends: [chat, chat]\n") ==
          "t.yml:6:22: endpoints[0].backends[1]: backend 'chat' is listed twice");
    // No sink, two sinks.
    CHECK(errorOf("backends:\n  b: {actions: [open]}\nendpoints: [{path: /a}]\n") ==
          "t.yml:2:3: backends.b: no sink: give one of 'redis', 'amqp' or 'http'");
    CHECK(errorOf("backends:\n  b:\n    redis: {addr: 'redis://h'}\n    http: {url: 'http://h/x'}\n"
                  "endpoints: [{path: /a}]\n") ==
          "t.yml:4:5: backends.b: has both 'redis' and 'http': a backend is one sink (give each its own backend)");
    // A name used twice.
    CHECK(errorOf("backends:\n  b: {redis: {addr: 'redis://h'}}\n  b: {redis: {addr: 'redis://h'}}\n"
                  "endpoints: [{path: /a}]\n")
              .rfind("t.yml:3:3: ", 0) == 0);
    CHECK(errorOf("backends:\n  b: {redis: {addr: 'redis://h'}}\n  b: {redis: {addr: 'redis://h'}}\n"
                  "endpoints: [{path: /a}]\n")
              .find("duplicate key 'b' (first given on line 2)") != std::string::npos);
    // A top-level sink's name, a bad name, a bad action, unknown keys.
    CHECK(errorOf("backends:\n  stream_redis: {redis: {addr: 'redis://h'}}\nendpoints: [{path: /a}]\n") ==
          "t.yml:2:3: backends.stream_redis: 'stream_redis' names a top-level sink (the default route); choose "
          "another name");
    CHECK(errorOf("backends:\n  'a b': {redis: {addr: 'redis://h'}}\nendpoints: [{path: /a}]\n")
              .rfind("t.yml:2:3: backends.a b: a backend name is", 0) == 0);
    CHECK(errorOf("backends:\n  b: {redis: {addr: 'redis://h'}, actions: [open, shout]}\nendpoints: [{path: /a}]\n") ==
          "t.yml:2:51: backends.b.actions[1]: unknown action 'shout': expected open, close or message");
    CHECK(errorOf("backends:\n  b: {redis: {addr: 'redis://h'}, actions: []}\nendpoints: [{path: /a}]\n")
              .rfind("t.yml:2:44: backends.b.actions: no actions", 0) == 0);
    CHECK(errorOf("backends:\n  b: {redis: {addr: 'redis://h', stream: x}}\nendpoints: [{path: /a}]\n")
              .rfind("t.yml:2:34: unknown key 'stream' in backends.b.redis", 0) == 0);
    CHECK(errorOf("backends:\n  b: [redis]\nendpoints: [{path: /a}]\n").rfind("t.yml:2:6: backends.b: expected", 0) == 0);
    CHECK(errorOf("backends:\n  b: {redis: {addr: 'redis://h'}, backlog_overflow: wait}\nendpoints: [{path: /a}]\n")
              .rfind("t.yml:2:53: backends.b.backlog_overflow: unknown value 'wait'", 0) == 0);
}

TEST_CASE("a backend's http secret_file is read into that backend") {
    // Recorded for the file step, which finds the backend by name.
    auto c = parseConfig("backends:\n  hook: {http: {url: 'http://127.0.0.1:1/x', secret_file: /nonexistent/s}}\n"
                         "endpoints: [{path: /a, backends: [hook]}]\n",
                         "t.yml");
    REQUIRE(c);
    REQUIRE(c->files.size() == 1);
    CHECK(c->files[0].key == "backends.hook.http.secret_file");
    std::string error;
    CHECK_FALSE(readConfigFiles(*c, &error));
    CHECK(error.rfind("t.yml:2:", 0) == 0);
}
