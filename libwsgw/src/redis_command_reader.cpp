// Commands from a Redis stream through a consumer group: read, de-duplicated by command id,
// handled, answered, acknowledged; see RedisCommandOptions.
#include "redis_client.h"

#include <wsgw/command_bus.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

namespace wsgw {

namespace {

using Reply = RedisClient::Reply;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kMinBackoff = 100ms;
constexpr auto kMaxBackoff = 2000ms;
constexpr auto kClaimEvery = 1000ms; // how often idle entries of other consumers are looked for
const std::string kReplyMaxLen = "10000";

// One stream entry: its id and its fields (the last of a repeated field wins).
struct Entry {
    std::string id;
    std::map<std::string, std::string> fields;
    bool deleted = false; // still pending, but trimmed from the stream
};

// The entries of an XREADGROUP stream's or XAUTOCLAIM's list: [[id, [f, v, ...]], ...].
void entriesOf(const Reply &list, std::vector<Entry> &out) {
    for (const Reply &e : list.children) {
        if (e.kind != Reply::Kind::Array) continue;
        Entry entry;
        if (!e.children.empty()) {
            entry.id = e.children[0].text;
            const Reply &f = e.children[1];
            if (f.kind != Reply::Kind::Array) entry.deleted = true;
            for (std::size_t i = 0; i + 1 < f.elements.size(); i += 2) entry.fields[f.elements[i]] = f.elements[i + 1];
        } else if (e.elements.size() >= 1) {
            entry.id = e.elements[0]; // [id] with no fields array at all
            entry.deleted = e.elements.size() < 2;
        }
        if (!entry.id.empty()) out.push_back(std::move(entry));
    }
}

std::string field(const Entry &e, const char *name) {
    auto it = e.fields.find(name);
    return it == e.fields.end() ? std::string() : it->second;
}

class RedisCommandReader final : public CommandReader {
public:
    explicit RedisCommandReader(RedisCommandOptions o) : options_(std::move(o)), client_(endpoint(options_)) {
        blockMs_ = std::to_string(options_.block.count());
        claimMs_ = std::to_string(options_.claimIdle.count());
        windowMs_ = std::to_string(options_.dedupWindow.count());
        inFlightMs_ = std::to_string(options_.inFlightTtl.count());
        batch_ = std::to_string(options_.batch);
        // This reader's in-flight marks: its consumer name and a number of this process, so that
        // a mark left by this very reader (Redis lost between the SET and its answer) is known
        // as its own, while one of an earlier run of the node is not.
        std::random_device rd;
        pendingMark_ = "pending:" + options_.consumer + ":" + std::to_string((std::uint64_t(rd()) << 32) | rd());
        stats_.transport = "redis";
    }
    ~RedisCommandReader() override { stop(); }

    std::string name() const override { return "redis " + options_.stream; }

    bool start(BusHandler handler, std::string *error) noexcept override {
        std::lock_guard lock(lifecycle_);
        if (thread_.joinable()) return true;
        handler_ = std::move(handler);
        stopping_.store(false);
        try {
            thread_ = std::thread([this] { run(); });
        } catch (const std::exception &e) {
            if (error) *error = std::string("cannot start the Redis command reader's thread: ") + e.what();
            return false;
        }
        return true;
    }

    void stop() noexcept override {
        std::lock_guard lock(lifecycle_);
        {
            std::lock_guard s(stopMu_);
            stopping_.store(true);
        }
        stopWake_.notify_all();
        if (thread_.joinable()) thread_.join();
    }

    CommandBusStats stats() const override {
        std::lock_guard lock(statsMu_);
        return stats_;
    }

private:
    static RedisEndpoint endpoint(const RedisCommandOptions &o) {
        RedisEndpoint ep = o.redis;
        // A blocking read must come back before the connection counts as dead.
        ep.commandTimeout = std::max(ep.commandTimeout, o.block + 2000ms);
        return ep;
    }

    template <class F> void count(F f) {
        std::lock_guard lock(statsMu_);
        f(stats_);
    }

    // Waits `d` unless the reader stops first; false if it stops.
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
        if (changed && options_.events.onStateChange) options_.events.onStateChange(up, why);
    }

