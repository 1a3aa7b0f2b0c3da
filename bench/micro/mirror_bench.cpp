// What the Redis mirror costs the shards, and how fast it writes and resyncs.
//
//   build/bench/mirror_bench [--connections 100000] [--shards 2] [--rounds 5] [--port PORT] [--setup 0|1|2]
//
// Without --port it starts a private redis-server (no persistence) on a free loopback port and
// stops it at the end. A Hub with its own shard threads holds N fake connections with three
// tags each; then, in three setups (no mirror; the mirror with Redis unreachable, so that its
// writer is idle and only the shard side is timed; the mirror writing to Redis):
//
//  1. tag change on the shard thread: what Hub::setTags does to each connection (the registry's
//     change, then the mirror's changed() with all its tags) for every connection; per change =
//     the shard threads' CPU time / N (the median of --rounds rounds).
//  2. opens written: after the N opens, how long until the mirror has nothing pending.
//  3. resync: FLUSHALL, then how long until every connection is back in Redis, and the longest a
//     shard was held meanwhile (a no-op posted to each shard every millisecond, its wait timed:
//     p99 and max), beside the same measure over a second with nothing going on.

#include "fake_connection.h"

#include <wsgw/hub.h>
#include <wsgw/mirror.h>

#include <hiredis/hiredis.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

extern char **environ;

using namespace wsgw;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

std::uint16_t freePort() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ::bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a);
    ::getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

long long redisInt(redisContext *c, const char *cmd) {
    auto *r = static_cast<redisReply *>(redisCommand(c, cmd));
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r) freeReplyObject(r);
    return v;
}

void onShard(Shard &s, const std::function<void(Shard &)> &fn) {
    std::promise<void> done;
    while (!s.post([&](Shard &sh) {
        fn(sh);
        done.set_value();
    }))
        std::this_thread::sleep_for(1ms);
    done.get_future().wait();
}

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

long long threadCpuNs() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<long long>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

struct Setup {
    const char *name;
    bool mirror;
    bool reachable;
};

} // namespace

