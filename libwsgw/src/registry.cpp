#include <wsgw/registry.h>

#include "string_pool.h"

#include <tsl/robin_map.h>
#include <tsl/robin_set.h>

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

namespace wsgw {

Connection::~Connection() {
    if (registeredIn_ == nullptr) return;
    // A registered connection is still reachable by every command that selects it: going on
    // would leave the shard a dangling reference (a use after free at the next send).
    std::fprintf(stderr,
                 "wsgw: connection %s destroyed while still registered: call Shard::closed before destroying it, "
                 "or open it with a std::shared_ptr so the shard keeps it alive (see wsgw/connection.h)\n",
                 id_.toString().c_str());
    std::abort();
}

namespace {

constexpr std::uint32_t kNoSlot = UINT32_MAX;

// A small vector of trivially copyable T that keeps up to N elements inline, so the common case
// (a connection's few tags; a tag value shared by one or two connections) costs no allocation.
template <class T, std::uint32_t N> class SmallVec {
    static_assert(std::is_trivially_copyable_v<T>);

public:
    SmallVec() noexcept {}
    SmallVec(const SmallVec &) = delete;
    SmallVec &operator=(const SmallVec &) = delete;
    SmallVec(SmallVec &&o) noexcept { take(o); }
    SmallVec &operator=(SmallVec &&o) noexcept {
        if (this != &o) {
            release();
            take(o);
        }
        return *this;
    }
    ~SmallVec() { release(); }

    std::uint32_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    T *data() noexcept { return cap_ > N ? heap_ : inline_; }
    const T *data() const noexcept { return cap_ > N ? heap_ : inline_; }
    T &operator[](std::uint32_t i) noexcept { return data()[i]; }
    const T &operator[](std::uint32_t i) const noexcept { return data()[i]; }
    T *begin() noexcept { return data(); }
    T *end() noexcept { return data() + size_; }
    const T *begin() const noexcept { return data(); }
    const T *end() const noexcept { return data() + size_; }

    // Appends and returns the new element's index.
    std::uint32_t push(const T &v) {
        if (size_ == cap_) grow();
        data()[size_] = v;
        return size_++;
    }

    // Moves the last element into position i (order is not kept). Returns true if an element
    // moved, i.e. i was not the last one.
    bool swapRemove(std::uint32_t i) noexcept {
        T *d = data();
        --size_;
        bool moved = i != size_;
        if (moved) d[i] = d[size_];
        if (cap_ > N && size_ <= cap_ / 4) shrink();
        return moved;
    }

    // Heap bytes held beyond the object itself.
    std::size_t heapBytes() const noexcept { return cap_ > N ? cap_ * sizeof(T) : 0; }

private:
    void grow() {
        std::uint32_t cap = cap_ * 2;
        T *mem = static_cast<T *>(std::malloc(sizeof(T) * cap));
        if (!mem) throw std::bad_alloc();
        std::memcpy(mem, data(), sizeof(T) * size_);
        if (cap_ > N) std::free(heap_);
        heap_ = mem;
        cap_ = cap;
    }
    void shrink() noexcept {
        T *old = heap_;
        std::uint32_t cap = std::max(cap_ / 2, N);
        if (cap <= N) {
            std::memcpy(inline_, old, sizeof(T) * size_);
            cap_ = N;
        } else {
            T *mem = static_cast<T *>(std::malloc(sizeof(T) * cap));
            if (!mem) return; // keep the larger buffer
            std::memcpy(mem, old, sizeof(T) * size_);
            heap_ = mem;
            cap_ = cap;
        }
        std::free(old);
    }
    void release() noexcept {
        if (cap_ > N) std::free(heap_);
        cap_ = N;
        size_ = 0;
    }
    void take(SmallVec &o) noexcept {
        size_ = o.size_;
        cap_ = o.cap_;
        if (cap_ > N) {
            heap_ = o.heap_;
        } else {
            std::memcpy(inline_, o.inline_, sizeof(T) * size_);
        }
        o.size_ = 0;
        o.cap_ = N;
    }

    std::uint32_t size_ = 0;
    std::uint32_t cap_ = N;
    union {
        T inline_[N];
        T *heap_;
    };
};

// One tag of a connection: interned key and value, and where the connection sits in that
// value's posting list (so removal is O(1)).
struct TagRef {
    std::uint32_t key;
    std::uint32_t value;
    std::uint32_t pos;
};

// Tables that grow with the number of connections (ids, interned strings, the values of a key
// with a value per connection) use prime sizes and a 0.8 load factor: powers of two at a 0.5
// load factor would spend up to four buckets per entry.
constexpr float kMaxLoad = 0.8f;
template <class K, class V>
using BigMap = tsl::robin_map<K, V, std::hash<K>, std::equal_to<K>, std::allocator<std::pair<K, V>>, false,
                              tsl::rh::prime_growth_policy>;

using Posting = SmallVec<std::uint32_t, 2>;
using ValueIndex = BigMap<std::uint32_t, Posting>;
using KeyIndex = tsl::robin_map<std::uint32_t, ValueIndex>;

// What match() reads for each candidate fits one cache line; the id (for lookups by id only)
// lives beside it in RecordStore.
struct alignas(64) Record {
    Connection *conn = nullptr;   // null: free slot
    std::uint32_t generation = 0; // bumped when the slot is freed, so stale references are detected
    SmallVec<TagRef, 3> tags;

