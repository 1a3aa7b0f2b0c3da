#include "fake_connection.h"

#include <wsgw/registry.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <vector>

using namespace wsgw;
using wsgw::test::FakeConnection;

namespace {

Selector sel(std::string_view query) {
    std::string error;
    auto s = Selector::parse(query, &error);
    REQUIRE_MESSAGE(s, error);
    return *s;
}

std::set<ConnectionId> matched(Registry &reg, const Selector &s) {
    std::set<ConnectionId> ids;
    std::size_t n = reg.match(s, [&](Connection &c) { CHECK(ids.insert(c.id()).second); });
    CHECK(n == ids.size());
    CHECK(reg.count(s) == n);
    return ids;
}

} // namespace

TEST_CASE("add a connection and find it by id") {
    FakeConnection a; // outlives the registry
    Registry reg;
    CHECK(reg.add(a));
    CHECK(reg.size() == 1);
    CHECK(reg.find(a.id()) == &a);
    CHECK(reg.tags(a.id()).empty());
    CHECK(reg.find(ConnectionId::random()) == nullptr);
}

TEST_CASE("add with tags; get by tags") {
    FakeConnection a, b; // outlives the registry
    Registry reg;
    REQUIRE(reg.add(a, {{"group", "x"}, {"admin", "1"}}));
    REQUIRE(reg.add(b, {{"group", "x"}}));
    CHECK(reg.tags(a.id()) == Tags{{"admin", "1"}, {"group", "x"}});
    CHECK(reg.tag(a.id(), "group") == "x");
    CHECK(reg.tag(a.id(), "nope").empty());
    CHECK(matched(reg, sel("group=x")) == std::set{a.id(), b.id()});
    CHECK(matched(reg, sel("group=x&admin=1")) == std::set{a.id()});
    CHECK(matched(reg, sel("admin=1&group=x")) == std::set{a.id()});
}

TEST_CASE("remove cleans up the index") {
    FakeConnection a; // outlives the registry
    Registry reg;
    REQUIRE(reg.add(a, {{"group", "x"}, {"user", "u1"}}));
    CHECK(reg.remove(a.id()));
    CHECK(reg.size() == 0);
    CHECK(reg.find(a.id()) == nullptr);
    CHECK(reg.tree().empty());
    CHECK(reg.memory().internedStrings == 0);
    CHECK(reg.count(sel("group=x")) == 0);
}

TEST_CASE("multiple connections; removing one keeps shared tags and drops its unique tag") {
    FakeConnection a, b, c; // outlives the registry
    Registry reg;
    REQUIRE(reg.add(a, {{"group", "x"}, {"user", "ua"}}));
    REQUIRE(reg.add(b, {{"group", "x"}, {"user", "ub"}}));
    REQUIRE(reg.add(c, {{"group", "y"}}));
    CHECK(reg.size() == 3);
    REQUIRE(reg.remove(a.id()));
    TagTree expected{{"group", {{"x", 1}, {"y", 1}}}, {"user", {{"ub", 1}}}};
    CHECK(reg.tree() == expected);
    CHECK(matched(reg, sel("group=x")) == std::set{b.id()});
    CHECK(reg.count(sel("user=ua")) == 0);
    REQUIRE(reg.remove(b.id()));
    CHECK(reg.tree() == TagTree{{"group", {{"y", 1}}}});
}

TEST_CASE("duplicate add is refused and changes nothing") {
    FakeConnection a; // outlives the registry
    Registry reg;
    REQUIRE(reg.add(a, {{"k", "v"}}));
    CHECK_FALSE(reg.add(a, {{"k", "other"}}));
    CHECK(reg.size() == 1);
    CHECK(reg.tags(a.id()) == Tags{{"k", "v"}});
}

