// The Redis connection mirror (connection_redis_sync): the latest state of every connection,
// coalesced per shard and written from one thread of its own; see RedisMirrorOptions.
#include "mirror_refresh.h"
#include "mirror_resync.h"
#include "mirror_table.h"
#include "redis_client.h"

#include <wsgw/hub.h>
#include <wsgw/mirror.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <system_error>
#include <thread>
#include <unordered_set>

namespace wsgw {

namespace {

using Reply = RedisClient::Reply;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::size_t kBoxes = 64;    // shards share boxes beyond this (correct, only more contention)
constexpr std::size_t kChunk = 512;   // states per pipelined round trip
constexpr auto kMinBackoff = 100ms;
constexpr auto kMaxBackoff = 10'000ms;
constexpr auto kFlushSlice = 250ms;   // longest the writer flushes before its other duties
constexpr int kUnknown = -1, kDown = 0, kUp = 1;

// One shard's pending states. The shard thread merges into it; the writer swaps it out.
struct alignas(64) Box {
    std::mutex mu;
    MirrorTable table;
    std::atomic<std::size_t> size{0};
};

std::string connectionKey(ConnectionId id) {
    char text[ConnectionId::kTextLength];
    id.format(text);
    std::string key = "connection:";
    key.append(text, sizeof text);
    return key;
}

// Errors that say "not now" (a full memory, a replica, a server still loading, missing rights):
// the write is retried. Any other error reply refuses this write for good.
bool transient(const std::string &error) {
    for (const char *prefix : {"OOM", "READONLY", "LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN", "NOREPLICAS",
                               "CLUSTERDOWN", "NOAUTH", "NOPERM", "MISCONF"})
        if (error.rfind(prefix, 0) == 0) return true;
    return false;
}

std::string randomRunId() {
    std::random_device rd;
    char text[17];
    std::snprintf(text, sizeof text, "%08x%08x", rd(), rd());
    return text;
}

class RedisMirror final : public ConnectionMirror {
public:
    explicit RedisMirror(RedisMirrorOptions options)
        : options_(std::move(options)), client_(options_.redis), nodeSet_("wsgw:node:" + options_.node + ":connections"),
          alive_("wsgw:node:" + options_.node + ":alive"), runId_(randomRunId()),
          ttl_(std::to_string(options_.keyTtl.count())),
          markerMs_(std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(options_.keyTtl).count() / 2)),
          aliveEvery_(std::min<Clock::duration>(1s, options_.keyTtl / 6)),
          refreshEvery_(std::clamp<Clock::duration>(options_.keyTtl / 30, 50ms, 1s)), refresh_(options_.keyTtl / 3) {}

    ~RedisMirror() override { stop(0ms); }

    std::string name() const override { return "redis-mirror"; }

    void opened(std::size_t shard, const Connection &conn, const Tags &tags) noexcept override {
        upsert(shard, conn, tags, true);
    }
    void changed(std::size_t shard, ConnectionId id, const Tags &tags) noexcept override {
        try {
            put(shard, id, MirrorState::tagsOnly(static_cast<std::uint32_t>(shard), tags));
        } catch (...) {
            lost_.store(true);
        }
    }
    void closed(std::size_t shard, ConnectionId id) noexcept override {
        try {
            put(shard, id, MirrorState::remove(static_cast<std::uint32_t>(shard)));
        } catch (...) {
            lost_.store(true);
        }
    }

    bool start(Hub &hub, std::string *error) noexcept override {
        std::lock_guard lock(lifecycle_);
        if (thread_.joinable() || stopped_) return true;
        try {
            resync_ = std::make_unique<MirrorResync>(
                hub, [this](std::size_t shard, const Connection &c, const Tags &tags) { upsert(shard, c, tags, false); });
            thread_ = std::thread([this] { run(); });
        } catch (const std::exception &e) {
            if (error) *error = std::string("cannot start the Redis mirror's thread: ") + e.what();
            return false;
        }
        return true;
    }

    void stop(std::chrono::milliseconds flushFor) noexcept override {
        std::lock_guard lock(lifecycle_);
        if (stopped_) return;
        stopped_ = true;
        {
            std::lock_guard w(wakeMu_);
            stopDeadline_ = Clock::now() + flushFor;
            stopping_.store(true);
        }
        wake_.notify_one();
        if (thread_.joinable()) thread_.join();
    }

