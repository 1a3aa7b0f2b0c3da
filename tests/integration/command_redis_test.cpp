// Commands in over a Redis stream (command_redis): two real wsgwd nodes in a cluster (their own
// redis-server) read one command stream on another real redis-server as one consumer group, and
// apply each command once, cluster-wide, with a reply, whichever node read it. Duplicates,
// malformed entries, entries a dead consumer held, and the command Redis killed with SIGKILL and
// restarted (appendfsync always).
#include "clients.h"
#include "harness.h"
#include "redis_server.h"
#include "skip.h"

#include "ws_client.h"

#include <doctest/doctest.h>

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

const std::string kStream = "wsgw:commands";
constexpr int kClaimIdleMs = 600;

std::string nodeConfig(const RedisServer &cluster, const RedisServer &commands, const std::string &node) {
    return "node_id: " + node + "\ndrain_s: 0\ncluster:\n  addr: '" + cluster.url() +
           "'\n  heartbeat_ms: 200\n  dead_after_ms: 1000\n  command_timeout_ms: 1000\n" + "command_redis:\n  addr: '" +
           commands.url() + "'\n  claim_idle_ms: " + std::to_string(kClaimIdleMs) + "\n";
}

const std::vector<std::pair<std::string, std::string>> kThisNode{{"X-Wsgw-Scope", "node"}};

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
    return nlohmann::json::parse(r.body)["count"].get<std::size_t>();
}

// Two nodes with `clients` clients each (group=default), both reading the command stream.
std::vector<Node> startNodes(const RedisServer &cluster, const RedisServer &commands, std::size_t clients) {
    std::vector<Node> nodes(2);
    for (std::size_t i = 0; i < nodes.size(); ++i) {
        nodes[i].daemon = Daemon::start(nodeConfig(cluster, commands, "gw-" + std::to_string(i + 1)));
        for (std::size_t c = 0; c < clients; ++c) {
            nodes[i].clients.push_back(connect(*nodes[i].daemon));
            REQUIRE(eventually([&] { return localCount(*nodes[i].daemon) == c + 1; }));
        }
    }
    for (Node &n : nodes) {
        REQUIRE_MESSAGE(eventually([&] { return liveNodes(*n.daemon) == nodes.size(); }), n.daemon->err());
        REQUIRE_MESSAGE(eventually([&] { return metric(*n.daemon, "wsgw_command_bus_up{transport=\"redis\"}") == 1; }),
                        n.daemon->err());
    }
    return nodes;
}

std::vector<std::string> split(const std::string &text, char sep) {
    std::vector<std::string> out;
    std::size_t start = 0;
    for (std::size_t at; (at = text.find(sep, start)) != std::string::npos; start = at + 1)
        out.push_back(text.substr(start, at - start));
    out.push_back(text.substr(start));
    return out;
}

// XADD to the command stream; returns the entry id.
std::string xadd(RedisProbe &probe, const std::vector<std::string> &fields, const std::string &stream = kStream) {
    std::vector<std::string> args{"XADD", stream, "*"};
    args.insert(args.end(), fields.begin(), fields.end());
    return probe.command(args);
}

// The replies in `stream` once there are `n` of them (or what there is after 10 s).
std::vector<std::map<std::string, std::string>> replies(RedisProbe &probe, const std::string &stream, std::size_t n) {
    std::vector<std::map<std::string, std::string>> out;
    eventually([&] { return (out = probe.stream(stream)).size() >= n; }, 10000ms);
    return out;
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

// How many entries the group has delivered and not had acknowledged.
std::string pendingCount(RedisProbe &probe) {
    return probe.command({"EVAL", "return redis.call('XPENDING', KEYS[1], ARGV[1])[1]", "1", kStream, "wsgw"});
}

// The replies by command_id (replies of different nodes come in any order).
std::map<std::string, std::map<std::string, std::string>> byId(const std::vector<std::map<std::string, std::string>> &r) {
    std::map<std::string, std::map<std::string, std::string>> out;
    for (const auto &x : r) out[x.at("command_id")] = x;
    return out;
}

} // namespace

