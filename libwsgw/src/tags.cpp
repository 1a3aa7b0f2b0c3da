#include <wsgw/tags.h>

#include <algorithm>

namespace wsgw {

namespace {

int hexValue(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Decodes one component; on a bad escape returns false and sets `bad` to its offset in `text`.
bool decodeInto(std::string_view text, std::string &out, std::size_t &bad) {
    out.clear();
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (c == '+') {
            out.push_back(' ');
        } else if (c == '%') {
            if (i + 2 >= text.size()) {
                bad = i;
                return false;
            }
            int hi = hexValue(text[i + 1]);
            int lo = hexValue(text[i + 2]);
            if (hi < 0 || lo < 0) {
                bad = i;
                return false;
            }
            out.push_back(static_cast<char>(hi << 4 | lo));
            i += 2;
        } else {
            out.push_back(c);
        }
    }
    return true;
}

bool isUnreserved(unsigned char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.' || c == '~';
}

} // namespace

std::optional<std::string> formDecode(std::string_view text) {
    std::string out;
    std::size_t bad = 0;
    if (!decodeInto(text, out, bad)) return std::nullopt;
    return out;
}

std::string formEncode(std::string_view text) {
    static constexpr char digits[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(text.size());
    for (unsigned char c : text) {
        if (isUnreserved(c)) {
            out.push_back(static_cast<char>(c));
        } else if (c == ' ') {
            out.push_back('+');
        } else {
            out.push_back('%');
            out.push_back(digits[c >> 4]);
            out.push_back(digits[c & 0xF]);
        }
    }
    return out;
}

std::optional<TagList> parseForm(std::string_view text, std::string *error) {
    TagList pairs;
    std::size_t start = 0;
    std::string key, value;
    while (start <= text.size()) {
        std::size_t end = text.find('&', start);
        if (end == std::string_view::npos) end = text.size();
        std::string_view pair = text.substr(start, end - start);
        if (!pair.empty()) {
            std::size_t eq = pair.find('=');
            std::string_view rawKey = pair.substr(0, eq);
            std::string_view rawValue = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
            std::size_t bad = 0;
            if (!decodeInto(rawKey, key, bad)) {
                if (error) *error = "malformed %-escape at offset " + std::to_string(start + bad);
                return std::nullopt;
            }
            if (!decodeInto(rawValue, value, bad)) {
                if (error) *error = "malformed %-escape at offset " + std::to_string(start + eq + 1 + bad);
                return std::nullopt;
            }
            if (key.empty()) {
                if (error) *error = "empty key at offset " + std::to_string(start);
                return std::nullopt;
            }
            pairs.emplace_back(key, value);
        }
        start = end + 1;
    }
    return pairs;
}

namespace {
template <class Pairs> std::string encodePairs(const Pairs &pairs) {
    std::string out;
    for (const auto &[k, v] : pairs) {
        if (!out.empty()) out.push_back('&');
        out += formEncode(k);
        out.push_back('=');
        out += formEncode(v);
    }
    return out;
}
} // namespace

std::string encodeForm(const Tags &tags) { return encodePairs(tags); }
std::string encodeForm(const TagList &pairs) { return encodePairs(pairs); }

} // namespace wsgw
