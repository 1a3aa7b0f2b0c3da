#pragma once

// A real HTTP backend for the tests of outgoing HTTP: tests/integration/http_backend.py (python3's
// http.server), started on a free port and killed (by PID) on destruction. It records what it
// receives and answers as told; with a secret it checks Standard Webhooks signatures itself.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace wsgw::itest {

/// Whether python3 (looked up in $PATH) can be run here; tests skip with a message if not.
bool haveHttpBackend();

class HttpBackend {
public:
    /// Starts the backend and waits until it listens. `secret`: whsec_... to check signatures.
    /// With `tlsCert` and `tlsKey` (PEM files) it serves HTTPS.
    explicit HttpBackend(const std::string &secret = "", const std::string &tlsCert = "",
                         const std::string &tlsKey = "");
    ~HttpBackend();
    HttpBackend(const HttpBackend &) = delete;
    HttpBackend &operator=(const HttpBackend &) = delete;

    std::uint16_t port() const { return port_; }
    std::string url(const std::string &path) const {
        return scheme_ + "://127.0.0.1:" + std::to_string(port_) + path;
    }

    /// How requests to `path` are answered from now on.
    void setMode(const std::string &path, int status, int delayMs = 0, const std::string &body = "{}");
    /// The requests recorded so far (see http_backend.py).
    std::vector<nlohmann::json> received() const;
    void clear();

private:
    std::uint16_t port_ = 0;
    int pid_ = -1;
    std::string scheme_ = "http";
};

} // namespace wsgw::itest
