// Several wsgwd nodes on one real redis-server acting as one gateway (cluster:): commands from
// every node reach every client exactly once, /status /tree /nodes see the whole cluster, a node
// killed with SIGKILL is cleaned up by exactly one survivor, Redis killed and restarted while
// commands flow, a node joining later.
#include "clients.h"
#include "harness.h"
#include "redis_server.h"
#include "skip.h"

#include "ws_client.h"

#include <doctest/doctest.h>
#include <httplib.h>

#include <algorithm>
#include <csignal>
#include <map>
#include <memory>
#include <set>
#include <thread>

using namespace wsgw::itest;
using wsgw::test::Received;
using wsgw::test::WsClient;

namespace {

const wsgw::test::Prerequisite redisServer{"redis-server is not installed (Debian package redis-server; "
                                           "scripts/bootstrap installs it)",
                                           [] { return haveRedisServer(); }};

constexpr int kHeartbeatMs = 200;
constexpr int kDeadAfterMs = 1000;
constexpr int kCommandTimeoutMs = 1000;

std::string clusterConfig(const RedisServer &redis, const std::string &node) {
    return "node_id: " + node + "\ndrain_s: 0\ncluster:\n  addr: '" + redis.url() + "'\n  heartbeat_ms: " +
           std::to_string(kHeartbeatMs) + "\n  dead_after_ms: " + std::to_string(kDeadAfterMs) +
           "\n  command_timeout_ms: " + std::to_string(kCommandTimeoutMs) + "\n";
}

const std::vector<std::pair<std::string, std::string>> kThisNode{{"X-Wsgw-Scope", "node"}};

// A node and its clients, with each client's id as the node reports it.
struct Node {
    std::string name;
    std::unique_ptr<Daemon> daemon;
    std::vector<std::unique_ptr<WsClient>> clients;
    std::vector<std::string> ids; // ids[i] is clients[i]'s

    void connectClients(std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) {
            auto before = localIds();
            clients.push_back(connect(*daemon));
            std::string id;
            REQUIRE(eventually([&] {
                for (const std::string &x : localIds())
                    if (!before.count(x)) id = x;
                return !id.empty();
            }));
            ids.push_back(id);
        }
    }
    std::set<std::string> localIds() {
        auto r = httpWithHeaders(daemon->controlPort, "GET", "/status", kThisNode);
        std::set<std::string> out;
        std::size_t at = 0;
        while ((at = r.body.find("id=", at)) != std::string::npos) {
            out.insert(r.body.substr(at + 3, 36));
            at += 3;
        }
        return out;
    }
};

std::unique_ptr<Node> startNode(const RedisServer &redis, const std::string &name, std::size_t clients) {
    auto n = std::make_unique<Node>();
    n->name = name;
    n->daemon = Daemon::start(clusterConfig(redis, name));
    n->connectClients(clients);
    return n;
}

std::size_t liveNodes(Daemon &d) {
    auto r = httpGet(d.controlPort, "/nodes", "application/json");
    if (r.status != 200) return 0;
    return nlohmann::json::parse(r.body)["count"].get<std::size_t>();
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

std::vector<std::unique_ptr<Node>> startCluster(const RedisServer &redis, std::size_t nodes, std::size_t clients) {
    std::vector<std::unique_ptr<Node>> out;
    for (std::size_t i = 0; i < nodes; ++i) out.push_back(startNode(redis, "gw-" + std::to_string(i + 1), clients));
    for (auto &n : out) REQUIRE_MESSAGE(eventually([&] { return liveNodes(*n->daemon) == nodes; }), n->daemon->err());
    return out;
}

} // namespace

