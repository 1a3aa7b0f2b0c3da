// The connection mirror (connection_redis_sync) against a real redis-server: the keys and their
// TTLs, tag changes and closes, convergence after an outage (Redis paused, Redis restarted
// empty, FLUSHALL), keys that cannot outlive a killed node, and a restarted node's cleanup.
#include "clients.h"
#include "harness.h"
#include "redis_server.h"
#include "skip.h"

#include "ws_client.h"

#include <doctest/doctest.h>

#include <csignal>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

using namespace wsgw::itest;
using wsgw::test::WsClient;

namespace {

using Hash = std::map<std::string, std::string>;

// Every test here needs a redis-server: without one the program is skipped (exit 77), or fails
// under CI=true (tests/support/skip.h).
const wsgw::test::Prerequisite redisServer{"redis-server is not installed (Debian package redis-server; "
                                           "scripts/bootstrap installs it)",
                                           [] { return haveRedisServer(); }};

std::string mirrorConfig(const RedisServer &redis, const std::string &node, const std::string &more = "") {
    return "node_id: " + node + "\nconnection_redis_sync: {addr: '" + redis.url() + "'" + more + "}\n";
}

nlohmann::json connections(Daemon &d) {
    return nlohmann::json::parse(httpGet(d.controlPort, "/status", "application/json").body)["connections"];
}

// The ids of `d`'s connections, once it has `n` of them.
std::vector<std::string> idsOnce(Daemon &d, std::size_t n) {
    std::vector<std::string> ids;
    REQUIRE(eventually([&] {
        ids.clear();
        for (auto &c : connections(d)) ids.push_back(c["id"]);
        return ids.size() == n;
    }));
    return ids;
}

// Why Redis does not hold exactly `d`'s connections as the mirror writes them ("" when it does):
// for each connection connection:<id> {addr, node, endpoint} and connection:<id>:tags with
// exactly its tags (no key without tags), both with a TTL; the node set holds exactly their ids;
// no other connection:* key exists.
std::string mismatch(RedisProbe &probe, Daemon &d, const std::string &node) {
    std::ostringstream why;
    std::set<std::string> expectedKeys, ids;
    for (auto &c : connections(d)) {
        const std::string id = c["id"];
        ids.insert(id);
        const std::string key = "connection:" + id;
        expectedKeys.insert(key);
        Hash conn = probe.hash(key);
        Hash want{{"addr", c["remote_addr"]}, {"node", node}, {"endpoint", c["endpoint"]}};
        if (conn != want) why << key << " has " << conn.size() << " fields, not the expected ones; ";
        Hash tags = probe.hash(key + ":tags");
        Hash wantTags = c["tags"].get<Hash>();
        if (tags != wantTags) why << key << ":tags differs (" << tags.size() << " vs " << wantTags.size() << "); ";
        if (!wantTags.empty()) expectedKeys.insert(key + ":tags");
    }
    for (const std::string &k : probe.list({"KEYS", "connection:*"})) {
        if (!expectedKeys.count(k)) why << "stale key " << k << "; ";
        long ttl = std::stol(probe.command({"TTL", k}));
        if (ttl <= 0) why << k << " has TTL " << ttl << "; ";
    }
    auto members = probe.list({"SMEMBERS", "wsgw:node:" + node + ":connections"});
    if (std::set<std::string>(members.begin(), members.end()) != ids) why << "the node set differs; ";
    return why.str();
}

bool converged(RedisProbe &probe, Daemon &d, const std::string &node, std::string &why) {
    why = mismatch(probe, d, node);
    return why.empty();
}

std::vector<std::unique_ptr<WsClient>> connectMany(Daemon &d, int n) {
    std::vector<std::unique_ptr<WsClient>> out;
    for (int i = 0; i < n; ++i) out.push_back(connect(d));
    return out;
}

void closeClient(WsClient &ws) {
    REQUIRE(ws.sendClose(1000));
    ws.waitClosed(2000ms);
}

} // namespace

