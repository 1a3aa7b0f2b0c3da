// Reporting: one JSON line per scenario on stdout (and appended to --json), a progress line and,
// at the end, a table on stderr.

#include "driver.h"

#include <cstdio>

namespace wsgw::bench {

void Bench::log(const std::string &line) { std::fprintf(stderr, "[%s] %s\n", opt_.name.c_str(), line.c_str()); }

nlohmann::json Bench::baseResult(const char *scenario) {
    return nlohmann::json{{"tool", "wsgw-bench"}, {"server", opt_.name},      {"scenario", scenario},
                          {"connections", opt_.connections}, {"threads", opt_.threads}, {"size", opt_.size},
                          {"deflate", opt_.deflate}};
}

void Bench::emit(nlohmann::json r, const std::string &summary) {
    bool ok = r.value("ok", false);
    if (!ok) allOk_ = false;
    std::string line = r.dump();
    std::fprintf(stdout, "%s\n", line.c_str());
    std::fflush(stdout);
    if (!opt_.jsonFile.empty()) {
        if (FILE *f = std::fopen(opt_.jsonFile.c_str(), "a")) {
            std::fprintf(f, "%s\n", line.c_str());
            std::fclose(f);
        }
    }
    table_.push_back({r["scenario"].get<std::string>(), summary, ok ? "ok" : "FAIL: " + r.value("error", "")});
    log(std::string(r["scenario"].get<std::string>()) + ": " + summary + (ok ? "" : "  FAILED: " + r.value("error", "")));
}

void Bench::addCpu(nlohmann::json &r, const CpuSample &a, const CpuSample &b, double units, const char *per) {
    double secs = double(b.ns - a.ns) / 1e9;
    r["client_cpu_util"] = double(b.client - a.client) / 1e9 / secs;
    if (units > 0) r[std::string("client_cpu_ns_per_") + per] = double(b.client - a.client) / units;
    if (a.serverKnown && b.serverKnown) {
        r["server_cpu_util"] = double(b.server - a.server) / 1e9 / secs;
        if (units > 0) r[std::string("server_cpu_ns_per_") + per] = double(b.server - a.server) / units;
    }
}

void Bench::printTable() {
    std::fprintf(stderr, "\n%-12s  %-90s  %s\n", "scenario", "result", "check");
    for (const auto &row : table_)
        std::fprintf(stderr, "%-12s  %-90s  %s\n", row[0].c_str(), row[1].c_str(), row[2].c_str());
}

} // namespace wsgw::bench