TEST_CASE("remove of an unknown id is a no-op") {
    FakeConnection a; // outlives the registry
    Registry reg;
    REQUIRE(reg.add(a, {{"k", "v"}}));
    CHECK_FALSE(reg.remove(ConnectionId::random()));
    CHECK_FALSE(reg.remove(ConnectionId()));
    CHECK(reg.size() == 1);
    REQUIRE(reg.remove(a.id()));
    CHECK_FALSE(reg.remove(a.id()));
}

TEST_CASE("setTags sets, changes and deletes; deleting an absent tag is a no-op") {
    FakeConnection a; // outlives the registry
    Registry reg;
    REQUIRE(reg.add(a, {{"group", "x"}}));
    CHECK(reg.setTags(a.id(), {{"admin", "1"}, {"group", "y"}}));
    CHECK(reg.tags(a.id()) == Tags{{"admin", "1"}, {"group", "y"}});
    CHECK(reg.count(sel("group=x")) == 0);
    CHECK(reg.count(sel("group=y")) == 1);
    CHECK(reg.setTags(a.id(), {{"admin", ""}, {"missing", ""}}));
    CHECK(reg.tags(a.id()) == Tags{{"group", "y"}});
    CHECK(reg.tree() == TagTree{{"group", {{"y", 1}}}});
    CHECK_FALSE(reg.setTags(ConnectionId::random(), {{"a", "b"}}));
    // Setting the same value again changes nothing.
    CHECK(reg.setTags(a.id(), {{"group", "y"}}));
    CHECK(reg.tree() == TagTree{{"group", {{"y", 1}}}});
}

TEST_CASE("initial tags: a repeated key keeps its last value, empty values and keys are ignored") {
    FakeConnection a; // outlives the registry
    Registry reg;
    REQUIRE(reg.add(a, {{"k", "1"}, {"k", "2"}, {"e", ""}, {"", "x"}}));
    CHECK(reg.tags(a.id()) == Tags{{"k", "2"}});
}

TEST_CASE("selectors with a missing key or value match nothing") {
    FakeConnection a; // outlives the registry
    Registry reg;
    REQUIRE(reg.add(a, {{"group", "x"}}));
    CHECK(reg.count(sel("nokey=x")) == 0);
    CHECK(reg.count(sel("group=novalue")) == 0);
    CHECK(reg.count(sel("group=x&nokey=1")) == 0);
    CHECK(reg.count(sel("group=")) == 0);
    CHECK(reg.count(sel("")) == 0);
    CHECK(reg.count(Selector::none()) == 0);
    CHECK(reg.count(Selector::all()) == 1);
}

TEST_CASE("id selectors pick those connections and ignore other keys") {
    FakeConnection a, b, c; // outlives the registry
    Registry reg;
    REQUIRE(reg.add(a, {{"group", "x"}}));
    REQUIRE(reg.add(b, {{"group", "y"}}));
    REQUIRE(reg.add(c));
    std::string q = "group=x&id=" + b.id().toString() + "," + c.id().toString() + ",,not-a-uuid," +
                    ConnectionId::random().toString();
    CHECK(matched(reg, sel(q)) == std::set{b.id(), c.id()});
    // The same id twice counts once.
    CHECK(reg.count(sel("id=" + a.id().toString() + "," + a.id().toString())) == 1);
    CHECK(reg.count(sel("id=")) == 0);
    CHECK(reg.count(sel("group=x&id=")) == 0);
}

TEST_CASE("a key with thousands of values") {
    std::vector<std::unique_ptr<FakeConnection>> conns; // outlive the registry
    Registry reg;
    for (int i = 0; i < 5000; ++i) {
        conns.push_back(std::make_unique<FakeConnection>());
        REQUIRE(reg.add(*conns.back(), {{"user", "u" + std::to_string(i)}, {"group", "g" + std::to_string(i % 7)}}));
    }
    auto tree = reg.tree();
    CHECK(tree["user"].size() == 5000);
    CHECK(tree["group"].size() == 7);
    CHECK(matched(reg, sel("user=u4321")) == std::set{conns[4321]->id()});
    CHECK(reg.count(sel("group=g3")) == 714);
    CHECK(reg.count(sel("group=g3&user=u4321")) == 0);
    CHECK(reg.count(sel("group=g2&user=u4321")) == 1);
    for (int i = 0; i < 5000; i += 2) REQUIRE(reg.remove(conns[i]->id()));
    CHECK(reg.tree()["user"].size() == 2500);
    CHECK(reg.count(sel("user=u4321")) == 1);
    CHECK(reg.count(sel("user=u4320")) == 0);
}

