// The sinks every build has: the JSON-lines log and the null sink.
#include <wsgw/sink.h>

#include <cstdio>

namespace wsgw {

EventSink::~EventSink() = default;

namespace {

class LogSink final : public EventSink {
public:
    LogSink(std::FILE *out, std::string node) : out_(out), node_(std::move(node)) {}
    std::string name() const override { return "log"; }
    std::size_t publish(const std::vector<EventPtr> &batch) override {
        std::size_t written = 0;
        for (const EventPtr &e : batch) {
            std::string line = toJson(*e, node_);
            line.push_back('\n');
            if (std::fwrite(line.data(), 1, line.size(), out_) != line.size()) break;
            ++written;
        }
        if (std::fflush(out_) != 0) return 0;
        return written;
    }

private:
    std::FILE *out_;
    std::string node_;
};

class NullSink final : public EventSink {
public:
    std::string name() const override { return "null"; }
    std::size_t publish(const std::vector<EventPtr> &batch) override { return batch.size(); }
};

} // namespace

std::unique_ptr<EventSink> makeLogSink(std::FILE *out, std::string node) {
    return std::make_unique<LogSink>(out, std::move(node));
}

std::unique_ptr<EventSink> makeNullSink() { return std::make_unique<NullSink>(); }

} // namespace wsgw
