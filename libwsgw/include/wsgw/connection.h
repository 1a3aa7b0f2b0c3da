#pragma once

#include <wsgw/connection_id.h>
#include <wsgw/export.h>
#include <wsgw/message.h>

#include <cstddef>
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

/// The longest close reason a close frame carries (RFC 6455, section 5.5: 125 bytes of payload,
/// 2 of them the code).
inline constexpr std::size_t kMaxCloseReasonBytes = 123;

/// The close reason a transport puts in its close frame: `reason` itself if it fits in
/// kMaxCloseReasonBytes, otherwise its longest prefix of at most that many bytes that does not
/// end inside a UTF-8 sequence (a continuation byte is never kept without its lead byte), so a
/// valid UTF-8 reason stays valid. Hub::close cuts every reason with it before it calls
/// Connection::close, so a transport only needs it for reasons of its own. Thread-safe.
WSGW_EXPORT std::string_view cutCloseReason(std::string_view reason) noexcept;

/// One client connection, as a transport implements it. libwsgw never touches sockets: a
/// transport (wsgwd's libwebsockets server, an in-memory simulation, your own server) subclasses
/// Connection and registers it with Shard::open.
///
/// Lifetime: a registered connection is called by the hub (send, close, ...) whenever a command
/// selects it, so it must live from Shard::open until Shard::closed has returned, even when the
/// transport has nothing to read or write for it (reads paused, queue empty). Two ways:
///  - Shard::open(std::shared_ptr<Connection>, ...): the shard holds a reference from open until
///    after closed, so a session kept alive by shared_ptrs (Boost.Asio/Beast, uWebSockets user
///    data) cannot be freed while registered. The shard drops its reference later on its own
///    thread (never inside closed(), which may be called from the connection's own methods).
///  - Shard::open(Connection &, ...): the shard borrows it; the transport owns it and keeps it
///    alive until Shard::closed (wsgwd keeps it in libwebsockets' per-session storage).
/// Destroying a connection that is still registered is a programming error; the library checks
/// it in every build and aborts with a message naming the connection, rather than leave the
/// shard a dangling reference.
///
/// Thread-bound: every call happens on the thread of the shard the connection lives on.
///
/// Exceptions: the methods should not throw. One that does anyway (a transport's bug) is caught
/// by the hub for that one connection: the command goes on with the other recipients, does not
/// count this one, and answers its caller exactly once (see Hub, Hub::connectionErrors()).
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

    /// Starts the closing handshake with `code` and `reason`. From the hub, `reason` is at most
    /// kMaxCloseReasonBytes long (Hub::close cuts it with cutCloseReason); a transport that closes
    /// with reasons of its own cuts them the same way. Messages already queued go out first. Idempotent: only the first call counts.
    /// The connection stays registered until the transport reports it gone (Shard::closed).
    virtual void close(std::uint16_t code, std::string_view reason) = 0;

    /// The peer's address as "ip:port" ("[v6]:port" for IPv6).
    virtual std::string remoteAddress() const = 0;

    /// The endpoint (URL path) the connection came in on.
    virtual std::string_view endpoint() const = 0;

private:
    friend class Registry;
    ConnectionId id_;
    const void *registeredIn_ = nullptr; // the Registry holding it; set and cleared by the Registry
};

} // namespace wsgw
