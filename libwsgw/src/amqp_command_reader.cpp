// Commands from an AMQP queue, competing consumers with manual acknowledgements: read, decoded
// from JSON, de-duplicated by command id, handled, answered to reply_to, acknowledged; see
// AmqpCommandOptions in <wsgw/command_bus.h>.
//
// No call waits on the broker without limit (socket_watchdog.h says why rabbitmq-c needs help):
//   connect          amqp::openConnection's bounds, then replyTimeout (+1 s) per declaration
//   a delivery wait  `wait` + replyTimeout (+1 s): rabbitmq-c reads a message's header and body
//                    frames without a timeout of its own once the method frame came
//   reply, ack       replyTimeout (+1 s) each (writes only)
//   close            1 s (+1 s)
// stop() gives a command being handled a few seconds to be acknowledged, then shuts the socket
// down (SocketWatchdog::abort) so that nothing holds the thread.
#include "amqp_connect.h"
#include "amqp_support.h"
#include "command_dedup.h"
#include "form_encode.h"
#include "socket_watchdog.h"

#include <wsgw/command_bus.h>

#include <amqp.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

namespace wsgw {

namespace {

using namespace std::chrono_literals;
using namespace wsgw::amqp;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

constexpr amqp_channel_t kChannel = 1;
constexpr std::size_t kMaxShortString = 255;
constexpr auto kMinBackoff = 100ms;
constexpr auto kMaxBackoff = 2000ms;
constexpr auto kLookAgain = 1000ms;  // a command pending elsewhere, or its record unreachable
constexpr auto kStopGrace = 3000ms;  // stop(): a command being handled gets this to be acknowledged
constexpr auto kCloseTimeout = 1000ms;

// A delivery, kept until it is acknowledged (or the connection is lost).
struct Held {
    std::uint64_t tag = 0;
    std::string body;
    std::string replyTo;
    std::string correlationId;
    std::string messageId;
    Clock::time_point retryAt{};
};

// RFC 4648 base64 (padding optional, no whitespace); false if `in` is not that.
bool base64Decode(std::string_view in, std::string &out) {
    auto value = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        return -1;
    };
    while (!in.empty() && in.back() == '=') in.remove_suffix(1);
    if (in.size() % 4 == 1) return false;
    out.clear();
    out.reserve(in.size() * 3 / 4);
    std::uint32_t acc = 0;
    int bits = 0;
    for (char c : in) {
        int v = value(c);
        if (v < 0) return false;
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xff));
        }
    }
    return true;
}

// What was wrong with a message body; empty kind when it decoded.
struct Malformed {
    std::string kind, detail;
};

// The body as a BusCommand (without its id), or why not.
Malformed decode(const std::string &body, BusCommand &cmd, std::string &commandId) {
    json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object())
        return {"bad json", "the body must be a JSON object such as {\"action\":\"send\",\"selector\":\"group=a\","
                            "\"message\":\"hi\"}"};
    auto stringField = [&](const char *name, std::string &out) -> bool {
        auto it = j.find(name);
        if (it == j.end() || it->is_null()) return true;
        if (!it->is_string()) return false;
        out = it->get<std::string>();
        return true;
    };
    if (auto it = j.find("command_id"); it != j.end() && it->is_number_integer())
        commandId = it->dump(); // a number is as good an id as its digits
    else if (!stringField("command_id", commandId))
        return {"bad field", "command_id must be a string"};
    if (!stringField("action", cmd.action)) return {"bad field", "action must be a string"};
    if (cmd.action.empty()) return {"no action", "the body has no action (send, settags or close)"};
    // A JSON selector may come as an object; the handler reads it by its leading '{'.
    if (auto it = j.find("selector"); it != j.end() && it->is_object())
        cmd.selector = it->dump();
    else if (!stringField("selector", cmd.selector))
        return {"bad field", "selector must be a string (group=a&admin=1, id=a,b) or a JSON selector object"};
    std::string type, encoded;
    if (!stringField("type", type)) return {"bad field", "type must be a string"};
    if (!type.empty() && type != "text" && type != "binary")
        return {"bad type", "type must be text or binary, not '" + type + "'"};
    const bool hasText = j.contains("message") && !j["message"].is_null();
    const bool hasBase64 = j.contains("message_base64") && !j["message_base64"].is_null();
    if (hasText && hasBase64) return {"bad message", "give message or message_base64, not both"};
    if (!stringField("message", cmd.message)) return {"bad field", "message must be a string (message_base64 for bytes)"};
    if (!stringField("message_base64", encoded)) return {"bad field", "message_base64 must be a string"};
    if (hasBase64 && !base64Decode(encoded, cmd.message)) return {"bad base64", "message_base64 is not base64"};
    cmd.binary = type == "binary" || (hasBase64 && type.empty());
    if (auto it = j.find("tags"); it != j.end() && !it->is_null()) {
        if (!it->is_object()) return {"bad tags", "tags must be an object of strings: {\"k\":\"v\",\"gone\":\"\"}"};
        for (const auto &[k, v] : it->items()) {
            if (!v.is_string()) return {"bad tags", "the value of tag '" + k + "' must be a string (\"\" deletes it)"};
            if (!cmd.tags.empty()) cmd.tags += '&';
            appendFormEncoded(cmd.tags, k);
            cmd.tags += '=';
            appendFormEncoded(cmd.tags, v.get<std::string>());
        }
    }
    return {};
}

