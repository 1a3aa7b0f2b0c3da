// Fuzz target: wsgw::daemon::parseConfig, config.yml as wsgwd reads it (wsgwd/config.h).
//
// The input is the YAML text. Besides "no crash, no leak, no undefined behaviour, nothing
// thrown", it checks the contract in config.h:
//  - a failure reads "FILE:LINE:COL: message" with LINE and COL 1-based and LINE within the
//    text (or one past its last line);
//  - a config that loads is one wsgwd can run: at least one endpoint, paths that start with '/',
//    unique and without query, fragment or spaces; limits in their ranges; set_tags with
//    non-empty keys and values; json_extract_vars built into an extractor (valid names, runs);
//    templates that parse; a control whitelist; listen_addr and control_addr that do not
//    overlap;
//  - the addresses print in a form that parses back to the same address (HostPort, Cidr), and
//    a network contains its own address (as text, IPv4-mapped, as a socket address).
//
// yaml-cpp is Debian's, not instrumented: the fuzzer is guided by the coverage of the parser
// (wsgwd_config: the schema's walk over the YAML tree, the address and URL parsers) and of
// libwsgw. parseConfig opens no file, so neither does the fuzzer.
//
// Found here: a YAML document that starts with a stray ',' made yaml-cpp 0.7's LoadAll, and so
// parseConfig, allocate until memory ran out; parseConfig now refuses it (reproducer:
// tests/fuzz/reproducers/config-leading-comma.yml, also in the corpus).
//
// Run it with `make fuzz` or tests/fuzz/run.sh (tests/fuzz/README.md); by hand:
//   build-fuzz/tests/fuzz/config_fuzz -max_len=4096 -dict=tests/fuzz/config.dict
//       SCRATCH_DIR tests/fuzz/corpus/config

#include "fuzz_check.h"

#include "config.h"

#include <wsgw/event.h>
#include <wsgw/template.h>


#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

using wsgw::daemon::Cidr;
using wsgw::daemon::Config;
using wsgw::daemon::HostPort;
using wsgw::fuzz::printable;

constexpr std::string_view kFile = "fuzz.yml";


void checkError(std::string_view text, const std::string &error) {
    std::string where = "'" + printable(error) + "'";
    FUZZ_CHECK(error.substr(0, kFile.size() + 1) == std::string(kFile) + ":", "no file name in " + where);
    std::string_view rest = std::string_view(error).substr(kFile.size() + 1);
    std::size_t line = 0, col = 0, i = 0;
    for (; i < rest.size() && rest[i] >= '0' && rest[i] <= '9' && i < 12; ++i)
        line = line * 10 + static_cast<std::size_t>(rest[i] - '0');
    FUZZ_CHECK(i > 0 && i < rest.size() && rest[i] == ':', "no line in " + where);
    std::size_t j = ++i;
    for (; i < rest.size() && rest[i] >= '0' && rest[i] <= '9' && i - j < 12; ++i)
        col = col * 10 + static_cast<std::size_t>(rest[i] - '0');
    FUZZ_CHECK(i > j && rest.substr(i, 2) == ": ", "no column in " + where);
    FUZZ_CHECK(rest.size() > i + 2, "no message in " + where);
    std::size_t lines = static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')) + 1;
    FUZZ_CHECK(line >= 1 && line <= lines + 1, "line out of range in " + where);
    // No upper bound on the column: yaml-cpp counts it in the text as it decoded it (a leading
    // NUL makes it read UTF-16/32), so it may exceed the bytes given.
    FUZZ_CHECK(col >= 1, "column out of range in " + where);
}

void checkHostPort(const HostPort &hp, const char *what) {
    FUZZ_CHECK(hp.port != 0, std::string(what) + ": port 0");
    std::string text = hp.toString();
    std::string error;
    auto back = HostPort::parse(text, &error);
    FUZZ_CHECK(back.has_value() && *back == hp,
               std::string(what) + ": '" + printable(text) + "' does not parse back: " + error);
}

