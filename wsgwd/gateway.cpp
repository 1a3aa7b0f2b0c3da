#include "gateway.h"

#include "control_api.h"
#include "metrics.h"
#include "ws_server.h"

#include <wsgw/hub.h>
#include <wsgw/mirror.h>
#include <wsgw/sink.h>

#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>

namespace wsgw::daemon {

namespace {

// An IP literal for a host name ("localhost" -> "127.0.0.1"); IP literals and "" stay as they are.
std::optional<std::string> resolveHost(const std::string &host, std::string *error) {
    if (host.empty()) return host;
    in6_addr a6{};
    in_addr a4{};
    if (inet_pton(AF_INET, host.c_str(), &a4) == 1 || inet_pton(AF_INET6, host.c_str(), &a6) == 1) return host;
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo *res = nullptr;
    int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
    if (rc != 0 || !res) {
        if (error) *error = "cannot resolve '" + host + "': " + gai_strerror(rc);
        return std::nullopt;
    }
    char buf[INET6_ADDRSTRLEN] = "";
    if (res->ai_family == AF_INET)
        inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in *>(res->ai_addr)->sin_addr, buf, sizeof buf);
    else
        inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6 *>(res->ai_addr)->sin6_addr, buf, sizeof buf);
    freeaddrinfo(res);
    return std::string(buf);
}

RedisEndpoint redisEndpoint(const RedisAddress &a, unsigned timeoutMs) {
    RedisEndpoint e;
    e.commandTimeout = std::chrono::milliseconds(timeoutMs);
    e.connectTimeout = std::min(e.commandTimeout, std::chrono::milliseconds(2000));
    e.host = a.host;
    e.port = a.port;
    e.unixPath = a.unixPath;
    e.db = a.db;
    e.user = a.user;
    e.password = a.password;
    e.clientName = a.clientName;
    return e;
}

std::string nodeName(const Config &c) {
    if (!c.nodeId.empty()) return c.nodeId;
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    return std::string(host) + ":" + std::to_string(c.listen.port);
}

// --- stream_amqp -------------------------------------------------------------------------------

// The AMQP sink's options from stream_amqp: what the config parsed, the URL's heartbeat and
// connection_timeout included (when the URL leaves them out, the sink's defaults stay).
AmqpSinkOptions amqpOptions(const StreamAmqpConfig &a, const std::string &node) {
    AmqpSinkOptions o;
    o.host = a.addr.host;
    o.port = a.addr.port;
    o.tls = a.addr.tls;
    o.user = a.addr.user;
    o.password = a.addr.password;
    o.vhost = a.addr.vhost;
    if (a.addr.heartbeatS) o.heartbeat = std::chrono::seconds(*a.addr.heartbeatS);
    if (a.addr.connectionTimeoutMs) o.connectTimeout = std::chrono::milliseconds(*a.addr.connectionTimeoutMs);
    o.exchange = a.exchange;
    o.queue = a.queue;
    o.routingKey = a.routingKey;
    o.headers = a.headers;
    o.node = node;
    return o;
}

} // namespace

std::string unavailableFeature(const Config &c) {
    for (const RedisAddress *a : {c.streamRedis ? &c.streamRedis->addr : nullptr,
                                  c.connectionRedisSync ? &c.connectionRedisSync->addr : nullptr})
        if (a && a->tls)
            return c.file + ": " + a->url + ": rediss:// (TLS) is not supported: this build's hiredis (0.14) has no TLS";
    if (c.streamAmqp) {
        // Builds the sink once to learn whether it can exist (no connection is made).
        std::string why;
        if (!makeAmqpSink(amqpOptions(*c.streamAmqp, ""), &why)) return c.file + ": stream_amqp: " + why;
    }
    return {};
}

