#pragma once

#include <wsgw/sink.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

struct redisContext;

namespace wsgw {

/// Builds pipelined Redis commands in the protocol's own form (RESP arrays of bulk strings) into
/// one buffer, for RedisClient::appendFormatted: a sink formats a whole batch with no allocation
/// per command or argument (hiredis's argv formatting costs a printf-style pass per argument).
///
/// Thread-compatible.
class RespBuilder {
public:
    /// Starts a command of `args` arguments; exactly that many arg() calls must follow.
    void command(std::size_t args) {
        buf_ += '*';
        number(args);
    }
    /// One binary-safe argument.
    void arg(std::string_view a) {
        buf_ += '$';
        number(a.size());
        buf_.append(a.data(), a.size());
        buf_ += "\r\n";
    }
    void arg(std::uint64_t n) {
        char digits[20];
        std::size_t len = 0;
        do {
            digits[sizeof digits - 1 - len++] = static_cast<char>('0' + n % 10);
            n /= 10;
        } while (n);
        arg(std::string_view(digits + sizeof digits - len, len));
    }
    const std::string &data() const noexcept { return buf_; }
    void clear() noexcept { buf_.clear(); }

private:
    void number(std::size_t n) {
        char digits[20];
        std::size_t len = 0;
        do {
            digits[sizeof digits - 1 - len++] = static_cast<char>('0' + n % 10);
            n /= 10;
        } while (n);
        buf_.append(digits + sizeof digits - len, len);
        buf_ += "\r\n";
    }

    std::string buf_;
};

/// A blocking Redis connection (hiredis) with timeouts, for a sink's own thread. Commands are
/// pipelined: append() any number, then read() one reply each, in order.
///
/// Thread-compatible.
class RedisClient {
public:
    struct Reply {
        enum class Kind { Ok, Error, Integer, String, Array, Nil } kind = Kind::Ok;
        std::string text;  ///< status, error or string reply; for an array, its first error
        long long integer = 0;
        std::vector<std::string> elements; ///< an array's string elements (SMEMBERS and the like)
        std::size_t errorElements = 0;     ///< an array's error elements (EXEC: failed commands)
        /// Every element of an array that holds arrays or nils (XREADGROUP, XAUTOCLAIM), each
        /// converted the same way; empty for a flat array of strings.
        std::vector<Reply> children;
    };

    explicit RedisClient(RedisEndpoint endpoint);
    ~RedisClient();
    RedisClient(const RedisClient &) = delete;
    RedisClient &operator=(const RedisClient &) = delete;

    /// Connects, then AUTH, SELECT and CLIENT SETNAME as configured. False with error() set
    /// when the server cannot be reached or refuses the login.
    bool connect();
    bool connected() const noexcept { return ctx_ != nullptr; }
    void disconnect() noexcept;

    /// Queues a command (arguments are binary-safe).
    void append(const std::vector<std::string_view> &args);
    /// Queues commands already in the protocol's form (RespBuilder::data()), as one copy.
    void appendFormatted(std::string_view commands);
    /// The next reply; false (and disconnected, with error() set) on a connection error or
    /// timeout. An error reply is a Reply of kind Error, not a failure.
    bool read(Reply &reply);
    /// The next reply if one comes within `wait` (`got` says whether one came): for a
    /// subscriber, whose silence is no error. False (and disconnected) on a connection error.
    bool poll(Reply &reply, std::chrono::milliseconds wait, bool &got);
    /// append() + read().
    bool command(const std::vector<std::string_view> &args, Reply &reply);

    const std::string &error() const noexcept { return error_; }
    /// "host:port" or the unix socket path, for messages.
    std::string where() const;

private:
    bool fail(std::string message);

    RedisEndpoint endpoint_;
    redisContext *ctx_ = nullptr;
    std::string error_;
    std::vector<const char *> argv_;
    std::vector<std::size_t> argl_;
};

} // namespace wsgw
