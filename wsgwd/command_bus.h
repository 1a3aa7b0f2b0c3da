#pragma once

// The command bus's daemon half: commands read from a Redis stream or an AMQP queue by libwsgw's
// CommandReaders (<wsgw/command_bus.h>) run through the same CommandRunner as the HTTP control API,
// cluster-wide, with the same selectors, checks and counts.

#include "command_runner.h"

#include <wsgw/command_bus.h>

#include <functional>
#include <memory>

namespace wsgw::daemon {

/// A BusHandler that runs each command with `runner` under the limits `limits()` gives at that
/// moment (max_tag_*, control_timeout_s; a reload may change them) and reports:
///   Applied (200: count, missing nodes), Invalid (unknown action, bad selector, a text message
///   that is not UTF-8, bad tags: nothing done), Retry (busy, or this node is shutting down:
///   nothing done), Failed (anything else: timed out, partly done, over max_tags_per_connection).
/// `stopping()` ends a wait at once (as Retry when the node is shutting down).
///
/// Thread-safe, like the runner; the handler runs on the reader's thread.
BusHandler makeBusHandler(const CommandRunner &runner, std::function<ControlApiOptions()> limits,
                          std::function<bool()> stopping);

} // namespace wsgw::daemon