    void run() {
        auto backoff = kMinBackoff;
        while (!stopping_.load()) {
            if (!client_.connected()) {
                if (!client_.connect() || !ensureGroup()) {
                    setUp(false, client_.error());
                    client_.disconnect();
                    if (!pause(backoff)) break;
                    backoff = std::min(backoff * 2, kMaxBackoff);
                    continue;
                }
                if (!writeUnwrittenDone()) {
                    setUp(false, client_.error());
                    if (!pause(backoff)) break;
                    backoff = std::min(backoff * 2, kMaxBackoff);
                    continue;
                }
                backoff = kMinBackoff;
                setUp(true, "");
                // What this consumer held unacknowledged when it last stopped or lost Redis.
                if (!readOwnPending()) continue;
                nextClaim_ = Clock::now();
            }
            if (Clock::now() >= nextClaim_) {
                if (!claim()) continue;
                nextClaim_ = Clock::now() + std::min<Clock::duration>(kClaimEvery, options_.claimIdle);
            }
            readNew();
        }
        client_.disconnect();
    }

    bool ensureGroup() {
        Reply r;
        if (!client_.command({"XGROUP", "CREATE", options_.stream, options_.group, "$", "MKSTREAM"}, r)) return false;
        if (r.kind == Reply::Kind::Error && r.text.rfind("BUSYGROUP", 0) != 0) {
            client_.disconnect();
            return failWith("XGROUP CREATE " + options_.stream + " " + options_.group + " refused: " + r.text);
        }
        return true;
    }

    bool writeUnwrittenDone() {
        while (!unwrittenDone_.empty()) {
            Reply r;
            const auto &[key, value] = unwrittenDone_.back();
            if (!client_.command({"SET", key, value, "PX", windowMs_}, r)) return false;
            unwrittenDone_.pop_back();
        }
        return true;
    }

    bool failWith(const std::string &why) {
        count([&](CommandBusStats &s) { s.lastError = why; });
        return false;
    }

    // The server lost the group (a restart without persistence, the stream deleted): make it again.
    bool lostGroup(const Reply &r) {
        if (r.kind != Reply::Kind::Error || r.text.rfind("NOGROUP", 0) != 0) return false;
        if (!ensureGroup()) client_.disconnect();
        return true;
    }

    bool readOwnPending() {
        for (int round = 0; round < 1000 && !stopping_.load(); ++round) {
            Reply r;
            if (!client_.command({"XREADGROUP", "GROUP", options_.group, options_.consumer, "COUNT", batch_,
                                  "STREAMS", options_.stream, "0"},
                                 r))
                return lost();
            if (lostGroup(r)) return client_.connected();
            std::vector<Entry> entries;
            if (r.kind == Reply::Kind::Array)
                for (const Reply &s : r.children)
                    if (s.children.size() >= 2) entriesOf(s.children[1], entries);
            if (entries.empty()) return true;
            retriedThisRound_ = false;
            for (Entry &e : entries)
                if (!handle(e)) return client_.connected();
            // Entries left for a retry stay in this list: do not loop over them again now.
            if (retriedThisRound_) return true;
        }
        return true;
    }

    bool claim() {
        std::string cursor = "0-0";
        for (int round = 0; round < 100 && !stopping_.load(); ++round) {
            Reply r;
            if (!client_.command({"XAUTOCLAIM", options_.stream, options_.group, options_.consumer, claimMs_, cursor,
                                  "COUNT", batch_},
                                 r))
                return lost();
            if (lostGroup(r)) return client_.connected();
            if (r.kind != Reply::Kind::Array || r.children.size() < 2) return true;
            cursor = r.children[0].text;
            std::vector<Entry> entries;
            entriesOf(r.children[1], entries);
            for (Entry &e : entries) {
                count([](CommandBusStats &s) { ++s.claimed; });
                if (!handle(e)) return client_.connected();
            }
            if (cursor == "0-0" || cursor.empty()) return true;
        }
        return true;
    }

    void readNew() {
        Reply r;
        if (!client_.command({"XREADGROUP", "GROUP", options_.group, options_.consumer, "COUNT", batch_, "BLOCK",
                              blockMs_, "STREAMS", options_.stream, ">"},
                             r)) {
            lost();
            return;
        }
        if (lostGroup(r)) return;
        if (r.kind == Reply::Kind::Error) {
            failWith("XREADGROUP: " + r.text);
            pause(kMaxBackoff);
            return;
        }
        std::vector<Entry> entries;
        if (r.kind == Reply::Kind::Array)
            for (const Reply &s : r.children)
                if (s.children.size() >= 2) entriesOf(s.children[1], entries);
        for (Entry &e : entries)
            if (!handle(e)) return;
    }

