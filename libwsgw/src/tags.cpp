#include <wsgw/tags.h>

#include "form_encode.h"
#include "hex.h"

#include <algorithm>

namespace wsgw {

namespace {

bool isUnreserved(unsigned char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.' || c == '~';
}

} // namespace

std::optional<std::string> percentDecode(std::string_view text, bool plusIsSpace, std::size_t *badOffset) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (c == '%') {
            int hi = i + 2 < text.size() ? hexValue(text[i + 1]) : -1;
            int lo = hi < 0 ? -1 : hexValue(text[i + 2]);
            if (lo < 0) {
                if (badOffset) *badOffset = i;
                return std::nullopt;
            }
            out.push_back(static_cast<char>(hi << 4 | lo));
            i += 2;
        } else {
            out.push_back(plusIsSpace && c == '+' ? ' ' : c);
        }
    }
    return out;
}

std::optional<std::string> formDecode(std::string_view text) { return percentDecode(text, true); }

void appendFormEncoded(std::string &out, std::string_view text) {
    static constexpr char digits[] = "0123456789ABCDEF";
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
}

std::string formEncode(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    appendFormEncoded(out, text);
    return out;
}

std::optional<TagList> parseForm(std::string_view text, std::string *error) {
    TagList pairs;
    std::size_t start = 0;
    while (start <= text.size()) {
        std::size_t end = text.find('&', start);
        if (end == std::string_view::npos) end = text.size();
        std::string_view pair = text.substr(start, end - start);
        if (!pair.empty()) {
            std::size_t eq = pair.find('=');
            std::string_view rawKey = pair.substr(0, eq);
            std::string_view rawValue = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
            std::size_t bad = 0;
            auto key = percentDecode(rawKey, true, &bad);
            if (!key) {
                if (error) *error = "malformed %-escape at offset " + std::to_string(start + bad);
                return std::nullopt;
            }
            auto value = percentDecode(rawValue, true, &bad);
            if (!value) {
                if (error) *error = "malformed %-escape at offset " + std::to_string(start + eq + 1 + bad);
                return std::nullopt;
            }
            if (key->empty()) {
                if (error) *error = "empty key at offset " + std::to_string(start);
                return std::nullopt;
            }
            pairs.emplace_back(std::move(*key), std::move(*value));
        }
        start = end + 1;
    }
    return pairs;
}

namespace {
template <class Pairs> void appendPairs(std::string &out, const Pairs &pairs) {
    bool first = true;
    for (const auto &[k, v] : pairs) {
        if (!first) out.push_back('&');
        first = false;
        appendFormEncoded(out, k);
        out.push_back('=');
        appendFormEncoded(out, v);
    }
}
} // namespace

void appendForm(std::string &out, const Tags &tags) { appendPairs(out, tags); }

std::string encodeForm(const Tags &tags) {
    std::string out;
    appendPairs(out, tags);
    return out;
}

std::string encodeForm(const TagList &pairs) {
    std::string out;
    appendPairs(out, pairs);
    return out;
}

} // namespace wsgw
