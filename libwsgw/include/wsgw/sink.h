#pragma once

#include <wsgw/event.h>
#include <wsgw/export.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace wsgw {

/// Where events go. A sink is driven by its own thread inside EventBus: it is connected, handed
/// batches in event order, and says how many it delivered.
///
/// Thread-bound to its sink thread (EventBus calls it from that thread only), except name(),
/// accepts() and rejected(), which must be thread-safe.
class WSGW_EXPORT EventSink {
public:
    virtual ~EventSink();

    /// A short name for logs and metrics ("log", "redis", ...).
    virtual std::string name() const = 0;

    /// The tags the sink's templates read (stream names, routing keys): every event carries them
    /// in Event::context, whatever its endpoint includes. Called once, by EventBus::addSink.
    /// Default: none.
    virtual std::vector<std::string> tagsUsed() const { return {}; }

    /// Which events the sink takes. Default: open, close and message (the event streams of the
    /// compatibility contract).
    virtual bool accepts(EventAction) const { return true; }

    /// Makes the sink ready to publish: called first, and again after a failed publish once the
    /// back-off has passed, until it returns true. Returns false (with lastError() set) while
    /// the destination cannot be reached. Default: true (nothing to connect).
    virtual bool connect() { return true; }

    /// Delivers `batch` (in order, never empty) and returns how many leading events were
    /// delivered and acknowledged by the destination: all, some, or none. Events not
    /// acknowledged are offered again, after a back-off and connect(), starting with the first
    /// of them, so delivery is at-least-once. An event the destination refuses for good (not a
    /// connection problem) counts as handled: acknowledge it and count it in rejected().
    /// Must not throw; an error is reported by acknowledging fewer.
    virtual std::size_t publish(const std::vector<EventPtr> &batch) = 0;

    /// Called on the sink thread after a failed publish, before the back-off; a sink may drop a
    /// broken connection here. Default: nothing.
    virtual void onFailure() {}

    /// Called on the sink thread while connected and idle, about every SinkOptions::idleInterval
    /// (heartbeats, refreshing a TTL). Returns false if it found the connection broken.
    virtual bool idle() { return true; }

    /// Why the last connect or publish failed, for the log ("connection refused").
    virtual std::string lastError() const { return {}; }

    /// Events the destination refused for good so far (thread-safe).
    virtual std::uint64_t rejected() const { return 0; }

    /// Thread-safe, must not block: called by EventBus::stop() once its flush time has run out
    /// while the sink's thread is still inside one of the calls above. Make that call return
    /// soon (failing), and later ones fail at once. Default: nothing.
    virtual void cancel() noexcept {}
};

/// What a sink does when its backlog is full.
enum class OverflowPolicy {
    DropOldest,   ///< discard the oldest queued event to make room (counted)
    DropNewest,   ///< discard the new event (counted)
    PauseReading, ///< keep every event and ask the transport to stop reading from clients
                  ///< (EventBus::paused) until the backlog is down to half its bound
};

