#pragma once

#include <wsgw/connection.h>
#include <wsgw/event.h>
#include <wsgw/export.h>
#include <wsgw/message.h>
#include <wsgw/mirror.h>
#include <wsgw/registry.h>
#include <wsgw/selector.h>
#include <wsgw/sink.h>
#include <wsgw/tags.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace wsgw {

class Hub;

/// How a command sent to every shard ended. When several shards ended differently, the first
/// of Stopped, Failed, TimedOut that applies is reported.
enum class CommandStatus {
    Ok,       ///< every shard ran it; the result is complete
    Busy,     ///< a shard's inbox was full; the command ran nowhere
    Stopped,  ///< the hub stopped taking commands before every shard ran it
    Failed,   ///< a shard could not run it (it threw, e.g. out of memory)
    TimedOut, ///< its deadline passed before every shard started it; those shards never will
};

/// When a command must have started on a shard; a shard that reaches it later skips it. The
/// default: no deadline.
using Deadline = std::chrono::steady_clock::time_point;
inline constexpr Deadline kNoDeadline = Deadline::max();

/// A command's answer. Whatever the status, `value` covers exactly the `shards` shards that ran
/// the command (a count is their sum), so a caller that gave up still learns what was done.
template <class T> struct CommandResult {
    CommandStatus status = CommandStatus::Ok;
    T value{};
    std::size_t shards = 0; ///< how many shards ran it
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

/// Which part of a selection Hub::status lists. Value type.
struct StatusPage {
    std::optional<ConnectionId> after; ///< only ids above this one
    std::size_t limit = 0;             ///< at most this many; 0: no limit
};

/// What a bounded setTags did (Hub::setTags with maxTags).
struct TagChangeCount {
    std::size_t changed = 0; ///< connections whose tags changed
    std::size_t over = 0;    ///< connections left unchanged: the change would exceed the bound
};

using CountResult = CommandResult<std::size_t>;
using SetTagsResult = CommandResult<TagChangeCount>;
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
    /// Returns false (and leaves nothing registered, publishes nothing) if its id is already
    /// registered or memory runs out.
    /// Borrows `conn`: the transport keeps it alive until Shard::closed (see Connection, Lifetime).
    [[nodiscard]] bool open(Connection &conn, const TagList &tags, const EventSpec &spec) noexcept;
    /// The same, sharing ownership: the shard holds `conn` from here until after Shard::closed,
    /// then drops its reference on this thread at its next open, closed or drain (never inside
    /// closed(), so closed() may be called from the connection's own methods), or when the hub is
    /// destroyed. Returns false (holding nothing) where the other form does, or for a null `conn`.
    [[nodiscard]] bool open(std::shared_ptr<Connection> conn, const TagList &tags, const EventSpec &spec) noexcept;
    /// A message from the client: publishes a message event. Never blocks. Returns false if the
    /// event could not be built (out of memory); it is then counted as dropped.
    bool message(const Connection &conn, Opcode type, std::string_view payload, const EventSpec &spec) noexcept;
    /// The connection is gone: unregisters it and publishes its close event, which still carries
    /// its tags. Unknown connection: no-op. The connection always leaves the registry, even when
    /// its event cannot be built (out of memory; counted as dropped).
    void closed(const Connection &conn, const EventSpec &spec) noexcept;

    /// Runs the commands queued for this shard, in order; returns how many it took (run, or
    /// skipped past their deadline). The transport calls it on the shard's thread after the
    /// wake-up it set with setWakeup(). A command that throws is reported to its caller as
    /// Failed; nothing escapes.
    std::size_t drain() noexcept;

    /// How the hub wakes this shard's thread when a command arrives: the transport's wake-up
    /// (e.g. lws_cancel_service, uv_async_send, boost::asio::post of a drain()). Must be set
    /// before Hub::start(). The hub calls it from any thread, this shard's own included (a
    /// command issued from inside the loop), so it must only arrange for drain() to run soon on
    /// the shard's thread: never drain inline, never block, never throw. Several wake-ups may
    /// be answered by one drain(). README: "Embedding in your own server".
    void setWakeup(std::function<void()> wake);

    /// Thread-safe: queues `fn` to run on this shard's thread and wakes it. Returns false if the
    /// inbox is full, the hub takes no more commands, or memory runs out (then `fn` never runs).
    /// An exception thrown by `fn` is caught and dropped.
    [[nodiscard]] bool post(std::function<void(Shard &)> fn) noexcept;

private:
    friend class Hub;
    Shard(Hub &hub, std::size_t index, std::size_t inboxCapacity);
    // Runs one recipient's part of a command (calls into a Connection); what it throws is counted
    // in Hub::connectionErrors() and dropped. Returns whether it returned normally.
    template <class F> bool reach(F &&f) noexcept;
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
    /// calls Shard::drain(); open/message/closed are called from that loop's callbacks. Shutdown
    /// then: close every connection (Hub::close), keep the loops running until each has been
    /// reported with Shard::closed (connectionCount() == 0), Hub::stop(), stop the loops.
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
/// Every callback-taking command calls `done` exactly once, whatever happens (a full inbox, a
/// stop, a shard that throws, a deadline, running out of memory): with Busy or Stopped on the
/// calling thread if it could not be queued everywhere (then it ran nowhere), otherwise on the
/// thread of the last shard to finish, or of stopCommands(). So `done` must be quick, must not
/// block and must not throw (an exception from it is dropped). No call throws.
///
/// A Connection method that throws (a transport's bug, e.g. a library that throws on a close
/// reason it does not like) is caught per recipient: that connection counts as not reached (not
/// in the command's count), connectionErrors() counts it, and the command goes on with the other
/// recipients and answers exactly once, with Ok if nothing else went wrong.
class WSGW_EXPORT Hub {
public:
    explicit Hub(HubOptions options = {});
    ~Hub(); ///< stop()s first
    Hub(const Hub &) = delete;
    Hub &operator=(const Hub &) = delete;

    /// Sets the mirror of connection state that the shards keep informed (see ConnectionMirror);
    /// only before start(). start() starts it; stop() stops it after the event sinks.
    void setMirror(std::unique_ptr<ConnectionMirror> mirror);
    /// The mirror, or nullptr.
    ConnectionMirror *mirror() noexcept;

    std::size_t shardCount() const noexcept;
    /// Thread-safe: connections registered through Shard::open and not yet Shard::closed, over
    /// all shards (each shard's count is exact on its own thread; the sum is a moment's view).
    std::size_t connectionCount() const noexcept;
    /// Thread-safe: how many times a Connection method threw inside a command (each caught, that
    /// recipient skipped). Anything above 0 is a transport bug worth a log line.
    std::uint64_t connectionErrors() const noexcept;
    /// Precondition: index < shardCount() (a programming error otherwise: the process aborts).
    Shard &shard(std::size_t index) noexcept;
    EventBus &events() noexcept;

    /// Starts the shards' own threads (with ownThreads) and the event sinks. Returns false with
    /// a message if a thread cannot be started; then nothing is left running.
    [[nodiscard]] bool start(std::string *error = nullptr) noexcept;
    /// Refuses every new command and ends the queued ones with Stopped at once, so no caller
    /// waits for a shard that will not run again; events still flow. A transport calls it before
    /// it stops its shards' loops; stop() calls it too. Idempotent.
    void stopCommands() noexcept;
    /// stopCommands(), then joins the hub's own threads and stops the event sinks after letting
    /// them flush for up to `flushFor`. Returns how many events were left undelivered (still in
    /// a sink's backlog when the flush time ran out; EventBus::stop); 0 when called again.
    std::size_t stop(std::chrono::milliseconds flushFor = std::chrono::milliseconds(0)) noexcept;

    using CountCallback = std::function<void(CountResult)>;

    // Every command takes a Deadline: a shard that has not started the command by then skips
    // it, and the answer is TimedOut with what the other shards did. A caller that stops
    // waiting at its deadline can so tell its own caller what happened: nothing runs late.

    /// Queues `msg` on every selected connection. The count is the connections it was queued for.
    /// The connections of one shard share one buffer: `msg` itself on shard 0, a copy on each
    /// other shard (so that no reference count is shared between the shards' cores).
    void send(Selector sel, MessagePtr msg, CountCallback done, Deadline deadline = kNoDeadline) noexcept;
    /// Applies `changes` (empty value = delete) to every selected connection; counts them.
    void setTags(Selector sel, TagList changes, CountCallback done, Deadline deadline = kNoDeadline) noexcept;
    /// setTags with a bound: a connection that the change would leave with more than `maxTags`
    /// tags keeps its tags as they are and is counted in `over`; the others change and are
    /// counted in `changed`. Checked and applied in one step on each connection's shard, so no
    /// concurrent change can slip between the check and the change.
    void setTags(Selector sel, TagList changes, std::size_t maxTags, std::function<void(SetTagsResult)> done,
                 Deadline deadline = kNoDeadline) noexcept;
    /// Sends `last` first if it is non-null, then closes every selected connection with
    /// `code` and `reason`; counts them. A reason over kMaxCloseReasonBytes is cut, here, by
    /// cutCloseReason (on a UTF-8 boundary), so every transport gets one that fits a close frame.
    void close(Selector sel, std::uint16_t code, std::string reason, MessagePtr last, CountCallback done,
               Deadline deadline = kNoDeadline) noexcept;
    /// The selected connections with their tags, ordered by id.
    void status(Selector sel, std::function<void(StatusResult)> done, Deadline deadline = kNoDeadline) noexcept;
    /// One page of status(): the first `page.limit` selected connections (0: all of them) whose
    /// id is above `page.after` (unset: from the start), ordered by id. Each shard describes only
    /// its part of the page: a page walks the selection's ids (as count() does) but copies
    /// tags and addresses only for the page. Paging on the last id of a page is stable under churn: no connection that stays open is listed twice or
    /// skipped (one that opens meanwhile appears if its id sorts after the page).
    void status(Selector sel, StatusPage page, std::function<void(StatusResult)> done,
                Deadline deadline = kNoDeadline) noexcept;
    /// How many connections `sel` selects; nothing else happens (a dry run of a command).
    void count(Selector sel, CountCallback done, Deadline deadline = kNoDeadline) noexcept;
    /// Every key with its values and their connection counts.
    void tree(std::function<void(TreeResult)> done, Deadline deadline = kNoDeadline) noexcept;
    /// Runs `fn` on every shard's thread and sums what it returns: the building block of the
    /// commands above, for embeddings that need their own.
    void forEachShard(std::function<std::size_t(Shard &)> fn, CountCallback done,
                      Deadline deadline = kNoDeadline) noexcept;

    /// The same commands with a future for the answer. Out of memory before the command could be
    /// queued, the future holds Failed (or, if even that cannot be made, std::terminate runs:
    /// these calls never throw).
    std::future<CountResult> send(Selector sel, MessagePtr msg, Deadline deadline = kNoDeadline) noexcept;
    std::future<CountResult> setTags(Selector sel, TagList changes, Deadline deadline = kNoDeadline) noexcept;
    std::future<SetTagsResult> setTags(Selector sel, TagList changes, std::size_t maxTags,
                                       Deadline deadline = kNoDeadline) noexcept;
    std::future<CountResult> close(Selector sel, std::uint16_t code, std::string reason, MessagePtr last = {},
                                   Deadline deadline = kNoDeadline) noexcept;
    std::future<StatusResult> status(Selector sel, Deadline deadline = kNoDeadline) noexcept;
    std::future<StatusResult> status(Selector sel, StatusPage page, Deadline deadline = kNoDeadline) noexcept;
    std::future<CountResult> count(Selector sel, Deadline deadline = kNoDeadline) noexcept;
    std::future<TreeResult> tree(Deadline deadline = kNoDeadline) noexcept;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace wsgw