class AmqpCommandReader final : public CommandReader {
public:
    AmqpCommandReader(AmqpCommandOptions o, std::unique_ptr<CommandDedup> dedup)
        : o_(std::move(o)), where_(whereOf(o_.broker)), dedup_(std::move(dedup)) {
        stats_.transport = "amqp";
    }
    ~AmqpCommandReader() override { stop(); }

    std::string name() const override { return "amqp " + o_.queue; }

    bool start(BusHandler handler, std::string *error) noexcept override {
        std::lock_guard lock(lifecycle_);
        if (thread_.joinable()) return true;
        handler_ = std::move(handler);
        stopping_.store(false);
        finished_ = false;
        try {
            thread_ = std::thread([this] {
                run();
                std::lock_guard s(stopMu_);
                finished_ = true;
                stopWake_.notify_all();
            });
        } catch (const std::exception &e) {
            if (error) *error = std::string("cannot start the AMQP command reader's thread: ") + e.what();
            return false;
        }
        return true;
    }

    void stop() noexcept override {
        std::lock_guard lock(lifecycle_);
        if (!thread_.joinable()) return;
        {
            std::unique_lock s(stopMu_);
            stopping_.store(true);
            stopWake_.notify_all();
            // A command being handled finishes and is acknowledged; a broker that holds a call
            // longer than that is cut off.
            if (!stopWake_.wait_for(s, kStopGrace, [this] { return finished_; })) watchdog_.abort();
        }
        thread_.join();
    }

    CommandBusStats stats() const override {
        std::lock_guard lock(statsMu_);
        return stats_;
    }

private:
    template <class F> void count(F f) {
        std::lock_guard lock(statsMu_);
        f(stats_);
    }

    bool pause(Clock::duration d) {
        std::unique_lock lock(stopMu_);
        return !stopWake_.wait_for(lock, d, [this] { return stopping_.load(); });
    }

    void setUp(bool up, const std::string &why) {
        bool changed = false;
        count([&](CommandBusStats &s) {
            changed = s.connected != up;
            s.connected = up;
            if (!up) s.lastError = why;
            if (!up && changed) ++s.reconnects;
        });
        if (changed && o_.events.onStateChange) o_.events.onStateChange(up, why);
    }

    void run() {
        auto backoff = Clock::duration(kMinBackoff);
        while (!stopping_.load()) {
            if (!conn_) {
                if (!connect()) {
                    setUp(false, error_);
                    disconnect(false);
                    if (!pause(backoff)) break;
                    backoff = std::min<Clock::duration>(backoff * 2, kMaxBackoff);
                    continue;
                }
                backoff = kMinBackoff;
                setUp(true, "");
            }
            if (!step()) {
                setUp(false, error_);
                disconnect(false);
                if (!pause(kMinBackoff)) break;
            }
        }
        disconnect(true);
    }

    int fd() const { return conn_ ? amqp_get_sockfd(conn_) : -1; }

