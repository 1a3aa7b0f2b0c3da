#include "systemd_notify.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <ctime>

#ifdef WSGW_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace wsgw::daemon {

namespace {

// A STATUS= value is one line: a newline would start another assignment.
std::string oneLine(std::string s) {
    std::replace(s.begin(), s.end(), '\n', ' ');
    return s;
}

} // namespace

SystemdNotifier::SystemdNotifier() {
#ifdef WSGW_HAVE_SYSTEMD
    const char *socket = std::getenv("NOTIFY_SOCKET");
    active_ = socket != nullptr && *socket != '\0';
    std::uint64_t usec = 0;
    if (active_ && sd_watchdog_enabled(0, &usec) > 0) watchdog_ = std::chrono::microseconds(usec);
#endif
}

std::chrono::milliseconds SystemdNotifier::tickInterval(std::chrono::milliseconds statusEvery) const noexcept {
    if (watchdog_.count() <= 0) return statusEvery;
    auto half = std::chrono::duration_cast<std::chrono::milliseconds>(watchdog_ / 2);
    return std::clamp(half, std::chrono::milliseconds(1), statusEvery);
}

void SystemdNotifier::ready(const std::string &status) { send("READY=1\nSTATUS=" + oneLine(status)); }

void SystemdNotifier::reloading(const std::string &status) {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    const long long usec = static_cast<long long>(now.tv_sec) * 1'000'000 + now.tv_nsec / 1000;
    send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec) + "\nSTATUS=" + oneLine(status));
}

void SystemdNotifier::stopping(const std::string &status) { send("STOPPING=1\nSTATUS=" + oneLine(status)); }

void SystemdNotifier::tick(const std::string &status, bool alive) {
    if (watchdog_.count() > 0 && alive)
        send("WATCHDOG=1\nSTATUS=" + oneLine(status));
    else
        send("STATUS=" + oneLine(status) + (alive ? "" : "; a shard has not answered since the last check"));
}

void SystemdNotifier::send(const std::string &state) {
    if (!active_) return;
#ifdef WSGW_HAVE_SYSTEMD
    int rc = sd_notify(0, state.c_str());
    if (rc < 0 && !warned_) {
        warned_ = true;
        spdlog::warn("cannot notify systemd through NOTIFY_SOCKET={}: {} (wsgwd goes on; systemd may time out "
                     "waiting for READY=1)",
                     std::getenv("NOTIFY_SOCKET"), std::strerror(-rc));
    }
#else
    (void)state;
#endif
}

} // namespace wsgw::daemon
