#pragma once

// One WebSocket shard: a libwebsockets context on its own thread and libev loop, with its own
// listening socket, connections and timers. Everything here is touched by that shard's thread
// only, except where a member says otherwise.

#include "authorizer.h"
#include "metrics.h"
#include "ws_server.h"

#include <wsgw/hub.h>

#include <libwebsockets.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

struct ev_loop;

namespace wsgw::daemon {

struct ShardState;
class WsConnection;

// Upgrades read ahead of lws and held for the connect authorizer (ws_authorize.cpp).
struct PendingUpgrades;
struct PendingUpgradesFree {
    void operator()(PendingUpgrades *p) const noexcept;
};

// Per-connection receive buffer inside libwebsockets: messages larger than this arrive in pieces
// and are reassembled by WsConnection. Small, because every idle connection holds one: 512 bytes
// keeps an idle connection at 2.3 KiB of wsgwd's memory (2 KiB buffers: 4.1 KiB; bench/compare
// row 5).
inline constexpr std::size_t kRxBufferSize = 512;
// Frames pending for one uncompressed connection are coalesced into writes of up to this size.
inline constexpr std::size_t kCoalesceBytes = 64 * 1024;

/// Milliseconds on the steady clock.
std::int64_t nowMs() noexcept;

struct WsServer::Impl {
    Impl(Hub &h, Metrics &m, WsServerOptions o) : hub(h), metrics(m), options(std::move(o)) {}

    Hub &hub;
    Metrics &metrics;
    WsServerOptions options;
    std::vector<std::unique_ptr<ShardState>> shards;
    // The connect authorizer's client threads (authorizer.h), when an endpoint has authorize:.
    // Declared after `shards`: destroyed first, so no answer arrives for a shard that is gone.
    std::unique_ptr<AuthorizerPool> authorizer;
    std::atomic<bool> running{false};
    std::mutex stopMu;
    bool stopped = false;
    // The open-file limit (ws_accept.cpp): whether an episode is on, when accept last failed
    // for it, and how many clients were refused since it began (one warning per episode).
    std::atomic<bool> atFdLimit{false};
    std::atomic<std::int64_t> lastFdLimitMs{0};
    std::atomic<std::uint64_t> refusedAtFdLimit{0};
    // Descriptors held in reserve, one per running shard, shared: a shard gives one up for a
    // moment to accept a client and refuse it. During an episode every accept takes reserveMu,
    // so that no shard's ordinary accept takes the descriptor another shard just gave up.
    std::mutex reserveMu;
    std::vector<int> reserves;                // guarded by reserveMu
    std::atomic<std::size_t> reserveTarget{0}; // shards running; changed under reserveMu
    std::atomic<std::size_t> reserveCount{0}; // reserves.size(), read without the lock
    // tls: see sharedClientTls() in lws_workarounds.h.
    std::unique_ptr<SSL_CTX, void (*)(SSL_CTX *)> unusedClientTls{nullptr, SSL_CTX_free};
};

struct ShardState {
    ShardState(WsServer::Impl &s, std::size_t i)
        : server(s), settings(s.options), shard(s.hub.shard(i)), counters(s.metrics.shard(i)), index(i) {}

    WsServer::Impl &server;
    WsServerOptions settings; // this shard's copy: a reload swaps it on the shard's thread
    Shard &shard;
    ShardCounters &counters;
    std::size_t index;

    lws_context *context = nullptr; // set before the thread serves, cleared by stop() after join
    std::mutex wakeMu;              // guards `context` for wake-ups from other threads
    std::thread thread;
    std::atomic<bool> quit{false};
    std::atomic<bool> draining{false};
    std::atomic<std::size_t> connections{0};
    // The idle sweep's timer; `sul` first, so the callback can find its shard from it.
    struct SweepTimer {
        lws_sorted_usec_list_t sul;
        ShardState *owner;
    } sweepTimer{};

    // Connections ordered by their last activity, oldest first: the idle sweep stops at the
    // first one that is recent enough.
    WsConnection *idleHead = nullptr;
    WsConnection *idleTail = nullptr;

    // Protocol table for this shard's vhost: [0] for requests without a subprotocol, [1] takes
    // the name of whatever subprotocol the client asks for first (see echoSubprotocol), [2]
    // serves the listening socket.
    char echoedProtocol[64] = "wsgw-echo-subprotocol";
    lws_protocols protocols[4]{};

    int listenFd = -1;          // owned by `listener` once adopted
    lws *listener = nullptr;    // the adopted listening socket
    lws_vhost *vhost = nullptr;
    bool acceptErrorLogged = false;
    // At the open-file limit (ws_accept.cpp): the listener is paused for a moment when no
    // reserve descriptor can be had to refuse a client with.
    struct ListenerTimer {
        lws_sorted_usec_list_t sul;
        ShardState *owner;
    } listenerTimer{};