    std::string statusError(int status) const {
        switch (status) {
        case AMQP_STATUS_HEARTBEAT_TIMEOUT:
            return "no heartbeat from the broker at " + where_ + ": connection considered dead";
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

    std::string stuck(const std::string &what) const {
        return what + ": no progress with the broker at " + where_ + " for " +
               seconds(o_.broker.replyTimeout + kWatchdogGrace) + " (is it frozen, or the network down?)";
    }

    // After an RPC: false with error_ unless the reply is normal.
    bool replyOk(const std::string &what, bool timedOut) {
        if (timedOut) return failWith(stuck(what));
        amqp_rpc_reply_t r = amqp_get_rpc_reply(conn_);
        switch (r.reply_type) {
        case AMQP_RESPONSE_NORMAL:
            return true;
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            return failWith(what + ": the broker refused: " + closeReason(r.reply));
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            if (r.library_error == AMQP_STATUS_TIMEOUT)
                return failWith(what + ": no answer from the broker within " + seconds(o_.broker.replyTimeout));
            return failWith(what + ": " + statusError(r.library_error));
        default:
            return failWith(what + ": no reply");
        }
    }

    bool failWith(std::string why) {
        error_ = std::move(why);
        return false;
    }

    bool connect() {
        disconnect(false);
        std::string why;
        conn_ = amqp::openConnection(o_.broker, "wsgw commands " + o_.consumer, watchdog_, &why);
        if (!conn_) return failWith(why);
        auto rpcOk = [&](const std::string &what, auto &&call) {
            WatchdogGuard guard(watchdog_, fd(), Clock::now() + o_.broker.replyTimeout + kWatchdogGrace);
            call();
            return replyOk(what, guard.end());
        };
        return rpcOk("opening a channel", [&] { amqp_channel_open(conn_, kChannel); }) &&
               rpcOk("declaring queue '" + o_.queue + "' (durable)",
                     [&] {
                         amqp_queue_declare(conn_, kChannel, bytesOf(o_.queue), /*passive=*/0, /*durable=*/1,
                                            /*exclusive=*/0, /*auto_delete=*/0, amqp_empty_table);
                     }) &&
               rpcOk("setting the prefetch (basic.qos)",
                     [&] { amqp_basic_qos(conn_, kChannel, 0, o_.prefetch, /*global=*/0); }) &&
               rpcOk("consuming queue '" + o_.queue + "'", [&] {
                   amqp_basic_consume(conn_, kChannel, bytesOf(o_.queue), bytesOf(o_.consumer), /*no_local=*/0,
                                      /*no_ack=*/0, /*exclusive=*/0, amqp_empty_table);
               });
    }

    void disconnect(bool graceful) {
        held_.clear(); // unacknowledged: the broker delivers them again
        if (!conn_) return;
        if (graceful) {
            WatchdogGuard guard(watchdog_, fd(), Clock::now() + kCloseTimeout + kWatchdogGrace);
            timeval quick = toTimeval(kCloseTimeout);
            amqp_set_rpc_timeout(conn_, &quick);
            amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
        }
        amqp_destroy_connection(conn_);
        conn_ = nullptr;
    }

    // Handles the held deliveries whose time came, then waits for one delivery and handles it.
    // False (error_ set) when the connection broke.
    bool step() {
        auto now = Clock::now();
        auto next = now + o_.wait;
        for (std::size_t i = 0; i < held_.size() && !stopping_.load();) {
            if (held_[i].retryAt > now) {
                next = std::min(next, held_[i].retryAt);
                ++i;
                continue;
            }
            Held h = std::move(held_[i]);
            held_.erase(held_.begin() + static_cast<std::ptrdiff_t>(i));
            if (!handle(std::move(h), /*again=*/true)) return false;
        }
        if (stopping_.load()) return true;
        auto wait = std::max(std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()), 0ms);

        amqp_maybe_release_buffers(conn_);
        amqp_envelope_t env{};
        amqp_rpc_reply_t r;
        {
            WatchdogGuard guard(watchdog_, fd(), Clock::now() + wait + o_.broker.replyTimeout + kWatchdogGrace);
            timeval tv = toTimeval(wait);
            r = amqp_consume_message(conn_, &env, &tv, 0);
            if (guard.end()) {
                if (r.reply_type == AMQP_RESPONSE_NORMAL) amqp_destroy_envelope(&env);
                return failWith(stuck("reading deliveries"));
            }
        }
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
            if (r.library_error == AMQP_STATUS_TIMEOUT) return true;
            if (r.library_error == AMQP_STATUS_UNEXPECTED_STATE) return otherFrame();
            return failWith(statusError(r.library_error));
        }
        if (r.reply_type != AMQP_RESPONSE_NORMAL) return failWith("reading deliveries: unexpected reply");
        Held h;
        h.tag = env.delivery_tag;
        h.body = text(env.message.body);
        const amqp_basic_properties_t &p = env.message.properties;
        if (p._flags & AMQP_BASIC_REPLY_TO_FLAG) h.replyTo = text(p.reply_to);
        if (p._flags & AMQP_BASIC_CORRELATION_ID_FLAG) h.correlationId = text(p.correlation_id);
        if (p._flags & AMQP_BASIC_MESSAGE_ID_FLAG) h.messageId = text(p.message_id);
        amqp_destroy_envelope(&env);
        return handle(std::move(h), /*again=*/false);
    }

