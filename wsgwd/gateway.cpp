#include "gateway.h"

#include "command_bus.h"
#include "command_runner.h"
#include "control_api.h"
#include "event_routes.h"
#include "log.h"
#include "metrics.h"
#include "ws_server.h"

#include <wsgw/cluster.h>
#include <wsgw/command_bus.h>
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
#include <limits>
#include <cstdio>
#include <map>
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

// Every event sink under its backend name, and the routes of the endpoints to them
// (event_routes.h): the bus sends each endpoint's events to its backends only.
bool addEventSinks(const Config &c, const std::string &node, EventBus &events, std::string *error) {
    std::vector<BuiltSink> sinks;
    if (!buildSinks(c, node, sinks, error)) return false;
    for (BuiltSink &s : sinks)
        if (events.addSink(std::move(s.sink), s.options, s.backend) == SIZE_MAX) {
            if (error) *error = "cannot add the event sink of backend '" + s.backend + "'";
            return false;
        }
    std::string why;
    if (!events.setRoutes(routesOf(c), &why)) {
        if (error) *error = "event routes: " + why;
        return false;
    }
    return true;
}

std::string nodeName(const Config &c) {
    if (!c.nodeId.empty()) return c.nodeId;
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    return std::string(host) + ":" + std::to_string(c.ws.addr.port);
}

// /readyz's reason for a sink that is down: a top-level sink by its kind, as before backends; a
// named backend by its name.
std::string sinkDown(const SinkStats &s) {
    const std::string why = s.lastError.empty() ? std::string() : ": " + s.lastError;
    if (isTopLevelSink(s.backend)) return "event sink '" + s.name + "' is not connected" + why;
    return "backend '" + s.backend + "' (event sink '" + s.name + "') is not connected" + why;
}

} // namespace

std::string unavailableFeature(const Config &c) {
    const char *noTls = ": rediss:// (TLS) is not supported: this build's hiredis (0.14) has no TLS";
    if (c.streamRedis && c.streamRedis->tls) return c.file + ": " + c.streamRedis->url + noTls;
    if (c.connectionRedisSync && c.connectionRedisSync->tls)
        return c.file + ": " + c.connectionRedisSync->url + noTls;
    if (c.cluster && c.cluster->tls) return c.file + ": " + c.cluster->url + noTls;
    if (c.commandRedis && c.commandRedis->tls) return c.file + ": " + c.commandRedis->url + noTls;
    if (c.commandAmqp) {
        // Builds the reader once to learn whether it can exist (nothing is connected).
        AmqpCommandOptions o = c.commandAmqp->options;
        o.consumer = "check";
        std::string why;
        if (!makeAmqpCommandReader(o, &why)) return c.file + ": command_amqp: " + why;
    }
    if (c.streamAmqp) {
        // Builds the sink once to learn whether it can exist (no connection is made).
        std::string why;
        if (!makeAmqpSink(c.streamAmqp->options, &why)) return c.file + ": stream_amqp: " + why;
    }
    for (const BackendConfig &b : c.backends) {
        if (b.redis && b.redis->tls) return b.at + ": backends." + b.name + ": " + b.redis->url + noTls;
        std::string why;
        if (b.amqp && !makeAmqpSink(b.amqp->options, &why)) return b.at + ": backends." + b.name + ": " + why;
    }
    return {};
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
    std::string node; // this node's name, fixed at start
    std::unique_ptr<Hub> hub;
    std::unique_ptr<Metrics> metrics;
    std::unique_ptr<WsServer> ws;
    std::unique_ptr<ControlApi> control;
    std::unique_ptr<Cluster> cluster;
    // The command bus (command_redis, command_amqp): its readers run commands through busRunner under busLimits.
    std::unique_ptr<CommandRunner> busRunner;
    std::vector<std::unique_ptr<CommandReader>> readers;
    std::mutex busLimitsMu;
    ControlApiOptions busLimits;
    // Past this (steady clock, ns), a command the bus is running stops waiting for its answer.
    std::atomic<std::int64_t> busGiveUpAt{std::numeric_limits<std::int64_t>::max()};
    std::mutex mu;
    bool started = false;
    bool stopped = false;
    std::atomic<bool> stopping{false};
};

