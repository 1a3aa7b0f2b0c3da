// Commands in over an AMQP queue (command_amqp): two real wsgwd nodes in a cluster (on a real
// redis-server, which also holds the command_id records) consume one durable queue on a real
// RabbitMQ as competing consumers, and apply each command once, cluster-wide, answering to
// reply_to with the correlation_id. Duplicates, malformed messages, the per-process records of a
// node without Redis, and a RabbitMQ restart while commands are being published.
//
// One private broker (tests/integration/rabbitmq.h) serves every test case; each case uses its
// own queue. Exit code 77 (meson: skipped) when rabbitmq-server or redis-server is missing, or a
// failure under CI=true (tests/support/skip.h).
#define DOCTEST_CONFIG_IMPLEMENT
#include "clients.h"
#include "harness.h"
#include "rabbitmq.h"
#include "redis_server.h"
#include "skip.h"

#include "ws_client.h"

#include <doctest/doctest.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <thread>

using namespace wsgw::itest;
using wsgw::test::Received;
using wsgw::test::WsClient;
using json = nlohmann::json;

namespace {

std::unique_ptr<RabbitBroker> theBroker;

RabbitBroker &broker() {
    if (!theBroker) {
        theBroker = std::make_unique<RabbitBroker>();
        std::string error;
        auto t0 = std::chrono::steady_clock::now();
        if (!theBroker->start(&error)) {
            std::fprintf(stderr, "%s\n", error.c_str());
            throw std::runtime_error("cannot start rabbitmq-server");
        }
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
        std::printf("rabbitmq-server up on port %u after %lld ms\n", theBroker->port(), (long long)ms.count());
    }
    return *theBroker;
}

const std::vector<std::pair<std::string, std::string>> kThisNode{{"X-Wsgw-Scope", "node"}};

std::string nodeConfig(const RedisServer *cluster, const std::string &queue, const std::string &node) {
    std::string c = "node_id: " + node + "\ndrain_s: 0\n";
    if (cluster)
        c += "cluster:\n  addr: '" + cluster->url() +
             "'\n  heartbeat_ms: 200\n  dead_after_ms: 1000\n  command_timeout_ms: 1000\n";
    return c + "command_amqp:\n  addr: '" + broker().url() + "'\n  queue: " + queue + "\n  prefetch: 20\n";
}

struct Node {
    std::unique_ptr<Daemon> daemon;
    std::vector<std::unique_ptr<WsClient>> clients;
};

std::size_t localCount(Daemon &d) {
    auto r = httpWithHeaders(d.controlPort, "GET", "/status", kThisNode);
    return static_cast<std::size_t>(std::count(r.body.begin(), r.body.end(), '\n'));
}

std::size_t liveNodes(Daemon &d) {
    auto r = httpGet(d.controlPort, "/nodes", "application/json");
    if (r.status != 200) return 0;
    return json::parse(r.body)["count"].get<std::size_t>();
}

const std::string kUp = "wsgw_command_bus_up{transport=\"amqp\"}";

std::string outcome(const std::string &o) {
    return "wsgw_command_bus_commands_total{transport=\"amqp\",outcome=\"" + o + "\"}";
}

// `count` nodes with `clients` clients each (group=default), all consuming `queue`; clustered on
// `cluster` unless it is null.
std::vector<Node> startNodes(const RedisServer *cluster, const std::string &queue, std::size_t clients,
                             std::size_t count = 2) {
    std::vector<Node> nodes(count);
    for (std::size_t i = 0; i < nodes.size(); ++i) {
        nodes[i].daemon = Daemon::start(nodeConfig(cluster, queue, "gw-" + std::to_string(i + 1)));
        for (std::size_t c = 0; c < clients; ++c) {
            nodes[i].clients.push_back(connect(*nodes[i].daemon));
            REQUIRE(eventually([&] { return localCount(*nodes[i].daemon) == c + 1; }));
        }
    }
    for (Node &n : nodes) {
        if (cluster) REQUIRE_MESSAGE(eventually([&] { return liveNodes(*n.daemon) == nodes.size(); }), n.daemon->err());
        REQUIRE_MESSAGE(eventually([&] { return metric(*n.daemon, kUp) == 1; }, 10000ms), n.daemon->err());
    }
    return nodes;
}

// Everything a client receives within `quiet` of silence.
std::vector<Received> drain(WsClient &c, Millis quiet = 300ms) {
    std::vector<Received> out;
    for (int i = 0; i < 1000; ++i) {
        Received r = c.receive(quiet);
        if (r.kind == Received::Kind::Timeout) break;
        out.push_back(std::move(r));
        if (out.back().kind != Received::Kind::Message) break;
    }
    return out;
}

double busMetric(std::vector<Node> &nodes, const std::string &sample) {
    double total = 0;
    for (Node &n : nodes) total += std::max(0.0, metric(*n.daemon, sample));
    return total;
}

// The replies in `queue` once there are `n` of them, by correlation_id.
std::map<std::string, json> replies(AmqpClient &amqp, const std::string &queue, std::size_t n) {
    std::map<std::string, json> out;
    for (const Delivery &d : amqp.consume(queue, n, 15000ms, 200ms)) {
        INFO(d.body);
        CHECK(d.contentType == "application/json");
        out[d.correlationId] = json::parse(d.body);
    }
    return out;
}

void command(AmqpClient &amqp, const std::string &queue, const json &body, const std::string &replyTo = "",
             const std::string &correlationId = "") {
    Publish p;
    p.replyTo = replyTo;
    p.correlationId = correlationId;
    amqp.publish("", queue, body.dump(), p);
}

} // namespace

