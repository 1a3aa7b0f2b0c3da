// makeAmqpSink when libwsgw is built without rabbitmq-c (meson option amqp disabled or
// librabbitmq not found).
#include <wsgw/sink.h>

namespace wsgw {

std::unique_ptr<EventSink> makeAmqpSink(AmqpSinkOptions, std::string *error) {
    if (error)
        *error = "this build of libwsgw has no AMQP support: install rabbitmq-c (Debian: librabbitmq-dev) and "
                 "rebuild with meson option -Damqp=enabled";
    return nullptr;
}

} // namespace wsgw
