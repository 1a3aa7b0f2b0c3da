#include "hostile.h"

#include <httplib.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include "tied_process.h"
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>


namespace wsgw::hostile {

using Clock = std::chrono::steady_clock;

std::string requireTool(const std::string &tool, const std::string &package) {
    const char *path = std::getenv("PATH");
    std::istringstream dirs(path ? path : "/usr/bin:/bin");
    std::string dir;
    while (std::getline(dirs, dir, ':')) {
        std::string full = (dir.empty() ? "." : dir) + "/" + tool;
        if (::access(full.c_str(), X_OK) == 0) return full;
    }
    const char *ci = std::getenv("CI");
    if (ci && std::string(ci) == "true") {
        std::cerr << tool << " is missing (Debian package " << package
                  << ", installed by scripts/bootstrap): the hostile suite cannot run\n";
        std::exit(1);
    }
    std::cerr << "SKIP: " << tool << " is not installed (apt-get install " << package << ")\n";
    std::exit(77);
}

std::string sourceFile(const std::string &name) {
    const char *dir = std::getenv("HOSTILE_DIR");
    return std::string(dir && *dir ? dir : ".") + "/" + name;
}

Tool::Tool(std::vector<std::string> argv, std::string logFile) : log_(std::move(logFile)) {
    test::SpawnOptions spawn;
    spawn.fds = {{0, "/dev/null", O_RDONLY}, {1, log_, O_WRONLY | O_CREAT | O_TRUNC}, {2, "", 0, 1}};
    std::string spawnError;
    pid_t pid = test::spawnTied(argv, spawn, &spawnError);
    if (pid < 0) throw std::runtime_error("cannot start " + argv[0] + ": " + spawnError);
    pid_ = pid;
}

Tool::~Tool() {
    if (running()) stop(0ms);
}

bool Tool::running() {
    if (pid_ <= 0 || status_ != -1) return false;
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) == pid_) {
        status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        return false;
    }
    return true;
}

int Tool::wait(Millis limit) {
    itest::eventually([&] { return !running(); }, limit);
    return status_;
}

int Tool::stop(Millis grace) {
    if (running()) ::kill(pid_, SIGTERM);
    if (wait(grace) == -1 && running()) {
        ::kill(pid_, SIGKILL);
        wait(5000ms);
    }
    return status_;
}

std::string Tool::output() const { return itest::readFile(log_); }

std::string LatencyStats::summary() const {
    char buf[200];
    std::snprintf(buf, sizeof buf, "p50 %.1f ms, p99 %.1f ms, max %.1f ms over %zu probes, %zu failed", p50, p99, max,
                  count, failures);
    return buf;
}

LatencyStats summarize(std::vector<double> millis, std::size_t failures) {
    LatencyStats s;
    s.count = millis.size();
    s.failures = failures;
    if (millis.empty()) return s;
    std::sort(millis.begin(), millis.end());
    auto at = [&](double q) {
        // Nearest rank: the smallest value with at least q of the samples at or below it.
        std::size_t rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(millis.size())));
        return millis[std::min(millis.size() - 1, rank == 0 ? 0 : rank - 1)];
    };
    s.p50 = at(0.50);
    s.p99 = at(0.99);
    s.max = millis.back();
    return s;
}

Receiver::Receiver(itest::Daemon &d) {
    auto before = d.events().size();
    auto hs = ws_.connect("127.0.0.1", d.wsPort, "/connect");
    if (!hs.ok()) throw std::runtime_error("receiver: cannot connect: " + hs.error);
    // Ours is the newest open event.
    itest::eventually([&] { return d.events().size() > before; });
    auto events = d.events();
    for (auto it = events.rbegin(); it != events.rend() && id_.empty(); ++it)
        if ((*it)["action"] == "open") id_ = (*it)["connection"];
    if (id_.empty()) throw std::runtime_error("receiver: no open event");
    thread_ = std::thread([this] {
        while (!stop_.load()) {
            auto r = ws_.receive(100ms);
            if (r.isText()) {
                std::lock_guard lock(mu_);
                messages_.push_back(r.data);
            } else if (r.kind != wsgw::test::Received::Kind::Timeout) {
                break; // closed or an error: nothing more will come
            }
        }
    });
}

Receiver::~Receiver() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
}

std::vector<std::string> Receiver::messages() const {
    std::lock_guard lock(mu_);
    return messages_;
}

Prober::Prober(std::uint16_t controlPort, Receiver *receiver) : port_(controlPort), receiver_(receiver) {
    health_ = std::thread([this] { probeHealth(); });
    if (receiver_) send_ = std::thread([this] { probeSend(); });
}

Prober::~Prober() { stop(); }

void Prober::stop() {
    stop_.store(true);
    if (health_.joinable()) health_.join();
    if (send_.joinable()) send_.join();
}

