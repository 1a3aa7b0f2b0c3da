#pragma once

#include <wsgw/message.h>

#include <cstddef>
#include <vector>

namespace wsgw::daemon {

/// What to do when a client falls so far behind that its queue would pass its byte bound.
enum class SlowConsumerPolicy { Close, DropNewest, DropOldest };

/// A connection's outbound messages: a FIFO with a byte bound and the slow-consumer policy.
/// The message being written is no longer in the queue, so the policy never touches it.
///
/// Thread-compatible (a connection's shard thread owns it).
class OutboundQueue {
public:
    /// What push() did.
    struct PushResult {
        bool queued = false;     ///< the message is in the queue
        bool overLimit = false;  ///< Close policy: the bound was passed; the caller closes (queue untouched)
        std::size_t dropped = 0; ///< messages discarded (the new one, or old ones)
    };

    /// Queues `msg` unless that would take the queue over `maxBytes` (a queue that is empty takes
    /// any one message): then `policy` decides.
    PushResult push(const MessagePtr &msg, std::size_t maxBytes, SlowConsumerPolicy policy);

    std::size_t size() const noexcept { return queue_.size() - head_; }
    bool empty() const noexcept { return size() == 0; }
    std::size_t bytes() const noexcept { return bytes_; }
    /// Precondition: !empty().
    const MessagePtr &front() const noexcept { return queue_[head_]; }
    /// Precondition: !empty().
    MessagePtr pop() noexcept;
    /// Empties the queue and gives its memory back.
    void clear() noexcept;

private:
    std::vector<MessagePtr> queue_;
    std::size_t head_ = 0;
    std::size_t bytes_ = 0;
};

} // namespace wsgw::daemon
