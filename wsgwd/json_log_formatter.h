#pragma once

// log_format: json. Each diagnostic as one JSON object on a line, for log shippers (Vector,
// Fluent Bit, Promtail, journald's JSON consumers):
//   {"time":"2026-01-31T12:00:00.123Z","level":"warning","msg":"event sink 'redis' is down: ..."}
// time is UTC with milliseconds (RFC 3339); level is spdlog's name (trace, debug, info, warning,
// error, critical); msg is the text of the text format. Bytes that are not UTF-8 (a peer's
// header quoted in a message) become U+FFFD, so every line is valid JSON.

#include <spdlog/formatter.h>

#include <memory>

namespace wsgw::daemon {

/// Thread-compatible, like every spdlog formatter: a sink calls it under its own lock.
class JsonLogFormatter final : public spdlog::formatter {
public:
    void format(const spdlog::details::log_msg &msg, spdlog::memory_buf_t &dest) override;
    std::unique_ptr<spdlog::formatter> clone() const override;
};

} // namespace wsgw::daemon
