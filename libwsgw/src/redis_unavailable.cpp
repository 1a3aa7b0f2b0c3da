// Built instead of the Redis sinks and the Redis mirror when libwsgw is configured without
// hiredis (-Dredis=disabled), and the Redis cluster transport likewise.
#include "command_dedup.h"

#include <wsgw/cluster.h>
#include <wsgw/command_bus.h>
#include <wsgw/mirror.h>
#include <wsgw/sink.h>

namespace wsgw {

namespace {
void unavailable(std::string *error) {
    if (error) *error = "this libwsgw was built without Redis support (meson -Dredis=enabled needs hiredis)";
}
} // namespace

std::unique_ptr<EventSink> makeRedisStreamSink(RedisStreamOptions, std::string *error) {
    unavailable(error);
    return nullptr;
}
std::unique_ptr<ConnectionMirror> makeRedisMirror(RedisMirrorOptions, std::string *error) {
    unavailable(error);
    return nullptr;
}

std::unique_ptr<ClusterTransport> makeRedisClusterTransport(RedisClusterOptions, std::string *error) {
    unavailable(error);
    return nullptr;
}

std::unique_ptr<CommandReader> makeRedisCommandReader(RedisCommandOptions, std::string *error) {
    unavailable(error);
    return nullptr;
}

std::unique_ptr<CommandDedup> makeRedisCommandDedup(const RedisEndpoint &, std::string, std::chrono::milliseconds,
                                                    std::chrono::milliseconds, std::string *error) {
    unavailable(error);
    return nullptr;
}

} // namespace wsgw
