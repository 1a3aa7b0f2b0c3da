#pragma once

#include <cstddef>
#include <string>

namespace wsgw {
class Hub;
class Cluster;
}

namespace wsgw::daemon {

class Metrics;

/// What the dashboard's live stream (GET /v1/stream) reads. Borrowed: each must outlive the
/// control API.
struct DashboardSources {
    const Hub &hub;
    const Metrics &metrics;
    const Cluster *cluster = nullptr; ///< nullptr: this node alone
    std::string node;                 ///< this node's name
};

/// One server-sent event, "data: {json}\n\n", with the gateway as it is now:
///   {"ts": <ms since the epoch>, "node": "<this node>", "connections": N,
///    "endpoints": {"<path>": N, ...}, "nodes": [{"id": "<name>", "connections": N}, ...],
///    "connects": N, "disconnects": N, "messages_in": N, "messages_out": N}
/// The last four are cumulative since the start (a reader computes rates from two events).
/// Never waits for the shards (atomics only; the cluster's node list under its short lock), so
/// it may run on the control server's loop thread. Thread-safe.
std::string dashboardEvent(const DashboardSources &sources);

/// The page itself is embedded.h's dashboardHtml (wsgwd/dashboard/index.html).

/// Headers for the page: a Content-Security-Policy that allows its inline script and style
/// and nothing from elsewhere.
inline constexpr const char *kDashboardCsp =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

} // namespace wsgw::daemon
