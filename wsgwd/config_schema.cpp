#include "config_schema.h"

#include "config_table.h"
#include "text_scan.h"

#include <wsgw/event.h>
#include <wsgw/selector.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

namespace wsgw::daemon {

namespace {

using namespace schema;
using Seconds = std::chrono::seconds;
using Milliseconds = std::chrono::milliseconds;

// Bounds that several keys share.
constexpr std::uint64_t kMaxSizeKb = 1024 * 1024; // 1 GiB
constexpr std::uint64_t kMaxEvents = 1'000'000'000;
constexpr std::uint64_t kMaxTimeoutMs = 600'000;
constexpr std::uint64_t kMaxConnections = 10'000'000;
constexpr std::uint64_t kDayS = 86400;
constexpr std::uint64_t kYearS = 365 * kDayS;
constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// The sections. Each table lists its keys in the order "known keys are ..." names them; a
// key's default is its member's initializer in the component's options struct (ws_options.h,
// control_options.h, libwsgw's sink.h and mirror.h) or in config.h.

const Section<RateLimit> &rateLimitKeys() {
    static const Section<RateLimit> keys{
        "a map with max_messages_per_s, burst and policy",
        IfNull::Defaults,
        {
            {"max_messages_per_s", number(&RateLimit::perSecond, 0, 1'000'000),
             "'max_messages_per_s: 50' (0 turns the limit off)"},
            {"burst", number(&RateLimit::burst, 1, 1'000'000)},
            {"policy", choice(&RateLimit::policy,
                              {{"close", RateLimit::Policy::Close}, {"drop", RateLimit::Policy::Drop}})},
        },
        [](RateLimit &r) {
            if (r.burst == 0) r.burst = std::max(1u, r.perSecond);
        }};
    return keys;
}

const Section<SlowConsumer> &slowConsumerKeys() {
    using P = SlowConsumer::Policy;
    static const Section<SlowConsumer> keys{
        "a map with max_outbound_kb and policy",
        IfNull::Defaults,
        {
            {"max_outbound_kb", bytes(&SlowConsumer::maxOutboundBytes, kKiB, 1, kMaxSizeKb)},
            {"policy",
             choice(&SlowConsumer::policy,
                    {{"close", P::Close}, {"drop_newest", P::DropNewest}, {"drop_oldest", P::DropOldest}})},
        }};
    return keys;
}

const Section<TlsFiles> &tlsKeys() {
    static const Section<TlsFiles> keys{"a map with cert and key (PEM files)",
                                        IfNull::Empty,
                                        {
                                            {"cert", pemFile(&TlsFiles::cert), "'cert: /etc/wsgw/tls.crt'"},
                                            {"key", pemFile(&TlsFiles::key), "'key: /etc/wsgw/tls.key'"},
                                        }};
    return keys;
}

// addr: the URL's server and login go into the section's endpoint, whose timeouts stay
// (timeout_ms may come before addr); the URL as written and its TLS scheme beside.
template <class S> void storeRedisAddress(const RedisAddress &a, S &section) {
    RedisEndpoint &ep = section.options.redis;
    ep.host = a.host;
    ep.port = a.port;
    ep.unixPath = a.unixPath;
    ep.db = a.db;
    ep.user = a.user;
    ep.password = a.password;
    ep.clientName = a.clientName;
    section.url = a.url;
    section.tls = a.tls;
}

// timeout_ms of a Redis section: a reply slower than this counts as an outage.
template <class O> Read<O> redisTimeout() {
    return in(&O::redis, duration<Milliseconds>(&RedisEndpoint::commandTimeout, 10, kMaxTimeoutMs));
}

// Connecting waits no longer than a reply would, and at most 2 s.
void settleConnectTimeout(RedisEndpoint &ep) {
    ep.connectTimeout = std::min(ep.commandTimeout, Milliseconds(2000));
}

const Section<RedisSyncConfig> &redisSyncKeys() {
    using S = RedisSyncConfig;
    using O = RedisMirrorOptions;
    static const Section<S> keys{
        "a map with 'addr'",
        IfNull::Absent,
        {
            {"addr", redisUrl(storeRedisAddress<S>), "'addr: redis://localhost:6379/0'"},
            {"timeout_ms", in(&S::options, redisTimeout<O>())},
            // a dead node's mirror keys outlive it by at most this; under 3 s the refresh could not keep up
            {"key_ttl_s", in(&S::options, duration<Seconds>(&O::keyTtl, 3, 7 * kDayS))},
        },
        [](S &s) { settleConnectTimeout(s.options.redis); }};
    return keys;
}

const Section<ClusterConfig> &clusterKeys() {
    using S = ClusterConfig;
    using O = RedisClusterOptions;
    static const Section<S> keys{
        "a map with 'addr'",
        IfNull::Absent,
        {
            {"addr", redisUrl(storeRedisAddress<S>), "'addr: redis://localhost:6379/0'"},
            {"heartbeat_ms", in(&S::options, duration<Milliseconds>(&O::heartbeat, 10, 60'000))},
            {"dead_after_ms", in(&S::options, duration<Milliseconds>(&O::deadAfter, 20, kMaxTimeoutMs))},
            {"command_timeout_ms", duration<Milliseconds>(&S::commandTimeout, 10, kMaxTimeoutMs)},
        },
        [](S &s) { settleConnectTimeout(s.options.redis); }};
    return keys;
}

// command_redis: where backends write commands (README: Commands over Redis and AMQP).
const Section<CommandRedisConfig> &commandRedisKeys() {
    using S = CommandRedisConfig;
    using O = RedisCommandOptions;
    static const Section<S> keys{
        "a map with 'addr'",
        IfNull::Absent,
        {
            {"addr", redisUrl(storeRedisAddress<S>), "'addr: redis://localhost:6379/0'"},
            {"stream", in(&S::options, nonEmptyText(&O::stream, "a stream name"))},
            {"group", in(&S::options, nonEmptyText(&O::group, "a consumer group name"))},
            // an entry a consumer has held unacknowledged this long is taken over by another node
            {"claim_idle_ms", in(&S::options, duration<Milliseconds>(&O::claimIdle, 100, kMaxTimeoutMs))},
            // a command_id seen within this window is not applied again
            {"dedup_window_s", in(&S::options, duration<Seconds>(&O::dedupWindow, 1, 7 * kDayS))},
            {"timeout_ms", in(&S::options, redisTimeout<O>())},
        },
        [](S &s) { settleConnectTimeout(s.options.redis); }};
    return keys;
}

const Section<StreamRedisConfig> &streamRedisKeys() {
    using S = StreamRedisConfig;
    using O = RedisStreamOptions;
    static const Section<S> keys{
        "a map with 'addr' and 'stream_name'",
        IfNull::Absent,
        {
            {"addr", redisUrl(storeRedisAddress<S>), "'addr: redis://localhost:6379/0'"},
            {"stream_name", in(&S::options, templateText(&O::streamName, false))},
            {"stream_maxlen", in(&S::options, number(&O::maxLen, 0, kMaxEvents))},
            {"timeout_ms", in(&S::options, redisTimeout<O>())},
        },
        [](S &s) { settleConnectTimeout(s.options.redis); }};
    return keys;
}

// addr: the URL's server, login and vhost, and its heartbeat and connection_timeout when it
// gives them (else the sink's defaults stay).
void storeAmqpAddress(const AmqpAddress &a, StreamAmqpConfig &section) {
    AmqpSinkOptions &o = section.options;
    o.host = a.host;
    o.port = a.port;
    o.tls = a.tls;
    o.user = a.user;
    o.password = a.password;
    o.vhost = a.vhost;
    if (a.heartbeatS) o.heartbeat = Seconds(*a.heartbeatS);
    if (a.connectionTimeoutMs) o.connectTimeout = Milliseconds(*a.connectionTimeoutMs);
    section.url = a.url;
}

void readHeaders(Reader &r, const Entry &e, const std::string &name, AmqpSinkOptions &out) {
    for (const Entry &h : r.w.entries(r.w.map(e, name, "a map of header: value"), name, {}))
        out.headers[h.key] = r.w.scalar(h, name + "." + h.key, "a header value");
}

const Section<StreamAmqpConfig> &streamAmqpKeys() {
    using S = StreamAmqpConfig;
    using O = AmqpSinkOptions;
    static const Section<S> keys{
        "a map with 'addr', 'exchange', 'queue', 'routing_key', 'headers'",
        IfNull::Absent,
        {
            {"addr", amqpUrl(storeAmqpAddress), "'addr: amqp://guest:guest@localhost:5672/'"},
            {"exchange", in(&S::options, text(&O::exchange, "an exchange name"))},
            {"queue", in(&S::options, text(&O::queue, "a queue name"))},
            {"routing_key", in(&S::options, templateText(&O::routingKey, true))},
            {"headers", in(&S::options, Read<O>(readHeaders))},
        }};
    return keys;
}

// command_amqp.addr: as storeAmqpAddress, into the reader's broker options.
void storeCommandAmqpAddress(const AmqpAddress &a, CommandAmqpConfig &section) {
    StreamAmqpConfig asSink;
    asSink.options = section.options.broker;
    storeAmqpAddress(a, asSink);
    section.options.broker = asSink.options;
    section.url = a.url;
}

void readCommandQueue(Reader &r, const Entry &e, const std::string &name, AmqpCommandOptions &o) {
    o.queue = r.w.nonEmpty(e, name, "a queue name");
    if (o.queue.size() > 255) r.w.fail(e.value.Mark(), name + ": a queue name has at most 255 bytes");
}

// command_amqp: the queue backends publish commands to (README: Commands over Redis and AMQP).
const Section<CommandAmqpConfig> &commandAmqpKeys() {
    using S = CommandAmqpConfig;
    using O = AmqpCommandOptions;
    static const Section<S> keys{
        "a map with 'addr'",
        IfNull::Absent,
        {
            {"addr", amqpUrl(storeCommandAmqpAddress), "'addr: amqp://guest:guest@localhost:5672/'"},
            {"queue", in(&S::options, Read<O>(readCommandQueue))},
            // unacknowledged commands the broker hands a node at most
            {"prefetch", in(&S::options, number(&O::prefetch, 1, 65535))},
            // a command_id seen within this window is not applied again
            {"dedup_window_s", in(&S::options, duration<Seconds>(&O::dedupWindow, 1, 7 * kDayS))},
        }};
    return keys;
}

// url: checked by building the sink once (nothing is connected), which knows what it can do.
void readHttpUrl(Reader &r, const Entry &e, const std::string &name, StreamHttpConfig &s) {
    s.options.url = r.w.nonEmpty(e, name, "a URL such as http://127.0.0.1:8080/events");
    HttpSinkOptions probe;
    probe.url = s.options.url;
    std::string why;
    if (!makeHttpSink(probe, &why)) r.w.fail(e.value.Mark(), name + ": " + why);
}

/// Where a webhook section is in a loaded Config (stream_http, or a backend's http), for the
/// secret read later; nullptr when it is not there.
using HttpSectionOf = StreamHttpConfig *(*)(Config &, const std::string &backend);

/// Recorded for readConfigFiles, which reads the secret and checks it. `backend`: the backend
/// whose http section this is ("" for stream_http).
void recordWebhookSecretFile(Reader &r, const Entry &e, const std::string &name, HttpSectionOf sectionOf,
                             std::string backend) {
    std::string path = r.w.nonEmpty(e, name, "the path of a file holding a whsec_... secret");
    ConfigFile f{ConfigFile::Use::Content, name, path, position(r.config.file, e.value.Mark()), {}};
    f.store = [sectionOf, backend](Config &c, std::string secret) -> std::string {
        StreamHttpConfig *section = sectionOf(c, backend);
        if (!section) return {};
        HttpSinkOptions probe = section->options;
        probe.secret = secret;
        std::string why;
        if (!makeHttpSink(probe, &why)) return why;
        section->options.secret = std::move(secret);
        return {};
    };
    r.config.files.push_back(std::move(f));
}

void readWebhookSecretFile(Reader &r, const Entry &e, const std::string &name, StreamHttpConfig &) {
    recordWebhookSecretFile(
        r, e, name, [](Config &c, const std::string &) { return c.streamHttp ? &*c.streamHttp : nullptr; }, {});
}

/// The keys of stream_http, with secret_file read by `secretFile`.
std::vector<Key<StreamHttpConfig>> httpKeys(Read<StreamHttpConfig> secretFile) {
    using S = StreamHttpConfig;
    using O = HttpSinkOptions;
    return {
        {"url", readHttpUrl, "'url: http://127.0.0.1:8080/events'"},
        {"secret_file", std::move(secretFile)},
        {"ca_file", in(&S::options, pemFile(&O::caFile))},
        {"batch_max_events", in(&S::options, number(&O::batchMaxEvents, 1, 100'000))},
        {"batch_ms", duration<Milliseconds>(&S::batchWait, 0, 60'000)},
        {"timeout_ms", in(&S::options, duration<Milliseconds>(&O::timeout, 10, kMaxTimeoutMs))},
        {"max_in_flight", in(&S::options, number(&O::maxInFlight, 1, 64))},
    };
}

constexpr const char *kHttpWhat =
    "a map with 'url' and optionally 'secret_file', 'batch_max_events', 'batch_ms', 'timeout_ms', 'max_in_flight'";

const Section<StreamHttpConfig> &streamHttpKeys() {
    static const Section<StreamHttpConfig> keys{kHttpWhat, IfNull::Absent, httpKeys(readWebhookSecretFile)};
    return keys;
}

// ---------------------------------------------------------------------------------------------
// An endpoint

void readEndpointBackends(Reader &r, const Entry &e, const std::string &name, WsEndpoint &ep);

void readPath(Reader &r, const Entry &e, const std::string &name, WsEndpoint &ep) {
    ep.path = r.w.nonEmpty(e, name, "a URL path such as /connect");
    if (ep.path.front() != '/')
        r.w.fail(e.value.Mark(), name + ": must start with '/', got '" + ep.path + "'");
    if (ep.path.find_first_of("?# \t") != std::string::npos)
        r.w.fail(e.value.Mark(), name + ": a path has no query, fragment or spaces, got '" + ep.path + "'");
}

void readSetTags(Reader &r, const Entry &e, const std::string &name, WsEndpoint &ep) {
    for (const Entry &t : r.w.entries(r.w.map(e, name, "a map of tag: value"), name, {})) {
        if (t.key.empty()) r.w.fail(t.keyNode.Mark(), name + ": a tag name must not be empty");
        if (t.key == wsgw::kSelectorIdKey)
            r.w.fail(t.keyNode.Mark(), name + ": tag name 'id' is reserved (selectors read id= as connection ids, "
                                              "so such a tag could never be selected)");
        ep.setTags.emplace_back(t.key, r.w.nonEmpty(t, name + "." + t.key, "a tag value"));
    }
}

void readStreamIncludeTags(Reader &r, const Entry &e, const std::string &name, WsEndpoint &ep) {
    std::vector<std::string> &tags = ep.events.includeTags;
    std::size_t i = 0;
    for (const YAML::Node &t : r.w.list(e, name, "a list of tag names")) {
        std::string item = name + "[" + std::to_string(i++) + "]";
        std::string tag = r.w.scalarNode(t, item, "a tag name");
        if (tag.empty()) r.w.fail(t.Mark(), item + ": a tag name must not be empty");
        if (std::find(tags.begin(), tags.end(), tag) == tags.end()) tags.push_back(tag);
    }
}

void readJsonExtractVars(Reader &r, const Entry &e, const std::string &name, WsEndpoint &ep) {
    std::vector<std::pair<std::string, std::string>> vars;
    for (const Entry &v : r.w.entries(r.w.map(e, name, "a map of VAR: dotted.path"), name, {})) {
        std::string varName = name + "." + v.key;
        std::string path = r.w.nonEmpty(v, varName, "a dotted path into the message, e.g. data.command");
        std::string why;
        if (!wsgw::JsonExtractor::create({{v.key, path}}, &why)) {
            // The name is checked first; blame the key for it, the path otherwise.
            if (!wsgw::JsonExtractor::create({{v.key, "x"}})) r.w.fail(v.keyNode.Mark(), name + ": " + why);
            r.w.failWithin(v.value, varName + ": ", why);
        }
        vars.emplace_back(v.key, path);
    }
    // Each variable is valid, and their names are distinct keys: together they are too.
    std::string why;
    auto json = wsgw::JsonExtractor::create(vars, &why);
    if (!json) r.w.fail(e.value.Mark(), name + ": " + why);
    ep.events.json = std::move(*json);
}

void readAllowedOrigins(Reader &r, const Entry &e, const std::string &name, WsEndpoint &ep) {
    std::size_t i = 0;
    for (const YAML::Node &o : r.w.list(e, name, "a list of origins, e.g. [https://app.example]")) {
        std::string item = name + "[" + std::to_string(i++) + "]";
        std::string origin = r.w.scalarNode(o, item, "an origin such as https://app.example");
        if (origin.empty() || origin.find("://") == std::string::npos || origin.back() == '/')
            r.w.fail(o.Mark(), item + ": expected SCHEME://HOST[:PORT] with no path, got '" + origin + "'");
        ep.allowedOrigins.push_back(lower(origin));
    }
}

// jwt: one key file (recorded for readConfigFiles, which loads the key into the endpoint being
// read: the one at index endpoints.size(), pushed after its keys are read).
template <JwtAlg Alg> void readJwtKeyFile(Reader &r, const Entry &e, const std::string &name, JwtSettings &jwt) {
    jwt.alg = Alg;
    jwt.keyFile = r.w.nonEmpty(e, name, Alg == JwtAlg::HS256 ? "the path of a file holding the secret"
                                                               : "the path of a PEM public key");
    const std::size_t index = r.config.ws.endpoints.size();
    ConfigFile f{ConfigFile::Use::Content, name, jwt.keyFile, position(r.config.file, e.value.Mark()), {}};
    f.store = [index](Config &c, std::string content) -> std::string {
        if (index >= c.ws.endpoints.size() || !c.ws.endpoints[index].jwt) return {};
        std::string why;
        auto key = JwtKey::load(Alg, std::move(content), &why);
        if (!key) return why;
        c.ws.endpoints[index].jwt->key = std::move(key);
        return {};
    };
    r.config.files.push_back(std::move(f));
}

void readClaimsToTags(Reader &r, const Entry &e, const std::string &name, JwtSettings &jwt) {
    for (const Entry &c : r.w.entries(r.w.map(e, name, "a map of claim: tag, e.g. {sub: user}"), name, {}))
        jwt.claimsToTags.emplace_back(c.key, r.w.nonEmpty(c, name + "." + c.key, "a tag name"));
}

void readRequiredClaims(Reader &r, const Entry &e, const std::string &name, JwtSettings &jwt) {
    std::size_t i = 0;
    for (const YAML::Node &c : r.w.list(e, name, "a list of claim names, e.g. [sub]"))
        jwt.requiredClaims.push_back(r.w.scalarNode(c, name + "[" + std::to_string(i++) + "]", "a claim name"));
}

const Section<JwtSettings> &jwtKeys() {
    static const Section<JwtSettings> keys{
        "a map with one of hs256_secret_file, rs256_public_key_file, es256_public_key_file",
        IfNull::Empty,
        {
            {"hs256_secret_file", readJwtKeyFile<JwtAlg::HS256>},
            {"rs256_public_key_file", readJwtKeyFile<JwtAlg::RS256>},
            {"es256_public_key_file", readJwtKeyFile<JwtAlg::ES256>},
            {"token_query", text(&JwtSettings::tokenQuery, "a query parameter name")},
            {"claims_to_tags", readClaimsToTags},
            {"required_claims", readRequiredClaims},
            {"leeway_s", duration<Seconds>(&JwtSettings::leeway, 0, kDayS)},
        }};
    return keys;
}

void readJwt(Reader &r, const Entry &e, const std::string &name, WsEndpoint &ep) {
    JwtSettings jwt;
    const YAML::Node &node = r.w.map(e, name, jwtKeys().what);
    std::vector<Entry> given = walk(r, node, name, e.keyNode.Mark(), jwtKeys(), jwt);
    const Entry *keyFile = nullptr;
    for (const Entry &g : given) {
        if (g.key.find("_file") == std::string::npos) continue;
        if (keyFile)
            r.w.fail(g.keyNode.Mark(), name + ": give one key file, not both " + keyFile->key + " and " + g.key);
        keyFile = &g;
    }
    if (!keyFile)
        r.w.fail(e.keyNode.Mark(), name + ": missing the key: hs256_secret_file, rs256_public_key_file or "
                                          "es256_public_key_file");
    if (jwt.tokenQuery.empty()) jwt.tokenQuery = "token";
    ep.jwt = std::move(jwt);
}

void readAuthorizeUrl(Reader &r, const Entry &e, const std::string &name, AuthorizeSettings &a) {
    a.url = r.w.nonEmpty(e, name, "a URL such as http://127.0.0.1:8080/auth");
    const auto scheme = a.url.find("://");
    const std::string s = scheme == std::string::npos ? "" : lower(a.url.substr(0, scheme));
    const auto slash = scheme == std::string::npos ? scheme : a.url.find('/', scheme + 3);
    const std::string host = scheme == std::string::npos ? "" : a.url.substr(scheme + 3, slash - scheme - 3);
    if ((s != "http" && s != "https") || host.empty() || host.find_first_of(" @?#") != std::string::npos)
        r.w.fail(e.value.Mark(), name + ": expected http://HOST[:PORT]/PATH (or https://), got '" + a.url + "'");
}

void readForwardHeaders(Reader &r, const Entry &e, const std::string &name, AuthorizeSettings &a) {
    std::size_t i = 0;
    for (const YAML::Node &h : r.w.list(e, name, "a list of header names, e.g. [Authorization, Cookie]")) {
        std::string item = name + "[" + std::to_string(i++) + "]";
        std::string header = r.w.scalarNode(h, item, "a header name");
        if (header.empty() || header.find_first_of(" :\t\r\n") != std::string::npos)
            r.w.fail(h.Mark(), item + ": not a header name: '" + header + "'");
        a.forwardHeaders.push_back(lower(header));
    }
}

const Section<AuthorizeSettings> &authorizeKeys() {
    using A = AuthorizeSettings;
    static const Section<A> keys{"a map with 'url' and optionally 'timeout_ms', 'forward_headers', 'fail_open'",
                                 IfNull::Empty,
                                 {
                                     {"url", readAuthorizeUrl, "'url: http://127.0.0.1:8080/auth'"},
                                     {"timeout_ms", duration<Milliseconds>(&A::timeout, 10, kMaxTimeoutMs)},
                                     {"forward_headers", readForwardHeaders},
                                     {"fail_open", flag(&A::failOpen)},
                                 }};
    return keys;
}

const Section<WsEndpoint> &endpointKeys() {
    static const Section<WsEndpoint> keys{
        "an endpoint ('path: /connect' and its settings)",
        IfNull::Empty,
        {
            {"path", readPath, "'path: /connect'"},
            {"set_tags", readSetTags},
            {"stream_include_tags", readStreamIncludeTags},
            {"max_message_size_kb", bytes(&WsEndpoint::maxMessageBytes, kKiB, 1, kMaxSizeKb)},
            {"json_extract_vars", readJsonExtractVars},
            {"compression", flag(&WsEndpoint::compression)},
            {"max_connections", number(&WsEndpoint::maxConnections, 0, kMaxConnections)},
            {"allowed_origins", readAllowedOrigins},
            {"rate_limit", section(&WsEndpoint::rateLimit, rateLimitKeys())},
            {"slow_consumer", section(&WsEndpoint::slowConsumer, slowConsumerKeys())},
            {"jwt", readJwt},
            {"authorize", optionalSection(&WsEndpoint::authorize, authorizeKeys())},
            {"backends", readEndpointBackends},
        }};
    return keys;
}

[[noreturn]] void noEndpoints(const Walker &w, const YAML::Mark &mark) {
    w.fail(mark, "no endpoints configured: add an 'endpoints' list with at least one entry, e.g. "
                 "'endpoints: [{path: /connect}]'");
}

/// Whether an endpoint takes the top-level rate_limit and slow_consumer (it has none of its own).
struct Inherits {
    bool rateLimit = true;
    bool slowConsumer = true;
};

/// Reads endpoints[] into config.ws.endpoints. Returns, per endpoint, what it leaves to the top
/// level: the top-level keys may come later in the file.
std::vector<Inherits> readEndpoints(Reader &r, const Entry &e, const std::string &name, Config &config) {
    if (e.value.IsNull()) noEndpoints(r.w, e.keyNode.Mark());
    const YAML::Node &list = r.w.list(e, name, "a list of endpoints ('- path: /connect')");
    if (list.size() == 0) noEndpoints(r.w, e.value.Mark());
    const Section<WsEndpoint> &keys = endpointKeys();
    std::vector<WsEndpoint> &endpoints = config.ws.endpoints;
    std::vector<Inherits> inherits;
    std::vector<int> lines; // of each endpoint, for messages
    for (const YAML::Node &item : list) {
        std::string itemName = name + "[" + std::to_string(endpoints.size()) + "]";
        if (!item.IsMap())
            r.w.fail(item.Mark(),
                     itemName + ": expected " + std::string(keys.what) + ", got " + kindName(item));
        WsEndpoint ep;
        ep.maxMessageBytes = 0; // 0 until settled: the global max_message_size_kb may come later
        std::vector<Entry> given = walk(r, item, itemName, item.Mark(), keys, ep);
        inherits.push_back({!findEntry(given, "rate_limit"), !findEntry(given, "slow_consumer")});
        for (std::size_t j = 0; j < endpoints.size(); ++j)
            if (endpoints[j].path == ep.path)
                r.w.fail(findEntry(given, "path")->value.Mark(),
                         itemName + ".path: duplicate endpoint path '" + ep.path + "' (also endpoints[" +
                             std::to_string(j) + "] on line " + std::to_string(lines[j]) + ")");
        endpoints.push_back(std::move(ep));
        lines.push_back(item.Mark().line + 1);
    }
    return inherits;
}

// ---------------------------------------------------------------------------------------------
// Backends: named sinks, and the endpoints' routes to them (README: Routing endpoints to backends)

/// endpoints[].backends: names, each once; checked against backends: by checkRoutes.
void readEndpointBackends(Reader &r, const Entry &e, const std::string &name, WsEndpoint &ep) {
    std::vector<std::string> names;
    std::size_t i = 0;
    for (const YAML::Node &n : r.w.list(e, name, "a list of backend names, e.g. [chat, audit]")) {
        std::string item = name + "[" + std::to_string(i++) + "]";
        std::string backend = r.w.scalarNode(n, item, "a backend name");
        if (std::find(names.begin(), names.end(), backend) != names.end())
            r.w.fail(n.Mark(), item + ": backend '" + backend + "' is listed twice");
        names.push_back(std::move(backend));
    }
    ep.backends = std::move(names);
}

void readBackendActions(Reader &r, const Entry &e, const std::string &name, BackendConfig &b) {
    static const std::vector<std::pair<std::string_view, EventAction>> kActions{
        {"open", EventAction::Open}, {"close", EventAction::Close}, {"message", EventAction::Message}};
    b.actions.clear();
    std::size_t i = 0;
    for (const YAML::Node &n : r.w.list(e, name, "a list of actions: open, close, message")) {
        std::string item = name + "[" + std::to_string(i++) + "]";
        std::string action = r.w.scalarNode(n, item, "open, close or message");
        auto it = std::find_if(kActions.begin(), kActions.end(), [&](const auto &a) { return a.first == action; });
        if (it == kActions.end())
            r.w.fail(n.Mark(), item + ": unknown action '" + action + "': expected open, close or message");
        if (std::find(b.actions.begin(), b.actions.end(), it->second) == b.actions.end()) b.actions.push_back(it->second);
    }
    if (b.actions.empty())
        r.w.fail(e.value.Mark(), name + ": no actions: give at least one of open, close, message (or leave "
                                        "'actions' out for all three)");
}

StreamHttpConfig *backendHttp(Config &c, const std::string &backend) {
    for (BackendConfig &b : c.backends)
        if (b.name == backend && b.http) return &*b.http;
    return nullptr;
}

void readBackendHttp(Reader &r, const Entry &e, const std::string &name, BackendConfig &b) {
    // secret_file is read later, into this backend's section by name.
    const Section<StreamHttpConfig> keys{
        kHttpWhat, IfNull::Empty,
        httpKeys([backend = b.name](Reader &rr, const Entry &ee, const std::string &n, StreamHttpConfig &) {
            recordWebhookSecretFile(rr, ee, n, backendHttp, backend);
        })};
    StreamHttpConfig http;
    readSection(r, e, name, keys, http);
    b.http = std::move(http);
}

const Section<BackendConfig> &backendKeys() {
    using B = BackendConfig;
    using Backlog = SinkOptions;
    static const Section<B> keys{
        "a backend: one of 'redis', 'amqp', 'http' (with the keys of stream_redis, stream_amqp, stream_http), and "
        "optionally 'actions' and its own backlog_*",
        IfNull::Empty,
        {
            {"redis", optionalSection(&B::redis, streamRedisKeys())},
            {"amqp", optionalSection(&B::amqp, streamAmqpKeys())},
            {"http", readBackendHttp},
            {"actions", readBackendActions},
            {"backlog_max_events", in(&B::backlog, number(&Backlog::maxBacklogEvents, 1, kMaxEvents))},
            {"backlog_max_mb", in(&B::backlog, bytes(&Backlog::maxBacklogBytes, kMiB, 1, 1024 * 1024))},
            {"backlog_overflow",
             in(&B::backlog, choice(&Backlog::overflow, {{"drop_oldest", OverflowPolicy::DropOldest},
                                                        {"drop_newest", OverflowPolicy::DropNewest},
                                                        {"pause_reading", OverflowPolicy::PauseReading}}))},
        }};
    return keys;
}

/// backends: read after the other top-level keys, whose backlog_* are each backend's defaults.
/// A name used twice is the walker's duplicate key.
void readBackends(Reader &r, const Entry &e, Config &config) {
    const std::string name = "backends";
    const YAML::Node &map = r.w.map(e, name, "a map of backend name: {redis | amqp | http: ...}");
    for (const Entry &b : r.w.entries(map, name, {})) {
        const std::string itemName = name + "." + b.key;
        const bool nameOk = !b.key.empty() && std::all_of(b.key.begin(), b.key.end(), [](char c) {
            return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                   c == '-' || c == '.';
        });
        if (!nameOk)
            r.w.fail(b.keyNode.Mark(), itemName + ": a backend name is letters, digits, '_', '-' and '.'");
        for (const char *reserved : {kStreamRedisBackend, kStreamAmqpBackend, kStreamHttpBackend, kEventLogBackend})
            if (b.key == reserved)
                r.w.fail(b.keyNode.Mark(), itemName + ": '" + b.key +
                                               "' names a top-level sink (the default route); choose another name");
        if (!b.value.IsMap())
            r.w.fail(b.value.IsNull() ? b.keyNode.Mark() : b.value.Mark(),
                     itemName + ": expected " + std::string(backendKeys().what) + ", got " + kindName(b.value));
        BackendConfig backend;
        backend.name = b.key;
        backend.backlog = config.backlog;
        backend.at = position(config.file, b.keyNode.Mark());
        config.backends.push_back(backend); // first, so that http's secret_file finds it by name
        std::vector<Entry> given = walk(r, b.value, itemName, b.keyNode.Mark(), backendKeys(), backend);
        const Entry *kinds[] = {findEntry(given, "redis"), findEntry(given, "amqp"), findEntry(given, "http")};
        const Entry *first = nullptr;
        for (const Entry *k : kinds) {
            if (!k) continue;
            if (first)
                r.w.fail(k->keyNode.Mark(), itemName + ": has both '" + first->key + "' and '" + k->key +
                                                "': a backend is one sink (give each its own backend)");
            first = k;
        }
        if (!first || !(backend.redis || backend.amqp || backend.http))
            r.w.fail(b.keyNode.Mark(), itemName + ": no sink: give one of 'redis', 'amqp' or 'http'");
        config.backends.back() = std::move(backend);
    }
}

/// Every endpoints[].backends name is a backend's.
void checkRoutes(const Walker &w, const Config &config, const Entry &endpoints) {
    for (std::size_t i = 0; i < config.ws.endpoints.size(); ++i) {
        const WsEndpoint &ep = config.ws.endpoints[i];
        if (!ep.backends) continue;
        const YAML::Node list = endpoints.value[i]["backends"];
        for (std::size_t j = 0; j < ep.backends->size(); ++j) {
            const std::string &b = (*ep.backends)[j];
            if (config.findBackend(b)) continue;
            std::string known;
            for (const BackendConfig &k : config.backends) known += (known.empty() ? "" : ", ") + k.name;
            w.fail(list[j].Mark(), "endpoints[" + std::to_string(i) + "].backends[" + std::to_string(j) +
                                       "]: unknown backend '" + b + "' (" +
                                       (known.empty() ? std::string("no backends: are configured")
                                                      : "configured backends: " + known) +
                                       ")");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The top level

void readWhitelist(Reader &r, const Entry &e, const std::string &name, Config &config) {
    std::size_t i = 0;
    for (const YAML::Node &item : r.w.list(e, name, "a list of networks, e.g. [127.0.0.1/8, ::1/128]")) {
        std::string itemName = name + "[" + std::to_string(i++) + "]";
        std::string s = r.w.scalarNode(item, itemName, "a network such as 10.0.0.0/8");
        std::string why;
        auto net = Cidr::parse(s, &why);
        if (!net) r.w.fail(item.Mark(), itemName + ": invalid network '" + s + "': " + why);
        config.control.allow.push_back(*net);
    }
}

void readNodeId(Reader &r, const Entry &e, const std::string &name, Config &config) {
    config.nodeId = r.w.nonEmpty(e, name, "a name for this node, e.g. gw-1");
    if (config.nodeId.find_first_of(" \t\r\n{}") != std::string::npos)
        r.w.fail(e.value.Mark(), name + ": must not contain spaces or braces, got '" + config.nodeId + "'");
}

void onlyOneToken(Reader &r, const Entry &e) {
    bool fromFile = std::any_of(r.config.files.begin(), r.config.files.end(),
                                [](const ConfigFile &f) { return f.use == ConfigFile::Use::ControlToken; });
    if (fromFile || !r.config.control.token.empty())
        r.w.fail(e.keyNode.Mark(), "give control_token or control_token_file, not both");
}

void readControlToken(Reader &r, const Entry &e, const std::string &name, Config &config) {
    onlyOneToken(r, e);
    config.control.token = r.w.nonEmpty(e, name, "a secret string");
}

/// Recorded for readConfigFiles, which reads the token.
void readControlTokenFile(Reader &r, const Entry &e, const std::string &name, Config &config) {
    onlyOneToken(r, e);
    std::string path = r.w.nonEmpty(e, name, "the path of a file holding the token");
    config.files.push_back(
        {ConfigFile::Use::ControlToken, name, path, position(config.file, e.value.Mark()), {}});
}

/// The first spelling of slow_consumer.max_outbound_kb; kept working.
void readMaxOutboundKb(Reader &r, const Entry &e, const std::string &name, Config &config) {
    std::size_t kb = static_cast<std::size_t>(r.w.number(e, name, 1, kMaxSizeKb));
    config.defaults.slowConsumer.maxOutboundBytes = kb * kKiB;
}

const Section<ControlApiOptions> &prometheusKeys() {
    static const Section<ControlApiOptions> keys{
        "a map with 'enabled' and 'legacy_names'",
        IfNull::Empty,
        {{"enabled", flag(&ControlApiOptions::metrics)}, {"legacy_names", flag(&ControlApiOptions::legacyMetricNames)}}};
    return keys;
}

const Section<Config> &topLevelKeys() {
    using EventLog = Config::EventLog;
    using Ws = WsServerOptions;
    using Control = ControlApiOptions;
    using Defaults = ConfigDefaults;
    using Backlog = SinkOptions;
    static const Section<Config> keys{
        "settings as 'key: value' lines at the top level",
        IfNull::Empty,
        {
            {"listen_addr", in(&Config::ws, hostPort(&Ws::addr))},
            {"control_addr", in(&Config::control, hostPort(&Control::addr))},
            {"internal_endpoint_access_whitelist", readWhitelist},
            {"connection_redis_sync", optionalSection(&Config::connectionRedisSync, redisSyncKeys())},
            {"stream_redis", optionalSection(&Config::streamRedis, streamRedisKeys())},
            {"stream_amqp", optionalSection(&Config::streamAmqp, streamAmqpKeys())},
            {"cluster", optionalSection(&Config::cluster, clusterKeys())},
            {"stream_http", optionalSection(&Config::streamHttp, streamHttpKeys())},
            {"command_redis", optionalSection(&Config::commandRedis, commandRedisKeys())},
            {"command_amqp", optionalSection(&Config::commandAmqp, commandAmqpKeys())},
            {"max_message_size_kb",
             in(&Config::defaults, bytes(&Defaults::maxMessageBytes, kKiB, 1, kMaxSizeKb))},
            {"endpoints", [](Reader &, const Entry &, const std::string &, Config &) {}}, // after the rest
            {"backends", [](Reader &, const Entry &, const std::string &, Config &) {}},  // after the rest
            {"prometheus", in(&Config::control, inPlace(prometheusKeys()))},
            {"threads", number(&Config::threads, 0, 256)},
            {"idle_timeout_s", in(&Config::ws, duration<Seconds>(&Ws::idleTimeout, 0, kDayS))},
            {"max_outbound_kb", readMaxOutboundKb},
            {"event_log", choice(&Config::eventLog, {{"auto", EventLog::Auto},
                                                     {"stdout", EventLog::Stdout},
                                                     {"stderr", EventLog::Stderr},
                                                     {"none", EventLog::None},
                                                     {"discard", EventLog::Discard}})},
            {"log_level", oneOf(&Config::logLevel, {"trace", "debug", "info", "warn", "error", "off"})},
            {"log_format", choice(&Config::logFormat, {{"text", LogFormat::Text}, {"json", LogFormat::Json}})},
            {"node_id", readNodeId},
            {"backlog_max_events", in(&Config::backlog, number(&Backlog::maxBacklogEvents, 1, kMaxEvents))},
            {"backlog_max_mb", in(&Config::backlog, bytes(&Backlog::maxBacklogBytes, kMiB, 1, 1024 * 1024))},
            {"backlog_overflow",
             in(&Config::backlog, choice(&Backlog::overflow, {{"drop_oldest", OverflowPolicy::DropOldest},
                                                             {"pause_reading", OverflowPolicy::PauseReading}}))},
            {"shutdown_flush_s", duration<Seconds>(&Config::shutdownFlush, 0, kDayS)},
            {"max_connections", in(&Config::ws, number(&Ws::maxConnections, 0, kMaxConnections))},
            {"rate_limit", in(&Config::defaults, section(&Defaults::rateLimit, rateLimitKeys()))},
            {"slow_consumer", in(&Config::defaults, section(&Defaults::slowConsumer, slowConsumerKeys()))},
            {"max_connection_lifetime_s", in(&Config::ws, duration<Seconds>(&Ws::maxLifetime, 0, kYearS))},
            {"max_tags_per_connection",
             in(&Config::control, number(&Control::maxTagsPerConnection, 1, 100'000))},
            {"max_tag_key_len", in(&Config::control, number(&Control::maxTagKeyLen, 1, 1 << 20))},
            {"max_tag_value_len", in(&Config::control, number(&Control::maxTagValueLen, 1, 1 << 20))},
            {"max_body_kb", in(&Config::control, bytes(&Control::maxBodyBytes, kKiB, 1, kMaxSizeKb))},
            {"control_timeout_s", in(&Config::control, duration<Seconds>(&Control::commandTimeout, 1, 3600))},
            {"control_request_timeout_s",
             in(&Config::control, duration<Seconds>(&Control::requestTimeout, 1, 3600))},
            {"control_token", readControlToken},
            {"control_token_file", readControlTokenFile},
            {"tls", in(&Config::ws, optionalSection(&Ws::tls, tlsKeys()))},
            {"control_tls", in(&Config::control, optionalSection(&Control::tls, tlsKeys()))},
            {"drain_s", duration<Seconds>(&Config::drain, 0, 3600)},
        }};
    return keys;
}

// ---------------------------------------------------------------------------------------------
// Across keys

// Endpoints without their own max_message_size_kb, rate_limit or slow_consumer take the global
// ones, which may come later in the file.
void settleEndpointDefaults(const std::vector<Inherits> &inherits, Config &config) {
    const ConfigDefaults &d = config.defaults;
    for (std::size_t i = 0; i < config.ws.endpoints.size(); ++i) {
        WsEndpoint &ep = config.ws.endpoints[i];
        if (ep.maxMessageBytes == 0) ep.maxMessageBytes = d.maxMessageBytes;
        if (inherits[i].rateLimit) ep.rateLimit = d.rateLimit;
        if (inherits[i].slowConsumer) ep.slowConsumer = d.slowConsumer;
    }
}

// Every connection starts with its endpoint's set_tags: they must fit the tag limits too.
void checkSetTags(const Walker &w, const Config &config, const Entry &endpoints) {
    const ControlApiOptions &limits = config.control;
    for (std::size_t i = 0; i < config.ws.endpoints.size(); ++i) {
        const WsEndpoint &ep = config.ws.endpoints[i];
        std::string name = "endpoints[" + std::to_string(i) + "].set_tags";
        YAML::Mark at = endpoints.value[i].Mark();
        if (ep.setTags.size() > limits.maxTagsPerConnection)
            w.fail(at, name + ": " + std::to_string(ep.setTags.size()) +
                           " tags, more than max_tags_per_connection (" +
                           std::to_string(limits.maxTagsPerConnection) + ")");
        for (const auto &[k, v] : ep.setTags)
            if (k.size() > limits.maxTagKeyLen || v.size() > limits.maxTagValueLen)
                w.fail(at, name + "." + k + ": longer than max_tag_key_len or max_tag_value_len");
    }
}

bool isWildcard(const std::string &host) {
    return host.empty() || host == "0.0.0.0" || host == "::";
}

void checkAddressClash(const Walker &w, const Config &config, const Entry *listen, const Entry *control) {
    const HostPort &a = config.ws.addr, &b = config.control.addr;
    if (a.port != b.port) return;
    if (a.host != b.host && !isWildcard(a.host) && !isWildcard(b.host)) return;
    const Entry *blame = control ? control : listen;
    w.fail(blame ? blame->value.Mark() : YAML::Mark::null_mark(),
           std::string(control ? "control_addr" : "listen_addr") + ": listen_addr " + a.toString() +
               " and control_addr " + b.toString() +
               " overlap: give the control API a port of its own (control_addr, default 127.0.0.1:6666)");
}

// A node is lost after dead_after_ms without a heartbeat: it must heartbeat more often than that.
// The clean-up of a lost node reads its connections from the mirror's keys, so the mirror, when
// configured, must write to the cluster's Redis.
void checkCluster(const Walker &w, const Config &config, const Entry *cluster) {
    if (!config.cluster || !cluster) return;
    const ClusterConfig &c = *config.cluster;
    auto markOf = [&](const char *key) {
        YAML::Node n = cluster->value.IsMap() ? cluster->value[key] : YAML::Node();
        return n.IsDefined() ? n.Mark() : cluster->value.Mark();
    };
    if (c.options.deadAfter <= c.options.heartbeat)
        w.fail(markOf("dead_after_ms"), "cluster.dead_after_ms (" + std::to_string(c.options.deadAfter.count()) +
                                            ") must be longer than cluster.heartbeat_ms (" +
                                            std::to_string(c.options.heartbeat.count()) +
                                            "): a node would be lost between two of its heartbeats");
    if (config.connectionRedisSync) {
        const RedisEndpoint &a = c.options.redis, &b = config.connectionRedisSync->options.redis;
        if (a.host != b.host || a.port != b.port || a.unixPath != b.unixPath || a.db != b.db)
            w.fail(markOf("addr"), "cluster.addr (" + c.url + ") and connection_redis_sync.addr (" +
                                       config.connectionRedisSync->url +
                                       ") must be the same Redis server and database: a lost node's connections "
                                       "are found in the mirror's keys");
    }
}

// The authorizer reads a request head before libwebsockets does (ws_authorize.h), which a TLS
// listener's encrypted bytes do not allow.
void checkAuthorizeWithoutTls(const Walker &w, const Config &config, const Entry &endpoints) {
    if (!config.ws.tls) return;
    for (std::size_t i = 0; i < config.ws.endpoints.size(); ++i)
        if (config.ws.endpoints[i].authorize)
            w.fail(endpoints.value[i].Mark(), "endpoints[" + std::to_string(i) +
                                                  "].authorize: not available with tls: (terminate TLS in front "
                                                  "of wsgwd, or use jwt: instead)");
}

} // namespace

void readConfigTree(const YAML::Node &root, const Walker &w, Config &config) {
    if (root.IsNull()) noEndpoints(w, YAML::Mark::null_mark());
    const Section<Config> &keys = topLevelKeys();
    if (!root.IsMap()) w.fail(root.Mark(), "expected " + std::string(keys.what) + ", got " + kindName(root));
    Reader r{w, config};
    std::vector<Entry> given = walk(r, root, "", root.Mark(), keys, config);
    // Endpoints last: a problem in any other top-level key is reported first, wherever it is.
    if (const Entry *backends = findEntry(given, "backends")) readBackends(r, *backends, config);
    const Entry *endpoints = findEntry(given, "endpoints");
    if (!endpoints) noEndpoints(w, YAML::Mark::null_mark());
    settleEndpointDefaults(readEndpoints(r, *endpoints, endpoints->key, config), config);
    checkRoutes(w, config, *endpoints);
    checkSetTags(w, config, *endpoints);
    if (!findEntry(given, "max_body_kb")) config.control.maxBodyBytes = config.defaults.maxMessageBytes;
    if (config.control.allow.empty()) {
        config.control.allow.push_back(*Cidr::parse("127.0.0.1/8"));
        config.control.allow.push_back(*Cidr::parse("::1/128"));
    }
    checkAddressClash(w, config, findEntry(given, "listen_addr"), findEntry(given, "control_addr"));
    checkCluster(w, config, findEntry(given, "cluster"));
    checkAuthorizeWithoutTls(w, config, *endpoints);
}

} // namespace wsgw::daemon
