// The AMQP 0-9-1 event sink, on rabbitmq-c. See makeAmqpSink in <wsgw/sink.h>.
//
// One connection, one channel in confirm mode. publish() sends a whole batch, then reads
// basic.ack / basic.nack until every event of it is settled or the reply timeout passes, and
// reports the leading confirmed events. A failure drops the connection (onFailure), so delivery
// tags start again at 1 with the next connect and never mix two batches' confirms; the one
// exception is a broker that blocked publishing (below), whose late confirms carry tags below the
// next batch's and are ignored. rabbitmq-c services heartbeats only inside its own calls: idle()
// polls for frames so that heartbeats go out and a silent broker is noticed while no events flow.
//
// No call blocks without limit. rabbitmq-c bounds only the waits for replies (handshake and RPC
// timeouts) and the confirm waits here are bounded by the reply timeout, but its writes wait for
// ever for a broker that stops reading; a SocketWatchdog (socket_watchdog.h says why and how)
// shuts the socket down when a call outlives its bound:
//   connect()  TCP connect, TLS and login: connectTimeout each (+1 s); each declaration:
//              replyTimeout (+1 s)
//   publish()  writing the batch and waiting for its confirms: replyTimeout in all (+1 s)
//   idle()     replyTimeout (+1 s), in practice a few syscalls
//   destructor connection.close: 1 s (+1 s), skipped while the broker blocks us
//
// connection.blocked (RabbitMQ's memory and disk alarms; asked for with the `connection.blocked`
// capability at login): RabbitMQ sends it when a publishing connection hits an alarm, then stops
// reading from it until connection.unblocked. The sink stops writing as soon as it reads the
// notice (it looks for incoming frames every kCheckEvery messages while writing a batch), returns
// what was confirmed, and keeps the connection: publish() and idle() fail at once with lastError()
// "the broker at H:P blocked publishing: <its reason>", and connect() (EventBus retries it with
// back-off) listens on the kept connection and succeeds as soon as connection.unblocked arrives.
// Events written before the notice but not yet confirmed are published again after it: at least
// once, as after any failure.
#include "amqp_confirms.h"
#include "amqp_connect.h"
#include "amqp_support.h"
#include "socket_watchdog.h"

#include <wsgw/sink.h>
#include <wsgw/template.h>

#include <amqp.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace wsgw {

namespace {

using namespace std::chrono_literals;
using namespace wsgw::amqp;
using Clock = std::chrono::steady_clock;

constexpr amqp_channel_t kChannel = 1;
constexpr std::size_t kMaxShortString = 255; // exchange, queue and routing key (AMQP shortstr)
// While writing a batch, look for frames from the broker (a connection.blocked, confirms) after
// this many messages or bytes, whichever comes first: two syscalls each time. The byte bound keeps
// far below the TCP buffers between us and the broker, so the notice is read before a write could
// fill them.
constexpr std::size_t kCheckEvery = 64;
constexpr std::size_t kCheckEveryBytes = 64 * 1024;

class AmqpSink final : public EventSink {
public:
    AmqpSink(AmqpSinkOptions options, Template routingKey)
        : o_(std::move(options)), routingKey_(std::move(routingKey)) {
        where_ = whereOf(o_);
        // The headers table points into o_.headers, which stays put from here on.
        for (const auto &[key, value] : o_.headers) {
            amqp_table_entry_t entry{};
            entry.key = bytesOf(key);
            entry.value.kind = AMQP_FIELD_KIND_UTF8;
            entry.value.value.bytes = bytesOf(value);
            headerEntries_.push_back(entry);
        }
        props_._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
        props_.content_type = amqp_cstring_bytes("application/json");
        props_.delivery_mode = AMQP_DELIVERY_PERSISTENT;
        if (!headerEntries_.empty()) {
            props_._flags |= AMQP_BASIC_HEADERS_FLAG;
            props_.headers.num_entries = static_cast<int>(headerEntries_.size());
            props_.headers.entries = headerEntries_.data();
        }
    }

    ~AmqpSink() override { disconnect(true); }

    std::string name() const override { return "amqp"; }
    std::vector<std::string> tagsUsed() const override { return routingKey_.tagNames(); }

