#include "harness.h"

#include <httplib.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include "tied_process.h"
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>


namespace wsgw::itest {

std::uint16_t freePort() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) throw std::runtime_error("bind");
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

TempDir::TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "wsgw-itest-XXXXXX").string();
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
}

TempDir::~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

void writeFile(const std::string &path, const std::string &text) {
    std::ofstream f(path, std::ios::binary);
    f << text;
}

std::string readFile(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

bool eventually(const std::function<bool()> &pred, Millis limit) {
    auto until = std::chrono::steady_clock::now() + limit;
    for (;;) {
        if (pred()) return true;
        if (std::chrono::steady_clock::now() >= until) return false;
        std::this_thread::sleep_for(10ms);
    }
}

std::string testConfig(std::uint16_t wsPort, std::uint16_t controlPort, const std::string &extra,
                       unsigned maxMessageKb) {
    std::string c = "listen_addr: 127.0.0.1:" + std::to_string(wsPort) + "\n" +
                    "control_addr: 127.0.0.1:" + std::to_string(controlPort) + "\n" +
                    "threads: 2\n"
                    "max_message_size_kb: " + std::to_string(maxMessageKb) + "\n"
                    "endpoints:\n"
                    "  - path: /connect\n"
                    "    compression: true\n"
                    "    set_tags: {group: default}\n"
                    "    stream_include_tags: [group, user]\n"
                    "  - path: /raw\n"
                    "    compression: false\n"
                    "    max_message_size_kb: 4\n"
                    "  - path: /json\n"
                    "    stream_include_tags: [room]\n"
                    "    json_extract_vars: {command: data.command}\n";
    return c + extra;
}

std::string wsgwdPath() {
    const char *p = std::getenv("WSGWD");
    if (!p || !*p) throw std::runtime_error("WSGWD is not set: run the integration tests through meson test");
    return p;
}

std::unique_ptr<Daemon> Daemon::start(const std::string &extra, std::vector<std::string> args,
                                      unsigned maxMessageKb) {
    std::uint16_t ws = freePort();
    std::uint16_t control = freePort();
    while (control == ws) control = freePort();
    auto d = std::make_unique<Daemon>(testConfig(ws, control, extra, maxMessageKb), std::move(args), control);
    d->wsPort = ws;
    d->controlPort = control;
    return d;
}

Daemon::Daemon(const std::string &configYaml, std::vector<std::string> args, std::uint16_t healthPort) {
    std::string exe = wsgwdPath();
    std::vector<std::string> argv{exe};
    if (!configYaml.empty()) {
        std::string config = dir_.file("config.yml");
        writeFile(config, configYaml);
        argv.push_back("--config");
        argv.push_back(config);
    }
    argv.insert(argv.end(), args.begin(), args.end());
    test::SpawnOptions spawn;
    spawn.fds = {{1, dir_.file("stdout"), O_WRONLY | O_CREAT | O_TRUNC},
                 {2, dir_.file("stderr"), O_WRONLY | O_CREAT | O_TRUNC}};
    std::string spawnError;
    pid_t pid = test::spawnTied(argv, spawn, &spawnError);
    if (pid < 0) throw std::runtime_error("cannot start wsgwd: " + spawnError);
    pid_ = pid;

    if (healthPort) {
        bool healthy = eventually([&] { return running() && httpGet(healthPort, "/healthz").status == 200; }, 10000ms);
        if (!healthy) {
            std::string why = err();
            stop(SIGKILL, 2000ms);
            throw std::runtime_error("wsgwd did not become healthy; stderr:\n" + why);
        }
    }
}

Daemon::~Daemon() {
    if (pid_ > 0 && status_ == -1) stop(SIGKILL, 5000ms);
}

bool Daemon::running() {
    if (pid_ <= 0 || status_ != -1) return false;
    int st = 0;
    pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
        status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        return false;
    }
    return true;
}

int Daemon::wait(Millis limit) {
    eventually([&] { return !running(); }, limit);
    return status_ == -1 ? -1 : status_;
}

int Daemon::stop(int sig, Millis limit) {
    if (running()) ::kill(pid_, sig);
    int rc = wait(limit);
    if (rc == -1 && running()) {
        ::kill(pid_, SIGKILL);
        wait(5000ms);
    }
    return rc;
}

std::string Daemon::out() const { return readFile(dir_.file("stdout")); }
std::string Daemon::err() const { return readFile(dir_.file("stderr")); }

std::vector<nlohmann::json> Daemon::events() const {
    std::vector<nlohmann::json> out;
    std::istringstream in(this->out());
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_discarded()) out.push_back(std::move(j));
    }
    return out;
}

std::optional<nlohmann::json> Daemon::waitEvent(const std::function<bool(const nlohmann::json &)> &pred,
                                                Millis limit) const {
    std::optional<nlohmann::json> found;
    eventually(
        [&] {
            for (auto &e : events())
                if (pred(e)) {
                    found = e;
                    return true;
                }
            return false;
        },
        limit);
    return found;
}

namespace {

HttpResult send(std::uint16_t port, const std::string &method, const std::string &target, const std::string &body,
                const std::string &contentType, const httplib::Headers &headers) {
    httplib::Client client("127.0.0.1", port);
    client.set_connection_timeout(2, 0);
    client.set_read_timeout(15, 0);
    httplib::Result r(nullptr, httplib::Error::Unknown);
    if (method == "GET")
        r = client.Get(target.c_str(), headers);
    else if (method == "POST")
        r = client.Post(target.c_str(), headers, body, contentType.c_str());
    else if (method == "PUT")
        r = client.Put(target.c_str(), headers, body, contentType.c_str());
    else if (method == "DELETE")
        r = client.Delete(target.c_str(), headers);
    HttpResult out;
    if (!r) {
        out.error = httplib::to_string(r.error());
        return out;
    }
    out.status = r->status;
    out.body = r->body;
    out.contentType = r->get_header_value("Content-Type");
    out.allow = r->get_header_value("Allow");
    for (const auto &[k, v] : r->headers) out.headers[k] = v;
    return out;
}

} // namespace

HttpResult httpRequest(std::uint16_t port, const std::string &method, const std::string &target,
                       const std::string &body, const std::string &contentType) {
    return send(port, method, target, body, contentType, {});
}

HttpResult httpGet(std::uint16_t port, const std::string &target, const std::string &accept) {
    httplib::Headers headers;
    if (!accept.empty()) headers.emplace("Accept", accept);
    return send(port, "GET", target, "", "", headers);
}

HttpResult httpPost(std::uint16_t port, const std::string &target, const std::string &body,
                    const std::string &contentType) {
    return httpRequest(port, "POST", target, body, contentType);
}

HttpResult httpWithHeaders(std::uint16_t port, const std::string &method, const std::string &target,
                           const std::vector<std::pair<std::string, std::string>> &headers, const std::string &body,
                           const std::string &contentType) {
    httplib::Headers h;
    for (const auto &[k, v] : headers) h.emplace(k, v);
    return send(port, method, target, body, contentType, h);
}

double metric(const Daemon &d, const std::string &sample) {
    std::string text = httpGet(d.controlPort, "/metrics").body;
    std::size_t at = text.find("\n" + sample + " ");
    if (at == std::string::npos) return -1;
    return std::strtod(text.c_str() + at + sample.size() + 2, nullptr);
}

} // namespace wsgw::itest
