#include <wsgw/selector.h>

#include <nlohmann/json.hpp>

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

template <class T> void sortUnique(std::vector<T> &v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
}

// Sorts by key and merges repeated keys. `merge(a, b)` folds b's value into a's and returns
// false when the two can never hold together (the clause then matches nothing).
template <class V, class Merge>
bool byKey(std::vector<std::pair<std::string, V>> &pairs, Merge merge) {
    std::stable_sort(pairs.begin(), pairs.end(), [](const auto &a, const auto &b) { return a.first < b.first; });
    std::size_t out = 0;
    bool ok = true;
    for (std::size_t i = 0; i < pairs.size(); ++i) {
        if (out > 0 && pairs[out - 1].first == pairs[i].first) {
            ok = merge(pairs[out - 1].second, pairs[i].second) && ok;
            continue;
        }
        if (out != i) pairs[out] = std::move(pairs[i]);
        ++out;
    }
    pairs.resize(out);
    return ok;
}

using nlohmann::json;

// A parse error of the JSON form: where ("any.group[1]") and what.
struct JsonError {
    std::string where;
    std::string what;
};

const std::string &stringAt(const json &j, const std::string &where) {
    if (!j.is_string()) throw JsonError{where, "expected a string"};
    const std::string &s = j.get_ref<const std::string &>();
    if (s.empty()) throw JsonError{where, "empty (a tag's key and value are never empty)"};
    return s;
}

const std::string &keyAt(const std::string &key, const std::string &where) {
    if (key.empty()) throw JsonError{where, "an empty key"};
    if (key == kSelectorIdKey) throw JsonError{where, "`id` is not a tag (select connections by id with \"ids\")"};
    return key;
}

const json &objectAt(const json &j, const std::string &where) {
    if (!j.is_object()) throw JsonError{where, "expected an object"};
    return j;
}

const json &arrayAt(const json &j, const std::string &where) {
    if (!j.is_array()) throw JsonError{where, "expected an array"};
    return j;
}

std::vector<ConnectionId> idsAt(const json &j, const std::string &where) {
    std::vector<ConnectionId> ids;
    std::size_t i = 0;
    for (const json &item : arrayAt(j, where)) {
        std::string at = where + "[" + std::to_string(i++) + "]";
        if (!item.is_string()) throw JsonError{at, "expected a connection id (a string)"};
        auto id = ConnectionId::parse(item.get_ref<const std::string &>());
        if (!id) throw JsonError{at, "not a connection id (a UUID): " + item.get<std::string>()};
        ids.push_back(*id);
    }
    return ids;
}

SelectorClauses clausesOf(const json &j) {
    objectAt(j, "selector");
    SelectorClauses c;
    for (const auto &[clause, value] : j.items()) {
        if (clause == "all" || clause == "not") {
            TagList &pairs = clause == "all" ? c.all : c.none;
            for (const auto &[k, v] : objectAt(value, clause).items())
                pairs.emplace_back(keyAt(k, clause), stringAt(v, clause + "." + k));
        } else if (clause == "any") {
            for (const auto &[k, list] : objectAt(value, clause).items()) {
                std::string at = clause + "." + k;
                std::vector<std::string> values;
                std::size_t i = 0;
                for (const json &v : arrayAt(list, at)) values.push_back(stringAt(v, at + "[" + std::to_string(i++) + "]"));
                c.any.emplace_back(keyAt(k, clause), std::move(values));
            }
        } else if (clause == "has") {
            std::size_t i = 0;
            for (const json &k : arrayAt(value, clause)) {
                std::string at = clause + "[" + std::to_string(i++) + "]";
                c.has.push_back(keyAt(stringAt(k, at), at));
            }
        } else if (clause == "ids") {
            c.ids = idsAt(value, clause);
        } else if (clause == "exclude_ids") {
            c.excludeIds = idsAt(value, clause);
        } else {
            throw JsonError{clause, "unknown clause (expected all, any, not, has, ids or exclude_ids)"};
        }
    }
    return c;
}