/// Per-sink bounds and pacing.
struct SinkOptions {
    std::size_t maxBacklogEvents = 1'000'000;    ///< events held while the destination is slow or down
    std::size_t maxBacklogBytes = 256u << 20;    ///< and their approximate bytes
    OverflowPolicy overflow = OverflowPolicy::DropOldest;
    std::size_t maxBatch = 512;                  ///< events per publish call
    /// How long the sink's thread waits for a batch to fill (maxBatch events) before it
    /// publishes a smaller one; 0: publish what is there at once.
    std::chrono::milliseconds batchWait{0};
    /// First retry delay after a failure. Each wait is drawn from [delay/2, delay] (jitter).
    std::chrono::milliseconds minBackoff{100};
    std::chrono::milliseconds maxBackoff{10'000}; ///< the delay doubles up to this
    std::chrono::milliseconds idleInterval{1000}; ///< how often idle() runs while nothing is sent
};

/// A sink's counters. Read with EventBus::stats().
struct SinkStats {
    std::string name;
    std::string backend; ///< the name it was added under (EventBus::addSink); routes name it
    std::uint64_t published = 0; ///< events acknowledged (including rejected ones)
    std::uint64_t dropped = 0;   ///< events discarded by the overflow policy
    std::uint64_t rejected = 0;  ///< events the destination refused for good
    std::uint64_t failures = 0;  ///< failed connects and publish calls that did not deliver everything
    std::size_t backlog = 0;     ///< events waiting (including the batch in flight)
    std::size_t backlogBytes = 0;
    bool connected = false;      ///< connected and its last publish delivered everything
    std::string lastError;       ///< why it is not connected, if it is not
};

/// Which backends (sinks, by the name they were added under) get the events of which endpoint.
/// Value type. See EventBus::setRoutes.
struct EventRoutes {
    /// Endpoint (Event::endpoint, e.g. "/chat") -> the backends that get its events. An
    /// endpoint listed with no backends gets none.
    std::map<std::string, std::vector<std::string>, std::less<>> endpoints;
    /// The backends of every endpoint not listed in `endpoints` (and of events with no endpoint).
    std::vector<std::string> defaults;
};

/// Routes every published event to the sinks of its endpoint (setRoutes; until then, to every
/// sink) that accept its action, each sink with its own bounded backlog and thread.
///
/// A sink's backlog is one queue per producer: each of the `producers` threads that publish
/// with publish(producer, event) (the hub's shards) has queues of its own, which it shares with
/// no other producer, only with the sink's thread; so producers never wait for each other.
/// Other threads publish through one more queue per sink, shared under a mutex. The backlog
/// bounds (SinkOptions) hold for a sink's queues together (producers publishing at the same
/// moment may overshoot them by an event each); DropOldest drops the oldest events of the
/// producer that hit the bound. A sink delivers its queues' events merged in the order they
/// were published.
///
/// Thread-safe. publish() never blocks on a destination: a slow or unreachable sink fills its
/// own backlog and then applies its overflow policy, while the other sinks carry on; with
/// routes, one backend's outage or backpressure never reaches the endpoints not routed to it.
class WSGW_EXPORT EventBus {
public:
    /// `firstId` is the id of the first event (see Event::id); `producers` the number of
    /// threads with queues of their own (publish(producer, event)).
    explicit EventBus(std::uint64_t firstId = 1, std::size_t producers = 0);
    ~EventBus(); ///< stop(0) if still running
    EventBus(const EventBus &) = delete;
    EventBus &operator=(const EventBus &) = delete;

    /// Adds a sink under the backend name `backend` (empty: the sink's name()), which routes
    /// (setRoutes) name. Before start() it starts with the others; after start() its thread
    /// starts here, and it gets events once a route names it (with no routes set, at once).
    /// Returns its index in stats(), or SIZE_MAX when the name is taken by a sink not removed,
    /// or its thread cannot start. Thread-safe.
    std::size_t addSink(std::unique_ptr<EventSink> sink, SinkOptions options = {}, std::string backend = {});
    /// Sinks not removed.
    std::size_t sinkCount() const;

    /// Thread-safe, lock-free for publishers: from now on each event goes to the sinks that
    /// `routes` names for its endpoint (and that accept its action), and to no other. The table
    /// replaces the previous one whole; a publish() under way finishes with the table it
    /// started with. Returns false, changing nothing, with "unknown backend 'NAME'" in `*error`
    /// when a name is no sink's. Callable before or after start(); tables replaced are kept
    /// until the bus is destroyed (a few hundred bytes per call: meant for reloads, not per
    /// event).
    [[nodiscard]] bool setRoutes(const EventRoutes &routes, std::string *error = nullptr) noexcept;

