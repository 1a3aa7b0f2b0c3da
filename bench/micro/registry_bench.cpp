// Micro-benchmarks of the Registry (add, remove, setTags, match) and of delivery through the Hub,
// at 10k, 100k and 1M connections with the tag mix of tag_mix.h.
//
//   build/bench/registry_bench                                  # everything (a few minutes)
//   build/bench/registry_bench --benchmark_filter='/1M'         # only the 1M cases (also /10k, /100k)
//   build/bench/registry_bench --benchmark_filter='match_and2/1M'  # the key selector case
//
// Every match and send checks that it selected as many connections as the tag mix says; a
// registry that loses entries fails the benchmark (SkipWithError) instead of timing less work.
//
// Benchmarks are registered size by size, so one world (connections plus registry or hub) is
// built per size and reused by every benchmark of that size; --benchmark_filter builds only the
// worlds it needs.
//
// add, remove and setTags run in batches of kBatch operations and report the time of one
// operation (manual timing), because the untimed half of each batch restores the world: the
// registry keeps exactly N connections and its tag mix, whatever ran before.

#include "fake_connection.h"
#include "tag_mix.h"

#include <wsgw/hub.h>
#include <wsgw/message.h>
#include <wsgw/registry.h>
#include <wsgw/selector.h>

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace wsgw;
using bench::FakeConnection;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kSizes[] = {10'000, 100'000, 1'000'000};
constexpr std::size_t kBatch = 1000;     // operations per timed batch (add, remove, setTags)
constexpr benchmark::IterationCount kBatches = 200; // batches per add/remove/setTags case
constexpr std::size_t kSelectors = 4096; // distinct selectors the match cases cycle through

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// The one world alive at a time; building the next one frees the previous.
struct World {
    virtual ~World() = default;
};
std::unique_ptr<World> current;

template <class W> W &worldOf(std::size_t n) {
    auto *w = dynamic_cast<W *>(current.get());
    if (!w || w->n != n) {
        current.reset();
        auto fresh = std::make_unique<W>(n);
        w = fresh.get();
        current = std::move(fresh);
    }
    return *w;
}

// N registered connections plus kBatch spare ones that add/remove cycle in and out.
struct RegistryWorld : World {
    explicit RegistryWorld(std::size_t size) : n(size), conns(new FakeConnection[size + kBatch]) {
        for (std::size_t i = 0; i < n; ++i) registry.add(conns[i], bench::tagsFor(i, n, conns[i].id()));
        for (std::size_t i = 0; i < kBatch; ++i) spareTags.push_back(bench::tagsFor(n + i, n, conns[n + i].id()));
    }
    std::size_t n;
    std::unique_ptr<FakeConnection[]> conns; // declared before the registry, so it outlives it
    Registry registry;
    std::vector<TagList> spareTags;
    std::mt19937_64 rng{42};
};

