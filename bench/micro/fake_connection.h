#pragma once

// A Connection that delivers nowhere: send() keeps the message (as a transport's queue would:
// one reference taken, the previous one dropped), counts, and returns Queued. It is what the
// micro-benchmarks register, so that what they time is the registry and the hub, not a
// transport.

#include <wsgw/connection.h>
#include <wsgw/message.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace wsgw::bench {

class FakeConnection final : public Connection {
public:
    FakeConnection() noexcept : Connection(ConnectionId::random()) {}

    SendStatus send(const MessagePtr &msg) override {
        held_ = msg;
        ++received_;
        return SendStatus::Queued;
    }
    void close(std::uint16_t, std::string_view) override {}
    std::string remoteAddress() const override { return "127.0.0.1:0"; }
    std::string_view endpoint() const override { return "/bench"; }

    // Thread-bound like every Connection: read it on the thread that delivers to it, or after
    // that thread has been joined.
    std::uint64_t received() const noexcept { return received_; }

private:
    MessagePtr held_;
    std::uint64_t received_ = 0;
};

} // namespace wsgw::bench