namespace {

std::int64_t steadyNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// How long a stop lets a command the bus is running finish.
constexpr auto kBusStopGrace = std::chrono::milliseconds(2000);

} // namespace

// command_redis, command_amqp: the readers, named by this node, running commands cluster-wide
// through a CommandRunner like the control API's.
bool Gateway::makeCommandReaders(Impl &d, const std::string &node, std::string *error) {
    const Config &c = d.config;
    if (!c.commandRedis && !c.commandAmqp) return true;
    d.busRunner = std::make_unique<CommandRunner>(*d.hub, d.cluster.get(), *d.metrics, WsServer::messageHeadroom());
    d.busLimits = c.control;
    CommandReaderEvents events;
    events.onMalformed = [](const std::string &kind, const std::string &detail) {
        spdlog::warn("command bus: malformed command ({}): {} (acknowledged and counted; further ones of this kind "
                     "are only counted)",
                     kind, detail);
    };
    const auto inFlightTtl = c.control.commandTimeout +
                             (c.cluster ? c.cluster->commandTimeout : std::chrono::milliseconds(0)) +
                             std::chrono::milliseconds(2000);
    if (c.commandRedis) {
        RedisCommandOptions o = c.commandRedis->options;
        o.consumer = node;
        o.events = events;
        o.inFlightTtl = inFlightTtl;
        o.events.onStateChange = [stream = o.stream](bool up, const std::string &why) {
            if (up)
                spdlog::info("command bus: reading commands from the Redis stream {}", stream);
            else
                spdlog::warn("command bus: Redis stream {}: {} (reconnecting)", stream, why);
        };
        std::string why;
        auto reader = makeRedisCommandReader(std::move(o), &why);
        if (!reader) {
            if (error) *error = "command_redis: " + why;
            return false;
        }
        d.readers.push_back(std::move(reader));
    }
    if (c.commandAmqp) {
        AmqpCommandOptions o = c.commandAmqp->options;
        o.consumer = node;
        o.events = events;
        o.inFlightTtl = inFlightTtl;
        // command_id records: in the command stream's Redis, else the cluster's, so that every
        // node sees them; with neither, in this process only (README says what that means).
        if (c.commandRedis)
            o.dedupRedis = c.commandRedis->options.redis;
        else if (c.cluster)
            o.dedupRedis = c.cluster->options.redis;
        std::string where = o.dedupRedis ? "Redis" : "this process only";
        o.events.onStateChange = [queue = o.queue, where](bool up, const std::string &why) {
            if (up)
                spdlog::info("command bus: reading commands from the AMQP queue {} (command ids recorded in {})", queue,
                             where);
            else
                spdlog::warn("command bus: AMQP queue {}: {} (reconnecting)", queue, why);
        };
        std::string why;
        auto reader = makeAmqpCommandReader(std::move(o), &why);
        if (!reader) {
            if (error) *error = "command_amqp: " + why;
            return false;
        }
        d.readers.push_back(std::move(reader));
    }
    std::vector<CommandReader *> readers;
    for (auto &r : d.readers) readers.push_back(r.get());
    d.metrics->setCommandBusSource([readers] {
        std::vector<CommandBusStats> out;
        for (CommandReader *r : readers) out.push_back(r->stats());
        return out;
    });
    return true;
}

