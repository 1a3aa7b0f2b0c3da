#pragma once

#include <wsgw/export.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>

namespace wsgw {

/// WebSocket data opcodes (RFC 6455 values).
enum class Opcode : std::uint8_t { Text = 1, Binary = 2 };

class MessagePtr;

/// An immutable payload with its opcode, built once and shared by every recipient through
/// MessagePtr (an intrusive, atomically reference-counted pointer: copying one costs one atomic
/// increment and no allocation).
///
/// Layout in a single allocation: [headroom][payload]. The headroom is scratch space a
/// transport may write its frame header into so that header and payload go out in one write
/// without copying (libwebsockets wants LWS_PRE bytes there). The payload never changes; the
/// headroom is for one writer thread at a time, which the transport must ensure.
///
/// Thread-safe to read from any number of threads.
class WSGW_EXPORT Message {
public:
    /// Allocates and copies `payload` once. `headroom` bytes are reserved before it.
    /// Never returns null (throws std::bad_alloc like operator new).
    static MessagePtr create(Opcode opcode, std::string_view payload, std::size_t headroom = 0);
    static MessagePtr text(std::string_view payload, std::size_t headroom = 0);
    static MessagePtr binary(std::string_view payload, std::size_t headroom = 0);

    Opcode opcode() const noexcept { return opcode_; }
    bool isText() const noexcept { return opcode_ == Opcode::Text; }
    std::string_view payload() const noexcept { return {reinterpret_cast<const char *>(this + 1) + headroom_, size_}; }
    const unsigned char *data() const noexcept { return reinterpret_cast<const unsigned char *>(this + 1) + headroom_; }
    std::size_t size() const noexcept { return size_; }
    std::size_t headroom() const noexcept { return headroom_; }
    /// The writable scratch bytes directly before data(); see the class comment for who may
    /// write them.
    unsigned char *headroomData() const noexcept {
        return const_cast<unsigned char *>(reinterpret_cast<const unsigned char *>(this + 1));
    }
    /// Current number of references (for tests and diagnostics only).
    std::size_t useCount() const noexcept { return refs_.load(std::memory_order_relaxed); }

    Message(const Message &) = delete;
    Message &operator=(const Message &) = delete;

private:
    friend class MessagePtr;
    Message(Opcode opcode, std::size_t size, std::size_t headroom) noexcept
        : size_(size), headroom_(static_cast<std::uint32_t>(headroom)), opcode_(opcode) {}
    void retain() const noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
    void release() const noexcept;

    mutable std::atomic<std::uint32_t> refs_{1};
    std::size_t size_;
    std::uint32_t headroom_;
    Opcode opcode_;
};

/// Shared ownership of a Message. Thread-compatible (like std::shared_ptr: one MessagePtr object
/// must not be written by two threads at once; copies of it may live on any threads).
class WSGW_EXPORT MessagePtr {
public:
    MessagePtr() noexcept = default;
    MessagePtr(std::nullptr_t) noexcept {}
    MessagePtr(const MessagePtr &o) noexcept : p_(o.p_) {
        if (p_) p_->retain();
    }
    MessagePtr(MessagePtr &&o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    MessagePtr &operator=(MessagePtr o) noexcept {
        std::swap(p_, o.p_);
        return *this;
    }
    ~MessagePtr() {
        if (p_) p_->release();
    }

    const Message *get() const noexcept { return p_; }
    const Message &operator*() const noexcept { return *p_; }
    const Message *operator->() const noexcept { return p_; }
    explicit operator bool() const noexcept { return p_ != nullptr; }
    friend bool operator==(const MessagePtr &a, const MessagePtr &b) noexcept { return a.p_ == b.p_; }
    friend bool operator!=(const MessagePtr &a, const MessagePtr &b) noexcept { return a.p_ != b.p_; }

private:
    friend class Message;
    explicit MessagePtr(const Message *adopted) noexcept : p_(adopted) {}
    const Message *p_ = nullptr;
};

} // namespace wsgw