json jsonOf(const SelectorClauses &c) {
    json j = json::object();
    auto pairs = [](const TagList &list) {
        json o = json::object();
        for (const auto &[k, v] : list) o[k] = v;
        return o;
    };
    auto ids = [](const std::vector<ConnectionId> &list) {
        json a = json::array();
        for (const ConnectionId &id : list) a.push_back(id.toString());
        return a;
    };
    if (!c.all.empty()) j["all"] = pairs(c.all);
    if (!c.any.empty()) {
        json o = json::object();
        for (const auto &[k, values] : c.any) o[k] = values;
        j["any"] = std::move(o);
    }
    if (!c.none.empty()) j["not"] = pairs(c.none);
    if (!c.has.empty()) j["has"] = c.has;
    if (c.ids) j["ids"] = ids(*c.ids);
    if (!c.excludeIds.empty()) j["exclude_ids"] = ids(c.excludeIds);
    return j;
}

} // namespace

Selector Selector::where(SelectorClauses c) {
    bool possible = byKey(c.all, [](std::string &a, const std::string &b) { return a == b; });
    possible = byKey(c.any, [](std::vector<std::string> &a, std::vector<std::string> &b) {
                   // Both lists must hold: the values in both.
                   sortUnique(a);
                   sortUnique(b);
                   std::vector<std::string> both;
                   std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both));
                   a = std::move(both);
                   return true;
               }) && possible;
    for (auto &[k, values] : c.any) {
        sortUnique(values);
        if (values.empty()) possible = false;
    }
    sortUnique(c.none);
    sortUnique(c.has);
    if (c.ids) {
        sortUnique(*c.ids);
        if (c.ids->empty()) possible = false;
    }
    sortUnique(c.excludeIds);
    if (!possible) return none();

    // The simpler kinds where they say the same: their paths are the fast ones and their
    // toString() is the query form every node of a cluster reads.
    const bool onlyAll = c.any.empty() && c.none.empty() && c.has.empty() && !c.ids && c.excludeIds.empty();
    if (onlyAll) return c.all.empty() ? all() : withTags(std::move(c.all));
    if (c.ids && c.all.empty() && c.any.empty() && c.none.empty() && c.has.empty()) {
        std::vector<ConnectionId> ids;
        std::set_difference(c.ids->begin(), c.ids->end(), c.excludeIds.begin(), c.excludeIds.end(),
                            std::back_inserter(ids));
        return withIds(std::move(ids));
    }
    Selector s;
    s.kind_ = Kind::Where;
    s.where_ = std::make_shared<const SelectorClauses>(std::move(c));
    return s;
}

std::optional<Selector> Selector::parseJson(std::string_view text, std::string *error) {
    try {
        json j = json::parse(text);
        return where(clausesOf(j));
    } catch (const JsonError &e) {
        if (error) *error = e.where + ": " + e.what;
    } catch (const json::parse_error &e) {
        if (error) *error = "not JSON: " + std::string(e.what());
    } catch (const std::exception &e) {
        if (error) *error = e.what();
    }
    return std::nullopt;
}

std::optional<Selector> Selector::fromString(std::string_view text, std::string *error) {
    if (!text.empty() && text.front() == '{') return parseJson(text, error);
    return parse(text, error);
}

std::string Selector::toJson() const {
    SelectorClauses c;
    switch (kind_) {
    case Kind::None:
        c.ids.emplace();
        break;
    case Kind::All:
        break;
    case Kind::AllOf:
        c.all = tags_;
        break;
    case Kind::Ids:
        c.ids = ids_;
        break;
    case Kind::Where:
        c = *where_;
        break;
    }
    return jsonOf(c).dump(-1, ' ', false, json::error_handler_t::replace);
}

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
    case Kind::Where: {
        const SelectorClauses &c = *where_;
        auto valueOf = [&](const std::string &key) -> const std::string * {
            auto it = tags.find(key);
            return it == tags.end() ? nullptr : &it->second;
        };
        for (const auto &[k, v] : c.all) {
            const std::string *have = valueOf(k);
            if (!have || *have != v) return false;
        }
        for (const auto &[k, values] : c.any) {
            const std::string *have = valueOf(k);
            if (!have || !std::binary_search(values.begin(), values.end(), *have)) return false;
        }
        for (const auto &[k, v] : c.none) {
            const std::string *have = valueOf(k);
            if (have && *have == v) return false;
        }
        for (const std::string &k : c.has)
            if (!valueOf(k)) return false;
        if (c.ids && !std::binary_search(c.ids->begin(), c.ids->end(), id)) return false;
        return !std::binary_search(c.excludeIds.begin(), c.excludeIds.end(), id);
    }
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
    case Kind::Where:
        return toJson();
    }
    return {};
}

} // namespace wsgw
