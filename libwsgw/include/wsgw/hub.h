#pragma once

#include <wsgw/connection.h>
#include <wsgw/event.h>
#include <wsgw/export.h>
#include <wsgw/message.h>
#include <wsgw/registry.h>
#include <wsgw/selector.h>
#include <wsgw/sink.h>
#include <wsgw/tags.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

namespace wsgw {

class Hub;

/// How a command sent to every shard ended.
enum class CommandStatus {
    Ok,      ///< every shard ran it; the result is complete
    Busy,    ///< a shard's inbox was full; the command ran nowhere
    Stopped, ///< the hub was stopped before every shard ran it
};

template <class T> struct CommandResult {
    CommandStatus status = CommandStatus::Ok;
    T value{};
    bool ok() const noexcept { return status == CommandStatus::Ok; }
};

/// One connection as /status shows it.
struct ConnectionInfo {
    ConnectionId id;
    std::string endpoint;
    std::string remoteAddress;
    Tags tags;
    std::size_t shard = 0;
};

using CountResult = CommandResult<std::size_t>;
using StatusResult = CommandResult<std::vector<ConnectionInfo>>;
using TreeResult = CommandResult<TagTree>;

/// One thread's share of the connections: its own Registry, an inbox of commands from other
/// threads, and the hooks a transport calls as connections come and go.
///
/// Thread-bound to the shard's thread, except where a member says otherwise.
class WSGW_EXPORT Shard {
public:
    ~Shard();
    Shard(const Shard &) = delete;
    Shard &operator=(const Shard &) = delete;

    /// Thread-safe.
    std::size_t index() const noexcept { return index_; }
    /// Thread-safe.
    Hub &hub() noexcept { return hub_; }

    Registry &registry() noexcept;

    /// A new connection: registers it with `tags` and publishes its open event.
    /// Returns false (and publishes nothing) if its id is already registered.
    bool open(Connection &conn, const TagList &tags, const EventSpec &spec);
    /// A message from the client: publishes a message event. Never blocks.
    void message(const Connection &conn, Opcode type, std::string_view payload, const EventSpec &spec);
    /// The connection is gone: unregisters it and publishes its close event, which still carries
    /// its tags. Unknown connection: no-op.
    void closed(const Connection &conn, const EventSpec &spec);

    /// Runs the commands queued for this shard, in order; returns how many ran. The transport
    /// calls it on the shard's thread after the wake-up it set with setWakeup().
    std::size_t drain();

    /// How the hub wakes this shard's thread when a command arrives: the transport's wake-up
    /// (e.g. lws_cancel_service). Thread-safe to call it; must be set before Hub::start().
    void setWakeup(std::function<void()> wake);

    /// Thread-safe: queues `fn` to run on this shard's thread and wakes it. Returns false if the
    /// inbox is full or the hub is stopped (then `fn` never runs).
    [[nodiscard]] bool post(std::function<void(Shard &)> fn);

private:
    friend class Hub;
    Shard(Hub &hub, std::size_t index, std::size_t inboxCapacity);
    struct Impl;
    Hub &hub_;
    std::size_t index_;
    std::unique_ptr<Impl> impl_;
};

struct HubOptions {
    /// Number of shards, each served by one thread; at least 1.
    std::size_t shards = 1;
    /// Commands each shard's inbox holds before commands are refused with Busy.
    std::size_t inboxCapacity = 4096;
    /// true: the hub runs each shard on a thread of its own (for embeddings with no event loop,
    /// tests and simulations). false: the transport runs each shard's loop, sets its wake-up and
    /// calls Shard::drain().
    bool ownThreads = false;
    /// The id of the first event (Event::id). wsgwd starts each run at its start time in
    /// milliseconds times 1000, so ids keep increasing across restarts of a node.
    std::uint64_t firstEventId = 1;
};

/// The shards and the commands that reach them. Commands (send, setTags, close, status, tree)
/// resolve their selector on every shard against that shard's registry; the result is the sum
/// (or union) over all shards.
///
/// Thread-safe, except that start() and stop() must not race each other, and the blocking
/// (future-returning) calls must not be waited on from a shard's own thread, which would
/// deadlock.
///
/// Every callback-taking command calls `done` exactly once: with Busy on the calling thread if
/// any inbox was full (nothing ran anywhere), otherwise on the thread of the last shard to
/// finish, so `done` must be quick and must not block.
class WSGW_EXPORT Hub {
public:
    explicit Hub(HubOptions options = {});
    ~Hub(); ///< stop()s first
    Hub(const Hub &) = delete;
    Hub &operator=(const Hub &) = delete;

    std::size_t shardCount() const noexcept;
    Shard &shard(std::size_t index);
    EventBus &events() noexcept;

    /// Starts the shards' own threads (with ownThreads) and the event sinks.
    void start();
    /// Refuses new commands, ends queued ones with Stopped, joins the hub's own threads and
    /// stops the event sinks after letting them flush for up to `flushFor`.
    void stop(std::chrono::milliseconds flushFor = std::chrono::milliseconds(0));

    using CountCallback = std::function<void(CountResult)>;

    /// Queues `msg` on every selected connection. The count is the connections it was queued for.
    /// The connections of one shard share one buffer: `msg` itself on shard 0, a copy on each
    /// other shard (so that no reference count is shared between the shards' cores).
    void send(Selector sel, MessagePtr msg, CountCallback done);
    /// Applies `changes` (empty value = delete) to every selected connection; counts them.
    void setTags(Selector sel, TagList changes, CountCallback done);
    /// Sends `last` first if it is non-null, then closes every selected connection with
    /// `code` and `reason`; counts them.
    void close(Selector sel, std::uint16_t code, std::string reason, MessagePtr last, CountCallback done);
    /// The selected connections with their tags, ordered by id.
    void status(Selector sel, std::function<void(StatusResult)> done);
    /// Every key with its values and their connection counts.
    void tree(std::function<void(TreeResult)> done);
    /// Runs `fn` on every shard's thread and sums what it returns: the building block of the
    /// commands above, for embeddings that need their own.
    void forEachShard(std::function<std::size_t(Shard &)> fn, CountCallback done);

    std::future<CountResult> send(Selector sel, MessagePtr msg);
    std::future<CountResult> setTags(Selector sel, TagList changes);
    std::future<CountResult> close(Selector sel, std::uint16_t code, std::string reason, MessagePtr last = {});
    std::future<StatusResult> status(Selector sel);
    std::future<TreeResult> tree();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace wsgw
