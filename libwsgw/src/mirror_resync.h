#pragma once

// How a mirror gets every connection's state again after its copy may have been lost: it asks
// each shard for its connection ids, then has each shard report its connections again in slices
// (a few hundred per shard per step), so that a resync of 100k connections never holds a shard
// for more than a fraction of a millisecond at a time.

#include <wsgw/connection.h>
#include <wsgw/connection_id.h>
#include <wsgw/tags.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace wsgw {

class Hub;

/// Thread-bound to the mirror's thread (which calls step() and waits for the shards), except
/// that `report` runs on the shard threads.
class MirrorResync {
public:
    /// Called on shard `shard`'s thread for each connection it still has, with its tags.
    using Report = std::function<void(std::size_t shard, const Connection &conn, const Tags &tags)>;

    /// Connections a shard reports per step.
    static constexpr std::size_t kSlice = 128;

    MirrorResync(Hub &hub, Report report);
    ~MirrorResync();
    MirrorResync(const MirrorResync &) = delete;
    MirrorResync &operator=(const MirrorResync &) = delete;

    /// Starts rewriting every connection (replacing whatever was running). `epoch` identifies
    /// it: once done, collected() holds every id the shards had when it started.
    void startFull(std::string why, std::uint64_t epoch);
    /// Starts rewriting these connections (shard, id), unless a full resync is running (which
    /// rewrites them anyway); adds them to a partial one that is running.
    void startPartial(const std::vector<std::pair<std::uint32_t, ConnectionId>> &which, std::string why);

    bool active() const noexcept { return job_ != nullptr; }
    bool full() const noexcept;
    std::uint64_t epoch() const noexcept;
    const std::string &why() const noexcept;

    enum class Step {
        Working, ///< more to do: call step() again
        Done,    ///< every connection was reported: see collected(), reported(); then finish()
        Busy,    ///< the shards could not take it now (an inbox full, a deadline missed): retry later
        Stopped, ///< the hub takes no more commands: the resync is dropped
    };
    /// One bounded step: collects the ids, or has every shard report its next slice. Waits for
    /// the shards for at most a few seconds.
    Step step();

    /// After Done: the ids each shard had when the resync started (full resyncs only).
    std::vector<ConnectionId> collected() const;
    /// After Done: how many connections were reported.
    std::size_t reported() const noexcept;
    /// Forgets the finished (or any) resync.
    void finish() noexcept;

private:
    struct Job;
    Hub &hub_;
    Report report_;
    std::shared_ptr<Job> job_;
};

} // namespace wsgw
