#pragma once

// Where a command reader records the command ids it ran, so that a redelivered command is
// acknowledged without being applied again (AmqpCommandOptions in <wsgw/command_bus.h>): in Redis,
// shared by every node, or in this process only.
#include <wsgw/export.h>
#include <wsgw/sink.h>

#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>

namespace wsgw {

/// Thread-compatible: one reader's thread.
class CommandDedup {
public:
    /// What claim() found.
    enum class State {
        Fresh,      ///< not seen: now marked pending; run it, then finish() or release()
        Done,       ///< ran already: `done` holds its count, or "error"
        Pending,    ///< running elsewhere (or a run that died, until its mark expires): later
        Unavailable ///< the record cannot be reached: later (`error` says why)
    };
    struct Claim {
        State state = State::Fresh;
        std::string done;
        std::string error;
    };

    virtual ~CommandDedup() = default;
    virtual Claim claim(const std::string &id) = 0;
    /// Records the outcome ("<count>" or "error") for the window. A record that cannot be written
    /// now is written before the next claim().
    virtual void finish(const std::string &id, const std::string &done) = 0;
    /// Forgets a pending mark: nothing was done (to be retried, or malformed).
    virtual void release(const std::string &id) = 0;
    /// Where the records are, for docs and logs ("this process", "Redis 127.0.0.1:6379").
    virtual std::string scope() const = 0;
};

/// In this process only: ids are kept for `window` (at most `maxIds` of them; beyond that the
/// oldest are forgotten early). A pending mark has no expiry: the one thread that set it clears it.
class LocalCommandDedup final : public CommandDedup {
public:
    LocalCommandDedup(std::chrono::milliseconds window, std::size_t maxIds = 100'000);
    Claim claim(const std::string &id) override;
    void finish(const std::string &id, const std::string &done) override;
    void release(const std::string &id) override;
    std::string scope() const override { return "this process"; }

private:
    using Clock = std::chrono::steady_clock;
    struct Record {
        std::string done; // "" while pending
        Clock::time_point expires;
    };
    void prune(Clock::time_point now);

    std::chrono::milliseconds window_;
    std::size_t maxIds_;
    std::unordered_map<std::string, Record> records_;
    std::deque<std::pair<Clock::time_point, std::string>> order_; // finish times, oldest first
};

/// In Redis, the scheme of the Redis stream reader: `<prefix><id>` SET NX "pending" PX
/// `inFlightTtl`, then "done:<outcome>" PX `window`. Connects lazily, retrying at most every
/// 0.1 s doubling to 2 s while Redis is down (claim() then answers Unavailable at once). Every
/// call is bounded by the endpoint's timeouts. nullptr with a message when libwsgw was built
/// without Redis support.
WSGW_EXPORT std::unique_ptr<CommandDedup> makeRedisCommandDedup(const RedisEndpoint &redis, std::string prefix,
                                                    std::chrono::milliseconds window,
                                                    std::chrono::milliseconds inFlightTtl, std::string *error);

} // namespace wsgw