    MirrorStats stats() const override {
        MirrorStats s;
        s.name = name();
        s.connected = state_.load() == kUp;
        {
            std::lock_guard lock(errorMu_);
            s.lastError = lastError_;
        }
        s.pending = carried_.load(std::memory_order_relaxed);
        for (const Box &b : boxes_) s.pending += b.size.load(std::memory_order_relaxed);
        s.written = written_.load(std::memory_order_relaxed);
        s.failures = failures_.load(std::memory_order_relaxed);
        s.resyncs = resyncs_.load(std::memory_order_relaxed);
        return s;
    }

private:
    // --- the shard side: O(1) under the box's lock, no I/O -------------------------------------

    void upsert(std::size_t shard, const Connection &conn, const Tags &tags, bool fresh) noexcept {
        try {
            put(shard, conn.id(),
                MirrorState::upsert(static_cast<std::uint32_t>(shard), std::string(conn.endpoint()), conn.remoteAddress(),
                                    tags, fresh));
        } catch (...) {
            lost_.store(true); // a resync rewrites what was lost
        }
    }

    void put(std::size_t shard, ConnectionId id, MirrorState &&state) {
        Box &box = boxes_[shard % kBoxes];
        {
            std::lock_guard lock(box.mu);
            box.table.put(id, std::move(state));
            box.size.store(box.table.size(), std::memory_order_relaxed);
        }
        // One wake-up per writer cycle, not one per change.
        if (!wakePending_.load(std::memory_order_relaxed) && !wakePending_.exchange(true)) {
            std::lock_guard w(wakeMu_);
            wake_.notify_one();
        }
    }

    // --- the writer thread ----------------------------------------------------------------------

    void run() {
        Clock::duration backoff = kMinBackoff;
        auto retryAt = Clock::time_point::min();
        auto nextAlive = Clock::time_point::min();
        auto lastRefresh = Clock::now();
        while (!stopping_.load()) {
            wakePending_.store(false);
            takePending();
            if (Clock::now() >= retryAt) {
                bool ok = client_.connected() || connect();
                if (ok && lost_.exchange(false)) startFullResync("a change could not be recorded (out of memory)");
                if (ok && resync_->active()) ok = resyncStep(retryAt);
                // Bounded, so that the marker and the refreshes keep their pace under a flood.
                if (ok) ok = flush(Clock::now() + kFlushSlice);
                if (ok && Clock::now() >= nextAlive) {
                    ok = checkAlive();
                    nextAlive = Clock::now() + aliveEvery_;
                }
                if (ok && Clock::now() - lastRefresh >= refreshEvery_) {
                    // Not the whole time spent down: a reconnect's resync rewrites every TTL.
                    ok = refreshKeys(std::min<Clock::duration>(Clock::now() - lastRefresh, 2 * refreshEvery_));
                    lastRefresh = Clock::now();
                }
                if (ok) {
                    backoff = kMinBackoff;
                } else {
                    failures_.fetch_add(1, std::memory_order_relaxed);
                    retryAt = Clock::now() + backoff;
                    backoff = std::min<Clock::duration>(backoff * 2, kMaxBackoff);
                }
            }
            const bool working = state_.load() == kUp && Clock::now() >= retryAt && (resync_->active() || !carry_.empty());
            if (working) continue; // more to write, or a resync's next step (paced by the shards)
            // While down, changes only wait in the shards' tables (bounded by the connections):
            // they do not wake the writer before its retry is due.
            auto until = std::max(retryAt, std::min(nextAlive, lastRefresh + refreshEvery_));
            std::unique_lock lock(wakeMu_);
            wake_.wait_until(lock, until, [&] {
                return stopping_.load() || (wakePending_.load() && Clock::now() >= retryAt);
            });
        }
        finish();
    }

    // Moves what the shards queued into the writer's own table (newer states over older ones).
    void takePending() {
        for (Box &box : boxes_) {
            if (box.size.load(std::memory_order_relaxed) == 0) continue;
            {
                std::lock_guard lock(box.mu);
                box.table.swap(spare_);
                box.size.store(0, std::memory_order_relaxed);
            }
            carry_.absorb(spare_);
            spare_.compact(); // the next box gets it: a burst's buckets are not kept for ever
        }
        carried_.store(carry_.size(), std::memory_order_relaxed);
    }