void checkCidr(const Cidr &net) {
    FUZZ_CHECK(net.prefix <= (net.v6 ? 128u : 32u), "prefix out of range");
    std::string text = net.toString();
    auto back = Cidr::parse(text);
    FUZZ_CHECK(back.has_value() && back->toString() == text && back->v6 == net.v6 &&
                   back->prefix == net.prefix &&
                   std::equal(std::begin(net.bytes), std::end(net.bytes), std::begin(back->bytes)),
               "network '" + printable(text) + "' does not parse back to itself");

    // A network holds its own address, as text, IPv4-mapped, and as a socket address.
    std::string addr = text.substr(0, text.find('/'));
    FUZZ_CHECK(net.contains(addr), "network '" + text + "' does not contain its address");
    sockaddr_storage storage{};
    if (net.v6) {
        sockaddr_in6 in6{};
        in6.sin6_family = AF_INET6;
        std::memcpy(&in6.sin6_addr, net.bytes, 16);
        std::memcpy(&storage, &in6, sizeof in6);
    } else {
        FUZZ_CHECK(net.contains("::ffff:" + addr),
                   "network '" + text + "' does not contain its IPv4-mapped address");
        sockaddr_in in{};
        in.sin_family = AF_INET;
        std::memcpy(&in.sin_addr, net.bytes, 4);
        std::memcpy(&storage, &in, sizeof in);
    }
    FUZZ_CHECK(net.contains(reinterpret_cast<const sockaddr *>(&storage)),
               "network '" + text + "' does not contain its socket address");
}

void checkTemplate(const std::string &source, const char *what) {
    std::string error;
    FUZZ_CHECK(wsgw::Template::parse(source, &error).has_value(),
               std::string(what) + ": '" + printable(source) + "' was accepted but does not parse: " + error);
}