TEST_CASE("send, settags and close through the stream reach every client of both nodes once, with replies") {
    RedisServer clusterRedis, commandRedis;
    auto nodes = startNodes(clusterRedis, commandRedis, 2);
    RedisProbe probe(commandRedis.port());

    // send, text and binary: four clients over two nodes, whichever node read it.
    xadd(probe, {"action", "send", "selector", "group=default", "message", "hello", "command_id", "c1", "reply_to",
                 "replies"});
    xadd(probe, {"action", "send", "selector", "group=default", "type", "binary", "message",
                 std::string("\x00\xff\x01", 3), "command_id", "c2", "reply_to", "replies"});
    auto r = replies(probe, "replies", 2);
    REQUIRE(r.size() == 2);
    auto ids = byId(r);
    CHECK(ids["c1"]["count"] == "4");
    CHECK(ids["c2"]["count"] == "4");
    CHECK(ids["c1"].count("missing_nodes") == 0);
    for (Node &n : nodes)
        for (auto &c : n.clients) {
            auto got = drain(*c);
            REQUIRE(got.size() == 2);
            // The two entries may be read by different nodes: order between them is not promised.
            std::set<std::pair<bool, std::string>> seen;
            for (auto &g : got) seen.insert({g.isBinary(), g.data});
            CHECK(seen == std::set<std::pair<bool, std::string>>{{false, "hello"}, {true, std::string("\x00\xff\x01", 3)}});
        }

    // settags on one client of gw-2 (by its tag-less selector: group + a tag set first by HTTP),
    // then a send to the new tag.
    auto id = httpWithHeaders(nodes[1].daemon->controlPort, "GET", "/status", kThisNode).body.substr(3, 36);
    xadd(probe, {"action", "settags", "selector", "id=" + id, "tags", "vip=1&group=", "command_id", "t1", "reply_to",
                 "replies"});
    r = replies(probe, "replies", 3);
    REQUIRE(r.size() == 3);
    CHECK(r[2]["count"] == "1");
    CHECK(httpGet(nodes[0].daemon->controlPort, "/status?vip=1").body == "id=" + id + " vip=1\n");

    // close with a last message, on that client.
    xadd(probe, {"action", "close", "selector", "vip=1", "message", "bye", "reply_to", "replies"});
    r = replies(probe, "replies", 4);
    REQUIRE(r.size() == 4);
    CHECK(r[3]["count"] == "1");
    CHECK(r[3]["command_id"].rfind(kStream + ":", 0) == 0); // no command_id: the entry's id
    bool closed = false;
    for (auto &c : nodes[1].clients) {
        auto got = drain(*c);
        if (got.size() == 2 && got[0].data == "bye" && got[1].kind == Received::Kind::Close) {
            closed = true;
            CHECK(c->closeCode() == 1000);
        }
    }
    CHECK(closed);

    // A JSON selector (the /v1 form): every client but the one closed and one excluded by id.
    const std::string other = httpWithHeaders(nodes[0].daemon->controlPort, "GET", "/status", kThisNode).body.substr(3, 36);
    xadd(probe, {"action", "send", "selector", R"({"has":["group"],"exclude_ids":[")" + other + R"("]})", "message",
                 "json", "reply_to", "replies"});
    r = replies(probe, "replies", 5);
    REQUIRE(r.size() == 5);
    CHECK(r[4]["count"] == "2");
    std::size_t reached = 0;
    for (Node &n : nodes)
        for (auto &c : n.clients) {
            auto got = drain(*c, 200ms);
            if (!got.empty() && got[0].data == "json") ++reached;
        }
    CHECK(reached == 2);

    // Everything acknowledged; counted where it was read.
    CHECK(eventually([&] { return pendingCount(probe) == "0"; }));
    CHECK(busMetric(nodes, "wsgw_command_bus_commands_total{transport=\"redis\",outcome=\"applied\"}") == 5);
    CHECK(busMetric(nodes, "wsgw_command_bus_replies_total{transport=\"redis\"}") == 5);
}

TEST_CASE("both nodes consume, yet each command reaches each client exactly once") {
    RedisServer clusterRedis, commandRedis;
    auto nodes = startNodes(clusterRedis, commandRedis, 2);
    RedisProbe probe(commandRedis.port());
    constexpr int kCommands = 200;
    for (int i = 0; i < kCommands; ++i)
        xadd(probe, {"action", "send", "selector", "group=default", "message", "m" + std::to_string(i)});
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
    CHECK(eventually([&] { return pendingCount(probe) == "0"; }));
    // Both nodes took part (a group spreads entries over its consumers that are waiting).
    auto consumers = probe.command({"XINFO", "CONSUMERS", kStream, "wsgw"});
    (void)consumers;
    CHECK(busMetric(nodes, "wsgw_command_bus_commands_total{transport=\"redis\",outcome=\"applied\"}") == kCommands);
}

