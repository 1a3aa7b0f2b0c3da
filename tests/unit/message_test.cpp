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
    CHECK(m->headroom() >= 16);
    CHECK(m->headroomData() + m->headroom() + m->frameHeaderSize() == m->data());
    std::memset(m->headroomData(), 0xAB, m->headroom()); // the transport's scratch space is writable
    CHECK(m->payload() == std::string_view("\x00\x01\x02", 3));
    CHECK(m->frame() == std::string_view("\x82\x03\x00\x01\x02", 5));
    MessagePtr t = Message::text("");
    CHECK(t->isText());
    CHECK(t->size() == 0);
    CHECK(t->payload().empty());
    CHECK(t->frame() == std::string_view("\x81\x00", 2));
}

TEST_CASE("frame headers use the shortest length encoding (RFC 6455 5.2)") {
    struct Case {
        std::size_t len;
        std::string header;
    };
    for (const Case &c : {Case{125, std::string("\x81\x7d")}, Case{126, std::string("\x81\x7e\x00\x7e", 4)},
                          Case{65535, std::string("\x81\x7e\xff\xff")},
                          Case{65536, std::string("\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10)}}) {
        MessagePtr m = Message::text(std::string(c.len, 'x'));
        CHECK(m->frameHeaderSize() == c.header.size());
        CHECK(m->frame().substr(0, c.header.size()) == c.header);
        CHECK(m->frame().size() == c.len + c.header.size());
    }
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
