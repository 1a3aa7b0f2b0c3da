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

/// An immutable payload with its opcode, built once and shared by many recipients through
/// MessagePtr (an intrusive, atomically reference-counted pointer: copying one costs one atomic
/// increment and no allocation).
///
/// Layout, one allocation: [headroom][WebSocket frame header][payload]. The frame header is the
/// unmasked, final-fragment header a server sends (RFC 6455 section 5.2), built at creation, so
/// frame() is a complete WebSocket frame that any number of threads may write to their sockets
/// as it is. The headroom before it is scratch space for a transport that needs room in front of
/// a buffer (libwebsockets asks for LWS_PRE bytes); header and payload never change.
///
/// Thread-safe to read from any number of threads.
class WSGW_EXPORT Message {
public:
    /// The longest frame header: 2 bytes plus an 8-byte extended length.
    static constexpr std::size_t kMaxFrameHeader = 10;

    /// Allocates and copies `payload` once, with at least `headroom` bytes before the frame
    /// header. Never returns null (throws std::bad_alloc like operator new).
    static MessagePtr create(Opcode opcode, std::string_view payload, std::size_t headroom = 0);
    static MessagePtr text(std::string_view payload, std::size_t headroom = 0);
    static MessagePtr binary(std::string_view payload, std::size_t headroom = 0);

    Opcode opcode() const noexcept { return opcode_; }
    bool isText() const noexcept { return opcode_ == Opcode::Text; }
    const unsigned char *data() const noexcept { return base() + prefix_; }
    std::size_t size() const noexcept { return size_; }
    std::string_view payload() const noexcept { return {reinterpret_cast<const char *>(data()), size_}; }

    /// The whole WebSocket frame: header and payload, contiguous.
    std::string_view frame() const noexcept {
        return {reinterpret_cast<const char *>(data()) - headerSize_, size_ + headerSize_};
    }
    std::size_t frameHeaderSize() const noexcept { return headerSize_; }

    /// Bytes of scratch space before the frame header (at least what create() was asked for).
    std::size_t headroom() const noexcept { return prefix_ - headerSize_; }
    /// The first scratch byte; the scratch ends where frame() begins. For the transport only.
    unsigned char *headroomData() const noexcept { return const_cast<unsigned char *>(base()); }

    /// Current number of references (for tests and diagnostics only).
    std::size_t useCount() const noexcept { return refs_.load(std::memory_order_relaxed); }

    Message(const Message &) = delete;
    Message &operator=(const Message &) = delete;

private:
    friend class MessagePtr;
    Message(Opcode opcode, std::size_t size, std::size_t prefix, std::size_t headerSize) noexcept
        : size_(size), prefix_(static_cast<std::uint32_t>(prefix)), headerSize_(static_cast<std::uint8_t>(headerSize)),
          opcode_(opcode) {}
    const unsigned char *base() const noexcept { return reinterpret_cast<const unsigned char *>(this + 1); }
    void retain() const noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
    void release() const noexcept;

    mutable std::atomic<std::uint32_t> refs_{1};
    std::size_t size_;
    std::uint32_t prefix_; ///< bytes before the payload: scratch + frame header
    std::uint8_t headerSize_;
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