TEST_CASE("a command on any node reaches every client of every node exactly once") {
    RedisServer redis;
    auto nodes = startCluster(redis, 3, 2);

    // /send, text and binary, from every node: 6 clients each time.
    for (std::size_t from = 0; from < nodes.size(); ++from) {
        auto r = httpPost(nodes[from]->daemon->controlPort, "/send?group=default", "text-" + std::to_string(from));
        CHECK(r.status == 200);
        CHECK(r.body == "6");
        CHECK(r.header("X-Wsgw-Missing-Nodes") == "");
        r = httpPost(nodes[from]->daemon->controlPort, "/send?group=default", std::string("\x00\x01", 2) + char('0' + from),
                     "application/octet-stream");
        CHECK(r.body == "6");
    }
    for (auto &n : nodes) {
        for (auto &c : n->clients) {
            auto got = drain(*c);
            REQUIRE(got.size() == 6); // exactly once each: no more, no less
            for (std::size_t from = 0; from < 3; ++from) {
                CHECK(got[2 * from].opcode == wsgw::test::Opcode::Text);
                CHECK(got[2 * from].data == "text-" + std::to_string(from));
                CHECK(got[2 * from + 1].opcode == wsgw::test::Opcode::Binary);
                CHECK(got[2 * from + 1].data == std::string("\x00\x01", 2) + char('0' + from));
            }
        }
    }

    // id= goes to its node: from gw-1 to a client of gw-3.
    const std::string target = nodes[2]->ids[1];
    auto r = httpPost(nodes[0]->daemon->controlPort, "/send?id=" + target, "just you");
    CHECK(r.body == "1");
    auto got = drain(*nodes[2]->clients[1]);
    REQUIRE(got.size() == 1);
    CHECK(got[0].data == "just you");
    for (auto &n : nodes)
        for (auto &c : n->clients)
            if (c != nodes[2]->clients[1]) CHECK(drain(*c, 100ms).empty());

    // /settags from gw-2 on a client of gw-1; /status and /tree from gw-3 see it.
    r = httpPost(nodes[1]->daemon->controlPort, "/settags?id=" + nodes[0]->ids[0], "vip=1");
    CHECK(r.body == "1");
    r = httpGet(nodes[2]->daemon->controlPort, "/status?vip=1");
    CHECK(r.body == "id=" + nodes[0]->ids[0] + " group=default vip=1\n");
    auto status = nlohmann::json::parse(httpGet(nodes[2]->daemon->controlPort, "/status", "application/json").body);
    CHECK(status["count"] == 6);
    std::set<std::string> seenNodes;
    for (auto &c : status["connections"]) seenNodes.insert(c["node"].get<std::string>());
    CHECK(seenNodes == std::set<std::string>{"gw-1", "gw-2", "gw-3"});
    r = httpGet(nodes[2]->daemon->controlPort, "/tree");
    CHECK(r.body == "group\n - default\nvip\n - 1\n");
    auto tree = nlohmann::json::parse(httpGet(nodes[0]->daemon->controlPort, "/tree", "application/json").body);
    CHECK(tree["group"]["default"] == 6);

    // This node only: a request header, not a query key.
    r = httpWithHeaders(nodes[2]->daemon->controlPort, "GET", "/status", kThisNode);
    CHECK(std::count(r.body.begin(), r.body.end(), '\n') == 2);
    r = httpWithHeaders(nodes[2]->daemon->controlPort, "POST", "/send?group=default", kThisNode, "local");
    CHECK(r.body == "2");
    for (auto &c : nodes[2]->clients) CHECK(drain(*c).size() == 1);
    for (auto &c : nodes[0]->clients) CHECK(drain(*c, 100ms).empty());

    // GET /nodes, text and JSON.
    r = httpGet(nodes[0]->daemon->controlPort, "/nodes");
    for (auto &n : nodes) CHECK(r.body.find("node=" + n->name + " ") != std::string::npos);
    auto list = nlohmann::json::parse(httpGet(nodes[1]->daemon->controlPort, "/nodes", "application/json").body);
    REQUIRE(list["nodes"].size() == 3);
    CHECK(list["nodes"][0]["id"] == "gw-2");
    CHECK(list["nodes"][0]["self"] == true);
    for (auto &n : list["nodes"]) {
        CHECK(n["connections"] == 2);
        CHECK(n["last_heartbeat_ms"].get<std::int64_t>() > 0);
    }

    // /close from gw-3 with a last message, on gw-1's vip client.
    r = httpPost(nodes[2]->daemon->controlPort, "/close?vip=1", "bye");
    CHECK(r.body == "1");
    got = drain(*nodes[0]->clients[0]);
    REQUIRE(got.size() == 2);
    CHECK(got[0].data == "bye");
    CHECK(got[1].kind == Received::Kind::Close);
    CHECK(nodes[0]->clients[0]->closeCode() == 1000);

    // Metrics: the nodes and the commands.
    CHECK(metric(*nodes[0]->daemon, "wsgw_cluster_nodes") == 3);
    CHECK(metric(*nodes[0]->daemon, "wsgw_cluster_commands_sent_total") >= 4);
    CHECK(metric(*nodes[1]->daemon, "wsgw_cluster_commands_received_total") >= 4);
    CHECK(metric(*nodes[0]->daemon, "wsgw_cluster_command_round_trip_seconds_count") >= 4);
}

