#include <wsgw/message.h>

#include <cstring>
#include <new>

namespace wsgw {

MessagePtr Message::create(Opcode opcode, std::string_view payload, std::size_t headroom) {
    void *mem = ::operator new(sizeof(Message) + headroom + payload.size());
    auto *msg = new (mem) Message(opcode, payload.size(), headroom);
    if (!payload.empty()) std::memcpy(msg->headroomData() + headroom, payload.data(), payload.size());
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
