#include <wsgw/outbound.h>

namespace wsgw {

SendStatus Outbound::push(const MessagePtr &msg) noexcept {
    if (closing_ || !msg) {
        ++stats_.dropped;
        return SendStatus::Closed;
    }
    const std::size_t size = msg->frame().size();
    if (bytes_ + size > options_.maxBytes && hasQueued()) {
        switch (options_.policy) {
        case SlowConsumerPolicy::DropNewest:
            ++stats_.dropped;
            return SendStatus::Dropped;
        case SlowConsumerPolicy::DropOldest:
            while (hasQueued() && bytes_ + size > options_.maxBytes) {
                popFront();
                ++stats_.dropped;
            }
            break;
        case SlowConsumerPolicy::Close:
            // A consumer this far behind would hold memory for everyone: cut it off.
            ++stats_.dropped; // this one
            clearQueued();
            stats_.slowConsumerClosed = true;
            close(close_code::kPolicyViolation, "slow consumer: outbound queue full");
            return SendStatus::Dropped;
        }
    }
    try {
        queue_.push_back(msg);
    } catch (...) {
        ++stats_.dropped;
        return SendStatus::Dropped;
    }
    bytes_ += size;
    return SendStatus::Queued;
}

bool Outbound::close(std::uint16_t code, std::string_view reason) noexcept {
    if (closing_) return false;
    closing_ = true;
    closeCode_ = code;
    try {
        if (!reason.empty()) closeReason_ = std::make_unique<std::string>(cutCloseReason(reason));
    } catch (...) {
        closeReason_.reset(); // out of memory: a close without a reason is still a close
    }
    return true;
}

const std::vector<MessagePtr> &Outbound::startWrite() noexcept {
    std::size_t batchBytes = 0;
    while (hasQueued()) {
        const std::size_t size = queue_[head_]->frame().size();
        if (!inFlight_.empty() && batchBytes + size > options_.maxWriteBytes) break;
        try {
            // Moved, not copied: the queue's slot is done with it (no reference count traffic).
            inFlight_.push_back(std::move(queue_[head_]));
        } catch (...) {
            break; // out of memory: what was taken goes (maybe nothing; the caller tries again later)
        }
        batchBytes += size;
        bytes_ -= size;
        advanceHead();
        // A large frame goes alone: a transport that copies frames into one buffer to coalesce
        // them would copy more than the write it saves.
        if (inFlight_.size() == 1 && size >= options_.maxWriteBytes / 2) break;
    }
    return inFlight_;
}

void Outbound::finishWrite() noexcept {
    for (const MessagePtr &m : inFlight_) {
        ++stats_.sentMessages;
        stats_.sentBytes += m->frame().size();
    }
    inFlight_.clear(); // keeps its capacity: the next batch needs no allocation
}

bool Outbound::takeCloseDue() noexcept {
    if (!closing_ || closeSent_ || hasQueued() || writing()) return false;
    closeSent_ = true;
    return true;
}

void Outbound::abort() noexcept {
    closing_ = true;
    closeSent_ = true;
    stats_.dropped += inFlight_.size();
    inFlight_.clear();
    clearQueued();
}

void Outbound::popFront() noexcept {
    bytes_ -= queue_[head_]->frame().size();
    queue_[head_] = nullptr;
    advanceHead();
}

void Outbound::advanceHead() noexcept {
    if (++head_ == queue_.size()) {
        queue_.clear();
        head_ = 0;
        if (queue_.capacity() > 64) std::vector<MessagePtr>().swap(queue_);
    }
}

void Outbound::clearQueued() noexcept {
    stats_.dropped += queuedMessages();
    std::vector<MessagePtr>().swap(queue_);
    head_ = 0;
    bytes_ = 0;
}

} // namespace wsgw
