// Compiled with -std=c++17 and only the public include directory: proves that the installed
// headers are C++17 and self-contained (no libwebsockets, cpp-httplib, hiredis, rabbitmq-c,
// yaml-cpp or nlohmann headers are needed to use them).
#include <wsgw/wsgw.h>

#if __cplusplus != 201703L
#error "this test must be compiled as C++17"
#endif

#if defined(LWS_PRE) || defined(CPPHTTPLIB_VERSION) || defined(HIREDIS_MAJOR) || defined(AMQP_VERSION) ||       \
    defined(NLOHMANN_JSON_VERSION_MAJOR) || defined(YAML_CPP_API)
#error "a public header pulled in a dependency"
#endif

#include <cstdio>

int main() {
    wsgw::Registry registry;
    auto sel = wsgw::Selector::parse("group=a");
    if (!sel || sel->tags().size() != 1) return 1;
    wsgw::MessagePtr msg = wsgw::Message::text("hi", 16);
    if (msg->payload() != "hi" || registry.size() != 0) return 1;
    if (wsgw::percentDecode("a%2Fb+c", false) != std::optional<std::string>("a/b+c")) return 1;
    std::printf("libwsgw %s\n", wsgw::libraryVersion());
    return 0;
}