    bool connect() override;
    std::size_t publish(const std::vector<EventPtr> &batch) override;
    // A broker that blocked us keeps its connection: connection.unblocked will come on it.
    void onFailure() override {
        if (!keepOpen_) disconnect(false);
    }
    bool idle() override;
    std::string lastError() const override { return error_; }
    std::uint64_t rejected() const override { return rejected_.load(std::memory_order_relaxed); }
    // A shutdown past its flush time: the call in progress gives up now, not at its own bound.
    void cancel() noexcept override { watchdog_.abort(); }

private:
    using ConfirmFn = void (*)(void *ctx, const amqp_frame_t &frame);

    bool fail(std::string message) {
        error_ = std::move(message);
        disconnect(false);
        return false;
    }
    bool openConnection();
    // The connection's socket for the watchdog.
    int fd() const { return conn_ ? amqp_get_sockfd(conn_) : -1; }
    // For the declarations: false with lastError() set unless the reply is normal. `timedOut`:
    // the watchdog shut the socket down during the call.
    bool replyOk(std::string_view what, bool timedOut);
    // Reads frames, waiting up to `wait` for the first one and taking whatever else has arrived
    // without waiting; basic.ack and basic.nack on our channel go to `onConfirm` (ignored when
    // null), every other frame to handleFrame. Returns false (lastError() set) if the connection
    // or channel broke.
    bool readFrames(std::chrono::milliseconds wait, ConfirmFn onConfirm = nullptr, void *ctx = nullptr);
    // A frame that is not a confirm. Returns false (lastError() set) if it closed the
    // connection or the channel; records connection.blocked / connection.unblocked.
    bool handleFrame(const amqp_frame_t &frame);
    // After a call that failed with `status`: the reason, naming the watchdog if it fired.
    std::string callError(const std::string &what, int status, bool timedOut, std::chrono::milliseconds bound) const;
    std::string statusError(int status) const;
    std::string blockedError() const { return "the broker at " + where_ + " blocked publishing: " + blocked_; }
    void disconnect(bool graceful);

    AmqpSinkOptions o_;
    Template routingKey_;
    std::string where_; // "host:port" for messages
    std::vector<amqp_table_entry_t> headerEntries_;
    amqp_basic_properties_t props_{};
    amqp_connection_state_t conn_ = nullptr;
    std::uint64_t nextTag_ = 1; // the delivery tag of the next publish on this channel
    std::string blocked_;       // why the broker blocked publishing (connection.blocked); "" if not
    bool keepOpen_ = false;     // the last call failed only because of blocked_: keep conn_
    std::string error_;
    std::atomic<std::uint64_t> rejected_{0};
    SocketWatchdog watchdog_; // declared last: destroyed first, after disconnect() is done with it
};

std::string AmqpSink::statusError(int status) const {
    switch (status) {
    case AMQP_STATUS_HEARTBEAT_TIMEOUT:
        return "no heartbeat from the broker at " + where_ + " for " +
               std::to_string(2 * o_.heartbeat.count()) + " s: connection considered dead";
    case AMQP_STATUS_CONNECTION_CLOSED:
    case AMQP_STATUS_SOCKET_ERROR:
    case AMQP_STATUS_SOCKET_CLOSED:
    case AMQP_STATUS_TCP_ERROR:
    case AMQP_STATUS_SSL_ERROR:
        return "connection to the broker at " + where_ + " lost (" + amqp_error_string2(status) + ")";
    default:
        return std::string("AMQP error: ") + amqp_error_string2(status);
    }
}

std::string AmqpSink::callError(const std::string &what, int status, bool timedOut,
                                std::chrono::milliseconds bound) const {
    if (!timedOut) return what + ": " + statusError(status);
    return what + ": no progress with the broker at " + where_ + " for " + seconds(bound) +
           (blocked_.empty() ? " (is it frozen, or the network down?)" : " (it blocked publishing: " + blocked_ + ")") +
           "; connection dropped";
}

bool AmqpSink::replyOk(std::string_view what, bool timedOut) {
    amqp_rpc_reply_t r = amqp_get_rpc_reply(conn_);
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return true;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
            return fail(std::string(what) + ": the broker refused: " + closeReason(r.reply));
        return fail(std::string(what) + ": the broker closed the connection: " + closeReason(r.reply));
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        if (r.library_error == AMQP_STATUS_TIMEOUT)
            return fail(std::string(what) + ": no answer from the broker within " + seconds(o_.replyTimeout));
        return fail(callError(std::string(what), r.library_error, timedOut, o_.replyTimeout + kWatchdogGrace));
    default:
        return fail(std::string(what) + ": no reply");
    }
}