    TagRef *findTag(std::uint32_t key) noexcept {
        for (auto &t : tags)
            if (t.key == key) return &t;
        return nullptr;
    }
    const TagRef *findTag(std::uint32_t key) const noexcept { return const_cast<Record *>(this)->findTag(key); }
};

static_assert(sizeof(Record) == 64, "a record should fill exactly one cache line");

// Records in fixed-size chunks: addresses stay put and growth never copies a million records.
class RecordStore {
public:
    static constexpr std::uint32_t kChunk = 1024;

    Record &operator[](std::uint32_t slot) noexcept { return chunks_[slot / kChunk]->records[slot % kChunk]; }
    const Record &operator[](std::uint32_t slot) const noexcept {
        return chunks_[slot / kChunk]->records[slot % kChunk];
    }
    ConnectionId &id(std::uint32_t slot) noexcept { return chunks_[slot / kChunk]->ids[slot % kChunk]; }
    const ConnectionId &id(std::uint32_t slot) const noexcept { return chunks_[slot / kChunk]->ids[slot % kChunk]; }

    std::uint32_t allocate() {
        if (!free_.empty()) {
            std::uint32_t slot = free_.back();
            free_.pop_back();
            return slot;
        }
        if (used_ % kChunk == 0) chunks_.push_back(std::make_unique<Chunk>());
        return used_++;
    }
    void release(std::uint32_t slot) {
        Record &r = (*this)[slot];
        r.conn = nullptr;
        ++r.generation;
        free_.push_back(slot);
    }
    // Slots ever handed out; live and free ones.
    std::uint32_t highWater() const noexcept { return used_; }
    std::size_t bytes() const noexcept {
        return chunks_.size() * sizeof(Chunk) + free_.capacity() * sizeof(std::uint32_t) +
               chunks_.capacity() * sizeof(void *);
    }

private:
    struct Chunk {
        Record records[kChunk];
        ConnectionId ids[kChunk];
    };
    std::vector<std::unique_ptr<Chunk>> chunks_;
    std::vector<std::uint32_t> free_;
    std::uint32_t used_ = 0;
};

// Approximate bytes of one bucket of a tsl::robin_map/set holding `value` (value, its distance
// and flag, and the stored hash).
template <class Value> constexpr std::size_t bucketBytes(bool storeHash) {
    return (sizeof(Value) + 4 + (storeHash ? 4 : 0) + alignof(Value) - 1) / alignof(Value) * alignof(Value);
}

} // namespace

struct Registry::Impl {
    // Slot lookup by connection id; the set stores slots and hashes/compares through the records.
    struct IdHash {
        using is_transparent = void;
        const RecordStore *records;
        std::size_t operator()(std::uint32_t slot) const noexcept { return records->id(slot).hash(); }
        std::size_t operator()(const ConnectionId &id) const noexcept { return id.hash(); }
    };
    struct IdEqual {
        using is_transparent = void;
        const RecordStore *records;
        bool operator()(std::uint32_t a, std::uint32_t b) const noexcept { return a == b; }
        bool operator()(std::uint32_t slot, const ConnectionId &id) const noexcept { return records->id(slot) == id; }
        bool operator()(const ConnectionId &id, std::uint32_t slot) const noexcept { return records->id(slot) == id; }
    };
    using IdSet = tsl::robin_set<std::uint32_t, IdHash, IdEqual, std::allocator<std::uint32_t>, true,
                                 tsl::rh::prime_growth_policy>;