    bool connect() {
        if (!client_.connect()) return down(client_.error());
        if (!cleaned_) {
            if (!removeLeftovers()) return false;
            cleaned_ = true;
        }
        bool lostIgnored = false;
        if (!aliveTick(lostIgnored)) return false;
        // Anything written before may be gone (a restarted Redis, a failover to a replica that
        // lagged): write everything again.
        if (sentBefore_) startFullResync("reconnected");
        setUp(true, {});
        return true;
    }

    // The keys an earlier run of this node left behind: its connections are gone.
    bool removeLeftovers() {
        Reply members;
        if (!client_.command({"SMEMBERS", nodeSet_}, members)) return down(client_.error());
        for (std::size_t i = 0; i < members.elements.size(); i += kChunk) {
            std::vector<std::string> keys;
            for (std::size_t j = i; j < std::min(i + kChunk, members.elements.size()); ++j) {
                keys.push_back("connection:" + members.elements[j]);
                keys.push_back("connection:" + members.elements[j] + ":tags");
            }
            std::vector<std::string_view> args{"DEL"};
            args.insert(args.end(), keys.begin(), keys.end());
            Reply r;
            if (!client_.command(args, r)) return down(client_.error());
        }
        Reply r;
        if (!client_.command({"DEL", nodeSet_}, r)) return down(client_.error());
        return true;
    }

    // Refreshes the marker and the node set's TTL; `lost` is set when the marker was gone (the
    // copy was lost while we were connected, or we stalled for longer than its TTL).
    bool aliveTick(bool &lost) {
        client_.append({"SET", alive_, runId_, "NX", "PX", markerMs_});
        client_.append({"PEXPIRE", alive_, markerMs_});
        client_.append({"EXPIRE", nodeSet_, ttl_});
        Reply set, expire, node;
        if (!client_.read(set) || !client_.read(expire) || !client_.read(node)) return down(client_.error());
        for (const Reply *r : {&set, &expire, &node})
            if (r->kind == Reply::Kind::Error) return down("Redis at " + client_.where() + ": " + r->text, false);
        lost = set.kind == Reply::Kind::Ok; // NX set it: it was not there
        return true;
    }

    bool checkAlive() {
        bool lost = false;
        if (!aliveTick(lost)) return false;
        if (lost) startFullResync("the copy in Redis was lost (flushed, or Redis restarted empty)");
        return true;
    }

    void startFullResync(std::string why) { resync_->startFull(std::move(why), ++epoch_); }

    // One step of the resync in progress; when it is done, deletes the keys of connections that
    // no shard has any more (their close was lost) and counts it.
    bool resyncStep(Clock::time_point &retryAt) {
        switch (resync_->step()) {
        case MirrorResync::Step::Working:
            return true;
        case MirrorResync::Step::Busy:
            retryAt = Clock::now() + kMinBackoff;
            return true;
        case MirrorResync::Step::Stopped:
            return true;
        case MirrorResync::Step::Done:
            break;
        }
        const bool full = resync_->full();
        if (full) {
            std::vector<ConnectionId> live = resync_->collected();
            std::unordered_set<ConnectionId, ConnectionIdHash> alive(live.begin(), live.end());
            for (const auto &[id, w] : refresh_.all())
                if (w.epoch < resync_->epoch() && !alive.count(id)) carry_.put(id, MirrorState::remove(w.shard));
            resyncs_.fetch_add(1, std::memory_order_relaxed);
        }
        if (options_.onResync) options_.onResync(resync_->why(), resync_->reported());
        resync_->finish();
        return true;
    }

