#include <wsgw/selector.h>

#include <algorithm>

namespace wsgw {

namespace {

// Keeps the first value of each key, then sorts by key.
TagList firstPerKey(TagList pairs) {
    std::stable_sort(pairs.begin(), pairs.end(), [](const auto &a, const auto &b) { return a.first < b.first; });
    pairs.erase(std::unique(pairs.begin(), pairs.end(), [](const auto &a, const auto &b) { return a.first == b.first; }),
                pairs.end());
    return pairs;
}

} // namespace

Selector Selector::all() {
    Selector s;
    s.kind_ = Kind::All;
    return s;
}

Selector Selector::withTags(TagList pairs) {
    Selector s;
    if (pairs.empty()) return s;
    s.kind_ = Kind::AllOf;
    s.tags_ = firstPerKey(std::move(pairs));
    return s;
}

Selector Selector::withIds(std::vector<ConnectionId> ids) {
    Selector s;
    if (ids.empty()) return s;
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    s.kind_ = Kind::Ids;
    s.ids_ = std::move(ids);
    return s;
}

std::optional<Selector> Selector::parse(std::string_view query, std::string *error) {
    if (query == "*") return all(); // toString()'s form of all()
    auto pairs = parseForm(query, error);
    if (!pairs) return std::nullopt;
    auto idPair = std::find_if(pairs->begin(), pairs->end(), [](const auto &p) { return p.first == kSelectorIdKey; });
    if (idPair == pairs->end()) return withTags(std::move(*pairs));

    std::vector<ConnectionId> ids;
    std::string_view list = idPair->second;
    std::size_t start = 0;
    while (start <= list.size()) {
        std::size_t end = list.find(',', start);
        if (end == std::string_view::npos) end = list.size();
        // An item that is not a UUID cannot name a connection; like an unknown id it selects none.
        if (auto id = ConnectionId::parse(list.substr(start, end - start))) ids.push_back(*id);
        start = end + 1;
    }
    // Ids, not tags: `id=` with nothing usable selects no one rather than falling back to tags.
    return withIds(std::move(ids));
}

bool Selector::matches(ConnectionId id, const Tags &tags) const {
    switch (kind_) {
    case Kind::None:
        return false;
    case Kind::All:
        return true;
    case Kind::Ids:
        return std::binary_search(ids_.begin(), ids_.end(), id);
    case Kind::AllOf:
        return std::all_of(tags_.begin(), tags_.end(), [&](const auto &term) {
            auto it = tags.find(term.first);
            return it != tags.end() && it->second == term.second;
        });
    }
    return false;
}

std::string Selector::toString() const {
    switch (kind_) {
    case Kind::None:
        return {};
    case Kind::All:
        return "*";
    case Kind::AllOf:
        return encodeForm(tags_);
    case Kind::Ids: {
        std::string out = "id=";
        for (std::size_t i = 0; i < ids_.size(); ++i) {
            if (i) out += "%2C";
            out += ids_[i].toString();
        }
        return out;
    }
    }
    return {};
}

} // namespace wsgw
