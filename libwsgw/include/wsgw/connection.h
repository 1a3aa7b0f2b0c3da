#pragma once

#include <wsgw/connection_id.h>
#include <wsgw/export.h>
#include <wsgw/message.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace wsgw {

/// What Connection::send did with a message.
enum class SendStatus {
    Queued,  ///< accepted for delivery
    Dropped, ///< not accepted: the connection's outbound queue is full (the transport applies its
             ///< slow-consumer policy and counts it)
    Closed,  ///< not accepted: the connection is closing or closed
};

/// WebSocket close codes (RFC 6455, section 7.4.1) the gateway uses.
namespace close_code {
inline constexpr std::uint16_t kNormal = 1000;
inline constexpr std::uint16_t kGoingAway = 1001;
inline constexpr std::uint16_t kProtocolError = 1002;
inline constexpr std::uint16_t kInvalidPayload = 1007;
inline constexpr std::uint16_t kPolicyViolation = 1008;
inline constexpr std::uint16_t kMessageTooBig = 1009;
inline constexpr std::uint16_t kInternalError = 1011;
inline constexpr std::uint16_t kServiceRestart = 1012;
} // namespace close_code

/// One client connection, as a transport implements it. libwsgw never touches sockets: a
/// transport (wsgwd's libwebsockets server, an in-memory simulation, your own server) subclasses
/// Connection and gives the registry a reference to it for as long as it is registered.
///
/// Thread-bound: every call happens on the thread of the shard the connection lives on.
class WSGW_EXPORT Connection {
public:
    explicit Connection(ConnectionId id) noexcept : id_(id) {}
    virtual ~Connection();

    Connection(const Connection &) = delete;
    Connection &operator=(const Connection &) = delete;

    ConnectionId id() const noexcept { return id_; }

    /// Queues `msg` for delivery and returns at once; never blocks. The transport keeps `msg`
    /// referenced until the frame is written.
    virtual SendStatus send(const MessagePtr &msg) = 0;

    /// Starts the closing handshake with `code` and `reason` (at most 123 bytes; longer reasons
    /// are cut). Messages already queued go out first. Idempotent: only the first call counts.
    /// The connection stays registered until the transport reports it gone (Shard::closed).
    virtual void close(std::uint16_t code, std::string_view reason) = 0;

    /// The peer's address as "ip:port" ("[v6]:port" for IPv6).
    virtual std::string remoteAddress() const = 0;

    /// The endpoint (URL path) the connection came in on.
    virtual std::string_view endpoint() const = 0;

private:
    ConnectionId id_;
};

} // namespace wsgw
