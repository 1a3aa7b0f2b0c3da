// Fuzz target: wsgw::Selector::parse, the control API's query-string selectors, and
// Selector::parseJson, the JSON form of the /v1 API (an input that starts with '{').
//
// JSON inputs: a failure has a message naming a clause (or "selector:", "not JSON:"); a parsed
// selector's toJson() and toString() read back to an equal selector and print the same again;
// a Where selector's clauses are canonical (sorted, unique); and a Registry holding connections
// built from the input's own keys and values selects exactly those that matches() accepts (the
// index walk against the plain definition).
//
// Query inputs: the query string (without '?'). Besides "no crash, no leak, no undefined
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

#include <wsgw/connection.h>
#include <wsgw/registry.h>
#include <wsgw/selector.h>

#include <memory>

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

// A connection that only needs an id: the registry never sends to it here.
class Bare final : public wsgw::Connection {
public:
    explicit Bare(ConnectionId id) : Connection(id) {}
    wsgw::SendStatus send(const wsgw::MessagePtr &) override { return wsgw::SendStatus::Queued; }
    void close(std::uint16_t, std::string_view) override {}
    std::string remoteAddress() const override { return {}; }
    std::string_view endpoint() const override { return "/"; }
};

template <class T> bool sortedUnique(const std::vector<T> &v) {
    for (std::size_t i = 1; i < v.size(); ++i)
        if (!(v[i - 1] < v[i])) return false;
    return true;
}

void checkJson(std::string_view input) {
    std::string error;
    auto sel = Selector::parseJson(input, &error);
    if (!sel) {
        static const char *const starts[] = {"selector: ", "not JSON: ", "all", "any", "not", "has", "ids", "exclude_ids"};
        FUZZ_CHECK(std::any_of(std::begin(starts), std::end(starts),
                               [&](const char *p) { return error.rfind(p, 0) == 0; }) ||
                       error.find(": unknown clause") != std::string::npos,
                   "unexpected message '" + printable(error) + "' for '" + printable(input) + "'");
        return;
    }
    for (const std::string &text : {sel->toJson(), sel->toString()}) {
        std::string again;
        auto back = Selector::fromString(text, &again);
        FUZZ_CHECK(back.has_value(), "'" + printable(text) + "' of '" + printable(input) + "' does not read back: " + again);
        FUZZ_CHECK(*back == *sel, "'" + printable(text) + "' of '" + printable(input) + "' reads back to another selector");
        FUZZ_CHECK(back->toJson() == sel->toJson(), "toJson of '" + printable(input) + "' is not canonical");
    }
    // The connections: tags from every key and value the selector names, in a few combinations,
    // and ids from its id lists.
    std::vector<std::string> keys, values;
    std::vector<ConnectionId> ids;
    if (const wsgw::SelectorClauses *c = sel->clauses()) {
        FUZZ_CHECK(sortedUnique(c->has) && sortedUnique(c->excludeIds) && (!c->ids || sortedUnique(*c->ids)),
                   "clauses not canonical: '" + printable(input) + "'");
        for (const auto &[k, v] : c->all) keys.push_back(k), values.push_back(v);
        for (const auto &[k, v] : c->none) keys.push_back(k), values.push_back(v);
        for (const auto &[k, vs] : c->any) {
            keys.push_back(k);
            FUZZ_CHECK(!vs.empty() && sortedUnique(vs), "any values not canonical: '" + printable(input) + "'");
            values.insert(values.end(), vs.begin(), vs.end());
        }
        keys.insert(keys.end(), c->has.begin(), c->has.end());
        if (c->ids) ids = *c->ids;
        ids.insert(ids.end(), c->excludeIds.begin(), c->excludeIds.end());
    }
    for (const auto &[k, v] : sel->tags()) keys.push_back(k), values.push_back(v);
    ids.insert(ids.end(), sel->ids().begin(), sel->ids().end());
    keys.resize(std::min<std::size_t>(keys.size(), 6));
    values.resize(std::min<std::size_t>(values.size(), 6));
    values.push_back("other");
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    ids.resize(std::min<std::size_t>(ids.size(), 8));

    std::vector<std::unique_ptr<Bare>> conns;
    wsgw::Registry reg;
    std::size_t expected = 0;
    for (std::size_t n = 0; n < 64; ++n) {
        // Connection n has key i when bit i of n is set, with a value picked from n.
        wsgw::TagList tags;
        for (std::size_t i = 0; i < keys.size(); ++i)
            if (n >> i & 1) tags.emplace_back(keys[i], values[(n + i) % values.size()]);
        ConnectionId id = n < ids.size() ? ids[n] : ConnectionId::random();
        if (std::any_of(conns.begin(), conns.end(), [&](const auto &c) { return c->id() == id; })) continue;
        conns.push_back(std::make_unique<Bare>(id));
        reg.add(*conns.back(), tags);
        wsgw::Tags own;
        for (const auto &[k, v] : tags) own[k] = v; // a repeated key keeps its last value, as add() does
        expected += sel->matches(id, own);
    }
    std::size_t visited = reg.match(*sel, [](wsgw::Connection &) {});
    FUZZ_CHECK(visited == expected && reg.count(*sel) == expected,
               "the registry selects " + std::to_string(visited) + " but matches() " + std::to_string(expected) +
                   " for '" + printable(input) + "'");
    for (auto &c : conns) reg.remove(c->id());
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    std::string_view query(reinterpret_cast<const char *>(data), size);
    if (!query.empty() && query.front() == '{') {
        checkJson(query);
        return 0;
    }
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
    case Selector::Kind::Where:
        FUZZ_CHECK(false, "the query form yielded Where: '" + printable(query) + "'");
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
