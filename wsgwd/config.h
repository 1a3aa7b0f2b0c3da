#pragma once

// The daemon's configuration: config.yml, parsed and validated into plain values.
//
// Compatibility: every key of the original wsgateway's config.yml is accepted with its meaning
// (listen_addr, internal_endpoint_access_whitelist, connection_redis_sync.addr,
// stream_redis.{addr,stream_name}, stream_amqp.{addr,exchange,queue,routing_key,headers},
// max_message_size_kb, endpoints[].{path,set_tags,stream_include_tags,max_message_size_kb,
// json_extract_vars}, prometheus.enabled). The other keys are ours. Unknown keys are errors.
//
// Loading is two steps: parseConfig turns YAML text into a Config and touches nothing else (no
// files, no names resolved: the fuzzer runs it); readConfigFiles then opens the files the config
// names. loadConfig does both for a file. The files of the parser, along the data path:
// yaml_cpp_workarounds (guards before yaml-cpp reads the text), yaml_walker (typed reads,
// unknown keys), config_table (how a table of keys is read), config_schema (the tables: each
// key's type, bounds and field; the checks across keys), net_address and broker_url (the values
// that are addresses), config_files (the file step).
//
// All types here are plain values: thread-compatible.

#include "broker_url.h"
#include "net_address.h"

#include <wsgw/tags.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wsgw::daemon {

/// An inbound rate limit per connection: a token bucket of `burst` messages refilled at
/// `perSecond`. perSecond 0: no limit.
struct RateLimit {
    enum class Policy {
        Close, ///< close: close the connection with 1008
        Drop,  ///< drop: discard the message (counted)
    };
    unsigned perSecond = 0; ///< max_messages_per_s
    unsigned burst = 0;     ///< burst; 0 = perSecond
    Policy policy = Policy::Close;
};

/// What happens to a client that does not read fast enough.
struct SlowConsumer {
    enum class Policy {
        Close,      ///< close: close the connection with 1008 (counted)
        DropNewest, ///< drop_newest: discard messages that do not fit (counted)
        DropOldest, ///< drop_oldest: discard the oldest queued messages to make room (counted)
    };
    std::size_t maxOutboundKb = 4096; ///< max_outbound_kb: queued for one client beyond this: policy
    Policy policy = Policy::Close;
};

/// A file the config names (tls.cert, tls.key, control_tls.*, control_token_file). parseConfig
/// only records it, readConfigFiles() opens it.
struct ConfigFile {
    enum class Use {
        Readable,     ///< must be readable when the config is loaded (OpenSSL loads it at start)
        ControlToken, ///< its content, trailing newlines and spaces dropped, is the control token
    };
    Use use = Use::Readable;
    std::string key;  ///< the config key, for messages: "tls.cert", "control_token_file"
    std::string path; ///< as written
    std::string at;   ///< "FILE:LINE:COL" of the path in the config, for messages
};

/// A certificate and its private key, PEM files.
struct TlsFiles {
    std::string cert;
    std::string key;
};

/// One WebSocket endpoint (endpoints[]).
struct EndpointConfig {
    std::string path;                           ///< starts with '/'; unique among endpoints
    wsgw::TagList setTags;                      ///< set_tags, in the order written
    std::vector<std::string> streamIncludeTags; ///< stream_include_tags, duplicates removed
    std::size_t maxMessageSizeKb = 0;           ///< the endpoint's max_message_size_kb, else the global one
    /// json_extract_vars: variable name -> dotted path, in the order written. Valid for
    /// wsgw::JsonExtractor::create.
    std::vector<std::pair<std::string, std::string>> jsonExtractVars;
    unsigned maxConnections = 0;             ///< max_connections: 0 = only the global limit
    std::vector<std::string> allowedOrigins; ///< allowed_origins: empty = any (and no Origin)
    RateLimit rateLimit;       ///< rate_limit, else the global one
    SlowConsumer slowConsumer; ///< slow_consumer, else the global one
    /// compression: offer permessage-deflate. Off by default: libwebsockets 4.1.6 can stall
    /// inflating a client's compressed messages (see ws_server.cpp); the original had it on.
    bool compression = false;
    int line = 0;            ///< 1-based line of the endpoint in the file, for messages
};

/// connection_redis_sync: mirror every connection and its tags into Redis hashes.
struct RedisSyncConfig {
    RedisAddress addr;
    unsigned timeoutMs = 5000; ///< timeout_ms: a reply slower than this counts as an outage
    unsigned keyTtlS = 120;    ///< key_ttl_s: every key's TTL, refreshed while the node lives
};

/// stream_redis: publish events with XADD.
struct StreamRedisConfig {
    RedisAddress addr;
    /// A wsgw::Template source (validated): "{tag.NAME}" and "{json.VAR}" placeholders.
    std::string streamName = "connectionevents";
    std::size_t streamMaxLen = 0; ///< stream_maxlen: XADD MAXLEN ~ this; 0 = unbounded
    unsigned timeoutMs = 5000;    ///< timeout_ms: a reply slower than this counts as an outage
};

/// stream_amqp: publish events as persistent JSON messages.
struct StreamAmqpConfig {
    AmqpAddress addr;
    std::string exchange;   ///< declared as a durable topic exchange when not empty
    std::string queue;      ///< declared durable and bound with "#" when not empty
    std::string routingKey; ///< a wsgw::Template source (validated)
    std::map<std::string, std::string> headers; ///< message headers
};