    Impl() { byId.max_load_factor(kMaxLoad); }

    RecordStore records;
    IdSet byId{16, IdHash{&records}, IdEqual{&records}};
    StringPool strings;
    KeyIndex index;
    std::vector<std::uint32_t> scratch; // reused selection buffer for match()

    std::uint32_t slotOf(ConnectionId id) const noexcept {
        auto it = byId.find(id);
        return it == byId.end() ? kNoSlot : *it;
    }

    void link(std::uint32_t slot, std::uint32_t key, std::uint32_t value) {
        auto keyIt = index.find(key);
        if (keyIt == index.end()) {
            keyIt = index.emplace(key, ValueIndex()).first;
            keyIt.value().max_load_factor(kMaxLoad);
        }
        Posting &posting = keyIt.value()[value];
        std::uint32_t pos = posting.push(slot);
        records[slot].tags.push(TagRef{key, value, pos});
    }

    // Removes the record's tag at index i from the index and releases its strings.
    void unlink(std::uint32_t slot, std::uint32_t i) noexcept {
        Record &rec = records[slot];
        TagRef t = rec.tags[i];
        auto keyIt = index.find(t.key);
        assert(keyIt != index.end());
        ValueIndex &values = keyIt.value();
        auto valueIt = values.find(t.value);
        assert(valueIt != values.end());
        Posting &posting = valueIt.value();
        if (posting.swapRemove(t.pos)) {
            // The posting's last entry moved into t.pos: tell its record.
            std::uint32_t movedSlot = posting[t.pos];
            records[movedSlot].findTag(t.key)->pos = t.pos;
        }
        if (posting.empty()) {
            values.erase(valueIt);
            if (values.empty()) index.erase(keyIt);
        }
        rec.tags.swapRemove(i);
        strings.release(t.key);
        strings.release(t.value);
    }

    void setTag(std::uint32_t slot, std::string_view key, std::string_view value) {
        Record &rec = records[slot];
        auto keyId = strings.find(key);
        if (keyId) {
            for (std::uint32_t i = 0; i < rec.tags.size(); ++i) {
                if (rec.tags[i].key != *keyId) continue;
                if (!value.empty() && strings.view(rec.tags[i].value) == value) return; // unchanged
                unlink(slot, i);
                break;
            }
        }
        if (value.empty()) return;
        std::uint32_t k = strings.intern(key);
        std::uint32_t v = strings.intern(value);
        link(slot, k, v);
    }

    const Posting *posting(std::uint32_t key, std::uint32_t value) const noexcept {
        auto keyIt = index.find(key);
        if (keyIt == index.end()) return nullptr;
        auto valueIt = keyIt->second.find(value);
        return valueIt == keyIt->second.end() ? nullptr : &valueIt->second;
    }

    // Calls out(slot) for each selected connection.
    template <class Out> void select(const Selector &sel, Out &&out) const {
        switch (sel.kind()) {
        case Selector::Kind::None:
            return;
        case Selector::Kind::All:
            for (std::uint32_t slot = 0; slot < records.highWater(); ++slot)
                if (records[slot].conn) out(slot);
            return;
        case Selector::Kind::Ids:
            for (const ConnectionId &id : sel.ids()) {
                std::uint32_t slot = slotOf(id);
                if (slot != kNoSlot) out(slot);
            }
            return;
        case Selector::Kind::AllOf:
            selectByTags(sel.tags(), out);
            return;
        case Selector::Kind::Where:
            selectWhere(*sel.clauses(), out);
            return;
        }
    }

    // The clauses resolved to interned strings. `possible` is false when some clause names a
    // key or value no connection has (nothing can match).
    struct Resolved {
        struct Pair {
            std::uint32_t key, value;
        };
        struct AnyOf {
            std::uint32_t key;
            std::vector<std::uint32_t> values; // sorted
        };
        std::vector<Pair> all, none;
        std::vector<AnyOf> any;
        std::vector<std::uint32_t> has;
        // The slots of the connections `ids` and `exclude_ids` name (registered ones), sorted:
        // compared with a candidate's slot, never its id (which lives in another cache line).
        std::vector<std::uint32_t> idSlots, excludeSlots;
        bool possible = true;
    };