TEST_CASE("commands one after the other from one node reach a connection of another node in order") {
    RedisServer redis;
    auto nodes = startCluster(redis, 2, 1);
    const std::string target = "/send?id=" + nodes[1]->ids[0];
    for (int i = 0; i < 30; ++i) CHECK(httpPost(nodes[0]->daemon->controlPort, target, std::to_string(i)).body == "1");
    auto got = drain(*nodes[1]->clients[0]);
    REQUIRE(got.size() == 30);
    for (int i = 0; i < 30; ++i) CHECK(got[i].data == std::to_string(i));
}

TEST_CASE("a node killed with SIGKILL: exactly one survivor closes its connections and removes its keys") {
    RedisServer redis;
    RedisProbe probe(redis.port());
    auto nodes = startCluster(redis, 3, 2);
    // The mirror has written the dead-to-be node's connections.
    REQUIRE(eventually([&] { return probe.list({"SMEMBERS", "wsgw:node:gw-3:connections"}).size() == 2; }));
    const std::set<std::string> lostIds(nodes[2]->ids.begin(), nodes[2]->ids.end());

    const auto killedAt = std::chrono::steady_clock::now();
    nodes[2]->daemon->stop(SIGKILL);
    auto nodeLostCloses = [&] {
        std::vector<nlohmann::json> out;
        for (int i = 0; i < 2; ++i)
            for (auto &e : nodes[i]->daemon->events())
                if (e["action"] == "close" && e.value("reason", "") == "node_lost") out.push_back(e);
        return out;
    };
    REQUIRE_MESSAGE(eventually([&] { return nodeLostCloses().size() >= 2; }, 10s), nodes[0]->daemon->err());
    const auto took = std::chrono::steady_clock::now() - killedAt;
    // Lost after dead_after_ms, seen at the next heartbeat; a second of slack for a loaded machine.
    CHECK(took < Millis(kDeadAfterMs + kHeartbeatMs + 1000));
    std::this_thread::sleep_for(Millis(3 * kHeartbeatMs)); // would another survivor repeat them?
    auto closes = nodeLostCloses();
    REQUIRE(closes.size() == 2); // exactly once: one survivor won the lock
    std::set<std::string> closed;
    for (auto &e : closes) {
        closed.insert(e["connection"].get<std::string>());
        CHECK(e["lost_node"] == "gw-3");
        CHECK(e["tags"] == "group=default");
        CHECK(e["endpoint"] == "/connect");
    }
    CHECK(closed == lostIds);
    CHECK(probe.list({"SMEMBERS", "wsgw:node:gw-3:connections"}).empty());
    for (const std::string &id : lostIds) CHECK(probe.command({"EXISTS", "connection:" + id}) == "0");
    CHECK(probe.command({"HEXISTS", "wsgw:cluster:nodes", "gw-3"}) == "0");
    CHECK(liveNodes(*nodes[0]->daemon) == 2);
    CHECK(metric(*nodes[0]->daemon, "wsgw_cluster_nodes_lost_total") +
              metric(*nodes[1]->daemon, "wsgw_cluster_nodes_lost_total") ==
          1);

    // The survivors still serve each other's clients.
    CHECK(httpPost(nodes[1]->daemon->controlPort, "/send?group=default", "still here").body == "4");
}

