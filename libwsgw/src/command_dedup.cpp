#include "command_dedup.h"

namespace wsgw {

LocalCommandDedup::LocalCommandDedup(std::chrono::milliseconds window, std::size_t maxIds)
    : window_(window), maxIds_(maxIds == 0 ? 1 : maxIds) {}

void LocalCommandDedup::prune(Clock::time_point now) {
    while (!order_.empty() && (order_.front().first + window_ <= now || order_.size() > maxIds_)) {
        auto it = records_.find(order_.front().second);
        // A record finished again later has a later entry of its own: only the last one counts.
        if (it != records_.end() && !it->second.done.empty() && it->second.expires <= order_.front().first + window_)
            records_.erase(it);
        order_.pop_front();
    }
}

CommandDedup::Claim LocalCommandDedup::claim(const std::string &id) {
    const auto now = Clock::now();
    prune(now);
    Claim c;
    auto [it, fresh] = records_.try_emplace(id);
    if (fresh) return c; // pending: done stays empty
    if (it->second.done.empty()) {
        c.state = State::Pending;
        return c;
    }
    if (it->second.expires <= now) {
        it->second = Record{};
        return c;
    }
    c.state = State::Done;
    c.done = it->second.done;
    return c;
}

void LocalCommandDedup::finish(const std::string &id, const std::string &done) {
    const auto now = Clock::now();
    records_[id] = Record{done.empty() ? "error" : done, now + window_};
    order_.emplace_back(now, id);
    prune(now);
}

void LocalCommandDedup::release(const std::string &id) {
    auto it = records_.find(id);
    if (it != records_.end() && it->second.done.empty()) records_.erase(it);
}

} // namespace wsgw
