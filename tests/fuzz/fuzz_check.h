#pragma once

// Shared by the fuzz targets: invariant checks that stop the run, so that libFuzzer keeps the
// input as a crash artifact and prints its stack.

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

namespace wsgw::fuzz {

/// `text` with every byte outside printable ASCII written as \xHH, for messages.
inline std::string printable(std::string_view text) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : text) {
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out.push_back(static_cast<char>(c));
        } else {
            out += "\\x";
            out.push_back(digits[c >> 4]);
            out.push_back(digits[c & 0xF]);
        }
    }
    return out;
}

[[noreturn]] inline void invariantFailed(const char *file, int line, const char *condition,
                                         const std::string &detail) {
    std::fprintf(stderr, "%s:%d: invariant failed: %s\n  %s\n", file, line, condition, detail.c_str());
    std::abort();
}

/// The number after the last occurrence of `marker` in `message` ("... at offset 12"), if any.
inline std::optional<std::size_t> numberAfter(std::string_view message, std::string_view marker) {
    std::size_t at = message.rfind(marker);
    if (at == std::string_view::npos) return std::nullopt;
    std::size_t i = at + marker.size(), v = 0, digits = 0;
    for (; i < message.size() && message[i] >= '0' && message[i] <= '9' && digits < 12; ++i, ++digits)
        v = v * 10 + static_cast<std::size_t>(message[i] - '0');
    if (digits == 0) return std::nullopt;
    return v;
}

} // namespace wsgw::fuzz

/// Aborts with the condition, the place and `detail` (a std::string) when `cond` is false.
#define FUZZ_CHECK(cond, detail)                                                                             \
    do {                                                                                                     \
        if (!(cond)) ::wsgw::fuzz::invariantFailed(__FILE__, __LINE__, #cond, (detail));                     \
    } while (0)