TEST_CASE("the mirror: keys appear with a TTL, follow tag changes and deletes, and vanish on close") {
    RedisServer redis;
    auto d = Daemon::start(mirrorConfig(redis, "mirror-1"));
    RedisProbe probe(redis.port());
    auto ws = connect(*d);
    std::string id = idsOnce(*d, 1)[0];
    Hash conn;
    REQUIRE(eventually([&] { return !(conn = probe.hash("connection:" + id)).empty(); }));
    const std::string &addr = conn["addr"];
    CHECK(addr.rfind("127.0.0.1:", 0) == 0);
    CHECK(addr.size() > 10);
    CHECK(addr.find_first_not_of("0123456789", 10) == std::string::npos);
    CHECK(conn["node"] == "mirror-1");
    CHECK(conn["endpoint"] == "/connect");
    CHECK(probe.hash("connection:" + id + ":tags") == Hash{{"group", "default"}});
    CHECK(probe.list({"SMEMBERS", "wsgw:node:mirror-1:connections"}) == std::vector<std::string>{id});
    // Every key has a TTL (key_ttl_s, default 120), the marker half of it.
    for (const std::string &key : {"connection:" + id, "connection:" + id + ":tags", std::string("wsgw:node:mirror-1:connections")}) {
        long ttl = std::stol(probe.command({"TTL", key}));
        CHECK_MESSAGE((ttl > 100 && ttl <= 120), key << " TTL " << ttl);
    }
    long marker = std::stol(probe.command({"TTL", "wsgw:node:mirror-1:alive"}));
    CHECK((marker > 50 && marker <= 60));

    REQUIRE(httpPost(d->controlPort, "/settags?id=" + id, "role=admin&user=u1").body == "1");
    REQUIRE(eventually([&] { return probe.hash("connection:" + id + ":tags").size() == 3; }));
    REQUIRE(httpPost(d->controlPort, "/settags?id=" + id, "role=&user=u2").body == "1");
    REQUIRE(eventually([&] { return probe.hash("connection:" + id + ":tags") == Hash{{"group", "default"}, {"user", "u2"}}; }));
    // Every tag deleted: no tags hash at all.
    REQUIRE(httpPost(d->controlPort, "/settags?id=" + id, "group=&user=").body == "1");
    REQUIRE(eventually([&] { return probe.command({"EXISTS", "connection:" + id + ":tags"}) == "0"; }));
    CHECK(probe.command({"EXISTS", "connection:" + id}) == "1");
    std::string why;
    CHECK_MESSAGE(converged(probe, *d, "mirror-1", why), why);
    CHECK(metric(*d, "wsgw_mirror_up") == 1);
    CHECK(metric(*d, "wsgw_mirror_written_total") >= 4);
    CHECK(metric(*d, "wsgw_mirror_resyncs_total") == 0);

    closeClient(*ws);
    REQUIRE(eventually([&] { return probe.command({"EXISTS", "connection:" + id, "connection:" + id + ":tags"}) == "0"; }));
    CHECK(probe.command({"EXISTS", "wsgw:node:mirror-1:connections"}) == "0"); // an empty set is no set
    CHECK(metric(*d, "wsgw_mirror_pending") == 0);
    // The mirror alone: stdout still has the event log (no stream configured).
    CHECK(d->out().find("\"action\":\"open\"") != std::string::npos);
    // A clean stop removes the marker: this node is gone.
    CHECK(d->stop(SIGTERM) == 0);
    CHECK(probe.command({"EXISTS", "wsgw:node:mirror-1:alive"}) == "0");
}

TEST_CASE("keys left by an earlier run of the same node are removed at start, others are not") {
    RedisServer redis;
    RedisProbe probe(redis.port());
    for (const char *ghost : {"g1", "g2"}) {
        probe.command({"HSET", std::string("connection:") + ghost, "addr", "10.0.0.1:1"});
        probe.command({"HSET", std::string("connection:") + ghost + ":tags", "group", "x"});
        probe.command({"SADD", "wsgw:node:crashy:connections", ghost});
    }
    probe.command({"HSET", "connection:other", "addr", "10.0.0.2:2"});
    probe.command({"SADD", "wsgw:node:someone-else:connections", "other"});
    auto d = Daemon::start(mirrorConfig(redis, "crashy"));
    REQUIRE(eventually([&] { return probe.command({"EXISTS", "connection:g1", "connection:g2:tags"}) == "0"; }));
    CHECK(probe.command({"EXISTS", "connection:g1:tags", "connection:g2"}) == "0");
    CHECK(probe.command({"EXISTS", "connection:other"}) == "1");
    CHECK(probe.command({"SCARD", "wsgw:node:someone-else:connections"}) == "1");
}

