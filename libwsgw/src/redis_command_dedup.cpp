// Command id records in Redis for a command reader other than the Redis stream's own (which keeps
// them on its stream's server itself): see makeRedisCommandDedup in command_dedup.h.
#include "command_dedup.h"
#include "redis_client.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace wsgw {

namespace {

using namespace std::chrono_literals;
using Reply = RedisClient::Reply;
using Clock = std::chrono::steady_clock;

constexpr auto kMinBackoff = 100ms;
constexpr auto kMaxBackoff = 2000ms;

class RedisCommandDedup final : public CommandDedup {
public:
    RedisCommandDedup(const RedisEndpoint &redis, std::string prefix, std::chrono::milliseconds window,
                      std::chrono::milliseconds inFlightTtl)
        : client_(redis), prefix_(std::move(prefix)), windowMs_(std::to_string(window.count())),
          inFlightMs_(std::to_string(inFlightTtl.count())) {}

    Claim claim(const std::string &id) override {
        Claim c;
        if (!ready()) return unavailable(c);
        const std::string key = prefix_ + id;
        Reply r;
        if (!client_.command({"SET", key, "pending", "NX", "PX", inFlightMs_}, r)) return lost(c);
        if (r.kind == Reply::Kind::Error) {
            c.state = State::Unavailable;
            c.error = "SET " + key + ": " + r.text;
            return c;
        }
        if (r.kind != Reply::Kind::Nil) return c; // OK: ours now
        if (!client_.command({"GET", key}, r)) return lost(c);
        if (r.kind == Reply::Kind::String && r.text.rfind("done:", 0) == 0) {
            c.state = State::Done;
            c.done = r.text.substr(5);
        } else {
            c.state = State::Pending; // or expired just now: the next look claims it
        }
        return c;
    }

    void finish(const std::string &id, const std::string &done) override {
        unwritten_.emplace_back(prefix_ + id, "done:" + (done.empty() ? std::string("error") : done));
        if (client_.connected()) writeUnwritten();
    }

    void release(const std::string &id) override {
        Reply r;
        // If Redis is away, the pending mark expires by itself after inFlightTtl.
        if (client_.connected() && !client_.command({"DEL", prefix_ + id}, r)) client_.disconnect();
    }

    std::string scope() const override { return "Redis " + client_.where(); }

private:
    // Connected, with the records that could not be written before written now.
    bool ready() {
        if (!client_.connected()) {
            if (Clock::now() < nextTry_) return false;
            if (!client_.connect()) {
                nextTry_ = Clock::now() + backoff_;
                backoff_ = std::min<Clock::duration>(backoff_ * 2, kMaxBackoff);
                return false;
            }
            backoff_ = kMinBackoff;
        }
        return writeUnwritten();
    }

    bool writeUnwritten() {
        while (!unwritten_.empty()) {
            Reply r;
            const auto &[key, value] = unwritten_.front();
            if (!client_.command({"SET", key, value, "PX", windowMs_}, r)) return false;
            unwritten_.erase(unwritten_.begin());
        }
        return true;
    }

    Claim &unavailable(Claim &c) {
        c.state = State::Unavailable;
        c.error = client_.error().empty() ? "Redis " + client_.where() + " not reachable" : client_.error();
        return c;
    }
    Claim &lost(Claim &c) {
        client_.disconnect();
        nextTry_ = Clock::now() + backoff_;
        return unavailable(c);
    }

    RedisClient client_;
    std::string prefix_, windowMs_, inFlightMs_;
    // Done marks not written yet (Redis went away just after the command ran), oldest first.
    std::vector<std::pair<std::string, std::string>> unwritten_;
    Clock::time_point nextTry_{};
    Clock::duration backoff_ = kMinBackoff;
};

} // namespace

std::unique_ptr<CommandDedup> makeRedisCommandDedup(const RedisEndpoint &redis, std::string prefix,
                                                    std::chrono::milliseconds window,
                                                    std::chrono::milliseconds inFlightTtl, std::string *) {
    return std::make_unique<RedisCommandDedup>(redis, std::move(prefix), window, inFlightTtl);
}

} // namespace wsgw
