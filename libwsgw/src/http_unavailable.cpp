// Built instead of the webhook sink when libwsgw is configured without cpp-httplib
// (-Dhttp=disabled).
#include <wsgw/sink.h>

namespace wsgw {

std::unique_ptr<EventSink> makeHttpSink(HttpSinkOptions, std::string *error) {
    if (error) *error = "this libwsgw was built without HTTP support (meson -Dhttp=enabled needs cpp-httplib and OpenSSL)";
    return nullptr;
}

} // namespace wsgw