    Resolved resolve(const SelectorClauses &c) const {
        Resolved r;
        for (const auto &[k, v] : c.all) {
            auto key = strings.find(k);
            auto value = strings.find(v);
            if (!key || !value) r.possible = false;
            else r.all.push_back({*key, *value});
        }
        for (const auto &[k, values] : c.any) {
            auto key = strings.find(k);
            Resolved::AnyOf one{key ? *key : 0, {}};
            if (key)
                for (const std::string &v : values)
                    if (auto value = strings.find(v)) one.values.push_back(*value);
            if (one.values.empty()) r.possible = false;
            std::sort(one.values.begin(), one.values.end());
            r.any.push_back(std::move(one));
        }
        for (const auto &[k, v] : c.none) {
            auto key = strings.find(k);
            auto value = strings.find(v);
            if (key && value) r.none.push_back({*key, *value}); // else no connection has it: no-op
        }
        for (const std::string &k : c.has) {
            auto key = strings.find(k);
            if (!key) r.possible = false;
            else r.has.push_back(*key);
        }
        auto slots = [this](const std::vector<ConnectionId> &ids, std::vector<std::uint32_t> &out) {
            for (const ConnectionId &id : ids)
                if (std::uint32_t slot = slotOf(id); slot != kNoSlot) out.push_back(slot);
            std::sort(out.begin(), out.end());
        };
        if (c.ids) slots(*c.ids, r.idSlots);
        slots(c.excludeIds, r.excludeSlots);
        return r;
    }

    // Whether the record meets every clause but the ids one (its caller checks that).
    bool meets(std::uint32_t slot, const Resolved &r) const noexcept {
        const Record &rec = records[slot];
        for (const auto &p : r.all) {
            const TagRef *t = rec.findTag(p.key);
            if (!t || t->value != p.value) return false;
        }
        for (const auto &a : r.any) {
            const TagRef *t = rec.findTag(a.key);
            if (!t || !std::binary_search(a.values.begin(), a.values.end(), t->value)) return false;
        }
        for (const auto &p : r.none) {
            const TagRef *t = rec.findTag(p.key);
            if (t && t->value == p.value) return false;
        }
        for (std::uint32_t k : r.has)
            if (!rec.findTag(k)) return false;
        return !std::binary_search(r.excludeSlots.begin(), r.excludeSlots.end(), slot);
    }

    // The AND of clauses: walks the smallest candidate set the indexes give (a posting list of
    // `all`, the union of a key's listed values for `any`, every value of a key for `has`, the
    // `ids`), or every connection when no clause narrows it (only `not`, `exclude_ids`), and
    // checks the other clauses on each candidate.
    template <class Out> void selectWhere(const SelectorClauses &c, Out &out) const {
        Resolved r = resolve(c);
        if (!r.possible) return;
        // The candidates: the posting lists whose union is the smallest set.
        std::vector<const Posting *> best;
        std::size_t bestSize = SIZE_MAX;
        bool byIds = false;
        auto consider = [&](std::vector<const Posting *> lists) {
            std::size_t n = 0;
            for (const Posting *p : lists) n += p->size();
            if (n < bestSize) {
                bestSize = n;
                best = std::move(lists);
                byIds = false;
            }
        };
        for (const auto &p : r.all) {
            const Posting *list = posting(p.key, p.value);
            if (!list) return;
            consider({list});
        }
        for (const auto &a : r.any) {
            std::vector<const Posting *> lists;
            for (std::uint32_t v : a.values)
                if (const Posting *list = posting(a.key, v)) lists.push_back(list);
            if (lists.empty()) return;
            consider(std::move(lists));
        }
        for (std::uint32_t k : r.has) {
            auto keyIt = index.find(k);
            if (keyIt == index.end()) return;
            // Its union holds at least one connection per value: skip it, without walking its
            // values, when that alone is no smaller than the best so far (a key with a value per
            // connection, like a user id, would cost a walk of the whole key).
            if (keyIt->second.size() >= bestSize) continue;
            std::vector<const Posting *> lists;
            for (const auto &[value, list] : keyIt->second) lists.push_back(&list);
            consider(std::move(lists));
        }
        if (c.ids && r.idSlots.size() < bestSize) {
            bestSize = r.idSlots.size();
            byIds = true;
        }
        if (byIds) {
            for (std::uint32_t slot : r.idSlots)
                if (meets(slot, r)) out(slot);
            return;
        }
        auto check = [&](std::uint32_t slot) {
            if (c.ids && !std::binary_search(r.idSlots.begin(), r.idSlots.end(), slot)) return;
            if (meets(slot, r)) out(slot);
        };
        if (bestSize == SIZE_MAX) { // nothing narrows it: every connection
            for (std::uint32_t slot = 0; slot < records.highWater(); ++slot)
                if (records[slot].conn) check(slot);
            return;
        }
        // As in selectByTags: fetch records ahead so that their cache misses overlap.
        constexpr std::uint32_t kAhead = 8;
        for (const Posting *list : best) {
            const std::uint32_t *cand = list->data();
            const std::uint32_t count = list->size();
            for (std::uint32_t i = 0; i < std::min(kAhead, count); ++i) __builtin_prefetch(&records[cand[i]]);
            for (std::uint32_t i = 0; i < count; ++i) {
                if (i + kAhead < count) __builtin_prefetch(&records[cand[i + kAhead]]);
                check(cand[i]);
            }
        }
    }