TEST_CASE("send, settags and close through the queue reach every client of both nodes once, with replies") {
    RedisServer clusterRedis;
    auto nodes = startNodes(&clusterRedis, "cq1", 2);
    AmqpClient amqp(broker().port());
    amqp.declareQueue("cq1-replies", false);

    command(amqp, "cq1", {{"action", "send"}, {"selector", "group=default"}, {"message", "hello"}, {"command_id", "c1"}},
            "cq1-replies", "r1");
    command(amqp, "cq1",
            {{"action", "send"}, {"selector", "group=default"}, {"message_base64", "AP8B"}, {"command_id", "c2"}},
            "cq1-replies", "r2");
    auto r = replies(amqp, "cq1-replies", 2);
    REQUIRE(r.size() == 2);
    CHECK(r["r1"] == json{{"command_id", "c1"}, {"count", 4}, {"missing_nodes", json::array()}});
    CHECK(r["r2"] == json{{"command_id", "c2"}, {"count", 4}, {"missing_nodes", json::array()}});
    for (Node &n : nodes)
        for (auto &c : n.clients) {
            auto got = drain(*c);
            REQUIRE(got.size() == 2);
            // The two messages may be read by different nodes: order between them is not promised.
            std::set<std::pair<bool, std::string>> seen;
            for (auto &g : got) seen.insert({g.isBinary(), g.data});
            CHECK(seen == std::set<std::pair<bool, std::string>>{{false, "hello"}, {true, std::string("\x00\xff\x01", 3)}});
        }

    // settags on one client of gw-2 (by id): a tag added, one deleted; then a send to the new tag.
    auto id = httpWithHeaders(nodes[1].daemon->controlPort, "GET", "/status", kThisNode).body.substr(3, 36);
    command(amqp, "cq1", {{"action", "settags"}, {"selector", "id=" + id}, {"tags", {{"vip", "1"}, {"group", ""}}}},
            "cq1-replies", "r3");
    r = replies(amqp, "cq1-replies", 1);
    CHECK(r["r3"] == json{{"count", 1}, {"missing_nodes", json::array()}}); // no command_id: none in the reply
    CHECK(httpGet(nodes[0].daemon->controlPort, "/status?vip=1").body == "id=" + id + " vip=1\n");

    // close with a last message, on that client; binary by type, text by default.
    command(amqp, "cq1", {{"action", "close"}, {"selector", "vip=1"}, {"message", "bye"}}, "cq1-replies", "r4");
    r = replies(amqp, "cq1-replies", 1);
    CHECK(r["r4"]["count"] == 1);
    bool closed = false;
    for (auto &c : nodes[1].clients) {
        auto got = drain(*c);
        if (got.size() == 2 && got[0].data == "bye" && got[1].kind == Received::Kind::Close) {
            closed = true;
            CHECK(c->closeCode() == 1000);
        }
    }
    CHECK(closed);

    // A binary send of text bytes by "type": "binary"; and a command without reply_to.
    command(amqp, "cq1", {{"action", "send"}, {"selector", "group=default"}, {"message", "raw"}, {"type", "binary"}});
    for (auto &c : nodes[0].clients) {
        auto got = drain(*c);
        REQUIRE(got.size() == 1);
        CHECK(got[0].isBinary());
        CHECK(got[0].data == "raw");
    }

    // A JSON selector as an object (the /v1 form): every client that has a group (the closed one
    // had its group deleted) but one of gw-1's, excluded by id.
    const std::string excluded = httpWithHeaders(nodes[0].daemon->controlPort, "GET", "/status", kThisNode).body.substr(3, 36);
    command(amqp, "cq1", {{"action", "send"}, {"selector", {{"has", {"group"}}, {"exclude_ids", {excluded}}}}, {"message", "json"}},
            "cq1-replies", "r5");
    r = replies(amqp, "cq1-replies", 1);
    CHECK(r["r5"]["count"] == 2);
    std::size_t reached = 0;
    for (Node &n : nodes)
        for (auto &c : n.clients)
            for (auto &g : drain(*c, 200ms)) reached += g.data == "json";
    CHECK(reached == 2);

    CHECK(eventually([&] { return busMetric(nodes, outcome("applied")) == 6; }));
    CHECK(busMetric(nodes, "wsgw_command_bus_replies_total{transport=\"amqp\"}") == 5);
    CHECK(amqp.declareQueue("cq1") == 0); // nothing left ready
}

