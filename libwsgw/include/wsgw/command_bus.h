#pragma once

#include <wsgw/export.h>
#include <wsgw/sink.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace wsgw {

/// A control command as a backend wrote it into a broker (a Redis stream entry, an AMQP message),
/// decoded but not yet checked: the handler judges the action and selector. Value type.
struct BusCommand {
    /// The backend's command_id; else one made from the broker's own id of the entry, so a
    /// redelivery of the same entry is still recognised.
    std::string id;
    std::string action;   ///< "send" | "settags" | "close" (anything else: the handler refuses it)
    /// The control API's query-string form ("group=a&admin=1", "id=a,b"), or its JSON form
    /// (`{"any":{"group":["a","b"]}}`, see Selector::parseJson), told apart by a leading '{'.
    std::string selector;
    std::string message;  ///< send and close: the payload, byte for byte
    bool binary = false;  ///< the message is a binary frame
    std::string tags;     ///< settags: form-encoded "k=v&k2=" (an empty value deletes the tag)
};

/// What the handler did with a command. Value type.
struct BusResult {
    enum class Kind {
        Applied,   ///< run (cluster-wide): `count` connections, `missing` nodes unknown
        Invalid,   ///< malformed (bad selector, unknown action...): nothing was done, never retried
        Failed,    ///< well-formed but not (fully) done: `error` says why; not retried
        Retry,     ///< nothing was done and it may work later (busy, shutting down): not acknowledged
    } kind = Kind::Applied;
    std::size_t count = 0;
    std::vector<std::string> missing;
    std::string error; ///< Invalid, Failed: why, for the backend
    std::string malformedKind; ///< Invalid: a short name of what was wrong ("bad selector"), for logs
};

/// Runs one command and waits for its answer; called on the reader's own thread, one command at a
/// time. Must not throw.
using BusHandler = std::function<BusResult(const BusCommand &)>;

/// Counters for metrics. Value type.
struct CommandBusStats {
    std::string transport; ///< "redis" | "amqp"
    bool connected = false;
    std::uint64_t received = 0;   ///< commands read (redeliveries and claimed ones included)
    std::uint64_t applied = 0;    ///< handler answered Applied
    std::uint64_t failed = 0;     ///< handler answered Failed
    std::uint64_t malformed = 0;  ///< undecodable, or handler answered Invalid
    std::uint64_t duplicates = 0; ///< command_id already handled: acknowledged, not applied again
    std::uint64_t retried = 0;    ///< left unacknowledged for a later attempt
    std::uint64_t claimed = 0;    ///< taken over from a consumer that held them too long (Redis)
    std::uint64_t replies = 0;    ///< replies written to reply_to
    std::uint64_t reconnects = 0;
    std::string lastError;
};

/// Reads commands from a broker on a thread of its own and hands each to a BusHandler; a command is
/// acknowledged to the broker only after the handler answered (at-least-once reading), and its id is
/// remembered for a while so that a redelivery is acknowledged without being applied again.
///
/// Thread-safe: start() and stop() from one thread; stats() from any.
class WSGW_EXPORT CommandReader {
public:
    virtual ~CommandReader();
    virtual std::string name() const = 0;
    /// Starts the reader's thread. False with a message if it cannot; an unreachable broker is not
    /// an error: it keeps trying, backing off.
    [[nodiscard]] virtual bool start(BusHandler handler, std::string *error) noexcept = 0;
    /// Stops reading within about a second (a blocking read is bounded by then) and joins the
    /// thread; a command being handled is finished first. Idempotent.
    virtual void stop() noexcept = 0;
    virtual CommandBusStats stats() const = 0;
};

/// Callbacks of a reader, for logs. Each is called on the reader's thread and must be quick.
struct CommandReaderEvents {
    /// Connected (true) or lost the connection (false, with why); once per change.
    std::function<void(bool up, const std::string &why)> onStateChange;
    /// The first malformed command of each kind (later ones are only counted).
    std::function<void(const std::string &kind, const std::string &detail)> onMalformed;
};