TEST_CASE("Redis killed and restarted while commands flow: local clients served, missing nodes named, rejoin") {
    RedisServer redis;
    auto nodes = startCluster(redis, 3, 1);
    for (auto &n : nodes) drain(*n->clients[0], 50ms);

    redis.kill();
    // Commands keep answering within the command timeout, with this node's clients, naming the rest.
    bool sawPartial = false;
    for (int i = 0; i < 5; ++i) {
        const auto start = std::chrono::steady_clock::now();
        auto r = httpPost(nodes[0]->daemon->controlPort, "/send?group=default", "during");
        const auto took = std::chrono::steady_clock::now() - start;
        CHECK(r.status == 200);
        CHECK(took < Millis(kCommandTimeoutMs + 1500));
        if (r.header("X-Wsgw-Missing-Nodes") == "gw-2,gw-3") {
            sawPartial = true;
            CHECK(r.body == "1");
        }
    }
    CHECK(sawPartial);
    CHECK(drain(*nodes[0]->clients[0]).size() == 5); // its own client got every one

    redis.start();
    // Every node rejoins by itself.
    for (auto &n : nodes) CHECK(eventually([&] { return liveNodes(*n->daemon) == 3; }, 15s));
    REQUIRE(eventually([&] {
        auto r = httpPost(nodes[1]->daemon->controlPort, "/send?group=default", "after");
        return r.body == "3" && r.header("X-Wsgw-Missing-Nodes").empty();
    }, 15s));
    for (auto &n : nodes) {
        auto got = drain(*n->clients[0]);
        CHECK(!got.empty());
        CHECK(got.back().data == "after");
    }
}

TEST_CASE("a node joining later is part of the next command") {
    RedisServer redis;
    auto nodes = startCluster(redis, 2, 1);
    CHECK(httpPost(nodes[0]->daemon->controlPort, "/send?group=default", "two").body == "2");
    nodes.push_back(startNode(redis, "gw-3", 2));
    REQUIRE(eventually([&] { return liveNodes(*nodes[0]->daemon) == 3; }));
    auto r = httpPost(nodes[0]->daemon->controlPort, "/send?group=default", "three");
    CHECK(r.body == "4");
    auto got = drain(*nodes[2]->clients[1]);
    REQUIRE(got.size() == 1);
    CHECK(got[0].data == "three");
    // It leaves cleanly on SIGTERM: gone from the list at once, not lost.
    CHECK(nodes[2]->daemon->stop(SIGTERM) == 0);
    CHECK(eventually([&] { return liveNodes(*nodes[0]->daemon) == 2; }, 3s));
    std::this_thread::sleep_for(Millis(kDeadAfterMs + 2 * kHeartbeatMs));
    for (auto &e : nodes[0]->daemon->events()) CHECK(e.value("reason", "") != "node_lost");
}