    // Connections failed for a protocol error, cut kFailCutMs later (scheduleFailCut in
    // lws_workarounds.h), earliest first.
    std::deque<std::pair<std::int64_t, ConnectionId>> failCuts;
    struct FailCutTimer {
        lws_sorted_usec_list_t sul;
        ShardState *owner;
    } failCutTimer{};

    std::string coalesce; // scratch for coalesced raw writes

    // What an upgrade earned before ESTABLISHED (its JWT's claims, the authorizer's tags and
    // connection id), by the lws connection: taken at ESTABLISHED, dropped at WSI_DESTROY if it
    // never got there.
    struct Admission {
        TagList tags;                    ///< added to the endpoint's set_tags (and over them)
        std::optional<ConnectionId> id;  ///< the connection's id; none: a random one
        bool authorized = false;         ///< the connect authorizer admitted it
    };
    std::unordered_map<lws *, Admission> admitted;
    // The admission of the socket being handed to lws right now (by its fd): lws may confirm
    // the upgrade inside the adoption call, before the new lws connection is known to us.
    std::optional<std::pair<int, Admission>> adopting;
    std::unique_ptr<PendingUpgrades, PendingUpgradesFree> pending; // created on first use

    // Connections with frames queued by the commands being drained, written after the drain.
    std::vector<WsConnection *> toFlush;

    // Connections that stopped reading while the event sinks were backed up (pause_reading),
    // and the resume requests: a counter that WsServer::resumeReading() bumps from any thread
    // (then wakes the shard), and the last value this shard acted on. A state the shard reads,
    // not a command that a full inbox could drop.
    std::vector<ConnectionId> pausedReading;
    std::atomic<std::uint64_t> resumeRequests{0};
    std::uint64_t resumeRequestsSeen = 0;
    // Compressed connections with a message in progress, for the inflate stall watchdog.
    std::vector<ConnectionId> partialCompressed;
    // max_connection_lifetime_s: when each connection is due, earliest first.
    using Due = std::pair<std::int64_t, ConnectionId>;
    std::priority_queue<Due, std::vector<Due>, std::greater<>> lifetimes;
    std::minstd_rand jitter{std::random_device{}()};
    std::size_t drainInitial = 0; // connections when a drain began
    struct ev_loop *loop = nullptr; // this shard's epoll loop (libev), run by its thread

    // The endpoint for a request path; nullptr if none.
    const WsEndpoint *endpointFor(std::string_view path, std::size_t *at) const {
        for (std::size_t i = 0; i < settings.endpoints.size(); ++i) {
            if (settings.endpoints[i].path == path) {
                if (at) *at = i;
                return &settings.endpoints[i];
            }
        }
        return nullptr;
    }
};

/// The shard a libwebsockets connection belongs to (its context's user pointer).
ShardState &shardOf(lws *wsi);

/// Open connections over every shard, and on one endpoint.
std::size_t totalConnections(const WsServer::Impl &server);
std::size_t endpointConnections(const WsServer::Impl &server, std::size_t index);

/// Starts the shard's thread: it creates the context, vhost and loop, adopts the listening
/// socket and serves until `quit`. `started` gets "" once it serves, or why it cannot.
void startShardThread(WsServer::Impl &server, ShardState &s, std::function<void(std::string)> started);

/// Ends every shard's service thread, then destroys its context on this thread: whatever
/// connections are left close there (their CLOSED callbacks run here, the shard thread being gone).
void endThreads(WsServer::Impl &d);

/// The idle sweep, lifetime closes and the inflate stall watchdog (ws_sweep.cpp); it reschedules
/// itself on the shard's context.
void sweep(lws_sorted_usec_list_t *sul);
/// Schedules the first sweep; the shard's context exists.
void startSweep(ShardState &s);
/// max_connection_lifetime_s: schedules the connection's close (ws_sweep.cpp).
void scheduleLifetime(ShardState &s, ConnectionId id);

/// The libwebsockets callback of every protocol of a shard's vhost (ws_callback.cpp).
int callback(lws *wsi, lws_callback_reasons reason, void *user, void *in, std::size_t len);

/// The listening socket is readable: accepts what is pending and hands it to lws (ws_accept.cpp).
void acceptPending(ShardState &s);
/// Opens the shard's reserve descriptor (ws_accept.cpp); call before serving.
void openReserveFd(ShardState &s);
/// Closes the reserve descriptor and cancels the listener timer; call when the thread ends.
void closeReserveFd(ShardState &s);
/// Ends an open-file-limit episode once accepts have not failed for it for a while (the sweep
/// calls it): logs how many clients were refused.
void endFdLimitEpisodeIfQuiet(WsServer::Impl &server);

/// Lets the connections paused for event backpressure read again if a resume was requested or
/// the event bus no longer asks for the pause (ws_shard.cpp). Run at each wake-up and sweep.
void resumeReadersIfDue(ShardState &s);

} // namespace wsgw::daemon
