#pragma once

#include <wsgw/connection.h>
#include <wsgw/connection_id.h>
#include <wsgw/export.h>
#include <wsgw/selector.h>
#include <wsgw/tags.h>

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace wsgw {

/// Key -> value -> number of connections with that tag; the /tree view.
using TagTree = std::map<std::string, std::map<std::string, std::size_t>>;

/// Memory the registry holds, as it accounts for it (container capacity, interned strings).
struct RegistryMemory {
    std::size_t connections = 0;     ///< registered connections
    std::size_t internedStrings = 0; ///< distinct keys and values
    std::size_t bytes = 0;           ///< estimated bytes held, excluding allocator overhead
};

/// The tag-indexed set of connections of one shard.
///
/// Index: key -> value -> posting list of connections, plus each connection's own tags. Key and
/// value strings are interned (stored once, reference-counted), so a connection costs a compact
/// record and a few 4-byte posting entries. A value disappears with its last connection, a key
/// with its last value.
///
/// Matching an AND selector walks the smallest posting list among its terms and checks the other
/// terms on each candidate: the cost grows with the smallest list and the number of terms, not
/// with the size of the others.
///
/// Thread-compatible: in wsgwd each shard owns one and only its thread touches it.
class WSGW_EXPORT Registry {
public:
    Registry();
    ~Registry();
    Registry(const Registry &) = delete;
    Registry &operator=(const Registry &) = delete;

    /// Registers `conn` (borrowed: it must outlive its registration) under conn.id() with the
    /// given tags (a repeated key keeps its last value; empty values are ignored).
    /// Returns false and changes nothing if that id is already registered.
    bool add(Connection &conn, const TagList &initial = {});

    /// Unregisters the connection. Unknown id: returns false, no-op.
    bool remove(ConnectionId id) noexcept;

    /// The connection registered under `id`, or nullptr.
    Connection *find(ConnectionId id) const noexcept;

    /// Applies `changes` in order to one connection: a non-empty value sets the tag, an empty
    /// value deletes it (deleting an absent tag is a no-op). Returns false for an unknown id.
    bool setTags(ConnectionId id, const TagList &changes);

    /// The connection's tags; empty for an unknown id.
    Tags tags(ConnectionId id) const;
    /// How many tags the connection has; 0 for an unknown id.
    std::size_t tagCount(ConnectionId id) const noexcept;
    /// The value of one tag, or an empty view. The view stays valid until the registry changes.
    std::string_view tag(ConnectionId id, std::string_view key) const noexcept;

    /// Calls `visit` for each selected connection and returns how many there were. The selection
    /// is taken before the first call, so `visit` may change tags or remove connections
    /// (including the visited one): a connection removed before its turn is skipped.
    std::size_t match(const Selector &sel, const std::function<void(Connection &)> &visit);
    /// How many connections `sel` selects.
    std::size_t count(const Selector &sel) const;

    /// Number of registered connections.
    std::size_t size() const noexcept;

    /// Every key with its values and their connection counts.
    TagTree tree() const;

    /// Calls `visit` with each registered connection and its tags, in no particular order.
    /// `visit` must not change the registry.
    void forEach(const std::function<void(Connection &, const Tags &)> &visit) const;

    RegistryMemory memory() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace wsgw
