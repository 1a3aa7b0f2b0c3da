#pragma once

// ASCII scanning shared by the config parsers (addresses, URLs, the YAML walk): locale-free,
// allocation-free where they can be. Pure: thread-safe.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace wsgw::daemon {

inline bool isDigit(char c) noexcept {
    return c >= '0' && c <= '9';
}

/// Decimal digits only (no sign, no spaces, not empty), at most `max`: true and the value in
/// `out`; false otherwise, `out` untouched.
inline bool parseDecimal(std::string_view s, std::uint64_t max, std::uint64_t &out) noexcept {
    if (s.empty() || s.size() > 19) return false;
    std::uint64_t v = 0;
    for (char c : s) {
        if (!isDigit(c)) return false;
        v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    if (v > max) return false;
    out = v;
    return true;
}

/// ASCII letters to lower case; other bytes stay.
inline std::string lower(std::string_view s) {
    std::string out(s);
    for (char &c : out)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
}

/// "a, b, c": for messages that list what is allowed.
inline std::string joinNames(const std::vector<std::string_view> &names) {
    std::string out;
    for (std::string_view n : names) {
        if (!out.empty()) out += ", ";
        out += n;
    }
    return out;
}

} // namespace wsgw::daemon
