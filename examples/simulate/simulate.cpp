// simulate: the gateway's dev helpers, without sockets.
//
// N simulated connections live on an in-memory transport (SimConnection counts what it
// receives) spread over the shards of a Hub that runs its own shard threads. Each round moves
// some connections to other groups with Hub::setTags, then broadcasts to one group and to one
// role with Hub::send and prints how long delivering to M connections took. A model of the
// tags kept here says how many connections each broadcast must reach and how many messages each
// connection must have received; any difference fails the run (exit 1).
//
//   simulate                                   # 100000 connections, 20 rounds
//   simulate --connections 2000 --rounds 5     # a quick smoke run
//
// Tag mix: group=g<i % (N/100)> (100 members each), role=r<i % 4>, user=u<i>.

#include <wsgw/wsgw.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace wsgw;
using Clock = std::chrono::steady_clock;

// The in-memory transport: a connection that counts the messages it is sent. A closed one
// refuses further messages, like a socket in its closing handshake.
//
// Thread-bound to its shard, like every Connection.
class SimConnection final : public Connection {
public:
    explicit SimConnection(std::size_t index) : Connection(ConnectionId::random()), index_(index) {}

    SendStatus send(const MessagePtr &) override {
        if (closed_) return SendStatus::Closed;
        ++received_;
        return SendStatus::Queued;
    }
    void close(std::uint16_t, std::string_view) override { closed_ = true; }
    std::string remoteAddress() const override {
        return "10.0." + std::to_string(index_ / 250 % 250) + "." + std::to_string(index_ % 250 + 1) + ":" +
               std::to_string(10000 + index_ % 50000);
    }
    std::string_view endpoint() const override { return "/sim"; }

    std::uint64_t received() const noexcept { return received_; }
    bool isClosed() const noexcept { return closed_; }

private:
    std::size_t index_;
    std::uint64_t received_ = 0;
    bool closed_ = false;
};

struct Options {
    std::size_t connections = 100000;
    std::size_t rounds = 20;
    std::size_t shards = 2;
    std::optional<std::size_t> churn; // group moves per round; default connections / 100
    std::uint64_t seed = 1;
};

void usage(std::FILE *out) {
    std::fprintf(out,
                 "usage: simulate [options]\n"
                 "Simulated connections on an in-memory transport: tag churn, broadcasts, verified delivery.\n"
                 "\n"
                 "  --connections N  simulated connections (default 100000)\n"
                 "  --rounds N       rounds of churn and broadcasts (default 20)\n"
                 "  --shards N       hub shards, one thread each (default 2)\n"
                 "  --churn N        connections moved to another group per round (default connections/100)\n"
                 "  --seed N         random seed (default 1)\n"
                 "  --help           this text\n"
                 "\n"
                 "Exit status: 0 when every broadcast reached exactly the expected connections, 1 when not,\n"
                 "2 on bad usage.\n");
}

std::optional<Options> parseArgs(int argc, char **argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            usage(stdout);
            std::exit(0);
        }
        auto number = [&](std::size_t min) -> std::optional<std::uint64_t> {
            if (i + 1 >= argc) return std::nullopt;
            char *end = nullptr;
            const char *text = argv[++i];
            unsigned long long v = std::strtoull(text, &end, 10);
            if (end == text || *end != '\0' || v < min) return std::nullopt;
            return v;
        };
        std::optional<std::uint64_t> v;
        if (arg == "--connections" && (v = number(1))) {
            o.connections = *v;
        } else if (arg == "--rounds" && (v = number(0))) {
            o.rounds = *v;
        } else if (arg == "--shards" && (v = number(1))) {
            o.shards = *v;
        } else if (arg == "--churn" && (v = number(0))) {
            o.churn = *v;
        } else if (arg == "--seed" && (v = number(0))) {
            o.seed = *v;
        } else {
            std::fprintf(stderr, "simulate: bad argument '%s'%s\n\n", argv[i],
                         arg.rfind("--", 0) == 0 ? " (or a missing or invalid number after it)" : "");
            usage(stderr);
            return std::nullopt;
        }
    }
    return o;
}

// Runs fn on every shard's thread and sums what it returns; nullopt if the hub refused.
std::optional<std::size_t> onEveryShard(Hub &hub, std::function<std::size_t(Shard &)> fn) {
    std::promise<CountResult> done;
    std::future<CountResult> result = done.get_future();
    hub.forEachShard(std::move(fn), [&done](CountResult r) { done.set_value(r); });
    CountResult r = result.get();
    if (!r.ok()) return std::nullopt;
    return r.value;
}

