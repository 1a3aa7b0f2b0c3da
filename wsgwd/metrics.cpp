#include "metrics.h"

#include "config.h"

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <limits>
#include <mutex>

namespace wsgw::daemon {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily family(std::string name, std::string help, MetricType type) {
    MetricFamily f;
    f.name = std::move(name);
    f.help = std::move(help);
    f.type = type;
    return f;
}

void addSample(MetricFamily &f, double value, std::vector<ClientMetric::Label> labels = {}) {
    ClientMetric m;
    m.label = std::move(labels);
    if (f.type == MetricType::Counter)
        m.counter.value = value;
    else
        m.gauge.value = value;
    f.metric.push_back(std::move(m));
}

} // namespace

const char *refusalName(Refusal r) noexcept {
    switch (r) {
    case Refusal::NotFound:
        return "not_found";
    case Refusal::BadRequest:
        return "bad_request";
    case Refusal::Version:
        return "version";
    case Refusal::Origin:
        return "origin";
    case Refusal::Capacity:
        return "capacity";
    case Refusal::Draining:
        return "draining";
    case Refusal::FdLimit:
        return "fd_limit";
    case Refusal::Timeout:
        return "timeout";
    case Refusal::Backpressure:
        return "backpressure";
    case Refusal::NotWebSocket:
        return "not_websocket";
    case Refusal::Unauthorized:
        return "unauthorized";
    case Refusal::Authorizer:
        return "authorizer";
    case Refusal::Count:
        break;
    }
    return "other";
}

const char *controlRefusalName(ControlRefusal r) noexcept {
    switch (r) {
    case ControlRefusal::Busy:
        return "busy";
    case ControlRefusal::Capacity:
        return "capacity";
    case ControlRefusal::Timeout:
        return "timeout";
    case ControlRefusal::Evicted:
        return "evicted";
    case ControlRefusal::BadRequest:
        return "bad_request";
    case ControlRefusal::Count:
        break;
    }
    return "other";
}

struct Metrics::Impl {
    std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
    prometheus::Family<prometheus::Histogram> &commands =
        prometheus::BuildHistogram()
            .Name("wsgw_command_duration_seconds")
            .Help("Time a control command took from request to the answer of the last shard")
            .Register(*registry);
    prometheus::Family<prometheus::Counter> &busy = prometheus::BuildCounter()
                                                        .Name("wsgw_commands_busy_total")
                                                        .Help("Control commands refused because a shard's inbox was full")
                                                        .Register(*registry);
    prometheus::Family<prometheus::Histogram> &authorize =
        prometheus::BuildHistogram()
            .Name("wsgw_authorize_duration_seconds")
            .Help("Time from asking the connect authorizer to its answer (or the timeout), by outcome: "
                  "accepted, refused (4xx), failed (503), failed_open")
            .Register(*registry);
    std::mutex mu; // guards histogram creation (Family::Add is thread-safe, but lookups are cached here)
    std::vector<std::pair<std::string, prometheus::Histogram *>> byCommand;
};

Metrics::Metrics(std::size_t shards, std::vector<std::string> endpointPaths)
    : endpoints_(std::move(endpointPaths)), impl_(std::make_unique<Impl>()) {
    for (std::size_t i = 0; i < shards; ++i) shards_.push_back(std::make_unique<ShardCounters>(endpoints_.size()));
    impl_->busy.Add({});
}

Metrics::~Metrics() = default;

void Metrics::observeCommand(std::string_view command, double seconds) {
    prometheus::Histogram *h = nullptr;
    {
        std::lock_guard lock(impl_->mu);
        for (auto &[name, hist] : impl_->byCommand)
            if (name == command) h = hist;
        if (!h) {
            static const prometheus::Histogram::BucketBoundaries buckets{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                                         0.01,   0.025,   0.05,   0.1,   0.25,   1};
            h = &impl_->commands.Add({{"command", std::string(command)}}, buckets);
            impl_->byCommand.emplace_back(std::string(command), h);
        }
    }
    h->Observe(seconds);
}