TEST_CASE("the JSON API over the cluster: clauses, count, pages across nodes") {
    RedisServer redis;
    auto nodes = startCluster(redis, 3, 2);
    // Each node's first client is role=a, its second role=b; gw-2's second also has vip.
    for (auto &n : nodes) {
        REQUIRE(httpPost(n->daemon->controlPort, "/settags?id=" + n->ids[0], "role=a").body == "1");
        REQUIRE(httpPost(n->daemon->controlPort, "/settags?id=" + n->ids[1], "role=b").body == "1");
    }
    REQUIRE(httpPost(nodes[1]->daemon->controlPort, "/settags?id=" + nodes[1]->ids[1], "vip=1").body == "1");
    auto post = [&](std::size_t from, const std::string &path, const nlohmann::json &body) {
        auto r = httpPost(nodes[from]->daemon->controlPort, path, body.dump(), "application/json");
        INFO(path << " " << body.dump() << " -> " << r.status << " " << r.body);
        REQUIRE(r.status == 200);
        return nlohmann::json::parse(r.body);
    };

    // From gw-1: every role=b but the vip one, on the other nodes too.
    auto answer = post(0, "/v1/send",
                       {{"selector", {{"all", {{"role", "b"}}}, {"not", {{"vip", "1"}}}}}, {"message", "b-not-vip"}});
    CHECK(answer["count"] == 2);
    CHECK(answer["nodes"]["answered"] == nlohmann::json({"gw-1", "gw-2", "gw-3"}));
    CHECK(answer["nodes"]["missing"] == nlohmann::json::array());
    for (std::size_t n = 0; n < 3; ++n) {
        CHECK(drain(*nodes[n]->clients[0], 100ms).empty());
        auto got = drain(*nodes[n]->clients[1], n == 1 ? 100ms : 300ms);
        REQUIRE(got.size() == (n == 1 ? 0u : 1u));
        if (n != 1) CHECK(got[0].data == "b-not-vip");
    }
    // any + exclude_ids from gw-3.
    answer = post(2, "/v1/send",
                  {{"selector", {{"any", {{"role", {"a", "b"}}}}, {"exclude_ids", {nodes[0]->ids[0], nodes[1]->ids[1]}}}},
                   {"message", "most"}});
    CHECK(answer["count"] == 4);

    // count: a dry run over every node.
    auto r = httpGet(nodes[1]->daemon->controlPort,
                     "/v1/count?selector=%7B%22has%22%3A%5B%22role%22%5D%7D"); // {"has":["role"]}
    REQUIRE(r.status == 200);
    CHECK(nlohmann::json::parse(r.body)["count"] == 6);

    // Pages of 4 from gw-2 list all 6 in id order, each once, with their nodes.
    std::vector<std::string> seen;
    std::set<std::string> seenNodes;
    std::string cursor;
    for (int page = 0; page < 5; ++page) {
        r = httpGet(nodes[1]->daemon->controlPort, "/v1/connections?limit=4" + (cursor.empty() ? "" : "&cursor=" + cursor));
        REQUIRE(r.status == 200);
        auto j = nlohmann::json::parse(r.body);
        for (auto &c : j["connections"]) {
            seen.push_back(c["id"]);
            seenNodes.insert(c["node"].get<std::string>());
        }
        if (j["next_cursor"].is_null()) break;
        cursor = j["next_cursor"];
    }
    CHECK(seen.size() == 6);
    CHECK(std::is_sorted(seen.begin(), seen.end()));
    CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == 6);
    CHECK(seenNodes == std::set<std::string>{"gw-1", "gw-2", "gw-3"});

    // settags and close through JSON selectors on another node's connections.
    answer = post(0, "/v1/settags", {{"selector", {{"has", {"vip"}}}}, {"tags", {{"vip", ""}, {"gold", "1"}}}});
    CHECK(answer["count"] == 1);
    CHECK(httpGet(nodes[2]->daemon->controlPort, "/status?gold=1").body ==
          "id=" + nodes[1]->ids[1] + " gold=1 group=default role=b\n");
    answer = post(2, "/v1/close", {{"selector", {{"all", {{"gold", "1"}}}}}, {"message", "bye"}});
    CHECK(answer["count"] == 1);
    auto got = drain(*nodes[1]->clients[1]);
    REQUIRE(got.size() >= 2);
    CHECK(got[got.size() - 2].data == "bye");
    CHECK(got.back().kind == Received::Kind::Close);
}

TEST_CASE("the dashboard's stream counts every node's connections") {
    RedisServer redis;
    auto nodes = startCluster(redis, 3, 2);
    // The first event of GET /v1/stream on gw-2: a reader that stops after it.
    httplib::Client client("127.0.0.1", nodes[1]->daemon->controlPort);
    client.set_read_timeout(5, 0);
    nlohmann::json snapshot;
    REQUIRE(eventually([&] {
        std::string text;
        client.Get("/v1/stream", [&](const char *data, std::size_t n) {
            text.append(data, n);
            return text.find("\n\n") == std::string::npos; // false ends the request
        });
        auto at = text.find("data: ");
        if (at == std::string::npos) return false;
        snapshot = nlohmann::json::parse(text.substr(at + 6, text.find('\n', at) - at - 6));
        // Heartbeats carry the counts: wait until every node has reported its 2.
        return snapshot["nodes"].size() == 3 &&
               std::all_of(snapshot["nodes"].begin(), snapshot["nodes"].end(),
                           [](const nlohmann::json &n) { return n["connections"] == 2; });
    }));
    CHECK(snapshot["node"] == "gw-2");
    CHECK(snapshot["connections"] == 2); // this node's own
    std::set<std::string> names;
    for (auto &n : snapshot["nodes"]) names.insert(n["id"].get<std::string>());
    CHECK(names == std::set<std::string>{"gw-1", "gw-2", "gw-3"});
}