bool wsEndpoints(const Config &c, std::vector<WsEndpoint> &out, std::string *error) {
    out.clear();
    for (const EndpointConfig &e : c.endpoints) {
        WsEndpoint ep;
        ep.path = e.path;
        ep.setTags = e.setTags;
        ep.maxMessageBytes = e.maxMessageSizeKb * 1024;
        ep.compression = e.compression;
        ep.maxConnections = e.maxConnections;
        ep.allowedOrigins = e.allowedOrigins;
        ep.ratePerSecond = e.rateLimit.perSecond;
        ep.rateBurst = e.rateLimit.burst;
        ep.rateDropInsteadOfClose = e.rateLimit.policy == RateLimit::Policy::Drop;
        ep.maxOutboundBytes = e.slowConsumer.maxOutboundKb * 1024;
        ep.slowConsumer = e.slowConsumer.policy == SlowConsumer::Policy::DropNewest ? WsEndpoint::SlowConsumerPolicy::DropNewest
                          : e.slowConsumer.policy == SlowConsumer::Policy::DropOldest ? WsEndpoint::SlowConsumerPolicy::DropOldest
                                                                                      : WsEndpoint::SlowConsumerPolicy::Close;
        ep.events.includeTags = e.streamIncludeTags; // what the sinks' templates read, they say themselves
        std::string jsonError;
        auto json = JsonExtractor::create(e.jsonExtractVars, &jsonError);
        if (!json) { // validated at load already
            if (error) *error = c.file + ":" + std::to_string(e.line) + ": " + jsonError;
            return false;
        }
        ep.events.json = std::move(*json);
        out.push_back(std::move(ep));
    }
    return true;
}

ControlApiOptions controlOptions(const Config &c, const std::string &host) {
    ControlApiOptions api;
    api.addr = c.control;
    api.addr.host = host;
    api.allow = c.controlAllow;
    api.maxBodyBytes = (c.maxBodyKb ? c.maxBodyKb : c.maxMessageSizeKb) * 1024;
    api.metrics = c.prometheusEnabled;
    api.commandTimeout = std::chrono::seconds(c.controlTimeoutS);
    api.requestTimeout = std::chrono::seconds(c.controlRequestTimeoutS);
    api.token = c.controlToken;
    api.maxTagsPerConnection = c.maxTagsPerConnection;
    api.maxTagKeyLen = c.maxTagKeyLen;
    api.maxTagValueLen = c.maxTagValueLen;
    api.tls = c.controlTls;
    return api;
}

unsigned usableCpus() {
    // The CPUs this process may run on (taskset, cpusets), not every CPU of the machine.
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return static_cast<unsigned>(CPU_COUNT(&set));
    return std::max(1u, std::thread::hardware_concurrency());
}

unsigned shardCount(const Config &config) {
    if (config.threads > 0) return config.threads;
    return usableCpus();
}

struct Gateway::Impl {
    explicit Impl(Config c) : config(std::move(c)) {}

    Config config;
    std::unique_ptr<Hub> hub;
    std::unique_ptr<Metrics> metrics;
    std::unique_ptr<WsServer> ws;
    std::unique_ptr<ControlApi> control;
    std::mutex mu;
    bool started = false;
    bool stopped = false;
    std::atomic<bool> stopping{false};
};

Gateway::Gateway(Config config) : impl_(std::make_unique<Impl>(std::move(config))) {}

Gateway::~Gateway() { stop(std::chrono::milliseconds(0), std::chrono::milliseconds(0), std::chrono::milliseconds(0)); }

Hub &Gateway::hub() { return *impl_->hub; }
const Config &Gateway::config() const { return impl_->config; }

