#pragma once

// Shared pieces of the hostile suite: an attack tool run as a child process, a prober that
// measures what well-behaved clients get from the control API while an attack runs, and a
// WebSocket client that counts what reaches it. Each hostile test starts a real wsgwd
// (tests/integration/harness.h), runs one attack, and asserts on what the prober saw.

#include "harness.h"

#include "ws_client.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace wsgw::hostile {

using namespace std::chrono_literals;
using itest::Millis;

/// The full path of `tool` on PATH. When it is missing: exits 77 (a visible skip), or with
/// CI=true in the environment fails the test (exit 1) with a message naming the package.
std::string requireTool(const std::string &tool, const std::string &package);

/// A file of tests/hostile (the source directory comes from HOSTILE_DIR, set by meson).
std::string sourceFile(const std::string &name);

/// An attack tool run as a child process, its stdout and stderr captured to a file. Killed
/// (by its pid) on destruction if it is still running.
class Tool {
public:
    Tool(std::vector<std::string> argv, std::string logFile);
    ~Tool();
    Tool(const Tool &) = delete;
    Tool &operator=(const Tool &) = delete;

    bool running();
    /// Waits up to `limit` for the exit; returns the exit status, 128+N when killed by signal
    /// N, or -1 if it is still running.
    int wait(Millis limit);
    /// SIGTERM, then SIGKILL after `grace`; returns wait()'s answer.
    int stop(Millis grace = 2000ms);
    std::string output() const;

private:
    std::string log_;
    int pid_ = -1;
    int status_ = -1;
};

/// Latencies of one kind of probe, in milliseconds.
struct LatencyStats {
    std::size_t count = 0;
    std::size_t failures = 0; ///< no answer in time, or not the expected answer
    double p50 = 0, p99 = 0, max = 0;
    std::string summary() const; ///< "p50 1.2 ms, p99 3.4 ms, max 8.0 ms over 612 probes, 0 failed"
};
LatencyStats summarize(std::vector<double> millis, std::size_t failures);

/// A WebSocket client on /connect of `d` that reads every message on a thread of its own.
class Receiver {
public:
    explicit Receiver(itest::Daemon &d);
    ~Receiver();
    const std::string &id() const { return id_; }
    /// The text messages received so far, in order.
    std::vector<std::string> messages() const;

private:
    wsgw::test::WsClient ws_;
    std::string id_;
    std::atomic<bool> stop_{false};
    mutable std::mutex mu_;
    std::vector<std::string> messages_;
    std::thread thread_;
};

/// Measures the control API of `d` while it runs: GET /healthz and GET /readyz alternately
/// every 20 ms, each on a fresh connection, with a 3 s limit; and, when given a receiver,
/// POST /send?id=<receiver> every 100 ms with a numbered body (10 s limit), which must answer
/// 200 "1" and arrive at the receiver in order.
class Prober {
public:
    Prober(std::uint16_t controlPort, Receiver *receiver);
    ~Prober(); ///< stop()s
    void stop();

    LatencyStats health() const;
    std::size_t sendsAnswered() const; ///< 200 "1"
    std::size_t sendsTried() const;
    /// Waits up to `limit` until the receiver holds every message that was answered "1", in
    /// order; true if it does. (A /send that was not answered may or may not have arrived.)
    bool deliveredInOrder(Millis limit) const;
    /// One line for the log and the README table.
    std::string report() const;

private:
    void probeHealth();
    void probeSend();

    std::uint16_t port_;
    Receiver *receiver_;
    std::atomic<bool> stop_{false};
    mutable std::mutex mu_;
    std::vector<double> healthMillis_;
    std::size_t healthFailures_ = 0;
    std::vector<std::string> healthErrors_; ///< the first few, for the report
    std::vector<std::string> answered_;     ///< bodies of the sends answered "1"
    std::size_t sendsTried_ = 0;
    std::vector<double> sendMillis_;
    std::vector<std::string> sendErrors_;
    std::thread health_, send_;
};

/// Established TCP connections on local port `port` that process `pid` holds (the server's
/// accepted connections), from /proc/PID/fd and /proc/net/tcp and tcp6.
std::size_t establishedOn(std::uint16_t port, int pid);

/// A connection that sends the start of a request and then nothing (a hand-made slowloris).
class HalfRequest {
public:
    HalfRequest(std::uint16_t port, const std::string &bytes);
    ~HalfRequest();
    HalfRequest(const HalfRequest &) = delete;
    HalfRequest &operator=(const HalfRequest &) = delete;
    bool connected() const { return fd_ >= 0; }

private:
    int fd_ = -1;
};

} // namespace wsgw::hostile