/// Commands from a Redis stream (wsgwd's command_redis). Redis 6.2 or later (XAUTOCLAIM).
///
///  - The group is created at the stream's end (XGROUP CREATE ... $ MKSTREAM) if missing; every node
///    reads as the consumer named `consumer` (XREADGROUP ... BLOCK `block`), so each entry goes to
///    one node. On connecting, a node first re-reads the entries it holds unacknowledged.
///  - Entry fields: action, selector, message, type (text | binary), tags, command_id, reply_to.
///  - An entry is acknowledged (XACK) once handled. Entries another consumer has held for longer than
///    `claimIdle` are taken over (XAUTOCLAIM), so a node that dies does not lose them.
///  - command_id (else "<stream>:<entry id>") is recorded in the key `<stream>:cmd:<id>`: SET NX
///    "pending" for `inFlightTtl` while it runs, then "done:<count>" (or "done:error") for
///    `dedupWindow`. A command whose key says done is acknowledged and not applied again (its reply
///    says duplicate); one still pending elsewhere is left for later. So a command runs once unless
///    its node dies between running it and writing "done" (then another node runs it again once
///    the pending mark expired): at least once, and once in every other case.
///  - reply_to: one entry XADDed there (MAXLEN ~ 10000): command_id and count, missing_nodes
///    (comma-separated) when some node's part is unknown, or error; duplicate 1 for a redelivery.
///  - One connection on the reader's thread; blocking calls bounded by the endpoint's timeouts;
///    reconnects back off from 0.1 s doubling to 2 s.
struct RedisCommandOptions {
    RedisEndpoint redis;
    std::string stream = "wsgw:commands";
    std::string group = "wsgw";
    std::string consumer; ///< this node's name (required)
    std::chrono::milliseconds block{1000};        ///< XREADGROUP BLOCK: also how soon stop() is seen
    std::chrono::milliseconds claimIdle{30'000};  ///< XAUTOCLAIM min-idle-time
    std::chrono::milliseconds dedupWindow{300'000};
    /// How long a command's "pending" mark lives: longer than a command may take to run (the
    /// daemon sets control_timeout_s + the cluster's command timeout + 2 s). A command whose node
    /// died while running it is run again by another node after this.
    std::chrono::milliseconds inFlightTtl{15'000};
    std::size_t batch = 64; ///< entries per read
    CommandReaderEvents events;
};

/// nullptr with a message for options that cannot work (no consumer name, an empty stream or group)
/// or when libwsgw was built without Redis support.
WSGW_EXPORT std::unique_ptr<CommandReader> makeRedisCommandReader(RedisCommandOptions options,
                                                                  std::string *error = nullptr);

/// Commands from an AMQP 0-9-1 queue (wsgwd's command_amqp), on rabbitmq-c.
///
///  - The queue is declared durable on each connect; every node consumes it (basic.consume, manual
///    acknowledgements, basic.qos `prefetch`), so each message goes to one node (competing
///    consumers). A message is acknowledged (basic.ack) once handled; one that was not (the node
///    died or lost the broker) is delivered again, to any node.
///  - The body is a JSON object: action, selector (a string, or a JSON selector object), message
///    (text) or message_base64 (binary bytes;
///    type binary unless type says text), type (text | binary), tags (settags: an object of string
///    values, "" deletes the tag), command_id. The message_id property stands in for a missing
///    command_id.
///  - command_id is recorded while it runs and for `dedupWindow` after: in Redis (`dedupRedis`,
///    the same scheme as RedisCommandOptions: `dedupPrefix`<id> SET NX "pending", then "done:<count>"),
///    so whichever node reads a redelivery acknowledges it without applying it again; without
///    `dedupRedis`, in this process only (a redelivery that reaches another node runs again). A
///    command pending elsewhere, or one whose Redis is unreachable, is kept unacknowledged and
///    looked at again a second later. A command without any id is not de-duplicated.
///  - The reply_to property: {"command_id", "count", "missing_nodes"} or {"command_id", "error"}
///    ("duplicate": true for a redelivery) is published there through the default exchange, with
///    the message's correlation_id (the RPC pattern). Replies are not confirmed.
///  - Every broker call is bounded (rabbitmq-c's timeouts, and a socket watchdog for its writes);
///    a wait for deliveries lasts at most `wait`, so stop() is seen within about that. Reconnects
///    back off from 0.1 s doubling to 2 s.
struct AmqpCommandOptions {
    /// Where and how to connect: host, port, tls, caFile, user, password, vhost, heartbeat,
    /// connectTimeout, replyTimeout (exchange, queue, routingKey, headers and node are not used).
    AmqpSinkOptions broker;
    std::string queue = "wsgw.commands";
    std::uint16_t prefetch = 100; ///< unacknowledged messages the broker hands this node at most
    std::string consumer;         ///< this node's name (required): the consumer tag and connection name
    std::chrono::milliseconds wait{1000};           ///< longest wait for a delivery
    std::chrono::milliseconds dedupWindow{300'000}; ///< how long a command_id is remembered
    /// As RedisCommandOptions::inFlightTtl: how long a command's "pending" mark lives.
    std::chrono::milliseconds inFlightTtl{15'000};
    /// Redis for command_id records shared by every node; unset: this process only.
    std::optional<RedisEndpoint> dedupRedis;
    std::string dedupPrefix; ///< key prefix in dedupRedis; empty: "<queue>:cmd:"
    CommandReaderEvents events;
};

/// nullptr with a message for options that cannot work (no consumer name, an empty or too long
/// queue name, dedupRedis without Redis support) or when libwsgw was built without AMQP support.
WSGW_EXPORT std::unique_ptr<CommandReader> makeAmqpCommandReader(AmqpCommandOptions options,
                                                                 std::string *error = nullptr);

} // namespace wsgw
