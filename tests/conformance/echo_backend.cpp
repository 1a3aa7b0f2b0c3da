// The backend that makes wsgwd an echo server for the conformance suite, the way an application
// uses it: it reads wsgwd's events (the event log, one JSON line per event, piped from wsgwd's
// stdout) and sends each client message back to its connection with POST /send?id=<connection>
// on the control API, text as text and binary (base64 in the event) as
// application/octet-stream, one at a time and in order, over one keep-alive connection.
//
//   wsgwd --config C | conformance-echo-backend --control-port N [--timeline FILE]
//
// --timeline writes one line per echoed message: the event's time (wsgwd took the message), when
// the backend read it, how long parsing took, the /send round trip (all in ms, wall clock), the
// message size and type: where the time of an echo goes (tests/conformance/README.md).
// Exits when stdin ends (wsgwd stopped).

#include <httplib.h>
#include <openssl/evp.h>

#if WSGW_HAVE_SIMDJSON
#include <simdjson.h>
#else
#include <nlohmann/json.hpp>
#endif

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <string_view>

namespace {

// Base64 (the event's binary messages) through OpenSSL, which the tests link anyway.
std::string base64Decode(std::string_view in) {
    std::string out(in.size() / 4 * 3 + 3, '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char *>(out.data()),
                            reinterpret_cast<const unsigned char *>(in.data()), static_cast<int>(in.size()));
    if (n < 0) return {};
    std::size_t size = static_cast<std::size_t>(n);
    // EVP_DecodeBlock counts the padding as zero bytes.
    for (std::size_t i = in.size(); i > 0 && in[i - 1] == '=' && size > 0; --i) --size;
    out.resize(size);
    return out;
}

// What the backend needs of one event line.
struct Echo {
    std::string connection;
    std::string body;
    bool binary = false;
    long long time = 0;
};

// The event's fields; false for a line that is not a message event. A 16 MiB message is a
// 16 MiB JSON string: simdjson reads it in milliseconds, nlohmann's parser (the fallback
// without libsimdjson-dev) in a few hundred, which would be counted against wsgwd's echo.
#if WSGW_HAVE_SIMDJSON
bool parseEvent(std::string &line, Echo &out) {
    static simdjson::dom::parser parser;
    line.reserve(line.size() + simdjson::SIMDJSON_PADDING);
    simdjson::dom::element e;
    if (parser.parse(simdjson::padded_string_view(line.data(), line.size(), line.capacity())).get(e)) return false;
    std::string_view action, id, type, message, encoding;
    if (e["action"].get_string().get(action) || action != "message") return false;
    if (e["connection"].get_string().get(id) || e["message"].get_string().get(message)) return false;
    if (e["type"].get_string().get(type)) type = "";
    if (e["encoding"].get_string().get(encoding)) encoding = "";
    int64_t time = 0;
    if (e["time"].get_int64().get(time)) time = 0;
    out.connection.assign(id);
    out.binary = type == "binary";
    out.body = out.binary && encoding == "base64" ? base64Decode(message) : std::string(message);
    out.time = time;
    return true;
}
#else
bool parseEvent(std::string &line, Echo &out) {
    nlohmann::json e = nlohmann::json::parse(line, nullptr, false);
    if (e.is_discarded() || !e.is_object() || e.value("action", "") != "message") return false;
    out.connection = e.value("connection", "");
    out.binary = e.value("type", "") == "binary";
    out.body = e["message"].get<std::string>();
    if (out.binary && e.value("encoding", "") == "base64") out.body = base64Decode(out.body);
    out.time = e.value("time", 0LL);
    return true;
}
#endif

// Wall-clock milliseconds, as the event's "time".
double nowMs() {
    return std::chrono::duration<double, std::milli>(std::chrono::system_clock::now().time_since_epoch()).count();
}

} // namespace

int main(int argc, char **argv) {
    int port = 0;
    const char *timelinePath = nullptr;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--control-port") && i + 1 < argc)
            port = std::atoi(argv[++i]);
        else if (!std::strcmp(argv[i], "--timeline") && i + 1 < argc)
            timelinePath = argv[++i];
        else {
            std::fprintf(stderr, "usage: %s --control-port N [--timeline FILE]\n", argv[0]);
            return 2;
        }
    }
    if (port <= 0) {
        std::fprintf(stderr, "--control-port is required\n");
        return 2;
    }
    FILE *timeline = timelinePath ? std::fopen(timelinePath, "w") : nullptr;
    httplib::Client control("127.0.0.1", port);
    control.set_keep_alive(true);
    control.set_tcp_nodelay(true); // headers and body are two writes: no Nagle wait between them
    control.set_read_timeout(30, 0);
    control.set_write_timeout(30, 0);
    std::ios::sync_with_stdio(false);
    std::string line;
    std::size_t failures = 0;
    Echo echo;
    while (std::getline(std::cin, line)) {
        double read = nowMs();
        if (!parseEvent(line, echo)) continue;
        double parsed = nowMs();
        auto r = control.Post("/send?id=" + echo.connection, echo.body,
                              echo.binary ? "application/octet-stream" : "text/plain");
        double sent = nowMs();
        if (!r || r->status != 200) {
            if (++failures <= 10)
                std::fprintf(stderr, "echo-backend: /send for %s failed: %s\n", echo.connection.c_str(),
                             r ? std::to_string(r->status).c_str() : httplib::to_string(r.error()).c_str());
        }
        if (timeline)
            std::fprintf(timeline, "%lld %.3f %.3f %.3f %zu %s\n", echo.time, read, parsed - read, sent - parsed,
                         echo.body.size(), echo.binary ? "binary" : "text");
    }
    if (timeline) std::fclose(timeline);
    return 0;
}
