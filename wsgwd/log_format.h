#pragma once

namespace wsgw::daemon {

/// How diagnostics are written (log_format): one line each either way.
enum class LogFormat {
    Text, ///< "2026/01/31 12:00:00 info message", for people
    Json, ///< {"time":"2026-01-31T12:00:00.123Z","level":"info","msg":"message"}, for log shippers
};

} // namespace wsgw::daemon