// What the tags should be: each connection's group, each group's members, and what each
// connection should have received. Only the main thread touches it.
class Model {
public:
    Model(std::size_t connections, std::size_t groups)
        : groupOf_(connections), posInGroup_(connections), members_(groups), expected_(connections, 0) {
        for (std::size_t i = 0; i < connections; ++i) {
            std::size_t g = i % groups;
            groupOf_[i] = static_cast<std::uint32_t>(g);
            posInGroup_[i] = static_cast<std::uint32_t>(members_[g].size());
            members_[g].push_back(static_cast<std::uint32_t>(i));
        }
    }

    std::size_t groupOf(std::size_t i) const { return groupOf_[i]; }

    void move(std::size_t i, std::size_t to) {
        auto &from = members_[groupOf_[i]];
        std::uint32_t last = from.back();
        from[posInGroup_[i]] = last;
        posInGroup_[last] = posInGroup_[i];
        from.pop_back();
        groupOf_[i] = static_cast<std::uint32_t>(to);
        posInGroup_[i] = static_cast<std::uint32_t>(members_[to].size());
        members_[to].push_back(static_cast<std::uint32_t>(i));
    }

    // A broadcast to group g: returns how many it must reach.
    std::size_t sendToGroup(std::size_t g) {
        for (std::uint32_t i : members_[g]) ++expected_[i];
        return members_[g].size();
    }
    // A broadcast to role r: the roles never change, connection i has role i % 4.
    std::size_t sendToRole(std::size_t r) {
        std::size_t n = 0;
        for (std::size_t i = r; i < expected_.size(); i += 4, ++n) ++expected_[i];
        return n;
    }

    std::uint64_t expected(std::size_t i) const { return expected_[i]; }

private:
    std::vector<std::uint32_t> groupOf_, posInGroup_;
    std::vector<std::vector<std::uint32_t>> members_;
    std::vector<std::uint64_t> expected_;
};

std::string groupName(std::size_t g) { return "g" + std::to_string(g); }

double micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

} // namespace

