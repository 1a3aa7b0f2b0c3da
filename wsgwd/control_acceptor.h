#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace wsgw::daemon {

/// The control server's listening socket. Accepts without blocking. When the process is out of
/// file descriptors (the WebSocket side took them all, say), it accepts on a spare descriptor
/// kept for that, so that an operator's health check or /metrics still gets in; otherwise the
/// connection would wait in the queue and a level-triggered loop wake for ever. Logs that at
/// most every 10 s.
///
/// Thread-bound (to the server's loop); open() and close() may come from the starting and
/// stopping thread while the loop does not run.
class ControlAcceptor {
public:
    ControlAcceptor() = default;
    ~ControlAcceptor(); ///< close()s
    ControlAcceptor(const ControlAcceptor &) = delete;
    ControlAcceptor &operator=(const ControlAcceptor &) = delete;

    /// Listens on `host` (an IP literal; "" is 0.0.0.0; brackets allowed) and `port` (0: a free
    /// one), without SO_REUSEPORT, so a second process cannot share the port; backlog 4096.
    /// false with "cannot listen on HOST:PORT for the control API: reason".
    bool open(std::string host, std::uint16_t port, std::string *error);
    void close();
    int fd() const noexcept { return fd_; }
    std::uint16_t port() const noexcept { return port_; }

    struct Accepted {
        int fd = -1;           ///< -1: nothing to accept now (or, with `exhausted`, no descriptor)
        bool spare = false;     ///< on the spare descriptor: replenish() once this connection is closed
        bool exhausted = false; ///< out of descriptors and the spare in use: free one, or wait
    };
    /// The next waiting connection, non-blocking and close-on-exec.
    Accepted next();
    /// Takes a spare descriptor again (after the connection on it closed).
    void replenish();

private:
    int fd_ = -1;
    int spare_ = -1;
    std::uint16_t port_ = 0;
    std::chrono::steady_clock::time_point lastWarning_;
};

} // namespace wsgw::daemon