    bool lost() {
        setUp(false, client_.error());
        client_.disconnect();
        return false;
    }

    // One command: false when Redis was lost on the way (it stays pending and comes again).
    bool handle(const Entry &e) {
        count([](CommandBusStats &s) { ++s.received; });
        if (e.deleted) return ack(e.id); // trimmed away: nothing left to run

        BusCommand cmd;
        std::string commandId = field(e, "command_id");
        cmd.id = commandId.empty() ? options_.stream + ":" + e.id : commandId;
        cmd.action = field(e, "action");
        cmd.selector = field(e, "selector");
        cmd.message = field(e, "message");
        cmd.tags = field(e, "tags");
        const std::string replyTo = field(e, "reply_to");
        const std::string type = field(e, "type");

        std::string malformed, detail;
        if (type == "binary")
            cmd.binary = true;
        else if (!type.empty() && type != "text") {
            malformed = "bad type";
            detail = "type must be text or binary, not '" + type + "'";
        }
        if (malformed.empty() && cmd.action.empty()) {
            malformed = "no action";
            detail = "the entry has no action field (send, settags or close)";
        }
        if (!malformed.empty()) return invalid(e, cmd.id, replyTo, malformed, detail);

        // command_id: run once within the window, whoever reads it.
        const std::string key = options_.stream + ":cmd:" + cmd.id;
        Reply r;
        if (!client_.command({"SET", key, pendingMark_, "NX", "PX", inFlightMs_}, r)) return lost();
        if (r.kind == Reply::Kind::Nil) {
            if (!client_.command({"GET", key}, r)) return lost();
            // Our own mark: set just before Redis went away, and the command never ran here
            // (commands run one at a time, and a run's done mark is written before anything is
            // read again). Take it over instead of waiting for it to expire.
            if (r.kind == Reply::Kind::String && r.text == pendingMark_)
                return runMarked(e, cmd, key, replyTo);
            if (r.kind == Reply::Kind::String && r.text.rfind("done:", 0) == 0) {
                count([](CommandBusStats &s) { ++s.duplicates; });
                std::vector<std::string> fields{"command_id", cmd.id, "duplicate", "1"};
                std::string done = r.text.substr(5);
                if (done == "error")
                    fields.insert(fields.end(), {"error", "duplicate command_id: its first run failed"});
                else
                    fields.insert(fields.end(), {"count", done});
                if (!replyTo.empty() && !reply(replyTo, fields)) return false;
                return ack(e.id);
            }
            // Running elsewhere (or a run that died, whose mark expires within claimIdle): later.
            count([](CommandBusStats &s) { ++s.retried; });
            retriedThisRound_ = true;
            return true;
        }
        if (r.kind == Reply::Kind::Error) {
            failWith("SET " + key + ": " + r.text);
            retriedThisRound_ = true;
            return true;
        }
        return runMarked(e, cmd, key, replyTo);
    }

    // Runs a command whose in-flight mark `key` this reader holds, then marks it done, answers
    // and acknowledges it.
    bool runMarked(const Entry &e, const BusCommand &cmd, const std::string &key, const std::string &replyTo) {
        Reply r;
        BusResult result;
        try {
            result = handler_(cmd);
        } catch (...) {
            result.kind = BusResult::Kind::Failed;
            result.error = "internal error";
        }
        switch (result.kind) {
        case BusResult::Kind::Retry:
            count([](CommandBusStats &s) { ++s.retried; });
            retriedThisRound_ = true;
            if (!client_.command({"DEL", key}, r)) return lost();
            return true;
        case BusResult::Kind::Invalid:
            if (!client_.command({"DEL", key}, r)) return lost();
            return invalid(e, cmd.id, replyTo, result.malformedKind.empty() ? "invalid" : result.malformedKind,
                           result.error);
        case BusResult::Kind::Applied:
        case BusResult::Kind::Failed:
            break;
        }
        const bool applied = result.kind == BusResult::Kind::Applied;
        count([&](CommandBusStats &s) { ++(applied ? s.applied : s.failed); });
        const std::string done = applied ? "done:" + std::to_string(result.count) : "done:error";
        // One round trip: the done mark, the reply, the acknowledgement, in that order.
        client_.append({"SET", key, done, "PX", windowMs_});
        std::vector<std::string> fields;
        if (!replyTo.empty()) {
            fields = {"command_id", cmd.id};
            if (applied) {
                fields.insert(fields.end(), {"count", std::to_string(result.count)});
            } else {
                fields.insert(fields.end(), {"error", result.error});
            }
            if (!result.missing.empty()) {
                std::string names;
                for (const std::string &n : result.missing) names += (names.empty() ? "" : ",") + n;
                fields.insert(fields.end(), {"missing_nodes", names});
            }
            client_.append(replyArgs(replyTo, fields));
        }
        client_.append({"XACK", options_.stream, options_.group, e.id});
        if (!client_.read(r)) {
            unwrittenDone_.emplace_back(key, done);
            return lost();
        }
        if (!replyTo.empty()) {
            if (!client_.read(r)) return lost();
            replied(replyTo, r);
        }
        if (!client_.read(r)) return lost();
        return true;
    }