TEST_CASE("a node restarted after SIGKILL removes its earlier run's keys at once, long before their TTL") {
    RedisServer redis;
    RedisProbe probe(redis.port());
    std::vector<std::string> old;
    {
        auto d = Daemon::start(mirrorConfig(redis, "phoenix"));
        auto clients = connectMany(*d, 3);
        old = idsOnce(*d, 3);
        REQUIRE(eventually([&] { return probe.command({"SCARD", "wsgw:node:phoenix:connections"}) == "3"; }));
        d->stop(SIGKILL);
    }
    CHECK(probe.list({"KEYS", "connection:*"}).size() == 6);
    auto d = Daemon::start(mirrorConfig(redis, "phoenix"));
    auto ws = connect(*d);
    const std::string id = idsOnce(*d, 1)[0];
    std::string why;
    REQUIRE_MESSAGE(eventually([&] { return converged(probe, *d, "phoenix", why); }), why);
    for (const std::string &o : old) CHECK(probe.command({"EXISTS", "connection:" + o}) == "0");
}

TEST_CASE("a node killed with SIGKILL: its keys live while it does and vanish by their TTL once it is gone") {
    RedisServer redis;
    RedisProbe probe(redis.port());
    auto d = Daemon::start(mirrorConfig(redis, "mortal", ", key_ttl_s: 3"));
    auto clients = connectMany(*d, 5);
    idsOnce(*d, 5);
    std::string why;
    REQUIRE_MESSAGE(eventually([&] { return converged(probe, *d, "mortal", why); }), why);
    // Refreshed while the node lives: after twice their TTL the keys are all still there.
    std::this_thread::sleep_for(6s);
    CHECK_MESSAGE(converged(probe, *d, "mortal", why), why);
    CHECK(probe.command({"EXISTS", "wsgw:node:mortal:alive"}) == "1");

    d->stop(SIGKILL);
    // Gone within their TTL (3 s; generous margin for a loaded machine).
    CHECK(eventually([&] { return probe.list({"KEYS", "connection:*"}).empty(); }, 8000ms));
    CHECK(eventually([&] { return probe.list({"KEYS", "wsgw:node:mortal:*"}).empty(); }, 8000ms));
}

TEST_CASE("a live connection's keys deleted by someone else are rewritten at their next refresh") {
    RedisServer redis;
    RedisProbe probe(redis.port());
    auto d = Daemon::start(mirrorConfig(redis, "healer", ", key_ttl_s: 3"));
    auto clients = connectMany(*d, 3);
    auto ids = idsOnce(*d, 3);
    std::string why;
    REQUIRE_MESSAGE(eventually([&] { return converged(probe, *d, "healer", why); }), why);
    REQUIRE(probe.command({"DEL", "connection:" + ids[1], "connection:" + ids[1] + ":tags"}) == "2");
    // Refreshed every second (a third of key_ttl_s): the missing hash is noticed and rewritten.
    REQUIRE_MESSAGE(eventually([&] { return converged(probe, *d, "healer", why); }, 10000ms), why);
    CHECK(metric(*d, "wsgw_mirror_resyncs_total") == 0); // that one connection, not all of them
}

TEST_CASE("opens, tag changes and closes while Redis is paused converge once it answers: exact, no stale keys") {
    RedisServer redis;
    RedisProbe probe(redis.port());
    auto d = Daemon::start(mirrorConfig(redis, "steady", ", timeout_ms: 300"));
    auto clients = connectMany(*d, 6);
    auto before = idsOnce(*d, 6);
    std::string why;
    REQUIRE_MESSAGE(eventually([&] { return converged(probe, *d, "steady", why); }), why);

    redis.pause();
    REQUIRE(httpPost(d->controlPort, "/settags?id=" + before[0], "room=r1").body == "1");
    REQUIRE(eventually([&] { return metric(*d, "wsgw_mirror_up") == 0; }));
    auto ready = httpGet(d->controlPort, "/readyz");
    CHECK(ready.status == 503);
    CHECK(ready.body.find("connection mirror 'redis-mirror' is not connected") != std::string::npos);
    // Closes of written connections (their keys are in the paused Redis), tag changes back and
    // forth, new connections, and some that open and close within the outage.
    for (int round = 0; round < 20; ++round) {
        REQUIRE(httpPost(d->controlPort, "/settags?group=default", "round=" + std::to_string(round) + "&room=").body != "0");
        if (round % 5 == 0) REQUIRE(httpPost(d->controlPort, "/settags?id=" + before[1], "group=").body == "1");
    }
    REQUIRE(httpPost(d->controlPort, "/close?id=" + before[2] + "," + before[3], "").body == "2");
    for (int i = 0; i < 4; ++i) clients.push_back(connect(*d));
    auto brief = connectMany(*d, 3);
    REQUIRE(eventually([&] { return connections(*d).size() == 4 + 4 + 3; }));
    for (auto &b : brief) closeClient(*b);
    REQUIRE(eventually([&] { return connections(*d).size() == 8; }));
    CHECK(metric(*d, "wsgw_mirror_pending") > 0);

    redis.resume();
    REQUIRE_MESSAGE(eventually([&] { return converged(probe, *d, "steady", why); }, 20000ms), why << "\n" << d->err());
    CHECK(eventually([&] { return metric(*d, "wsgw_mirror_up") == 1; }));
    CHECK(metric(*d, "wsgw_mirror_pending") == 0);
    CHECK(metric(*d, "wsgw_mirror_failures_total") >= 1);
    CHECK(eventually([&] { return httpGet(d->controlPort, "/readyz").status == 200; }));
    CHECK(d->err().find("connection mirror 'redis-mirror' is down") != std::string::npos);
}

