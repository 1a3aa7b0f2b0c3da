#pragma once

// wsgwd under systemd (Type=notify): readiness, status, reloads, stops and the watchdog, sent
// through libsystemd's sd_notify(3) to the socket in NOTIFY_SOCKET. Not started by systemd (no
// NOTIFY_SOCKET), or built without libsystemd (meson -Dsystemd=disabled), every call does nothing
// and wsgwd runs as before.

#include <chrono>
#include <string>

namespace wsgw::daemon {

/// Thread-compatible: the main thread owns it (it reads the environment once, at construction).
class SystemdNotifier {
public:
    /// Reads NOTIFY_SOCKET and the watchdog settings (WATCHDOG_USEC, WATCHDOG_PID, through
    /// sd_watchdog_enabled).
    SystemdNotifier();

    /// True when there is a systemd to tell (NOTIFY_SOCKET set, built with libsystemd).
    bool active() const noexcept { return active_; }
    /// WatchdogSec= of the unit, or zero when systemd does not watch this process.
    std::chrono::microseconds watchdog() const noexcept { return watchdog_; }
    /// How long the main thread may wait before the next tick(): half the watchdog interval,
    /// and at most `statusEvery`.
    std::chrono::milliseconds tickInterval(std::chrono::milliseconds statusEvery) const noexcept;

    /// READY=1 with a STATUS= line: the listeners are bound and the sinks running. Also ends a
    /// reload.
    void ready(const std::string &status);
    /// RELOADING=1 (with MONOTONIC_USEC=, which newer systemd wants) before a SIGHUP's reload;
    /// ready() tells systemd it is done.
    void reloading(const std::string &status);
    /// STOPPING=1: the drain has begun.
    void stopping(const std::string &status);
    /// A periodic STATUS= line, and WATCHDOG=1 when the watchdog is on and `alive` (every shard
    /// answered the previous tick's probe): a shard stuck in a loop stops the pings, and
    /// systemd restarts wsgwd after WatchdogSec=.
    void tick(const std::string &status, bool alive);

private:
    void send(const std::string &state);

    bool active_ = false;
    bool warned_ = false;
    std::chrono::microseconds watchdog_{0};
};

} // namespace wsgw::daemon
