#pragma once

#include "log_format.h"

#include <string>

namespace wsgw::daemon {

/// Sends diagnostics to stderr through spdlog (stdout belongs to the event log) at `level`
/// (trace, debug, info, warn, error, off) in `format`, and routes libwebsockets' own log there:
/// errors and warnings always, its notices at debug, nothing per I/O. Returns false for an
/// unknown level. Call once, before other threads log.
bool setupLogging(const std::string &level, LogFormat format = LogFormat::Text);

/// Switches the format of the logger setupLogging() made (SIGHUP). Thread-safe: the sink
/// changes its formatter under its own lock.
void setLogFormat(LogFormat format);

} // namespace wsgw::daemon
