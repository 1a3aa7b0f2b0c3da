#include "gateway.h"

#include "control_api.h"
#include "metrics.h"
#include "ws_server.h"

#include <wsgw/hub.h>
#include <wsgw/sink.h>
#include <wsgw/template.h>

#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <thread>

namespace wsgw::daemon {

namespace {

// The tags the sinks' templates read, so each event carries them.
std::vector<std::string> templateTags(const Config &c) {
    std::vector<std::string> names;
    auto add = [&](const std::string &source) {
        if (auto t = Template::parse(source))
            for (auto &n : t->tagNames())
                if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
    };
    if (c.streamRedis) add(c.streamRedis->streamName);
    if (c.streamAmqp) add(c.streamAmqp->routingKey);
    return names;
}

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

std::string nodeName(const Config &c) {
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    return std::string(host) + ":" + std::to_string(c.listen.port);
}

} // namespace

std::string unavailableFeature(const Config &c) {
    if (c.streamRedis || c.connectionRedisSync)
        return c.file + ": stream_redis and connection_redis_sync are not available in this build yet: remove them "
                        "(events go to the stdout log by default)";
    if (c.streamAmqp)
        return c.file + ": stream_amqp is not available in this build yet: remove it (events go to the stdout log "
                        "by default)";
    return {};
}

unsigned shardCount(const Config &config) {
    if (config.threads > 0) return config.threads;
    return std::max(1u, std::thread::hardware_concurrency());
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
};

Gateway::Gateway(Config config) : impl_(std::make_unique<Impl>(std::move(config))) {}

Gateway::~Gateway() { stop(std::chrono::milliseconds(0), std::chrono::milliseconds(0)); }

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
    d.hub = std::make_unique<Hub>(hubOptions);

    std::string node = nodeName(c);
    switch (c.effectiveEventLog()) {
    case Config::EventLog::Stdout:
        d.hub->events().addSink(makeLogSink(stdout, node));
        break;
    case Config::EventLog::Stderr:
        d.hub->events().addSink(makeLogSink(stderr, node));
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

    std::vector<std::string> paths;
    WsServerOptions ws;
    auto host = resolveHost(c.listen.host, error);
    if (!host) return false;
    ws.host = *host;
    ws.port = c.listen.port;
    ws.idleTimeout = std::chrono::seconds(c.idleTimeoutS);
    ws.maxOutboundBytes = c.maxOutboundKb * 1024;
    const std::vector<std::string> contextTags = templateTags(c);
    for (const EndpointConfig &e : c.endpoints) {
        WsEndpoint ep;
        ep.path = e.path;
        ep.setTags = e.setTags;
        ep.maxMessageBytes = e.maxMessageSizeKb * 1024;
        ep.compression = e.compression;
        ep.events.includeTags = e.streamIncludeTags;
        for (const std::string &t : contextTags)
            if (std::find(e.streamIncludeTags.begin(), e.streamIncludeTags.end(), t) == e.streamIncludeTags.end())
                ep.events.contextTags.push_back(t);
        std::string jsonError;
        auto json = JsonExtractor::create(e.jsonExtractVars, &jsonError);
        if (!json) return fail(c.file + ":" + std::to_string(e.line) + ": " + jsonError); // validated at load
        ep.events.json = std::move(*json);
        ws.endpoints.push_back(std::move(ep));
        paths.push_back(e.path);
    }
    d.metrics = std::make_unique<Metrics>(shards, paths);
    d.ws = std::make_unique<WsServer>(*d.hub, *d.metrics, std::move(ws));

    WsServer *wsServer = d.ws.get();
    Hub *hub = d.hub.get();
    ControlApiContext ctx{*d.hub, *d.metrics, WsServer::messageHeadroom(), [wsServer, hub]() -> std::string {
                              if (!wsServer->listening()) return "the WebSocket listener is not running";
                              for (const SinkStats &s : hub->events().stats())
                                  if (!s.connected) return "event sink '" + s.name + "' is not connected";
                              return {};
                          }};
    ControlApiOptions api;
    auto controlHost = resolveHost(c.control.host, error);
    if (!controlHost) return false;
    api.addr = c.control;
    api.addr.host = *controlHost;
    api.allow = c.controlAllow;
    api.maxBodyBytes = c.maxMessageSizeKb * 1024;
    api.metrics = c.prometheusEnabled;
    d.control = std::make_unique<ControlApi>(std::move(ctx), std::move(api));

    if (!d.ws->start(error)) return false;
    d.hub->start();
    if (!d.control->start(error)) {
        d.ws->stop(close_code::kGoingAway, "server shutting down", std::chrono::milliseconds(0));
        d.hub->stop();
        return false;
    }
    d.started = true;
    for (const EndpointConfig &e : c.endpoints) spdlog::info("Creating websocket endpoint at path {}", e.path);
    spdlog::info("Listening on {} (WebSocket, {} shards)", c.listen.toString(), shards);
    spdlog::info("Control API on {}", c.control.toString());
    return true;
}

void Gateway::stop(std::chrono::milliseconds grace, std::chrono::milliseconds flushFor) {
    Impl &d = *impl_;
    std::lock_guard lock(d.mu);
    if (!d.started || d.stopped) return;
    d.stopped = true;
    // Connections first (the control API still answers meanwhile), then the API, then the
    // events the closes produced.
    d.ws->stop(close_code::kGoingAway, "server shutting down", grace);
    d.control->stop();
    d.hub->stop(flushFor);
}

} // namespace wsgw::daemon
