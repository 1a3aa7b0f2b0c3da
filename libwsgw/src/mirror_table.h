#pragma once

// The coalescing rules of a connection mirror: at most one pending state per connection, its
// latest, merged so that a later write still has everything it needs and an open and a close
// that were never written amount to nothing. Pure (no I/O, no locks) so that the rules can be
// tested on their own; RedisMirror keeps one table per shard (behind a mutex) and one on its
// writer thread.

#include <wsgw/connection_id.h>
#include <wsgw/tags.h>

#include <tsl/robin_map.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace wsgw {

/// What a mirror still has to write for one connection. Value type.
struct MirrorState {
    enum class Kind : std::uint8_t {
        Upsert, ///< write everything: endpoint, addr and the tags (replacing the stored tags)
        ReplaceTags, ///< replace the stored tags; the rest was written before
        Delete, ///< remove the connection's keys
    };
    Kind kind = Kind::Delete;
    /// Upsert only: nothing about this connection was ever sent to the copy, so a close that
    /// comes before the first write cancels the open instead of deleting anything.
    bool fresh = false;
    std::uint32_t shard = 0; ///< the connection's shard (a resync asks that shard again)
    std::string endpoint;    ///< Upsert only
    std::string addr;        ///< Upsert only
    /// Upsert and ReplaceTags: all of the connection's tags, ordered by key. Flat, not a Tags
    /// map: a copy is one allocation (short strings are inline), which is what a shard pays for
    /// each change it records.
    TagList tags;

    static MirrorState upsert(std::uint32_t shard, std::string endpoint, std::string addr, const Tags &tags, bool fresh) {
        MirrorState s;
        s.kind = Kind::Upsert;
        s.fresh = fresh;
        s.shard = shard;
        s.endpoint = std::move(endpoint);
        s.addr = std::move(addr);
        s.tags = flat(tags);
        return s;
    }
    static MirrorState tagsOnly(std::uint32_t shard, const Tags &tags) {
        MirrorState s;
        s.kind = Kind::ReplaceTags;
        s.shard = shard;
        s.tags = flat(tags);
        return s;
    }
    static MirrorState remove(std::uint32_t shard) {
        MirrorState s;
        s.shard = shard;
        return s;
    }

    static TagList flat(const Tags &tags) {
        TagList out;
        out.reserve(tags.size());
        for (const auto &[k, v] : tags) out.emplace_back(k, v);
        return out;
    }
};

/// Connection id -> its pending MirrorState, merged by put().
///
/// Thread-compatible.
class MirrorTable {
public:
    /// Two 8-byte compares instead of a call to memcmp: a shard looks an id up for each change.
    struct IdEqual {
        bool operator()(const ConnectionId &a, const ConnectionId &b) const noexcept {
            std::uint64_t x[2], y[2];
            std::memcpy(x, a.bytes().data(), 16);
            std::memcpy(y, b.bytes().data(), 16);
            return x[0] == y[0] && x[1] == y[1];
        }
    };
    /// Open addressing with the states inline: a lookup is one probe into one array (a node map
    /// cost a cache miss per node walked), and a table keeps its buckets when it is emptied, so
    /// a shard's table stops allocating once it has seen its busiest cycle.
    using Map = tsl::robin_map<ConnectionId, MirrorState, ConnectionIdHash, IdEqual>;

    /// Merges `newer` (what happened after everything this table holds for `id`):
    ///  - an Upsert replaces what is pending; it stays fresh only if what it replaces was a
    ///    fresh Upsert too;
    ///  - ReplaceTags replaces the tags of a pending Upsert or ReplaceTags (an Upsert keeps its
    ///    endpoint and addr, so the write that follows still writes everything);
    ///  - a Delete cancels a fresh Upsert (nothing is left to write) and replaces anything else;
    ///  - a Delete is final: an Upsert or ReplaceTags for the same id after it is ignored (ids
    ///    are never reused, so only a programming error could produce one).
    void put(ConnectionId id, MirrorState &&newer) {
        auto [it, inserted] = states_.try_emplace(id);
        MirrorState &old = it.value();
        if (inserted) {
            old = std::move(newer);
            return;
        }
        switch (newer.kind) {
        case MirrorState::Kind::Upsert:
            if (old.kind == MirrorState::Kind::Delete) return;
            newer.fresh = newer.fresh && old.kind == MirrorState::Kind::Upsert && old.fresh;
            old = std::move(newer);
            return;
        case MirrorState::Kind::ReplaceTags:
            if (old.kind == MirrorState::Kind::Delete) return;
            old.tags = std::move(newer.tags);
            return;
        case MirrorState::Kind::Delete:
            if (old.kind == MirrorState::Kind::Upsert && old.fresh)
                states_.erase(it);
            else
                old = std::move(newer);
            return;
        }
    }

    /// Merges every state of `newer` (states that came after all of this table's) and leaves
    /// `newer` empty, keeping its buckets for reuse.
    void absorb(MirrorTable &newer) {
        for (auto it = newer.states_.begin(); it != newer.states_.end(); ++it) put(it->first, std::move(it.value()));
        newer.states_.clear();
    }

    /// Exchanges contents (O(1)): how a writer takes everything pending at once.
    void swap(MirrorTable &other) noexcept { states_.swap(other.states_); }

    /// Gives back the memory of a burst: a table left with far more buckets than states
    /// shrinks to fit (walking a table costs its buckets, not its states).
    void compact() {
        if (states_.bucket_count() > kCompactAbove && states_.size() * 8 < states_.bucket_count()) states_.rehash(0);
    }

    std::size_t size() const noexcept { return states_.size(); }
    bool empty() const noexcept { return states_.empty(); }
    std::size_t bucketCount() const noexcept { return states_.bucket_count(); }
    MirrorState *find(ConnectionId id) {
        auto it = states_.find(id);
        return it == states_.end() ? nullptr : &it.value();
    }
    const MirrorState *find(ConnectionId id) const {
        auto it = states_.find(id);
        return it == states_.end() ? nullptr : &it->second;
    }
    /// Every id with a pending state, in table order.
    std::vector<ConnectionId> ids() const {
        std::vector<ConnectionId> out;
        out.reserve(states_.size());
        for (const auto &entry : states_) out.push_back(entry.first);
        return out;
    }
    void erase(ConnectionId id) { states_.erase(id); }
    void clear() noexcept { states_.clear(); }

    static constexpr std::size_t kCompactAbove = 4096;

private:
    Map states_;
};

} // namespace wsgw
