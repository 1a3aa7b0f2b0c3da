#pragma once

#include <wsgw/connection.h>
#include <wsgw/export.h>
#include <wsgw/message.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace wsgw {

/// What to do when a client falls so far behind that its queue would pass its byte bound.
enum class SlowConsumerPolicy {
    Close,      ///< close it (1008 "slow consumer: outbound queue full"), dropping what it had queued
    DropNewest, ///< keep the queue, drop the new message
    DropOldest, ///< drop the oldest queued messages (never one being written) to make room
};

/// A connection's outbound bounds.
struct OutboundOptions {
    /// Frame bytes queued and not yet handed to a write before the policy applies. An empty
    /// queue takes any one message, however large.
    std::size_t maxBytes = 1u << 20;
    SlowConsumerPolicy policy = SlowConsumerPolicy::Close;
    /// How many frame bytes startWrite() gathers into one write at most (coalescing); it always
    /// takes at least one message.
    std::size_t maxWriteBytes = 64u << 10;
};

/// One connection's counters since it was made. A transport sums them for its metrics.
struct OutboundStats {
    std::uint64_t sentMessages = 0; ///< messages whose write completed (finishWrite)
    std::uint64_t sentBytes = 0;    ///< and their frame bytes
    std::uint64_t dropped = 0;      ///< messages not delivered: the policy, a close, abort()
    bool slowConsumerClosed = false; ///< the Close policy closed it
};

/// The outbound half of a WebSocket connection, without any socket: the per-connection queue
/// with its byte bound and slow-consumer policy, coalesced writes, and "close once the queue has
/// drained". A transport's Connection holds one and calls it from send() and close(), and from
/// its writer:
///
/// ```
/// SendStatus send(const MessagePtr &m) override { auto s = out_.push(m); kick(); return s; }
/// void close(std::uint16_t c, std::string_view r) override { out_.close(c, r); kick(); }
/// void kick() {                          // also after each completed write
///     if (out_.writing()) return;
///     if (out_.hasQueued()) { auto &batch = out_.startWrite(); /* write every m->frame() */ }
///     else if (out_.takeCloseDue()) { /* write a close frame: out_.closeCode(), out_.closeReason() */ }
/// }
/// void onWriteDone() { out_.finishWrite(); kick(); }
/// ```
///
/// The frames are complete WebSocket frames (Message::frame()), to be written as they are; a
/// transport whose library frames messages itself writes Message::payload() with the opcode.
/// The in-flight batch stays referenced until finishWrite(), so an asynchronous write may use
/// the buffers directly. queuedBytes() after finishWrite() is the "drained" signal a server
/// uses to resume a producer (uWebSockets' drain callback).
///
/// Thread-compatible: the connection's shard thread owns it.
class WSGW_EXPORT Outbound {
public:
    explicit Outbound(OutboundOptions options = {}) noexcept : options_(options) {}

    Outbound(const Outbound &) = delete;
    Outbound &operator=(const Outbound &) = delete;

    const OutboundOptions &options() const noexcept { return options_; }

    /// Connection::send's work and answer: Closed once closing; otherwise queues `msg`, unless
    /// that would take the queue over options().maxBytes, when the policy decides: DropNewest
    /// answers Dropped; DropOldest drops old queued messages and answers Queued; Close empties
    /// the queue, begins the close (1008) and answers Dropped. Out of memory: Dropped.
    SendStatus push(const MessagePtr &msg) noexcept;

    /// Connection::close's work: the close frame goes after everything queued and in flight.
    /// Only the first call counts (returns true); the reason is cut with cutCloseReason.
    bool close(std::uint16_t code, std::string_view reason) noexcept;

    /// Moves the next messages, up to options().maxWriteBytes of frames and at least one, from
    /// the queue into the in-flight batch and returns it. Preconditions: hasQueued(), !writing().
    const std::vector<MessagePtr> &startWrite() noexcept;
    /// The in-flight batch has been written: counts it as sent and lets it go.
    void finishWrite() noexcept;
    /// The in-flight batch (empty when not writing).
    const std::vector<MessagePtr> &inFlight() const noexcept { return inFlight_; }

    bool writing() const noexcept { return !inFlight_.empty(); }
    bool hasQueued() const noexcept { return head_ < queue_.size(); }
    std::size_t queuedMessages() const noexcept { return queue_.size() - head_; }
    /// Frame bytes queued, not counting the batch in flight.
    std::size_t queuedBytes() const noexcept { return bytes_; }

    bool closing() const noexcept { return closing_; }
    /// True once, when the close frame is due: closing, nothing queued or in flight.
    bool takeCloseDue() noexcept;
    std::uint16_t closeCode() const noexcept { return closeCode_; }
    std::string_view closeReason() const noexcept {
        return closeReason_ ? std::string_view(*closeReason_) : std::string_view();
    }

    /// Drops what is queued (counted), keeping the batch in flight, whose write may still be
    /// reading it; for a transport that cuts a connection at once.
    void clearQueued() noexcept;
    /// The connection is gone or failed: drops everything (counted) and refuses further sends.
    void abort() noexcept;

    const OutboundStats &stats() const noexcept { return stats_; }

private:
    void popFront() noexcept;
    void advanceHead() noexcept; // past a slot already emptied

    OutboundOptions options_;
    std::vector<MessagePtr> queue_;
    std::size_t head_ = 0;
    std::size_t bytes_ = 0;
    std::vector<MessagePtr> inFlight_;
    bool closing_ = false;
    bool closeSent_ = false;
    std::uint16_t closeCode_ = 0;
    // Allocated by close(): an open connection, which is almost every one, pays a pointer.
    std::unique_ptr<std::string> closeReason_;
    OutboundStats stats_;
};

} // namespace wsgw
