// The WebSocket server's façade: starts the shards, stops them (drain, then end), reloads their
// settings and lets paused readers go on. The shards themselves: ws_shard.h.

#include "ws_server.h"

#include "listener.h"
#include "lws_workarounds.h"
#include "tls.h"
#include "ws_connection.h"
#include "ws_shard.h"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <future>
#include <mutex>
#include <thread>

namespace wsgw::daemon {

namespace {

// The connect authorizer's client threads (requests under way at once, each with keep-alive
// connections of its own) and how many upgrades may wait for one; beyond that an upgrade is
// answered 503 at once.
constexpr std::size_t kAuthorizerThreads = 8;
constexpr std::size_t kAuthorizerQueue = 4096;

} // namespace

WsServer::WsServer(Hub &hub, Metrics &metrics, WsServerOptions options)
    : impl_(std::make_unique<Impl>(hub, metrics, std::move(options))) {}

WsServer::~WsServer() {
    stop(close_code::kGoingAway, "server shutting down", std::chrono::milliseconds(0), std::chrono::milliseconds(0));
}

std::size_t WsServer::messageHeadroom() noexcept { return LWS_PRE; }

bool WsServer::listening() const noexcept { return impl_->running.load(); }

std::size_t WsServer::connections() const noexcept {
    std::size_t n = 0;
    for (const auto &s : impl_->shards) n += s->connections.load(std::memory_order_relaxed);
    return n;
}

bool WsServer::start(std::string *error) {
    Impl &d = *impl_;
    // libwebsockets would only log "problem getting cert" and fail every vhost: check the files
    // first, for a message that says what is wrong with which file.
    if (d.options.tls) {
        std::string tlsError;
        auto cert = checkTlsFiles(*d.options.tls, "tls", &tlsError);
        if (!cert) {
            if (error) *error = tlsError;
            return false;
        }
        logTlsCertificate("tls", *d.options.tls, *cert);
        d.unusedClientTls.reset(newSharedClientTls());
        if (!d.unusedClientTls) {
            if (error) *error = "tls: cannot create a TLS context";
            return false;
        }
    }
    const std::size_t shards = d.hub.shardCount();
    for (std::size_t i = 0; i < shards; ++i) d.shards.push_back(std::make_unique<ShardState>(d, i));
    // The config refuses authorize: with tls: (the head cannot be read ahead of TLS).
    const bool authorize = std::any_of(d.options.endpoints.begin(), d.options.endpoints.end(),
                                       [](const WsEndpoint &e) { return e.authorize.has_value(); });
    if (authorize && !d.options.tls && !d.authorizer)
        d.authorizer = std::make_unique<AuthorizerPool>(kAuthorizerThreads, kAuthorizerQueue);

    // All listeners first: if the address is taken, nothing has started yet.
    const HostPort &addr = d.options.addr;
    std::string probeError;
    if (openListener(addr.host, addr.port, &probeError, /*probe=*/true) < 0) {
        d.shards.clear();
        if (error) *error = "cannot listen on " + addr.host + ":" + std::to_string(addr.port) + ": " + probeError;
        return false;
    }
    for (auto &ptr : d.shards) {
        ShardState *s = ptr.get();
        std::string listenError;
        s->listenFd = openListener(addr.host, addr.port, &listenError);
        if (s->listenFd < 0) {
            for (auto &other : d.shards)
                if (other->listenFd >= 0) ::close(other->listenFd);
            d.shards.clear();
            if (error) *error = "cannot listen on " + addr.host + ":" + std::to_string(addr.port) + ": " + listenError;
            return false;
        }
    }

    std::vector<std::future<std::string>> started;
    for (auto &ptr : d.shards) {
        auto promise = std::make_shared<std::promise<std::string>>();
        started.push_back(promise->get_future());
        startShardThread(d, *ptr, [promise](std::string why) { promise->set_value(std::move(why)); });
    }

    std::string firstError;
    for (auto &f : started) {
        std::string e = f.get();
        if (!e.empty() && firstError.empty()) firstError = e;
    }
    if (!firstError.empty()) {
        endThreads(d);
        d.shards.clear();
        if (error) *error = firstError;
        return false;
    }
    d.running.store(true);
    return true;
}

void WsServer::reload(WsServerOptions next) {
    for (auto &ptr : impl_->shards) {
        ShardState *s = ptr.get();
        if (!s->shard.post([s, next](Shard &) {
                // Same paths in the same order (the caller checks): connections keep their index.
                s->settings.endpoints = next.endpoints;
                s->settings.idleTimeout = next.idleTimeout;
                s->settings.maxConnections = next.maxConnections;
                s->settings.maxLifetime = next.maxLifetime;
            }))
            spdlog::warn("reload: shard {} is busy; its settings are unchanged until the next reload", s->index);
    }
}

void WsServer::resumeReading() {
    // A request the shard reads at its next wake-up (and at its next sweep, should the wake-up
    // be lost), never a command a full inbox could drop.
    for (auto &ptr : impl_->shards) {
        ShardState *s = ptr.get();
        s->resumeRequests.fetch_add(1, std::memory_order_acq_rel);
        std::lock_guard lock(s->wakeMu);
        if (s->context) lws_cancel_service(s->context);
    }
}

void WsServer::stop(std::uint16_t code, std::string_view reason, std::chrono::milliseconds spread,
                    std::chrono::milliseconds grace) {
    Impl &d = *impl_;
    std::lock_guard lock(d.stopMu);
    if (d.stopped || d.shards.empty()) {
        d.stopped = true;
        return;
    }
    d.stopped = true;
    d.running.store(false);
    for (auto &s : d.shards) {
        s->draining.store(true);
        // Close the listener on its own thread: new clients are refused by the kernel now.
        ShardState *sp = s.get();
        (void)s->shard.post([sp](Shard &) {
            if (sp->listener) lws_set_timeout(sp->listener, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        });
    }

    // Closes in even steps over `spread`: after step k of n, each shard has closed k/n of what
    // it held when the drain began.
    std::string why(reason);
    constexpr auto kStep = std::chrono::milliseconds(100);
    const auto start = std::chrono::steady_clock::now();
    const long steps = std::max<long>(1, static_cast<long>(spread / kStep));
    for (long step = 1; step < steps && connections() > 0; ++step) {
        for (auto &s : d.shards) {
            ShardState *sp = s.get();
            (void)s->shard.post([sp, step, steps, code, why](Shard &shard) {
                std::size_t open = 0;
                shard.registry().forEach([&](Connection &c, const Tags &) {
                    open += !static_cast<WsConnection &>(c).isClosing();
                });
                if (step == 1) sp->drainInitial = open;
                std::size_t keep = sp->drainInitial * static_cast<std::size_t>(steps - step) / static_cast<std::size_t>(steps);
                std::size_t quota = open > keep ? open - keep : 0;
                shard.registry().match(Selector::all(), [&](Connection &c) {
                    auto &ws = static_cast<WsConnection &>(c);
                    if (quota == 0 || ws.isClosing()) return;
                    ws.close(code, why);
                    --quota;
                });
            });
        }
        std::this_thread::sleep_until(start + step * kStep);
    }

    // The rest (and any that slipped in), until all are gone or grace runs out.
    auto deadline = std::chrono::steady_clock::now() + grace;
    do {
        auto closed = d.hub.close(Selector::all(), code, why, {}, deadline);
        closed.wait_until(deadline);
        if (connections() == 0) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } while (std::chrono::steady_clock::now() < deadline);

    // The shard loops end next: every command still queued, or sent from now on, is answered
    // Stopped at once instead of waiting for a loop that will not run again.
    d.hub.stopCommands();
    endThreads(d);
}

} // namespace wsgw::daemon