    template <class Out> void selectByTags(const TagList &terms, Out &out) const {
        struct Term {
            std::uint32_t key, value;
        };
        // A selector has a handful of terms; keep them on the stack.
        constexpr std::size_t kMaxInline = 16;
        Term inlineTerms[kMaxInline];
        std::vector<Term> heapTerms;
        Term *ids = inlineTerms;
        if (terms.size() > kMaxInline) {
            heapTerms.resize(terms.size());
            ids = heapTerms.data();
        }
        const Posting *smallest = nullptr;
        std::size_t smallestTerm = 0;
        for (std::size_t i = 0; i < terms.size(); ++i) {
            auto k = strings.find(terms[i].first);
            auto v = strings.find(terms[i].second);
            if (!k || !v) return; // a key or value no connection has
            const Posting *p = posting(*k, *v);
            if (!p) return;
            ids[i] = Term{*k, *v};
            if (!smallest || p->size() < smallest->size()) {
                smallest = p;
                smallestTerm = i;
            }
        }
        // Candidates are scattered over memory: fetch a few records ahead so their cache misses
        // overlap instead of queueing one after another.
        constexpr std::uint32_t kAhead = 8;
        const std::uint32_t *cand = smallest->data();
        const std::uint32_t count = smallest->size();
        for (std::uint32_t c = 0; c < std::min(kAhead, count); ++c) __builtin_prefetch(&records[cand[c]]);
        for (std::uint32_t c = 0; c < count; ++c) {
            if (c + kAhead < count) __builtin_prefetch(&records[cand[c + kAhead]]);
            std::uint32_t slot = cand[c];
            const Record &rec = records[slot];
            bool all = true;
            for (std::size_t i = 0; i < terms.size() && all; ++i) {
                if (i == smallestTerm) continue;
                const TagRef *t = rec.findTag(ids[i].key);
                all = t && t->value == ids[i].value;
            }
            if (all) out(slot);
        }
    }