    // Appends the commands of one state; returns how many replies they make.
    std::size_t append(ConnectionId id, const MirrorState &s) {
        const std::string key = connectionKey(id);
        const std::string tagsKey = key + ":tags";
        const std::string_view idText = std::string_view(key).substr(sizeof "connection:" - 1);
        if (s.kind == MirrorState::Kind::Delete) {
            client_.append({"DEL", key, tagsKey});
            client_.append({"SREM", nodeSet_, idText});
            return 2;
        }
        // The tags are replaced in one step: nobody sees them half-written, a deleted tag is gone.
        std::size_t n = 3;
        client_.append({"MULTI"});
        client_.append({"DEL", tagsKey});
        if (!s.tags.empty()) {
            args_.assign({"HSET", tagsKey});
            for (const auto &[k, v] : s.tags) args_.insert(args_.end(), {k, v});
            client_.append(args_);
            client_.append({"EXPIRE", tagsKey, ttl_});
            n += 2;
        }
        if (s.kind == MirrorState::Kind::Upsert) {
            client_.append({"HSET", key, "addr", s.addr, "node", options_.node, "endpoint", s.endpoint});
            client_.append({"EXPIRE", key, ttl_});
            client_.append({"SADD", nodeSet_, idText});
            n += 3;
        }
        client_.append({"EXEC"});
        return n;
    }

    // Writes every pending state in pipelined chunks until none is left or `until` passes.
    // Returns false (the unanswered states stay pending) when the connection failed or Redis
    // refused writes for now.
    bool flush(Clock::time_point until) {
        std::vector<ConnectionId> order;
        std::vector<std::size_t> replies;
        while (!carry_.empty() && Clock::now() < until) {
            order = carry_.ids(); // nothing else changes carry_ until this pass is over
            for (std::size_t at = 0; at < order.size() && Clock::now() < until; at += kChunk) {
                const std::size_t end = std::min(order.size(), at + kChunk);
                if (!writeChunk(order.data() + at, end - at, replies)) return false;
                if (stopping_.load() && !finishing_) return true; // finish() takes over
            }
            takePending();
        }
        carry_.compact();
        setUp(true, {});
        return true;
    }

    // One round trip: the states of `ids` (all pending in carry_), pipelined.
    bool writeChunk(const ConnectionId *ids, std::size_t n, std::vector<std::size_t> &replies) {
        replies.clear();
        bool upserts = false;
        for (std::size_t i = 0; i < n; ++i) {
            MirrorState &state = *carry_.find(ids[i]);
            replies.push_back(append(ids[i], state));
            upserts = upserts || state.kind == MirrorState::Kind::Upsert;
            state.fresh = false; // sent: it may be applied, whatever we hear back
        }
        // A node set created by this chunk's SADDs gets its TTL at once.
        if (upserts) client_.append({"EXPIRE", nodeSet_, ttl_});
        sentBefore_ = true;
        std::string refusedFor;
        const auto now = Clock::now();
        for (std::size_t i = 0; i < n; ++i) {
            std::string error;
            for (std::size_t k = 0; k < replies[i]; ++k) {
                Reply r;
                if (!client_.read(r)) return down(client_.error());
                if (error.empty() && (r.kind == Reply::Kind::Error || r.errorElements > 0)) error = r.text;
            }
            if (!error.empty() && transient(error)) {
                refusedFor = error; // stays pending
                continue;
            }
            const MirrorState &s = *carry_.find(ids[i]);
            if (error.empty()) {
                if (s.kind == MirrorState::Kind::Upsert) refresh_.written(ids[i], s.shard, epoch_, now);
                if (s.kind == MirrorState::Kind::Delete) refresh_.deleted(ids[i]);
                written_.fetch_add(1, std::memory_order_relaxed);
            } else {
                failures_.fetch_add(1, std::memory_order_relaxed); // refused for good (WRONGTYPE...)
                setError("Redis refused a write of " + connectionKey(ids[i]) + ": " + error);
            }
            carry_.erase(ids[i]);
        }
        if (upserts) {
            Reply r;
            if (!client_.read(r)) return down(client_.error());
        }
        carried_.store(carry_.size(), std::memory_order_relaxed);
        if (!refusedFor.empty()) return down("Redis at " + client_.where() + " refuses writes: " + refusedFor, false);
        return true;
    }

