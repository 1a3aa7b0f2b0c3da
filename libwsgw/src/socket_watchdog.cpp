#include "socket_watchdog.h"

#include <pthread.h>
#include <sys/socket.h>

namespace wsgw {

SocketWatchdog::~SocketWatchdog() {
    {
        std::lock_guard lock(mu_);
        quit_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void SocketWatchdog::arm(int fd, Clock::time_point deadline) {
    std::lock_guard lock(mu_);
    fd_ = fd;
    deadline_ = deadline;
    fired_ = false;
    if (aborted_ && fd_ >= 0) {
        ::shutdown(fd_, SHUT_RDWR);
        fired_ = true;
        return;
    }
    if (!thread_.joinable()) {
        thread_ = std::thread([this] {
            pthread_setname_np(pthread_self(), "wsgw-watchdog");
            run();
        });
    }
    wake_.notify_all();
}

bool SocketWatchdog::disarm() {
    std::lock_guard lock(mu_);
    fd_ = -1;
    bool fired = fired_;
    fired_ = false;
    return fired;
}

void SocketWatchdog::abort() {
    std::lock_guard lock(mu_);
    aborted_ = true;
    if (fd_ >= 0 && !fired_) {
        ::shutdown(fd_, SHUT_RDWR);
        fired_ = true;
    }
}

void SocketWatchdog::run() {
    std::unique_lock lock(mu_);
    while (!quit_) {
        if (fd_ < 0 || fired_) {
            wake_.wait(lock);
            continue;
        }
        if (Clock::now() < deadline_) {
            // Woken early by arm() (a new deadline), disarm-then-arm, or quit: look again.
            wake_.wait_until(lock, deadline_);
            continue;
        }
        // Under the lock, so disarm() cannot return (and the fd cannot be closed) meanwhile.
        ::shutdown(fd_, SHUT_RDWR);
        fired_ = true;
    }
}

} // namespace wsgw
