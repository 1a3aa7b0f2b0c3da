#include "http_backend.h"

#include "harness.h"
#include "skip.h"

#include <httplib.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include "tied_process.h"
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>


namespace wsgw::itest {

namespace {

const std::string &pythonPath() {
    static const std::string path = wsgw::test::findInPath("python3");
    return path;
}

std::string scriptPath() {
    // Beside this file in the source tree.
    std::string here = __FILE__;
    return here.substr(0, here.rfind('/')) + "/http_backend.py";
}

} // namespace

bool haveHttpBackend() { return !pythonPath().empty(); }

namespace {

// A client for the backend's own /_ routes (its certificate is not checked).
httplib::Client control(const std::string &scheme, std::uint16_t port) {
    httplib::Client c(scheme + "://127.0.0.1:" + std::to_string(port));
    c.enable_server_certificate_verification(false);
    c.set_connection_timeout(std::chrono::seconds(5));
    c.set_read_timeout(std::chrono::seconds(10));
    return c;
}

} // namespace

HttpBackend::HttpBackend(const std::string &secret, const std::string &tlsCert, const std::string &tlsKey) {
    if (!tlsCert.empty()) scheme_ = "https";
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    std::vector<std::string> args{pythonPath(), "-u", scriptPath()};
    if (!secret.empty()) args.insert(args.end(), {"--secret", secret});
    if (!tlsCert.empty()) args.insert(args.end(), {"--tls", tlsCert, tlsKey});
    test::SpawnOptions spawn;
    spawn.fds = {{1, "", 0, fds[1]}};
    std::string spawnError;
    const pid_t pid = test::spawnTied(args, spawn, &spawnError);
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        throw std::runtime_error("cannot start python3 " + scriptPath() + ": " + spawnError);
    }
    pid_ = pid;
    // The first line is "PORT n"; bounded wait (python starts slowly on a loaded machine).
    std::string line;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < until) {
        pollfd p{fds[0], POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        char buf[64];
        const ssize_t n = read(fds[0], buf, sizeof buf);
        if (n <= 0) break;
        line.append(buf, static_cast<std::size_t>(n));
    }
    close(fds[0]);
    if (line.rfind("PORT ", 0) != 0) {
        ::kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        pid_ = -1;
        throw std::runtime_error("the HTTP backend did not start: '" + line + "'");
    }
    port_ = static_cast<std::uint16_t>(std::stoi(line.substr(5)));
}

HttpBackend::~HttpBackend() {
    if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }
}

void HttpBackend::setMode(const std::string &path, int status, int delayMs, const std::string &body) {
    nlohmann::json m{{"path", path}, {"status", status}, {"delay_ms", delayMs}, {"body", body}};
    httplib::Client c = control(scheme_, port_);
    auto r = c.Post("/_mode", m.dump(), "application/json");
    if (!r || r->status != 200) throw std::runtime_error("the HTTP backend did not take the mode");
}

std::vector<nlohmann::json> HttpBackend::received() const {
    httplib::Client c = control(scheme_, port_);
    auto r = c.Get("/_received");
    if (!r || r->status != 200) throw std::runtime_error("the HTTP backend did not answer /_received");
    return nlohmann::json::parse(r->body).get<std::vector<nlohmann::json>>();
}

void HttpBackend::clear() {
    httplib::Client c = control(scheme_, port_);
    c.Post("/_clear", "", "text/plain");
}

} // namespace wsgw::itest
