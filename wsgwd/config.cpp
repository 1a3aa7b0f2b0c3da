// parseConfig: YAML text -> one document -> the schema's walk -> Config, with every problem as
// "FILE:LINE:COL: message". Pure: the files a config names are read by config_files.cpp.
#include "config.h"

#include "config_schema.h"
#include "yaml_cpp_workarounds.h"
#include "yaml_walker.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <exception>
#include <vector>

namespace wsgw::daemon {

Config::EventLog Config::effectiveEventLog() const {
    if (eventLog != EventLog::Auto) return eventLog;
    return streamRedis || streamAmqp || streamHttp || !backends.empty() ? EventLog::None : EventLog::Stdout;
}

const BackendConfig *Config::findBackend(std::string_view name) const {
    for (const auto &b : backends)
        if (b.name == name) return &b;
    return nullptr;
}

const char *BackendConfig::kind() const { return redis ? "redis" : amqp ? "amqp" : "http"; }

bool operator==(const BackendConfig &a, const BackendConfig &b) {
    return a.name == b.name && a.redis == b.redis && a.amqp == b.amqp && a.http == b.http && a.actions == b.actions &&
           a.backlog.maxBacklogEvents == b.backlog.maxBacklogEvents &&
           a.backlog.maxBacklogBytes == b.backlog.maxBacklogBytes && a.backlog.overflow == b.backlog.overflow;
}

const WsEndpoint *Config::findEndpoint(std::string_view path) const {
    for (const auto &ep : ws.endpoints)
        if (ep.path == path) return &ep;
    return nullptr;
}

// The sections compare what the config sets: the URL as written stands for the server and login
// parsed from it; node and the mirror's callbacks are the gateway's, added at start.

namespace {

bool sameTimeouts(const RedisEndpoint &a, const RedisEndpoint &b) {
    return a.connectTimeout == b.connectTimeout && a.commandTimeout == b.commandTimeout;
}

} // namespace

bool operator==(const StreamRedisConfig &a, const StreamRedisConfig &b) {
    return a.url == b.url && sameTimeouts(a.options.redis, b.options.redis) &&
           a.options.streamName == b.options.streamName && a.options.maxLen == b.options.maxLen;
}

bool operator==(const RedisSyncConfig &a, const RedisSyncConfig &b) {
    return a.url == b.url && sameTimeouts(a.options.redis, b.options.redis) &&
           a.options.keyTtl == b.options.keyTtl;
}

bool operator==(const ClusterConfig &a, const ClusterConfig &b) {
    return a.url == b.url && sameTimeouts(a.options.redis, b.options.redis) &&
           a.options.heartbeat == b.options.heartbeat && a.options.deadAfter == b.options.deadAfter &&
           a.commandTimeout == b.commandTimeout;
}

bool operator==(const CommandRedisConfig &a, const CommandRedisConfig &b) {
    const RedisCommandOptions &x = a.options, &y = b.options;
    return a.url == b.url && sameTimeouts(x.redis, y.redis) && x.stream == y.stream && x.group == y.group &&
           x.claimIdle == y.claimIdle && x.dedupWindow == y.dedupWindow;
}

bool operator==(const CommandAmqpConfig &a, const CommandAmqpConfig &b) {
    const AmqpCommandOptions &x = a.options, &y = b.options;
    return a.url == b.url && x.queue == y.queue && x.prefetch == y.prefetch && x.dedupWindow == y.dedupWindow &&
           x.broker.heartbeat == y.broker.heartbeat && x.broker.connectTimeout == y.broker.connectTimeout;
}

bool operator==(const StreamAmqpConfig &a, const StreamAmqpConfig &b) {
    const AmqpSinkOptions &x = a.options, &y = b.options;
    return a.url == b.url && x.exchange == y.exchange && x.queue == y.queue && x.routingKey == y.routingKey &&
           x.headers == y.headers;
}

bool operator==(const StreamHttpConfig &a, const StreamHttpConfig &b) {
    const HttpSinkOptions &x = a.options, &y = b.options;
    return x.url == y.url && x.secret == y.secret && x.caFile == y.caFile && x.batchMaxEvents == y.batchMaxEvents &&
           x.maxInFlight == y.maxInFlight && x.timeout == y.timeout && a.batchWait == b.batchWait;
}

std::optional<Config> parseConfig(std::string_view yamlText, const std::string &file, std::string *error) {
    Config config;
    config.file = file;
    auto failed = [&](const YAML::Mark &mark, const std::string &message) -> std::optional<Config> {
        if (error) *error = position(file, mark) + ": " + message;
        return std::nullopt;
    };
    // Everything below reports by throwing; nothing escapes.
    try {
        const std::string text(yamlText);
        if (auto comma = endlessDocuments(text))
            return failed(*comma, "invalid YAML: a document cannot start with ','");
        // One document; empty ones around it (a stray '---') do no harm.
        std::vector<YAML::Node> docs = YAML::LoadAll(text);
        docs.erase(std::remove_if(docs.begin(), docs.end(), [](const YAML::Node &d) { return d.IsNull(); }),
                   docs.end());
        if (docs.size() > 1)
            return failed(docs[1].Mark(), "more than one YAML document ('---'): a config file holds one");
        readConfigTree(docs.empty() ? YAML::Node() : docs.front(), Walker(yamlText), config);
    } catch (const ConfigError &e) {
        return failed(e.mark, e.message);
    } catch (const YAML::ParserException &e) {
        return failed(e.mark, "invalid YAML: " + e.msg);
    } catch (const YAML::Exception &e) {
        return failed(e.mark, e.msg);
    } catch (const std::exception &e) {
        return failed(YAML::Mark::null_mark(), e.what());
    }
    return config;
}

} // namespace wsgw::daemon