    Tags tagsOf(const Record &rec) const {
        Tags tags;
        for (const TagRef &t : rec.tags) tags.emplace(strings.view(t.key), strings.view(t.value));
        return tags;
    }
};

Registry::Registry() : impl_(std::make_unique<Impl>()) {}
Registry::~Registry() {
    // The connections still registered outlive it (a transport's own shutdown order): they are
    // free to go now.
    for (std::uint32_t slot : impl_->byId)
        if (Connection *c = impl_->records[slot].conn) c->registeredIn_ = nullptr;
}

bool Registry::add(Connection &conn, const TagList &initial) {
    Impl &d = *impl_;
    if (d.slotOf(conn.id()) != kNoSlot) return false;
    std::uint32_t slot = d.records.allocate();
    Record &rec = d.records[slot];
    rec.conn = &conn;
    d.records.id(slot) = conn.id();
    for (const auto &[key, value] : initial)
        if (!key.empty()) d.setTag(slot, key, value);
    d.byId.insert(slot);
    conn.registeredIn_ = this;
    return true;
}

bool Registry::remove(ConnectionId id) noexcept {
    Impl &d = *impl_;
    auto it = d.byId.find(id);
    if (it == d.byId.end()) return false;
    std::uint32_t slot = *it;
    d.byId.erase(it);
    Record &rec = d.records[slot];
    if (rec.conn) rec.conn->registeredIn_ = nullptr;
    while (!rec.tags.empty()) d.unlink(slot, rec.tags.size() - 1);
    d.records.release(slot);
    return true;
}

Connection *Registry::find(ConnectionId id) const noexcept {
    std::uint32_t slot = impl_->slotOf(id);
    return slot == kNoSlot ? nullptr : impl_->records[slot].conn;
}

bool Registry::setTags(ConnectionId id, const TagList &changes) {
    Impl &d = *impl_;
    std::uint32_t slot = d.slotOf(id);
    if (slot == kNoSlot) return false;
    for (const auto &[key, value] : changes)
        if (!key.empty()) d.setTag(slot, key, value);
    return true;
}

Tags Registry::tags(ConnectionId id) const {
    std::uint32_t slot = impl_->slotOf(id);
    if (slot == kNoSlot) return {};
    return impl_->tagsOf(impl_->records[slot]);
}

std::size_t Registry::tagCount(ConnectionId id) const noexcept {
    std::uint32_t slot = impl_->slotOf(id);
    return slot == kNoSlot ? 0 : impl_->records[slot].tags.size();
}

std::string_view Registry::tag(ConnectionId id, std::string_view key) const noexcept {
    const Impl &d = *impl_;
    std::uint32_t slot = d.slotOf(id);
    auto k = d.strings.find(key);
    if (slot == kNoSlot || !k) return {};
    const TagRef *t = d.records[slot].findTag(*k);
    return t ? d.strings.view(t->value) : std::string_view();
}

std::size_t Registry::match(const Selector &sel, const std::function<void(Connection &)> &visit) {
    Impl &d = *impl_;
    // Take the shared buffer; a nested match() from inside `visit` then gets a fresh one.
    std::vector<std::uint32_t> selected = std::move(d.scratch);
    selected.clear();
    d.select(sel, [&](std::uint32_t slot) {
        selected.push_back(slot);
        selected.push_back(d.records[slot].generation);
    });
    std::size_t visited = 0;
    for (std::size_t i = 0; i < selected.size(); i += 2) {
        Record &rec = d.records[selected[i]];
        if (!rec.conn || rec.generation != selected[i + 1]) continue; // removed meanwhile
        ++visited;
        visit(*rec.conn);
    }
    if (selected.capacity() > d.scratch.capacity()) d.scratch = std::move(selected);
    return visited;
}

std::size_t Registry::count(const Selector &sel) const {
    std::size_t n = 0;
    impl_->select(sel, [&](std::uint32_t) { ++n; });
    return n;
}

std::size_t Registry::size() const noexcept { return impl_->byId.size(); }

TagTree Registry::tree() const {
    const Impl &d = *impl_;
    TagTree tree;
    for (const auto &[key, values] : d.index) {
        auto &out = tree[std::string(d.strings.view(key))];
        for (const auto &[value, posting] : values) out.emplace(d.strings.view(value), posting.size());
    }
    return tree;
}

void Registry::forEach(const std::function<void(Connection &, const Tags &)> &visit) const {
    const Impl &d = *impl_;
    for (std::uint32_t slot = 0; slot < d.records.highWater(); ++slot) {
        const Record &rec = d.records[slot];
        if (rec.conn) visit(*rec.conn, d.tagsOf(rec));
    }
}

RegistryMemory Registry::memory() const {
    const Impl &d = *impl_;
    RegistryMemory m;
    m.connections = d.byId.size();
    m.internedStrings = d.strings.size();
    std::size_t bytes = sizeof(Impl) + d.records.bytes() + d.strings.bytes() + d.scratch.capacity() * 4;
    bytes += d.byId.bucket_count() * bucketBytes<std::uint32_t>(true);
    bytes += d.index.bucket_count() * bucketBytes<std::pair<std::uint32_t, ValueIndex>>(false);
    for (const auto &[key, values] : d.index) {
        bytes += values.bucket_count() * bucketBytes<std::pair<std::uint32_t, Posting>>(false);
        for (const auto &[value, posting] : values) bytes += posting.heapBytes();
    }
    for (std::uint32_t slot = 0; slot < d.records.highWater(); ++slot) bytes += d.records[slot].tags.heapBytes();
    m.bytes = bytes;
    return m;
}

} // namespace wsgw
