#pragma once

#include <wsgw/export.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace wsgw {

/// A connection's identity: a 128-bit UUID, written in its canonical 36-character form
/// (8-4-4-4-12 lowercase hex digits). Value type; thread-compatible.
class WSGW_EXPORT ConnectionId {
public:
    static constexpr std::size_t kTextLength = 36;

    /// The nil id (all zero). It never names a live connection.
    constexpr ConnectionId() noexcept = default;
    explicit ConnectionId(const std::array<std::uint8_t, 16> &bytes) noexcept : bytes_(bytes) {}

    /// Thread-safe. A random (version 4) UUID from the kernel's CSPRNG, so ids cannot be guessed
    /// from one another.
    static ConnectionId random() noexcept;
    /// Thread-safe. As random(), with the first 16 bits (the first four hex digits) set to
    /// `prefix`: a cluster node's mark (clusterIdPrefix in <wsgw/cluster.h>). 106 random bits remain.
    static ConnectionId random(std::uint16_t prefix) noexcept;
    /// The first 16 bits.
    std::uint16_t prefix() const noexcept { return static_cast<std::uint16_t>(bytes_[0] << 8 | bytes_[1]); }

    /// Parses the canonical form, hex digits in either case. Anything else returns nullopt.
    [[nodiscard]] static std::optional<ConnectionId> parse(std::string_view text) noexcept;

    /// Writes exactly kTextLength characters (no terminator) to `out`.
    void format(char *out) const noexcept;
    std::string toString() const;

    bool isNil() const noexcept { return *this == ConnectionId(); }
    const std::array<std::uint8_t, 16> &bytes() const noexcept { return bytes_; }

    /// A well-mixed 64-bit hash; the random bits of a v4 UUID make it cheap.
    std::uint64_t hash() const noexcept {
        std::uint64_t a, b;
        std::memcpy(&a, bytes_.data(), 8);
        std::memcpy(&b, bytes_.data() + 8, 8);
        return (a ^ (b * 0x9E3779B97F4A7C15ull)) * 0xBF58476D1CE4E5B9ull;
    }

    friend bool operator==(const ConnectionId &a, const ConnectionId &b) noexcept { return a.bytes_ == b.bytes_; }
    friend bool operator!=(const ConnectionId &a, const ConnectionId &b) noexcept { return !(a == b); }
    friend bool operator<(const ConnectionId &a, const ConnectionId &b) noexcept { return a.bytes_ < b.bytes_; }

private:
    std::array<std::uint8_t, 16> bytes_{};
};

struct ConnectionIdHash {
    std::size_t operator()(const ConnectionId &id) const noexcept { return static_cast<std::size_t>(id.hash()); }
};

} // namespace wsgw
