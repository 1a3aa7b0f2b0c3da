#include <wsgw/message.h>

#include <cstdint>
#include <cstring>
#include <new>

namespace wsgw {

namespace {
// Writes the header of a final, unmasked frame ending at `end`; returns its size.
std::size_t writeFrameHeader(unsigned char *end, Opcode opcode, std::size_t len) noexcept {
    unsigned char h[Message::kMaxFrameHeader];
    std::size_t n = 0;
    h[n++] = static_cast<unsigned char>(0x80 | static_cast<unsigned>(opcode));
    if (len < 126) {
        h[n++] = static_cast<unsigned char>(len);
    } else if (len <= 0xFFFF) {
        h[n++] = 126;
        h[n++] = static_cast<unsigned char>(len >> 8);
        h[n++] = static_cast<unsigned char>(len);
    } else {
        h[n++] = 127;
        for (int shift = 56; shift >= 0; shift -= 8) h[n++] = static_cast<unsigned char>(std::uint64_t(len) >> shift);
    }
    std::memcpy(end - n, h, n);
    return n;
}
} // namespace

MessagePtr Message::create(Opcode opcode, std::string_view payload, std::size_t headroom) {
    std::size_t prefix = headroom + kMaxFrameHeader;
    void *mem = ::operator new(sizeof(Message) + prefix + payload.size());
    auto *base = static_cast<unsigned char *>(mem) + sizeof(Message);
    std::size_t headerSize = writeFrameHeader(base + prefix, opcode, payload.size());
    auto *msg = new (mem) Message(opcode, payload.size(), prefix, headerSize);
    if (!payload.empty()) std::memcpy(base + prefix, payload.data(), payload.size());
    return MessagePtr(msg);
}

MessagePtr Message::text(std::string_view payload, std::size_t headroom) {
    return create(Opcode::Text, payload, headroom);
}

MessagePtr Message::binary(std::string_view payload, std::size_t headroom) {
    return create(Opcode::Binary, payload, headroom);
}

void Message::release() const noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        this->~Message();
        ::operator delete(const_cast<Message *>(this));
    }
}

} // namespace wsgw