TEST_CASE("a repeated command_id is acknowledged and answered but not applied again") {
    RedisServer clusterRedis, commandRedis;
    auto nodes = startNodes(clusterRedis, commandRedis, 1);
    RedisProbe probe(commandRedis.port());
    for (int i = 0; i < 3; ++i)
        xadd(probe, {"action", "send", "selector", "group=default", "message", "once", "command_id", "dup-1",
                     "reply_to", "dreplies"});
    auto r = replies(probe, "dreplies", 3);
    REQUIRE(r.size() == 3);
    int firsts = 0, duplicates = 0;
    for (auto &x : r) {
        CHECK(x["command_id"] == "dup-1");
        CHECK(x["count"] == "2");
        (x.count("duplicate") ? duplicates : firsts) += 1;
    }
    CHECK(firsts == 1);
    CHECK(duplicates == 2);
    for (Node &n : nodes)
        for (auto &c : n.clients) {
            auto got = drain(*c);
            REQUIRE(got.size() == 1);
            CHECK(got[0].data == "once");
        }
    CHECK(busMetric(nodes, "wsgw_command_bus_commands_total{transport=\"redis\",outcome=\"duplicate\"}") == 2);
    CHECK(eventually([&] { return pendingCount(probe) == "0"; }));
}

TEST_CASE("malformed commands are acknowledged, answered with an error, counted and logged once per kind") {
    RedisServer clusterRedis, commandRedis;
    auto nodes = startNodes(clusterRedis, commandRedis, 1);
    RedisProbe probe(commandRedis.port());
    const std::vector<std::pair<std::vector<std::string>, std::string>> bad{
        {{"action", "explode", "selector", "group=default"}, "unknown action"},
        {{"action", "explode", "selector", "group=default"}, "unknown action"},
        {{"selector", "group=default", "message", "x"}, "no action"},
        {{"action", "send", "selector", "group=%zz", "message", "x"}, "bad selector"},
        {{"action", "send", "selector", R"({"any":{"group":"default"}})", "message", "x"}, "bad selector"},
        {{"action", "send", "selector", "group=default", "type", "jpeg", "message", "x"}, "bad type"},
        {{"action", "send", "selector", "group=default", "message", "\xff\xfe"}, "text message not UTF-8"},
        {{"action", "settags", "selector", "group=default", "tags", "=x"}, "bad tags"},
    };
    for (auto &[fields, kind] : bad) {
        auto f = fields;
        f.insert(f.end(), {"reply_to", "mreplies"});
        xadd(probe, f);
    }
    auto r = replies(probe, "mreplies", bad.size());
    REQUIRE(r.size() == bad.size());
    std::multiset<std::string> kinds;
    for (auto &x : r) {
        CHECK(x.count("count") == 0);
        REQUIRE(x.count("error") == 1);
        kinds.insert(x["error"].substr(0, x["error"].find(':')));
    }
    std::multiset<std::string> expected;
    for (auto &[fields, kind] : bad) expected.insert(kind);
    CHECK(kinds == expected);
    CHECK(eventually([&] { return pendingCount(probe) == "0"; }));
    CHECK(busMetric(nodes, "wsgw_command_bus_commands_total{transport=\"redis\",outcome=\"malformed\"}") ==
          static_cast<double>(bad.size()));
    // Logged once per kind and node: the two unknown actions make one line on a node that read both.
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
    // Nothing reached the clients, and the nodes still work.
    for (Node &n : nodes)
        for (auto &c : n.clients) CHECK(drain(*c, 100ms).empty());
    xadd(probe, {"action", "send", "selector", "group=default", "message", "still here", "reply_to", "mreplies"});
    r = replies(probe, "mreplies", bad.size() + 1);
    REQUIRE(r.size() == bad.size() + 1);
    CHECK(r.back()["count"] == "2");
}

