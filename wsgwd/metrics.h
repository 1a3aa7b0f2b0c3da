#pragma once

#include <wsgw/cluster.h>
#include <wsgw/command_bus.h>
#include <wsgw/mirror.h>
#include <wsgw/sink.h>

#include <atomic>
#include <functional>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wsgw::daemon {

/// A counter with a single writer (the shard thread that owns it) and any number of readers:
/// increments are plain loads and stores, so the delivery path pays no locked instruction.
class ShardCounter {
public:
    void add(std::uint64_t n = 1) noexcept { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
    std::uint64_t get() const noexcept { return v_.load(std::memory_order_relaxed); }

private:
    std::atomic<std::uint64_t> v_{0};
};

/// A gauge with a single writer, like ShardCounter.
class ShardGauge {
public:
    void add(std::int64_t n) noexcept { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
    std::int64_t get() const noexcept { return v_.load(std::memory_order_relaxed); }

private:
    std::atomic<std::int64_t> v_{0};
};

/// Why an upgrade (or a plain HTTP request on the WebSocket port) was refused.
enum class Refusal : std::size_t {
    NotFound,
    BadRequest,
    Version,
    Origin,
    Capacity,
    Draining,
    NotWebSocket,
    FdLimit, ///< at the open-file limit: accepted on the reserve descriptor, answered 503, closed
    Timeout,      ///< a request not finished within the handshake timeout
    Backpressure, ///< the event backlog is full (backlog_overflow: pause_reading)
    Unauthorized, ///< the endpoint's jwt: a missing or invalid token (401)
    Authorizer,   ///< the endpoint's connect authorizer refused, or could not be asked
    Count
};
const char *refusalName(Refusal r) noexcept;

/// What one shard counts. Written by that shard's thread only.
struct ShardCounters {
    explicit ShardCounters(std::size_t endpoints) : endpointConnections(endpoints) {}

    ShardCounter connectionsOpened;
    ShardCounter connectionsClosed;
    ShardCounter messagesReceived; ///< complete messages from clients
    ShardCounter messagesSent;     ///< messages written to clients
    ShardCounter bytesReceived;    ///< payload bytes from clients
    ShardCounter bytesSent;        ///< frame bytes written to clients
    ShardCounter framesDropped;    ///< messages not delivered: slow consumer or closing connection
    ShardCounter slowConsumerCloses;
    ShardCounter idleCloses;
    ShardCounter oversizeCloses;     ///< 1009
    ShardCounter invalidUtf8Closes;  ///< 1007
    ShardCounter upgradesRefused[static_cast<std::size_t>(Refusal::Count)]; ///< by reason
    ShardCounter rateLimitDrops;     ///< client messages discarded by rate_limit policy drop
    ShardCounter rateLimitCloses;    ///< connections closed (1008) by rate_limit policy close
    ShardCounter lifetimeCloses;     ///< connections closed (1012) at max_connection_lifetime_s
    ShardCounter inflateStalls;      ///< 1011: a compressed message stuck in libwebsockets
    std::vector<ShardGauge> endpointConnections;
};

/// Why the control API refused or dropped a connection or request.
enum class ControlRefusal : std::size_t {
    Busy,       ///< 503: every worker busy and the queue full
    Capacity,   ///< 503: the connection limit reached, nothing to evict
    Timeout,    ///< a request not complete (408), or an answer not written, in time
    Evicted,    ///< an idle or unfinished connection closed to make room for a new one
    BadRequest, ///< framing refused the request (400, 413, 414, 415, 431, 501, 505)
    Count
};
const char *controlRefusalName(ControlRefusal r) noexcept;

/// What the control API's server counts. Written by its loop thread only.
struct ControlCounters {
    ShardGauge connections; ///< open now
    ShardCounter refused[static_cast<std::size_t>(ControlRefusal::Count)];
    void refuse(ControlRefusal r) noexcept { refused[static_cast<std::size_t>(r)].add(); }
};

/// Cumulative counts over every shard at one moment (each read on its own, so they may be a few
/// events apart), for a live view: the dashboard's stream.
struct MetricsTotals {
    std::uint64_t connects = 0;
    std::uint64_t disconnects = 0;
    std::uint64_t messagesIn = 0;  ///< complete messages from clients
    std::uint64_t messagesOut = 0; ///< messages written to clients
    std::vector<std::pair<std::string, std::int64_t>> endpoints; ///< open connections by endpoint path
};

/// The daemon's metrics: per-shard counters read at scrape time, and the control API's command
/// latencies. Rendered in the Prometheus text format, with the original gateway's metric names
/// kept for dashboards built on them (unless turned off) beside their wsgw_* equivalents.
///
/// Thread-safe (each ShardCounters has its own single writer).
class Metrics {
public:
    Metrics(std::size_t shards, std::vector<std::string> endpointPaths);
    ~Metrics();

    ShardCounters &shard(std::size_t index) noexcept { return *shards_[index]; }
    ControlCounters &control() noexcept { return control_; }

    /// WebSocket connections open now, over every shard (opened minus closed).
    std::int64_t openConnections() const noexcept;
    /// Relaxed loads of the shards' counters: never waits for a shard.
    MetricsTotals totals() const;

    /// Records how long a control command took, by command name ("send", "settags", ...).
    void observeCommand(std::string_view command, double seconds);
    /// Counts a control request refused for being busy (503).
    void countBusy();
    /// Records a connect authorizer's answer: how long it took, by outcome (authorizer.h).
    void observeAuthorize(std::string_view outcome, double seconds);

    /// Where render() reads the command bus readers' counters (command_redis, command_amqp); set
    /// once, before the first render(). Unset: no wsgw_command_bus_* families.
    void setCommandBusSource(std::function<std::vector<CommandBusStats>()> source);

    /// The Prometheus text exposition of everything, including the event sinks' state, whether
    /// reading from clients is paused for backpressure, and the connection mirror's state (when
    /// there is one), and the cluster's (in a cluster).
    /// With `legacyNames` (prometheus.legacy_names) the original gateway's five names are
    /// included too; every wsgw_* family passes `promtool check metrics`, those five do not.
    std::string render(const std::vector<SinkStats> &sinks, bool readingPaused,
                       const std::optional<MirrorStats> &mirror = std::nullopt,
                       const std::optional<ClusterStats> &cluster = std::nullopt, bool legacyNames = true) const;

private:
    struct Impl;
    std::vector<std::unique_ptr<ShardCounters>> shards_;
    std::vector<std::string> endpoints_;
    ControlCounters control_;
    std::unique_ptr<Impl> impl_;
    std::function<std::vector<CommandBusStats>()> commandBus_;
};

} // namespace wsgw::daemon