struct Config {
    /// Where the event log (one JSON line per event) goes.
    enum class EventLog {
        Auto,   ///< stdout when neither stream_redis nor stream_amqp is configured, else none
        Stdout,
        Stderr,
        None,
        Discard, ///< events are built, queued and counted by a sink that drops them (benchmarks)
    };
    /// What a sink does when its backlog is full.
    enum class BacklogOverflow {
        DropOldest,   ///< drop_oldest: discard the oldest queued events (counted)
        PauseReading, ///< pause_reading: stop reading from clients until the backlog drains
    };

    std::string file;                        ///< the name it was loaded from
    HostPort listen{"0.0.0.0", 5000};        ///< listen_addr: WebSocket clients
    HostPort control{"127.0.0.1", 6666};     ///< control_addr: the control API and /metrics
    /// internal_endpoint_access_whitelist: who may use the control API. Absent or empty: the
    /// default 127.0.0.1/8 and ::1/128, as in the original.
    std::vector<Cidr> controlAllow;
    std::optional<RedisSyncConfig> connectionRedisSync;
    std::optional<StreamRedisConfig> streamRedis;
    std::optional<StreamAmqpConfig> streamAmqp;
    std::size_t maxMessageSizeKb = 1024; ///< max_message_size_kb: default for endpoints
    std::vector<EndpointConfig> endpoints; ///< at least one
    bool prometheusEnabled = true;       ///< prometheus.enabled: serve /metrics
    unsigned threads = 0;                ///< threads: shards; 0 = one per CPU
    unsigned idleTimeoutS = 60;          ///< idle_timeout_s: close silent connections; 0 = never
    EventLog eventLog = EventLog::Auto;  ///< event_log: auto|stdout|stderr|none|discard
    std::string logLevel = "info";       ///< log_level: trace|debug|info|warn|error|off
    std::string nodeId;                  ///< node_id: this node's name; "" = hostname:listen port
    std::size_t backlogMaxEvents = 1'000'000; ///< backlog_max_events: per sink, while it is slow or down
    std::size_t backlogMaxMb = 256;      ///< backlog_max_mb: and their approximate memory
    BacklogOverflow backlogOverflow = BacklogOverflow::DropOldest; ///< backlog_overflow
    unsigned shutdownFlushS = 5;         ///< shutdown_flush_s: how long a stop waits for sinks to flush

    unsigned maxConnections = 0;         ///< max_connections: 0 = unlimited (the open-file limit)
    RateLimit rateLimit;                 ///< rate_limit: the default of every endpoint
    SlowConsumer slowConsumer;           ///< slow_consumer (max_outbound_kb is its old spelling)
    unsigned maxConnectionLifetimeS = 0; ///< max_connection_lifetime_s: 0 = none; else ±10% jitter, close 1012
    unsigned maxTagsPerConnection = 64;  ///< max_tags_per_connection
    unsigned maxTagKeyLen = 128;         ///< max_tag_key_len
    unsigned maxTagValueLen = 1024;      ///< max_tag_value_len
    std::size_t maxBodyKb = 0;           ///< max_body_kb: control API bodies; 0 = max_message_size_kb
    unsigned controlTimeoutS = 10;       ///< control_timeout_s: how long a command may take (504 after)
    /// control_request_timeout_s: a control request's headers and body must arrive within
    /// this (408 after), and its answer be written within it.
    unsigned controlRequestTimeoutS = 10;
    /// control_token, or control_token_file's content once readConfigFiles() has read it: the
    /// bearer token; "" = none.
    std::string controlToken;
    std::optional<TlsFiles> tls;         ///< tls: serve wss:// on listen_addr
    std::optional<TlsFiles> controlTls;  ///< control_tls: serve the control API over HTTPS
    unsigned drainS = 10;                ///< drain_s: SIGTERM spreads the closes (1012) over this long
    std::vector<ConfigFile> files;       ///< the files named above, in the order written

    /// eventLog with Auto resolved.
    EventLog effectiveEventLog() const;
    /// The endpoint with this exact path, or nullptr.
    const EndpointConfig *findEndpoint(std::string_view path) const;
};

/// Parses and validates config.yml text. `file` is the name used in messages. On error returns
/// nullopt and sets `*error` to "FILE:LINE:COL: message" (1-based, pointing at the offending
/// key or value) for the first problem found. Never throws for bad input. Pure: opens no file
/// (the files the config names are in Config::files, for readConfigFiles) and resolves no name.
[[nodiscard]] std::optional<Config> parseConfig(std::string_view yamlText, const std::string &file,
                                                std::string *error = nullptr);

/// Opens the files `config` names, in the order written: checks that TLS files can be read and
/// reads control_token_file into controlToken. False with "FILE:LINE:COL: KEY: cannot read
/// 'PATH': REASON" (or "... 'PATH' is empty" for a token file) for the first that fails.
[[nodiscard]] bool readConfigFiles(Config &config, std::string *error = nullptr);

/// parseConfig, then readConfigFiles: config.yml text ready to run.
[[nodiscard]] std::optional<Config> loadConfigText(std::string_view yamlText, const std::string &file,
                                                   std::string *error = nullptr);

/// Reads a file and loadConfigText()s it. An unreadable file gives "FILE: cannot read: <reason>".
[[nodiscard]] std::optional<Config> loadConfig(const std::string &path, std::string *error = nullptr);

} // namespace wsgw::daemon
