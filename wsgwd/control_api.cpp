#include "control_api.h"

#include "command_runner.h"
#include "control_dashboard.h"
#include "control_server.h"
#include "control_v1.h"
#include "embedded.h"
#include "metrics.h"

#include <wsgw/cluster.h>
#include <wsgw/hub.h>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <type_traits>
#include <future>
#include <mutex>

namespace wsgw::daemon {

namespace {

constexpr const char *kText = "text/plain; charset=utf-8";

void reply(httplib::Response &res, int status, const std::string &body) {
    res.status = status;
    res.set_content(body.empty() || body.back() == '\n' ? body : body + "\n", kText);
}

std::string rawQuery(const httplib::Request &req) {
    auto q = req.target.find('?');
    return q == std::string::npos ? std::string() : req.target.substr(q + 1);
}

bool wantsJson(const httplib::Request &req) {
    return req.get_header_value("Accept").find("application/json") != std::string::npos;
}

// Equal without revealing, through timing, how much of a guess was right. The length is
// compared first: it is not worth hiding, and CRYPTO_memcmp needs two buffers of one size.
bool tokenMatches(std::string_view given, std::string_view token) {
    return given.size() == token.size() && CRYPTO_memcmp(given.data(), token.data(), token.size()) == 0;
}

// Health checks, the dashboard's page and the opening of its stream on the loop thread (they
// never block), /metrics on its own thread, the rest (commands, which wait for the shards) on the
// workers.
Lane laneOf(const RequestHead &head) {
    if (head.path == "/healthz" || head.path == "/readyz" || head.path == "/dashboard" ||
        head.path == "/v1/stream")
        return Lane::Inline;
    if (head.path == "/metrics") return Lane::Aux;
    return Lane::Command;
}

ControlServerOptions serverOptions(const ControlApiOptions &o) {
    ControlServerOptions s;
    s.host = o.addr.host;
    s.port = o.addr.port;
    s.tls = o.tls;
    s.limits.maxBodyBytes = o.maxBodyBytes;
    s.requestTimeout = o.requestTimeout;
    s.keepAliveTimeout = o.keepAliveTimeout;
    s.maxConnections = o.maxConnections;
    return s;
}

// How often a handler waiting for the shards looks whether the server is stopping.
constexpr auto kStopPoll = std::chrono::milliseconds(20);
// How long past a command's deadline we wait for a shard stuck inside something else.
constexpr auto kStuckShardGrace = std::chrono::milliseconds(1000);

constexpr const char *kScopeHeader = "X-Wsgw-Scope";
constexpr const char *kMissingHeader = "X-Wsgw-Missing-Nodes";

std::string joined(const std::vector<std::string> &names) {
    std::string out;
    for (const std::string &n : names) out += (out.empty() ? "" : ",") + n;
    return out;
}

bool isBinaryBody(const httplib::Request &req) {
    std::string type = req.get_header_value("Content-Type");
    type = type.substr(0, type.find(';'));
    type.erase(std::remove_if(type.begin(), type.end(), [](unsigned char c) { return std::isspace(c); }), type.end());
    std::transform(type.begin(), type.end(), type.begin(), [](unsigned char c) { return std::tolower(c); });
    return type == "application/octet-stream";
}

} // namespace

struct ControlApi::Impl {
    Impl(ControlApiContext c, ControlApiOptions o)
        : ctx(std::move(c)), opt(std::move(o)), live(std::make_shared<const ControlApiOptions>(opt)),
          server(serverOptions(opt), ctx.metrics.control(), laneOf),
          runner(ctx.hub, ctx.cluster, ctx.metrics, ctx.messageHeadroom) {}

    ControlApiContext ctx;
    ControlApiOptions opt; // as started: address, TLS, body limit

    // What a reload may change, read per request.
    mutable std::mutex liveMu;
    std::shared_ptr<const ControlApiOptions> live;
    std::shared_ptr<const ControlApiOptions> current() const {
        std::lock_guard lock(liveMu);
        return live;
    }
    ControlServer server;
    CommandRunner runner;