int main(int argc, char **argv) {
    std::optional<Options> parsed = parseArgs(argc, argv);
    if (!parsed) return 2;
    const Options opt = *parsed;
    const std::size_t n = opt.connections;
    const std::size_t groups = std::max<std::size_t>(1, n / 100);
    const std::size_t churn = opt.churn.value_or(n / 100);

    HubOptions hubOptions;
    hubOptions.shards = opt.shards;
    hubOptions.ownThreads = true;
    Hub hub(hubOptions);
    hub.events().addSink(makeNullSink()); // events are made and published, then dropped quietly
    if (std::string why; !hub.start(&why)) {
        std::fprintf(stderr, "simulate: %s\n", why.c_str());
        return 1;
    }
    EventSpec spec;
    spec.includeTags = {"user"};

    std::vector<std::unique_ptr<SimConnection>> conns;
    conns.reserve(n);
    for (std::size_t i = 0; i < n; ++i) conns.push_back(std::make_unique<SimConnection>(i));

    // Open: connection i lives on shard i % shards; each shard opens its own on its thread.
    auto t0 = Clock::now();
    std::optional<std::size_t> opened = onEveryShard(hub, [&](Shard &shard) {
        std::size_t ok = 0;
        for (std::size_t i = shard.index(); i < n; i += hub.shardCount()) {
            TagList tags{{"group", groupName(i % groups)}, {"role", "r" + std::to_string(i % 4)},
                         {"user", "u" + std::to_string(i)}};
            ok += shard.open(*conns[i], tags, spec);
        }
        return ok;
    });
    if (opened != n) {
        std::fprintf(stderr, "simulate: opened %zu of %zu connections\n", opened.value_or(0), n);
        return 1;
    }
    std::printf("opened %zu connections on %zu shards in %.1f ms (%zu groups of ~%zu, 4 roles)\n", n,
                hub.shardCount(), micros(Clock::now() - t0) / 1000, groups, n / groups);

    Model model(n, groups);
    std::mt19937_64 rng(opt.seed);
    MessagePtr msg = Message::text("{\"type\":\"broadcast\"}");
    bool ok = true;
    std::size_t broadcasts = 0, delivered = 0;
    double deliveryMicros = 0;

    // One broadcast: its wall time from the call until every shard has answered.
    auto broadcast = [&](const Selector &sel, std::size_t expected, std::size_t round) {
        auto start = Clock::now();
        CountResult r = hub.send(sel, msg).get();
        double us = micros(Clock::now() - start);
        ++broadcasts;
        delivered += r.value;
        deliveryMicros += us;
        bool right = r.ok() && r.value == expected;
        std::printf("round %3zu  %-12s M=%-8zu %9.1f us  %7.1f ns/connection%s\n", round, sel.toString().c_str(),
                    r.value, us, r.value ? us * 1000 / static_cast<double>(r.value) : 0.0,
                    right ? "" : "  <- WRONG");
        if (!right) {
            std::fprintf(stderr, "simulate: %s reached %zu connections (status %d), expected %zu\n",
                         sel.toString().c_str(), r.value, static_cast<int>(r.status), expected);
            ok = false;
        }
    };

    for (std::size_t round = 1; round <= opt.rounds; ++round) {
        // Churn: move connections to other groups, one setTags each, waiting a window at a time
        // so that no shard inbox overflows.
        constexpr std::size_t kWindow = 512;
        for (std::size_t done = 0; done < churn;) {
            std::vector<std::future<CountResult>> pending;
            for (; done < churn && pending.size() < kWindow; ++done) {
                std::size_t i = rng() % n;
                std::size_t to = groups > 1 ? (model.groupOf(i) + 1 + rng() % (groups - 1)) % groups : 0;
                model.move(i, to);
                pending.push_back(hub.setTags(Selector::withIds({conns[i]->id()}), {{"group", groupName(to)}}));
            }
            for (auto &f : pending) {
                CountResult r = f.get();
                if (!r.ok() || r.value != 1) {
                    std::fprintf(stderr, "simulate: setTags reached %zu connections (status %d), expected 1\n",
                                 r.value, static_cast<int>(r.status));
                    ok = false;
                }
            }
        }

        std::size_t g = rng() % groups;
        std::size_t expected = model.sendToGroup(g);
        broadcast(Selector::withTags({{"group", groupName(g)}}), expected, round);
        std::size_t role = round % 4;
        expected = model.sendToRole(role);
        broadcast(Selector::withTags({{"role", "r" + std::to_string(role)}}), expected, round);
    }

    // Registry memory, summed over the shards on their own threads.
    std::optional<std::size_t> bytes = onEveryShard(hub, [](Shard &s) { return s.registry().memory().bytes; });
    std::printf("registry memory: %.1f MiB for %zu connections, %.1f bytes per connection (Registry::memory)\n",
                static_cast<double>(bytes.value_or(0)) / (1 << 20), n,
                static_cast<double>(bytes.value_or(0)) / static_cast<double>(n));

    // Every connection received exactly what the model says; checked on the shard threads,
    // which own the connections. The model is no longer written, so they may read it.
    std::optional<std::size_t> wrong = onEveryShard(hub, [&](Shard &shard) {
        std::size_t bad = 0;
        for (std::size_t i = shard.index(); i < n; i += hub.shardCount())
            bad += conns[i]->received() != model.expected(i);
        return bad;
    });
    if (wrong != std::size_t{0}) {
        std::fprintf(stderr, "simulate: %zu connections received a different number of messages than sent\n",
                     wrong.value_or(n));
        ok = false;
    }

    // Close everyone; the transport then reports each connection gone on its shard.
    CountResult closing = hub.close(Selector::all(), close_code::kNormal, "Closed by server").get();
    std::optional<std::size_t> left = onEveryShard(hub, [&](Shard &shard) {
        for (std::size_t i = shard.index(); i < n; i += hub.shardCount())
            if (conns[i]->isClosed()) shard.closed(*conns[i], spec);
        return shard.registry().size();
    });
    if (!closing.ok() || closing.value != n || left != std::size_t{0}) {
        std::fprintf(stderr, "simulate: close reached %zu of %zu connections, %zu still registered\n", closing.value,
                     n, left.value_or(n));
        ok = false;
    }
    hub.stop();

    std::printf("%s: %zu broadcasts, %zu deliveries, %.1f ns per delivery on average, %zu group moves per round\n",
                ok ? "ok" : "FAILED", broadcasts, delivered,
                delivered ? deliveryMicros * 1000 / static_cast<double>(delivered) : 0.0, churn);
    return ok ? 0 : 1;
}
