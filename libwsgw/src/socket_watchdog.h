#pragma once

// A deadline for blocking socket calls made inside a library that offers none.
//
// Why: rabbitmq-c 0.11 (Debian 12's librabbitmq4) writes without a deadline. amqp_basic_publish,
// the request half of every RPC (declarations, confirm.select, connection.close), heartbeats and
// close-ok all wait with poll(POLLOUT, infinite) for room in the socket's send buffer, and
// amqp_basic_publish may also wait with poll(POLLIN, infinite) for the broker to say anything
// (rabbitmq-c issues #519 and #780; the second is fixed in 0.14, the first nowhere). A broker
// that stops reading (RabbitMQ does so on a memory or disk alarm: connection.blocked), a frozen
// broker or a dead network then holds the calling thread for ever, and the amqp_set_*_timeout
// calls do not help: they bound only the waits for replies. Non-blocking sockets and SO_SNDTIMEO
// do not help either: rabbitmq-c's own poll() is the call that waits, and it retries EINTR.
//
// What does help: shutdown(2) on the socket from another thread wakes every poll() on it at once
// (POLLHUP) and makes the next send fail (EPIPE) and the next recv see end of file, so the
// library call returns an error. SocketWatchdog does that when a call outlives its deadline;
// the connection is then broken and must be dropped, as after any timeout. This file can go when
// rabbitmq-c bounds its writes.
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace wsgw {

/// Shuts a socket down (shutdown(2), both directions) if the call it guards outlives its
/// deadline. One socket and one deadline at a time; its own thread starts with the first arm().
///
/// Thread-safe. arm() and disarm() are meant for the thread that makes the guarded calls; abort()
/// may come from any thread.
class SocketWatchdog {
public:
    using Clock = std::chrono::steady_clock;

    SocketWatchdog() = default;
    ~SocketWatchdog(); ///< stops the thread; does not touch an armed socket
    SocketWatchdog(const SocketWatchdog &) = delete;
    SocketWatchdog &operator=(const SocketWatchdog &) = delete;

    /// From now until disarm(): shut `fd` down once `deadline` has passed (at once if it has
    /// already, or if abort() was called). `fd` must stay open until disarm() returns.
    void arm(int fd, Clock::time_point deadline);
    /// Ends the guard. Returns true if the watchdog shut the socket down meanwhile (the guarded
    /// call then failed because of it). After it returns, the socket is not touched again.
    bool disarm();
    /// Shuts the armed socket down now, and every socket armed later at once, for good: for a
    /// sink that is told to give up (EventBus stopping). Never blocks for long.
    void abort();

private:
    void run();

    std::mutex mu_;
    std::condition_variable wake_;
    int fd_ = -1; // armed socket, -1 when disarmed
    Clock::time_point deadline_;
    bool fired_ = false;   // shut fd_ down during the current guard
    bool aborted_ = false; // abort() was called
    bool quit_ = false;
    std::thread thread_;
};

/// arm() for the lifetime of a scope, disarm() at its end.
class WatchdogGuard {
public:
    WatchdogGuard(SocketWatchdog &dog, int fd, SocketWatchdog::Clock::time_point deadline) : dog_(dog) {
        dog_.arm(fd, deadline);
    }
    ~WatchdogGuard() {
        if (!done_) dog_.disarm();
    }
    WatchdogGuard(const WatchdogGuard &) = delete;
    WatchdogGuard &operator=(const WatchdogGuard &) = delete;
    /// Ends the guard early; true if the watchdog shut the socket down (see disarm()).
    bool end() {
        done_ = true;
        return dog_.disarm();
    }

private:
    SocketWatchdog &dog_;
    bool done_ = false;
};

} // namespace wsgw
