#pragma once

#include <wsgw/connection_id.h>
#include <wsgw/event.h>
#include <wsgw/export.h>
#include <wsgw/hub.h>
#include <wsgw/message.h>
#include <wsgw/selector.h>
#include <wsgw/sink.h>
#include <wsgw/tags.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace wsgw {

/// One node of a cluster as its heartbeats describe it. Value type.
struct NodeInfo {
    std::string id;          ///< its node name (node_id), unique in the cluster
    std::string address;     ///< where its control API listens, as it says ("10.0.0.2:8081")
    std::size_t connections = 0;
    std::int64_t heartbeatMs = 0; ///< its last heartbeat: its wall clock, ms since the Unix epoch
    std::int64_t startedMs = 0;   ///< when it joined: its wall clock, ms since the Unix epoch
};

/// A connection a lost node held, as the Redis mirror recorded it (hash `connection:<id>`).
struct LostConnection {
    ConnectionId id;
    std::string endpoint;
    std::string remoteAddress;
    Tags tags;
};

/// How nodes reach one another: messages to a node, heartbeats, the list of live nodes, and the
/// clean-up of a node that died. Redis (makeRedisClusterTransport) is one; an embedder may bring
/// its own.
///
/// The contract a Cluster relies on:
///  - post() is at most once: a message is delivered once or not at all, never twice;
///  - the messages one node posts to another are received in the order they were posted;
///  - nodeLost() runs on exactly one live node per death (a transport needs a lock for that).
///
/// Thread-safe: post() is called from any thread, concurrently, and never blocks on I/O.
class WSGW_EXPORT ClusterTransport {
public:
    /// What a transport tells its cluster. Implemented by Cluster. Every call must return
    /// quickly; none throws.
    class Receiver {
    public:
        virtual ~Receiver();
        /// A message posted to this node, in the order its sender posted it.
        virtual void received(std::string message) noexcept = 0;
        /// The message `tag` posted to `node` was certainly not delivered (not subscribed, the
        /// connection failed before it was written) or may not have been (the connection failed
        /// before it was acknowledged).
        virtual void undeliverable(const std::string &node, std::uint64_t tag) noexcept = 0;
        /// What this node's next heartbeat says about it.
        virtual NodeInfo describe() noexcept = 0;
        /// Every live node (this one included), after each heartbeat round.
        virtual void membership(std::vector<NodeInfo> live) noexcept = 0;
        /// `node` stopped heartbeating, and this node won the clean-up: its connections, which
        /// the transport forgets once this returns.
        virtual void nodeLost(const std::string &node, std::vector<LostConnection> connections) noexcept = 0;
        /// The transport connected (true) or lost its connection (false, with why); once per change.
        virtual void stateChanged(bool up, const std::string &why) noexcept = 0;
    };

    virtual ~ClusterTransport();

    /// A short name for logs ("redis").
    virtual std::string name() const = 0;
    /// Starts the transport's own work for node `self`. Returns false with a message if it
    /// cannot start (a thread); an unreachable server is not an error: it keeps trying.
    [[nodiscard]] virtual bool start(const std::string &self, Receiver &receiver, std::string *error) noexcept = 0;
    /// Leaves the cluster (the node is gone from the list at once, and is not lost) and stops.
    /// Idempotent. After it returns, the receiver is called no more.
    virtual void stop() noexcept = 0;
    /// Queues `message` for `node` (never blocks). False when it cannot be sent now (down, a
    /// full queue): then it never is, and undeliverable() is not called for it.
    [[nodiscard]] virtual bool post(const std::string &node, std::uint64_t tag, std::string message) noexcept = 0;
    /// Whether it is connected now.
    virtual bool connected() const noexcept = 0;
};