TEST_CASE("match may change the registry from inside the visitor") {
    std::vector<std::unique_ptr<FakeConnection>> conns; // outlive the registry
    Registry reg;
    for (int i = 0; i < 10; ++i) {
        conns.push_back(std::make_unique<FakeConnection>());
        REQUIRE(reg.add(*conns.back(), {{"group", "x"}}));
    }
    SUBCASE("removing the visited and later connections") {
        std::size_t visits = 0;
        std::size_t n = reg.match(sel("group=x"), [&](Connection &c) {
            ++visits;
            reg.remove(c.id());
            // Remove every other remaining one too: they must be skipped, not visited.
            if (visits == 1)
                for (int i = 0; i < 10; i += 2) reg.remove(conns[i]->id());
        });
        CHECK(n == visits);
        CHECK(reg.size() == 0);
        CHECK(visits <= 6);
    }
    SUBCASE("changing the selected tag: the selection was taken first") {
        std::size_t n = reg.match(sel("group=x"), [&](Connection &c) { reg.setTags(c.id(), {{"group", "y"}}); });
        CHECK(n == 10);
        CHECK(reg.count(sel("group=y")) == 10);
        CHECK(reg.count(sel("group=x")) == 0);
    }
    SUBCASE("a slot reused by a new connection during the visit is not visited") {
        FakeConnection late;
        std::set<ConnectionId> seen;
        reg.match(sel("group=x"), [&](Connection &c) {
            seen.insert(c.id());
            if (seen.size() == 1) {
                reg.remove(conns[9]->id());
                reg.remove(conns[8]->id());
                REQUIRE(reg.add(late, {{"group", "x"}}));
            }
        });
        CHECK(seen.count(late.id()) == 0);
        reg.remove(late.id()); // it goes before the registry does
    }
}

TEST_CASE("forEach visits every connection with its tags") {
    FakeConnection a, b; // outlives the registry
    Registry reg;
    REQUIRE(reg.add(a, {{"k", "1"}}));
    REQUIRE(reg.add(b, {{"k", "2"}, {"j", "3"}}));
    std::map<ConnectionId, Tags> seen;
    reg.forEach([&](Connection &c, const Tags &t) { seen[c.id()] = t; });
    CHECK(seen == std::map<ConnectionId, Tags>{{a.id(), {{"k", "1"}}}, {b.id(), {{"j", "3"}, {"k", "2"}}}});
}

TEST_CASE("many tags per connection (beyond the inline capacity)") {
    FakeConnection a, b; // outlives the registry
    Registry reg;
    TagList many;
    for (int i = 0; i < 40; ++i) many.emplace_back("k" + std::to_string(i), "v" + std::to_string(i));
    REQUIRE(reg.add(a, many));
    REQUIRE(reg.add(b, many));
    CHECK(reg.tags(a.id()).size() == 40);
    CHECK(reg.count(sel("k0=v0&k39=v39&k20=v20")) == 2);
    for (int i = 0; i < 40; i += 3) REQUIRE(reg.setTags(a.id(), {{"k" + std::to_string(i), ""}}));
    CHECK(reg.tags(a.id()).size() == 26);
    CHECK(reg.count(sel("k0=v0")) == 1);
    CHECK(reg.count(sel("k1=v1")) == 2);
    REQUIRE(reg.remove(b.id()));
    REQUIRE(reg.remove(a.id()));
    CHECK(reg.memory().internedStrings == 0);
}