TEST_CASE("both nodes consume, yet each command reaches each client exactly once") {
    RedisServer clusterRedis;
    auto nodes = startNodes(&clusterRedis, "cq2", 2);
    AmqpClient amqp(broker().port());
    constexpr int kCommands = 200;
    for (int i = 0; i < kCommands; ++i)
        command(amqp, "cq2", {{"action", "send"}, {"selector", "group=default"}, {"message", "m" + std::to_string(i)}});
    for (Node &n : nodes)
        for (auto &c : n.clients) {
            std::multiset<std::string> got;
            for (int i = 0; i < 4 * kCommands && got.size() < kCommands; ++i) {
                Received m = c->receive(5000ms);
                if (!m.isMessage()) break;
                got.insert(m.data);
            }
            CHECK(drain(*c, 300ms).empty()); // nothing more
            REQUIRE(got.size() == kCommands);
            for (int i = 0; i < kCommands; ++i) CHECK(got.count("m" + std::to_string(i)) == 1);
        }
    CHECK(eventually([&] { return busMetric(nodes, outcome("applied")) == kCommands; }));
    // Both nodes took part: the broker spreads deliveries over its consumers.
    for (Node &n : nodes) CHECK(metric(*n.daemon, outcome("applied")) > 0);
}

TEST_CASE("a repeated command_id (or message_id) is acknowledged and answered but not applied again") {
    RedisServer clusterRedis;
    auto nodes = startNodes(&clusterRedis, "cq3", 1);
    AmqpClient amqp(broker().port());
    amqp.declareQueue("cq3-replies", false);
    const json once{{"action", "send"}, {"selector", "group=default"}, {"message", "once"}, {"command_id", "dup-1"}};
    for (int i = 0; i < 3; ++i) command(amqp, "cq3", once, "cq3-replies", "d" + std::to_string(i));
    // The message_id property stands in for a missing command_id.
    for (int i = 0; i < 2; ++i) {
        Publish p;
        p.replyTo = "cq3-replies";
        p.correlationId = "m" + std::to_string(i);
        p.messageId = "mid-1";
        amqp.publish("", "cq3", json{{"action", "send"}, {"selector", "group=default"}, {"message", "by mid"}}.dump(), p);
    }
    auto r = replies(amqp, "cq3-replies", 5);
    REQUIRE(r.size() == 5);
    int firsts = 0, duplicates = 0;
    for (auto &entry : r) { // not a structured binding: clang 14 cannot capture one (INFO)
        const auto &cid = entry.first;
        auto &x = entry.second;
        INFO(cid << ": " << x.dump());
        CHECK(x["command_id"] == (cid[0] == 'd' ? "dup-1" : "mid-1"));
        CHECK(x["count"] == 2);
        (x.contains("duplicate") ? duplicates : firsts) += 1;
        if (x.contains("duplicate")) CHECK(x["duplicate"] == true);
    }
    CHECK(firsts == 2);
    CHECK(duplicates == 3);
    for (Node &n : nodes)
        for (auto &c : n.clients) {
            auto got = drain(*c);
            std::multiset<std::string> seen;
            for (auto &g : got) seen.insert(g.data);
            CHECK(seen == std::multiset<std::string>{"once", "by mid"});
        }
    CHECK(busMetric(nodes, outcome("duplicate")) == 3);
    CHECK(busMetric(nodes, outcome("applied")) == 2);
}

