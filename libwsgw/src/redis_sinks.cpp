// The Redis sinks: events as stream entries (XADD), and the connection-state mirror.
#include "redis_client.h"

#include <wsgw/sink.h>
#include <wsgw/template.h>

#include <atomic>
#include <chrono>
#include <optional>

namespace wsgw {

namespace {

using Reply = RedisClient::Reply;

class RedisStreamSink final : public EventSink {
public:
    RedisStreamSink(RedisStreamOptions options, Template stream)
        : options_(std::move(options)), stream_(std::move(stream)), client_(options_.redis),
          maxLen_(std::to_string(options_.maxLen)) {}

    std::string name() const override { return "redis"; }
    std::vector<std::string> tagsUsed() const override { return stream_.tagNames(); }
    bool connect() override { return client_.connect(); }
    void onFailure() override { client_.disconnect(); }
    std::string lastError() const override { return client_.error(); }
    std::uint64_t rejected() const override { return rejected_.load(std::memory_order_relaxed); }

    bool idle() override {
        Reply r;
        return client_.command({"PING"}, r);
    }

    std::size_t publish(const std::vector<EventPtr> &batch) override {
        if (!client_.connected() && !client_.connect()) return 0;
        // Every argument must stay alive until its command is appended; build each, append it.
        std::string streamName, tags, id;
        for (const EventPtr &e : batch) {
            streamName = stream_.isConstant() ? stream_.source() : stream_.render(*e);
            tags = encodeForm(e->tags);
            id = std::to_string(e->id);
            std::vector<std::string_view> args{"XADD", streamName};
            if (options_.maxLen > 0) {
                args.push_back("MAXLEN");
                args.push_back("~");
                args.push_back(maxLen_);
            }
            char connection[ConnectionId::kTextLength];
            e->connection.format(connection);
            args.insert(args.end(), {"*", "connection", std::string_view(connection, sizeof connection), "action",
                                     actionName(e->action), "tags", tags});
            if (e->action == EventAction::Message) {
                args.insert(args.end(), {"type", e->type == Opcode::Text ? "text" : "binary", "message", e->message});
            }
            args.insert(args.end(), {"event_id", id, "node", options_.node});
            client_.append(args);
        }
        // An entry is delivered once Redis answered it; a refused one (WRONGTYPE...) will never
        // succeed, so it counts as handled and is counted as rejected.
        std::size_t done = 0;
        for (; done < batch.size(); ++done) {
            Reply r;
            if (!client_.read(r)) break;
            if (r.kind == Reply::Kind::Error) rejected_.fetch_add(1, std::memory_order_relaxed);
        }
        return done;
    }

private:
    RedisStreamOptions options_;
    Template stream_;
    RedisClient client_;
    std::string maxLen_;
    std::atomic<std::uint64_t> rejected_{0};
};

class RedisMirrorSink final : public EventSink {
public:
    explicit RedisMirrorSink(RedisMirrorOptions options)
        : options_(std::move(options)), client_(options_.redis),
          nodeSet_("wsgw:node:" + options_.node + ":connections"), ttl_(std::to_string(options_.ttl.count())) {}

    std::string name() const override { return "redis-mirror"; }
    bool accepts(EventAction a) const override { return a != EventAction::Message; }
    void onFailure() override { client_.disconnect(); }
    std::string lastError() const override { return client_.error(); }
    std::uint64_t rejected() const override { return rejected_.load(std::memory_order_relaxed); }

    bool connect() override {
        if (!client_.connect()) return false;
        if (!cleaned_) {
            if (!removeLeftovers()) return false;
            cleaned_ = true;
        }
        return heartbeat();
    }

    bool idle() override {
        if (std::chrono::steady_clock::now() < nextHeartbeat_) return true;
        return heartbeat();
    }