/// The Redis transport (wsgwd's `cluster:`). Redis 5 or later.
///
///  - Messages: PUBLISH to the channel `wsgw:cluster:node:<node>`, which only that node
///    subscribes to, on one connection per node: so in order, and at most once (pub/sub keeps
///    nothing for a subscriber that is not there). A PUBLISH that reached no subscriber is
///    reported undeliverable at once.
///  - Heartbeats: every `heartbeat`, SET `wsgw:cluster:alive:<node>` with PX `deadAfter` and
///    HSET the node's description into the hash `wsgw:cluster:nodes`. A node in the hash whose
///    alive key has expired is lost.
///  - Node lost: the first survivor to SET `wsgw:cluster:cleanup:<node>` NX PX (10 × deadAfter,
///    at least 10 s) reads the lost node's connections from the Redis mirror's keys (the set
///    `wsgw:node:<node>:connections`, the hashes `connection:<id>` and `connection:<id>:tags`),
///    calls nodeLost(), deletes those keys and removes the node from the hash. So the mirror
///    (RedisMirrorOptions) must write to the same Redis; without it a lost node's connections are
///    unknown and nodeLost() gets none.
///  - Three connections of its own (subscriber, publisher, heartbeats), each on its own thread,
///    with blocking calls bounded by the endpoint's timeouts and reconnects backing off from
///    0.1 s doubling to 1 s.
struct RedisClusterOptions {
    RedisEndpoint redis;
    std::chrono::milliseconds heartbeat{1000};
    std::chrono::milliseconds deadAfter{3000};
    /// Messages waiting to be published before post() refuses more.
    std::size_t maxQueued = 65536;
};

/// Returns nullptr with a message for options that can never work (a heartbeat under 10 ms,
/// deadAfter not above the heartbeat) or when libwsgw was built without Redis support.
WSGW_EXPORT std::unique_ptr<ClusterTransport> makeRedisClusterTransport(RedisClusterOptions options,
                                                                       std::string *error = nullptr);

/// The 16 bits a node puts first in the ids of its connections when ids carry the node
/// (ClusterOptions::idsCarryNode): a hash of its name. Two nodes may share it; then an `id=`
/// command goes to both, which is correct, only less targeted.
WSGW_EXPORT std::uint16_t clusterIdPrefix(std::string_view node) noexcept;

/// A cluster command's answer: what this node and every node that answered did.
template <class T> struct ClusterResult {
    CommandStatus status = CommandStatus::Ok; ///< this node's own part (see CommandResult)
    T value{};                                ///< summed (merged) over this node and `answered`
    std::vector<std::string> answered;        ///< other nodes that answered, with their part in `value`
    /// Other live nodes whose answer did not come within the command timeout, or that could not
    /// be reached: the command may or may not have run there.
    std::vector<std::string> missing;
    bool ok() const noexcept { return status == CommandStatus::Ok; }
};

/// One connection somewhere in the cluster.
struct ClusterConnectionInfo {
    std::string node;
    ConnectionInfo info;
};

using ClusterCount = ClusterResult<std::size_t>;
using ClusterSetTags = ClusterResult<TagChangeCount>;
using ClusterStatus = ClusterResult<std::vector<ClusterConnectionInfo>>;
using ClusterTree = ClusterResult<TagTree>;

/// Counters for metrics. Value type.
struct ClusterStats {
    bool connected = false;
    std::size_t nodes = 0;              ///< live nodes, this one included (1 while alone or down)
    std::uint64_t commandsSent = 0;     ///< commands posted to other nodes (one per node)
    std::uint64_t commandsReceived = 0; ///< commands other nodes posted here
    std::uint64_t commandsTimedOut = 0; ///< commands posted whose node did not answer in time
    std::uint64_t commandsUnreachable = 0; ///< commands that could not be posted or delivered
    std::uint64_t nodesLost = 0;        ///< lost nodes this node cleaned up
    std::uint64_t lostConnections = 0;  ///< their connections (a close event each)
    /// Round trips of answered commands, seconds: counts per bucket of kRoundTripBuckets
    /// (cumulative, Prometheus style) and their sum.
    static constexpr double kRoundTripBuckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
    std::vector<std::uint64_t> roundTripCounts; ///< one per bucket, then +Inf
    double roundTripSum = 0;
};