void checkConfig(const Config &config) {
    FUZZ_CHECK(config.file == kFile, "file name lost");
    const HostPort &listen = config.ws.addr, &control = config.control.addr;
    checkHostPort(listen, "listen_addr");
    checkHostPort(control, "control_addr");
    if (listen.port == control.port) {
        auto wildcard = [](const std::string &h) { return h.empty() || h == "0.0.0.0" || h == "::"; };
        FUZZ_CHECK(listen.host != control.host && !wildcard(listen.host) && !wildcard(control.host),
                   "listen_addr " + listen.toString() + " and control_addr " + control.toString() + " overlap");
    }
    FUZZ_CHECK(!config.control.allow.empty(), "empty control whitelist");
    for (const Cidr &net : config.control.allow)
        checkCidr(net);

    // Sizes in whole KiB, 1 KiB to 1 GiB, as the keys allow.
    auto kibInRange = [](std::size_t bytes) { return bytes % 1024 == 0 && bytes >= 1024 && bytes <= (1u << 30); };
    FUZZ_CHECK(kibInRange(config.defaults.maxMessageBytes), "max_message_size_kb out of range");
    FUZZ_CHECK(kibInRange(config.control.maxBodyBytes), "max_body_kb out of range");
    FUZZ_CHECK(config.threads <= 256, "threads out of range");
    FUZZ_CHECK(config.ws.idleTimeout.count() >= 0 && config.ws.idleTimeout.count() <= 86400,
               "idle_timeout_s out of range");
    FUZZ_CHECK(config.effectiveEventLog() != Config::EventLog::Auto, "event_log auto not resolved");
    static constexpr std::string_view levels[] = {"trace", "debug", "info", "warn", "error", "off"};
    FUZZ_CHECK(std::find(std::begin(levels), std::end(levels), config.logLevel) != std::end(levels),
               "log_level '" + printable(config.logLevel) + "'");

    FUZZ_CHECK(!config.ws.endpoints.empty(), "no endpoints");
    for (std::size_t i = 0; i < config.ws.endpoints.size(); ++i) {
        const auto &ep = config.ws.endpoints[i];
        std::string what = "endpoint '" + printable(ep.path) + "': ";
        FUZZ_CHECK(!ep.path.empty() && ep.path.front() == '/', what + "path does not start with '/'");
        FUZZ_CHECK(ep.path.find_first_of("?# \t") == std::string::npos,
                   what + "query, fragment or space in the path");
        FUZZ_CHECK(config.findEndpoint(ep.path) == &ep, what + "path not unique");
        FUZZ_CHECK(kibInRange(ep.maxMessageBytes), what + "size limit out of range");
        FUZZ_CHECK(kibInRange(ep.slowConsumer.maxOutboundBytes), what + "max_outbound_kb out of range");
        FUZZ_CHECK(ep.rateLimit.perSecond == 0 || ep.rateLimit.burst >= 1, what + "a rate limit without a burst");
        for (const auto &[k, v] : ep.setTags)
            FUZZ_CHECK(!k.empty() && !v.empty(), what + "empty set_tags key or value");
        const std::vector<std::string> &include = ep.events.includeTags;
        for (std::size_t j = 0; j < include.size(); ++j) {
            FUZZ_CHECK(!include[j].empty(), what + "empty stream_include_tags entry");
            FUZZ_CHECK(std::count(include.begin(), include.end(), include[j]) == 1,
                       what + "duplicate stream_include_tags entry");
        }
        // The extractor was built from json_extract_vars: its names are valid, and it runs.
        for (const std::string &var : ep.events.json.names())
            FUZZ_CHECK(!var.empty() && var.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                             "0123456789_") == std::string::npos,
                       what + "json_extract_vars name '" + printable(var) + "'");
        (void)ep.events.json.extract(R"({"a": {"b": [1, {"c": "d"}]}})");
    }

    // A Redis section's endpoint: a host or a socket, and a connect timeout no longer than the
    // command timeout, which is timeout_ms (10 ms to 10 min).
    auto checkRedis = [](const wsgw::RedisEndpoint &e, const std::string &what) {
        FUZZ_CHECK(e.host.empty() != e.unixPath.empty(), what + ": neither or both of host and socket");
        FUZZ_CHECK(e.commandTimeout.count() >= 10 && e.commandTimeout.count() <= 600'000,
                   what + ": timeout_ms out of range");
        FUZZ_CHECK(e.connectTimeout <= e.commandTimeout, what + ": connect timeout longer than timeout_ms");
    };
    if (config.connectionRedisSync) {
        checkRedis(config.connectionRedisSync->options.redis, "connection_redis_sync");
        FUZZ_CHECK(config.connectionRedisSync->options.keyTtl.count() >= 3, "connection_redis_sync: key_ttl_s under 3");
    }
    if (config.streamRedis) {
        checkRedis(config.streamRedis->options.redis, "stream_redis");
        checkTemplate(config.streamRedis->options.streamName, "stream_redis.stream_name");
    }
    if (config.streamAmqp) {
        const wsgw::AmqpSinkOptions &a = config.streamAmqp->options;
        FUZZ_CHECK(!a.host.empty(), "stream_amqp: no host");
        FUZZ_CHECK(a.heartbeat.count() >= 0 && a.heartbeat.count() <= 65535, "stream_amqp: heartbeat out of range");
        FUZZ_CHECK(a.connectTimeout.count() >= 1 && a.connectTimeout.count() <= 600'000,
                   "stream_amqp: connection_timeout out of range");
        checkTemplate(a.routingKey, "stream_amqp.routing_key");
    }
    // The files the config names are recorded for readConfigFiles, with where they are named.
    for (const auto &f : config.files) {
        FUZZ_CHECK(!f.path.empty() && !f.key.empty(), "a named file without a path or key");
        FUZZ_CHECK(f.at.rfind(std::string(kFile) + ":", 0) == 0, "a named file without a position");
    }
    FUZZ_CHECK(config.control.token.empty() || std::none_of(config.files.begin(), config.files.end(),
                                                           [](const wsgw::daemon::ConfigFile &f) {
                                                               return f.use == wsgw::daemon::ConfigFile::Use::ControlToken;
                                                           }),
               "control_token and control_token_file both accepted");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char *>(data), size);
    std::string error;
    auto config = wsgw::daemon::parseConfig(text, std::string(kFile), &error);
    if (config)
        checkConfig(*config);
    else
        checkError(text, error);
    return 0;
}
