// The Redis stream sink: events as stream entries (XADD). (The connection mirror is
// redis_mirror.cpp.)
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
            if (!e->reason.empty()) args.insert(args.end(), {"reason", e->reason});
            if (!e->lostNode.empty()) args.insert(args.end(), {"lost_node", e->lostNode});
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

} // namespace wsgw
