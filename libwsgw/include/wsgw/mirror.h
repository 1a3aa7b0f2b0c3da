#pragma once

#include <wsgw/connection.h>
#include <wsgw/connection_id.h>
#include <wsgw/export.h>
#include <wsgw/sink.h>
#include <wsgw/tags.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace wsgw {

class Hub;

/// What a mirror says about itself, for readiness checks and metrics.
struct MirrorStats {
    std::string name;
    bool connected = false;     ///< connected, and its last write went through
    std::string lastError;      ///< why not, if it is not
    std::size_t pending = 0;    ///< connections whose latest state is not written yet
    std::uint64_t written = 0;  ///< states written (coalesced changes count once)
    std::uint64_t failures = 0; ///< failed connects and writes
    std::uint64_t resyncs = 0;  ///< full rewrites (after a reconnect, or after the copy was lost)
};

/// A copy of every connection's latest state (endpoint, peer address, tags) kept outside the
/// process: wsgwd's Redis mirror (connection_redis_sync), or an embedder's own.
///
/// Not an event stream: only the latest state of each connection matters, so a mirror keeps at
/// most one pending state per connection (an open, tag changes and a close that come before it
/// writes may amount to nothing at all), its memory is bounded by the connections, not by the
/// length of an outage, and it loses nothing by coalescing. After a reconnect, or when it finds
/// its copy gone, it rewrites every connection: it asks the hub to run opened() again for each
/// (Hub::forEachShard with Registry::forEach).
///
/// Thread-safe. The hub calls opened(), changed() and closed() on the shard threads, several
/// shards at once, each shard for its own connections and in order; they must return quickly and
/// never wait for I/O. The other members are called from any thread.
class WSGW_EXPORT ConnectionMirror {
public:
    virtual ~ConnectionMirror();

    /// A short name for logs and metrics ("redis-mirror").
    virtual std::string name() const = 0;

    /// On shard `shard`'s thread: `conn` is registered (or, in a resync, still is) with `tags`.
    virtual void opened(std::size_t shard, const Connection &conn, const Tags &tags) noexcept = 0;
    /// On the connection's shard thread: its tags are now `tags` (all of them).
    virtual void changed(std::size_t shard, ConnectionId id, const Tags &tags) noexcept = 0;
    /// On the connection's shard thread: the connection is gone.
    virtual void closed(std::size_t shard, ConnectionId id) noexcept = 0;

    /// Starts the mirror's own work. `hub` is the hub being mirrored; it outlives the mirror's
    /// work (stop() comes first). Returns false with a message if it cannot start.
    [[nodiscard]] virtual bool start(Hub &hub, std::string *error) noexcept = 0;
    /// Writes what is pending for up to `flushFor`, then stops. Idempotent.
    virtual void stop(std::chrono::milliseconds flushFor) noexcept = 0;

    virtual MirrorStats stats() const = 0;
};

/// The Redis mirror (wsgwd's connection_redis_sync), compatible with the original's: hash
/// `connection:<id>` (fields addr, node, endpoint) and hash `connection:<id>:tags` (the tags;
/// a deleted tag is gone from it); both keys are deleted when the connection closes.
///
/// Keys cannot outlive their node: every key gets a TTL of `keyTtl`, refreshed about every third
/// of it while the node lives (spread out: 2 EXPIREs per connection per keyTtl/3), so the keys
/// of a node that died without closing its connections vanish within keyTtl. The node's
/// connection ids are in the set `wsgw:node:<node>:connections` (same TTL, refreshed each
/// second), and the key `wsgw:node:<node>:alive` (TTL keyTtl/2, refreshed each second) says the
/// copy is there: a node that finds it gone while connected (FLUSHALL, a restart without
/// persistence) rewrites every connection. The first connect of a process removes whatever an
/// earlier run of the same node left.
///
/// Writes are pipelined from one thread of its own; each connection's tags are replaced
/// atomically (MULTI: DEL + HSET). A write that fails stays pending and is retried after a
/// reconnect with back-off (0.1 s doubling to 10 s); after every reconnect every connection is
/// rewritten (a resync, counted in MirrorStats::resyncs), and keys of connections that closed
/// meanwhile are deleted. Redis Cluster is not supported (the keys of one write are in several
/// slots).
struct RedisMirrorOptions {
    RedisEndpoint redis;
    std::string node; ///< this node's name: the `node` field and the node's keys
    /// The TTL of every key; at least 3 s. Shorter: a dead node's keys go sooner, and the
    /// refreshes cost Redis more (2 EXPIREs per connection per keyTtl/3).
    std::chrono::seconds keyTtl{120};
    /// Called on the mirror's thread when it connects (true) or goes down (false, with why):
    /// once per change, not per retry. Optional.
    std::function<void(bool connected, const std::string &why)> onStateChange;
    /// Called on the mirror's thread when a resync has rewritten `connections` connections, with
    /// what caused it. Optional.
    std::function<void(const std::string &why, std::size_t connections)> onResync;
};

/// Returns nullptr with a message in `*error` for options that can never work (keyTtl under
/// 3 s, an empty node) or when libwsgw was built without Redis support. Nothing is connected
/// here: the mirror connects on its own thread once started.
WSGW_EXPORT std::unique_ptr<ConnectionMirror> makeRedisMirror(RedisMirrorOptions options, std::string *error = nullptr);

} // namespace wsgw
