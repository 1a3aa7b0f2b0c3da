// A shard's timers, run by one sweep about every second: the inflate stall watchdog, lifetime
// closes, and the idle sweep (a connection silent for half the idle timeout gets a ping; one
// silent for the whole timeout is closed).

#include "lws_workarounds.h"
#include "ws_connection.h"
#include "ws_shard.h"

#include <algorithm>
#include <chrono>
#include <random>

namespace wsgw::daemon {

namespace {

// How often the sweep runs at most apart: it runs sooner when a lifetime is due, and at a
// twentieth of a short idle timeout, so that closes come within 10% of their settings.
constexpr std::int64_t kSweepMaxMs = 1000;
constexpr std::int64_t kSweepMinMs = 50;

lws_usec_t nextSweepUs(const ShardState &s, std::int64_t now) {
    std::int64_t wait = kSweepMaxMs;
    auto idle = std::chrono::duration_cast<std::chrono::milliseconds>(s.settings.idleTimeout).count();
    if (idle > 0) wait = std::min<std::int64_t>(wait, idle / 20);
    if (!s.lifetimes.empty()) wait = std::min(wait, s.lifetimes.top().first - now);
    return static_cast<lws_usec_t>(std::max(wait, kSweepMinMs)) * LWS_US_PER_MS;
}

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
            // Silent through a ping and the whole timeout: it will not answer a close either.
            c->cut(close_code::kGoingAway, "idle timeout");
        } else if (!c->pinged && !c->isClosing()) {
            c->schedulePing();
        }
        c = next;
    }
    lws_sul_schedule(s.context, 0, &s.sweepTimer.sul, sweep, nextSweepUs(s, nowMs()));
}

void startSweep(ShardState &s) {
    s.sweepTimer.owner = &s;
    lws_sul_schedule(s.context, 0, &s.sweepTimer.sul, sweep, nextSweepUs(s, nowMs()));
}

void scheduleLifetime(ShardState &s, ConnectionId id) {
    auto life = std::chrono::duration_cast<std::chrono::milliseconds>(s.settings.maxLifetime).count();
    if (life <= 0) return;
    // Due between 90% and 100% of the lifetime, so that connections made together do not all
    // leave together, and none stays longer than the setting.
    std::uniform_int_distribution<std::int64_t> spread(life - life / 10, life);
    const std::int64_t due = nowMs() + spread(s.jitter);
    const bool soonest = s.lifetimes.empty() || due < s.lifetimes.top().first;
    s.lifetimes.emplace(due, id);
    // Entries of closed connections leave only when due; past twice the connections (and a
    // floor), drop them all at once, so the heap stays bounded by what is open.
    if (s.lifetimes.size() > 2 * s.shard.registry().size() + 1024) {
        std::vector<ShardState::Due> live;
        live.reserve(s.shard.registry().size());
        while (!s.lifetimes.empty()) {
            if (s.shard.registry().find(s.lifetimes.top().second)) live.push_back(s.lifetimes.top());
            s.lifetimes.pop();
        }
        s.lifetimes = decltype(s.lifetimes)(std::greater<>(), std::move(live));
    }
    // The sweep may be asleep for longer than this one has.
    if (soonest) lws_sul_schedule(s.context, 0, &s.sweepTimer.sul, sweep, nextSweepUs(s, nowMs()));
}

} // namespace wsgw::daemon