bool AmqpSink::connect() {
    if (conn_ && keepOpen_) {
        // The broker blocked us: listen for connection.unblocked on the connection we kept.
        keepOpen_ = false;
        WatchdogGuard guard(watchdog_, fd(), Clock::now() + o_.replyTimeout + kWatchdogGrace);
        bool ok = readFrames(0ms);
        if (!guard.end() && ok) {
            if (blocked_.empty()) {
                error_.clear();
                return true;
            }
            keepOpen_ = true;
            error_ = blockedError();
            return false;
        }
        // The kept connection broke meanwhile: start afresh.
    }
    return openConnection();
}

bool AmqpSink::openConnection() {
    disconnect(false);
    std::string why;
    conn_ = amqp::openConnection(o_, o_.node.empty() ? "wsgw" : "wsgw " + o_.node, watchdog_, &why);
    if (!conn_) return fail(why);

    // Each declaration: rabbitmq-c waits for the reply up to the RPC timeout but writes the
    // request without a bound, so the watchdog guards it.
    auto rpcOk = [&](std::string_view what, auto &&call) {
        WatchdogGuard guard(watchdog_, fd(), Clock::now() + o_.replyTimeout + kWatchdogGrace);
        call();
        return replyOk(what, guard.end());
    };
    if (!rpcOk("opening a channel", [&] { amqp_channel_open(conn_, kChannel); })) return false;
    if (!o_.exchange.empty() && !rpcOk("declaring exchange '" + o_.exchange + "' (durable, topic)", [&] {
            amqp_exchange_declare(conn_, kChannel, bytesOf(o_.exchange), amqp_cstring_bytes("topic"), /*passive=*/0,
                                  /*durable=*/1, /*auto_delete=*/0, /*internal=*/0, amqp_empty_table);
        }))
        return false;
    if (!o_.queue.empty()) {
        if (!rpcOk("declaring queue '" + o_.queue + "' (durable)", [&] {
                amqp_queue_declare(conn_, kChannel, bytesOf(o_.queue), /*passive=*/0, /*durable=*/1, /*exclusive=*/0,
                                   /*auto_delete=*/0, amqp_empty_table);
            }))
            return false;
        if (!o_.exchange.empty() &&
            !rpcOk("binding queue '" + o_.queue + "' to exchange '" + o_.exchange + "'", [&] {
                amqp_queue_bind(conn_, kChannel, bytesOf(o_.queue), bytesOf(o_.exchange), amqp_cstring_bytes("#"),
                                amqp_empty_table);
            }))
            return false;
    }
    if (!rpcOk("enabling publisher confirms", [&] { amqp_confirm_select(conn_, kChannel); })) return false;
    nextTag_ = 1;
    amqp_maybe_release_buffers(conn_);
    error_.clear();
    return true;
}