// The reference model: plain maps and linear scans, obviously right.
namespace {
struct Model {
    std::map<ConnectionId, Tags> conns;
    std::map<std::pair<std::string, std::string>, std::size_t> counts; // (key, value) -> connections

    void set(ConnectionId id, const std::string &k, const std::string &v) {
        Tags &t = conns[id];
        if (auto it = t.find(k); it != t.end()) {
            if (--counts[{k, it->second}] == 0) counts.erase({k, it->second});
            t.erase(it);
        }
        if (!v.empty()) {
            t[k] = v;
            ++counts[{k, v}];
        }
    }
    void remove(ConnectionId id) {
        for (const auto &[k, v] : conns[id])
            if (--counts[{k, v}] == 0) counts.erase({k, v});
        conns.erase(id);
    }
    std::set<ConnectionId> match(const Selector &s) const {
        std::set<ConnectionId> out;
        for (const auto &[id, tags] : conns)
            if (s.matches(id, tags)) out.insert(id);
        return out;
    }
    TagTree tree() const {
        TagTree t;
        for (const auto &[kv, n] : counts) t[kv.first][kv.second] = n;
        return t;
    }
};
} // namespace

TEST_CASE("randomized: 100k operations agree with a naive model after every step") {
    std::mt19937 rng(20261127);
    auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
    auto key = [&] { return "k" + std::to_string(pick(5)); };
    auto value = [&] { return "v" + std::to_string(pick(8)); };

    std::vector<std::unique_ptr<FakeConnection>> live; // outlive the registry
    Registry reg;
    Model model;
    std::size_t selects = 0, whereSelects = 0;

    for (int step = 0; step < 100000; ++step) {
        std::size_t op = pick(100);
        if (op < 25 || live.empty()) {
            auto c = std::make_unique<FakeConnection>();
            TagList initial;
            for (std::size_t i = pick(4); i > 0; --i) initial.emplace_back(key(), value());
            REQUIRE(reg.add(*c, initial));
            model.conns[c->id()];
            for (const auto &[k, v] : initial) model.set(c->id(), k, v);
            live.push_back(std::move(c));
        } else if (op < 47) {
            std::size_t i = pick(live.size());
            REQUIRE(reg.remove(live[i]->id()));
            model.remove(live[i]->id());
            std::swap(live[i], live.back());
            live.pop_back();
        } else if (op < 75) {
            std::size_t i = pick(live.size());
            TagList changes;
            for (std::size_t n = 1 + pick(3); n > 0; --n) changes.emplace_back(key(), pick(3) == 0 ? "" : value());
            REQUIRE(reg.setTags(live[i]->id(), changes));
            for (const auto &[k, v] : changes) model.set(live[i]->id(), k, v);
            REQUIRE(reg.tags(live[i]->id()) == model.conns[live[i]->id()]);
        } else {
            // A selector: 1-3 tag terms, or ids (some live, one unknown).
            Selector s;
            if (pick(3) == 0) {
                // The JSON form's clauses, each present or not, from the same small key space (so
                // that each clause drives the walk sometimes, and `{}` and `not`-only scan all).
                SelectorClauses c;
                if (pick(3) == 0) c.all.emplace_back(key(), value());
                for (std::size_t n = pick(3); n > 0; --n) {
                    std::vector<std::string> values;
                    for (std::size_t m = 1 + pick(3); m > 0; --m) values.push_back(value());
                    c.any.emplace_back(key(), std::move(values));
                }
                for (std::size_t n = pick(3); n > 0; --n) c.none.emplace_back(key(), value());
                for (std::size_t n = pick(2); n > 0; --n) c.has.push_back(key());
                if (pick(4) == 0) {
                    c.ids.emplace();
                    for (std::size_t n = 1 + pick(6); n > 0; --n) c.ids->push_back(live[pick(live.size())]->id());
                }
                for (std::size_t n = pick(3); n > 0; --n) c.excludeIds.push_back(live[pick(live.size())]->id());
                s = Selector::where(std::move(c));
                ++whereSelects;
            } else if (pick(4) == 0) {
                std::vector<ConnectionId> ids;
                for (std::size_t n = pick(4); n > 0; --n) ids.push_back(live[pick(live.size())]->id());
                ids.push_back(ConnectionId::random());
                s = Selector::withIds(ids);
            } else {
                TagList terms;
                for (std::size_t n = 1 + pick(3); n > 0; --n) terms.emplace_back(key(), value());
                s = Selector::withTags(terms);
            }
            std::set<ConnectionId> got;
            reg.match(s, [&](Connection &c) { got.insert(c.id()); });
            REQUIRE(got == model.match(s));
            REQUIRE(reg.count(s) == got.size());
            ++selects;
        }
        // After every step: the same connections and the same tag index.
        REQUIRE(reg.size() == model.conns.size());
        REQUIRE(reg.tree() == model.tree());
        if (step % 1000 == 0)
            for (const auto &c : live) REQUIRE(reg.tags(c->id()) == model.conns[c->id()]);
    }
    CHECK(selects > 20000);
    CHECK(whereSelects > 6000);
    for (auto &c : live) REQUIRE(reg.remove(c->id()));
    CHECK(reg.tree().empty());
    CHECK(reg.memory().internedStrings == 0);
}

