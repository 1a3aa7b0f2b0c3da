#include "event_routes.h"

#include <algorithm>

namespace wsgw::daemon {

namespace {

// A backend's `actions:` over its sink: the sink takes only those (EventSink::accepts); all
// else is the sink's own.
class ActionFilter final : public EventSink {
public:
    ActionFilter(std::unique_ptr<EventSink> inner, std::vector<EventAction> actions)
        : inner_(std::move(inner)), actions_(std::move(actions)) {}
    std::string name() const override { return inner_->name(); }
    std::vector<std::string> tagsUsed() const override { return inner_->tagsUsed(); }
    bool accepts(EventAction a) const override {
        return inner_->accepts(a) && std::find(actions_.begin(), actions_.end(), a) != actions_.end();
    }
    bool connect() override { return inner_->connect(); }
    std::size_t publish(const std::vector<EventPtr> &batch) override { return inner_->publish(batch); }
    void onFailure() override { inner_->onFailure(); }
    bool idle() override { return inner_->idle(); }
    std::string lastError() const override { return inner_->lastError(); }
    std::uint64_t rejected() const override { return inner_->rejected(); }
    void cancel() noexcept override { inner_->cancel(); }

private:
    std::unique_ptr<EventSink> inner_;
    std::vector<EventAction> actions_;
};

bool allActions(const std::vector<EventAction> &actions) {
    return actions.size() == 3;
}

// The sink of one redis / amqp / http section, and the bus options it needs.
std::unique_ptr<EventSink> redisSink(const StreamRedisConfig &c, const std::string &node, std::string *why) {
    RedisStreamOptions o = c.options;
    o.node = node;
    return makeRedisStreamSink(std::move(o), why);
}

std::unique_ptr<EventSink> amqpSink(const StreamAmqpConfig &c, const std::string &node, std::string *why) {
    AmqpSinkOptions o = c.options;
    o.node = node;
    return makeAmqpSink(std::move(o), why);
}

std::unique_ptr<EventSink> httpSink(const StreamHttpConfig &c, const std::string &node, SinkOptions &so,
                                    std::string *why) {
    HttpSinkOptions o = c.options;
    o.node = node;
    // The lanes fill from one batch of the bus; batch_ms lets it fill.
    so.maxBatch = o.batchMaxEvents * o.maxInFlight;
    so.batchWait = c.batchWait;
    return makeHttpSink(std::move(o), why);
}

} // namespace

std::unique_ptr<EventSink> makeBackendSink(const BackendConfig &b, const std::string &node, SinkOptions *options,
                                           std::string *error) {
    SinkOptions so = b.backlog;
    std::string why;
    std::unique_ptr<EventSink> sink = b.redis  ? redisSink(*b.redis, node, &why)
                                      : b.amqp ? amqpSink(*b.amqp, node, &why)
                                      : b.http ? httpSink(*b.http, node, so, &why)
                                               : nullptr;
    if (!sink) {
        if (error) *error = "backends." + b.name + ": " + (why.empty() ? std::string("no sink configured") : why);
        return nullptr;
    }
    if (!allActions(b.actions)) sink = std::make_unique<ActionFilter>(std::move(sink), b.actions);
    if (options) *options = so;
    return sink;
}

bool buildSinks(const Config &c, const std::string &node, std::vector<BuiltSink> &out, std::string *error) {
    auto fail = [&](std::string msg) {
        if (error) *error = std::move(msg);
        return false;
    };
    switch (c.effectiveEventLog()) {
    case Config::EventLog::Stdout:
        out.push_back({kEventLogBackend, makeLogSink(stdout, node), c.backlog});
        break;
    case Config::EventLog::Stderr:
        out.push_back({kEventLogBackend, makeLogSink(stderr, node), c.backlog});
        break;
    case Config::EventLog::Discard:
        // Every event is still built, queued and handed to a sink thread, which drops it and
        // counts it (wsgw_events_published_total{sink="null"}): the whole event path, minus I/O.
        out.push_back({kEventLogBackend, makeNullSink(), SinkOptions{}});
        break;
    case Config::EventLog::None:
    case Config::EventLog::Auto:
        break;
    }
    std::string why;
    if (c.streamRedis) {
        auto sink = redisSink(*c.streamRedis, node, &why);
        if (!sink) return fail("stream_redis: " + why);
        out.push_back({kStreamRedisBackend, std::move(sink), c.backlog});
    }
    if (c.streamAmqp) {
        auto sink = amqpSink(*c.streamAmqp, node, &why);
        if (!sink) return fail("stream_amqp: " + why);
        out.push_back({kStreamAmqpBackend, std::move(sink), c.backlog});
    }
    if (c.streamHttp) {
        SinkOptions so = c.backlog;
        auto sink = httpSink(*c.streamHttp, node, so, &why);
        if (!sink) return fail("stream_http: " + why);
        out.push_back({kStreamHttpBackend, std::move(sink), so});
    }
    for (const BackendConfig &b : c.backends) {
        SinkOptions so;
        auto sink = makeBackendSink(b, node, &so, error);
        if (!sink) return false;
        out.push_back({b.name, std::move(sink), so});
    }
    return true;
}

EventRoutes routesOf(const Config &c) {
    EventRoutes routes;
    switch (c.effectiveEventLog()) {
    case Config::EventLog::Stdout:
    case Config::EventLog::Stderr:
    case Config::EventLog::Discard:
        routes.defaults.push_back(kEventLogBackend);
        break;
    case Config::EventLog::None:
    case Config::EventLog::Auto:
        break;
    }
    if (c.streamRedis) routes.defaults.push_back(kStreamRedisBackend);
    if (c.streamAmqp) routes.defaults.push_back(kStreamAmqpBackend);
    if (c.streamHttp) routes.defaults.push_back(kStreamHttpBackend);
    for (const WsEndpoint &e : c.ws.endpoints)
        if (e.backends) routes.endpoints[e.path] = *e.backends;
    return routes;
}

namespace {

bool sameBacklog(const SinkOptions &a, const SinkOptions &b) {
    return a.maxBacklogEvents == b.maxBacklogEvents && a.maxBacklogBytes == b.maxBacklogBytes && a.overflow == b.overflow;
}

// Whether `backend` (present in both) would be built the same from `a` and `b`.
bool sameSink(const std::string &backend, const Config &a, const Config &b) {
    if (!isTopLevelSink(backend)) {
        const BackendConfig *x = a.findBackend(backend), *y = b.findBackend(backend);
        return x && y && *x == *y;
    }
    if (!sameBacklog(a.backlog, b.backlog)) return false;
    if (backend == kEventLogBackend) return a.effectiveEventLog() == b.effectiveEventLog();
    if (backend == kStreamRedisBackend) return a.streamRedis == b.streamRedis;
    if (backend == kStreamAmqpBackend) return a.streamAmqp == b.streamAmqp;
    return a.streamHttp == b.streamHttp;
}

} // namespace

bool reloadSinks(const Config &cur, const Config &next, const std::string &node, EventBus &bus,
                 std::chrono::milliseconds flushFor, SinkReload &done, std::string *error) {
    std::vector<BuiltSink> wanted;
    if (!buildSinks(next, node, wanted, error)) return false;
    std::vector<std::string> running;
    for (const SinkStats &s : bus.stats()) running.push_back(s.backend);
    auto isRunning = [&](const std::string &b) { return std::find(running.begin(), running.end(), b) != running.end(); };
    for (BuiltSink &s : wanted) {
        if (!isRunning(s.backend)) {
            if (bus.addSink(std::move(s.sink), s.options, s.backend) == SIZE_MAX) {
                if (error) *error = "cannot add the event sink of backend '" + s.backend + "'";
                return false;
            }
            done.added.push_back(s.backend);
        } else if (!sameSink(s.backend, cur, next)) {
            std::size_t left = bus.replaceSink(s.backend, std::move(s.sink), s.options, flushFor);
            if (left == SIZE_MAX) {
                if (error) *error = "cannot replace the event sink of backend '" + s.backend + "'";
                return false;
            }
            done.undelivered += left;
            done.replaced.push_back(s.backend);
        }
    }
    const EventRoutes before = routesOf(cur), after = routesOf(next);
    done.routesChanged = before.endpoints != after.endpoints || before.defaults != after.defaults;
    if (!bus.setRoutes(after, error)) return false;
    for (const std::string &b : running) {
        if (std::any_of(wanted.begin(), wanted.end(), [&](const BuiltSink &s) { return s.backend == b; })) continue;
        std::size_t left = bus.removeSink(b, flushFor);
        if (left != SIZE_MAX) done.undelivered += left;
        done.removed.push_back(b);
    }
    return true;
}

std::vector<std::string> describeRoutes(const Config &c) {
    const EventRoutes routes = routesOf(c);
    auto names = [&](const std::vector<std::string> &backends) {
        std::string s;
        for (const std::string &b : backends) {
            s += (s.empty() ? "" : ", ") + b;
            if (const BackendConfig *bc = c.findBackend(b)) s += std::string(" (") + bc->kind() + ")";
        }
        return s.empty() ? std::string("nothing") : s;
    };
    std::vector<std::string> lines;
    for (const WsEndpoint &e : c.ws.endpoints) {
        auto it = routes.endpoints.find(e.path);
        lines.push_back(e.path + " -> " +
                        (it != routes.endpoints.end() ? names(it->second)
                                                      : names(routes.defaults) + " (the top-level sinks)"));
    }
    return lines;
}

} // namespace wsgw::daemon