    // A frame that is not a delivery: the broker closing the channel or connection, cancelling
    // our consumer (the queue was deleted), or blocking us.
    bool otherFrame() {
        amqp_frame_t frame{};
        WatchdogGuard guard(watchdog_, fd(), Clock::now() + o_.broker.replyTimeout + kWatchdogGrace);
        timeval tv = toTimeval(o_.broker.replyTimeout);
        int rc = amqp_simple_wait_frame_noblock(conn_, &frame, &tv);
        if (guard.end()) return failWith(stuck("reading a frame"));
        if (rc != AMQP_STATUS_OK) return failWith(statusError(rc));
        if (frame.frame_type != AMQP_FRAME_METHOD) return true;
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
        case AMQP_BASIC_CANCEL_METHOD:
            return failWith("the broker cancelled our consumer of queue '" + o_.queue + "' (was it deleted?)");
        default:
            return true;
        }
    }

    void hold(Held h) {
        h.retryAt = Clock::now() + kLookAgain;
        count([](CommandBusStats &s) { ++s.retried; });
        held_.push_back(std::move(h));
    }

    // One delivery; false when the connection broke on the way (it comes again).
    bool handle(Held h, bool again) {
        if (!again) count([](CommandBusStats &s) { ++s.received; });
        BusCommand cmd;
        Malformed bad = decode(h.body, cmd, cmd.id);
        if (cmd.id.empty()) cmd.id = h.messageId;
        if (!bad.kind.empty()) return invalid(h, cmd.id, bad.kind, bad.detail);

        if (!cmd.id.empty()) {
            CommandDedup::Claim c = dedup_->claim(cmd.id);
            switch (c.state) {
            case CommandDedup::State::Fresh:
                break;
            case CommandDedup::State::Done: {
                count([](CommandBusStats &s) { ++s.duplicates; });
                json reply{{"command_id", cmd.id}, {"duplicate", true}};
                if (c.done == "error")
                    reply["error"] = "duplicate command_id: its first run failed";
                else
                    reply["count"] = std::strtoull(c.done.c_str(), nullptr, 10);
                return answer(h, reply) && ack(h.tag);
            }
            case CommandDedup::State::Unavailable:
                count([&](CommandBusStats &s) { s.lastError = "command_id records (" + dedup_->scope() + "): " + c.error; });
                hold(std::move(h));
                return true;
            case CommandDedup::State::Pending:
                hold(std::move(h));
                return true;
            }
        }

        BusResult result;
        try {
            result = handler_(cmd);
        } catch (...) {
            result.kind = BusResult::Kind::Failed;
            result.error = "internal error";
        }
        switch (result.kind) {
        case BusResult::Kind::Retry:
            if (!cmd.id.empty()) dedup_->release(cmd.id);
            hold(std::move(h));
            return true;
        case BusResult::Kind::Invalid:
            if (!cmd.id.empty()) dedup_->release(cmd.id);
            return invalid(h, cmd.id, result.malformedKind.empty() ? "invalid" : result.malformedKind, result.error);
        case BusResult::Kind::Applied:
        case BusResult::Kind::Failed:
            break;
        }
        const bool applied = result.kind == BusResult::Kind::Applied;
        count([&](CommandBusStats &s) { ++(applied ? s.applied : s.failed); });
        if (!cmd.id.empty()) dedup_->finish(cmd.id, applied ? std::to_string(result.count) : "error");
        json reply = json::object();
        if (!cmd.id.empty()) reply["command_id"] = cmd.id;
        if (applied) {
            reply["count"] = result.count;
            reply["missing_nodes"] = result.missing;
        } else {
            reply["error"] = result.error;
            if (!result.missing.empty()) reply["missing_nodes"] = result.missing;
        }
        return answer(h, reply) && ack(h.tag);
    }

    bool invalid(const Held &h, const std::string &id, const std::string &kind, const std::string &detail) {
        count([](CommandBusStats &s) { ++s.malformed; });
        bool first = false;
        {
            std::lock_guard lock(statsMu_);
            first = loggedKinds_.insert(kind).second;
        }
        if (first && o_.events.onMalformed)
            o_.events.onMalformed(kind, "a message of queue " + o_.queue + ": " + detail);
        json reply = json::object();
        if (!id.empty()) reply["command_id"] = id;
        reply["error"] = kind + ": " + detail;
        return answer(h, reply) && ack(h.tag);
    }

    // The reply to reply_to, if the message named one: false if the connection broke.
    bool answer(const Held &h, const json &reply) {
        if (h.replyTo.empty()) return true;
        if (h.replyTo.size() > kMaxShortString) return true; // no queue can have that name
        const std::string body = reply.dump(-1, ' ', false, json::error_handler_t::replace);
        amqp_basic_properties_t props{};
        props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
        props.content_type = amqp_cstring_bytes("application/json");
        props.delivery_mode = 1; // not persistent: an answer for a backend that is waiting now
        if (!h.correlationId.empty()) {
            props._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
            props.correlation_id = bytesOf(h.correlationId);
        }
        WatchdogGuard guard(watchdog_, fd(), Clock::now() + o_.broker.replyTimeout + kWatchdogGrace);
        int rc = amqp_basic_publish(conn_, kChannel, amqp_empty_bytes, bytesOf(h.replyTo), /*mandatory=*/0,
                                    /*immediate=*/0, &props, bytesOf(body));
        if (guard.end()) return failWith(stuck("publishing a reply"));
        if (rc != AMQP_STATUS_OK) return failWith("publishing a reply: " + statusError(rc));
        count([](CommandBusStats &s) { ++s.replies; });
        return true;
    }

    bool ack(std::uint64_t tag) {
        WatchdogGuard guard(watchdog_, fd(), Clock::now() + o_.broker.replyTimeout + kWatchdogGrace);
        int rc = amqp_basic_ack(conn_, kChannel, tag, /*multiple=*/0);
        if (guard.end()) return failWith(stuck("acknowledging"));
        if (rc != AMQP_STATUS_OK) return failWith("acknowledging: " + statusError(rc));
        return true;
    }

    AmqpCommandOptions o_;
    std::string where_;
    std::unique_ptr<CommandDedup> dedup_;
    BusHandler handler_;
    amqp_connection_state_t conn_ = nullptr;
    std::vector<Held> held_; // deliveries to look at again (pending elsewhere, busy, records away)
    std::string error_;

    std::mutex lifecycle_;
    std::thread thread_;
    std::atomic<bool> stopping_{false};
    std::mutex stopMu_;
    std::condition_variable stopWake_;
    bool finished_ = false; // run() returned (under stopMu_)

    mutable std::mutex statsMu_;
    CommandBusStats stats_;
    std::set<std::string> loggedKinds_;
    SocketWatchdog watchdog_; // declared last: destroyed first, after disconnect() is done with it
};

} // namespace

