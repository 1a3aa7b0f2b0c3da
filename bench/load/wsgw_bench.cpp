// wsgw-bench: a WebSocket load generator that checks what it receives.
//
// It opens N WebSocket connections (spread over several 127.0.0.x source addresses and over
// worker threads, each with its own epoll loop), publishes through a server's HTTP publish API
// from the same process, and counts, orders and times every frame the connections receive. See
// bench/README.md for the scenarios and the output; `wsgw-bench --help` for the options.
//
// This file is the command line; driver.h says where the rest is.

#include "driver.h"

#include <CLI/CLI.hpp>

#include <csignal>

int main(int argc, char **argv) {
    using wsgw::bench::Options;
    Options o;
    CLI::App app{"wsgw-bench: WebSocket load generator that checks every frame it receives.\n"
                 "Scenarios run in this order: connect, idle-memory, throughput, latency, groups, inbound.\n"
                 "One JSON line per scenario goes to stdout; progress and a table to stderr.\n"
                 "Exit: 0 all checks passed, 1 a check failed, 2 could not run."};
    app.add_option("--url", o.url, "ws://HOST:PORT/PATH; {group} in the path becomes the connection's group number")
        ->capture_default_str();
    app.add_option("--name", o.name, "server name for the results")->capture_default_str();
    app.add_option("-c,--connections", o.connections, "connections")->capture_default_str();
    app.add_option("-t,--threads", o.threads, "worker threads (each its own epoll loop)")->capture_default_str();
    app.add_option("--groups", o.groups, "connection i is in group i % GROUPS")->capture_default_str();
    app.add_option("--sources", o.sources, "source addresses 127.0.0.1.. to spread connections over")->capture_default_str();
    app.add_option("--subprotocol", o.subprotocol, "Sec-WebSocket-Protocol to ask for (must be echoed)");
    app.add_flag("--deflate", o.deflate, "offer permessage-deflate (client_max_window_bits)");
    app.add_option("--connect-concurrency", o.connectConcurrency, "handshakes in progress at once")->capture_default_str();
    app.add_option("--connect-retries", o.connectRetries, "times a failed connection is tried again")->capture_default_str();
    app.add_option("--publish", o.publish, "publish API: wsgw|raw|nchan|pushpin@HOST:PORT");
    app.add_option("--publishers", o.publishers, "publisher connections (ordered streams), broadcasts")->capture_default_str();
    app.add_option("--group-publishers", o.groupPublishers, "publisher connections for groups (default: --publishers)");
    app.add_option("--window", o.window, "broadcasts published but not yet delivered to everyone, at most")->capture_default_str();
    app.add_option("--group-window", o.groupWindow, "the same for group messages")->capture_default_str();
    app.add_option("--latency-window", o.latencyWindow,
                   "latency: broadcasts in flight before the server counts as not keeping up")
        ->capture_default_str();
    app.add_option("--size", o.size, "payload bytes")->capture_default_str();
    app.add_option("--scenarios", o.scenarios, "connect,idle-memory,throughput,latency,groups,inbound")
        ->delimiter(',')
        ->capture_default_str();
    app.add_option("--warmup", o.warmup, "seconds before measuring")->capture_default_str();
    app.add_option("--duration", o.duration, "seconds measured (throughput; default of the others)")->capture_default_str();
    app.add_option("--latency-duration", o.latencyDuration, "seconds measured (latency)");
    app.add_option("--groups-duration", o.groupsDuration, "seconds measured (groups)");
    app.add_option("--inbound-duration", o.inboundDuration, "seconds measured (inbound)");
    app.add_option("--latency-interval-ms", o.latencyIntervalMs, "one broadcast every this many ms (latency)")
        ->capture_default_str();
    app.add_option("--idle-connections", o.idleConnections, "connections for idle-memory")->capture_default_str();
    app.add_option("--send-rate", o.sendRate, "inbound frames/s in all; 0 = as fast as the server takes them")
        ->capture_default_str();
    app.add_option("--send-batch", o.sendBatch, "inbound frames per write")->capture_default_str();
    app.add_option("--inbound-window", o.inboundWindow, "inbound frames sent but not yet counted at the sink, at most")
        ->capture_default_str();
    app.add_option("--sink-url", o.sinkUrl, "http URL whose body holds the sink's event count (inbound)");
    app.add_option("--sink-pattern", o.sinkPattern, "text right before that count in the body");
    app.add_option("--server-pid", o.serverPids, "server process (repeat for several): CPU and memory");
    app.add_option("--settle", o.settle, "seconds to wait before reading memory")->capture_default_str();
    app.add_option("--timeout", o.timeoutS, "seconds before a connect or a delivery counts as failed")->capture_default_str();
    app.add_option("--json", o.jsonFile, "also append the result lines to this file");
    CLI11_PARSE(app, argc, argv);

    std::signal(SIGPIPE, SIG_IGN);
    auto stop = [](int) { wsgw::bench::gQuit = true; };
    std::signal(SIGINT, stop);
    std::signal(SIGTERM, stop);
    return wsgw::bench::Bench(std::move(o)).run();
}
