#pragma once

// Runs the real wsgwd binary for integration tests: free ports, a config in a temp dir, stdout
// (the event log) and stderr captured to files, and the process always stopped at the end.

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace wsgw::itest {

using namespace std::chrono_literals;
using Millis = std::chrono::milliseconds;

/// A TCP port that was free on 127.0.0.1 a moment ago.
std::uint16_t freePort();

/// A temporary directory, removed with its contents on destruction.
class TempDir {
public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir &) = delete;
    TempDir &operator=(const TempDir &) = delete;
    const std::string &path() const { return path_; }
    std::string file(const std::string &name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

void writeFile(const std::string &path, const std::string &text);
std::string readFile(const std::string &path);

/// Polls `pred` every 10 ms until it holds or `limit` passes.
bool eventually(const std::function<bool()> &pred, Millis limit = 5000ms);

/// A config with the given ports and the test endpoints:
///   /connect  compression: true, set_tags group=default, stream_include_tags [group, user]
///   /raw      compression: false, max_message_size_kb: 4
///   /json     json_extract_vars command: data.command
/// `extra` is appended (top-level keys).
/// `maxMessageKb` is the global max_message_size_kb (also the control API's body limit).
std::string testConfig(std::uint16_t wsPort, std::uint16_t controlPort, const std::string &extra = "",
                       unsigned maxMessageKb = 64);

/// The wsgwd under test (path from the WSGWD environment variable, set by meson).
std::string wsgwdPath();

/// A running wsgwd. The destructor kills it (SIGKILL) if it is still running.
class Daemon {
public:
    /// Starts wsgwd with `--config <dir>/config.yml` (none if `configYaml` is empty) plus `args`. With a `healthPort`, waits
    /// until GET /healthz answers there (throws, with wsgwd's stderr, if not within 10 s).
    Daemon(const std::string &configYaml, std::vector<std::string> args = {}, std::uint16_t healthPort = 0);
    /// testConfig() on fresh ports plus `extra`, started and healthy; the ports are in wsPort
    /// and controlPort.
    static std::unique_ptr<Daemon> start(const std::string &extra = "", std::vector<std::string> args = {},
                                         unsigned maxMessageKb = 64);
    ~Daemon();
    Daemon(const Daemon &) = delete;
    Daemon &operator=(const Daemon &) = delete;

    int pid() const { return pid_; }
    bool running();
    /// Sends `sig` and waits up to `limit` for the exit; returns the exit status (or -1 on
    /// timeout, or 128+N when killed by signal N).
    int stop(int sig, Millis limit = 10000ms);
    /// Waits for the process to exit by itself; same return values as stop().
    int wait(Millis limit);

    std::string out() const; ///< stdout so far (the event log)
    std::string err() const; ///< stderr so far (the diagnostics)
    /// The JSON events written so far.
    std::vector<nlohmann::json> events() const;
    /// Waits until an event satisfying `pred` has been written; returns it.
    std::optional<nlohmann::json> waitEvent(const std::function<bool(const nlohmann::json &)> &pred,
                                            Millis limit = 5000ms) const;
    const TempDir &dir() const { return dir_; }

    std::uint16_t wsPort = 0;      ///< set by start()
    std::uint16_t controlPort = 0; ///< set by start()

private:
    TempDir dir_;
    int pid_ = -1;
    int status_ = -1;
};

/// A small HTTP client for the control API.
struct HttpResult {
    int status = 0;
    std::string body;
    std::string contentType;
    std::string allow;
    std::string error;
    std::map<std::string, std::string> headers; ///< every response header (the last of a repeated one)
    /// A response header, or "" (names as the server wrote them: "X-Wsgw-Missing-Nodes").
    std::string header(const std::string &name) const {
        auto it = headers.find(name);
        return it == headers.end() ? std::string() : it->second;
    }
};
HttpResult httpGet(std::uint16_t port, const std::string &target, const std::string &accept = "");
HttpResult httpPost(std::uint16_t port, const std::string &target, const std::string &body,
                    const std::string &contentType = "text/plain");
HttpResult httpRequest(std::uint16_t port, const std::string &method, const std::string &target,
                       const std::string &body = "", const std::string &contentType = "text/plain");

/// Any request with request headers of the caller's own (e.g. X-Wsgw-Scope).
HttpResult httpWithHeaders(std::uint16_t port, const std::string &method, const std::string &target,
                           const std::vector<std::pair<std::string, std::string>> &headers, const std::string &body = "",
                           const std::string &contentType = "text/plain");

/// The value of the sample `name` or `name{labels}` in `d`'s /metrics, or -1 if it is absent.
double metric(const Daemon &d, const std::string &sample);

} // namespace wsgw::itest
