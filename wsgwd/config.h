#pragma once

// The daemon's configuration: config.yml, parsed and validated into plain values.
//
// Compatibility: every key of the original wsgateway's config.yml is accepted with its meaning
// (listen_addr, internal_endpoint_access_whitelist, connection_redis_sync.addr,
// stream_redis.{addr,stream_name}, stream_amqp.{addr,exchange,queue,routing_key,headers},
// max_message_size_kb, endpoints[].{path,set_tags,stream_include_tags,max_message_size_kb,
// json_extract_vars}, prometheus.enabled). The other keys are ours. Unknown keys are errors.
//
// A Config is made of the components' own options structs (WsServerOptions, ControlApiOptions,
// libwsgw's sink and mirror options, SinkOptions): the parser fills them in their units (bytes,
// std::chrono, the components' enums) and the gateway hands each to its component as it is.
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

#include "control_options.h"
#include "log_format.h"
#include "net_address.h"
#include "ws_options.h"

#include <wsgw/cluster.h>
#include <wsgw/command_bus.h>
#include <wsgw/mirror.h>
#include <wsgw/sink.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wsgw::daemon {

struct Config;

/// A file the config names (tls.cert, tls.key, control_tls.*, control_token_file). parseConfig
/// only records it, readConfigFiles() opens it.
struct ConfigFile {
    enum class Use {
        Readable,     ///< must be readable when the config is loaded (OpenSSL loads it at start)
        ControlToken, ///< its content, trailing newlines and spaces dropped, is the control token
        Content,      ///< its content (trailing newlines and spaces dropped) goes to `store`
    };
    Use use = Use::Readable;
    std::string key;  ///< the config key, for messages: "tls.cert", "control_token_file"
    std::string path; ///< as written
    std::string at;   ///< "FILE:LINE:COL" of the path in the config, for messages
    /// Use::Content: puts the content where it belongs in the config; returns "" or why the
    /// content is not what the key wants ("not base64").
    std::function<std::string(Config &, std::string content)> store;
};

// The event sinks' and the mirror's sections: libwsgw's options, as makeRedisStreamSink,
// makeAmqpSink and makeRedisMirror take them, and beside them what libwsgw has no field for.
// The gateway adds what is not config (the node name, the mirror's callbacks) to its copy at
// start. Two sections are equal when every value the config sets is (what a reload compares).

/// stream_redis: publish events with XADD.
struct StreamRedisConfig {
    /// addr's server and login, timeout_ms (the command timeout; the connect timeout is the
    /// smaller of it and 2 s), stream_name (a validated wsgw::Template), stream_maxlen.
    RedisStreamOptions options;
    std::string url;  ///< addr as written
    bool tls = false; ///< addr is rediss://, which this build cannot do (unavailableFeature)

    friend bool operator==(const StreamRedisConfig &, const StreamRedisConfig &);
};

/// connection_redis_sync: mirror every connection and its tags into Redis hashes.
struct RedisSyncConfig {
    /// addr's server and login, timeout_ms (as for stream_redis), key_ttl_s.
    RedisMirrorOptions options;
    std::string url;  ///< addr as written
    bool tls = false; ///< addr is rediss://

    friend bool operator==(const RedisSyncConfig &, const RedisSyncConfig &);
};

/// stream_amqp: publish events as persistent JSON messages.
struct StreamAmqpConfig {
    /// addr's server, login, vhost and amqps, its heartbeat and connection_timeout when it gives
    /// them (the sink's defaults otherwise); exchange, queue, routing_key (a validated
    /// wsgw::Template), headers.
    AmqpSinkOptions options;
    std::string url; ///< addr as written

    friend bool operator==(const StreamAmqpConfig &, const StreamAmqpConfig &);
};

/// cluster: several nodes on one Redis act as one gateway (README: Running several nodes).
struct ClusterConfig {
    /// addr's server and login; heartbeat_ms, dead_after_ms.
    RedisClusterOptions options;
    /// command_timeout_ms: how long a command waits for the other nodes' answers.
    std::chrono::milliseconds commandTimeout{2000};
    std::string url;  ///< addr as written
    bool tls = false; ///< addr is rediss://
    friend bool operator==(const ClusterConfig &, const ClusterConfig &);
};

/// command_redis: control commands read from a Redis stream (README: Commands over Redis and AMQP).
struct CommandRedisConfig {
    /// addr's server and login; stream, group, claim_idle_ms, dedup_window_s, timeout_ms. The
    /// consumer's name is node_id, set by the gateway.
    RedisCommandOptions options;
    std::string url;  ///< addr as written
    bool tls = false; ///< addr is rediss://
    friend bool operator==(const CommandRedisConfig &, const CommandRedisConfig &);
};

/// command_amqp: control commands read from an AMQP queue (README: Commands over Redis and AMQP).
struct CommandAmqpConfig {
    /// addr's server, login, vhost and amqps (in options.broker, with the URL's heartbeat and
    /// connection_timeout when it gives them), queue, prefetch, dedup_window_s. The consumer's
    /// name, the in-flight TTL and the Redis for command ids (command_redis's, else cluster's) are
    /// set by the gateway.
    AmqpCommandOptions options;
    std::string url; ///< addr as written
    friend bool operator==(const CommandAmqpConfig &, const CommandAmqpConfig &);
};