bool AmqpSink::handleFrame(const amqp_frame_t &frame) {
    if (frame.frame_type != AMQP_FRAME_METHOD) return true; // e.g. the content of a basic.return
    const amqp_method_t &m = frame.payload.method;
    switch (m.id) {
    case AMQP_CONNECTION_CLOSE_METHOD: {
        error_ = "the broker at " + where_ + " closed the connection: " + closeReason(m);
        amqp_connection_close_ok_t ok{};
        amqp_send_method(conn_, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        return false;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
        error_ = "the broker closed the channel: " + closeReason(m);
        amqp_channel_close_ok_t ok{};
        amqp_send_method(conn_, frame.channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        return false;
    }
    case AMQP_CONNECTION_BLOCKED_METHOD:
        blocked_ = text(static_cast<const amqp_connection_blocked_t *>(m.decoded)->reason);
        if (blocked_.empty()) blocked_ = "no reason given";
        return true;
    case AMQP_CONNECTION_UNBLOCKED_METHOD:
        blocked_.clear();
        return true;
    default:
        return true; // confirms nobody waits for any more (see publish()), heartbeats
    }
}

bool AmqpSink::readFrames(std::chrono::milliseconds wait, ConfirmFn onConfirm, void *ctx) {
    // A zero timeout reads what has arrived without waiting. Each call also sends a heartbeat
    // when one is due and fails with AMQP_STATUS_HEARTBEAT_TIMEOUT once the broker has been
    // silent for two intervals.
    for (bool first = true;; first = false) {
        timeval tv = toTimeval(first ? wait : 0ms);
        amqp_frame_t frame{};
        int rc = amqp_simple_wait_frame_noblock(conn_, &frame, &tv);
        if (rc == AMQP_STATUS_TIMEOUT) return true;
        if (rc != AMQP_STATUS_OK) {
            error_ = statusError(rc);
            return false;
        }
        const bool confirm = frame.frame_type == AMQP_FRAME_METHOD && frame.channel == kChannel &&
                             (frame.payload.method.id == AMQP_BASIC_ACK_METHOD ||
                              frame.payload.method.id == AMQP_BASIC_NACK_METHOD);
        if (confirm) {
            if (onConfirm) onConfirm(ctx, frame);
        } else if (!handleFrame(frame)) {
            return false;
        }
    }
}

std::size_t AmqpSink::publish(const std::vector<EventPtr> &batch) {
    if (!conn_) {
        error_ = "not connected";
        return 0;
    }
    keepOpen_ = false;
    const auto deadline = Clock::now() + o_.replyTimeout;
    WatchdogGuard guard(watchdog_, fd(), deadline + kWatchdogGrace);
    if (!blocked_.empty()) {
        // Blocked before: has connection.unblocked come meanwhile?
        if (!readFrames(0ms)) return 0;
        if (!blocked_.empty()) {
            guard.end();
            keepOpen_ = true;
            error_ = blockedError();
            return 0;
        }
    }

    const std::size_t n = batch.size();
    BatchConfirms confirms(n, nextTag_);
    auto onConfirm = [](void *ctx, const amqp_frame_t &frame) {
        const amqp_method_t &m = frame.payload.method;
        if (m.id == AMQP_BASIC_ACK_METHOD) {
            const auto *ack = static_cast<const amqp_basic_ack_t *>(m.decoded);
            static_cast<BatchConfirms *>(ctx)->settle(ack->delivery_tag, ack->multiple != 0, /*refused=*/false);
        } else {
            const auto *nack = static_cast<const amqp_basic_nack_t *>(m.decoded);
            static_cast<BatchConfirms *>(ctx)->settle(nack->delivery_tag, nack->multiple != 0, /*refused=*/true);
        }
    };
    amqp_basic_properties_t props = props_;
    std::string key;
    bool broken = false;
    std::size_t sinceCheck = 0, bytesSinceCheck = 0;
    for (std::size_t i = 0; i < n && !broken; ++i) {
        const Event &e = *batch[i];
        key = routingKey_.render(e);
        if (key.size() > kMaxShortString) {
            // No broker would take it, now or later: refused for good.
            confirms.settledHere(i);
            rejected_.fetch_add(1, std::memory_order_relaxed);
            continue;
        }
        std::string body = toJson(e, o_.node);
        props.timestamp = static_cast<std::uint64_t>(e.timeMs / 1000);
        int rc = amqp_basic_publish(conn_, kChannel, bytesOf(o_.exchange), bytesOf(key), /*mandatory=*/0,
                                    /*immediate=*/0, &props, bytesOf(body));
        if (rc != AMQP_STATUS_OK) {
            // Part of a frame may have gone out: the connection cannot be used any more.
            error_ = "publishing: " + statusError(rc);
            broken = true;
            break;
        }
        confirms.sent(i);
        ++nextTag_;
        bytesSinceCheck += body.size() + key.size();
        if (++sinceCheck >= kCheckEvery || bytesSinceCheck >= kCheckEveryBytes) {
            sinceCheck = bytesSinceCheck = 0;
            if (!readFrames(0ms, onConfirm, &confirms)) broken = true;
            else if (!blocked_.empty()) break; // stop writing to a broker that stopped reading
        }
    }

    // Wait for the confirms of what went out, unless the broker blocked us: then they come
    // only after connection.unblocked.
    while (!broken && confirms.outstanding() > 0 && blocked_.empty()) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) {
            error_ = "the broker did not confirm " + std::to_string(confirms.outstanding()) + " events within " +
                     seconds(o_.replyTimeout);
            broken = true;
            break;
        }
        if (!readFrames(left, onConfirm, &confirms)) broken = true;
    }
    if (guard.end()) {
        // Whatever rabbitmq-c said, the reason is that the broker did not take our data in time.
        error_ = callError("publishing", AMQP_STATUS_SOCKET_ERROR, true, o_.replyTimeout + kWatchdogGrace);
        broken = true;
    }
    if (!broken) amqp_maybe_release_buffers(conn_);

    const std::size_t leading = confirms.leading();
    if (leading < n && !broken) {
        if (!blocked_.empty()) {
            keepOpen_ = true;
            error_ = blockedError();
        } else if (confirms.nacked() > 0) {
            error_ = "the broker nacked " + std::to_string(confirms.nacked()) +
                     " events (it could not take them); they are retried";
        }
    }
    return leading;
}