void addBatch(benchmark::State &state, std::size_t n) {
    auto &w = worldOf<RegistryWorld>(n);
    for (auto _ : state) {
        auto t0 = Clock::now();
        for (std::size_t i = 0; i < kBatch; ++i) w.registry.add(w.conns[n + i], w.spareTags[i]);
        state.SetIterationTime(seconds(Clock::now() - t0) / kBatch);
        for (std::size_t i = 0; i < kBatch; ++i) w.registry.remove(w.conns[n + i].id());
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

void removeBatch(benchmark::State &state, std::size_t n) {
    auto &w = worldOf<RegistryWorld>(n);
    for (auto _ : state) {
        for (std::size_t i = 0; i < kBatch; ++i) w.registry.add(w.conns[n + i], w.spareTags[i]);
        auto t0 = Clock::now();
        for (std::size_t i = 0; i < kBatch; ++i) w.registry.remove(w.conns[n + i].id());
        state.SetIterationTime(seconds(Clock::now() - t0) / kBatch);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

// Moves kBatch random connections to another group (one setTags each, timed), then back.
void setTagsBatch(benchmark::State &state, std::size_t n) {
    auto &w = worldOf<RegistryWorld>(n);
    const std::size_t groups = bench::groupCount(n);
    std::vector<std::size_t> picked(kBatch);
    std::vector<TagList> moveTo(kBatch), moveBack(kBatch);
    for (auto _ : state) {
        for (std::size_t j = 0; j < kBatch; ++j) {
            std::size_t i = w.rng() % n;
            picked[j] = i;
            moveTo[j] = {{"group", bench::groupName((i + 1 + w.rng() % (groups - 1 + (groups == 1))) % groups)}};
            moveBack[j] = {{"group", bench::groupName(i % groups)}};
        }
        auto t0 = Clock::now();
        for (std::size_t j = 0; j < kBatch; ++j) w.registry.setTags(w.conns[picked[j]].id(), moveTo[j]);
        state.SetIterationTime(seconds(Clock::now() - t0) / kBatch);
        for (std::size_t j = 0; j < kBatch; ++j) w.registry.setTags(w.conns[picked[j]].id(), moveBack[j]);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

// Selectors the match cases cycle through. `hot` repeats one selector, so its 100 records stay
// in cache; otherwise each iteration takes the next of kSelectors random ones, as a gateway
// serving many groups sees it.
using MakeSelector = Selector (*)(RegistryWorld &w, std::size_t pick);

Selector and2(RegistryWorld &, std::size_t group) {
    return Selector::withTags({{"group", bench::groupName(group)}, {"role", bench::roleName(group % 4)}});
}
Selector group1(RegistryWorld &, std::size_t group) { return Selector::withTags({{"group", bench::groupName(group)}}); }
Selector user1(RegistryWorld &, std::size_t i) { return Selector::withTags({{"user", "u" + std::to_string(i)}}); }
Selector role1(RegistryWorld &, std::size_t role) { return Selector::withTags({{"role", bench::roleName(role % 4)}}); }
Selector ids100(RegistryWorld &w, std::size_t) {
    std::vector<ConnectionId> ids;
    for (int k = 0; k < 100; ++k) ids.push_back(w.conns[w.rng() % w.n].id());
    return Selector::withIds(std::move(ids));
}
Selector ids1(RegistryWorld &w, std::size_t i) { return Selector::withIds({w.conns[i].id()}); }

// The JSON form's clauses (Kind::Where), each case selecting a known number.
// any: two groups, 200 connections.
Selector jsonAny2(RegistryWorld &w, std::size_t group) {
    SelectorClauses c;
    c.any.push_back({"group", {bench::groupName(group), bench::groupName((group + 1) % bench::groupCount(w.n))}});
    return Selector::where(std::move(c));
}
// all + not: a group without a role none of its members has: all 100.
Selector jsonAllNot(RegistryWorld &, std::size_t group) {
    SelectorClauses c;
    c.all = {{"group", bench::groupName(group)}};
    c.none = {{"role", bench::roleName((group + 1) % 4)}};
    return Selector::where(std::move(c));
}
// all + has + exclude_ids: a group but one of its members: 99.
Selector jsonHasExclude(RegistryWorld &w, std::size_t group) {
    SelectorClauses c;
    c.all = {{"group", bench::groupName(group)}};
    c.has = {"user"};
    c.excludeIds = {w.conns[group].id()}; // connection `group` is a member of group `group`
    return Selector::where(std::move(c));
}

// How many connections a selector must select, by the tag mix.
std::size_t expectedCount(const Selector &sel, std::size_t n) {
    if (sel.kind() == Selector::Kind::Ids) return sel.ids().size();
    if (sel.kind() == Selector::Kind::All) return n;
    if (const SelectorClauses *c = sel.clauses()) {
        if (!c->any.empty()) return 2 * (n / bench::groupCount(n));
        if (!c->excludeIds.empty()) return n / bench::groupCount(n) - 1;
        return n / bench::groupCount(n);
    }
    const std::string &key = sel.tags().front().first; // AllOf, sorted by key: group before role
    if (key == "group") return n / bench::groupCount(n);
    if (key == "role") return n / 4;
    return 1; // user
}

// `range`: picks are drawn from [0, range(n)).
void matchCase(benchmark::State &state, std::size_t n, MakeSelector make, std::size_t (*range)(std::size_t), bool hot,
               bool countOnly) {
    auto &w = worldOf<RegistryWorld>(n);
    std::vector<Selector> sels;
    for (std::size_t k = 0; k < (hot ? 1 : kSelectors); ++k) sels.push_back(make(w, w.rng() % range(n)));
    for (const Selector &sel : sels) {
        std::size_t got = w.registry.count(sel), want = expectedCount(sel, n);
        if (got != want) {
            std::string why = "selector " + sel.toString() + " selects " + std::to_string(got) + ", expected " +
                              std::to_string(want) + ": the registry lost entries";
            state.SkipWithError(why.c_str());
            return;
        }
    }
    std::size_t matched = 0, next = 0;
    for (auto _ : state) {
        const Selector &sel = sels[next];
        next = next + 1 == sels.size() ? 0 : next + 1;
        if (countOnly) {
            matched += w.registry.count(sel);
        } else {
            matched += w.registry.match(sel, [](Connection &c) { benchmark::DoNotOptimize(&c); });
        }
    }
    state.counters["matched"] = benchmark::Counter(static_cast<double>(matched) / static_cast<double>(state.iterations()));
    state.SetItemsProcessed(static_cast<std::int64_t>(matched));
}

// Selector::parseJson of a three-clause selector (no registry): the parse a /v1 request costs.
void parseJsonCase(benchmark::State &state) {
    const std::string text =
        R"({"all":{"group":"g42"},"any":{"role":["r1","r2"]},"exclude_ids":["0f2c1f9e-4c6e-4b7e-9a2f-1c2d3e4f5a6b"]})";
    for (auto _ : state) {
        auto sel = Selector::parseJson(text);
        if (!sel) {
            state.SkipWithError("parseJson failed");
            return;
        }
        benchmark::DoNotOptimize(sel);
    }
}

std::size_t groupsOf(std::size_t n) { return bench::groupCount(n); }
std::size_t connectionsOf(std::size_t n) { return n; }
std::size_t four(std::size_t) { return 4; }

// A hub with 2 shards on their own threads; connection i is opened on shard i % 2.
struct HubWorld : World {
    explicit HubWorld(std::size_t size) : n(size), conns(new FakeConnection[size]), hub(options()) {
        if (!hub.start()) std::abort();
        std::vector<std::future<void>> opened;
        for (std::size_t s = 0; s < hub.shardCount(); ++s) {
            auto done = std::make_shared<std::promise<void>>();
            opened.push_back(done->get_future());
            bool posted = hub.shard(s).post([this, done](Shard &shard) {
                EventSpec spec;
                for (std::size_t i = shard.index(); i < n; i += hub.shardCount())
                    if (!shard.open(conns[i], bench::tagsFor(i, n, conns[i].id()), spec)) std::abort();
                done->set_value();
            });
            if (!posted) throw std::runtime_error("shard inbox refused the open batch");
        }
        for (auto &f : opened) f.get();
    }
    ~HubWorld() override { hub.stop(); }
    static HubOptions options() {
        HubOptions o;
        o.shards = 2;
        o.ownThreads = true;
        return o;
    }
    std::size_t n;
    std::unique_ptr<FakeConnection[]> conns; // outlives the hub and its registries
    Hub hub;
    std::mt19937_64 rng{7};
};

// One Hub::send per iteration, waited for; reports the wall time per recipient as well.
void hubSend(benchmark::State &state, std::size_t n, Selector (*make)(std::size_t pick, std::size_t n),
             std::size_t (*range)(std::size_t)) {
    auto &w = worldOf<HubWorld>(n);
    std::vector<Selector> sels;
    for (std::size_t k = 0; k < kSelectors; ++k) sels.push_back(make(w.rng() % range(n), n));
    MessagePtr msg = Message::text("{\"type\":\"tick\"}");
    std::size_t recipients = 0, next = 0;
    auto t0 = Clock::now();
    for (auto _ : state) {
        const Selector &sel = sels[next];
        next = next + 1 == sels.size() ? 0 : next + 1;
        CountResult r = w.hub.send(sel, msg).get();
        if (!r.ok()) {
            state.SkipWithError("Hub::send did not complete");
            break;
        }
        if (r.value != expectedCount(sel, n)) {
            std::string why = "Hub::send to " + sel.toString() + " reached " + std::to_string(r.value) +
                              ", expected " + std::to_string(expectedCount(sel, n));
            state.SkipWithError(why.c_str());
            break;
        }
        recipients += r.value;
    }
    double elapsedNs = seconds(Clock::now() - t0) * 1e9;
    state.counters["recipients"] = benchmark::Counter(static_cast<double>(recipients) / static_cast<double>(state.iterations()));
    state.counters["ns_per_recipient"] = benchmark::Counter(recipients ? elapsedNs / static_cast<double>(recipients) : 0);
    state.SetItemsProcessed(static_cast<std::int64_t>(recipients));
}

Selector hubUser(std::size_t i, std::size_t) { return Selector::withTags({{"user", "u" + std::to_string(i)}}); }
Selector hubGroup(std::size_t g, std::size_t) { return Selector::withTags({{"group", bench::groupName(g)}}); }
Selector hubRole(std::size_t r, std::size_t) { return Selector::withTags({{"role", bench::roleName(r)}}); }
Selector hubAll(std::size_t, std::size_t) { return Selector::all(); }

// "10k", "100k", "1M": no size name is a prefix of another, so filters like '/10k' are exact.
std::string sizeName(std::size_t n) {
    if (n % 1'000'000 == 0) return std::to_string(n / 1'000'000) + "M";
    if (n % 1'000 == 0) return std::to_string(n / 1'000) + "k";
    return std::to_string(n);
}

void registerAll() {
    using benchmark::RegisterBenchmark;
    RegisterBenchmark("selector/parse_json", parseJsonCase);
    for (std::size_t n : kSizes) {
        auto name = [n](const char *what) { return std::string("registry/") + what + "/" + sizeName(n); };
        // Manual time is per operation, so the library's own iteration estimate would run
        // kBatch times too long: fix the number of batches instead.
        RegisterBenchmark(name("add").c_str(), addBatch, n)->UseManualTime()->Iterations(kBatches);
        RegisterBenchmark(name("remove").c_str(), removeBatch, n)->UseManualTime()->Iterations(kBatches);
        RegisterBenchmark(name("setTags").c_str(), setTagsBatch, n)->UseManualTime()->Iterations(kBatches);

        struct Case {
            const char *name;
            MakeSelector make;
            std::size_t (*range)(std::size_t);
            bool hot, countOnly;
        };
        const Case cases[] = {
            {"match_and2", and2, groupsOf, false, false},       // the key case: 100 of 1M
            {"match_and2_hot", and2, groupsOf, true, false},    // the same selector again and again
            {"count_and2", and2, groupsOf, false, true},        // count(): no visit, no selection buffer
            {"match_group", group1, groupsOf, false, false},    // one term, 100 members
            {"match_user", user1, connectionsOf, false, false}, // one term, one member
            {"match_ids100", ids100, connectionsOf, false, false},
            {"match_ids1", ids1, connectionsOf, false, false},
            {"match_role", role1, four, false, false},          // one term, n/4 members
            {"match_json_any2", jsonAny2, groupsOf, false, false},         // any of two groups: 200
            {"match_json_all_not", jsonAllNot, groupsOf, false, false},    // a group, not a role: 100
            {"match_json_has_exclude", jsonHasExclude, groupsOf, false, false}, // 99
        };
        for (const Case &c : cases)
            RegisterBenchmark(name(c.name).c_str(), matchCase, n, c.make, c.range, c.hot, c.countOnly);
    }
    for (std::size_t n : kSizes) {
        auto name = [n](const char *what) { return std::string("hub2/") + what + "/" + sizeName(n); };
        RegisterBenchmark(name("send_user").c_str(), hubSend, n, hubUser, connectionsOf)->UseRealTime();
        RegisterBenchmark(name("send_group").c_str(), hubSend, n, hubGroup, groupsOf)->UseRealTime();
        RegisterBenchmark(name("send_role").c_str(), hubSend, n, hubRole, four)->UseRealTime();
        RegisterBenchmark(name("send_all").c_str(), hubSend, n, hubAll, four)->UseRealTime();
    }
}

} // namespace

int main(int argc, char **argv) {
    registerAll();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    current.reset();
    benchmark::Shutdown();
    return 0;
}
