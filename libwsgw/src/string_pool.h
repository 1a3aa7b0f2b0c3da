#pragma once

#include <tsl/robin_set.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wsgw {

/// Interned, reference-counted strings with dense 32-bit ids. Each distinct string is stored once
/// however many connections use it; it is freed when its last reference goes.
///
/// Thread-compatible.
class StringPool {
public:
    StringPool() { index_.max_load_factor(0.8f); }
    StringPool(const StringPool &) = delete;
    StringPool &operator=(const StringPool &) = delete;

    /// The id of `s`, adding it if new; takes one reference.
    std::uint32_t intern(std::string_view s) {
        auto it = index_.find(s);
        if (it != index_.end()) {
            ++entries_[*it].refs;
            return *it;
        }
        std::uint32_t id;
        if (!free_.empty()) {
            id = free_.back();
            free_.pop_back();
            entries_[id].text.assign(s);
        } else {
            id = static_cast<std::uint32_t>(entries_.size());
            entries_.push_back(Entry{std::string(s), 0});
        }
        entries_[id].refs = 1;
        index_.insert(id);
        return id;
    }

    /// The id of `s` if interned; takes no reference.
    std::optional<std::uint32_t> find(std::string_view s) const {
        auto it = index_.find(s);
        if (it == index_.end()) return std::nullopt;
        return *it;
    }

    /// Drops one reference; the string goes with the last one.
    void release(std::uint32_t id) noexcept {
        Entry &e = entries_[id];
        if (--e.refs != 0) return;
        index_.erase(id);
        e.text.clear();
        e.text.shrink_to_fit();
        free_.push_back(id);
    }

    std::string_view view(std::uint32_t id) const noexcept { return entries_[id].text; }
    std::uint32_t refs(std::uint32_t id) const noexcept { return entries_[id].refs; }

    /// Distinct strings held.
    std::size_t size() const noexcept { return index_.size(); }

    /// Approximate bytes held (entries, out-of-line string bytes, the hash index).
    std::size_t bytes() const noexcept {
        std::size_t b = entries_.size() * sizeof(Entry) + free_.capacity() * sizeof(std::uint32_t) +
                        index_.bucket_count() * 12;
        for (const Entry &e : entries_)
            if (e.text.capacity() > 15) b += e.text.capacity() + 1;
        return b;
    }

private:
    struct Entry {
        std::string text;
        std::uint32_t refs;
    };
    // Hashing and comparing through the entries lets the index hold only 4-byte ids.
    struct Hash {
        using is_transparent = void;
        const std::deque<Entry> *entries;
        std::size_t operator()(std::uint32_t id) const noexcept { return (*this)(std::string_view((*entries)[id].text)); }
        std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>()(s); }
    };
    struct Equal {
        using is_transparent = void;
        const std::deque<Entry> *entries;
        bool operator()(std::uint32_t a, std::uint32_t b) const noexcept { return a == b; }
        bool operator()(std::uint32_t id, std::string_view s) const noexcept { return (*entries)[id].text == s; }
        bool operator()(std::string_view s, std::uint32_t id) const noexcept { return (*entries)[id].text == s; }
    };

    std::deque<Entry> entries_; // a deque: entries never move, so a view() stays valid while referenced
    std::vector<std::uint32_t> free_;
    // Prime sizes at a 0.8 load factor: this table grows with the number of distinct values.
    tsl::robin_set<std::uint32_t, Hash, Equal, std::allocator<std::uint32_t>, true, tsl::rh::prime_growth_policy>
        index_{16, Hash{&entries_}, Equal{&entries_}};
};

} // namespace wsgw
