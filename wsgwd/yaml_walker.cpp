#include "yaml_walker.h"

#include "text_scan.h"

#include <algorithm>

namespace wsgw::daemon {

namespace {

std::size_t editDistance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j)
        row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diag = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            std::size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

std::string in(const std::string &where) {
    return where.empty() ? std::string() : where + ": ";
}

std::string unknownKey(const std::string &key, const std::string &where,
                       const std::vector<std::string_view> &known) {
    std::string msg = "unknown key '" + key + "'" + (where.empty() ? " at the top level" : " in " + where);
    std::string_view best = nearestKey(key, known);
    if (!best.empty()) return msg + ": did you mean '" + std::string(best) + "'?";
    return msg + ": known keys are " + joinNames(known);
}

} // namespace

const char *kindName(const YAML::Node &n) {
    switch (n.Type()) {
    case YAML::NodeType::Map:
        return "a map";
    case YAML::NodeType::Sequence:
        return "a list";
    case YAML::NodeType::Null:
        return "nothing";
    default:
        return "a value";
    }
}

std::string position(const std::string &file, const YAML::Mark &mark) {
    int line = mark.is_null() || mark.line < 0 ? 1 : mark.line + 1;
    int col = mark.is_null() || mark.column < 0 ? 1 : mark.column + 1;
    return (file.empty() ? std::string("<config>") : file) + ":" + std::to_string(line) + ":" +
           std::to_string(col);
}

std::string_view nearestKey(std::string_view key, const std::vector<std::string_view> &known) {
    std::string_view best;
    std::size_t bestDistance = 3;
    for (std::string_view k : known) {
        std::size_t d = editDistance(key, k);
        if (d < bestDistance) {
            bestDistance = d;
            best = k;
        }
    }
    return best;
}

void Walker::fail(const YAML::Mark &mark, std::string message) const {
    throw ConfigError{mark, std::move(message)};
}

std::vector<Entry> Walker::entries(const YAML::Node &map, const std::string &where,
                                   const std::vector<std::string_view> &known) const {
    std::vector<Entry> out;
    if (map.IsNull()) return out;
    for (const auto &pair : map) {
        const YAML::Node k = pair.first; // a handle: copies share the node
        if (!k.IsScalar())
            fail(k.Mark(), in(where) + "a key must be a name, not " + std::string(kindName(k)));
        std::string key = k.Scalar();
        for (const Entry &e : out)
            if (e.key == key)
                fail(k.Mark(), in(where) + "duplicate key '" + key + "' (first given on line " +
                                   std::to_string(e.keyNode.Mark().line + 1) + "): remove one");
        if (!known.empty() && std::find(known.begin(), known.end(), key) == known.end())
            fail(k.Mark(), unknownKey(key, where, known));
        out.push_back(Entry{key, k, pair.second});
    }
    return out;
}

std::string Walker::scalar(const Entry &e, const std::string &name, std::string_view what) const {
    if (e.value.IsNull()) fail(e.keyNode.Mark(), name + ": missing value: expected " + std::string(what));
    return scalarNode(e.value, name, what);
}

std::string Walker::scalarNode(const YAML::Node &n, const std::string &name, std::string_view what) const {
    if (n.IsNull()) fail(n.Mark(), name + ": missing value: expected " + std::string(what));
    if (!n.IsScalar())
        fail(n.Mark(), name + ": expected " + std::string(what) + ", got " + std::string(kindName(n)));
    return n.Scalar();
}

std::string Walker::nonEmpty(const Entry &e, const std::string &name, std::string_view what) const {
    std::string s = scalar(e, name, what);
    if (s.empty()) fail(e.value.Mark(), name + ": must not be empty: expected " + std::string(what));
    return s;
}

std::uint64_t Walker::number(const Entry &e, const std::string &name, std::uint64_t min,
                             std::uint64_t max) const {
    std::string what = "a whole number " + std::to_string(min) + ".." + std::to_string(max);
    std::string s = scalar(e, name, what);
    if (s.empty() || !std::all_of(s.begin(), s.end(), isDigit))
        fail(e.value.Mark(), name + ": expected " + what + ", got '" + s + "'");
    std::uint64_t v = UINT64_MAX; // more than 19 digits: too large anyway
    if (s.size() <= 19) parseDecimal(s, UINT64_MAX, v);
    if (v < min) fail(e.value.Mark(), name + ": must be at least " + std::to_string(min) + ", got " + s);
    if (v > max) fail(e.value.Mark(), name + ": must be at most " + std::to_string(max) + ", got " + s);
    return v;
}

bool Walker::boolean(const Entry &e, const std::string &name) const {
    std::string s = lower(scalar(e, name, "true or false"));
    if (s == "true" || s == "yes" || s == "on") return true;
    if (s == "false" || s == "no" || s == "off") return false;
    fail(e.value.Mark(), name + ": expected true or false, got '" + e.value.Scalar() + "'");
}

std::string Walker::choice(const Entry &e, const std::string &name,
                           const std::vector<std::string_view> &choices) const {
    std::string s = scalar(e, name, "one of " + joinNames(choices));
    if (std::find(choices.begin(), choices.end(), s) == choices.end())
        fail(e.value.Mark(), name + ": unknown value '" + s + "': use one of " + joinNames(choices));
    return s;
}

const YAML::Node &Walker::map(const Entry &e, const std::string &name, std::string_view what) const {
    if (!e.value.IsNull() && !e.value.IsMap())
        fail(e.value.Mark(), name + ": expected " + std::string(what) + ", got " + kindName(e.value));
    return e.value;
}

const YAML::Node &Walker::list(const Entry &e, const std::string &name, std::string_view what) const {
    if (!e.value.IsNull() && !e.value.IsSequence())
        fail(e.value.Mark(), name + ": expected " + std::string(what) + ", got " + kindName(e.value));
    return e.value;
}

YAML::Mark Walker::charMark(const YAML::Node &n, std::size_t index, bool *exact) const {
    YAML::Mark m = n.Mark();
    *exact = false;
    if (m.pos < 0 || static_cast<std::size_t>(m.pos) >= text_.size()) return m;
    auto start = static_cast<std::size_t>(m.pos);
    if (text_[start] == '"' || text_[start] == '\'') ++start;
    const std::string &value = n.Scalar();
    if (index > value.size() || value.find('\n') != std::string::npos ||
        text_.substr(start, value.size()) != value)
        return m;
    *exact = true;
    m.column += static_cast<int>(start - static_cast<std::size_t>(m.pos) + index);
    m.pos = static_cast<int>(start + index);
    return m;
}

void Walker::failWithin(const YAML::Node &n, const std::string &prefix, std::string inner) const {
    static constexpr std::string_view kAt = " at column ";
    std::size_t at = inner.find(kAt);
    if (at != std::string::npos) {
        std::size_t digits = at + kAt.size(), end = digits;
        while (end < inner.size() && isDigit(inner[end]))
            ++end;
        std::uint64_t col = 0;
        if (parseDecimal(std::string_view(inner).substr(digits, end - digits), 1u << 30, col) && col > 0) {
            bool exact = false;
            YAML::Mark m = charMark(n, static_cast<std::size_t>(col - 1), &exact);
            if (exact) inner.erase(at, end - at);
            fail(m, prefix + inner);
        }
    }
    fail(n.Mark(), prefix + inner);
}

} // namespace wsgw::daemon
