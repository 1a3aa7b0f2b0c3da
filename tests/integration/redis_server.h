#pragma once

// A real redis-server for the tests, on a free port in a temp dir, stopped (by PID) on
// destruction; and a small hiredis client to look at what wsgwd wrote.

#include "harness.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

struct redisContext;

namespace wsgw::itest {

/// Whether redis-server (looked up in $PATH) can be run here; tests skip with a message if not
/// (tests/support/skip.h).
bool haveRedisServer();

class RedisServer {
public:
    /// Starts redis-server on `port` (0: a free one) and waits until it answers PING. `durable`:
    /// with an append-only file fsynced on every write (appendfsync always), so that what it
    /// acknowledged survives kill() and start().
    explicit RedisServer(std::uint16_t port = 0, bool durable = false);
    ~RedisServer();
    RedisServer(const RedisServer &) = delete;
    RedisServer &operator=(const RedisServer &) = delete;

    std::uint16_t port() const { return port_; }
    /// The server also listens on this unix socket.
    std::string unixSocket() const { return dir_.file("redis.sock"); }
    std::string url(int db = 0) const { return "redis://127.0.0.1:" + std::to_string(port_) + "/" + std::to_string(db); }

    void pause();   ///< SIGSTOP: connections stay up, nothing is answered
    void resume();  ///< SIGCONT
    void kill();    ///< SIGKILL and wait: the port is closed (data is lost unless durable)
    void start();   ///< start again on the same port

private:
    TempDir dir_;
    std::uint16_t port_;
    bool durable_ = false;
    int pid_ = -1;
};

/// A blocking client for assertions.
class RedisProbe {
public:
    explicit RedisProbe(std::uint16_t port);
    ~RedisProbe();
    RedisProbe(const RedisProbe &) = delete;
    RedisProbe &operator=(const RedisProbe &) = delete;

    /// A command with binary-safe arguments; returns its reply as text (integers as digits,
    /// nil as "(nil)", errors prefixed "ERR:").
    std::string command(const std::vector<std::string> &args);
    std::vector<std::string> list(const std::vector<std::string> &args); ///< an array reply
    std::map<std::string, std::string> hash(const std::string &key);    ///< HGETALL
    /// XRANGE key - +: each entry's fields as a map.
    std::vector<std::map<std::string, std::string>> stream(const std::string &key);
    /// XREADGROUP GROUP group consumer COUNT 100 BLOCK blockMs STREAMS key >, as a backend reads:
    /// each new entry's fields as a map, plus its id under "_id". Empty when nothing came.
    std::vector<std::map<std::string, std::string>> readGroup(const std::string &group, const std::string &consumer,
                                                              const std::string &key, int blockMs);

private:
    redisContext *ctx_ = nullptr;
};

} // namespace wsgw::itest
