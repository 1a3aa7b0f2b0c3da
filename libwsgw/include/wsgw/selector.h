#pragma once

#include <wsgw/connection_id.h>
#include <wsgw/export.h>
#include <wsgw/tags.h>

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
/// The key `id` is the selector's own: a tag named `id` can never be selected, so transports
/// refuse it as a tag name (kSelectorIdKey).
/// The query key that selects by connection id; not usable as a tag name.
inline constexpr std::string_view kSelectorIdKey = "id";

class WSGW_EXPORT Selector {
public:
    enum class Kind {
        None, ///< matches nothing
        All,  ///< matches every connection
        AllOf, ///< every (key, value) in tags() must be present
        Ids,  ///< exactly the connections in ids()
    };

    /// Matches nothing.
    Selector() = default;

    static Selector none() { return Selector(); }
    static Selector all();
    /// AND of the pairs; a repeated key keeps its first value; an empty list matches nothing.
    static Selector withTags(TagList pairs);
    /// Those ids (duplicates removed); an empty list matches nothing.
    static Selector withIds(std::vector<ConnectionId> ids);

    /// Parses a URL query string (without the leading '?'); `*` is all(). On malformed input (a bad
    /// %-escape, an empty key) returns nullopt and puts a message naming the position in
    /// `*error`.
    [[nodiscard]] static std::optional<Selector> parse(std::string_view query, std::string *error = nullptr);

    Kind kind() const noexcept { return kind_; }
    /// Kind::AllOf: the terms, sorted by key, one per key.
    const TagList &tags() const noexcept { return tags_; }
    /// Kind::Ids: the ids, sorted and unique.
    const std::vector<ConnectionId> &ids() const noexcept { return ids_; }

    /// Whether a connection with these tags and this id is selected.
    bool matches(ConnectionId id, const Tags &tags) const;

    /// A canonical query string that parses back to an equal selector ("" for None, "*" for All).
    std::string toString() const;

    friend bool operator==(const Selector &a, const Selector &b) {
        return a.kind_ == b.kind_ && a.tags_ == b.tags_ && a.ids_ == b.ids_;
    }

private:
    Kind kind_ = Kind::None;
    TagList tags_;
    std::vector<ConnectionId> ids_;
};

} // namespace wsgw