TEST_CASE("Redis restarted empty: every live connection is rewritten, closes made meanwhile leave nothing") {
    RedisServer redis;
    auto d = Daemon::start(mirrorConfig(redis, "reborn"));
    auto clients = connectMany(*d, 5);
    auto ids = idsOnce(*d, 5);
    {
        RedisProbe probe(redis.port());
        std::string why;
        REQUIRE_MESSAGE(eventually([&] { return converged(probe, *d, "reborn", why); }), why);
    }
    redis.kill();
    REQUIRE(httpPost(d->controlPort, "/settags?id=" + ids[0], "user=late").body == "1");
    REQUIRE(httpPost(d->controlPort, "/close?id=" + ids[1], "").body == "1");
    clients.push_back(connect(*d));
    REQUIRE(eventually([&] {
        auto now = connections(*d);
        return now.size() == 5 && std::none_of(now.begin(), now.end(), [&](auto &c) { return c["id"] == ids[1]; });
    }, 10000ms));
    REQUIRE(eventually([&] { return httpGet(d->controlPort, "/readyz").status == 503; }));
    redis.start();
    RedisProbe probe(redis.port());
    std::string why;
    REQUIRE_MESSAGE(eventually([&] { return converged(probe, *d, "reborn", why); }, 20000ms), why << "\n" << d->err());
    CHECK(probe.command({"EXISTS", "connection:" + ids[1]}) == "0");
    CHECK(probe.hash("connection:" + ids[0] + ":tags") == Hash{{"group", "default"}, {"user", "late"}});
    CHECK(eventually([&] { return metric(*d, "wsgw_mirror_resyncs_total") >= 1; }));
    CHECK(d->err().find("rewrote") != std::string::npos);
}

TEST_CASE("FLUSHALL while connected: the node notices its copy is gone and rewrites every connection") {
    RedisServer redis;
    RedisProbe probe(redis.port());
    auto d = Daemon::start(mirrorConfig(redis, "flushed"));
    auto clients = connectMany(*d, 40);
    auto ids = idsOnce(*d, 40);
    REQUIRE(httpPost(d->controlPort, "/settags?id=" + ids[7], "user=u7").body == "1");
    std::string why;
    REQUIRE_MESSAGE(eventually([&] { return converged(probe, *d, "flushed", why); }), why);
    REQUIRE(probe.command({"FLUSHALL"}) == "OK");
    CHECK(probe.list({"KEYS", "*"}).empty());
    // The marker is checked every second; the rewrite follows at once.
    REQUIRE_MESSAGE(eventually([&] { return converged(probe, *d, "flushed", why); }, 8000ms), why << "\n" << d->err());
    CHECK(probe.hash("connection:" + ids[7] + ":tags") == Hash{{"group", "default"}, {"user", "u7"}});
    CHECK(metric(*d, "wsgw_mirror_resyncs_total") == 1);
    CHECK(d->err().find("rewrote 40 connections: the copy in Redis was lost") != std::string::npos);
}

TEST_CASE("key_ttl_s is checked: under 3 s is a config error naming the line") {
    RedisServer redis;
    Daemon d(testConfig(freePort(), freePort(), mirrorConfig(redis, "n", ", key_ttl_s: 2")));
    CHECK(d.wait(10000ms) != 0);
    CHECK(d.err().find("key_ttl_s") != std::string::npos);
}