std::unique_ptr<CommandReader> makeAmqpCommandReader(AmqpCommandOptions options, std::string *error) {
    auto refuse = [&](std::string why) -> std::unique_ptr<CommandReader> {
        if (error) *error = std::move(why);
        return nullptr;
    };
    if (options.consumer.empty()) return refuse("the AMQP command reader needs a consumer name (the node's name)");
    if (options.queue.empty()) return refuse("the command queue's name is empty");
    if (options.queue.size() > kMaxShortString) return refuse("the command queue's name is longer than 255 bytes");
    if (options.consumer.size() > kMaxShortString) return refuse("the consumer name is longer than 255 bytes");
    if (options.broker.host.empty()) return refuse("no broker host");
    if (options.prefetch == 0) return refuse("prefetch must be at least 1");
    if (options.wait < 1ms) options.wait = 1ms;
    std::unique_ptr<CommandDedup> dedup;
    if (options.dedupRedis) {
        std::string prefix = options.dedupPrefix.empty() ? options.queue + ":cmd:" : options.dedupPrefix;
        std::string why;
        dedup = makeRedisCommandDedup(*options.dedupRedis, std::move(prefix), options.dedupWindow, options.inFlightTtl,
                                      &why);
        if (!dedup) return refuse("command_id records in Redis: " + why);
    } else {
        dedup = std::make_unique<LocalCommandDedup>(options.dedupWindow);
    }
    return std::make_unique<AmqpCommandReader>(std::move(options), std::move(dedup));
}

} // namespace wsgw
