#include "redis_server.h"

#include "skip.h"

#include <hiredis/hiredis.h>

#include <signal.h>
#include "tied_process.h"
#include <sys/wait.h>
#include <unistd.h>

#include <stdexcept>
#include <thread>


namespace wsgw::itest {

namespace {

// redis-server as a shell would find it (Debian: /usr/bin), so that a test run can hide it
// (PATH=...) to check that the tests then skip, or fail under CI=true.
const std::string &redisServerPath() {
    static const std::string path = wsgw::test::findInPath("redis-server");
    return path;
}

} // namespace

bool haveRedisServer() { return !redisServerPath().empty(); }

RedisServer::RedisServer(std::uint16_t port, bool durable) : port_(port ? port : freePort()), durable_(durable) {
    start();
}

RedisServer::~RedisServer() {
    if (pid_ > 0) {
        ::kill(pid_, SIGCONT);
        kill();
    }
}

void RedisServer::start() {
    std::string portText = std::to_string(port_);
    std::vector<std::string> args{redisServerPath(), "--port", portText, "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", durable_ ? "yes" : "no",
                                  "--appendfsync", "always", "--dir", dir_.path(),
                                  "--logfile", dir_.file("redis.log"), "--daemonize", "no",
                                  "--unixsocket", unixSocket(), "--unixsocketperm", "700"};
    std::string spawnError;
    pid_t pid = test::spawnTied(args, {}, &spawnError);
    if (pid < 0) throw std::runtime_error("cannot start redis-server: " + spawnError);
    pid_ = pid;
    bool up = eventually(
        [&] {
            redisContext *c = redisConnect("127.0.0.1", port_);
            bool ok = c && !c->err;
            if (ok) {
                auto *r = static_cast<redisReply *>(redisCommand(c, "PING"));
                ok = r && r->type == REDIS_REPLY_STATUS;
                if (r) freeReplyObject(r);
            }
            if (c) redisFree(c);
            return ok;
        },
        10000ms);
    if (!up) throw std::runtime_error("redis-server did not answer on port " + portText);
}

void RedisServer::pause() { ::kill(pid_, SIGSTOP); }
void RedisServer::resume() { ::kill(pid_, SIGCONT); }

void RedisServer::kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int st;
    waitpid(pid_, &st, 0);
    pid_ = -1;
}

RedisProbe::RedisProbe(std::uint16_t port) {
    ctx_ = redisConnect("127.0.0.1", port);
    if (!ctx_ || ctx_->err) throw std::runtime_error("cannot connect to the test redis");
}

RedisProbe::~RedisProbe() {
    if (ctx_) redisFree(ctx_);
}

namespace {
redisReply *run(redisContext *c, const std::vector<std::string> &args) {
    std::vector<const char *> argv;
    std::vector<std::size_t> lens;
    for (auto &a : args) {
        argv.push_back(a.data());
        lens.push_back(a.size());
    }
    return static_cast<redisReply *>(redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()));
}
} // namespace

std::string RedisProbe::command(const std::vector<std::string> &args) {
    redisReply *r = run(ctx_, args);
    if (!r) throw std::runtime_error("redis probe: connection lost");
    std::string out;
    switch (r->type) {
    case REDIS_REPLY_INTEGER:
        out = std::to_string(r->integer);
        break;
    case REDIS_REPLY_NIL:
        out = "(nil)";
        break;
    case REDIS_REPLY_ERROR:
        out = "ERR:" + std::string(r->str, r->len);
        break;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        out.assign(r->str, r->len);
        break;
    default:
        out = "(array)";
    }
    freeReplyObject(r);
    return out;
}

std::vector<std::string> RedisProbe::list(const std::vector<std::string> &args) {
    redisReply *r = run(ctx_, args);
    if (!r) throw std::runtime_error("redis probe: connection lost");
    std::vector<std::string> out;
    if (r->type == REDIS_REPLY_ARRAY)
        for (std::size_t i = 0; i < r->elements; ++i)
            if (r->element[i]->type == REDIS_REPLY_STRING) out.emplace_back(r->element[i]->str, r->element[i]->len);
    freeReplyObject(r);
    return out;
}

std::map<std::string, std::string> RedisProbe::hash(const std::string &key) {
    auto flat = list({"HGETALL", key});
    std::map<std::string, std::string> out;
    for (std::size_t i = 0; i + 1 < flat.size(); i += 2) out[flat[i]] = flat[i + 1];
    return out;
}

namespace {

// The entries of an XRANGE-shaped array reply: [[id, [field, value, ...]], ...].
void appendEntries(const redisReply *entries, std::vector<std::map<std::string, std::string>> &out) {
    if (!entries || entries->type != REDIS_REPLY_ARRAY) return;
    for (std::size_t i = 0; i < entries->elements; ++i) {
        const redisReply *entry = entries->element[i];
        if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2) continue;
        const redisReply *fields = entry->element[1];
        std::map<std::string, std::string> m;
        for (std::size_t j = 0; j + 1 < fields->elements; j += 2)
            m[std::string(fields->element[j]->str, fields->element[j]->len)] =
                std::string(fields->element[j + 1]->str, fields->element[j + 1]->len);
        m["_id"] = std::string(entry->element[0]->str, entry->element[0]->len);
        out.push_back(std::move(m));
    }
}

} // namespace

std::vector<std::map<std::string, std::string>> RedisProbe::stream(const std::string &key) {
    redisReply *r = run(ctx_, {"XRANGE", key, "-", "+"});
    if (!r) throw std::runtime_error("redis probe: connection lost");
    std::vector<std::map<std::string, std::string>> out;
    appendEntries(r, out);
    freeReplyObject(r);
    for (auto &m : out) m.erase("_id");
    return out;
}

std::vector<std::map<std::string, std::string>> RedisProbe::readGroup(const std::string &group,
                                                                      const std::string &consumer,
                                                                      const std::string &key, int blockMs) {
    redisReply *r = run(ctx_, {"XREADGROUP", "GROUP", group, consumer, "COUNT", "100", "BLOCK",
                               std::to_string(blockMs), "STREAMS", key, ">"});
    if (!r) throw std::runtime_error("redis probe: connection lost");
    std::vector<std::map<std::string, std::string>> out;
    // [[key, entries], ...], or nil when the block timed out.
    if (r->type == REDIS_REPLY_ARRAY)
        for (std::size_t i = 0; i < r->elements; ++i)
            if (r->element[i]->type == REDIS_REPLY_ARRAY && r->element[i]->elements == 2)
                appendEntries(r->element[i]->element[1], out);
    freeReplyObject(r);
    return out;
}

} // namespace wsgw::itest
