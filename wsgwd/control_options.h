#pragma once

// What the control API runs with: its address, who may use it, its limits and timeouts. This is
// config.yml's section for it (control_addr, internal_endpoint_access_whitelist, control_*,
// max_body_kb, max_tag_*, prometheus.enabled): the config parser fills it, units converted
// (bytes, std::chrono), and the gateway hands it to ControlApi as it is.
//
// A plain value: thread-compatible.

#include "net_address.h"
#include "tls.h"

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace wsgw::daemon {

struct ControlApiOptions {
    /// control_addr. ControlApi needs an IP literal host: the gateway resolves a name before it
    /// hands the options over.
    HostPort addr{"127.0.0.1", 6666};
    /// internal_endpoint_access_whitelist: who may use it; empty: loopback only (the parser
    /// writes the loopback networks down when the key is absent or empty).
    std::vector<Cidr> allow;
    /// max_body_kb, else max_message_size_kb: larger bodies get 413.
    std::size_t maxBodyBytes = 1024 * 1024;
    bool metrics = true; ///< prometheus.enabled: serve /metrics
    /// prometheus.legacy_names: also expose the original gateway's five metric names
    /// (messages_sent_counter, ...), which promtool's naming rules reject.
    bool legacyMetricNames = true;
    /// control_timeout_s: a command not answered by then gets 504.
    std::chrono::milliseconds commandTimeout{10'000};
    /// control_request_timeout_s: a request's headers and body must arrive within this (408 and
    /// a close otherwise), and its answer must be written within it (the connection is dropped
    /// otherwise).
    std::chrono::milliseconds requestTimeout{10'000};
    std::chrono::milliseconds keepAliveTimeout{5'000}; ///< an idle keep-alive connection is closed then
    std::size_t maxConnections = 4096; ///< beyond: the longest-waiting idle or unfinished one is
                                       ///< closed to make room, else 503
    /// control_token, or control_token_file's content once readConfigFiles() has read it:
    /// non-empty: every request but /healthz and /readyz needs "Authorization: Bearer <token>"
    /// (401 otherwise).
    std::string token;
    /// max_tags_per_connection: a /settags that would exceed it gets 400, and nothing changes.
    unsigned maxTagsPerConnection = 64;
    unsigned maxTagKeyLen = 128;    ///< max_tag_key_len
    unsigned maxTagValueLen = 1024; ///< max_tag_value_len
    /// control_tls: HTTPS only; start() fails if the files cannot be used.
    std::optional<TlsFiles> tls;
};

} // namespace wsgw::daemon
