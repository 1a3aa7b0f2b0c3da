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
#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

namespace {

std::string base64Decode(const std::string &in) {
    static const auto table = [] {
        std::array<int, 256> t{};
        t.fill(-1);
        const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(alphabet[i])] = i;
        return t;
    }();
    std::string out;
    out.reserve(in.size() / 4 * 3);
    unsigned bits = 0;
    int count = 0;
    for (unsigned char c : in) {
        int v = table[c];
        if (v < 0) continue; // '=' and anything else
        bits = (bits << 6) | static_cast<unsigned>(v);
        count += 6;
        if (count >= 8) {
            count -= 8;
            out.push_back(static_cast<char>((bits >> count) & 0xff));
        }
    }
    return out;
}

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
    while (std::getline(std::cin, line)) {
        double read = nowMs();
        nlohmann::json e = nlohmann::json::parse(line, nullptr, false);
        if (e.is_discarded() || !e.is_object() || e.value("action", "") != "message") continue;
        const std::string id = e.value("connection", "");
        const bool binary = e.value("type", "") == "binary";
        std::string body = e["message"].get<std::string>();
        if (binary && e.value("encoding", "") == "base64") body = base64Decode(body);
        double parsed = nowMs();
        auto r = control.Post("/send?id=" + id, body, binary ? "application/octet-stream" : "text/plain");
        double sent = nowMs();
        if (!r || r->status != 200) {
            if (++failures <= 10)
                std::fprintf(stderr, "echo-backend: /send for %s failed: %s\n", id.c_str(),
                             r ? std::to_string(r->status).c_str() : httplib::to_string(r.error()).c_str());
        }
        if (timeline)
            std::fprintf(timeline, "%lld %.3f %.3f %.3f %zu %s\n", e.value("time", 0LL), read, parsed - read,
                         sent - parsed, body.size(), binary ? "binary" : "text");
    }
    if (timeline) std::fclose(timeline);
    return 0;
}
