#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace wsgw::daemon {

/// What checkUtf8Prefix found.
struct Utf8Prefix {
    bool valid = true;      ///< false: `s` cannot be the start of well-formed UTF-8
    std::size_t whole = 0;  ///< bytes of whole characters; the rest (< 4 bytes) starts a character
};

/// Whether `s` can be the start of well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates,
/// nothing above U+10FFFF), and how much of it is whole characters. A character cut at the end
/// is fine as far as it goes: "\xF4\x8F" can still become U+10FFFF, "\xF4\x90" cannot become
/// anything. For checking a text message as its pieces arrive (RFC 6455 8.1: fail as soon as
/// the data cannot be UTF-8), starting each piece's check at the last whole character.
inline Utf8Prefix checkUtf8Prefix(std::string_view s) noexcept {
    const auto *begin = reinterpret_cast<const unsigned char *>(s.data());
    const auto *p = begin;
    const auto *end = p + s.size();
    while (p < end) {
        // Fast path: eight ASCII bytes at a time.
        while (end - p >= 8) {
            std::uint64_t word;
            __builtin_memcpy(&word, p, 8);
            if (word & 0x8080808080808080ull) break;
            p += 8;
        }
        if (p == end) break;
        unsigned char c = *p;
        if (c < 0x80) {
            ++p;
            continue;
        }
        int extra;
        unsigned char lo = 0x80, hi = 0xBF; // allowed range of the second byte
        if (c >= 0xC2 && c <= 0xDF) {
            extra = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            extra = 2;
            if (c == 0xE0) lo = 0xA0;      // no overlong 3-byte forms
            else if (c == 0xED) hi = 0x9F; // no surrogates
        } else if (c >= 0xF0 && c <= 0xF4) {
            extra = 3;
            if (c == 0xF0) lo = 0x90;      // no overlong 4-byte forms
            else if (c == 0xF4) hi = 0x8F; // nothing above U+10FFFF
        } else {
            return {false, static_cast<std::size_t>(p - begin)};
        }
        const std::ptrdiff_t have = end - p - 1; // continuation bytes present
        if (have >= 1 && (p[1] < lo || p[1] > hi)) return {false, static_cast<std::size_t>(p - begin)};
        for (int i = 2; i <= extra && i <= have; ++i)
            if ((p[i] & 0xC0) != 0x80) return {false, static_cast<std::size_t>(p - begin)};
        if (have < extra) return {true, static_cast<std::size_t>(p - begin)}; // cut at the end
        p += extra + 1;
    }
    return {true, s.size()};
}

/// Whether `s` is well-formed UTF-8, as RFC 6455 requires of text messages and close reasons.
inline bool isValidUtf8(std::string_view s) noexcept {
    Utf8Prefix r = checkUtf8Prefix(s);
    return r.valid && r.whole == s.size();
}

} // namespace wsgw::daemon
