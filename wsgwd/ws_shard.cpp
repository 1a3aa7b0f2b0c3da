#include "ws_shard.h"

#include "lws_workarounds.h"
#include "ws_authorize.h"
#include "ws_connection.h"

#include <ev.h>

#include <pthread.h>
#include <unistd.h>

#include <algorithm>

namespace wsgw::daemon {

namespace {

const lws_extension kExtensions[] = {
    {"permessage-deflate", lws_extension_callback_pm_deflate, "permessage-deflate; client_max_window_bits"},
    {nullptr, nullptr, nullptr},
};

// Creates the shard's loop, context and vhost and adopts its listening socket; "" on success,
// else why not (and nothing of it is left).
std::string setUp(WsServer::Impl &d, ShardState *s) {
    const std::optional<TlsFiles> &tls = d.options.tls;
    // lws 4.1 keeps OpenSSL ex-data indexes in globals that every TLS context's creation
    // sets: one shard at a time.
    static std::mutex tlsSetupMu;
    std::unique_lock tlsSetup(tlsSetupMu, std::defer_lock);
    if (tls) tlsSetup.lock();
    // epoll through libev rather than lws's own poll(), which hands the kernel every socket
    // on every loop iteration. The loop is ours ("foreign"), so lws installs no signal
    // watchers and the shard thread runs it.
    s->loop = ev_loop_new(static_cast<unsigned>(EVBACKEND_EPOLL) | static_cast<unsigned>(EVFLAG_NOENV));
    void *foreign[1] = {s->loop};
    lws_context_creation_info info{};
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_LIBEV;
    info.foreign_loops = foreign;
    if (tls) info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.user = s;
    info.count_threads = 1;
    lws_context *context = s->loop ? lws_create_context(&info) : nullptr;
    {
        std::lock_guard lock(s->wakeMu);
        s->context = context;
    }
    if (!context) {
        ::close(s->listenFd);
        s->listenFd = -1;
        if (s->loop) ev_loop_destroy(s->loop);
        s->loop = nullptr;
        return "cannot create the libwebsockets context (with its libev event loop)";
    }
    lws_context_creation_info vinfo{};
    vinfo.vhost_name = "wsgw";
    vinfo.port = CONTEXT_PORT_NO_LISTEN_SERVER; // we accept on our own listener (lws_workarounds.h)
    vinfo.protocols = s->protocols;
    vinfo.extensions = kExtensions;
    vinfo.keepalive_timeout = 5;
    vinfo.timeout_secs_ah_idle = 10;
    // No lws validity timers (lws_workarounds.h): the sweep pings and times out connections.
    static const lws_retry_bo_t kNoValidityTimers{};
    vinfo.retry_and_idle_policy = &kNoValidityTimers;
    if (tls) {
        // With a certificate, lws 4.1.6 turns TLS on for a vhost without a listen socket
        // of its own too (tls-server.c: any port but CONTEXT_PORT_NO_LISTEN).
        vinfo.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        vinfo.provided_client_ssl_ctx = d.unusedClientTls.get();
        vinfo.ssl_cert_filepath = tls->cert.c_str();
        vinfo.ssl_private_key_filepath = tls->key.c_str();
        vinfo.ssl_options_set = SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1;
        // Only HTTP/1.1 upgrades are served: never let ALPN pick h2.
        vinfo.alpn = "http/1.1";
    }
    s->vhost = lws_create_vhost(context, &vinfo);
    if (tlsSetup.owns_lock()) tlsSetup.unlock();
    lws_sock_file_fd_type fd;
    fd.filefd = s->listenFd;
    if (s->vhost)
        s->listener = lws_adopt_descriptor_vhost(s->vhost, LWS_ADOPT_RAW_FILE_DESC, fd, "wsgw-listener", nullptr);
    if (!s->listener) {
        if (!s->vhost) ::close(s->listenFd); // else the failed adoption closed it
        s->listenFd = -1;
        {
            std::lock_guard lock(s->wakeMu);
            s->context = nullptr;
        }
        lws_context_destroy(context);
        return tls ? "cannot set up the WebSocket service with TLS (see libwebsockets' messages above)"
                   : "cannot set up the WebSocket service";
    }
    return {};
}

} // namespace

ShardState &shardOf(lws *wsi) { return *static_cast<ShardState *>(lws_context_user(lws_get_context(wsi))); }

std::size_t endpointConnections(const WsServer::Impl &server, std::size_t index) {
    std::size_t n = 0;
    for (const auto &sh : server.shards)
        n += static_cast<std::size_t>(std::max<std::int64_t>(0, sh->counters.endpointConnections[index].get()));
    return n;
}

std::size_t totalConnections(const WsServer::Impl &server) {
    std::size_t n = 0;
    for (const auto &sh : server.shards) n += sh->connections.load(std::memory_order_relaxed);
    return n;
}

void startShardThread(WsServer::Impl &d, ShardState &shard, std::function<void(std::string)> started) {
    ShardState *s = &shard;
    for (int p = 0; p < 3; ++p) {
        lws_protocols &proto = s->protocols[p];
        proto.name = p == 0 ? "wsgw" : p == 1 ? s->echoedProtocol : "wsgw-listener";
        proto.callback = callback;
        proto.per_session_data_size = sizeof(SessionStorage);
        proto.rx_buffer_size = kRxBufferSize;
        // Else lws sends at most rx_buffer_size per write and copies the rest of a
        // coalesced write aside for later.
        proto.tx_packet_size = kCoalesceBytes + LWS_PRE + 16;
    }
    s->coalesce.reserve(kCoalesceBytes);
    s->thread = std::thread([s, started = std::move(started), &d] {
        // "wsgw-shard-N" in top -H, perf and /proc/PID/task/*/comm (15 characters at most).
        pthread_setname_np(pthread_self(), ("wsgw-shard-" + std::to_string(s->index % 1000)).c_str());
        std::string why = setUp(d, s);
        if (!why.empty()) {
            started(why);
            return;
        }
        s->shard.setWakeup([s] {
            std::lock_guard lock(s->wakeMu);
            if (s->context) lws_cancel_service(s->context);
        });
        startSweep(*s);
        openReserveFd(*s);
        started("");
        // Runs until a wake-up finds `quit` set (EVENT_WAIT_CANCELLED breaks the loop).
        if (!s->quit.load(std::memory_order_acquire)) ev_run(s->loop, 0);
        lws_sul_cancel(&s->sweepTimer.sul);
        lws_sul_cancel(&s->failCutTimer.sul);
        dropPendingUpgrades(*s);
        closeReserveFd(*s);
        // The context is destroyed by stop() once this thread has ended.
    });
}

void resumeReadersIfDue(ShardState &s) {
    if (s.pausedReading.empty()) return;
    const std::uint64_t requests = s.resumeRequests.load(std::memory_order_acquire);
    if (requests == s.resumeRequestsSeen && s.shard.hub().events().paused()) return;
    s.resumeRequestsSeen = requests;
    // A connection whose endpoint's backends still push back stays paused (EventBus routes:
    // another backend's drain is no reason to read from it).
    std::vector<ConnectionId> still;
    for (ConnectionId id : s.pausedReading)
        if (Connection *c = s.shard.registry().find(id)) {
            if (s.shard.hub().events().paused(c->endpoint()))
                still.push_back(id);
            else
                static_cast<WsConnection *>(c)->resumeReading();
        }
    s.pausedReading.swap(still);
}

void endThreads(WsServer::Impl &d) {
    for (auto &s : d.shards) {
        s->quit.store(true, std::memory_order_release);
        std::lock_guard lock(s->wakeMu);
        if (s->context) lws_cancel_service(s->context);
    }
    for (auto &s : d.shards) {
        if (s->thread.joinable()) s->thread.join();
        lws_context *ctx;
        {
            std::lock_guard lock(s->wakeMu);
            ctx = std::exchange(s->context, nullptr);
        }
        if (ctx) lws_context_destroy(ctx);
        if (s->loop) ev_loop_destroy(s->loop);
        s->loop = nullptr;
    }
}

} // namespace wsgw::daemon
