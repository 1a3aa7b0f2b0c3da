#include "control_api.h"

#include "listener.h"
#include "metrics.h"
#include "tls.h"
#include "utf8.h"

#include <wsgw/hub.h>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <future>
#include <mutex>
#include <thread>

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

// Equal without revealing, through timing, how much of a guess was right.
bool constantTimeEquals(std::string_view a, std::string_view b) {
    unsigned char diff = static_cast<unsigned char>(a.size() != b.size());
    for (std::size_t i = 0; i < a.size(); ++i)
        diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
    return diff == 0;
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
          owned(makeServer()), server(*owned) {}

    ControlApiContext ctx;
    ControlApiOptions opt; // as started: address, TLS, body limit

    // What a reload may change, read per request.
    mutable std::mutex liveMu;
    std::shared_ptr<const ControlApiOptions> live;
    std::shared_ptr<const ControlApiOptions> current() const {
        std::lock_guard lock(liveMu);
        return live;
    }
    std::optional<TlsCertificateInfo> tlsCert; // control_tls: what its certificate says, once loaded
    std::string tlsError;                      // control_tls: why it could not be loaded
    std::unique_ptr<httplib::Server> owned;    // an httplib::SSLServer with control_tls
    httplib::Server &server;
    std::thread thread;
    bool running = false;

    // With control_tls, the files are loaded by our code rather than SSLServer(cert, key): for a
    // message that names the problem (start() reports it), and so that an encrypted key fails
    // instead of OpenSSL asking for its passphrase on the terminal.
    std::unique_ptr<httplib::Server> makeServer() {
        if (!opt.tls) return std::make_unique<httplib::Server>();
        return std::make_unique<httplib::SSLServer>([this](SSL_CTX &ssl) {
            SSL_CTX_set_options(&ssl, SSL_OP_NO_COMPRESSION | SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION);
            SSL_CTX_set_min_proto_version(&ssl, TLS1_2_VERSION);
            tlsCert = loadTlsFiles(ssl, *opt.tls, "control_tls", &tlsError);
            return tlsCert.has_value();
        });
    }

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
        std::string error;
        auto sel = Selector::parse(query, &error);
        if (!sel) reply(res, 400, "bad selector: " + error);
        return sel;
    }

    // Waits for a command's answer and writes it: the count, or why there is none.
    template <class Result> std::optional<Result> await(std::future<Result> f, const char *command,
                                                        httplib::Response &res) {
        auto start = std::chrono::steady_clock::now();
        if (f.wait_for(current()->commandTimeout) != std::future_status::ready) {
            reply(res, 504, std::string(command) + ": the shards did not answer in time");
            return std::nullopt;
        }
        Result r = f.get();
        ctx.metrics.observeCommand(command, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        if (r.status == CommandStatus::Busy) {
            ctx.metrics.countBusy();
            res.set_header("Retry-After", "1");
            reply(res, 503, std::string(command) + ": busy (a shard's command queue is full); retry shortly");
            return std::nullopt;
        }
        if (r.status == CommandStatus::Stopped) {
            reply(res, 503, std::string(command) + ": shutting down");
            return std::nullopt;
        }
        return r;
    }

    void answerCount(std::future<CountResult> f, const char *command, httplib::Response &res) {
        if (auto r = await(std::move(f), command, res)) {
            res.status = 200;
            res.set_content(std::to_string(r->value), kText); // no newline: the original's shape
        }
    }

    // A body as a message: binary for application/octet-stream, else text that must be UTF-8.
    MessagePtr bodyMessage(const httplib::Request &req, httplib::Response &res) {
        bool binary = isBinaryBody(req);
        if (!binary && !isValidUtf8(req.body)) {
            reply(res, 400,
                  "the body is not valid UTF-8, so it cannot be a text message: send binary data with "
                  "Content-Type: application/octet-stream");
            return nullptr;
        }
        return Message::create(binary ? Opcode::Binary : Opcode::Text, req.body, ctx.messageHeadroom);
    }

    void send(const httplib::Request &req, httplib::Response &res) {
        auto sel = selector(req, res, false);
        if (!sel) return;
        MessagePtr msg = bodyMessage(req, res);
        if (!msg) return;
        answerCount(ctx.hub.send(std::move(*sel), std::move(msg)), "send", res);
    }

    void setTags(const httplib::Request &req, httplib::Response &res) {
        auto sel = selector(req, res, false);
        if (!sel) return;
        std::string error;
        auto changes = parseForm(req.body, &error);
        if (!changes) {
            reply(res, 400, "bad body: expected form-encoded tags like admin=1&group=a: " + error);
            return;
        }
        auto limits = current();
        for (const auto &[k, v] : *changes) {
            if (k.size() > limits->maxTagKeyLen) {
                reply(res, 400, "tag key longer than max_tag_key_len (" + std::to_string(limits->maxTagKeyLen) +
                                    " bytes); nothing changed");
                return;
            }
            if (v.size() > limits->maxTagValueLen) {
                reply(res, 400, "value of tag '" + k + "' longer than max_tag_value_len (" +
                                    std::to_string(limits->maxTagValueLen) + " bytes); nothing changed");
                return;
            }
        }
        // All or nothing: first count the connections that would end up with too many tags.
        auto tooMany = countOverTagLimit(*sel, *changes, limits->maxTagsPerConnection, res);
        if (!tooMany) return;
        if (*tooMany > 0) {
            reply(res, 400, "this would give " + std::to_string(*tooMany) + " connection(s) more than " +
                                std::to_string(limits->maxTagsPerConnection) +
                                " tags (max_tags_per_connection); nothing changed");
            return;
        }
        answerCount(ctx.hub.setTags(std::move(*sel), std::move(*changes)), "settags", res);
    }

    // How many selected connections `changes` would take over max_tags_per_connection; nullopt
    // (with the answer written) when the shards could not be asked.
    std::optional<std::size_t> countOverTagLimit(const Selector &sel, const TagList &changes, unsigned limit,
                                                 httplib::Response &res) {
        std::size_t adds = 0;
        for (const auto &[k, v] : changes) adds += !v.empty();
        if (adds == 0) return 0; // only deletions: never over
        auto promise = std::make_shared<std::promise<CountResult>>();
        auto future = promise->get_future();
        ctx.hub.forEachShard(
            [sel, changes, limit](Shard &s) {
                Registry &reg = s.registry();
                std::size_t over = 0;
                reg.match(sel, [&](Connection &c) {
                    Tags t = reg.tags(c.id());
                    for (const auto &[k, v] : changes) {
                        if (v.empty())
                            t.erase(k);
                        else
                            t[k] = v;
                    }
                    over += t.size() > limit;
                });
                return over;
            },
            [promise](CountResult r) { promise->set_value(r); });
        auto r = await(std::move(future), "settags", res);
        if (!r) return std::nullopt;
        return r->value;
    }

    void close(const httplib::Request &req, httplib::Response &res) {
        auto sel = selector(req, res, false);
        if (!sel) return;
        MessagePtr last;
        if (!req.body.empty()) {
            last = bodyMessage(req, res);
            if (!last) return;
        }
        answerCount(ctx.hub.close(std::move(*sel), close_code::kNormal, "Closed by server", std::move(last)), "close",
                    res);
    }

    void status(const httplib::Request &req, httplib::Response &res) {
        auto sel = selector(req, res, true);
        if (!sel) return;
        auto r = await(ctx.hub.status(std::move(*sel)), "status", res);
        if (!r) return;
        res.status = 200;
        if (wantsJson(req)) {
            nlohmann::json list = nlohmann::json::array();
            for (const ConnectionInfo &c : r->value) {
                list.push_back({{"id", c.id.toString()},
                                {"endpoint", c.endpoint},
                                {"remote_addr", c.remoteAddress},
                                {"shard", c.shard},
                                {"tags", c.tags}});
            }
            nlohmann::json out = {{"count", r->value.size()}, {"connections", std::move(list)}};
            res.set_content(out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json");
            return;
        }
        std::string body;
        for (const ConnectionInfo &c : r->value) {
            body += "id=" + c.id.toString();
            for (const auto &[k, v] : c.tags) body += " " + k + "=" + v;
            body += "\n";
        }
        res.set_content(body, kText);
    }

    void tree(const httplib::Request &req, httplib::Response &res) {
        auto r = await(ctx.hub.tree(), "tree", res);
        if (!r) return;
        res.status = 200;
        if (wantsJson(req)) {
            nlohmann::json out = nlohmann::json::object();
            for (const auto &[key, values] : r->value) out[key] = values;
            res.set_content(out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json");
            return;
        }
        std::string body;
        for (const auto &[key, values] : r->value) {
            body += key + "\n";
            for (const auto &[value, count] : values) body += " - " + value + "\n";
        }
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
            server.Get(r.path, post ? httplib::Server::Handler(wrong) : httplib::Server::Handler(handle));
            server.Post(r.path, post ? httplib::Server::Handler(handle) : httplib::Server::Handler(wrong));
            server.Put(r.path, wrong);
            server.Patch(r.path, wrong);
            server.Delete(r.path, wrong);
            server.Options(r.path, wrong);
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
        res.set_content(ctx.metrics.render(ctx.hub.events().stats(), ctx.hub.events().paused(), mirror),
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
    if (d.opt.tls) {
        if (!d.server.is_valid()) {
            if (error) *error = d.tlsError.empty() ? "control_tls: cannot set up TLS" : d.tlsError;
            return false;
        }
        logTlsCertificate("control_tls", *d.opt.tls, *d.tlsCert);
    }
    httplib::Server &s = d.server;
    s.set_payload_max_length(d.opt.maxBodyBytes);
    // httplib's workers finish an idle keep-alive wait or a slow read before stop() returns,
    // so these bound how long a shutdown can wait for backends' connections.
    s.set_read_timeout(static_cast<time_t>(d.opt.ioTimeout.count()), 0);
    s.set_write_timeout(static_cast<time_t>(d.opt.ioTimeout.count()), 0);
    s.set_keep_alive_timeout(2);
    s.set_keep_alive_max_count(1000);
    // httplib writes an answer's header and body separately: with Nagle on, the body waited for
    // the client's delayed ACK, 40 ms per request on a keep-alive connection.
    s.set_tcp_nodelay(true);
    // httplib's default is SO_REUSEPORT alone. The connections this side closes then sit in
    // TIME_WAIT without SO_REUSEADDR, and a restart could not bind the port for a minute; and a
    // second process could share the port. SO_REUSEADDR alone is right for one listener.
    s.set_socket_options([](socket_t sock) {
        int yes = 1;
        setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    s.set_pre_routing_handler([&d](const httplib::Request &req, httplib::Response &res) {
        // Health checks come from orchestrators on any address and reveal nothing.
        if (req.path == "/healthz" || req.path == "/readyz") return httplib::Server::HandlerResponse::Unhandled;
        if (d.allowed(req.remote_addr)) {
            const std::string token = d.current()->token;
            if (token.empty()) return httplib::Server::HandlerResponse::Unhandled;
            std::string auth = req.get_header_value("Authorization");
            static constexpr std::string_view kBearer = "Bearer ";
            if (auth.size() > kBearer.size() && auth.compare(0, kBearer.size(), kBearer) == 0 &&
                constantTimeEquals(std::string_view(auth).substr(kBearer.size()), token))
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

    // httplib wants the bare address; the config may carry IPv6 in brackets.
    std::string host = d.opt.addr.host.empty() ? "0.0.0.0" : d.opt.addr.host;
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    // A clear message when somebody (another wsgwd) listens there already.
    std::string probeError;
    if (openListener(d.opt.addr.host, d.opt.addr.port, &probeError, /*probe=*/true) < 0) {
        if (error)
            *error = "cannot listen on " + d.opt.addr.toString() + " for the control API: " + probeError;
        return false;
    }
    if (!s.bind_to_port(host, d.opt.addr.port)) {
        if (error) *error = "cannot listen on " + d.opt.addr.toString() + " for the control API (address in use?)";
        return false;
    }
    d.thread = std::thread([&s] { s.listen_after_bind(); });
    d.running = true;
    return true;
}

void ControlApi::reload(const ControlApiOptions &next) {
    auto merged = std::make_shared<ControlApiOptions>(impl_->opt);
    merged->allow = next.allow;
    merged->token = next.token;
    merged->maxTagsPerConnection = next.maxTagsPerConnection;
    merged->maxTagKeyLen = next.maxTagKeyLen;
    merged->maxTagValueLen = next.maxTagValueLen;
    merged->commandTimeout = next.commandTimeout;
    std::lock_guard lock(impl_->liveMu);
    impl_->live = std::move(merged);
}

void ControlApi::stop() {
    Impl &d = *impl_;
    if (!d.running) return;
    d.running = false;
    d.server.stop();
    if (d.thread.joinable()) d.thread.join();
}

} // namespace wsgw::daemon
