// The Redis stream sink: events as stream entries (XADD). (The connection mirror is
// redis_mirror.cpp.)
#include "form_encode.h"
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
        // The whole batch in one buffer, in the protocol's form: no allocation per entry once
        // the buffers have grown to a batch's size.
        resp_.clear();
        for (const EventPtr &e : batch) {
            if (!stream_.isConstant()) streamName_ = stream_.render(*e);
            tags_.clear();
            appendForm(tags_, e->tags);
            const bool message = e->action == EventAction::Message;
            resp_.command(2 + (options_.maxLen > 0 ? 3 : 0) + 7 + (message ? 4 : 0) + 4 + (e->reason.empty() ? 0 : 2) +
                          (e->lostNode.empty() ? 0 : 2));
            resp_.arg("XADD");
            resp_.arg(stream_.isConstant() ? std::string_view(stream_.source()) : std::string_view(streamName_));
            if (options_.maxLen > 0) {
                resp_.arg("MAXLEN");
                resp_.arg("~");
                resp_.arg(maxLen_);
            }
            char connection[ConnectionId::kTextLength];
            e->connection.format(connection);
            resp_.arg("*");
            resp_.arg("connection");
            resp_.arg(std::string_view(connection, sizeof connection));
            resp_.arg("action");
            resp_.arg(actionName(e->action));
            resp_.arg("tags");
            resp_.arg(tags_);
            if (message) {
                resp_.arg("type");
                resp_.arg(e->type == Opcode::Text ? "text" : "binary");
                resp_.arg("message");
                resp_.arg(e->message);
            }
            resp_.arg("event_id");
            resp_.arg(static_cast<std::uint64_t>(e->id));
            resp_.arg("node");
            resp_.arg(options_.node);
            if (!e->reason.empty()) {
                resp_.arg("reason");
                resp_.arg(e->reason);
            }
            if (!e->lostNode.empty()) {
                resp_.arg("lost_node");
                resp_.arg(e->lostNode);
            }
        }
        client_.appendFormatted(resp_.data());
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
    RespBuilder resp_;        // the batch being formatted
    std::string streamName_;  // a templated stream name, rendered per entry
    std::string tags_;        // an entry's tags, form-encoded
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