bool AmqpSink::idle() {
    if (!conn_) {
        error_ = "not connected";
        return false;
    }
    keepOpen_ = false;
    WatchdogGuard guard(watchdog_, fd(), Clock::now() + o_.replyTimeout + kWatchdogGrace);
    bool ok = readFrames(0ms);
    if (guard.end()) {
        error_ = callError("sending a heartbeat", AMQP_STATUS_SOCKET_ERROR, true, o_.replyTimeout + kWatchdogGrace);
        return false;
    }
    if (!ok) return false;
    if (!blocked_.empty()) {
        // Blocked while idle (alarms are per broker): report it; connect() waits for the end.
        keepOpen_ = true;
        error_ = blockedError();
        return false;
    }
    amqp_maybe_release_buffers(conn_);
    return true;
}

void AmqpSink::disconnect(bool graceful) {
    keepOpen_ = false;
    if (!conn_) return;
    // A broker that blocked us reads nothing, so it would not answer connection.close either.
    if (graceful && blocked_.empty()) {
        constexpr auto kCloseTimeout = 1000ms;
        WatchdogGuard guard(watchdog_, fd(), Clock::now() + kCloseTimeout + kWatchdogGrace);
        timeval quick = toTimeval(kCloseTimeout);
        amqp_set_rpc_timeout(conn_, &quick);
        amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(conn_); // closes the socket
    conn_ = nullptr;
    blocked_.clear();
}

// Options that can never work; "" when fine.
std::string checkOptions(const AmqpSinkOptions &o) {
    if (o.host.empty()) return "no broker host";
    if (o.exchange.size() > kMaxShortString) return "exchange name longer than 255 bytes";
    if (o.queue.size() > kMaxShortString) return "queue name longer than 255 bytes";
    for (const auto &[key, value] : o.headers)
        if (key.empty() || key.size() > 128) return "header name '" + key + "' must have 1 to 128 bytes";
    if (o.heartbeat.count() < 0 || o.heartbeat.count() > 65535) return "heartbeat must be 0 to 65535 seconds";
    if (o.connectTimeout.count() <= 0 || o.replyTimeout.count() <= 0) return "timeouts must be positive";
    return {};
}

} // namespace

std::unique_ptr<EventSink> makeAmqpSink(AmqpSinkOptions options, std::string *error) {
    std::string why = checkOptions(options);
    std::optional<Template> key;
    if (why.empty()) {
        std::string templateError;
        key = Template::parse(options.routingKey, &templateError);
        if (!key)
            why = "routing key '" + options.routingKey + "': " + templateError;
        else if (key->isConstant() && key->source().size() > kMaxShortString)
            why = "routing key longer than 255 bytes";
    }
    if (!why.empty()) {
        if (error) *error = why;
        return nullptr;
    }
    return std::make_unique<AmqpSink>(std::move(options), std::move(*key));
}

} // namespace wsgw