bool Gateway::startCommandReaders(Impl &d, std::string *error) {
    for (auto &r : d.readers) {
        auto limits = [&d] {
            std::lock_guard lock(d.busLimitsMu);
            return d.busLimits;
        };
        auto stopping = [&d] { return steadyNs() >= d.busGiveUpAt.load(); };
        if (!r->start(makeBusHandler(*d.busRunner, limits, stopping), error)) return false;
    }
    return true;
}

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

    // The sections go to their components as parsed; what is not config (the node name, the
    // mirror's callbacks, the listen addresses resolved) is added to the copy handed over, so that
    // d.config stays what was written, for reload() to compare.
    std::string node = nodeName(c);
    d.node = node;
    EventBus &events = d.hub->events();
    if (!addEventSinks(c, node, events, error)) return false;
    // A cluster finds a lost node's connections in the mirror's keys: without
    // connection_redis_sync, the mirror writes to the cluster's Redis with its defaults.
    std::optional<RedisSyncConfig> mirrorConfig = c.connectionRedisSync;
    if (!mirrorConfig && c.cluster) {
        mirrorConfig.emplace();
        mirrorConfig->options.redis = c.cluster->options.redis;
        mirrorConfig->url = c.cluster->url;
    }
    if (mirrorConfig) {
        RedisMirrorOptions o = mirrorConfig->options;
        o.node = node;
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
    WsServerOptions ws = c.ws;
    if (c.cluster) ws.idPrefix = clusterIdPrefix(node);
    auto host = resolveHost(c.ws.addr.host, error);
    if (!host) return false;
    ws.addr.host = *host;
    std::vector<std::string> paths;
    for (const WsEndpoint &e : c.ws.endpoints) paths.push_back(e.path);
    d.metrics = std::make_unique<Metrics>(shards, paths);
    d.ws = std::make_unique<WsServer>(*d.hub, *d.metrics, std::move(ws));

    // Sinks report each change of state once; an outage is one warning, not one per event.
    // A top-level sink by its kind (as before backends), a named backend by its name.
    std::map<std::string, std::string> sinkWords;
    for (const SinkStats &s : events.stats())
        sinkWords[s.backend] = isTopLevelSink(s.backend) ? "event sink '" + s.name + "'"
                                                         : "backend '" + s.backend + "' (event sink '" + s.name + "')";
    events.onStateChange([sinkWords](const std::string &backend, bool connected, const std::string &why) {
        auto it = sinkWords.find(backend);
        // A backend added by a reload is not in the map made at start.
        const std::string sink = it != sinkWords.end() ? it->second : "backend '" + backend + "'";
        if (connected)
            spdlog::info("{} connected", sink);
        else
            spdlog::warn("{} is down: {} (events are kept in its backlog and retried)", sink, why);
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
                                  if (!s.connected) return sinkDown(s);
                              if (ConnectionMirror *m = hub->mirror()) {
                                  MirrorStats s = m->stats();
                                  if (!s.connected)
                                      return "connection mirror '" + s.name + "' is not connected" +
                                             (s.lastError.empty() ? std::string() : ": " + s.lastError);
                              }
                              return {};
                          },
                          nullptr, node, c.control.addr.toString()};
    if (c.cluster) {
        std::string refused;
        auto transport = makeRedisClusterTransport(c.cluster->options, &refused);
        if (!transport) return fail("cluster: " + refused);
        ClusterOptions o;
        o.node = node;
        o.address = c.control.addr.toString();
        o.commandTimeout = c.cluster->commandTimeout;
        o.idsCarryNode = true;
        o.messageHeadroom = WsServer::messageHeadroom();
        // The endpoints' event specs as started (a reload keeps the paths; their specs are
        // read at start, like the sinks).
        auto specs = std::make_shared<std::vector<std::pair<std::string, EventSpec>>>();
        for (const WsEndpoint &e : c.ws.endpoints) specs->emplace_back(e.path, e.events);
        o.eventSpec = [specs](std::string_view endpoint) -> const EventSpec * {
            for (const auto &[path, spec] : *specs)
                if (path == endpoint) return &spec;
            return nullptr;
        };
        o.onNodeLost = [](const std::string &lost, std::size_t connections) {
            spdlog::warn("cluster: node '{}' stopped heartbeating; this node closed its {} connection(s) (close events "
                         "with reason node_lost) and removed its mirror keys",
                         lost, connections);
        };
        o.onStateChange = [](bool up, const std::string &why) {
            if (up)
                spdlog::info("cluster: connected");
            else
                spdlog::warn("cluster: down: {} (commands reach this node's connections only; the answers name the "
                             "other nodes as missing)",
                             why);
        };
        o.onMembership = [](const std::vector<NodeInfo> &live) {
            std::string names;
            for (const NodeInfo &n : live) names += (names.empty() ? "" : ", ") + n.id;
            spdlog::info("cluster: {} live node(s): {}", live.size(), names);
        };
        d.cluster = std::make_unique<Cluster>(*d.hub, std::move(transport), std::move(o));
        ctx.cluster = d.cluster.get();
        Cluster *cluster = d.cluster.get();
        ctx.notReady = [inner = std::move(ctx.notReady), cluster]() -> std::string {
            std::string why = inner();
            if (why.empty() && !cluster->stats().connected) why = "the cluster transport is not connected";
            return why;
        };
    }

    if (!makeCommandReaders(d, node, error)) return false;

    ControlApiOptions api = c.control;
    auto controlHost = resolveHost(c.control.addr.host, error);
    if (!controlHost) return false;
    api.addr.host = *controlHost;
    d.control = std::make_unique<ControlApi>(std::move(ctx), std::move(api));

    if (!d.ws->start(error)) return false;
    if (!d.hub->start(error)) {
        d.ws->stop(close_code::kGoingAway, "server shutting down", std::chrono::milliseconds(0),
                   std::chrono::milliseconds(0));
        return false;
    }
    if (d.cluster && !d.cluster->start(error)) {
        d.ws->stop(close_code::kGoingAway, "server shutting down", std::chrono::milliseconds(0),
                   std::chrono::milliseconds(0));
        d.hub->stop();
        return false;
    }
    if (!d.control->start(error) || !startCommandReaders(d, error)) {
        d.control->stop();
        for (auto &r : d.readers) r->stop();
        d.ws->stop(close_code::kGoingAway, "server shutting down", std::chrono::milliseconds(0),
                   std::chrono::milliseconds(0));
        if (d.cluster) d.cluster->stop();
        d.hub->stop();
        return false;
    }
    d.started = true;
    for (const WsEndpoint &e : c.ws.endpoints) {
        spdlog::info("Creating websocket endpoint at path {}", e.path);
        if (!e.compression) spdlog::info("{}: permessage-deflate is off for this endpoint", e.path);
    }
    for (const std::string &route : describeRoutes(c)) spdlog::info("Events of {}", route);
    spdlog::info("Listening on {} ({}, {} shards)", c.ws.addr.toString(),
                 c.ws.tls ? "WebSocket over TLS" : "WebSocket", shards);
    spdlog::info("Control API on {}{}", c.control.addr.toString(), c.control.tls ? " (HTTPS)" : "");
    return true;
}