void Metrics::countBusy() { impl_->busy.Add({}).Increment(); }

std::int64_t Metrics::openConnections() const noexcept {
    std::int64_t open = 0;
    for (const auto &s : shards_)
        open += static_cast<std::int64_t>(s->connectionsOpened.get()) - static_cast<std::int64_t>(s->connectionsClosed.get());
    return open;
}

MetricsTotals Metrics::totals() const {
    MetricsTotals t;
    for (const auto &s : shards_) {
        t.connects += s->connectionsOpened.get();
        t.disconnects += s->connectionsClosed.get();
        t.messagesIn += s->messagesReceived.get();
        t.messagesOut += s->messagesSent.get();
    }
    for (std::size_t e = 0; e < endpoints_.size(); ++e) {
        std::int64_t open = 0;
        for (const auto &s : shards_) open += s->endpointConnections[e].get();
        t.endpoints.emplace_back(endpoints_[e], open);
    }
    return t;
}

void Metrics::observeAuthorize(std::string_view outcome, double seconds) {
    static const prometheus::Histogram::BucketBoundaries buckets{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                                 0.05,   0.1,   0.25,   0.5,   1,    2.5, 5};
    // Family::Add returns the existing histogram for known labels (under its own lock).
    impl_->authorize.Add({{"outcome", std::string(outcome)}}, buckets).Observe(seconds);
}

void Metrics::setCommandBusSource(std::function<std::vector<CommandBusStats>()> source) {
    commandBus_ = std::move(source);
}

namespace {

// The command bus readers: one sample per transport (redis, amqp), the commands by outcome.
void renderCommandBus(const std::vector<CommandBusStats> &readers, std::vector<MetricFamily> &out) {
    if (readers.empty()) return;
    MetricFamily up = family("wsgw_command_bus_up", "1 when the command reader is connected to its broker",
                             MetricType::Gauge);
    MetricFamily commands = family("wsgw_command_bus_commands_total",
                                   "Commands read from the broker, by what came of them (applied, failed, malformed, "
                                   "duplicate, retried)",
                                   MetricType::Counter);
    MetricFamily claimed = family("wsgw_command_bus_claimed_total",
                                  "Commands taken over from a consumer that held them unacknowledged too long",
                                  MetricType::Counter);
    MetricFamily replies = family("wsgw_command_bus_replies_total", "Replies written to reply_to", MetricType::Counter);
    MetricFamily reconnects = family("wsgw_command_bus_disconnects_total", "Connections to the broker lost",
                                     MetricType::Counter);
    for (const CommandBusStats &s : readers) {
        std::vector<ClientMetric::Label> l{{"transport", s.transport}};
        addSample(up, s.connected ? 1 : 0, l);
        const std::pair<const char *, std::uint64_t> outcomes[] = {{"applied", s.applied},
                                                                   {"failed", s.failed},
                                                                   {"malformed", s.malformed},
                                                                   {"duplicate", s.duplicates},
                                                                   {"retried", s.retried}};
        for (const auto &[name, n] : outcomes)
            addSample(commands, static_cast<double>(n), {{"transport", s.transport}, {"outcome", name}});
        addSample(claimed, static_cast<double>(s.claimed), l);
        addSample(replies, static_cast<double>(s.replies), l);
        addSample(reconnects, static_cast<double>(s.reconnects), l);
    }
    for (MetricFamily *f : {&up, &commands, &claimed, &replies, &reconnects}) out.push_back(std::move(*f));
}

} // namespace

