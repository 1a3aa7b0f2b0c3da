// Fuzz target: wsgw::Selector::parse, the control API's query-string selectors.
//
// The input is the query string (without '?'). Besides "no crash, no leak, no undefined
// behaviour", every input checks the contract in <wsgw/selector.h>:
//  - a failure has a message whose offset points at what it blames: the '%' of a malformed
//    escape, the '=' of an empty key;
//  - toString() of a parsed selector parses back to an equal selector, and is canonical
//    (printing the reparsed selector gives the same text);
//  - the shape: parse never yields All; AllOf terms are sorted by key, one per key, and each is
//    the first value of its key in the query; a query with an `id` key yields Ids or None, never
//    tags; ids are sorted, unique, and each one is an item of the first `id` value;
//  - matches(): a connection that has exactly the AllOf terms, or one of the ids, is selected.
//
// Run it with `make fuzz` or tests/fuzz/run.sh (tests/fuzz/README.md); by hand:
//   build-fuzz/tests/fuzz/selector_fuzz -max_len=4096 -dict=tests/fuzz/selector.dict
//       SCRATCH_DIR tests/fuzz/corpus/selector

#include "fuzz_check.h"

#include <wsgw/selector.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace {

using wsgw::ConnectionId;
using wsgw::Selector;
using wsgw::fuzz::printable;

std::string lowerAscii(std::string_view s) {
    std::string out(s);
    for (char &c : out)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
}

std::vector<std::string_view> splitCommas(std::string_view list) {
    std::vector<std::string_view> items;
    std::size_t start = 0;
    while (start <= list.size()) {
        std::size_t end = std::min(list.find(',', start), list.size());
        items.push_back(list.substr(start, end - start));
        start = end + 1;
    }
    return items;
}

bool isHex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

void checkError(std::string_view query, const std::string &error) {
    FUZZ_CHECK(!error.empty(), "parse failed without a message for '" + printable(query) + "'");
    std::string where = "'" + printable(error) + "' for '" + printable(query) + "'";
    if (auto at = wsgw::fuzz::numberAfter(error, "malformed %-escape at offset ")) {
        FUZZ_CHECK(*at < query.size() && query[*at] == '%', "offset does not point at a '%': " + where);
        FUZZ_CHECK(*at + 2 >= query.size() || !isHex(query[*at + 1]) || !isHex(query[*at + 2]),
                   "the escape blamed is well-formed: " + where);
    } else if (auto key = wsgw::fuzz::numberAfter(error, "empty key at offset ")) {
        FUZZ_CHECK(*key < query.size() && query[*key] == '=', "offset does not point at an '=': " + where);
    } else {
        FUZZ_CHECK(false, "unexpected message " + where);
    }
}

void checkTags(std::string_view query, const Selector &sel) {
    auto pairs = wsgw::parseForm(query);
    FUZZ_CHECK(pairs.has_value(), "the selector parsed but the form did not: '" + printable(query) + "'");
    const wsgw::TagList &terms = sel.tags();
    FUZZ_CHECK(!terms.empty(), "AllOf without terms: '" + printable(query) + "'");
    for (std::size_t i = 0; i < terms.size(); ++i) {
        const std::string &key = terms[i].first, &value = terms[i].second;
        FUZZ_CHECK(i == 0 || terms[i - 1].first < key,
                   "terms not sorted or not unique by key: '" + printable(query) + "'");
        FUZZ_CHECK(key != "id", "an id key became a tag term: '" + printable(query) + "'");
        auto first =
            std::find_if(pairs->begin(), pairs->end(), [&](const auto &p) { return p.first == key; });
        FUZZ_CHECK(first != pairs->end() && first->second == value,
                   "term '" + printable(key) + "' is not the first value of its key in '" + printable(query) +
                       "'");
    }
    for (const auto &p : *pairs)
        FUZZ_CHECK(std::any_of(terms.begin(), terms.end(), [&](const auto &t) { return t.first == p.first; }),
                   "key '" + printable(p.first) + "' of '" + printable(query) + "' has no term");

    // A connection with exactly these tags is selected, and without the first one it is not.
    // Tag values are never empty, so a term with an empty value can match no real connection.
    if (std::all_of(terms.begin(), terms.end(), [](const auto &t) { return !t.second.empty(); })) {
        wsgw::Tags tags(terms.begin(), terms.end());
        FUZZ_CHECK(sel.matches(ConnectionId(), tags),
                   "does not match its own terms: '" + printable(query) + "'");
        tags.erase(terms.front().first);
        FUZZ_CHECK(!sel.matches(ConnectionId(), tags), "matches without a term: '" + printable(query) + "'");
    }
}

