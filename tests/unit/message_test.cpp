#include <wsgw/message.h>

#include <doctest/doctest.h>

#include <cstring>
#include <thread>
#include <vector>

using namespace wsgw;

TEST_CASE("a message holds its payload and opcode, with headroom before it") {
    MessagePtr m = Message::create(Opcode::Binary, std::string_view("\x00\x01\x02", 3), 16);
    CHECK(m->opcode() == Opcode::Binary);
    CHECK_FALSE(m->isText());
    CHECK(m->size() == 3);
    CHECK(m->payload() == std::string_view("\x00\x01\x02", 3));
    CHECK(m->headroom() == 16);
    CHECK(m->headroomData() + 16 == m->data());
    std::memset(m->headroomData(), 0xAB, 16); // the transport's scratch space must be writable
    CHECK(m->payload() == std::string_view("\x00\x01\x02", 3));
    MessagePtr t = Message::text("");
    CHECK(t->isText());
    CHECK(t->size() == 0);
    CHECK(t->payload().empty());
}

TEST_CASE("MessagePtr counts references") {
    MessagePtr a = Message::text("hello");
    CHECK(a->useCount() == 1);
    {
        MessagePtr b = a;
        MessagePtr c;
        c = b;
        CHECK(a->useCount() == 3);
        MessagePtr d = std::move(c);
        CHECK(!c);
        CHECK(a->useCount() == 3);
    }
    CHECK(a->useCount() == 1);
    MessagePtr e;
    CHECK(!e);
    CHECK(e == nullptr);
}

TEST_CASE("copies on many threads keep the count exact") {
    MessagePtr m = Message::text("shared");
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([m] {
            std::vector<MessagePtr> held;
            for (int i = 0; i < 10000; ++i) held.push_back(m);
        });
    }
    for (auto &t : threads) t.join();
    CHECK(m->useCount() == 1);
}