    bool allowed(const std::string &ip) const {
        auto now = current();
        const std::vector<Cidr> &allow = now->allow;
        if (allow.empty()) {
            static const std::vector<Cidr> loopback = [] {
                std::vector<Cidr> v;
                v.push_back(*Cidr::parse("127.0.0.1/8"));
                v.push_back(*Cidr::parse("::1/128"));
                return v;
            }();
            return std::any_of(loopback.begin(), loopback.end(), [&](const Cidr &c) { return c.contains(ip); });
        }
        return std::any_of(allow.begin(), allow.end(), [&](const Cidr &c) { return c.contains(ip); });
    }

    // The selector from the query string; answers 400 and returns nullopt if it is malformed.
    // An empty query selects nobody, except where `emptyIsAll` (GET /status).
    std::optional<Selector> selector(const httplib::Request &req, httplib::Response &res, bool emptyIsAll) {
        std::string query = rawQuery(req);
        if (query.empty() && emptyIsAll) return Selector::all();
        // The original gateway read `?*` as a key `*` without a value, which selects no one;
        // the HTTP contract keeps that (Selector::parse would read it as everyone).
        if (query == "*") return Selector::none();
        std::string error;
        auto sel = Selector::parse(query, &error);
        if (!sel) reply(res, 400, "bad selector: " + error);
        return sel;
    }

    // When a command must have started on every shard: after this it runs nowhere new, and its
    // caller is told what it did (504).
    Deadline commandDeadline() const { return std::chrono::steady_clock::now() + current()->commandTimeout; }

    // What a command that ended early did, for the caller to act on ("it ran on 1 of 2 shards
    // and was queued for 3 connections there; the other shard never will run it").
    template <class T> std::string partially(const CommandResult<T> &r) const {
        std::string out = "it ran on " + std::to_string(r.shards) + " of " + std::to_string(ctx.hub.shardCount()) +
                          " shards";
        if constexpr (std::is_same_v<T, std::size_t>) out += " and acted on " + std::to_string(r.value) + " connection(s) there";
        if constexpr (std::is_same_v<T, TagChangeCount>)
            out += " and changed " + std::to_string(r.value.changed) + " connection(s) there";
        return out;
    }