struct ClusterOptions {
    /// This node's name; unique in the cluster.
    std::string node;
    /// What other nodes are told about this node's control API ("10.0.0.2:8081"); informative.
    std::string address;
    /// How long a command waits for every other live node's answer.
    std::chrono::milliseconds commandTimeout{2000};
    /// true: every node of the cluster makes its connection ids with
    /// ConnectionId::random(clusterIdPrefix(node)), so an `id=` command goes only to the nodes
    /// whose prefix its ids carry. false: `id=` commands go to every node like the others.
    bool idsCarryNode = false;
    /// Headroom of the messages built from commands of other nodes (see Message::create).
    std::size_t messageHeadroom = 0;
    /// The EventSpec of an endpoint, for the close events of a lost node's connections; nullptr
    /// or an unset function: no tags in them.
    std::function<const EventSpec *(std::string_view endpoint)> eventSpec;
    /// Called (on the transport's thread) when this node cleaned up a lost node, after its close
    /// events were published. Optional.
    std::function<void(const std::string &node, std::size_t connections)> onNodeLost;
    /// The transport connected or went down; once per change. Optional.
    std::function<void(bool up, const std::string &why)> onStateChange;
    /// The live nodes changed (joined, left, lost): the new list. Optional.
    std::function<void(const std::vector<NodeInfo> &live)> onMembership;
};

/// Several nodes acting as one gateway. A command given to a Cluster runs on this node's hub and,
/// through the transport, on every other live node's hub; the answer sums what each did. Nodes
/// that do not answer within the command timeout are named in the answer (`missing`), never
/// counted. The hub and its registry do not know about the cluster: remote commands reach them
/// as ordinary hub commands.
///
/// Guarantees:
///  - each connection is acted on at most once per command (it lives on one node; a node runs a
///    command at most once, since the transport delivers at most once); a command whose answer
///    names no missing node reached every connection that matched;
///  - commands given to one Cluster one after the other reach every connection in that order
///    (the local hub and the transport are both FIFO, and both are fed under one lock);
///  - a lost node's connections get one close event each (Event::reason "node_lost"),
///    published by the one node that won the clean-up.
///
/// Thread-safe. Every callback-taking command calls `done` exactly once, on a shard's, the
/// transport's or the cluster's timer thread: it must be quick and must not throw. The futures
/// must not be waited on from a shard's thread.
class WSGW_EXPORT Cluster {
public:
    /// `hub` must outlive the cluster; the transport is owned.
    Cluster(Hub &hub, std::unique_ptr<ClusterTransport> transport, ClusterOptions options);
    ~Cluster(); ///< stop()s
    Cluster(const Cluster &) = delete;
    Cluster &operator=(const Cluster &) = delete;

    /// Starts the transport and the timer thread. False with a message if a thread cannot start.
    [[nodiscard]] bool start(std::string *error = nullptr) noexcept;
    /// Leaves the cluster: pending commands answer at once with their missing nodes. Idempotent.
    void stop() noexcept;

    template <class T> using Callback = std::function<void(ClusterResult<T>)>;

    void send(Selector sel, MessagePtr msg, Callback<std::size_t> done) noexcept;
    void setTags(Selector sel, TagList changes, std::size_t maxTags, Callback<TagChangeCount> done) noexcept;
    void close(Selector sel, std::uint16_t code, std::string reason, MessagePtr last, Callback<std::size_t> done) noexcept;
    void status(Selector sel, Callback<std::vector<ClusterConnectionInfo>> done) noexcept;
    /// One page of the selection over the cluster (see Hub::status with a StatusPage): each node
    /// lists its first `page.limit` above `page.after`, and the answer is the first of them all.
    void status(Selector sel, StatusPage page, Callback<std::vector<ClusterConnectionInfo>> done) noexcept;
    /// How many connections `sel` selects on every live node (a dry run).
    void count(Selector sel, Callback<std::size_t> done) noexcept;
    void tree(Callback<TagTree> done) noexcept;

    std::future<ClusterCount> send(Selector sel, MessagePtr msg) noexcept;
    std::future<ClusterSetTags> setTags(Selector sel, TagList changes, std::size_t maxTags) noexcept;
    std::future<ClusterCount> close(Selector sel, std::uint16_t code, std::string reason, MessagePtr last = {}) noexcept;
    std::future<ClusterStatus> status(Selector sel) noexcept;
    std::future<ClusterStatus> status(Selector sel, StatusPage page) noexcept;
    std::future<ClusterCount> count(Selector sel) noexcept;
    std::future<ClusterTree> tree() noexcept;

    /// The live nodes as last heard (this one first); only this one while alone or down.
    std::vector<NodeInfo> nodes() const;
    ClusterStats stats() const;
    const std::string &node() const noexcept;
    std::chrono::milliseconds commandTimeout() const noexcept;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace wsgw