    /// Removes the sink added as `backend`: the caller has first routed no endpoint to it
    /// (setRoutes). Its thread delivers what its backlog holds for up to `flushFor`, then stops;
    /// it leaves stats(). Returns the events left undelivered, or SIZE_MAX when there is no such
    /// sink. A publish() that began before the removal may still queue an event for it: it is
    /// delivered while the sink's thread runs; one queued after the thread has ended is neither
    /// delivered nor counted. Thread-safe; blocks up to `flushFor` (and a sink call's cancel).
    std::size_t removeSink(const std::string &backend, std::chrono::milliseconds flushFor);

    /// Puts `sink` in the place of the sink added as `backend` (a changed configuration), in one
    /// step: every route naming `backend` sends the events published from now on to the new
    /// sink, started at once; the old one delivers what its backlog holds for up to `flushFor`
    /// and stops, as removeSink. No event is lost to the swap (within `flushFor`), but while
    /// the old backlog drains the two deliver side by side, so a connection's events may reach
    /// the destination out of order around the swap. Returns the events the old one left
    /// undelivered, or SIZE_MAX (nothing changed) when there is no such sink, `sink` is null or
    /// its thread cannot start. Thread-safe; blocks as removeSink.
    std::size_t replaceSink(const std::string &backend, std::unique_ptr<EventSink> sink, SinkOptions options,
                            std::chrono::milliseconds flushFor);

    /// Called on a sink's thread each time it connects or goes down (not per event), with its
    /// backend name (addSink), the new state and, when down, why. Set before start().
    using StateListener = std::function<void(const std::string &sink, bool connected, const std::string &error)>;
    void onStateChange(StateListener listener);

    /// Called when a PauseReading sink's backlog goes over its bound (true) or drains back to
    /// half (false), on the thread that crossed the threshold; then paused(endpoint) says which
    /// endpoints should stop reading. Only sinks with OverflowPolicy::PauseReading pause.
    /// Set before start().
    void onBackpressure(std::function<void(bool paused)> listener);

    /// Starts one thread per sink. Returns false with a message if a thread cannot be started;
    /// then none is left running.
    [[nodiscard]] bool start(std::string *error = nullptr) noexcept;

    /// Whether any sink takes events with this action (cheap; fixed once started). Lets
    /// producers skip building events nobody wants.
    bool wants(EventAction action) const noexcept;

    /// Every tag some sink reads (EventSink::tagsUsed), fixed once started: producers put them
    /// into each event's context (Shard does).
    const std::vector<std::string> &tagsUsed() const noexcept;

    /// Assigns the next event id, queues the event for
    /// every sink of its endpoint's route (see setRoutes) that accepts it, and returns the id. With no sinks the event is counted and
    /// discarded. After stop() events are discarded (0 is returned). Out of memory, the event is
    /// counted in lost() and 0 is returned.
    std::uint64_t publish(Event &&event) noexcept;
    /// The same from producer `producer` (< producers), through its own queues: only that
    /// thread may publish as that producer. A producer out of range publishes as publish(event).
    std::uint64_t publish(std::size_t producer, Event &&event) noexcept;

    /// Counts an event its producer could not build (out of memory) as lost.
    void countLost() noexcept;
    /// Events lost before reaching any sink's backlog (out of memory).
    std::uint64_t lost() const noexcept;

    /// True while a PauseReading sink's backlog is over its bound and not yet down to half.
    bool paused() const noexcept;
    /// True while such a sink is one that `endpoint`'s events are routed to: the transport
    /// stops reading from that endpoint's clients only. Thread-safe, lock-free.
    bool paused(std::string_view endpoint) const noexcept;

    /// Stops accepting events, lets every sink deliver its backlog for up to `flushFor`, then
    /// stops the threads (a sink still inside a call then is cancelled: EventSink::cancel).
    /// Returns the number of events that were left undelivered.
    std::size_t stop(std::chrono::milliseconds flushFor);