TEST_CASE("without Redis, a node remembers command_ids itself") {
    auto nodes = startNodes(nullptr, "cq4", 2, 1);
    AmqpClient amqp(broker().port());
    amqp.declareQueue("cq4-replies", false);
    for (int i = 0; i < 3; ++i)
        command(amqp, "cq4", {{"action", "send"}, {"selector", "group=default"}, {"message", "one"}, {"command_id", "x"}},
                "cq4-replies", std::to_string(i));
    auto r = replies(amqp, "cq4-replies", 3);
    REQUIRE(r.size() == 3);
    CHECK(r["0"] == json{{"command_id", "x"}, {"count", 2}, {"missing_nodes", json::array()}});
    CHECK(r["1"] == json{{"command_id", "x"}, {"count", 2}, {"duplicate", true}});
    CHECK(r["2"] == json{{"command_id", "x"}, {"count", 2}, {"duplicate", true}});
    for (auto &c : nodes[0].clients) CHECK(drain(*c).size() == 1);
    CHECK(nodes[0].daemon->err().find("command ids recorded in this process only") != std::string::npos);
    auto t0 = std::chrono::steady_clock::now();
    CHECK(nodes[0].daemon->stop(SIGTERM, 10000ms) == 0);
    MESSAGE("a node without a cluster stopped in "
            << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count()
            << " ms");
}

TEST_CASE("malformed commands are acknowledged, answered with an error, counted and logged once per kind") {
    RedisServer clusterRedis;
    auto nodes = startNodes(&clusterRedis, "cq5", 1);
    AmqpClient amqp(broker().port());
    amqp.declareQueue("cq5-replies", false);
    const std::string sel = "group=default";
    const std::vector<std::pair<std::string, std::string>> bad{
        {"not json", "bad json"},
        {"[1,2]", "bad json"},
        {json{{"selector", sel}, {"message", "x"}}.dump(), "no action"},
        {json{{"action", "explode"}, {"selector", sel}}.dump(), "unknown action"},
        {json{{"action", "explode"}, {"selector", sel}}.dump(), "unknown action"},
        {json{{"action", "send"}, {"selector", "group=%zz"}, {"message", "x"}}.dump(), "bad selector"},
        {json{{"action", "send"}, {"selector", {{"has", "group"}}}, {"message", "x"}}.dump(), "bad selector"},
        {json{{"action", "send"}, {"selector", sel}, {"type", "jpeg"}, {"message", "x"}}.dump(), "bad type"},
        {json{{"action", "send"}, {"selector", sel}, {"message_base64", "***"}}.dump(), "bad base64"},
        {json{{"action", "send"}, {"selector", sel}, {"message_base64", "//4="}, {"type", "text"}}.dump(),
         "text message not UTF-8"},
        {json{{"action", "send"}, {"selector", sel}, {"message", 5}}.dump(), "bad field"},
        {json{{"action", "send"}, {"selector", sel}, {"message", "a"}, {"message_base64", "YQ=="}}.dump(),
         "bad message"},
        {json{{"action", "settags"}, {"selector", sel}, {"tags", {{"k", 1}}}}.dump(), "bad tags"},
        {json{{"action", "settags"}, {"selector", sel}, {"tags", "k=v"}}.dump(), "bad tags"},
    };
    for (std::size_t i = 0; i < bad.size(); ++i) {
        Publish p;
        p.replyTo = "cq5-replies";
        p.correlationId = std::to_string(i);
        amqp.publish("", "cq5", bad[i].first, p);
    }
    auto r = replies(amqp, "cq5-replies", bad.size());
    REQUIRE(r.size() == bad.size());
    for (std::size_t i = 0; i < bad.size(); ++i) {
        const json &x = r[std::to_string(i)];
        INFO(bad[i].first << " -> " << x.dump());
        CHECK_FALSE(x.contains("count"));
        REQUIRE(x.contains("error"));
        CHECK(x["error"].get<std::string>().rfind(bad[i].second + ":", 0) == 0);
    }
    CHECK(eventually([&] { return busMetric(nodes, outcome("malformed")) == static_cast<double>(bad.size()); }));
    // Logged once per kind and node.
    std::size_t lines = 0;
    for (Node &n : nodes) {
        const std::string log = n.daemon->err();
        std::size_t here = 0;
        for (std::size_t at = 0; (at = log.find("malformed command (unknown action)", at)) != std::string::npos; ++at)
            ++here;
        CHECK(here <= 1);
        lines += here;
    }
    CHECK(lines >= 1);
    // Nothing reached the clients, nothing is left in the queue, and the nodes still work.
    for (Node &n : nodes)
        for (auto &c : n.clients) CHECK(drain(*c, 100ms).empty());
    CHECK(amqp.declareQueue("cq5") == 0);
    command(amqp, "cq5", {{"action", "send"}, {"selector", sel}, {"message", "still here"}}, "cq5-replies", "ok");
    r = replies(amqp, "cq5-replies", 1);
    CHECK(r["ok"]["count"] == 2);
}