/// stream_http: POST events as signed JSON to a webhook.
struct StreamHttpConfig {
    /// url, secret (read from secret_file by readConfigFiles), ca_file, batch_max_events,
    /// max_in_flight, timeout_ms.
    HttpSinkOptions options;
    std::chrono::milliseconds batchWait{20}; ///< batch_ms: SinkOptions::batchWait of the sink

    friend bool operator==(const StreamHttpConfig &, const StreamHttpConfig &);
};

/// backends.NAME: one named event sink, routed to by endpoints[].backends (README: Routing
/// endpoints to backends). Exactly one of redis, amqp, http is set.
struct BackendConfig {
    std::string name;
    std::optional<StreamRedisConfig> redis; ///< redis: the keys of stream_redis
    std::optional<StreamAmqpConfig> amqp;   ///< amqp: the keys of stream_amqp
    std::optional<StreamHttpConfig> http;   ///< http: the keys of stream_http
    /// actions: which events it takes (open, close, message); default all three.
    std::vector<EventAction> actions{EventAction::Open, EventAction::Close, EventAction::Message};
    /// backlog_max_events, backlog_max_mb, backlog_overflow: its own, else the top-level ones.
    SinkOptions backlog;
    std::string at; ///< "FILE:LINE:COL" of its name, for messages

    /// "redis", "amqp" or "http".
    const char *kind() const;
    /// Equal when it would build the same sink (what a reload compares; `at` is not compared).
    friend bool operator==(const BackendConfig &, const BackendConfig &);
};

/// The backend names of the top-level sinks (the default route: endpoints naming none).
inline constexpr const char *kStreamRedisBackend = "stream_redis";
inline constexpr const char *kStreamAmqpBackend = "stream_amqp";
inline constexpr const char *kStreamHttpBackend = "stream_http";
inline constexpr const char *kEventLogBackend = "event_log";
/// Whether `backend` names a top-level sink (their metrics and messages keep the labels and
/// words of before backends: sink="redis", "event sink 'redis'").
inline bool isTopLevelSink(std::string_view backend) {
    return backend == kStreamRedisBackend || backend == kStreamAmqpBackend || backend == kStreamHttpBackend ||
           backend == kEventLogBackend;
}

/// Top-level keys that are defaults of other sections, settled into them by the parser: an
/// endpoint without its own max_message_size_kb, rate_limit or slow_consumer has these, and
/// the control API's body limit is max_message_size_kb unless max_body_kb is given.
struct ConfigDefaults {
    std::size_t maxMessageBytes = 1024 * 1024; ///< max_message_size_kb
    RateLimit rateLimit;                       ///< rate_limit
    SlowConsumer slowConsumer;                 ///< slow_consumer (max_outbound_kb is its old spelling)
};

struct Config {
    /// Where the event log (one JSON line per event) goes.
    enum class EventLog {
        Auto,   ///< stdout when no stream_* sink is configured, else none
        Stdout,
        Stderr,
        None,
        Discard, ///< events are built, queued and counted by a sink that drops them (benchmarks)
    };

    std::string file; ///< the name it was loaded from
    /// listen_addr, endpoints (at least one), idle_timeout_s, max_connections,
    /// max_connection_lifetime_s, tls.
    WsServerOptions ws;
    ControlApiOptions control; ///< control_addr, internal_endpoint_access_whitelist, control_*, ...
    std::optional<RedisSyncConfig> connectionRedisSync;
    std::optional<StreamRedisConfig> streamRedis;
    std::optional<StreamAmqpConfig> streamAmqp;
    std::optional<ClusterConfig> cluster; ///< unset: a single node, as before clustering
    std::optional<StreamHttpConfig> streamHttp;
    /// backends: named sinks, in the order written; endpoints route to them by name.
    std::vector<BackendConfig> backends;
    std::optional<CommandRedisConfig> commandRedis; ///< command_redis: commands in over a Redis stream
    std::optional<CommandAmqpConfig> commandAmqp;   ///< command_amqp: commands in over an AMQP queue
    /// backlog_max_events, backlog_max_mb, backlog_overflow (drop_oldest | pause_reading): every
    /// event sink's backlog while it is slow or down.
    SinkOptions backlog;
    ConfigDefaults defaults;            ///< applied already: see ConfigDefaults
    unsigned threads = 0;               ///< threads: shards; 0 = one per CPU
    EventLog eventLog = EventLog::Auto; ///< event_log: auto|stdout|stderr|none|discard
    std::string logLevel = "info";      ///< log_level: trace|debug|info|warn|error|off
    LogFormat logFormat = LogFormat::Text; ///< log_format: text|json
    std::string nodeId;                 ///< node_id: this node's name; "" = hostname:listen port
    std::chrono::seconds shutdownFlush{5}; ///< shutdown_flush_s: how long a stop waits for sinks to flush
    std::chrono::seconds drain{10};        ///< drain_s: SIGTERM spreads the closes (1012) over this long
    std::vector<ConfigFile> files;         ///< the files named above, in the order written

    /// eventLog with Auto resolved.
    EventLog effectiveEventLog() const;
    /// The backend with this name, or nullptr.
    const BackendConfig *findBackend(std::string_view name) const;
    /// The endpoint with this exact path, or nullptr.
    const WsEndpoint *findEndpoint(std::string_view path) const;
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