    // Re-EXPIREs the keys that are due, paced (see MirrorRefresh). A connection whose hash is
    // gone although it was written (evicted, deleted by someone) is rewritten by its shard.
    bool refreshKeys(Clock::duration elapsed) {
        std::vector<ConnectionId> due;
        refresh_.take(Clock::now(), refresh_.budget(elapsed), due);
        std::vector<std::pair<std::uint32_t, ConnectionId>> missing;
        for (std::size_t i = 0; i < due.size(); i += kChunk) {
            const std::size_t end = std::min(due.size(), i + kChunk);
            for (std::size_t j = i; j < end; ++j) {
                const std::string key = connectionKey(due[j]);
                client_.append({"EXPIRE", key, ttl_});
                client_.append({"EXPIRE", key + ":tags", ttl_});
            }
            for (std::size_t j = i; j < end; ++j) {
                Reply hash, tags;
                if (!client_.read(hash) || !client_.read(tags)) return down(client_.error());
                if (hash.kind == Reply::Kind::Integer && hash.integer == 0)
                    if (const MirrorRefresh::Written *w = refresh_.find(due[j])) missing.emplace_back(w->shard, due[j]);
            }
        }
        if (!missing.empty()) resync_->startPartial(missing, "keys of live connections were missing");
        return true;
    }

    // At stop: writes what is left until the deadline; a clean stop removes the marker.
    void finish() {
        finishing_ = true;
        takePending();
        if (!carry_.empty() && Clock::now() < stopDeadline_ && (client_.connected() || connect())) flush(stopDeadline_);
        takePending();
        if (carry_.empty() && client_.connected()) {
            Reply r;
            client_.command({"DEL", alive_}, r);
        }
        carried_.store(carry_.size(), std::memory_order_relaxed);
        client_.disconnect();
        state_.store(kDown);
    }

    // --- state reporting ------------------------------------------------------------------------

    bool down(std::string why, bool broken = true) {
        if (broken) client_.disconnect();
        setError(why);
        setUp(false, why);
        return false;
    }

    void setError(std::string why) {
        std::lock_guard lock(errorMu_);
        lastError_ = std::move(why);
    }

    // The first state is reported too: a mirror that cannot connect at start says why once.
    void setUp(bool up, const std::string &why) {
        if (state_.exchange(up ? kUp : kDown) == (up ? kUp : kDown)) return;
        if (up) setError({});
        if (options_.onStateChange) options_.onStateChange(up, why);
    }

    RedisMirrorOptions options_;
    RedisClient client_; // the writer thread's
    const std::string nodeSet_;
    const std::string alive_;
    const std::string runId_;
    const std::string ttl_;      // seconds, for EXPIRE
    const std::string markerMs_; // the marker's TTL: half the keys', so it goes first
    const Clock::duration aliveEvery_;
    const Clock::duration refreshEvery_;

    Box boxes_[kBoxes];
    std::atomic<bool> lost_{false}; // a shard could not record a change (out of memory)

    // The writer thread's own.
    MirrorTable carry_;
    MirrorTable spare_;
    MirrorRefresh refresh_;
    std::unique_ptr<MirrorResync> resync_;
    std::uint64_t epoch_ = 0;
    bool cleaned_ = false;
    bool sentBefore_ = false;
    bool finishing_ = false;
    std::vector<std::string_view> args_;

    std::mutex wakeMu_;
    std::condition_variable wake_;
    std::atomic<bool> wakePending_{false};
    std::atomic<bool> stopping_{false};
    Clock::time_point stopDeadline_{};

    std::mutex lifecycle_;
    std::thread thread_;
    bool stopped_ = false;

    std::atomic<int> state_{kUnknown};
    mutable std::mutex errorMu_;
    std::string lastError_;
    std::atomic<std::size_t> carried_{0};
    std::atomic<std::uint64_t> written_{0};
    std::atomic<std::uint64_t> failures_{0};
    std::atomic<std::uint64_t> resyncs_{0};
};

} // namespace

std::unique_ptr<ConnectionMirror> makeRedisMirror(RedisMirrorOptions options, std::string *error) {
    auto refuse = [&](std::string why) -> std::unique_ptr<ConnectionMirror> {
        if (error) *error = std::move(why);
        return nullptr;
    };
    if (options.keyTtl < std::chrono::seconds(3))
        return refuse("key TTL of " + std::to_string(options.keyTtl.count()) + " s: use at least 3 s");
    if (options.node.empty()) return refuse("the node name is empty");
    try {
        return std::make_unique<RedisMirror>(std::move(options));
    } catch (const std::exception &e) {
        return refuse(std::string("cannot create the Redis mirror: ") + e.what());
    }
}

} // namespace wsgw