void checkIds(std::string_view query, const Selector &sel) {
    auto pairs = wsgw::parseForm(query);
    FUZZ_CHECK(pairs.has_value(), "the selector parsed but the form did not: '" + printable(query) + "'");
    auto idPair = std::find_if(pairs->begin(), pairs->end(), [](const auto &p) { return p.first == "id"; });
    FUZZ_CHECK(idPair != pairs->end(), "Ids from a query without an id key: '" + printable(query) + "'");
    std::vector<std::string_view> items = splitCommas(idPair->second);
    std::vector<std::string> lowered;
    for (std::string_view item : items) {
        lowered.push_back(lowerAscii(item));
        // ConnectionId's own round trip: the canonical form is the text in lower case.
        if (auto id = ConnectionId::parse(item))
            FUZZ_CHECK(id->toString() == lowered.back(),
                       "ConnectionId does not print as parsed: '" + printable(item) + "'");
    }
    const auto &ids = sel.ids();
    FUZZ_CHECK(!ids.empty() && ids.size() <= items.size(),
               "id count out of range: '" + printable(query) + "'");
    for (std::size_t i = 0; i < ids.size(); ++i) {
        FUZZ_CHECK(i == 0 || ids[i - 1] < ids[i], "ids not sorted or not unique: '" + printable(query) + "'");
        FUZZ_CHECK(std::find(lowered.begin(), lowered.end(), ids[i].toString()) != lowered.end(),
                   "id " + ids[i].toString() + " is not in '" + printable(query) + "'");
    }
    FUZZ_CHECK(sel.matches(ids.back(), {}), "does not match its own id: '" + printable(query) + "'");
    bool hasNil = std::binary_search(ids.begin(), ids.end(), ConnectionId());
    FUZZ_CHECK(sel.matches(ConnectionId(), {{"id", "x"}}) == hasNil,
               "nil id match wrong: '" + printable(query) + "'");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    std::string_view query(reinterpret_cast<const char *>(data), size);
    std::string error;
    auto sel = Selector::parse(query, &error);
    if (!sel) {
        checkError(query, error);
        return 0;
    }

    switch (sel->kind()) {
    case Selector::Kind::None:
        FUZZ_CHECK(sel->tags().empty() && sel->ids().empty(),
                   "None with content: '" + printable(query) + "'");
        FUZZ_CHECK(!sel->matches(ConnectionId(), {}), "None matches: '" + printable(query) + "'");
        break;
    case Selector::Kind::All:
        // Only toString()'s own form of all() parses to All.
        FUZZ_CHECK(query == "*", "parse yielded All: '" + printable(query) + "'");
        FUZZ_CHECK(sel->tags().empty() && sel->ids().empty(), "All with content: '" + printable(query) + "'");
        FUZZ_CHECK(sel->matches(ConnectionId(), {}), "All does not match: '" + printable(query) + "'");
        break;
    case Selector::Kind::AllOf:
        checkTags(query, *sel);
        break;
    case Selector::Kind::Ids:
        checkIds(query, *sel);
        break;
    }

    std::string text = sel->toString();
    std::string again;
    auto reparsed = Selector::parse(text, &again);
    FUZZ_CHECK(reparsed.has_value(),
               "toString '" + printable(text) + "' of '" + printable(query) + "' does not parse: " + again);
    FUZZ_CHECK(*reparsed == *sel,
               "toString '" + printable(text) + "' of '" + printable(query) + "' parses to another selector");
    FUZZ_CHECK(reparsed->toString() == text, "toString of '" + printable(text) + "' is not canonical");
    return 0;
}
