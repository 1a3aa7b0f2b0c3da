#pragma once

// Which connections' keys a mirror must refresh (re-EXPIRE) next, paced so that N live keys are
// refreshed at about N per interval, spread out, not in a burst every interval. Pure (no I/O, no
// clock of its own) so that the pacing can be tested on its own.

#include <wsgw/connection_id.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <unordered_map>
#include <utility>
#include <vector>

namespace wsgw {

/// The connections whose keys are written (their state was acknowledged by the copy), each due
/// for a refresh one interval after it was written or last refreshed.
///
/// Memory: one entry per live connection, plus one queue slot per connection closed within the
/// last interval (dropped when it comes due). Thread-compatible.
class MirrorRefresh {
public:
    using Clock = std::chrono::steady_clock;

    struct Written {
        std::uint32_t shard = 0;  ///< where the connection lives
        std::uint64_t epoch = 0;  ///< the resync epoch when it was first written
    };

    explicit MirrorRefresh(Clock::duration interval) : interval_(interval) {}

    /// `id`'s keys were written at `now` (again, or for the first time: then it is remembered
    /// with `epoch` and becomes due one interval later; a rewrite leaves its turn where it is:
    /// refreshing a key early does no harm).
    void written(ConnectionId id, std::uint32_t shard, std::uint64_t epoch, Clock::time_point now) {
        if (live_.try_emplace(id, Written{shard, epoch}).second) due_.emplace_back(id, now + interval_);
    }
    /// `id`'s keys were deleted: no more refreshes.
    void deleted(ConnectionId id) { live_.erase(id); }

    /// Up to `max` ids due at `now`, oldest first; each becomes due again one interval from now.
    void take(Clock::time_point now, std::size_t max, std::vector<ConnectionId> &out) {
        while (out.size() < max && !due_.empty() && due_.front().second <= now) {
            ConnectionId id = due_.front().first;
            due_.pop_front();
            if (!live_.count(id)) continue; // deleted meanwhile
            out.push_back(id);
            due_.emplace_back(id, now + interval_);
        }
    }

    /// How many refreshes to allow for `elapsed`: the live connections spread over the interval,
    /// with a quarter more so that a backlog (a burst of connections written at once) drains
    /// within about 0.8 interval and then stays spread out. Credit does not pile up beyond two
    /// steps' worth, so a burst never refreshes more than twice the steady rate at once.
    std::size_t budget(Clock::duration elapsed) {
        const double perInterval = static_cast<double>(live_.size()) * 1.25 + 16;
        const double earned = perInterval * std::chrono::duration<double>(elapsed).count() /
                              std::chrono::duration<double>(interval_).count();
        credit_ = std::min(credit_ + earned, std::max(2 * earned, 2.0));
        auto n = static_cast<std::size_t>(credit_);
        credit_ -= static_cast<double>(n);
        return n;
    }

    const Written *find(ConnectionId id) const {
        auto it = live_.find(id);
        return it == live_.end() ? nullptr : &it->second;
    }
    std::size_t size() const noexcept { return live_.size(); }
    /// Every written connection (a resync looks for those no shard has any more).
    const std::unordered_map<ConnectionId, Written, ConnectionIdHash> &all() const noexcept { return live_; }

private:
    Clock::duration interval_;
    std::unordered_map<ConnectionId, Written, ConnectionIdHash> live_;
    std::deque<std::pair<ConnectionId, Clock::time_point>> due_;
    double credit_ = 0;
};

} // namespace wsgw
