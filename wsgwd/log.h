#pragma once

#include <string>

namespace wsgw::daemon {

/// Sends diagnostics to stderr through spdlog (stdout belongs to the event log) at `level`
/// (trace, debug, info, warn, error, off), and routes libwebsockets' own log there: errors and
/// warnings always, its notices at debug, nothing per I/O. Returns false for an unknown level.
bool setupLogging(const std::string &level);

} // namespace wsgw::daemon
