// Fuzz target: the form-body codec of <wsgw/tags.h> (parseForm, encodeForm, formDecode,
// formEncode): /settags bodies, selectors and the events' `tags` field go through it.
//
// The input is a form body. Besides "no crash, no leak, no undefined behaviour", it checks:
//  - a failure has a message whose offset points at what it blames (a malformed '%' escape, the
//    '=' of an empty key);
//  - round trip: encodeForm(parseForm(x)) parses back to the same pairs, in order, and encoding
//    those again gives the same text; the same through the Tags overload (one value per key);
//  - parsed keys are never empty, and there are no more pairs than '&'-separated pieces;
//  - formEncode writes only unreserved bytes, '+' and %XX, and formDecode undoes it for any
//    bytes; on a text without '&' and '=', parseForm agrees with formDecode.
//
// Run it with `make fuzz` or tests/fuzz/run.sh (tests/fuzz/README.md); by hand:
//   build-fuzz/tests/fuzz/form_fuzz -max_len=4096 -dict=tests/fuzz/form.dict SCRATCH_DIR
//   tests/fuzz/corpus/form

#include "fuzz_check.h"

#include <wsgw/tags.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace {

using wsgw::fuzz::printable;

bool isHex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool isUpperHex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

bool isUnreserved(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

void checkError(std::string_view text, const std::string &error) {
    std::string where = "'" + printable(error) + "' for '" + printable(text) + "'";
    if (auto at = wsgw::fuzz::numberAfter(error, "malformed %-escape at offset ")) {
        FUZZ_CHECK(*at < text.size() && text[*at] == '%', "offset does not point at a '%': " + where);
        FUZZ_CHECK(*at + 2 >= text.size() || !isHex(text[*at + 1]) || !isHex(text[*at + 2]),
                   "the escape blamed is well-formed: " + where);
    } else if (auto key = wsgw::fuzz::numberAfter(error, "empty key at offset ")) {
        FUZZ_CHECK(*key < text.size() && text[*key] == '=', "offset does not point at an '=': " + where);
    } else {
        FUZZ_CHECK(false, "unexpected message " + where);
    }
}

void checkPairs(std::string_view text, const wsgw::TagList &pairs) {
    std::size_t pieces = static_cast<std::size_t>(std::count(text.begin(), text.end(), '&')) + 1;
    FUZZ_CHECK(pairs.size() <= pieces, "more pairs than pieces in '" + printable(text) + "'");
    for (const auto &[key, value] : pairs)
        FUZZ_CHECK(!key.empty(), "an empty key from '" + printable(text) + "'");

    std::string encoded = wsgw::encodeForm(pairs);
    std::string error;
    auto back = wsgw::parseForm(encoded, &error);
    FUZZ_CHECK(back.has_value(),
               "encodeForm gave '" + printable(encoded) + "', which does not parse: " + error);
    FUZZ_CHECK(*back == pairs,
               "'" + printable(text) + "' -> '" + printable(encoded) + "' parses to other pairs");
    FUZZ_CHECK(wsgw::encodeForm(*back) == encoded,
               "encoding of '" + printable(encoded) + "' is not canonical");

    // The Tags overload: a map keeps the first value of each key (emplace), in key order.
    wsgw::Tags tags;
    for (const auto &[key, value] : pairs)
        tags.emplace(key, value);
    std::string fromTags = wsgw::encodeForm(tags);
    auto tagsBack = wsgw::parseForm(fromTags);
    FUZZ_CHECK(tagsBack.has_value() && *tagsBack == wsgw::TagList(tags.begin(), tags.end()),
               "Tags of '" + printable(text) + "' -> '" + printable(fromTags) + "' do not parse back");
}

void checkComponent(std::string_view text) {
    std::string encoded = wsgw::formEncode(text);
    for (std::size_t i = 0; i < encoded.size(); ++i) {
        char c = encoded[i];
        if (c == '%') {
            FUZZ_CHECK(i + 2 < encoded.size() && isUpperHex(encoded[i + 1]) && isUpperHex(encoded[i + 2]),
                       "formEncode wrote a bad escape: '" + printable(encoded) + "'");
            i += 2;
        } else {
            FUZZ_CHECK(isUnreserved(c) || c == '+',
                       "formEncode left a reserved byte: '" + printable(encoded) + "'");
        }
    }
    auto decoded = wsgw::formDecode(encoded);
    FUZZ_CHECK(decoded.has_value() && *decoded == text, "formDecode(formEncode(x)) != x for '" +
                                                            printable(text) + "' via '" + printable(encoded) +
                                                            "'");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char *>(data), size);
    std::string error;
    auto pairs = wsgw::parseForm(text, &error);
    if (pairs)
        checkPairs(text, *pairs);
    else
        checkError(text, error);

    checkComponent(text);

    // One component alone: the whole text is the key and the value is empty.
    if (!text.empty() && text.find_first_of("&=") == std::string_view::npos) {
        auto decoded = wsgw::formDecode(text);
        FUZZ_CHECK(decoded.has_value() == pairs.has_value(),
                   "formDecode and parseForm disagree on '" + printable(text) + "'");
        if (decoded)
            FUZZ_CHECK(pairs->size() == 1 && (*pairs)[0].first == *decoded && (*pairs)[0].second.empty(),
                       "parseForm of one component '" + printable(text) + "' is not that key");
    }
    return 0;
}
