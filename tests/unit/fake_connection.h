#pragma once

#include <wsgw/connection.h>

#include <cstdint>
#include <string>
#include <vector>

namespace wsgw::test {

/// An in-memory Connection: records what the hub asked of it. Thread-bound like any Connection.
class FakeConnection final : public Connection {
public:
    explicit FakeConnection(std::string endpoint = "/connect", ConnectionId id = ConnectionId::random())
        : Connection(id), endpoint_(std::move(endpoint)) {}

    SendStatus send(const MessagePtr &msg) override {
        if (closeCode != 0) return SendStatus::Closed;
        received.push_back(msg);
        return SendStatus::Queued;
    }
    void close(std::uint16_t code, std::string_view reason) override {
        if (closeCode != 0) return;
        closeCode = code;
        closeReason = std::string(reason);
    }
    std::string remoteAddress() const override { return "127.0.0.1:40000"; }
    std::string_view endpoint() const override { return endpoint_; }

    std::vector<MessagePtr> received;
    std::uint16_t closeCode = 0;
    std::string closeReason;

private:
    std::string endpoint_;
};

} // namespace wsgw::test