bool Gateway::start(std::string *error) {
    Impl &d = *impl_;
    std::lock_guard lock(d.mu);
    const Config &c = d.config;
    auto fail = [&](std::string msg) {
        if (error) *error = std::move(msg);
        return false;
    };
    if (std::string why = unavailableFeature(c); !why.empty()) return fail(why);

    const unsigned shards = shardCount(c);
    HubOptions hubOptions;
    hubOptions.shards = shards;
    hubOptions.inboxCapacity = 4096;
    hubOptions.ownThreads = false;
    // Ids keep increasing across restarts of a node (unless it averaged a million events a
    // second over its whole run), so consumers can de-duplicate by (node, event_id).
    hubOptions.firstEventId = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                              std::chrono::system_clock::now().time_since_epoch())
                                                              .count()) *
                              1000;
    d.hub = std::make_unique<Hub>(hubOptions);

    std::string node = nodeName(c);
    SinkOptions sinkOptions;
    sinkOptions.maxBacklogEvents = c.backlogMaxEvents;
    sinkOptions.maxBacklogBytes = c.backlogMaxMb << 20;
    sinkOptions.overflow = c.backlogOverflow == Config::BacklogOverflow::PauseReading ? OverflowPolicy::PauseReading
                                                                                       : OverflowPolicy::DropOldest;
    EventBus &events = d.hub->events();
    switch (c.effectiveEventLog()) {
    case Config::EventLog::Stdout:
        events.addSink(makeLogSink(stdout, node), sinkOptions);
        break;
    case Config::EventLog::Stderr:
        events.addSink(makeLogSink(stderr, node), sinkOptions);
        break;
    case Config::EventLog::Discard:
        // Every event is still built, queued and handed to a sink thread, which drops it and
        // counts it (wsgw_events_published_total{sink="null"}): the whole event path, minus I/O.
        d.hub->events().addSink(makeNullSink());
        break;
    case Config::EventLog::None:
    case Config::EventLog::Auto:
        break;
    }
    if (c.streamRedis) {
        RedisStreamOptions o;
        o.redis = redisEndpoint(c.streamRedis->addr, c.streamRedis->timeoutMs);
        o.streamName = c.streamRedis->streamName;
        o.maxLen = c.streamRedis->streamMaxLen;
        o.node = node;
        std::string why;
        auto sink = makeRedisStreamSink(std::move(o), &why);
        if (!sink) return fail("stream_redis: " + why);
        events.addSink(std::move(sink), sinkOptions);
    }
    if (c.connectionRedisSync) {
        RedisMirrorOptions o;
        o.redis = redisEndpoint(c.connectionRedisSync->addr, c.connectionRedisSync->timeoutMs);
        o.node = node;
        o.keyTtl = std::chrono::seconds(c.connectionRedisSync->keyTtlS);
        // Each change of state once, as for the event sinks.
        o.onStateChange = [](bool connected, const std::string &why) {
            if (connected)
                spdlog::info("connection mirror 'redis-mirror' connected");
            else
                spdlog::warn("connection mirror 'redis-mirror' is down: {} (changes are kept and written once it is "
                             "back)",
                             why);
        };
        o.onResync = [](const std::string &why, std::size_t connections) {
            spdlog::info("connection mirror 'redis-mirror' rewrote {} connections: {}", connections, why);
        };
        std::string why;
        auto mirror = makeRedisMirror(std::move(o), &why);
        if (!mirror) return fail("connection_redis_sync: " + why);
        d.hub->setMirror(std::move(mirror));
    }
    if (c.streamAmqp) {
        std::string why;
        std::unique_ptr<EventSink> sink = makeAmqpSink(amqpOptions(*c.streamAmqp, node), &why);
        if (!sink) return fail("stream_amqp: " + why);
        events.addSink(std::move(sink), sinkOptions);
    }

    std::vector<std::string> paths;
    WsServerOptions ws;
    auto host = resolveHost(c.listen.host, error);
    if (!host) return false;
    ws.host = *host;
    ws.port = c.listen.port;
    ws.idleTimeout = std::chrono::seconds(c.idleTimeoutS);
    ws.maxConnections = c.maxConnections;
    ws.maxLifetime = std::chrono::seconds(c.maxConnectionLifetimeS);
    ws.tls = c.tls;
    std::string endpointError;
    if (!wsEndpoints(c, ws.endpoints, &endpointError)) return fail(endpointError);
    for (const EndpointConfig &e : c.endpoints) paths.push_back(e.path);
    d.metrics = std::make_unique<Metrics>(shards, paths);
    d.ws = std::make_unique<WsServer>(*d.hub, *d.metrics, std::move(ws));

    // Sinks report each change of state once; an outage is one warning, not one per event.
    events.onStateChange([](const std::string &sink, bool connected, const std::string &why) {
        if (connected)
            spdlog::info("event sink '{}' connected", sink);
        else
            spdlog::warn("event sink '{}' is down: {} (events are kept in its backlog and retried)", sink, why);
    });
    WsServer *wsForResume = d.ws.get();
    events.onBackpressure([wsForResume](bool paused) {
        if (paused) {
            spdlog::warn("event backlog full: pausing reading from clients until it drains (backlog_overflow: "
                         "pause_reading)");
        } else {
            spdlog::info("event backlog drained: reading from clients again");
            wsForResume->resumeReading();
        }
    });

    WsServer *wsServer = d.ws.get();
    Hub *hub = d.hub.get();
    std::atomic<bool> *stopping = &d.stopping;
    ControlApiContext ctx{*d.hub, *d.metrics, WsServer::messageHeadroom(), [wsServer, hub, stopping]() -> std::string {
                              if (stopping->load()) return "shutting down";
                              if (!wsServer->listening()) return "the WebSocket listener is not running";
                              for (const SinkStats &s : hub->events().stats())
                                  if (!s.connected)
                                      return "event sink '" + s.name + "' is not connected" +
                                             (s.lastError.empty() ? std::string() : ": " + s.lastError);
                              if (ConnectionMirror *m = hub->mirror()) {
                                  MirrorStats s = m->stats();
                                  if (!s.connected)
                                      return "connection mirror '" + s.name + "' is not connected" +
                                             (s.lastError.empty() ? std::string() : ": " + s.lastError);
                              }
                              return {};
                          }};
    auto controlHost = resolveHost(c.control.host, error);
    if (!controlHost) return false;
    ControlApiOptions api = controlOptions(c, *controlHost);
    d.control = std::make_unique<ControlApi>(std::move(ctx), std::move(api));

    if (!d.ws->start(error)) return false;
    if (!d.hub->start(error)) {
        d.ws->stop(close_code::kGoingAway, "server shutting down", std::chrono::milliseconds(0),
                   std::chrono::milliseconds(0));
        return false;
    }
    if (!d.control->start(error)) {
        d.ws->stop(close_code::kGoingAway, "server shutting down", std::chrono::milliseconds(0),
                   std::chrono::milliseconds(0));
        d.hub->stop();
        return false;
    }
    d.started = true;
    for (const EndpointConfig &e : c.endpoints) {
        spdlog::info("Creating websocket endpoint at path {}", e.path);
        if (e.compression)
            spdlog::warn("{}: compression is on: libwebsockets 4.1.6's permessage-deflate can stall on, or abort the "
                         "process for, some compressed client messages; enable it for trusted clients only "
                         "(README: Compression)",
                         e.path);
    }
    spdlog::info("Listening on {} ({}, {} shards)", c.listen.toString(),
                 c.tls ? "WebSocket over TLS" : "WebSocket", shards);
    spdlog::info("Control API on {}{}", c.control.toString(), c.controlTls ? " (HTTPS)" : "");
    return true;
}