std::string Gateway::statusLine() const {
    const Impl &d = *impl_;
    if (!d.metrics || !d.hub) return "starting";
    std::string line = std::to_string(d.metrics->openConnections()) + " WebSocket connections, " +
                       std::to_string(d.metrics->control().connections.get()) + " control connections";
    std::size_t sinks = 0, down = 0;
    std::string firstDown;
    for (const SinkStats &s : d.hub->events().stats()) {
        ++sinks;
        if (!s.connected && down++ == 0) firstDown = s.backend;
    }
    if (down > 0)
        line += "; " + std::to_string(down) + " of " + std::to_string(sinks) + " event sinks down ('" + firstDown + "')";
    else if (sinks > 0)
        line += "; event sinks up";
    if (ConnectionMirror *m = d.hub->mirror(); m && !m->stats().connected) line += "; connection mirror down";
    if (d.stopping.load()) line += "; stopping";
    return line;
}

// Reload's part for the event sinks and routes (event_routes.h: reloadSinks); logs what changed.
void Gateway::reloadEventSinks(Impl &d, const Config &next) {
    Config &cur = d.config;
    SinkReload done;
    std::string why;
    if (!reloadSinks(cur, next, d.node, d.hub->events(), cur.shutdownFlush, done, &why)) {
        spdlog::error("reload: the event sinks and routes stay as they were: {}", why);
        return;
    }
    auto list = [](const std::vector<std::string> &v) {
        std::string s;
        for (const std::string &x : v) s += (s.empty() ? "" : ", ") + x;
        return s;
    };
    if (!done.added.empty()) spdlog::info("reload: backends added: {}", list(done.added));
    if (!done.replaced.empty()) spdlog::info("reload: backends reconfigured: {}", list(done.replaced));
    if (!done.removed.empty()) spdlog::info("reload: backends removed: {}", list(done.removed));
    if (done.undelivered > 0)
        spdlog::warn("reload: {} events of replaced or removed backends were not delivered within shutdown_flush_s",
                     done.undelivered);
    if (done.routesChanged)
        for (const std::string &route : describeRoutes(next)) spdlog::info("reload: events of {}", route);
    cur.streamRedis = next.streamRedis;
    cur.streamAmqp = next.streamAmqp;
    cur.streamHttp = next.streamHttp;
    cur.backends = next.backends;
    cur.eventLog = next.eventLog;
    cur.backlog = next.backlog;
    // Keep the endpoints' routes as the bus now has them, also where the endpoints themselves wait
    // for a restart (paths changed).
    for (WsEndpoint &e : cur.ws.endpoints)
        if (const WsEndpoint *n = next.findEndpoint(e.path)) e.backends = n->backends;
}

