#pragma once

// Hex digits, for the library's decoders (percent-escapes, connection ids). Private.

namespace wsgw {

/// The value of one hex digit, either case; -1 for any other character. Locale-free.
constexpr int hexValue(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

} // namespace wsgw