std::string Metrics::render(const std::vector<SinkStats> &sinks, bool readingPaused,
                            const std::optional<MirrorStats> &mirror,
                            const std::optional<ClusterStats> &cluster, bool legacyNames) const {
    auto sum = [&](auto field) {
        double total = 0;
        for (const auto &s : shards_) total += static_cast<double>(((*s).*field).get());
        return total;
    };
    std::vector<MetricFamily> out;
    auto counter = [&](const char *name, const char *help, ShardCounter ShardCounters::*field) {
        MetricFamily f = family(name, help, MetricType::Counter);
        addSample(f, sum(field));
        out.push_back(std::move(f));
    };

    auto gauge = [&](const char *name, const char *help, double value) {
        MetricFamily f = family(name, help, MetricType::Gauge);
        addSample(f, value);
        out.push_back(std::move(f));
    };
    const double openNow = sum(&ShardCounters::connectionsOpened) - sum(&ShardCounters::connectionsClosed);

    // The original gateway's names (spelling included), for dashboards built on them. They
    // break Prometheus' naming rules (a counter without _total, the type in the name), so each
    // has a wsgw_* twin below, and prometheus.legacy_names: false leaves them out.
    if (legacyNames) {
        counter("messages_sent_counter", "Messages sent to WebSocket clients (wsgw_messages_sent_total)",
                &ShardCounters::messagesSent);
        counter("messages_recieved_counter", "Messages received from WebSocket clients (wsgw_messages_received_total)",
                &ShardCounters::messagesReceived);
        counter("connections_counter", "WebSocket connections opened (wsgw_connections_opened_total)",
                &ShardCounters::connectionsOpened);
        counter("disconnections_counter", "WebSocket connections closed (wsgw_connections_closed_total)",
                &ShardCounters::connectionsClosed);
        gauge("active_connections_gauge", "WebSocket connections open now (wsgw_connections)", openNow);
    }
    counter("wsgw_messages_sent_total", "Messages sent to WebSocket clients", &ShardCounters::messagesSent);
    counter("wsgw_messages_received_total", "Messages received from WebSocket clients",
            &ShardCounters::messagesReceived);
    counter("wsgw_connections_opened_total", "WebSocket connections opened", &ShardCounters::connectionsOpened);
    counter("wsgw_connections_closed_total", "WebSocket connections closed", &ShardCounters::connectionsClosed);
    gauge("wsgw_connections", "WebSocket connections open now", openNow);

    counter("wsgw_bytes_received_total", "Payload bytes received from clients", &ShardCounters::bytesReceived);
    counter("wsgw_bytes_sent_total", "Frame bytes written to clients", &ShardCounters::bytesSent);
    counter("wsgw_frames_dropped_total", "Messages not delivered to a client (slow consumer or closing connection)",
            &ShardCounters::framesDropped);
    counter("wsgw_slow_consumer_closes_total", "Connections closed (1008) for exceeding their outbound queue",
            &ShardCounters::slowConsumerCloses);
    counter("wsgw_idle_closes_total", "Connections dropped by the idle timeout", &ShardCounters::idleCloses);
    counter("wsgw_oversize_closes_total", "Connections closed (1009) for a message over the size limit",
            &ShardCounters::oversizeCloses);
    counter("wsgw_invalid_utf8_closes_total", "Connections closed (1007) for a text message that is not UTF-8",
            &ShardCounters::invalidUtf8Closes);
    counter("wsgw_rate_limit_drops_total", "Client messages discarded by rate_limit (policy drop)",
            &ShardCounters::rateLimitDrops);
    counter("wsgw_rate_limit_closes_total", "Connections closed (1008) by rate_limit (policy close)",
            &ShardCounters::rateLimitCloses);
    counter("wsgw_lifetime_closes_total", "Connections closed (1012) at max_connection_lifetime_s",
            &ShardCounters::lifetimeCloses);
    {
        MetricFamily f = family("wsgw_upgrades_refused_total",
                                "WebSocket upgrades and plain HTTP requests refused on the WebSocket port, by reason",
                                MetricType::Counter);
        for (std::size_t r = 0; r < static_cast<std::size_t>(Refusal::Count); ++r) {
            double total = 0;
            for (const auto &sc : shards_) total += static_cast<double>(sc->upgradesRefused[r].get());
            addSample(f, total, {{"reason", refusalName(static_cast<Refusal>(r))}});
        }
        out.push_back(std::move(f));
    }
    counter("wsgw_inflate_stalls_total",
            "Connections closed (1011) because a compressed message stalled in libwebsockets' permessage-deflate",
            &ShardCounters::inflateStalls);

    {
        MetricFamily f = family("wsgw_endpoint_connections", "WebSocket connections open now, by endpoint",
                                MetricType::Gauge);
        for (std::size_t e = 0; e < endpoints_.size(); ++e) {
            double total = 0;
            for (const auto &s : shards_) total += static_cast<double>(s->endpointConnections[e].get());
            addSample(f, total, {{"endpoint", endpoints_[e]}});
        }
        out.push_back(std::move(f));
    }
    {
        MetricFamily published = family("wsgw_events_published_total", "Events delivered to a sink", MetricType::Counter);
        MetricFamily dropped =
            family("wsgw_events_dropped_total", "Events discarded by a sink's overflow policy", MetricType::Counter);
        MetricFamily failures =
            family("wsgw_event_publish_failures_total", "Publish attempts that did not deliver everything",
                   MetricType::Counter);
        MetricFamily backlog = family("wsgw_event_backlog", "Events waiting for a sink", MetricType::Gauge);
        MetricFamily backlogBytes =
            family("wsgw_event_backlog_bytes", "Approximate bytes of the events waiting for a sink", MetricType::Gauge);
        MetricFamily up = family("wsgw_event_sink_up", "1 when the sink's last publish delivered everything",
                                 MetricType::Gauge);
        // Every sink carries its backend: a named backend's name, or the top-level key that made it
        // (stream_redis, stream_amqp, stream_http, event_log). A selector on sink="redis" alone
        // still matches, as before backends.
        auto labels = [](const SinkStats &s) {
            return std::vector<ClientMetric::Label>{{"sink", s.name}, {"backend", s.backend}};
        };
        for (const SinkStats &s : sinks) {
            std::vector<ClientMetric::Label> l = labels(s);
            addSample(published, static_cast<double>(s.published), l);
            addSample(dropped, static_cast<double>(s.dropped), l);
            addSample(failures, static_cast<double>(s.failures), l);
            addSample(backlog, static_cast<double>(s.backlog), l);
            addSample(backlogBytes, static_cast<double>(s.backlogBytes), l);
            addSample(up, s.connected ? 1 : 0, l);
        }
        MetricFamily rejected =
            family("wsgw_events_rejected_total", "Events a sink's destination refused for good", MetricType::Counter);
        for (const SinkStats &s : sinks) addSample(rejected, static_cast<double>(s.rejected), labels(s));
        for (MetricFamily *f : {&published, &dropped, &failures, &backlog, &backlogBytes, &up, &rejected})
            out.push_back(std::move(*f));
        MetricFamily paused = family("wsgw_reading_paused",
                                     "1 while reading from clients is paused because an event backlog is full",
                                     MetricType::Gauge);
        addSample(paused, readingPaused ? 1 : 0);
        out.push_back(std::move(paused));
    }

    {
        MetricFamily open = family("wsgw_control_connections", "Connections to the control API open now", MetricType::Gauge);
        addSample(open, static_cast<double>(control_.connections.get()));
        out.push_back(std::move(open));
        MetricFamily refused = family("wsgw_control_refused_total",
                                      "Control API connections and requests refused or dropped, by reason",
                                      MetricType::Counter);
        for (std::size_t r = 0; r < static_cast<std::size_t>(ControlRefusal::Count); ++r)
            addSample(refused, static_cast<double>(control_.refused[r].get()),
                      {{"reason", controlRefusalName(static_cast<ControlRefusal>(r))}});
        out.push_back(std::move(refused));
    }

    if (mirror) {
        auto one = [&](const char *name, const char *help, MetricType type, double value) {
            MetricFamily f = family(name, help, type);
            addSample(f, value);
            out.push_back(std::move(f));
        };
        one("wsgw_mirror_up", "1 when the connection mirror is connected and its last write went through",
            MetricType::Gauge, mirror->connected ? 1 : 0);
        one("wsgw_mirror_pending", "Connections whose latest state the mirror has not written yet", MetricType::Gauge,
            static_cast<double>(mirror->pending));
        one("wsgw_mirror_written_total", "Connection states the mirror wrote (coalesced changes count once)",
            MetricType::Counter, static_cast<double>(mirror->written));
        one("wsgw_mirror_resyncs_total", "Full rewrites of every connection (after a reconnect, or a lost copy)",
            MetricType::Counter, static_cast<double>(mirror->resyncs));
        one("wsgw_mirror_failures_total", "Failed connects and writes of the mirror", MetricType::Counter,
            static_cast<double>(mirror->failures));
    }

    if (cluster) {
        auto one = [&](const char *name, const char *help, MetricType type, double value) {
            MetricFamily f = family(name, help, type);
            addSample(f, value);
            out.push_back(std::move(f));
        };
        one("wsgw_cluster_up", "1 when the cluster transport is connected", MetricType::Gauge, cluster->connected ? 1 : 0);
        one("wsgw_cluster_nodes", "Live nodes of the cluster, this one included", MetricType::Gauge,
            static_cast<double>(cluster->nodes));
        one("wsgw_cluster_commands_sent_total", "Commands sent to other nodes (one per node)", MetricType::Counter,
            static_cast<double>(cluster->commandsSent));
        one("wsgw_cluster_commands_received_total", "Commands other nodes sent to this one", MetricType::Counter,
            static_cast<double>(cluster->commandsReceived));
        one("wsgw_cluster_commands_timed_out_total",
            "Commands sent to another node that did not answer within command_timeout_ms", MetricType::Counter,
            static_cast<double>(cluster->commandsTimedOut));
        one("wsgw_cluster_commands_unreachable_total",
            "Commands that could not be sent to, or delivered to, another node", MetricType::Counter,
            static_cast<double>(cluster->commandsUnreachable));
        one("wsgw_cluster_nodes_lost_total", "Lost nodes this node cleaned up", MetricType::Counter,
            static_cast<double>(cluster->nodesLost));
        one("wsgw_cluster_lost_connections_total", "Connections of lost nodes closed by this node (a close event each)",
            MetricType::Counter, static_cast<double>(cluster->lostConnections));
        MetricFamily rt = family("wsgw_cluster_command_round_trip_seconds",
                                 "From sending a command to another node until its answer came", MetricType::Histogram);
        ClientMetric m;
        const std::size_t nb = std::size(ClusterStats::kRoundTripBuckets);
        for (std::size_t i = 0; i < cluster->roundTripCounts.size(); ++i) {
            ClientMetric::Bucket b;
            b.cumulative_count = cluster->roundTripCounts[i];
            b.upper_bound = i < nb ? ClusterStats::kRoundTripBuckets[i] : std::numeric_limits<double>::infinity();
            m.histogram.bucket.push_back(b);
        }
        m.histogram.sample_count = cluster->roundTripCounts.empty() ? 0 : cluster->roundTripCounts.back();
        m.histogram.sample_sum = cluster->roundTripSum;
        rt.metric.push_back(std::move(m));
        out.push_back(std::move(rt));
    }

    if (commandBus_) renderCommandBus(commandBus_(), out);

    for (MetricFamily &f : impl_->registry->Collect()) out.push_back(std::move(f));
    return prometheus::TextSerializer().Serialize(out);
}

} // namespace wsgw::daemon