    bool invalid(const Entry &e, const std::string &id, const std::string &replyTo, const std::string &kind,
                 const std::string &detail) {
        count([](CommandBusStats &s) { ++s.malformed; });
        bool first = false;
        {
            std::lock_guard lock(statsMu_);
            first = loggedKinds_.insert(kind).second;
        }
        if (first && options_.events.onMalformed)
            options_.events.onMalformed(kind, "entry " + e.id + " of " + options_.stream + ": " + detail);
        if (!replyTo.empty() && !reply(replyTo, {"command_id", id, "error", kind + ": " + detail})) return false;
        return ack(e.id);
    }

    // XADD of a reply: its arguments view `stream` and `fields`, which must outlive them.
    static std::vector<std::string_view> replyArgs(const std::string &stream, const std::vector<std::string> &fields) {
        std::vector<std::string_view> args{"XADD", stream, "MAXLEN", "~", kReplyMaxLen, "*"};
        for (const std::string &f : fields) args.push_back(f);
        return args;
    }

    void replied(const std::string &stream, const Reply &r) {
        if (r.kind == Reply::Kind::Error)
            failWith("XADD " + stream + " (reply_to): " + r.text);
        else
            count([](CommandBusStats &s) { ++s.replies; });
    }

    bool reply(const std::string &stream, const std::vector<std::string> &fields) {
        Reply r;
        if (!client_.command(replyArgs(stream, fields), r)) return lost();
        replied(stream, r);
        return true;
    }

    bool ack(const std::string &id) {
        Reply r;
        if (!client_.command({"XACK", options_.stream, options_.group, id}, r)) return lost();
        return true;
    }

    RedisCommandOptions options_;
    RedisClient client_;
    std::string blockMs_, claimMs_, windowMs_, inFlightMs_, batch_;
    std::string pendingMark_; // "pending:<consumer>:<random>", this reader's in-flight marks
    // Done marks that could not be written (Redis went away just after the command ran): written
    // first thing after reconnecting, before any entry is read again, so the entry that comes
    // again is acknowledged as a duplicate instead of being run twice.
    std::vector<std::pair<std::string, std::string>> unwrittenDone_;
    BusHandler handler_;
    Clock::time_point nextClaim_{};
    bool retriedThisRound_ = false;

    std::mutex lifecycle_;
    std::thread thread_;
    std::atomic<bool> stopping_{false};
    std::mutex stopMu_;
    std::condition_variable stopWake_;

    mutable std::mutex statsMu_;
    CommandBusStats stats_;
    std::set<std::string> loggedKinds_;
};

} // namespace

std::unique_ptr<CommandReader> makeRedisCommandReader(RedisCommandOptions options, std::string *error) {
    auto refuse = [&](const char *why) -> std::unique_ptr<CommandReader> {
        if (error) *error = why;
        return nullptr;
    };
    if (options.consumer.empty()) return refuse("the Redis command reader needs a consumer name (the node's name)");
    if (options.stream.empty()) return refuse("the command stream's name is empty");
    if (options.group.empty()) return refuse("the command stream's consumer group name is empty");
    if (options.block < 1ms) options.block = 1ms;
    if (options.claimIdle < 100ms) return refuse("claim_idle_ms must be at least 100");
    if (options.batch == 0) options.batch = 1;
    return std::make_unique<RedisCommandReader>(std::move(options));
}

} // namespace wsgw
