// The Redis cluster transport: pub/sub for messages, keys with TTLs for heartbeats, SET NX for
// the clean-up of a lost node; see RedisClusterOptions.
#include "redis_client.h"

#include <wsgw/cluster.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <set>
#include <thread>

namespace wsgw {

namespace {

using Reply = RedisClient::Reply;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kMinBackoff = 100ms;
constexpr auto kMaxBackoff = 1000ms;
constexpr std::size_t kBatch = 256;   // PUBLISHes per round trip
constexpr std::size_t kChunk = 256;   // lost connections read or deleted per round trip
constexpr auto kPollSlice = 100ms;    // how often the subscriber looks whether it should stop

const std::string kNodes = "wsgw:cluster:nodes";
std::string channelOf(const std::string &node) { return "wsgw:cluster:node:" + node; }
std::string aliveOf(const std::string &node) { return "wsgw:cluster:alive:" + node; }
std::string cleanupOf(const std::string &node) { return "wsgw:cluster:cleanup:" + node; }
// The Redis mirror's keys (redis_mirror.cpp).
std::string mirrorSetOf(const std::string &node) { return "wsgw:node:" + node + ":connections"; }

std::string describeJson(const NodeInfo &n) {
    nlohmann::json j = {{"address", n.address},
                        {"connections", n.connections},
                        {"heartbeat_ms", n.heartbeatMs},
                        {"started_ms", n.startedMs}};
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

NodeInfo parseNode(const std::string &id, const std::string &text) {
    NodeInfo n;
    n.id = id;
    try {
        auto j = nlohmann::json::parse(text);
        n.address = j.value("address", "");
        n.connections = j.value("connections", std::size_t{0});
        n.heartbeatMs = j.value("heartbeat_ms", std::int64_t{0});
        n.startedMs = j.value("started_ms", std::int64_t{0});
    } catch (...) {
        // another program's entry, or a newer format: the node is still there
    }
    return n;
}

class RedisClusterTransport final : public ClusterTransport {
public:
    explicit RedisClusterTransport(RedisClusterOptions o) : options_(std::move(o)) {
        // No blocking call may outlast a heartbeat's worth of being dead.
        options_.redis.commandTimeout = std::min(options_.redis.commandTimeout, options_.deadAfter);
        options_.redis.connectTimeout = std::min(options_.redis.connectTimeout, options_.deadAfter);
        std::random_device rd;
        runId_ = std::to_string(rd()) + std::to_string(rd());
        lockMs_ = std::to_string(std::max<std::int64_t>(options_.deadAfter.count() * 10, 10'000));
        deadMs_ = std::to_string(options_.deadAfter.count());
    }
    ~RedisClusterTransport() override { stop(); }

    std::string name() const override { return "redis"; }

    bool start(const std::string &self, Receiver &receiver, std::string *error) noexcept override {
        std::lock_guard lock(lifecycle_);
        if (running_) return true;
        self_ = self;
        receiver_ = &receiver;
        try {
            running_ = true;
            subscriber_ = std::thread([this] { subscribeLoop(); });
            publisher_ = std::thread([this] { publishLoop(); });
            watcher_ = std::thread([this] { watchLoop(); });
        } catch (const std::exception &e) {
            if (error) *error = std::string("cannot start the cluster transport's threads: ") + e.what();
            stopLocked();
            return false;
        }
        return true;
    }

    void stop() noexcept override {
        std::lock_guard lock(lifecycle_);
        stopLocked();
    }

    bool post(const std::string &node, std::uint64_t tag, std::string message) noexcept override {
        if (!pubUp_.load() || stopping_.load()) return false;
        try {
            std::lock_guard lock(queueMu_);
            if (queue_.size() >= options_.maxQueued) return false;
            queue_.push_back({node, tag, std::move(message)});
        } catch (...) {
            return false;
        }
        queueWake_.notify_one();
        return true;
    }

    bool connected() const noexcept override { return upMask_.load() == kAll; }

private:
    struct Out {
        std::string node;
        std::uint64_t tag;
        std::string message;
    };
    enum : int { kSub = 1, kPub = 2, kWatch = 4, kAll = 7 };

    void stopLocked() noexcept {
        if (!running_) return;
        {
            std::lock_guard lock(queueMu_);
            stopping_.store(true);
        }
        queueWake_.notify_all();
        {
            std::lock_guard lock(stopMu_);
        }
        stopWake_.notify_all();
        for (std::thread *t : {&subscriber_, &publisher_, &watcher_})
            if (t->joinable()) t->join();
        running_ = false;
    }

    // Waits `d` unless the transport stops first; false if it stops.
    bool pause(Clock::duration d) {
        std::unique_lock lock(stopMu_);
        return !stopWake_.wait_for(lock, d, [&] { return stopping_.load(); });
    }

    // Each of the three connections reports its state; the receiver hears of the whole: up when
    // all three are, down when one goes.
    void report(int which, bool isUp, const std::string &why) {
        std::lock_guard lock(stateMu_);
        const int before = upMask_.load();
        const int after = isUp ? (before | which) : (before & ~which);
        upMask_.store(after);
        const int state = after == kAll ? 1 : 0;
        if (state == reported_) return;
        if (state == 0 && reported_ == -1 && isUp) return; // still starting: not down yet
        reported_ = state;
        receiver_->stateChanged(state == 1, why);
    }

    // --- subscriber: this node's channel ------------------------------------------------------

    void subscribeLoop() {
        RedisClient client(options_.redis);
        Clock::duration backoff = kMinBackoff;
        const std::string channel = channelOf(self_);
        while (!stopping_.load()) {
            Reply r;
            if (!client.connect() || !client.command({"SUBSCRIBE", channel}, r) || r.kind == Reply::Kind::Error) {
                report(kSub, false, client.connected() ? "SUBSCRIBE refused: " + r.text : client.error());
                client.disconnect();
                if (!pause(backoff)) break;
                backoff = std::min<Clock::duration>(backoff * 2, kMaxBackoff);
                continue;
            }
            backoff = kMinBackoff;
            report(kSub, true, {});
            while (!stopping_.load()) {
                bool got = false;
                if (!client.poll(r, kPollSlice, got)) {
                    report(kSub, false, client.error());
                    break;
                }
                if (!got) continue;
                if (r.kind == Reply::Kind::Array && r.elements.size() == 3 && r.elements[0] == "message")
                    receiver_->received(std::move(r.elements[2]));
            }
        }
    }

    // --- publisher: one connection, so messages to a node keep their order ---------------------

    void publishLoop() {
        RedisClient client(options_.redis);
        Clock::duration backoff = kMinBackoff;
        std::vector<Out> batch;
        while (!stopping_.load()) {
            if (!client.connected()) {
                if (!client.connect()) {
                    pubUp_.store(false);
                    report(kPub, false, client.error());
                    failQueued();
                    if (!pause(backoff)) break;
                    backoff = std::min<Clock::duration>(backoff * 2, kMaxBackoff);
                    continue;
                }
                backoff = kMinBackoff;
                pubUp_.store(true);
                report(kPub, true, {});
            }
            {
                std::unique_lock lock(queueMu_);
                queueWake_.wait_for(lock, options_.heartbeat, [&] { return stopping_.load() || !queue_.empty(); });
                if (stopping_.load()) break;
                const std::size_t n = std::min(queue_.size(), kBatch);
                batch.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.begin() + n));
                queue_.erase(queue_.begin(), queue_.begin() + n);
            }
            if (batch.empty()) {
                // Idle: a PING finds a dead connection before a command needs it.
                Reply r;
                if (!client.command({"PING"}, r)) {
                    pubUp_.store(false);
                    report(kPub, false, client.error());
                }
                continue;
            }
            std::vector<std::string> channels;
            channels.reserve(batch.size());
            for (const Out &o : batch) {
                channels.push_back(channelOf(o.node));
                client.append({"PUBLISH", channels.back(), o.message});
            }
            for (std::size_t i = 0; i < batch.size(); ++i) {
                Reply r;
                if (!client.read(r)) {
                    pubUp_.store(false);
                    report(kPub, false, client.error());
                    for (std::size_t j = i; j < batch.size(); ++j) receiver_->undeliverable(batch[j].node, batch[j].tag);
                    break;
                }
                // No subscriber: the node is gone (or between reconnects); it will never see it.
                if (r.kind != Reply::Kind::Integer || r.integer == 0) receiver_->undeliverable(batch[i].node, batch[i].tag);
            }
            batch.clear();
        }
        failQueued();
    }

    void failQueued() {
        std::deque<Out> left;
        {
            std::lock_guard lock(queueMu_);
            left.swap(queue_);
        }
        for (const Out &o : left) receiver_->undeliverable(o.node, o.tag);
    }

    // --- watcher: heartbeats, the list of live nodes, the clean-up of lost ones ----------------

    void watchLoop() {
        RedisClient client(options_.redis);
        Clock::duration backoff = kMinBackoff;
        while (!stopping_.load()) {
            const auto began = Clock::now();
            if (!client.connected() && !client.connect()) {
                report(kWatch, false, client.error());
                if (!pause(backoff)) break;
                backoff = std::min<Clock::duration>(backoff * 2, kMaxBackoff);
                continue;
            }
            if (!heartbeat(client)) {
                report(kWatch, false, client.error());
                client.disconnect();
                if (!pause(backoff)) break;
                backoff = std::min<Clock::duration>(backoff * 2, kMaxBackoff);
                continue;
            }
            backoff = kMinBackoff;
            report(kWatch, true, {});
            if (!pause(options_.heartbeat - std::min<Clock::duration>(Clock::now() - began, options_.heartbeat))) break;
        }
        // A clean stop leaves at once: the others do not wait for dead_after, nor clean up after us.
        if (client.connected() || client.connect()) {
            Reply r;
            client.append({"DEL", aliveOf(self_)});
            client.append({"HDEL", kNodes, self_});
            client.read(r) && client.read(r);
        }
    }

    bool heartbeat(RedisClient &c) {
        const NodeInfo me = receiver_->describe();
        c.append({"SET", aliveOf(self_), runId_, "PX", deadMs_});
        c.append({"HSET", kNodes, self_, describeJson(me)});
        c.append({"HGETALL", kNodes});
        Reply set, hset, all;
        if (!c.read(set) || !c.read(hset) || !c.read(all)) return false;
        for (const Reply *r : {&set, &hset, &all})
            if (r->kind == Reply::Kind::Error) {
                c.disconnect();
                return false;
            }
        std::vector<std::pair<std::string, std::string>> entries;
        for (std::size_t i = 0; i + 1 < all.elements.size(); i += 2)
            entries.emplace_back(all.elements[i], all.elements[i + 1]);
        for (const auto &e : entries) c.append({"EXISTS", aliveOf(e.first)});
        std::vector<NodeInfo> live;
        std::vector<std::string> lost;
        for (const auto &e : entries) {
            Reply r;
            if (!c.read(r)) return false;
            if (e.first == self_ || (r.kind == Reply::Kind::Integer && r.integer == 1))
                live.push_back(parseNode(e.first, e.second));
            else
                lost.push_back(e.first);
        }
        receiver_->membership(std::move(live));
        for (const std::string &node : lost)
            if (!cleanUp(c, node)) return false;
        return true;
    }

    // Exactly one survivor wins the lock and reports the node's connections; the lock expires on
    // its own (a winner that dies half-way leaves the rest to whoever wins it next).
    bool cleanUp(RedisClient &c, const std::string &node) {
        Reply lock;
        if (!c.command({"SET", cleanupOf(node), self_, "NX", "PX", lockMs_}, lock)) return false;
        if (lock.kind != Reply::Kind::Ok) return true; // another node has it
        Reply members;
        if (!c.command({"SMEMBERS", mirrorSetOf(node)}, members)) return false;
        std::vector<LostConnection> connections;
        std::vector<std::string> keys;
        for (std::size_t at = 0; at < members.elements.size(); at += kChunk) {
            const std::size_t end = std::min(members.elements.size(), at + kChunk);
            for (std::size_t i = at; i < end; ++i) {
                c.append({"HGETALL", "connection:" + members.elements[i]});
                c.append({"HGETALL", "connection:" + members.elements[i] + ":tags"});
            }
            for (std::size_t i = at; i < end; ++i) {
                Reply hash, tags;
                if (!c.read(hash) || !c.read(tags)) return false;
                const std::string &idText = members.elements[i];
                keys.push_back("connection:" + idText);
                keys.push_back("connection:" + idText + ":tags");
                auto id = ConnectionId::parse(idText);
                if (!id || hash.elements.empty()) continue; // closed meanwhile, or not ours
                LostConnection lc;
                lc.id = *id;
                std::string owner;
                for (std::size_t k = 0; k + 1 < hash.elements.size(); k += 2) {
                    if (hash.elements[k] == "endpoint") lc.endpoint = hash.elements[k + 1];
                    if (hash.elements[k] == "addr") lc.remoteAddress = hash.elements[k + 1];
                    if (hash.elements[k] == "node") owner = hash.elements[k + 1];
                }
                if (owner != node) continue;
                for (std::size_t k = 0; k + 1 < tags.elements.size(); k += 2)
                    lc.tags.emplace(tags.elements[k], tags.elements[k + 1]);
                connections.push_back(std::move(lc));
            }
        }
        receiver_->nodeLost(node, std::move(connections));
        for (std::size_t at = 0; at < keys.size(); at += kChunk) {
            std::vector<std::string_view> del{"DEL"};
            for (std::size_t i = at; i < std::min(keys.size(), at + kChunk); ++i) del.push_back(keys[i]);
            Reply r;
            if (!c.command(del, r)) return false;
        }
        Reply r;
        c.append({"DEL", mirrorSetOf(node)});
        c.append({"HDEL", kNodes, node});
        return c.read(r) && c.read(r);
    }

    RedisClusterOptions options_;
    std::string self_;
    std::string runId_;
    std::string lockMs_;
    std::string deadMs_;
    Receiver *receiver_ = nullptr;

    std::mutex lifecycle_;
    bool running_ = false;
    std::thread subscriber_, publisher_, watcher_;

    std::mutex queueMu_;
    std::condition_variable queueWake_;
    std::deque<Out> queue_;
    std::atomic<bool> stopping_{false};
    std::mutex stopMu_;
    std::condition_variable stopWake_;
    std::atomic<bool> pubUp_{false};

    std::mutex stateMu_;
    std::atomic<int> upMask_{0};
    int reported_ = -1;
};

} // namespace

std::unique_ptr<ClusterTransport> makeRedisClusterTransport(RedisClusterOptions options, std::string *error) {
    auto refuse = [&](std::string why) -> std::unique_ptr<ClusterTransport> {
        if (error) *error = std::move(why);
        return nullptr;
    };
    if (options.heartbeat < 10ms) return refuse("a heartbeat under 10 ms");
    if (options.deadAfter <= options.heartbeat)
        return refuse("dead_after (" + std::to_string(options.deadAfter.count()) +
                      " ms) must be longer than the heartbeat (" + std::to_string(options.heartbeat.count()) + " ms)");
    try {
        return std::make_unique<RedisClusterTransport>(std::move(options));
    } catch (const std::exception &e) {
        return refuse(std::string("cannot create the Redis cluster transport: ") + e.what());
    }
}

} // namespace wsgw