TEST_CASE("JSON selectors: each clause on the indexes") {
    std::vector<std::unique_ptr<FakeConnection>> conns;
    Registry reg;
    auto add = [&](TagList tags) {
        conns.push_back(std::make_unique<FakeConnection>());
        REQUIRE(reg.add(*conns.back(), tags));
        return conns.back()->id();
    };
    ConnectionId a = add({{"group", "a"}, {"admin", "1"}});
    ConnectionId b = add({{"group", "b"}});
    ConnectionId c = add({{"group", "c"}, {"admin", "0"}});
    ConnectionId d = add({});
    auto json = [](std::string_view text) {
        std::string error;
        auto s = Selector::parseJson(text, &error);
        REQUIRE_MESSAGE(s, error);
        return *s;
    };
    using Ids = std::set<ConnectionId>;
    CHECK(matched(reg, json(R"({})")) == Ids{a, b, c, d});
    CHECK(matched(reg, json(R"({"all":{"group":"a"}})")) == Ids{a});
    CHECK(matched(reg, json(R"({"any":{"group":["a","b","zzz"]}})")) == Ids{a, b});
    CHECK(matched(reg, json(R"({"any":{"group":["zzz"]}})")).empty());
    CHECK(matched(reg, json(R"({"not":{"group":"a"}})")) == Ids{b, c, d});
    CHECK(matched(reg, json(R"({"not":{"nosuchkey":"x"}})")) == Ids{a, b, c, d});
    CHECK(matched(reg, json(R"({"has":["admin"]})")) == Ids{a, c});
    CHECK(matched(reg, json(R"({"has":["nosuchkey"]})")).empty());
    CHECK(matched(reg, json(R"({"has":["admin"],"not":{"admin":"1"}})")) == Ids{c});
    CHECK(matched(reg, json(R"({"exclude_ids":[")" + a.toString() + R"("]})")) == Ids{b, c, d});
    CHECK(matched(reg, json(R"({"ids":[")" + a.toString() + R"(",")" + b.toString() + R"("],"has":["admin"]})")) ==
          Ids{a});
    CHECK(matched(reg, json(R"({"any":{"group":["a","b","c"]},"exclude_ids":[")" + b.toString() + R"("]})")) ==
          Ids{a, c});
    // Clauses that cannot hold together select no one.
    CHECK(matched(reg, json(R"({"ids":[]})")).empty());
    CHECK(matched(reg, json(R"({"any":{"group":[]}})")).empty());
}