    // Waits for a command's answer (given `deadline`, see commandDeadline()) and writes it: the
    // result, or why there is none. A stop ends the wait at once (503), so that stopping never
    // waits for the shards.
    template <class Result> std::optional<Result> await(std::future<Result> f, const char *command, Deadline deadline,
                                                        httplib::Response &res) {
        auto start = std::chrono::steady_clock::now();
        // The shards skip the command past its deadline and answer TimedOut; only a shard stuck
        // inside something else makes us give up without its answer, a moment later.
        auto limit = deadline + kStuckShardGrace;
        for (;;) {
            auto now = std::chrono::steady_clock::now();
            if (f.wait_for(std::min<std::chrono::steady_clock::duration>(kStopPoll, std::max(limit - now, {}))) ==
                std::future_status::ready)
                break;
            if (server.stopping()) {
                reply(res, 503, std::string(command) +
                                    ": shutting down before the shards answered (the command may or may not have been "
                                    "applied)");
                return std::nullopt;
            }
            if (std::chrono::steady_clock::now() >= limit) {
                reply(res, 504, std::string(command) +
                                    ": a shard did not answer within control_timeout_s; a shard that had not started "
                                    "the command will not run it");
                return std::nullopt;
            }
        }
        Result r = f.get();
        ctx.metrics.observeCommand(command, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        switch (r.status) {
        case CommandStatus::Ok:
            return r;
        case CommandStatus::Busy:
            ctx.metrics.countBusy();
            res.set_header("Retry-After", "1");
            reply(res, 503, std::string(command) + ": busy (a shard's command queue is full; nothing was done); retry shortly");
            return std::nullopt;
        case CommandStatus::Stopped:
            reply(res, 503, std::string(command) + ": shutting down; " + partially(r));
            return std::nullopt;
        case CommandStatus::TimedOut:
            reply(res, 504, std::string(command) + ": not every shard started it within control_timeout_s; " +
                                partially(r) + "; the others skipped it and never will run it");
            return std::nullopt;
        case CommandStatus::Failed:
            reply(res, 500, std::string(command) + ": a shard could not run it (out of memory?); " + partially(r));
            return std::nullopt;
        }
        return std::nullopt;
    }

    // Whether the request asks for this node only (X-Wsgw-Scope: node, any case).
    static bool nodeScope(const httplib::Request &req) {
        std::string scope = req.get_header_value(kScopeHeader);
        std::transform(scope.begin(), scope.end(), scope.begin(), [](unsigned char c) { return std::tolower(c); });
        return scope == "node";
    }

    // The cluster, unless there is none or the request asks for this node only.
    Cluster *clusterFor(const httplib::Request &req, httplib::Response &res) {
        if (!ctx.cluster) return nullptr;
        if (nodeScope(req)) {
            res.set_header(kScopeHeader, "node");
            return nullptr;
        }
        return ctx.cluster;
    }

    // Waits for a cluster command: its own deadline is the cluster's command timeout, after which
    // it answers with the nodes that did; this node's own part may end like a hub command.
    template <class T>
    std::optional<ClusterResult<T>> awaitCluster(std::future<ClusterResult<T>> f, const char *command,
                                                 httplib::Response &res) {
        auto start = std::chrono::steady_clock::now();
        auto limit = start + ctx.cluster->commandTimeout() + kStuckShardGrace;
        for (;;) {
            auto now = std::chrono::steady_clock::now();
            if (f.wait_for(std::min<std::chrono::steady_clock::duration>(kStopPoll, std::max(limit - now, {}))) ==
                std::future_status::ready)
                break;
            if (server.stopping()) {
                reply(res, 503, std::string(command) + ": shutting down before the nodes answered (the command may or "
                                                       "may not have been applied)");
                return std::nullopt;
            }
            if (std::chrono::steady_clock::now() >= limit) {
                reply(res, 504, std::string(command) + ": this node's shards did not answer in time");
                return std::nullopt;
            }
        }
        ClusterResult<T> r = f.get();
        ctx.metrics.observeCommand(command, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        if (!r.missing.empty()) res.set_header(kMissingHeader, joined(r.missing));
        switch (r.status) {
        case CommandStatus::Ok:
            return r;
        case CommandStatus::Busy:
            ctx.metrics.countBusy();
            res.set_header("Retry-After", "1");
            reply(res, 503, std::string(command) + ": busy (a shard's command queue is full on this node, which did "
                                                   "nothing; other nodes may have); retry shortly");
            return std::nullopt;
        case CommandStatus::Stopped:
            reply(res, 503, std::string(command) + ": shutting down");
            return std::nullopt;
        case CommandStatus::TimedOut:
            reply(res, 504, std::string(command) + ": not every shard of this node started it within its timeout");
            return std::nullopt;
        case CommandStatus::Failed:
            reply(res, 500, std::string(command) + ": a shard of this node could not run it (out of memory?)");
            return std::nullopt;
        }
        return std::nullopt;
    }

    // /send, /settags and /close: run by the CommandRunner, which the command bus shares, and
    // answered the original's way (the count, no newline) or with why not.
    void command(CommandAction action, const httplib::Request &req, httplib::Response &res) {
        CommandRequest request;
        request.action = action;
        request.selector = rawQuery(req);
        request.body = req.body;
        request.binary = isBinaryBody(req);
        request.nodeOnly = ctx.cluster && nodeScope(req);
        CommandOutcome out = runner.run(request, *current(), [this] { return server.stopping(); });
        if (out.nodeScope) res.set_header(kScopeHeader, "node");
        if (!out.missing.empty()) res.set_header(kMissingHeader, joined(out.missing));
        if (out.busy) res.set_header("Retry-After", "1");
        if (out.status != 200) return reply(res, out.status, out.message);
        res.status = 200;
        res.set_content(out.message, kText); // no newline: the original's shape
    }

    // --- the JSON API (control_v1.h) --------------------------------------------------------------

    static void v1Reply(httplib::Response &res, int status, const nlohmann::json &body) {
        res.status = status;
        res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                        "application/json");
    }
    static void v1Ok(httplib::Response &res, const nlohmann::json &body) { v1Reply(res, 200, body); }
    static void v1Error(httplib::Response &res, int status, const std::string &message) {
        v1Reply(res, status, {{"error", message}});
    }
    // An answer the shared helpers wrote as text (a 5xx while waiting), made JSON.
    static void v1FromText(httplib::Response &res) {
        std::string body = res.body;
        while (!body.empty() && body.back() == '\n') body.pop_back();
        v1Error(res, res.status, body);
    }
    // Which nodes' parts an answer holds: this node's and the others that answered.
    nlohmann::json v1Nodes(const std::vector<std::string> &answered, const std::vector<std::string> &missing) const {
        std::vector<std::string> all{ctx.node};
        all.insert(all.end(), answered.begin(), answered.end());
        return {{"answered", all}, {"missing", missing}};
    }

    void v1Command(CommandAction action, const httplib::Request &req, httplib::Response &res) {
        std::string error;
        auto request = v1::parseCommand(action, req.body, &error);
        if (!request) return v1Error(res, 400, error);
        request->nodeOnly = ctx.cluster && nodeScope(req);
        CommandOutcome out = runner.run(*request, *current(), [this] { return server.stopping(); });
        if (out.nodeScope) res.set_header(kScopeHeader, "node");
        if (!out.missing.empty()) res.set_header(kMissingHeader, joined(out.missing));
        if (out.busy) res.set_header("Retry-After", "1");
        if (out.status != 200) {
            nlohmann::json e = {{"error", out.message}};
            if (out.count) e["count"] = out.count;
            return v1Reply(res, out.status, e);
        }
        v1Ok(res, {{"count", out.count}, {"nodes", v1Nodes(out.answered, out.missing)}});
    }

    void v1Send(const httplib::Request &req, httplib::Response &res) { v1Command(CommandAction::Send, req, res); }
    void v1SetTags(const httplib::Request &req, httplib::Response &res) { v1Command(CommandAction::SetTags, req, res); }
    void v1Close(const httplib::Request &req, httplib::Response &res) { v1Command(CommandAction::Close, req, res); }

    void v1Count(const httplib::Request &req, httplib::Response &res) {
        std::string error;
        auto q = v1::parseListQuery(rawQuery(req), false, &error);
        if (!q) return v1Error(res, 400, error);
        if (Cluster *cluster = clusterFor(req, res)) {
            auto r = awaitCluster(cluster->count(std::move(q->selector)), "count", res);
            if (!r) return v1FromText(res);
            return v1Ok(res, {{"count", r->value}, {"nodes", v1Nodes(r->answered, r->missing)}});
        }
        Deadline deadline = commandDeadline();
        auto r = await(ctx.hub.count(std::move(q->selector), deadline), "count", deadline, res);
        if (!r) return v1FromText(res);
        v1Ok(res, {{"count", r->value}, {"nodes", v1Nodes({}, {})}});
    }

    void v1Connections(const httplib::Request &req, httplib::Response &res) {
        std::string error;
        auto q = v1::parseListQuery(rawQuery(req), true, &error);
        if (!q) return v1Error(res, 400, error);
        StatusPage page{q->cursor, q->limit};
        std::vector<ClusterConnectionInfo> list;
        std::vector<std::string> answered, missing;
        if (Cluster *cluster = clusterFor(req, res)) {
            auto r = awaitCluster(cluster->status(std::move(q->selector), page), "connections", res);
            if (!r) return v1FromText(res);
            list = std::move(r->value);
            answered = std::move(r->answered);
            missing = std::move(r->missing);
        } else {
            Deadline deadline = commandDeadline();
            auto r = await(ctx.hub.status(std::move(q->selector), page, deadline), "connections", deadline, res);
            if (!r) return v1FromText(res);
            for (ConnectionInfo &c : r->value) list.push_back({ctx.node, std::move(c)});
        }
        nlohmann::json out = nlohmann::json::array();
        for (const ClusterConnectionInfo &n : list)
            out.push_back({{"id", n.info.id.toString()},
                           {"node", n.node},
                           {"endpoint", n.info.endpoint},
                           {"remote_addr", n.info.remoteAddress},
                           {"shard", n.info.shard},
                           {"tags", n.info.tags}});
        // A full page may have a next one; a short page is the last.
        nlohmann::json next = list.size() == q->limit ? nlohmann::json(list.back().info.id.toString()) : nlohmann::json();
        v1Ok(res, {{"connections", std::move(out)}, {"next_cursor", std::move(next)}, {"nodes", v1Nodes(answered, missing)}});
    }

    // The dashboard's live view: an event a second (control_dashboard.h) until the client goes.
    void v1Stream(const httplib::Request &req, httplib::Response &res) {
        res.status = 200;
        if (req.method == "HEAD") {
            res.set_header("Cache-Control", "no-store");
            res.set_content("", "text/event-stream");
            return;
        }
        DashboardSources sources{ctx.hub, ctx.metrics, ctx.cluster, ctx.node};
        StreamSource source;
        source.contentType = "text/event-stream";
        source.interval = std::chrono::seconds(1);
        source.next = [sources] { return dashboardEvent(sources); };
        if (!HttpRouter::openStream(std::move(source))) reply(res, 500, "stream: cannot open a stream here");
    }

    // The page holds no data, so it needs no token (a browser's navigation cannot send one); its
    // calls send the token the user enters.
    void dashboard(const httplib::Request &, httplib::Response &res) {
        res.status = 200;
        res.set_header("Cache-Control", "no-store");
        res.set_header("Content-Security-Policy", kDashboardCsp);
        res.set_header("X-Content-Type-Options", "nosniff");
        res.set_header("Referrer-Policy", "no-referrer");
        res.set_content(std::string(embedded::dashboardHtml), "text/html; charset=utf-8");
    }

    void v1OpenApi(const httplib::Request &, httplib::Response &res) {
        res.status = 200;
        res.set_content(std::string(embedded::openApiJson), "application/json");
    }

    void send(const httplib::Request &req, httplib::Response &res) { command(CommandAction::Send, req, res); }
    void setTags(const httplib::Request &req, httplib::Response &res) { command(CommandAction::SetTags, req, res); }
    void close(const httplib::Request &req, httplib::Response &res) { command(CommandAction::Close, req, res); }

    void status(const httplib::Request &req, httplib::Response &res) {
        auto sel = selector(req, res, true);
        if (!sel) return;
        std::vector<ClusterConnectionInfo> all;
        if (Cluster *cluster = clusterFor(req, res)) {
            auto r = awaitCluster(cluster->status(std::move(*sel)), "status", res);
            if (!r) return;
            all = std::move(r->value);
        } else {
            Deadline deadline = commandDeadline();
            auto r = await(ctx.hub.status(std::move(*sel), deadline), "status", deadline, res);
            if (!r) return;
            for (ConnectionInfo &c : r->value) all.push_back({ctx.node, std::move(c)});
        }
        res.status = 200;
        if (wantsJson(req)) {
            nlohmann::json list = nlohmann::json::array();
            for (const ClusterConnectionInfo &n : all) {
                const ConnectionInfo &c = n.info;
                nlohmann::json one = {{"id", c.id.toString()},
                                      {"endpoint", c.endpoint},
                                      {"remote_addr", c.remoteAddress},
                                      {"shard", c.shard},
                                      {"tags", c.tags}};
                if (ctx.cluster) one["node"] = n.node;
                list.push_back(std::move(one));
            }
            nlohmann::json out = {{"count", all.size()}, {"connections", std::move(list)}};
            res.set_content(out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json");
            return;
        }
        std::string body;
        for (const ClusterConnectionInfo &n : all) {
            body += "id=" + n.info.id.toString();
            for (const auto &[k, v] : n.info.tags) body += " " + k + "=" + v;
            body += "\n";
        }
        res.set_content(body, kText);
    }

    void tree(const httplib::Request &req, httplib::Response &res) {
        TagTree tree;
        if (Cluster *cluster = clusterFor(req, res)) {
            auto r = awaitCluster(cluster->tree(), "tree", res);
            if (!r) return;
            tree = std::move(r->value);
        } else {
            Deadline deadline = commandDeadline();
            auto r = await(ctx.hub.tree(deadline), "tree", deadline, res);
            if (!r) return;
            tree = std::move(r->value);
        }
        res.status = 200;
        if (wantsJson(req)) {
            nlohmann::json out = nlohmann::json::object();
            for (const auto &[key, values] : tree) out[key] = values;
            res.set_content(out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json");
            return;
        }
        std::string body;
        for (const auto &[key, values] : tree) {
            body += key + "\n";
            for (const auto &[value, count] : values) body += " - " + value + "\n";
        }
        res.set_content(body, kText);
    }

    // The live nodes: this one first, then the others as their last heartbeat described them.
    void nodes(const httplib::Request &req, httplib::Response &res) {
        std::vector<NodeInfo> list;
        if (ctx.cluster) {
            list = ctx.cluster->nodes();
        } else {
            Deadline deadline = commandDeadline();
            auto promise = std::make_shared<std::promise<CountResult>>();
            auto counted = promise->get_future();
            ctx.hub.forEachShard([](Shard &s) { return s.registry().size(); },
                                 [promise](CountResult c) { promise->set_value(std::move(c)); }, deadline);
            auto r = await(std::move(counted), "nodes", deadline, res);
            if (!r) return;
            NodeInfo self;
            self.id = ctx.node;
            self.address = ctx.address;
            self.connections = r->value;
            self.heartbeatMs = std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
            list.push_back(std::move(self));
        }
        res.status = 200;
        if (wantsJson(req)) {
            nlohmann::json out = nlohmann::json::array();
            for (const NodeInfo &n : list)
                out.push_back({{"id", n.id},
                               {"address", n.address},
                               {"connections", n.connections},
                               {"last_heartbeat_ms", n.heartbeatMs},
                               {"self", n.id == ctx.node}});
            res.set_content(nlohmann::json{{"count", list.size()}, {"nodes", std::move(out)}}.dump(
                                -1, ' ', false, nlohmann::json::error_handler_t::replace),
                            "application/json");
            return;
        }
        std::string body;
        for (const NodeInfo &n : list)
            body += "node=" + n.id + " address=" + n.address + " connections=" + std::to_string(n.connections) +
                    " last_heartbeat_ms=" + std::to_string(n.heartbeatMs) + "\n";
        res.set_content(body, kText);
    }

    void routes() {
        using Handler = void (Impl::*)(const httplib::Request &, httplib::Response &);
        struct Route {
            const char *path;
            const char *method;
            Handler handler;
        };
        const Route table[] = {
            {"/send", "POST", &Impl::send},       {"/settags", "POST", &Impl::setTags},
            {"/close", "POST", &Impl::close},     {"/status", "GET", &Impl::status},
            {"/tree", "GET", &Impl::tree},        {"/metrics", "GET", &Impl::metrics},
            {"/healthz", "GET", &Impl::healthz},  {"/readyz", "GET", &Impl::readyz},
            {"/nodes", "GET", &Impl::nodes},
            {"/v1/send", "POST", &Impl::v1Send},  {"/v1/settags", "POST", &Impl::v1SetTags},
            {"/v1/close", "POST", &Impl::v1Close}, {"/v1/count", "GET", &Impl::v1Count},
            {"/v1/connections", "GET", &Impl::v1Connections}, {"/v1/openapi.json", "GET", &Impl::v1OpenApi},
            {"/v1/stream", "GET", &Impl::v1Stream}, {"/dashboard", "GET", &Impl::dashboard},
        };
        for (const Route &r : table) {
            auto handle = [this, h = r.handler](const httplib::Request &req, httplib::Response &res) {
                (this->*h)(req, res);
            };
            auto wrong = [allow = std::string(r.method)](const httplib::Request &req, httplib::Response &res) {
                res.set_header("Allow", allow);
                reply(res, 405, req.method + " is not allowed here; use " + allow);
            };
            bool post = std::string_view(r.method) == "POST";
            httplib::Server &router = server.router();
            router.Get(r.path, post ? httplib::Server::Handler(wrong) : httplib::Server::Handler(handle));
            router.Post(r.path, post ? httplib::Server::Handler(handle) : httplib::Server::Handler(wrong));
            router.Put(r.path, wrong);
            router.Patch(r.path, wrong);
            router.Delete(r.path, wrong);
            router.Options(r.path, wrong);
        }
    }

    void metrics(const httplib::Request &, httplib::Response &res) {
        if (!opt.metrics) {
            reply(res, 404, "metrics are disabled (prometheus.enabled: false)");
            return;
        }
        res.status = 200;
        std::optional<MirrorStats> mirror;
        if (ConnectionMirror *m = ctx.hub.mirror()) mirror = m->stats();
        std::optional<ClusterStats> cluster;
        if (ctx.cluster) cluster = ctx.cluster->stats();
        res.set_content(ctx.metrics.render(ctx.hub.events().stats(), ctx.hub.events().paused(), mirror, cluster,
                                           current()->legacyMetricNames),
                        "text/plain; version=0.0.4; charset=utf-8");
    }

    void healthz(const httplib::Request &, httplib::Response &res) { reply(res, 200, "ok"); }

    void readyz(const httplib::Request &, httplib::Response &res) {
        std::string why = ctx.notReady ? ctx.notReady() : std::string();
        if (why.empty())
            reply(res, 200, "ready");
        else
            reply(res, 503, "not ready: " + why);
    }
};

ControlApi::ControlApi(ControlApiContext context, ControlApiOptions options)
    : impl_(std::make_unique<Impl>(std::move(context), std::move(options))) {}

ControlApi::~ControlApi() { stop(); }

bool ControlApi::start(std::string *error) {
    Impl &d = *impl_;
    httplib::Server &s = d.server.router();
    s.set_pre_routing_handler([&d](const httplib::Request &req, httplib::Response &res) {
        // Health checks come from orchestrators on any address and reveal nothing.
        if (req.path == "/healthz" || req.path == "/readyz") return httplib::Server::HandlerResponse::Unhandled;
        if (d.allowed(req.remote_addr)) {
            const std::string token = d.current()->token;
            if (token.empty() || req.path == "/dashboard") return httplib::Server::HandlerResponse::Unhandled;
            std::string auth = req.get_header_value("Authorization");
            static constexpr std::string_view kBearer = "Bearer ";
            if (auth.size() > kBearer.size() && auth.compare(0, kBearer.size(), kBearer) == 0 &&
                tokenMatches(std::string_view(auth).substr(kBearer.size()), token))
                return httplib::Server::HandlerResponse::Unhandled;
            // Never log what was sent: it may be a near miss of the real token.
            spdlog::warn("control API: refused {} {} from {}: {}", req.method, req.path, req.remote_addr,
                         auth.empty() ? "no bearer token" : "wrong bearer token");
            res.set_header("WWW-Authenticate", "Bearer");
            reply(res, 401, "unauthorized: send 'Authorization: Bearer <control_token>'");
            return httplib::Server::HandlerResponse::Handled;
        }
        spdlog::warn("control API: refused {} {} from {} (not in internal_endpoint_access_whitelist)", req.method,
                     req.path, req.remote_addr);
        reply(res, 403, "forbidden: " + req.remote_addr + " is not in internal_endpoint_access_whitelist");
        return httplib::Server::HandlerResponse::Handled;
    });
    s.set_error_handler([](const httplib::Request &req, httplib::Response &res) {
        if (!res.body.empty()) return;
        if (res.status == 404)
            reply(res, 404, "not found: " + req.path);
        else if (res.status == 413)
            reply(res, 413, "request body too large");
        else
            reply(res, res.status, "error " + std::to_string(res.status));
    });
    s.set_exception_handler([](const httplib::Request &, httplib::Response &res, std::exception_ptr ep) {
        std::string what = "internal error";
        try {
            std::rethrow_exception(ep);
        } catch (const std::exception &e) {
            what += std::string(": ") + e.what();
        } catch (...) {
        }
        spdlog::error("control API: {}", what);
        reply(res, 500, what);
    });
    d.routes();
    return d.server.start(error);
}

std::uint16_t ControlApi::port() const { return impl_->server.port(); }

void ControlApi::reload(const ControlApiOptions &next) {
    auto merged = std::make_shared<ControlApiOptions>(impl_->opt);
    merged->allow = next.allow;
    merged->token = next.token;
    merged->maxTagsPerConnection = next.maxTagsPerConnection;
    merged->maxTagKeyLen = next.maxTagKeyLen;
    merged->maxTagValueLen = next.maxTagValueLen;
    merged->commandTimeout = next.commandTimeout;
    merged->requestTimeout = next.requestTimeout;
    merged->legacyMetricNames = next.legacyMetricNames;
    impl_->server.setRequestTimeout(next.requestTimeout);
    std::lock_guard lock(impl_->liveMu);
    impl_->live = std::move(merged);
}

void ControlApi::stop() { impl_->server.stop(); }

} // namespace wsgw::daemon
