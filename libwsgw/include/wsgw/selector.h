#pragma once

#include <wsgw/connection_id.h>
#include <wsgw/export.h>
#include <wsgw/tags.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wsgw {

/// Which connections a command is for. Value type; thread-compatible (share a const one freely).
///
/// The query-string form is the compatibility contract of the control API:
///  - every key=value must match (AND): `group=a&admin=1`;
///  - `id=a,b,c` selects exactly those connection ids and ignores every other key; empty items
///    are skipped and an item that is not a UUID matches no connection;
///  - a repeated key keeps its first value (`a=1&a=2` is `a=1`), as the original gateway did;
///  - a key with an empty value (`a=` or `a`) matches no connection, because a tag's value is
///    never empty;
///  - an empty query matches no connection: `POST /send` with no selector reaches no one, as in
///    the original. Use Selector::all() where "everyone" is meant;
///  - the query `*` alone is Selector::all() (what toString() gives for it, so the two round-trip).
///    wsgwd's control API does not pass `*` here: there `/send?*` keeps the original's meaning,
///    a key `*` with no value, which selects no one (see README, control API).
///
/// The JSON form (the control API's /v1 endpoints; parseJson(), toJson()) is an AND of clauses:
///   {"all":{"k":"v"}, "any":{"k":["v1","v2"]}, "not":{"k":"v"}, "has":["k"],
///    "ids":["<uuid>",...], "exclude_ids":["<uuid>",...]}
/// every clause optional; `{}` selects every connection (the AND of nothing), `"ids":[]` none.
/// See SelectorClauses for what each means.
///
/// The key `id` is the selector's own: a tag named `id` can never be selected, so transports
/// refuse it as a tag name (kSelectorIdKey).
/// The query key that selects by connection id; not usable as a tag name.
inline constexpr std::string_view kSelectorIdKey = "id";

/// The clauses of a selector, each optional; a connection is selected when it satisfies all of
/// them. Value type. Selector::where() puts them in canonical order (sorted, duplicates merged).
struct SelectorClauses {
    TagList all;   ///< has every key with that value ("all")
    /// For each key, has it with one of the values ("any"); an empty value list matches nothing.
    std::vector<std::pair<std::string, std::vector<std::string>>> any;
    TagList none;  ///< has none of these key=value tags ("not"; a connection without the key passes)
    std::vector<std::string> has; ///< has each key, whatever its value ("has")
    /// Set: is one of these connections ("ids"; an empty list matches nothing). Unset: any.
    std::optional<std::vector<ConnectionId>> ids;
    std::vector<ConnectionId> excludeIds; ///< is none of these connections ("exclude_ids")

    friend bool operator==(const SelectorClauses &a, const SelectorClauses &b) {
        return a.all == b.all && a.any == b.any && a.none == b.none && a.has == b.has && a.ids == b.ids &&
               a.excludeIds == b.excludeIds;
    }
};

class WSGW_EXPORT Selector {
public:
    enum class Kind {
        None, ///< matches nothing
        All,  ///< matches every connection
        AllOf, ///< every (key, value) in tags() must be present
        Ids,  ///< exactly the connections in ids()
        Where, ///< the AND of clauses(), which no simpler kind says
    };

    /// Matches nothing.
    Selector() = default;

    static Selector none() { return Selector(); }
    static Selector all();
    /// AND of the pairs; a repeated key keeps its first value; an empty list matches nothing.
    static Selector withTags(TagList pairs);
    /// Those ids (duplicates removed); an empty list matches nothing.
    static Selector withIds(std::vector<ConnectionId> ids);

    /// The AND of `clauses`, in the simplest kind that says it: no clause is all(), only `all`
    /// is withTags(), only `ids` is withIds(), clauses no connection can meet (one key with two
    /// required values, an empty `ids` or `any` list) are none(); else Kind::Where.
    static Selector where(SelectorClauses clauses);

    /// Parses a URL query string (without the leading '?'); `*` is all(). On malformed input (a bad
    /// %-escape, an empty key) returns nullopt and puts a message naming the position in
    /// `*error`.
    [[nodiscard]] static std::optional<Selector> parse(std::string_view query, std::string *error = nullptr);

    /// Parses the JSON form (an object; see above). Stricter than the query form: an unknown
    /// clause, a value of the wrong type, an empty key or value, the key `id` (use "ids") and an
    /// id that is not a UUID are errors. On error returns nullopt and puts a message naming the
    /// clause ("any.group[1]: expected a string") in `*error`.
    [[nodiscard]] static std::optional<Selector> parseJson(std::string_view json, std::string *error = nullptr);

    /// Reads what toString() wrote: the JSON form if `text` starts with '{', else the query form.
    [[nodiscard]] static std::optional<Selector> fromString(std::string_view text, std::string *error = nullptr);

    Kind kind() const noexcept { return kind_; }
    /// Kind::AllOf: the terms, sorted by key, one per key.
    const TagList &tags() const noexcept { return tags_; }
    /// Kind::Ids: the ids, sorted and unique.
    const std::vector<ConnectionId> &ids() const noexcept { return ids_; }
    /// Kind::Where: the clauses, canonical; nullptr for the other kinds.
    const SelectorClauses *clauses() const noexcept { return where_.get(); }

    /// Whether a connection with these tags and this id is selected.
    bool matches(ConnectionId id, const Tags &tags) const;

    /// A canonical text that fromString() reads back to an equal selector: the query form ("" for
    /// None, "*" for All), the JSON form for Kind::Where.
    std::string toString() const;
    /// The JSON form of any kind (None is `{"ids":[]}`, All `{}`), canonical: parseJson() reads
    /// it back to an equal selector.
    std::string toJson() const;

    friend bool operator==(const Selector &a, const Selector &b) {
        if (a.kind_ != b.kind_ || a.tags_ != b.tags_ || a.ids_ != b.ids_) return false;
        return a.where_ == b.where_ || (a.where_ && b.where_ && *a.where_ == *b.where_);
    }

private:
    Kind kind_ = Kind::None;
    TagList tags_;
    std::vector<ConnectionId> ids_;
    std::shared_ptr<const SelectorClauses> where_; // Kind::Where; shared: selectors are copied per shard
};

} // namespace wsgw
