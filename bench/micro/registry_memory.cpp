// Registry memory per connection, measured as heap growth.
//
//   build/bench/registry_memory                 # 1,000,000 connections, every case
//   build/bench/registry_memory 100000          # another size
//   build/bench/registry_memory --check         # exit 1 if a 3-tag case exceeds the target
//
// For each case a fresh Registry is filled with N connections and the heap is read with glibc's
// mallinfo2() before and after: uordblks (bytes in use in the arenas) plus hblkhd (bytes in
// chunks malloc took straight from mmap, which is where the large hash tables of a big registry
// live; uordblks alone misses them). The connection objects are allocated before the first
// reading, and each connection's TagList is built and freed around its add(), so the growth is
// what the registry keeps. Malloc's own per-chunk overhead is included: it is what the process
// pays. Registry::memory().bytes (the registry's own estimate, without that overhead) is printed
// beside it.
//
// Cases: the 3-tag mix of tag_mix.h with short users ("u123456") and with UUID users, plus cases
// with fewer tags, so that the cost of each part can be told apart.

#include "fake_connection.h"
#include "tag_mix.h"

#include <wsgw/registry.h>
#include <wsgw/selector.h>

#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace wsgw;

constexpr double kTargetBytes = 250;

std::size_t heapInUse() {
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

enum class Mix { None, GroupRole, UserShort, Full };

struct Case {
    const char *name;
    Mix mix;
    bench::UserStyle users;
    bool checked; // the 3-tag cases the target is about
};

TagList tagsOf(const Case &c, std::size_t i, std::size_t n, ConnectionId id) {
    TagList all = bench::tagsFor(i, n, id, c.users);
    switch (c.mix) {
    case Mix::None:
        return {};
    case Mix::GroupRole:
        return {all[0], all[1]};
    case Mix::UserShort:
        return {all[2]};
    case Mix::Full:
        return all;
    }
    return all;
}

struct Result {
    std::size_t heapBytes = 0;
    std::size_t accountedBytes = 0;
    std::size_t interned = 0;
};

// Figures for a registry that dropped entries would be meaningless: check that it holds what was
// added (one group, one role) before trusting them.
void checkContents(const Registry &registry, const Case &c, std::size_t n) {
    auto expect = [&](const char *key, const std::string &value, std::size_t want) {
        std::size_t got = registry.count(Selector::withTags({{key, value}}));
        if (got == want) return;
        std::fprintf(stderr, "registry_memory: case %s: %s=%s selects %zu connections, expected %zu: the registry lost "
                             "entries, its memory figures would be meaningless\n",
                     c.name, key, value.c_str(), got, want);
        std::exit(3);
    };
    if (registry.size() != n) {
        std::fprintf(stderr, "registry_memory: case %s: size() is %zu, expected %zu\n", c.name, registry.size(), n);
        std::exit(3);
    }
    if (c.mix == Mix::GroupRole || c.mix == Mix::Full) {
        expect("group", bench::groupName(0), n / bench::groupCount(n));
        expect("role", bench::roleName(0), (n + 3) / 4);
    }
}

Result measure(const Case &c, bench::FakeConnection *conns, std::size_t n) {
    Result r;
    std::size_t before = heapInUse();
    {
        auto registry = std::make_unique<Registry>();
        for (std::size_t i = 0; i < n; ++i) {
            if (!registry->add(conns[i], tagsOf(c, i, n, conns[i].id()))) {
                std::fprintf(stderr, "registry_memory: add failed for connection %zu\n", i);
                std::exit(2);
            }
        }
        r.heapBytes = heapInUse() - before;
        checkContents(*registry, c, n);
        RegistryMemory m = registry->memory();
        r.accountedBytes = m.bytes;
        r.interned = m.internedStrings;
    }
    return r;
}

void usage(std::FILE *out) {
    std::fprintf(out, "usage: registry_memory [--check] [CONNECTIONS]\n"
                      "Heap bytes per connection of a Registry holding CONNECTIONS (default 1000000).\n"
                      "  --check  exit 1 if a 3-tag case needs more than %.0f bytes per connection\n",
                 kTargetBytes);
}

} // namespace

int main(int argc, char **argv) {
    std::size_t n = 1'000'000;
    bool check = false;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--check") == 0) {
            check = true;
        } else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            char *end = nullptr;
            unsigned long long v = std::strtoull(argv[i], &end, 10);
            if (!end || *end || v == 0) {
                usage(stderr);
                return 2;
            }
            n = static_cast<std::size_t>(v);
        }
    }

    const Case cases[] = {
        {"no_tags", Mix::None, bench::UserStyle::Short, false},
        {"group_role", Mix::GroupRole, bench::UserStyle::Short, false},
        {"user_short_only", Mix::UserShort, bench::UserStyle::Short, false},
        {"tags3_short_user", Mix::Full, bench::UserStyle::Short, true},
        {"tags3_uuid_user", Mix::Full, bench::UserStyle::Uuid, true},
    };

    // Every connection object exists before the first reading.
    std::unique_ptr<bench::FakeConnection[]> conns(new bench::FakeConnection[n]);

    bool missed = false;
    std::vector<Result> results;
    for (const Case &c : cases) {
        Result r = measure(c, conns.get(), n);
        results.push_back(r);
        double perConn = static_cast<double>(r.heapBytes) / static_cast<double>(n);
        double accounted = static_cast<double>(r.accountedBytes) / static_cast<double>(n);
        bool ok = !c.checked || perConn <= kTargetBytes;
        missed |= !ok;
        std::printf("registry_memory case=%s connections=%zu heap_bytes=%zu heap_per_conn=%.1f accounted_per_conn=%.1f "
                    "interned=%zu target=%.0f %s\n",
                    c.name, n, r.heapBytes, perConn, accounted, r.interned, kTargetBytes,
                    c.checked ? (ok ? "result=ok" : "result=missed") : "result=info");
    }

    std::printf("\n%-18s %12s %14s %16s %10s\n", "case", "heap MiB", "heap B/conn", "memory() B/conn", "interned");
    for (std::size_t k = 0; k < results.size(); ++k) {
        const Result &r = results[k];
        std::printf("%-18s %12.1f %14.1f %16.1f %10zu%s\n", cases[k].name, static_cast<double>(r.heapBytes) / (1 << 20),
                    static_cast<double>(r.heapBytes) / static_cast<double>(n),
                    static_cast<double>(r.accountedBytes) / static_cast<double>(n), r.interned,
                    cases[k].checked ? (static_cast<double>(r.heapBytes) / static_cast<double>(n) <= kTargetBytes
                                            ? "  (target met)"
                                            : "  (target MISSED)")
                                     : "");
    }
    std::printf("target: %.0f heap bytes per connection for the 3-tag cases\n", kTargetBytes);

    // What each part costs, from the differences between cases (indices as in `cases`).
    auto per = [&](std::size_t k) { return static_cast<double>(results[k].heapBytes) / static_cast<double>(n); };
    std::printf("\nper connection, by difference:\n"
                "  record + id index (no_tags)                  %6.1f\n"
                "  group and role, shared values (group_role)   %6.1f\n"
                "  one unique short value (user_short_only)     %6.1f\n"
                "  a UUID instead of a short unique value       %6.1f\n",
                per(0), per(1) - per(0), per(2) - per(0), per(4) - per(3));
    return check && missed ? 1 : 0;
}
