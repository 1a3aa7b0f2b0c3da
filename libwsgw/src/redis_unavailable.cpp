// Built instead of the Redis sinks when libwsgw is configured without hiredis (-Dredis=disabled).
#include <wsgw/sink.h>

namespace wsgw {

namespace {
std::unique_ptr<EventSink> unavailable(std::string *error) {
    if (error) *error = "this libwsgw was built without Redis support (meson -Dredis=enabled needs hiredis)";
    return nullptr;
}
} // namespace

std::unique_ptr<EventSink> makeRedisStreamSink(RedisStreamOptions, std::string *error) { return unavailable(error); }
std::unique_ptr<EventSink> makeRedisMirrorSink(RedisMirrorOptions, std::string *error) { return unavailable(error); }

} // namespace wsgw