std::vector<std::string> Gateway::reload(const Config &next) {
    Impl &d = *impl_;
    std::lock_guard lock(d.mu);
    Config &cur = d.config;
    std::vector<std::string> needRestart;
    auto differs = [&](bool changed, const char *key) {
        if (changed) needRestart.push_back(key);
    };
    differs(!(next.listen == cur.listen), "listen_addr");
    differs(!(next.control == cur.control), "control_addr");
    differs(shardCount(next) != shardCount(cur), "threads");
    auto tlsDiffers = [](const std::optional<TlsFiles> &a, const std::optional<TlsFiles> &b) {
        return a.has_value() != b.has_value() || (a && (a->cert != b->cert || a->key != b->key));
    };
    differs(tlsDiffers(next.tls, cur.tls), "tls");
    differs(tlsDiffers(next.controlTls, cur.controlTls), "control_tls");
    auto url = [](const auto &section) { return section ? section->addr.url : std::string(); };
    differs(url(next.streamRedis) != url(cur.streamRedis) ||
                (next.streamRedis && cur.streamRedis && (next.streamRedis->streamName != cur.streamRedis->streamName ||
                                                         next.streamRedis->streamMaxLen != cur.streamRedis->streamMaxLen)),
            "stream_redis");
    differs(url(next.connectionRedisSync) != url(cur.connectionRedisSync) ||
                (next.connectionRedisSync && cur.connectionRedisSync &&
                 next.connectionRedisSync->keyTtlS != cur.connectionRedisSync->keyTtlS),
            "connection_redis_sync");
    differs(url(next.streamAmqp) != url(cur.streamAmqp) ||
                (next.streamAmqp && cur.streamAmqp &&
                 (next.streamAmqp->exchange != cur.streamAmqp->exchange || next.streamAmqp->queue != cur.streamAmqp->queue ||
                  next.streamAmqp->routingKey != cur.streamAmqp->routingKey || next.streamAmqp->headers != cur.streamAmqp->headers)),
            "stream_amqp");
    differs(next.nodeId != cur.nodeId, "node_id");
    differs(next.effectiveEventLog() != cur.effectiveEventLog(), "event_log");
    differs(next.backlogMaxEvents != cur.backlogMaxEvents || next.backlogMaxMb != cur.backlogMaxMb ||
                next.backlogOverflow != cur.backlogOverflow,
            "backlog_max_events/backlog_max_mb/backlog_overflow");
    differs((next.maxBodyKb ? next.maxBodyKb : next.maxMessageSizeKb) != (cur.maxBodyKb ? cur.maxBodyKb : cur.maxMessageSizeKb),
            "max_body_kb");
    differs(next.prometheusEnabled != cur.prometheusEnabled, "prometheus.enabled");
    bool samePaths = next.endpoints.size() == cur.endpoints.size();
    for (std::size_t i = 0; samePaths && i < next.endpoints.size(); ++i)
        samePaths = next.endpoints[i].path == cur.endpoints[i].path;
    differs(!samePaths, "endpoints (paths added, removed or reordered)");

    // What can change live: endpoints (when their paths are the same) and limits...
    if (samePaths) {
        WsServerOptions ws;
        std::string error;
        if (wsEndpoints(next, ws.endpoints, &error)) {
            ws.idleTimeout = std::chrono::seconds(next.idleTimeoutS);
            ws.maxConnections = next.maxConnections;
            ws.maxLifetime = std::chrono::seconds(next.maxConnectionLifetimeS);
            d.ws->reload(std::move(ws));
            cur.endpoints = next.endpoints;
            cur.idleTimeoutS = next.idleTimeoutS;
            cur.maxConnections = next.maxConnections;
            cur.maxConnectionLifetimeS = next.maxConnectionLifetimeS;
            cur.rateLimit = next.rateLimit;
            cur.slowConsumer = next.slowConsumer;
            cur.maxMessageSizeKb = next.maxMessageSizeKb;
        }
    }
    // ...the control API's access and limits...
    d.control->reload(controlOptions(next, ""));
    cur.controlAllow = next.controlAllow;
    cur.controlToken = next.controlToken;
    cur.maxTagsPerConnection = next.maxTagsPerConnection;
    cur.maxTagKeyLen = next.maxTagKeyLen;
    cur.maxTagValueLen = next.maxTagValueLen;
    cur.controlTimeoutS = next.controlTimeoutS;
    cur.controlRequestTimeoutS = next.controlRequestTimeoutS;
    // ...and the process's own settings.
    if (next.logLevel != cur.logLevel) spdlog::set_level(spdlog::level::from_str(next.logLevel));
    cur.logLevel = next.logLevel;
    cur.drainS = next.drainS;
    cur.shutdownFlushS = next.shutdownFlushS;
    return needRestart;
}

void Gateway::stop(std::chrono::milliseconds drain, std::chrono::milliseconds grace,
                   std::chrono::milliseconds flushFor) {
    Impl &d = *impl_;
    std::lock_guard lock(d.mu);
    if (!d.started || d.stopped) return;
    d.stopped = true;
    d.stopping.store(true); // /readyz: 503 from now on
    // Connections first (the control API still answers meanwhile); before its shard threads end,
    // ws->stop() ends every command still queued or yet to come with Stopped, so no request of
    // the control API waits for a shard that will not run again and the API stops at once;
    // then the events the closes produced.
    d.ws->stop(close_code::kServiceRestart, "service restart", drain, grace);
    d.control->stop();
    d.hub->stop(flushFor);
}

} // namespace wsgw::daemon
