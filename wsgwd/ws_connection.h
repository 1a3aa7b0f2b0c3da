#pragma once

#include "ws_server.h"

#include <wsgw/connection.h>
#include <wsgw/outbound.h>

#include <libwebsockets.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>

namespace wsgw::daemon {

struct ShardState;

/// One client connection over libwebsockets: its outbound queue with the slow-consumer policy
/// and coalesced writes, the inbound token bucket and message reassembly, pings, and the close
/// state. It lives in lws' per-session storage (SessionStorage) from ESTABLISHED to CLOSED.
///
/// Thread-bound to its shard's thread.
class WsConnection final : public Connection {
public:
    /// `id`: the connection's id (the connect authorizer may give one); none: a random one.
    WsConnection(ShardState &shard, lws *wsi, std::size_t endpointIndex, bool compressed,
                 std::optional<ConnectionId> id = std::nullopt);

    const WsEndpoint &ep() const;
    std::size_t endpointIndex() const { return endpoint_; }

    SendStatus send(const MessagePtr &msg) override;
    void close(std::uint16_t code, std::string_view reason) override;
    std::string remoteAddress() const override;
    std::string_view endpoint() const override;

    /// After a drain: writes what the drain queued (see send()); if lws still holds part of an
    /// earlier write, waits for WRITEABLE instead. A failed write closes the connection.
    void flushPending();

    /// LWS_CALLBACK_SERVER_WRITEABLE. Returns -1 to have lws close the connection.
    int onWriteable();
    /// LWS_CALLBACK_RECEIVE: a piece of a message. Returns -1 to close (after lws_close_reason).
    int onReceive(const void *in, std::size_t len);
    /// LWS_CALLBACK_WS_PEER_INITIATED_CLOSE: the client's close frame (`in`, `len`: code and
    /// reason). Returns 0 to let lws echo it, or -1 after answering a malformed one itself
    /// (close_frame.h): lws then closes TCP.
    int onPeerClose(const void *in, std::size_t len);
    /// LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL: lws took a close we asked for; it writes the close
    /// frame and waits for the client's.
    /// When lws fails the connection itself (a protocol error), schedules the cut
    /// (scheduleFailCut).
    void closeHandedOver();
    /// Has lws drop the connection now (scheduleFailCut's timer).
    void cutNow() { lws_set_timeout(wsi_, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC); }

    /// Activity: moves the connection to the tail of its shard's idle list.
    void touch();
    void linkIdle();
    void unlinkIdle();
    /// Half the idle timeout passed in silence: a ping goes out with the next write.
    void schedulePing();
    bool isClosing() const { return closing_; }

    /// For the inflate stall watchdog: whether a message is still in progress; drops the watch
    /// when it is not.
    bool messageInProgress();
    /// The inflate stall (lws_workarounds.h): writes the close frame itself and cuts the
    /// connection a second later.
    void closeStalled();
    /// Closes without a closing handshake, for a client that has shown no sign of life for the
    /// whole idle timeout: writes the close frame and drops the connection at once, rather than
    /// wait for a close frame it will not send.
    void cut(std::uint16_t code, std::string_view reason);

    /// Stops reading from this client until resumeReading(): its messages wait in the kernel and
    /// then in the client, instead of overflowing the event backlog.
    void pauseReading();
    void resumeReading();

    /// Whether the kernel received bytes for this connection since the last call: traffic lws
    /// does not report to us (a client's pings) still proves the client alive.
    bool receivedSinceLastCheck();

    // Intrusive idle list links and state, owned by the shard's sweep.
    WsConnection *prev = nullptr;
    WsConnection *next = nullptr;
    std::int64_t lastActivityMs = 0;
    bool pingDue = false;
    bool pinged = false;

private:
    void requestWrite();
    // Closes at once for a protocol violation (oversize, invalid UTF-8); returns -1 for RECEIVE.
    int closeNow(std::uint16_t code, const std::string &reason);
    // closeNow with 1007 for a text message that cannot be UTF-8; counted.
    int invalidUtf8();
    // The inbound token bucket: refilled at limit.perSecond up to limit.burst; false when empty.
    bool takeToken(const RateLimit &limit);
    // Uncompressed: the messages' prebuilt frames go out as they are, several per write.
    int writeRaw();
    // permessage-deflate: lws frames and compresses; one message per WRITEABLE.
    int writeCompressed();
    void setClose(std::uint16_t code, std::string_view reason);
    void lwsCloseReason(std::uint16_t code);
    std::string_view closeReason() const { return closeReason_ ? std::string_view(*closeReason_) : std::string_view(); }

    ShardState &shard_;
    lws *wsi_;
    std::uint32_t endpoint_;
    // Bytes of rx_ checked as whole UTF-8 characters (text); messages are at most 1 GiB
    // (max_message_size_kb), and 32 bits here keep the connection a size class smaller.
    std::uint32_t rxUtf8Whole_ = 0;
    bool compressed_;
    bool closing_ = false;
    bool writeRequested_ = false;
    bool rxActive_ = false;
    bool rxBinary_ = false;
    bool rxDiscard_ = false;       // closing for a protocol violation: ignore further input
    bool closeHandedOver_ = false; // lws runs the closing handshake now (WS_SERVER_DROP_PROTOCOL came)
    bool stallHandled_ = false;    // closeStalled() wrote the close frame itself
    bool rxPaused_ = false;        // reading stopped for event backpressure
    bool watched_ = false;         // in the shard's partialCompressed list
    bool pendingFlush_ = false;    // in the shard's toFlush list
    std::uint16_t closeCode_ = 0;
    // The close reason, allocated by the first close: an open connection pays a pointer.
    std::unique_ptr<std::string> closeReason_;
    Outbound out_;           // queue, slow-consumer policy, coalescing; the write in flight
    MessagePtr inflightCopy_; // a compressed write's copy with room for lws, until the next WRITEABLE
    std::string rx_;
    std::uint64_t rxBytesSeen_ = 0;
    double tokens_ = 0;           // rate limit bucket
    std::int64_t tokensAtMs_ = 0; // its last refill; 0 before the first message
};

/// lws' per-session storage for every protocol of the vhost: the connection, once established.
struct SessionStorage {
    bool compressed;
    int deflateWindow; // server_max_window_bits the client offered (0: none); see limitDeflateWindow
    bool live;
    alignas(WsConnection) unsigned char conn[sizeof(WsConnection)];

    WsConnection *get() { return live ? std::launder(reinterpret_cast<WsConnection *>(conn)) : nullptr; }
};

} // namespace wsgw::daemon