TEST_CASE("entries a consumer took and never acknowledged are claimed and applied by a node") {
    RedisServer clusterRedis, commandRedis;
    auto nodes = startNodes(clusterRedis, commandRedis, 1);
    RedisProbe probe(commandRedis.port());
    // A consumer that takes entries and dies before acknowledging them. Redis hands a new entry
    // to the consumer that has been blocked longest; the nodes block for a second at a time, so a
    // ghost that blocks and lets a second pass is first in line (bounded retries if not).
    std::size_t taken = 0;
    for (int i = 0; i < 10 && taken < 2; ++i) {
        std::size_t got = 0;
        std::thread reader([&] {
            RedisProbe ghost(commandRedis.port());
            ghost.command({"CLIENT", "SETNAME", "ghost"});
            got = ghost.readGroup("wsgw", "ghost", kStream, 5000).size();
        });
        // Once the ghost is blocked, the nodes' one-second reads come round behind it.
        auto ghostBlocked = [&] {
            for (const std::string &line : split(probe.command({"CLIENT", "LIST"}), '\n'))
                if (line.find("name=ghost ") != std::string::npos && line.find("flags=b") != std::string::npos)
                    return true;
            return false;
        };
        if (!eventually(ghostBlocked, 4000ms)) {
            reader.join();
            continue;
        }
        std::this_thread::sleep_for(1100ms);
        xadd(probe, {"action", "send", "selector", "group=default", "message", "orphan", "command_id",
                     "orphan-" + std::to_string(i), "reply_to", "oreplies"});
        reader.join();
        taken += got;
    }
    REQUIRE(taken >= 1);
    auto r = replies(probe, "oreplies", 1);
    // Every entry written was applied once, the ghost's after claim_idle_ms.
    const std::size_t written = static_cast<std::size_t>(std::stoul(probe.command({"XLEN", kStream})));
    r = replies(probe, "oreplies", written);
    CHECK(r.size() == written);
    for (auto &x : r) CHECK(x["count"] == "2");
    CHECK(busMetric(nodes, "wsgw_command_bus_claimed_total{transport=\"redis\"}") >= static_cast<double>(taken));
    for (Node &n : nodes)
        for (auto &c : n.clients) {
            auto got = drain(*c);
            CHECK(got.size() == written);
        }
    CHECK(eventually([&] { return pendingCount(probe) == "0"; }));
}

TEST_CASE("the command Redis killed with SIGKILL and restarted: nothing it acknowledged is lost or applied twice") {
    RedisServer clusterRedis;
    RedisServer commandRedis(0, true); // appendonly, appendfsync always
    auto nodes = startNodes(clusterRedis, commandRedis, 1);
    constexpr int kBefore = 50;
    {
        RedisProbe probe(commandRedis.port());
        for (int i = 0; i < kBefore; ++i)
            xadd(probe, {"action", "send", "selector", "group=default", "message", "k" + std::to_string(i),
                         "command_id", "k" + std::to_string(i)});
        commandRedis.kill(); // right after the last XADD was acknowledged
    }
    for (Node &n : nodes)
        CHECK(eventually([&] { return metric(*n.daemon, "wsgw_command_bus_up{transport=\"redis\"}") == 0; }));
    commandRedis.start();
    for (Node &n : nodes)
        CHECK(eventually([&] { return metric(*n.daemon, "wsgw_command_bus_up{transport=\"redis\"}") == 1; }, 10000ms));
    RedisProbe probe(commandRedis.port());
    xadd(probe, {"action", "send", "selector", "group=default", "message", "after", "command_id", "after"});
    for (Node &n : nodes)
        for (auto &c : n.clients) {
            std::multiset<std::string> got;
            for (int i = 0; i < 4 * kBefore && !got.count("after"); ++i) {
                Received m = c->receive(10000ms);
                if (!m.isMessage()) break;
                got.insert(m.data);
            }
            for (auto &m : drain(*c)) got.insert(m.data);
            for (int i = 0; i < kBefore; ++i) CHECK(got.count("k" + std::to_string(i)) == 1);
            CHECK(got.count("after") == 1);
        }
    CHECK(eventually([&] { return pendingCount(probe) == "0"; }));
    for (Node &n : nodes) CHECK(n.daemon->stop(SIGTERM, 10000ms) == 0);
}