void Prober::probeHealth() {
    for (unsigned n = 0; !stop_.load(); ++n) {
        const char *target = n % 2 ? "/readyz" : "/healthz";
        auto t0 = Clock::now();
        httplib::Client c("127.0.0.1", port_);
        c.set_connection_timeout(3, 0);
        c.set_read_timeout(3, 0);
        c.set_write_timeout(3, 0);
        auto r = c.Get(target);
        double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        bool ok = r && r->status == 200;
        {
            std::lock_guard lock(mu_);
            healthMillis_.push_back(ms);
            if (!ok) {
                ++healthFailures_;
                if (healthErrors_.size() < 3)
                    healthErrors_.push_back(std::string(target) + ": " +
                                            (r ? "status " + std::to_string(r->status) : httplib::to_string(r.error())));
            }
        }
        std::this_thread::sleep_for(20ms);
    }
}

void Prober::probeSend() {
    for (unsigned n = 0; !stop_.load(); ++n) {
        std::string body = "probe-" + std::to_string(n);
        auto t0 = Clock::now();
        httplib::Client c("127.0.0.1", port_);
        c.set_connection_timeout(10, 0);
        c.set_read_timeout(10, 0);
        c.set_write_timeout(10, 0);
        auto r = c.Post(("/send?id=" + receiver_->id()).c_str(), body, "text/plain");
        double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        {
            std::lock_guard lock(mu_);
            ++sendsTried_;
            sendMillis_.push_back(ms);
            if (r && r->status == 200 && r->body == "1")
                answered_.push_back(body);
            else if (sendErrors_.size() < 3)
                sendErrors_.push_back(r ? "status " + std::to_string(r->status) + " " + r->body
                                        : httplib::to_string(r.error()));
        }
        std::this_thread::sleep_for(100ms);
    }
}

LatencyStats Prober::health() const {
    std::lock_guard lock(mu_);
    return summarize(healthMillis_, healthFailures_);
}

std::size_t Prober::sendsAnswered() const {
    std::lock_guard lock(mu_);
    return answered_.size();
}

std::size_t Prober::sendsTried() const {
    std::lock_guard lock(mu_);
    return sendsTried_;
}

bool Prober::deliveredInOrder(Millis limit) const {
    if (!receiver_) return true;
    std::vector<std::string> want;
    {
        std::lock_guard lock(mu_);
        want = answered_;
    }
    return itest::eventually(
        [&] {
            // The answered sends, in order, as a subsequence of what arrived (an unanswered one
            // may have arrived between them).
            auto got = receiver_->messages();
            std::size_t i = 0;
            for (const std::string &m : got)
                if (i < want.size() && m == want[i]) ++i;
            return i == want.size();
        },
        limit);
}

std::string Prober::report() const {
    std::string out = "/healthz+/readyz " + health().summary();
    std::lock_guard lock(mu_);
    for (const std::string &e : healthErrors_) out += " [" + e + "]";
    if (receiver_) {
        LatencyStats s = summarize(sendMillis_, sendsTried_ - answered_.size());
        out += "; /send " + std::to_string(answered_.size()) + "/" + std::to_string(sendsTried_) +
               " answered 1 (p50 " + std::to_string(static_cast<int>(s.p50)) + " ms, max " +
               std::to_string(static_cast<int>(s.max)) + " ms)";
        for (const std::string &e : sendErrors_) out += " [" + e + "]";
    }
    return out;
}

std::size_t establishedOn(std::uint16_t port, int pid) {
    // The process's sockets, by inode: readlink(/proc/PID/fd/N) says "socket:[INODE]".
    std::set<std::string> inodes;
    std::error_code ec;
    for (const auto &entry : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
        std::string target = std::filesystem::read_symlink(entry.path(), ec).string();
        if (!ec && target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
    }
    std::set<std::string> established; // by inode: a table read while it changes may repeat a line
    for (const char *file : {"/proc/net/tcp", "/proc/net/tcp6"}) {
        std::ifstream in(file);
        std::string line;
        std::getline(in, line); // header
        while (std::getline(in, line)) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...,
            // addresses as HEX_IP:HEX_PORT, state 01 = ESTABLISHED.
            std::istringstream f(line);
            std::string sl, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
            f >> sl >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode;
            auto colon = local.rfind(':');
            if (colon == std::string::npos || state != "01" || !inodes.count(inode)) continue;
            if (std::strtoul(local.c_str() + colon + 1, nullptr, 16) == port) established.insert(inode);
        }
    }
    return established.size();
}

HalfRequest::HalfRequest(std::uint16_t port, const std::string &bytes) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 ||
        ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(bytes.size())) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }
}

HalfRequest::~HalfRequest() {
    if (fd_ >= 0) ::close(fd_);
}

} // namespace wsgw::hostile
