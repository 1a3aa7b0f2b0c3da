#include <wsgw/outbound.h>

#include <doctest/doctest.h>

#include <string>

using namespace wsgw;

namespace {
MessagePtr msg(std::size_t payload) { return Message::create(Opcode::Binary, std::string(payload, 'x')); }
const std::size_t kFrame = msg(100)->frame().size(); // 102: a 2-byte header
} // namespace

TEST_CASE("the byte bound and the policies: drop_newest, drop_oldest, close") {
    const std::size_t bound = 3 * kFrame;
    Outbound newest({.maxBytes = bound, .policy = SlowConsumerPolicy::DropNewest});
    for (int i = 0; i < 3; ++i) CHECK(newest.push(msg(100)) == SendStatus::Queued);
    CHECK(newest.queuedBytes() == bound);
    CHECK(newest.push(msg(100)) == SendStatus::Dropped);
    CHECK(newest.queuedMessages() == 3);
    CHECK(newest.stats().dropped == 1);
    CHECK_FALSE(newest.closing());

    // DropOldest: as many old ones go as the new one needs, never the batch being written.
    Outbound oldest({.maxBytes = bound, .policy = SlowConsumerPolicy::DropOldest, .maxWriteBytes = kFrame});
    MessagePtr first = msg(100);
    CHECK(oldest.push(first) == SendStatus::Queued);
    REQUIRE(oldest.startWrite().size() == 1); // `first` is in flight now
    for (int i = 0; i < 3; ++i) CHECK(oldest.push(msg(100)) == SendStatus::Queued);
    MessagePtr big = msg(250);
    CHECK(oldest.push(big) == SendStatus::Queued);
    CHECK(oldest.stats().dropped == 3);
    CHECK(oldest.queuedMessages() == 1);
    CHECK(oldest.inFlight().front() == first);
    oldest.finishWrite();
    CHECK(oldest.startWrite().front() == big);

    // Close: the queue goes, the close (1008) begins, later sends answer Closed.
    Outbound closer({.maxBytes = bound, .policy = SlowConsumerPolicy::Close});
    for (int i = 0; i < 3; ++i) CHECK(closer.push(msg(100)) == SendStatus::Queued);
    CHECK(closer.push(msg(100)) == SendStatus::Dropped);
    CHECK(closer.stats().slowConsumerClosed);
    CHECK(closer.stats().dropped == 4);
    CHECK(closer.closing());
    CHECK(closer.queuedBytes() == 0);
    CHECK(closer.closeCode() == close_code::kPolicyViolation);
    CHECK(closer.closeReason() == "slow consumer: outbound queue full");
    CHECK(closer.push(msg(1)) == SendStatus::Closed);
    CHECK(closer.takeCloseDue());
    CHECK_FALSE(closer.takeCloseDue()); // once

    // One message always fits into an empty queue, however big.
    Outbound empty({.maxBytes = bound, .policy = SlowConsumerPolicy::Close});
    CHECK(empty.push(msg(10'000)) == SendStatus::Queued);
    CHECK(empty.startWrite().front()->payload().size() == 10'000);
}

TEST_CASE("writes coalesce up to maxWriteBytes; a large frame goes alone; sent counts on finishWrite") {
    Outbound out({.maxBytes = 1 << 20, .policy = SlowConsumerPolicy::Close, .maxWriteBytes = 4 * kFrame});
    for (int i = 0; i < 10; ++i) CHECK(out.push(msg(100)) == SendStatus::Queued);
    CHECK(out.startWrite().size() == 4);
    CHECK(out.writing());
    CHECK(out.queuedMessages() == 6);
    CHECK(out.stats().sentMessages == 0);
    out.finishWrite();
    CHECK_FALSE(out.writing());
    CHECK(out.stats().sentMessages == 4);
    CHECK(out.stats().sentBytes == 4 * kFrame);
    CHECK(out.startWrite().size() == 4);
    out.finishWrite();
    CHECK(out.startWrite().size() == 2);
    out.finishWrite();
    CHECK_FALSE(out.hasQueued());

    // A frame of half the write size or more is written alone (copying it to coalesce would cost
    // more than the write it saves).
    MessagePtr large = msg(2 * kFrame);
    CHECK(out.push(large) == SendStatus::Queued);
    CHECK(out.push(msg(1)) == SendStatus::Queued);
    REQUIRE(out.startWrite().size() == 1);
    CHECK(out.inFlight().front() == large);
    out.finishWrite();
    CHECK(out.startWrite().size() == 1);
    out.finishWrite();
}

TEST_CASE("close after the queue has drained; the reason is cut on a UTF-8 boundary; abort drops all") {
    Outbound out({.maxBytes = 1 << 20, .policy = SlowConsumerPolicy::Close, .maxWriteBytes = kFrame});
    CHECK(out.push(msg(100)) == SendStatus::Queued);
    CHECK(out.push(msg(100)) == SendStatus::Queued);
    std::string reason(122, 'r');
    reason += "\xc3\xa9"; // é straddles byte 123
    CHECK(out.close(close_code::kNormal, reason));
    CHECK_FALSE(out.close(close_code::kGoingAway, "again")); // only the first counts
    CHECK(out.push(msg(1)) == SendStatus::Closed);
    CHECK_FALSE(out.takeCloseDue()); // two messages still to go
    out.startWrite();
    CHECK_FALSE(out.takeCloseDue()); // one in flight, one queued
    out.finishWrite();
    out.startWrite();
    CHECK_FALSE(out.takeCloseDue()); // the last one in flight
    out.finishWrite();
    CHECK(out.takeCloseDue());
    CHECK(out.closeCode() == close_code::kNormal);
    CHECK(out.closeReason() == std::string(122, 'r'));
    CHECK(out.stats().sentMessages == 2);

    // clearQueued keeps the write in flight (its buffers may still be read).
    Outbound cut({.maxBytes = 1 << 20, .policy = SlowConsumerPolicy::Close, .maxWriteBytes = kFrame});
    CHECK(cut.push(msg(100)) == SendStatus::Queued);
    CHECK(cut.push(msg(100)) == SendStatus::Queued);
    REQUIRE(cut.startWrite().size() == 1);
    cut.clearQueued();
    CHECK(cut.writing());
    CHECK_FALSE(cut.hasQueued());
    CHECK(cut.stats().dropped == 1);
    cut.finishWrite();
    CHECK(cut.stats().sentMessages == 1);

    Outbound gone;
    CHECK(gone.push(msg(10)) == SendStatus::Queued);
    CHECK(gone.push(msg(10)) == SendStatus::Queued);
    gone.startWrite();
    gone.abort();
    CHECK_FALSE(gone.writing());
    CHECK_FALSE(gone.hasQueued());
    CHECK(gone.stats().dropped == 2);
    CHECK_FALSE(gone.takeCloseDue()); // nothing to write any more
    CHECK(gone.push(msg(10)) == SendStatus::Closed);
}
