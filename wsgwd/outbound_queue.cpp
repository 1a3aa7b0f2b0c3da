#include "outbound_queue.h"

namespace wsgw::daemon {

OutboundQueue::PushResult OutboundQueue::push(const MessagePtr &msg, std::size_t maxBytes, SlowConsumerPolicy policy) {
    PushResult r;
    const std::size_t size = msg->frame().size();
    if (bytes_ + size > maxBytes && bytes_ > 0) {
        switch (policy) {
        case SlowConsumerPolicy::DropNewest:
            r.dropped = 1;
            return r;
        case SlowConsumerPolicy::DropOldest:
            // Keep the newest.
            while (!empty() && bytes_ + size > maxBytes) {
                pop();
                ++r.dropped;
            }
            break;
        case SlowConsumerPolicy::Close:
            r.overLimit = true;
            return r;
        }
    }
    queue_.push_back(msg);
    bytes_ += size;
    r.queued = true;
    return r;
}

MessagePtr OutboundQueue::pop() noexcept {
    MessagePtr m = std::move(queue_[head_++]);
    bytes_ -= m->frame().size();
    if (head_ == queue_.size()) {
        queue_.clear();
        head_ = 0;
        if (queue_.capacity() > 64) std::vector<MessagePtr>().swap(queue_);
    }
    return m;
}

void OutboundQueue::clear() noexcept {
    std::vector<MessagePtr>().swap(queue_);
    head_ = 0;
    bytes_ = 0;
}

} // namespace wsgw::daemon
