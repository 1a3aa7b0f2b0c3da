#pragma once

// The config's event routes made real: each backend (backends:) and top-level stream_* sink
// built as a libwsgw sink under its backend name, and the EventRoutes that send each endpoint's
// events to its backends (endpoints[].backends) or, naming none, to the top-level sinks.
//
// Functions of plain values: thread-compatible.

#include "config.h"

#include <wsgw/sink.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace wsgw::daemon {

/// One sink ready for EventBus::addSink under `backend`.
struct BuiltSink {
    std::string backend;
    std::unique_ptr<EventSink> sink;
    SinkOptions options;
};

/// The sink of backend `b` (with its actions, backlog and, for http, its batch settings), whose
/// events carry `node`. nullptr with "backends.NAME: why" when the sink cannot exist.
std::unique_ptr<EventSink> makeBackendSink(const BackendConfig &b, const std::string &node, SinkOptions *options,
                                           std::string *error);

/// Every sink `config` asks for: the event log, stream_redis, stream_amqp, stream_http (the
/// default route), then each backend. False with a message naming the section when one cannot
/// exist.
bool buildSinks(const Config &config, const std::string &node, std::vector<BuiltSink> &out, std::string *error);

/// The routes of `config`, by backend name: each endpoint with `backends:` to those, every other
/// endpoint to the top-level sinks it has (`defaults`).
EventRoutes routesOf(const Config &config);

/// What reloadSinks did, by backend name.
struct SinkReload {
    std::vector<std::string> added, replaced, removed;
    std::size_t undelivered = 0; ///< events the replaced and removed sinks left behind (flush ran out)
    bool routesChanged = false;
};

/// Brings `bus` from `cur`'s sinks and routes to `next`'s, without a restart: a backend (or
/// top-level sink) that is new is added and started before the routes name it; one whose
/// settings changed is replaced in one step (EventBus::replaceSink); the routes are swapped;
/// then the ones `next` no longer has are removed, each delivering its backlog for up to
/// `flushFor` first. Blocks while old sinks flush. False with a message, changing nothing, when
/// a sink of `next` cannot be built.
bool reloadSinks(const Config &cur, const Config &next, const std::string &node, EventBus &bus,
                 std::chrono::milliseconds flushFor, SinkReload &done, std::string *error);

/// One line per endpoint for the startup log: "/chat -> chat (redis), audit (http)".
std::vector<std::string> describeRoutes(const Config &config);

} // namespace wsgw::daemon