    /// Every sink not removed, in the order added.
    std::vector<SinkStats> stats() const;
    /// True when every sink is connected.
    bool ready() const;
    /// Id of the last open/close/message event published (firstId - 1 before the first).
    std::uint64_t lastEventId() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// Writes each event as a JSON line (see toJson) to `out` and flushes after each batch. `out`
/// is borrowed and must outlive the sink. The default sink of wsgwd (stdout).
WSGW_EXPORT std::unique_ptr<EventSink> makeLogSink(std::FILE *out, std::string node);

/// Accepts and discards everything; for benchmarks.
WSGW_EXPORT std::unique_ptr<EventSink> makeNullSink();

/// Where a Redis server is and how to log in. Value type.
struct RedisEndpoint {
    std::string host = "127.0.0.1";
    std::uint16_t port = 6379;
    std::string unixPath; ///< non-empty: connect to this unix socket instead of host:port
    int db = 0;           ///< SELECT
    std::string user;     ///< with a password: AUTH user password (Redis 6 ACL)
    std::string password; ///< non-empty: AUTH
    std::string clientName; ///< non-empty: CLIENT SETNAME
    std::chrono::milliseconds connectTimeout{2000};
    std::chrono::milliseconds commandTimeout{5000}; ///< a reply slower than this counts as an outage
};

/// Events as Redis Stream entries (XADD), one stream per rendered name.
struct RedisStreamOptions {
    RedisEndpoint redis;
    /// A Template: "connectionevents", "events.{tag.group}.{json.command:none}".
    std::string streamName = "connectionevents";
    /// 0: unbounded; else XADD MAXLEN ~ maxLen (Redis trims in whole nodes, so a stream may
    /// hold somewhat more).
    std::size_t maxLen = 0;
    /// This node's name, written in every entry's `node` field.
    std::string node;
};

/// The Redis stream sink. Returns nullptr with a message in `*error` for an invalid stream name,
/// or when libwsgw was built without Redis support. (The connection mirror, makeRedisMirror, is
/// in <wsgw/mirror.h>.)
///
/// Stream entries have the fields connection, action, tags (form-encoded), and for messages
/// type (text|binary) and message (the payload, byte for byte), then event_id and node, and for
/// the close of a lost node's connection reason (node_lost) and lost_node. XADDs
/// are pipelined, a batch per round trip; an entry counts as delivered once Redis answered it.
/// An entry Redis refuses (e.g. the key holds another type) is counted in rejected().
WSGW_EXPORT std::unique_ptr<EventSink> makeRedisStreamSink(RedisStreamOptions options, std::string *error = nullptr);

/// Where and how the AMQP sink publishes (wsgwd's stream_amqp). Value type.
struct AmqpSinkOptions {
    std::string host = "localhost";
    std::uint16_t port = 5672;
    bool tls = false;            ///< amqps: TLS with the peer's certificate and host name verified
    std::string caFile;          ///< TLS: the CA bundle; empty: $SSL_CERT_FILE, else the system bundle
    std::string user = "guest";
    std::string password = "guest";
    std::string vhost = "/";
    /// Declared as a durable topic exchange on each connect. Empty: the default exchange (the
    /// routing key then names the queue).
    std::string exchange;
    /// Declared durable on each connect and, with an exchange, bound to it with "#". Empty: none.
    std::string queue;
    /// A Template source ({tag.NAME}, {json.VAR}); empty: the empty routing key.
    std::string routingKey;
    /// Added to every message's headers as strings.
    std::map<std::string, std::string> headers;
    /// The `node` field of each event (see toJson).
    std::string node;
    /// Heartbeat interval asked of the broker; a silent connection counts as dead after two.
    /// 0 disables heartbeats.
    std::chrono::seconds heartbeat{10};
    std::chrono::milliseconds connectTimeout{5000}; ///< TCP connect, TLS and login (each)
    /// Longest wait for a broker reply (a declaration), and for one batch to be written and
    /// confirmed.
    std::chrono::milliseconds replyTimeout{10'000};
};

/// Publishes each event as a persistent JSON message (toJson; content type application/json,
/// delivery mode 2, a timestamp and `headers`) with publisher confirms: an event counts as
/// delivered only when the broker confirmed it. The routing key is rendered per event from
/// `routingKey`. Connection and channel errors (refused login, an exchange that exists with
/// another type, a lost broker) make connect()/publish() fail with a lastError() that says what
/// to fix; EventBus retries with back-off. An event whose routing key exceeds AMQP's 255 bytes
/// is refused for good (counted in rejected()).
///
/// No call waits on the broker without limit, even for one that stops reading: connect() takes
/// at most connectTimeout per step of TCP, TLS and login and replyTimeout per declaration,
/// publish() and idle() at most replyTimeout, each plus 1 s (rabbitmq-c 0.11 has no write
/// timeout; the sink shuts a stuck socket down). A broker that blocks publishing (RabbitMQ's
/// connection.blocked, sent on a memory or disk alarm; the sink asks for it at login) makes
/// publish() stop writing and fail with lastError() "the broker at HOST:PORT blocked publishing:
/// <its reason>", and keeps the connection: connect() fails with the same reason, without waiting,
/// until connection.unblocked arrives on it, and then succeeds. Events written but not confirmed
/// before the block are published again after it (at least once).
///
/// Returns nullptr with a message in `*error` for options that can never work (an invalid
/// routing key template, an empty host) or when libwsgw was built without AMQP (rabbitmq-c).
/// Nothing is connected here: the sink connects on its EventBus thread.
WSGW_EXPORT std::unique_ptr<EventSink> makeAmqpSink(AmqpSinkOptions options, std::string *error = nullptr);

/// Where and how the webhook sink POSTs events (wsgwd's stream_http). Value type.
struct HttpSinkOptions {
    /// http://HOST[:PORT]/PATH or https://...; the events are POSTed to it.
    std::string url;
    /// A Standard Webhooks secret, "whsec_" followed by base64 (the key is the decoded bytes);
    /// empty: requests are not signed.
    std::string secret;
    /// https: the CA bundle that verifies the server; empty: the system's.
    std::string caFile;
    /// Events per request at most.
    std::size_t batchMaxEvents = 100;
    /// Requests under way at once at most (each on a keep-alive connection of its own).
    std::size_t maxInFlight = 4;
    /// Connecting, and each wait to send or receive, at most this long; then the request has failed.
    std::chrono::milliseconds timeout{5000};
    /// The `node` field of each event (see toJson).
    std::string node;
};

/// The webhook sink: POSTs events as a JSON array of toJson() objects (content type
/// application/json) signed per the Standard Webhooks specification: headers webhook-id (unique
/// per request), webhook-timestamp (Unix seconds) and webhook-signature
/// "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>". A 2xx answer acknowledges the request's
/// events; any other answer, a refused connection or a timeout fails it, and EventBus offers
/// the events again after a back-off (at least once).
///
/// A batch from EventBus is cut into requests of at most batchMaxEvents; when it holds more
/// than one request's worth, its events are spread over up to maxInFlight lanes by connection
/// (a connection's events always share a lane, in order) and the lanes POST at the same time,
/// each stopping at its first failure. publish() acknowledges the events before the first one
/// not delivered, so a connection's events are never delivered out of order: the ones after a
/// failure are offered again (some a second time). Give the sink SinkOptions::maxBatch =
/// batchMaxEvents × maxInFlight to let the lanes fill. lastError() names the URL and the HTTP
/// status or the network error.
///
/// Returns nullptr with a message in `*error` for options that can never work (a URL that is
/// not http(s)://HOST..., a secret that is not base64, zero batch or lanes), or when libwsgw
/// was built without HTTP support (cpp-httplib).
WSGW_EXPORT std::unique_ptr<EventSink> makeHttpSink(HttpSinkOptions options, std::string *error = nullptr);

} // namespace wsgw
