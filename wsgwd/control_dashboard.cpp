#include "control_dashboard.h"

#include "metrics.h"

#include <wsgw/cluster.h>
#include <wsgw/hub.h>

#include <nlohmann/json.hpp>

#include <chrono>

namespace wsgw::daemon {

std::string dashboardEvent(const DashboardSources &s) {
    MetricsTotals totals = s.metrics.totals();
    nlohmann::json endpoints = nlohmann::json::object();
    for (const auto &[path, open] : totals.endpoints) endpoints[path] = open;
    std::size_t connections = s.hub.connectionCount();
    nlohmann::json nodes = nlohmann::json::array();
    if (s.cluster) {
        for (const NodeInfo &n : s.cluster->nodes()) nodes.push_back({{"id", n.id}, {"connections", n.connections}});
    } else {
        nodes.push_back({{"id", s.node}, {"connections", connections}});
    }
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch());
    nlohmann::json out = {{"ts", ms.count()},
                          {"node", s.node},
                          {"connections", connections},
                          {"endpoints", std::move(endpoints)},
                          {"nodes", std::move(nodes)},
                          {"connects", totals.connects},
                          {"disconnects", totals.disconnects},
                          {"messages_in", totals.messagesIn},
                          {"messages_out", totals.messagesOut}};
    return "data: " + out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n\n";
}

} // namespace wsgw::daemon
