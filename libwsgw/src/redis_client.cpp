#include "redis_client.h"

#include <hiredis/hiredis.h>

#include <poll.h>
#include <sys/time.h>

#include <cerrno>

namespace wsgw {

namespace {

timeval toTimeval(std::chrono::milliseconds ms) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
    return tv;
}

void convert(const redisReply *r, RedisClient::Reply &out) {
    out = RedisClient::Reply{};
    switch (r->type) {
    case REDIS_REPLY_STATUS:
        out.kind = RedisClient::Reply::Kind::Ok;
        out.text.assign(r->str, r->len);
        break;
    case REDIS_REPLY_ERROR:
        out.kind = RedisClient::Reply::Kind::Error;
        out.text.assign(r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        out.kind = RedisClient::Reply::Kind::Integer;
        out.integer = r->integer;
        break;
    case REDIS_REPLY_STRING:
        out.kind = RedisClient::Reply::Kind::String;
        out.text.assign(r->str, r->len);
        break;
    case REDIS_REPLY_ARRAY:
        out.kind = RedisClient::Reply::Kind::Array;
        for (std::size_t i = 0; i < r->elements; ++i) {
            if (r->element[i]->type == REDIS_REPLY_ARRAY || r->element[i]->type == REDIS_REPLY_NIL) {
                out.children.resize(r->elements);
                for (std::size_t j = 0; j < r->elements; ++j) convert(r->element[j], out.children[j]);
                break;
            }
        }
        for (std::size_t i = 0; i < r->elements; ++i) {
            const redisReply *e = r->element[i];
            if (e->type == REDIS_REPLY_STRING) {
                out.elements.emplace_back(e->str, e->len);
            } else if (e->type == REDIS_REPLY_ERROR) {
                if (out.errorElements++ == 0) out.text.assign(e->str, e->len);
            }
        }
        break;
    default:
        out.kind = RedisClient::Reply::Kind::Nil;
        break;
    }
}

} // namespace

RedisClient::RedisClient(RedisEndpoint endpoint) : endpoint_(std::move(endpoint)) {}

RedisClient::~RedisClient() { disconnect(); }

std::string RedisClient::where() const {
    return endpoint_.unixPath.empty() ? endpoint_.host + ":" + std::to_string(endpoint_.port) : endpoint_.unixPath;
}

bool RedisClient::fail(std::string message) {
    error_ = std::move(message);
    disconnect();
    return false;
}

void RedisClient::disconnect() noexcept {
    if (ctx_) redisFree(ctx_);
    ctx_ = nullptr;
}

bool RedisClient::connect() {
    disconnect();
    timeval tv = toTimeval(endpoint_.connectTimeout);
    ctx_ = endpoint_.unixPath.empty() ? redisConnectWithTimeout(endpoint_.host.c_str(), endpoint_.port, tv)
                                      : redisConnectUnixWithTimeout(endpoint_.unixPath.c_str(), tv);
    if (!ctx_) return fail("cannot connect to Redis at " + where() + ": out of memory");
    if (ctx_->err) return fail("cannot connect to Redis at " + where() + ": " + ctx_->errstr);
    redisSetTimeout(ctx_, toTimeval(endpoint_.commandTimeout));
    if (endpoint_.unixPath.empty()) redisEnableKeepAlive(ctx_); // not on unix sockets: it fails there

    Reply reply;
    auto login = [&](const std::vector<std::string_view> &args, const char *what) {
        if (!command(args, reply)) return false;
        if (reply.kind == Reply::Kind::Error) return fail(std::string(what) + " refused by Redis at " + where() + ": " + reply.text);
        return true;
    };
    if (!endpoint_.password.empty()) {
        if (endpoint_.user.empty() ? !login({"AUTH", endpoint_.password}, "AUTH")
                                   : !login({"AUTH", endpoint_.user, endpoint_.password}, "AUTH"))
            return false;
    }
    if (endpoint_.db != 0) {
        std::string db = std::to_string(endpoint_.db);
        if (!login({"SELECT", db}, "SELECT")) return false;
    }
    if (!endpoint_.clientName.empty() && !login({"CLIENT", "SETNAME", endpoint_.clientName}, "CLIENT SETNAME"))
        return false;
    if (!login({"PING"}, "PING")) return false;
    error_.clear();
    return true;
}

void RedisClient::append(const std::vector<std::string_view> &args) {
    if (!ctx_) return;
    argv_.clear();
    argl_.clear();
    for (std::string_view a : args) {
        argv_.push_back(a.data());
        argl_.push_back(a.size());
    }
    redisAppendCommandArgv(ctx_, static_cast<int>(argv_.size()), argv_.data(), argl_.data());
}

void RedisClient::appendFormatted(std::string_view commands) {
    if (!ctx_ || commands.empty()) return;
    redisAppendFormattedCommand(ctx_, commands.data(), commands.size());
}

bool RedisClient::read(Reply &reply) {
    if (!ctx_) return fail(error_.empty() ? "not connected to Redis" : error_);
    void *raw = nullptr;
    if (redisGetReply(ctx_, &raw) != REDIS_OK || !raw) {
        std::string why = ctx_->errstr[0] ? ctx_->errstr : "connection lost";
        if (ctx_->err == REDIS_ERR_IO && (why.find("Resource temporarily unavailable") != std::string::npos))
            why = "no reply within " + std::to_string(endpoint_.commandTimeout.count()) + " ms";
        return fail("Redis at " + where() + ": " + why);
    }
    auto *r = static_cast<redisReply *>(raw);
    convert(r, reply);
    freeReplyObject(r);
    return true;
}

bool RedisClient::poll(Reply &reply, std::chrono::milliseconds wait, bool &got) {
    got = false;
    if (!ctx_) return fail(error_.empty() ? "not connected to Redis" : error_);
    auto lost = [&] { return fail("Redis at " + where() + ": " + (ctx_->errstr[0] ? ctx_->errstr : "connection lost")); };
    void *raw = nullptr;
    if (redisGetReplyFromReader(ctx_, &raw) != REDIS_OK) return lost();
    if (!raw) {
        pollfd p{ctx_->fd, POLLIN, 0};
        const int n = ::poll(&p, 1, static_cast<int>(wait.count()));
        if (n < 0) return errno == EINTR ? true : fail("Redis at " + where() + ": poll failed");
        if (n == 0) return true;
        if (redisBufferRead(ctx_) != REDIS_OK) return lost();
        if (redisGetReplyFromReader(ctx_, &raw) != REDIS_OK) return lost();
        if (!raw) return true;
    }
    auto *r = static_cast<redisReply *>(raw);
    convert(r, reply);
    freeReplyObject(r);
    got = true;
    return true;
}

bool RedisClient::command(const std::vector<std::string_view> &args, Reply &reply) {
    append(args);
    return read(reply);
}

} // namespace wsgw
