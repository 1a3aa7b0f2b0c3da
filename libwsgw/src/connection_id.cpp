#include <wsgw/connection_id.h>

#include "hex.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdlib>

namespace wsgw {

namespace {

// getrandom() per id would be a system call per connection; a per-thread pool amortises it over
// 256 ids while keeping every id from the kernel's CSPRNG.
struct RandomPool {
    unsigned char bytes[4096];
    std::size_t used = sizeof(bytes);

    void take(unsigned char *out, std::size_t n) noexcept {
        if (used + n > sizeof(bytes)) {
            refill();
        }
        std::memcpy(out, bytes + used, n);
        used += n;
    }

    void refill() noexcept {
        std::size_t got = 0;
        while (got < sizeof(bytes)) {
            ssize_t r = getrandom(bytes + got, sizeof(bytes) - got, 0);
            if (r < 0) {
                if (errno == EINTR) continue;
                std::abort(); // no entropy source: ids would be guessable, refuse to go on
            }
            got += static_cast<std::size_t>(r);
        }
        used = 0;
    }
};

constexpr bool isDashPosition(std::size_t i) noexcept { return i == 8 || i == 13 || i == 18 || i == 23; }

} // namespace

ConnectionId ConnectionId::random() noexcept {
    thread_local RandomPool pool;
    std::array<std::uint8_t, 16> b;
    pool.take(b.data(), b.size());
    b[6] = static_cast<std::uint8_t>((b[6] & 0x0F) | 0x40); // version 4
    b[8] = static_cast<std::uint8_t>((b[8] & 0x3F) | 0x80); // RFC 4122 variant
    return ConnectionId(b);
}

ConnectionId ConnectionId::random(std::uint16_t prefix) noexcept {
    ConnectionId id = random();
    id.bytes_[0] = static_cast<std::uint8_t>(prefix >> 8);
    id.bytes_[1] = static_cast<std::uint8_t>(prefix & 0xFF);
    return id;
}

std::optional<ConnectionId> ConnectionId::parse(std::string_view text) noexcept {
    if (text.size() != kTextLength) return std::nullopt;
    std::array<std::uint8_t, 16> b{};
    std::size_t out = 0;
    for (std::size_t i = 0; i < kTextLength;) {
        if (isDashPosition(i)) {
            if (text[i] != '-') return std::nullopt;
            ++i;
            continue;
        }
        int hi = hexValue(text[i]);
        int lo = hexValue(text[i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        b[out++] = static_cast<std::uint8_t>(hi << 4 | lo);
        i += 2;
    }
    return ConnectionId(b);
}

void ConnectionId::format(char *out) const noexcept {
    static constexpr char digits[] = "0123456789abcdef";
    std::size_t pos = 0;
    for (std::size_t i = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[pos++] = '-';
        out[pos++] = digits[bytes_[i] >> 4];
        out[pos++] = digits[bytes_[i] & 0xF];
    }
}

std::string ConnectionId::toString() const {
    std::string s(kTextLength, '\0');
    format(s.data());
    return s;
}

} // namespace wsgw