int main(int argc, char **argv) {
    std::size_t connections = 100'000, shards = 2, rounds = 5;
    unsigned port = 0;
    int only = -1;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string flag = argv[i];
        const unsigned long long v = std::strtoull(argv[i + 1], nullptr, 10);
        if (flag == "--connections") connections = v;
        else if (flag == "--shards") shards = v;
        else if (flag == "--rounds") rounds = v;
        else if (flag == "--port") port = static_cast<unsigned>(v);
        else if (flag == "--setup") only = static_cast<int>(v);
        else {
            std::fprintf(stderr, "usage: mirror_bench [--connections N] [--shards N] [--rounds N] [--port PORT] [--setup 0|1|2]\n");
            return 2;
        }
    }
    pid_t redis = -1;
    if (port == 0) {
        port = freePort();
        std::string portText = std::to_string(port);
        const char *args[] = {"redis-server", "--port", portText.c_str(), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", nullptr};
        posix_spawn_file_actions_t quiet;
        posix_spawn_file_actions_init(&quiet);
        posix_spawn_file_actions_addopen(&quiet, 1, "/dev/null", O_WRONLY, 0);
        const int spawned = posix_spawnp(&redis, "redis-server", &quiet, nullptr, const_cast<char **>(args), environ);
        posix_spawn_file_actions_destroy(&quiet);
        if (spawned != 0) {
            std::fprintf(stderr, "cannot start redis-server (apt-get install redis-server)\n");
            return 2;
        }
    }
    redisContext *probe = nullptr;
    for (int i = 0; i < 200 && !(probe && !probe->err); ++i) {
        if (probe) redisFree(probe);
        std::this_thread::sleep_for(20ms);
        probe = redisConnect("127.0.0.1", static_cast<int>(port));
    }
    if (!probe || probe->err) {
        std::fprintf(stderr, "redis-server on port %u does not answer\n", port);
        return 2;
    }

    std::printf("%zu connections with 3 tags on %zu shards; Redis on 127.0.0.1:%u\n\n", connections, shards, port);
    std::printf("%-26s %15s %14s %10s %18s %18s\n", "setup", "tag change (ns)", "opens written", "resync",
                "shard wait p99/max", "(same, no resync)");
    const Setup setups[] = {{"no mirror", false, false}, {"mirror, Redis unreachable", true, false}, {"mirror, Redis", true, true}};
    for (int k = 0; k < 3; ++k) {
        if (only >= 0 && k != only) continue;
        const Setup setup = setups[k];
        redisInt(probe, "FLUSHALL");
        std::vector<std::unique_ptr<bench::FakeConnection>> conns(connections); // outlive the hub
        Hub hub({.shards = shards, .ownThreads = true});
        ConnectionMirror *mirror = nullptr;
        if (setup.mirror) {
            RedisMirrorOptions o;
            o.redis.port = static_cast<std::uint16_t>(setup.reachable ? port : freePort());
            o.node = "bench";
            auto m = makeRedisMirror(std::move(o));
            mirror = m.get();
            hub.setMirror(std::move(m));
        }
        if (!hub.start()) return 2;
        for (auto &c : conns) c = std::make_unique<bench::FakeConnection>();
        const auto openStart = Clock::now();
        for (std::size_t s = 0; s < shards; ++s)
            onShard(hub.shard(s), [&](Shard &sh) {
                for (std::size_t i = s; i < connections; i += shards)
                    (void)sh.open(*conns[i], {{"group", "g" + std::to_string(i % 100)}, {"user", "u" + std::to_string(i)},
                                              {"role", i % 10 ? "member" : "admin"}},
                                  EventSpec{});
            });
        std::string written = "-";
        if (setup.reachable) {
            while (mirror->stats().pending > 0 || redisInt(probe, "SCARD wsgw:node:bench:connections") <
                                                      static_cast<long long>(connections))
                std::this_thread::sleep_for(5ms);
            written = std::to_string(static_cast<long>(seconds(Clock::now() - openStart) * 1000)) + " ms";
        }

        // What Hub::setTags does for each connection (Registry::setTags, then the mirror's
        // changed() with all the tags), timed in the shard threads' CPU time, so that time the
        // 2-core machine gives to Redis or the writer instead is not counted.
        std::vector<double> perChange;
        for (std::size_t r = 0; r < rounds; ++r) {
            const TagList change{{"round", std::to_string(r)}};
            std::atomic<long long> cpuNs{0};
            std::promise<CountResult> answer;
            hub.forEachShard(
                [&](Shard &s) {
                    const long long t0 = threadCpuNs();
                    std::size_t n = s.registry().match(Selector::all(), [&](Connection &c) {
                        s.registry().setTags(c.id(), change);
                        if (mirror) mirror->changed(s.index(), c.id(), s.registry().tags(c.id()));
                    });
                    cpuNs.fetch_add(threadCpuNs() - t0);
                    return n;
                },
                [&](CountResult res) { answer.set_value(res); });
            const CountResult res = answer.get_future().get();
            perChange.push_back(static_cast<double>(cpuNs.load()) / static_cast<double>(res.value));
            if (setup.reachable)
                while (mirror->stats().pending > 0) std::this_thread::sleep_for(5ms);
        }
        std::sort(perChange.begin(), perChange.end());

        std::string resync = "-", wait = "-", idle = "-";
        if (setup.reachable) {
            // Shard latency meanwhile: a no-op posted to each shard every millisecond.
            std::atomic<bool> done{false};
            std::mutex mu;
            std::vector<long long> waits; // microseconds
            std::thread watcher([&] {
                while (!done.load()) {
                    for (std::size_t s = 0; s < shards; ++s) {
                        const auto t0 = Clock::now();
                        onShard(hub.shard(s), [](Shard &) {});
                        long long us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
                        std::lock_guard lock(mu);
                        waits.push_back(us);
                    }
                    std::this_thread::sleep_for(1ms);
                }
            });
            // p99 and max of the waits; on a loaded machine the scheduler alone delays, so the
            // same is measured over a second with nothing going on.
            auto summary = [&] {
                std::lock_guard lock(mu);
                std::sort(waits.begin(), waits.end());
                std::string out = waits.empty() ? "-"
                                                : std::to_string(waits[waits.size() * 99 / 100]) + "/" +
                                                      std::to_string(waits.back()) + " us";
                waits.clear();
                return out;
            };
            std::this_thread::sleep_for(1000ms);
            idle = summary();
            const auto before = mirror->stats().resyncs;
            const auto t0 = Clock::now();
            redisInt(probe, "FLUSHALL");
            while (mirror->stats().resyncs == before || mirror->stats().pending > 0) std::this_thread::sleep_for(5ms);
            resync = std::to_string(static_cast<long>(seconds(Clock::now() - t0) * 1000)) + " ms";
            wait = summary();
            done.store(true);
            watcher.join();
            if (redisInt(probe, "SCARD wsgw:node:bench:connections") != static_cast<long long>(connections))
                std::fprintf(stderr, "resync incomplete\n");
        }
        std::printf("%-26s %15.0f %14s %10s %18s %18s\n", setup.name, perChange[perChange.size() / 2], written.c_str(),
                    resync.c_str(), wait.c_str(), idle.c_str());
        for (std::size_t s = 0; s < shards; ++s)
            onShard(hub.shard(s), [&](Shard &sh) {
                for (std::size_t i = s; i < connections; i += shards) sh.closed(*conns[i], EventSpec{});
            });
        hub.stop(10s);
    }
    redisFree(probe);
    if (redis > 0) {
        ::kill(redis, SIGTERM);
        ::waitpid(redis, nullptr, 0);
    }
    return 0;
}
