#pragma once

// Which events of one published batch the broker has confirmed, from its basic.ack and
// basic.nack (publisher confirms). Part of the AMQP sink (amqp_sink.cpp); header-only and free of
// rabbitmq-c types, so that a unit test can drive it.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace wsgw::amqp {

/// The confirms of one batch of events, by delivery tag: the k-th message sent on the channel
/// since `firstTag` has tag firstTag + k. Thread-compatible.
class BatchConfirms {
public:
    enum class State : std::uint8_t { Pending, Confirmed, Refused };

    /// A batch of `n` events whose first message sent will have delivery tag `firstTag`.
    BatchConfirms(std::size_t n, std::uint64_t firstTag) : state_(n, State::Pending), firstTag_(firstTag) {
        sent_.reserve(n);
    }

    /// Event `index` of the batch went out as the next message (next delivery tag).
    void sent(std::size_t index) {
        sent_.push_back(index);
        ++outstanding_;
    }
    /// Event `index` needs no confirm (refused for good before sending): it counts as delivered.
    void settledHere(std::size_t index) { state_[index] = State::Confirmed; }

    /// basic.ack (refused: false) or basic.nack (refused: true) for `tag`; `multiple` covers every
    /// tag up to it. A tag outside this batch is ignored: the late confirm of an earlier batch
    /// that the broker blocked (its events are published again in this one).
    void settle(std::uint64_t tag, bool multiple, bool refused) {
        if (tag < firstTag_ || tag - firstTag_ >= sent_.size()) return;
        const std::size_t k = static_cast<std::size_t>(tag - firstTag_);
        const State result = refused ? State::Refused : State::Confirmed;
        for (std::size_t j = multiple ? low_ : k; j <= k; ++j) {
            if (state_[sent_[j]] != State::Pending) continue;
            state_[sent_[j]] = result;
            --outstanding_;
            if (refused) ++nacked_;
        }
        while (low_ < sent_.size() && state_[sent_[low_]] != State::Pending) ++low_;
    }

    /// Messages sent and not yet acked or nacked.
    std::size_t outstanding() const { return outstanding_; }
    /// Messages nacked so far.
    std::size_t nacked() const { return nacked_; }
    /// How many events from the start of the batch are confirmed (the sink's publish() result).
    std::size_t leading() const {
        std::size_t n = 0;
        while (n < state_.size() && state_[n] == State::Confirmed) ++n;
        return n;
    }

private:
    std::vector<State> state_;       // per event of the batch
    std::vector<std::size_t> sent_;  // batch index of the k-th message sent
    const std::uint64_t firstTag_;
    std::size_t outstanding_ = 0;
    std::size_t low_ = 0; // sent_[] below this are settled
    std::size_t nacked_ = 0;
};

} // namespace wsgw::amqp
