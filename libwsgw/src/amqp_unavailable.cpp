// makeAmqpSink and makeAmqpCommandReader when libwsgw is built without rabbitmq-c (meson option amqp disabled or
// librabbitmq not found).
#include <wsgw/command_bus.h>
#include <wsgw/sink.h>

namespace wsgw {

namespace {
void unavailable(std::string *error) {
    if (error)
        *error = "this build of libwsgw has no AMQP support: install rabbitmq-c (Debian: librabbitmq-dev) and "
                 "rebuild with meson option -Damqp=enabled";
}
} // namespace

std::unique_ptr<EventSink> makeAmqpSink(AmqpSinkOptions, std::string *error) {
    unavailable(error);
    return nullptr;
}

std::unique_ptr<CommandReader> makeAmqpCommandReader(AmqpCommandOptions, std::string *error) {
    unavailable(error);
    return nullptr;
}

} // namespace wsgw
