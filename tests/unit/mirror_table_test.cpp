// The mirror's coalescing rules (MirrorTable) and key-refresh pacing (MirrorRefresh), without
// Redis: what a mirror writes after any sequence of changes, and how its refreshes spread out.
// (tests/integration/redis_test.cpp runs the Redis mirror itself against a real redis-server.)
#include "mirror_refresh.h"
#include "mirror_table.h"

#include <doctest/doctest.h>

#include <map>

using namespace wsgw;
using namespace std::chrono_literals;
using Kind = MirrorState::Kind;

namespace {

const ConnectionId a = *ConnectionId::parse("00000000-0000-4000-8000-00000000000a");
const ConnectionId b = *ConnectionId::parse("00000000-0000-4000-8000-00000000000b");

MirrorState opened(const Tags &tags, bool fresh = true) { return MirrorState::upsert(1, "/ws", "10.0.0.1:5", tags, fresh); }

} // namespace

TEST_CASE("an open and a close before the first write amount to nothing; after a write, the close deletes") {
    MirrorTable t;
    t.put(a, opened({{"g", "1"}}));
    t.put(a, MirrorState::tagsOnly(1, {{"g", "2"}}));
    t.put(a, MirrorState::remove(1));
    CHECK(t.empty());

    // A resync's open (not fresh): the keys may exist, so the close must delete them.
    t.put(b, opened({{"g", "1"}}, false));
    t.put(b, MirrorState::remove(1));
    REQUIRE(t.find(b));
    CHECK(t.find(b)->kind == Kind::Delete);

    // A fresh open rewritten by a resync is not fresh any more.
    MirrorTable u;
    u.put(a, opened({}));
    u.put(a, opened({}, false));
    CHECK_FALSE(u.find(a)->fresh);
}

TEST_CASE("tag changes keep the latest full set; an unwritten open keeps its address and endpoint") {
    MirrorTable t;
    t.put(a, opened({{"g", "1"}}));
    t.put(a, MirrorState::tagsOnly(1, {{"g", "1"}, {"u", "x"}}));
    t.put(a, MirrorState::tagsOnly(1, {{"u", "y"}}));
    const MirrorState *s = t.find(a);
    REQUIRE(s);
    CHECK(s->kind == Kind::Upsert);
    CHECK(s->fresh);
    CHECK(s->addr == "10.0.0.1:5");
    CHECK(s->endpoint == "/ws");
    CHECK(s->tags == TagList{{"u", "y"}});

    // Tags of a connection written earlier: only the tags are pending.
    t.put(b, MirrorState::tagsOnly(0, {{"k", "v"}}));
    t.put(b, MirrorState::tagsOnly(0, {}));
    CHECK(t.find(b)->kind == Kind::ReplaceTags);
    CHECK(t.find(b)->tags.empty());
    CHECK(t.size() == 2);
}

TEST_CASE("a close is final") {
    MirrorTable t;
    t.put(a, MirrorState::tagsOnly(1, {{"g", "1"}}));
    t.put(a, MirrorState::remove(1));
    t.put(a, MirrorState::tagsOnly(1, {{"g", "2"}}));
    t.put(a, opened({{"g", "3"}}, false));
    CHECK(t.find(a)->kind == Kind::Delete);
}

TEST_CASE("absorbing newer states into the writer's table follows the same rules") {
    // The writer's table: a's open was sent (not fresh; its write failed), b's was never sent.
    MirrorTable writer;
    writer.put(a, opened({{"g", "1"}}, false));
    writer.put(b, opened({{"g", "1"}}));
    // Meanwhile on the shard: a's tags changed, b closed.
    MirrorTable shard;
    shard.put(a, MirrorState::tagsOnly(1, {{"g", "2"}}));
    shard.put(b, MirrorState::remove(1));
    writer.absorb(shard);
    CHECK(shard.empty());
    REQUIRE(writer.size() == 1); // b: opened and closed, never written: nothing
    const MirrorState *s = writer.find(a);
    CHECK(s->kind == Kind::Upsert); // still everything: the open may not have been applied
    CHECK(s->addr == "10.0.0.1:5");
    CHECK(s->tags == TagList{{"g", "2"}});

    // Any sequence ends in the state its last event says.
    std::map<int, Kind> expect;
    MirrorTable t;
    const ConnectionId ids[] = {a, b};
    for (int round = 0; round < 3; ++round)
        for (int i = 0; i < 2; ++i) {
            MirrorTable batch;
            batch.put(ids[i], MirrorState::tagsOnly(0, {{"r", std::to_string(round)}}));
            t.absorb(batch);
        }
    CHECK(t.find(a)->kind == Kind::ReplaceTags);
    CHECK(t.find(b)->kind == Kind::ReplaceTags);
    CHECK(t.find(b)->tags == TagList{{"r", "2"}});
}

TEST_CASE("refreshes come due one interval after the write, and each connection once per interval") {
    using Clock = MirrorRefresh::Clock;
    MirrorRefresh r(10s);
    const Clock::time_point t0{};
    r.written(a, 3, 1, t0);
    r.written(b, 4, 1, t0 + 2s);
    r.written(a, 3, 2, t0 + 5s); // a rewrite keeps its turn and its first epoch
    std::vector<ConnectionId> due;
    r.take(t0 + 9s, 100, due);
    CHECK(due.empty());
    r.take(t0 + 10s, 100, due);
    CHECK(due == std::vector<ConnectionId>{a});
    CHECK(r.find(a)->shard == 3);
    CHECK(r.find(a)->epoch == 1);
    due.clear();
    r.deleted(b);
    r.take(t0 + 15s, 100, due);
    CHECK(due.empty()); // b is gone; a is due again at 20 s
    r.take(t0 + 20s, 100, due);
    CHECK(due == std::vector<ConnectionId>{a});
    CHECK(r.size() == 1);
}

TEST_CASE("a burst of written connections is refreshed spread out, within about one interval") {
    using Clock = MirrorRefresh::Clock;
    const auto interval = 10s;
    MirrorRefresh r(interval);
    const Clock::time_point t0{};
    constexpr std::size_t kConnections = 10'000;
    for (std::size_t i = 0; i < kConnections; ++i) {
        std::array<std::uint8_t, 16> bytes{};
        bytes[0] = static_cast<std::uint8_t>(i);
        bytes[1] = static_cast<std::uint8_t>(i >> 8);
        bytes[6] = 0x40;
        r.written(ConnectionId(bytes), 0, 0, t0);
    }
    // Every 100 ms, as the mirror's thread does: no step refreshes more than a small share, and
    // every connection is refreshed within 1.85 intervals of its write (its keys live for 3).
    std::size_t refreshed = 0, most = 0;
    Clock::time_point last = t0;
    std::vector<ConnectionId> due;
    for (auto now = t0 + 100ms; now <= t0 + 18500ms; now += 100ms) {
        due.clear();
        r.take(now, r.budget(now - last), due);
        last = now;
        refreshed += due.size();
        most = std::max(most, due.size());
        if (now < t0 + interval) CHECK(due.empty());
    }
    CHECK(refreshed >= kConnections);
    CHECK(most <= kConnections / 40); // 2.5% of them per 100 ms at most: not all at once
}