std::vector<std::string> Gateway::reload(const Config &next) {
    Impl &d = *impl_;
    std::lock_guard lock(d.mu);
    Config &cur = d.config;
    std::vector<std::string> needRestart;
    auto differs = [&](bool changed, const char *key) {
        if (changed) needRestart.push_back(key);
    };
    differs(!(next.ws.addr == cur.ws.addr), "listen_addr");
    differs(!(next.control.addr == cur.control.addr), "control_addr");
    differs(shardCount(next) != shardCount(cur), "threads");
    differs(next.ws.tls != cur.ws.tls, "tls");
    differs(next.control.tls != cur.control.tls, "control_tls");
    differs(next.connectionRedisSync != cur.connectionRedisSync, "connection_redis_sync");
    differs(next.cluster != cur.cluster, "cluster");
    differs(next.commandRedis != cur.commandRedis, "command_redis");
    differs(next.commandAmqp != cur.commandAmqp, "command_amqp");
    differs(next.nodeId != cur.nodeId, "node_id");
    differs(next.control.maxBodyBytes != cur.control.maxBodyBytes, "max_body_kb");
    differs(next.control.metrics != cur.control.metrics, "prometheus.enabled");
    const std::vector<WsEndpoint> &nextEndpoints = next.ws.endpoints, &curEndpoints = cur.ws.endpoints;
    bool samePaths = nextEndpoints.size() == curEndpoints.size();
    for (std::size_t i = 0; samePaths && i < nextEndpoints.size(); ++i)
        samePaths = nextEndpoints[i].path == curEndpoints[i].path;
    differs(!samePaths, "endpoints (paths added, removed or reordered)");

    // What can change live is handed over as whole sections, with what needs a restart kept at
    // its running value: the event sinks and routes (stream_*, event_log, backlog_*, backends,
    // endpoints[].backends; first, while d.config still has the routes the bus runs)...
    reloadEventSinks(d, next);
    // ...the endpoints (when their paths are the same) and limits...
    if (samePaths) {
        WsServerOptions ws = next.ws;
        ws.addr = cur.ws.addr;
        ws.tls = cur.ws.tls;
        d.ws->reload(ws);
        cur.ws = std::move(ws);
        cur.defaults = next.defaults;
    }
    // ...the control API's access and limits...
    ControlApiOptions api = next.control;
    api.addr = cur.control.addr;
    api.tls = cur.control.tls;
    api.maxBodyBytes = cur.control.maxBodyBytes;
    api.metrics = cur.control.metrics;
    d.control->reload(api);
    {
        std::lock_guard busLock(d.busLimitsMu);
        d.busLimits = api;
    }
    cur.control = std::move(api);
    // ...and the process's own settings.
    if (next.logLevel != cur.logLevel) spdlog::set_level(spdlog::level::from_str(next.logLevel));
    cur.logLevel = next.logLevel;
    if (next.logFormat != cur.logFormat) setLogFormat(next.logFormat);
    cur.logFormat = next.logFormat;
    cur.drain = next.drain;
    cur.shutdownFlush = next.shutdownFlush;
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
    // The command bus reads nothing more; a command it is running gets a moment to be answered
    // (so that it is acknowledged, not run again by another node), then is left for another node.
    d.busGiveUpAt.store(steadyNs() + std::chrono::duration_cast<std::chrono::nanoseconds>(kBusStopGrace).count());
    for (auto &r : d.readers) r->stop();
    d.ws->stop(close_code::kServiceRestart, "service restart", drain, grace);
    d.control->stop();
    // Leaves the cluster: the others stop sending to this node at once and do not take it for lost.
    if (d.cluster) d.cluster->stop();
    d.hub->stop(flushFor);
}

} // namespace wsgw::daemon