    std::size_t publish(const std::vector<EventPtr> &batch) override {
        if (!client_.connected() && !connect()) return 0;
        // Commands per event, so replies can be matched back to their event.
        std::vector<std::size_t> commands;
        commands.reserve(batch.size());
        for (const EventPtr &e : batch) commands.push_back(appendFor(*e));
        std::size_t done = 0;
        for (; done < batch.size(); ++done) {
            bool refused = false;
            for (std::size_t i = 0; i < commands[done]; ++i) {
                Reply r;
                if (!client_.read(r)) return done;
                refused = refused || r.kind == Reply::Kind::Error;
            }
            if (refused) rejected_.fetch_add(1, std::memory_order_relaxed);
        }
        return done;
    }

private:
    // Appends the commands that mirror one event; returns how many.
    std::size_t appendFor(const Event &e) {
        char idText[ConnectionId::kTextLength];
        e.connection.format(idText);
        std::string_view id(idText, sizeof idText);
        std::string hash = "connection:" + std::string(id);
        std::string tagsHash = hash + ":tags";
        switch (e.action) {
        case EventAction::Open: {
            std::size_t n = 2;
            client_.append({"HSET", hash, "addr", e.remoteAddress, "node", options_.node, "endpoint", e.endpoint});
            if (!e.allTags.empty()) {
                std::vector<std::string_view> args{"HSET", tagsHash};
                for (const auto &[k, v] : e.allTags) args.insert(args.end(), {k, v});
                client_.append(args);
                ++n;
            }
            // The set may be new: give it its TTL at once, not at the next heartbeat.
            client_.append({"SADD", nodeSet_, id});
            client_.append({"EXPIRE", nodeSet_, ttl_});
            return n + 1;
        }
        case EventAction::TagsChanged: {
            std::vector<std::string_view> set{"HSET", tagsHash}, del{"HDEL", tagsHash};
            // The last change of a key wins, as in Registry::setTags.
            for (std::size_t i = 0; i < e.changes.size(); ++i) {
                bool later = false;
                for (std::size_t j = i + 1; j < e.changes.size() && !later; ++j) later = e.changes[j].first == e.changes[i].first;
                if (later) continue;
                const auto &[k, v] = e.changes[i];
                if (v.empty())
                    del.push_back(k);
                else
                    set.insert(set.end(), {k, v});
            }
            std::size_t n = 0;
            if (set.size() > 2) {
                client_.append(set);
                ++n;
            }
            if (del.size() > 2) {
                client_.append(del);
                ++n;
            }
            return n;
        }
        case EventAction::Close:
            client_.append({"DEL", hash, tagsHash});
            client_.append({"SREM", nodeSet_, id});
            return 2;
        case EventAction::Message:
            return 0;
        }
        return 0;
    }

    // The keys an earlier run of this node left behind: its connections are gone.
    bool removeLeftovers() {
        Reply members;
        if (!client_.command({"SMEMBERS", nodeSet_}, members)) return false;
        constexpr std::size_t kChunk = 256;
        for (std::size_t i = 0; i < members.elements.size(); i += kChunk) {
            std::vector<std::string> keys;
            for (std::size_t j = i; j < std::min(i + kChunk, members.elements.size()); ++j) {
                keys.push_back("connection:" + members.elements[j]);
                keys.push_back("connection:" + members.elements[j] + ":tags");
            }
            std::vector<std::string_view> args{"DEL"};
            args.insert(args.end(), keys.begin(), keys.end());
            Reply r;
            if (!client_.command(args, r)) return false;
        }
        Reply r;
        return client_.command({"DEL", nodeSet_}, r);
    }

    bool heartbeat() {
        Reply r;
        if (!client_.command({"EXPIRE", nodeSet_, ttl_}, r)) return false;
        nextHeartbeat_ = std::chrono::steady_clock::now() + options_.heartbeat;
        return true;
    }

    RedisMirrorOptions options_;
    RedisClient client_;
    std::string nodeSet_;
    std::string ttl_;
    bool cleaned_ = false;
    std::chrono::steady_clock::time_point nextHeartbeat_{};
    std::atomic<std::uint64_t> rejected_{0};
};

} // namespace

std::unique_ptr<EventSink> makeRedisStreamSink(RedisStreamOptions options, std::string *error) {
    std::string why;
    auto stream = Template::parse(options.streamName, &why);
    if (!stream) {
        if (error) *error = "invalid stream name '" + options.streamName + "': " + why;
        return nullptr;
    }
    return std::make_unique<RedisStreamSink>(std::move(options), std::move(*stream));
}

std::unique_ptr<EventSink> makeRedisMirrorSink(RedisMirrorOptions options, std::string *) {
    return std::make_unique<RedisMirrorSink>(std::move(options));
}

} // namespace wsgw