TEST_CASE("a RabbitMQ restart while commands are published: nothing the broker confirmed is lost or applied twice") {
    RedisServer clusterRedis;
    auto nodes = startNodes(&clusterRedis, "cq6", 1);
    constexpr int kCommands = 60;
    std::atomic<int> confirmed{0};
    std::atomic<bool> stopped{false};
    std::string publishError;
    // The backend: publishes with confirms; a message the broker did not confirm is published again
    // (with its command_id) once the broker is back, as a careful backend does.
    std::thread backend([&] {
        std::unique_ptr<AmqpClient> amqp;
        for (int i = 0; i < kCommands;) {
            try {
                if (!amqp) amqp = std::make_unique<AmqpClient>(broker().port());
                Publish p;
                p.confirm = true;
                const std::string id = "k" + std::to_string(i);
                amqp->publish("", "cq6",
                              json{{"action", "send"}, {"selector", "group=default"}, {"message", id}, {"command_id", id}}
                                  .dump(),
                              p);
                confirmed = ++i;
                std::this_thread::sleep_for(20ms);
            } catch (const std::exception &e) {
                publishError = e.what();
                amqp.reset();
                if (stopped.load()) break;
                std::this_thread::sleep_for(200ms);
            }
        }
    });
    REQUIRE(eventually([&] { return confirmed.load() >= kCommands / 3; }, 20000ms));
    broker().stop(false);
    for (Node &n : nodes) CHECK(eventually([&] { return metric(*n.daemon, kUp) == 0; }));
    std::string error;
    bool restarted = broker().start(&error);
    if (!restarted) stopped = true;
    backend.join();
    REQUIRE_MESSAGE(restarted, error);
    REQUIRE_MESSAGE(confirmed.load() == kCommands, publishError);
    for (Node &n : nodes)
        CHECK_MESSAGE(eventually([&] { return metric(*n.daemon, kUp) == 1; }, 15000ms), n.daemon->err());
    for (Node &n : nodes)
        for (auto &c : n.clients) {
            std::multiset<std::string> got;
            for (int i = 0; i < 4 * kCommands && got.size() < kCommands; ++i) {
                Received m = c->receive(15000ms);
                if (!m.isMessage()) break;
                got.insert(m.data);
            }
            for (auto &m : drain(*c, 500ms)) got.insert(m.data);
            for (int i = 0; i < kCommands; ++i) CHECK(got.count("k" + std::to_string(i)) == 1);
        }
    CHECK(busMetric(nodes, "wsgw_command_bus_disconnects_total{transport=\"amqp\"}") >= 2);
    // SIGTERM is seen within about a second (a wait for deliveries lasts at most 1 s).
    for (Node &n : nodes) {
        auto t0 = std::chrono::steady_clock::now();
        CHECK(n.daemon->stop(SIGTERM, 10000ms) == 0);
        MESSAGE("stopped in " << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count() << " ms");
    }
}

int main(int argc, char **argv) {
    if (!RabbitBroker::installed())
        return wsgw::test::missingPrerequisite("rabbitmq-server is not installed (Debian package rabbitmq-server; "
                                               "scripts/bootstrap installs it)");
    if (!haveRedisServer())
        return wsgw::test::missingPrerequisite("redis-server is not installed (Debian package redis-server; "
                                               "scripts/bootstrap installs it)");
    doctest::Context context(argc, argv);
    int rc = context.run();
    theBroker.reset(); // stops the broker and its epmd
    if (context.shouldExit()) return rc;
    return wsgw::test::finish(rc);
}
