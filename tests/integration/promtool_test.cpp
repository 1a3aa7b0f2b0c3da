// /metrics of a live wsgwd through Prometheus' own linter, `promtool check metrics` (Debian
// package prometheus): every wsgw_* family follows the naming rules (units in names, counters
// end in _total, latencies are histograms). The original gateway's five names do not, so they
// are checked to be exactly the ones promtool names, and prometheus.legacy_names: false to drop
// them.
#include "harness.h"

#include "skip.h"
#include "ws_client.h"

#include <doctest/doctest.h>

#include <sys/wait.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>

using namespace wsgw::itest;
using wsgw::test::WsClient;

namespace {

const wsgw::test::Prerequisite promtool{"promtool is not installed (Debian package prometheus)",
                                        [] { return !wsgw::test::findInPath("promtool").empty(); }};

struct Lint {
    int status = -1;
    std::string output; ///< promtool's complaints, one per line
};

// Runs `promtool check metrics` on `text` (its stdin) and collects what it prints.
Lint check(const TempDir &dir, const std::string &text) {
    writeFile(dir.file("metrics.txt"), text);
    std::string cmd = "promtool check metrics < '" + dir.file("metrics.txt") + "' > '" + dir.file("lint.txt") + "' 2>&1";
    int rc = std::system(cmd.c_str());
    Lint l;
    l.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    l.output = readFile(dir.file("lint.txt"));
    return l;
}

// The metric names promtool complains about (the first word of each line).
std::set<std::string> namesIn(const std::string &lint) {
    std::set<std::string> names;
    std::istringstream in(lint);
    std::string line;
    while (std::getline(in, line))
        if (!line.empty()) names.insert(line.substr(0, line.find(' ')));
    return names;
}

// Some traffic first, so that the histograms and labelled families have samples.
void traffic(const Daemon &d) {
    WsClient c;
    REQUIRE(c.connect("127.0.0.1", d.wsPort, "/connect").ok());
    REQUIRE(httpPost(d.controlPort, "/send?group=default", "hello").body == "1");
    REQUIRE(httpPost(d.controlPort, "/settags?group=default", "user=u1").body == "1");
    REQUIRE(httpGet(d.controlPort, "/status").status == 200);
}

} // namespace

TEST_CASE("promtool check metrics: every wsgw_* family passes; only the five legacy names are flagged") {
    auto d = Daemon::start();
    traffic(*d);
    std::string text = httpGet(d->controlPort, "/metrics").body;
    REQUIRE(text.find("wsgw_command_duration_seconds_bucket{command=\"send\"") != std::string::npos);
    REQUIRE(text.find("wsgw_connections_opened_total 1") != std::string::npos);

    TempDir dir;
    Lint lint = check(dir, text);
    INFO("promtool said:\n" << lint.output);
    CHECK(lint.status != 0);
    CHECK(namesIn(lint.output) == std::set<std::string>{"active_connections_gauge", "connections_counter",
                                                        "disconnections_counter", "messages_recieved_counter",
                                                        "messages_sent_counter"});
}

TEST_CASE("prometheus.legacy_names: false: /metrics passes promtool as a whole") {
    auto d = Daemon::start("prometheus: {enabled: true, legacy_names: false}\n");
    traffic(*d);
    std::string text = httpGet(d->controlPort, "/metrics").body;
    CHECK(text.find("messages_sent_counter") == std::string::npos);
    CHECK(text.find("active_connections_gauge") == std::string::npos);
    CHECK(text.find("wsgw_messages_sent_total 1") != std::string::npos);
    CHECK(text.find("wsgw_connections_opened_total 1") != std::string::npos);
    CHECK(text.find("\nwsgw_connections ") != std::string::npos);

    TempDir dir;
    Lint lint = check(dir, text);
    INFO("promtool said:\n" << lint.output);
    CHECK(lint.status == 0);
    CHECK(lint.output.empty());
}

TEST_CASE("prometheus.legacy_names changes on SIGHUP") {
    auto d = Daemon::start();
    CHECK(metric(*d, "active_connections_gauge") == 0);
    std::string cfg = readFile(d->dir().file("config.yml"));
    writeFile(d->dir().file("config.yml"), cfg + "prometheus: {legacy_names: false}\n");
    REQUIRE(::kill(d->pid(), SIGHUP) == 0);
    CHECK(eventually([&] { return metric(*d, "active_connections_gauge") == -1; }));
    CHECK(metric(*d, "wsgw_connections") == 0);
}
