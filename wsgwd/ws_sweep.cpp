// A shard's timers, run by one sweep about every second: the inflate stall watchdog, lifetime
// closes, and the idle sweep (a connection silent for half the idle timeout gets a ping; one
// silent for the whole timeout is closed).

#include "lws_workarounds.h"
#include "ws_connection.h"
#include "ws_shard.h"

#include <chrono>

namespace wsgw::daemon {

namespace {
// How often the sweep runs.
constexpr lws_usec_t kSweepIntervalUs = 1 * LWS_USEC_PER_SEC;
} // namespace

std::int64_t nowMs() noexcept {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

void sweep(lws_sorted_usec_list_t *sul) {
    ShardState &s = *reinterpret_cast<ShardState::SweepTimer *>(sul)->owner;
    auto idle = std::chrono::duration_cast<std::chrono::milliseconds>(s.settings.idleTimeout).count();
    std::int64_t now = nowMs();

    // Compressed messages in progress: one silent for a while, with no bytes arriving either,
    // is stuck inside lws.
    auto &partial = s.partialCompressed;
    for (std::size_t i = 0; i < partial.size();) {
        auto *c = static_cast<WsConnection *>(s.shard.registry().find(partial[i]));
        if (!c || !c->messageInProgress()) {
            partial[i] = partial.back();
            partial.pop_back();
            continue;
        }
        if (now - c->lastActivityMs >= kInflateStallMs && !c->receivedSinceLastCheck()) c->closeStalled();
        ++i;
    }

    resumeReadersIfDue(s);
    endFdLimitEpisodeIfQuiet(s.server);

    // max_connection_lifetime_s: 1012 so clients reconnect, likely elsewhere.
    while (!s.lifetimes.empty() && s.lifetimes.top().first <= now) {
        ConnectionId id = s.lifetimes.top().second;
        s.lifetimes.pop();
        auto *c = static_cast<WsConnection *>(s.shard.registry().find(id));
        if (!c || c->isClosing()) continue;
        s.counters.lifetimeCloses.add();
        c->close(close_code::kServiceRestart, "connection lifetime reached; please reconnect");
    }

    for (WsConnection *c = idle > 0 ? s.idleHead : nullptr; c;) {
        WsConnection *next = c->next;
        std::int64_t silent = now - c->lastActivityMs;
        if (silent < idle / 2) break; // the rest are more recent
        if (c->receivedSinceLastCheck()) {
            c->touch(); // moves it to the tail; `next` is still the right place to go on
            c = next;
            continue;
        }
        if (silent >= idle) {
            c->unlinkIdle(); // once is enough
            s.counters.idleCloses.add();
            c->close(close_code::kGoingAway, "idle timeout");
        } else if (!c->pinged && !c->isClosing()) {
            c->schedulePing();
        }
        c = next;
    }
    lws_sul_schedule(s.context, 0, &s.sweepTimer.sul, sweep, kSweepIntervalUs);
}

/// Schedules the first sweep (ws_shard.cpp).
void startSweep(ShardState &s) {
    s.sweepTimer.owner = &s;
    lws_sul_schedule(s.context, 0, &s.sweepTimer.sul, sweep, kSweepIntervalUs);
}

} // namespace wsgw::daemon
