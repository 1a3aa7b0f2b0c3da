#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace wsgw::daemon {

/// A bounded queue of jobs and the threads that run them, in order of arrival. A full queue
/// refuses at once rather than making the caller wait: the control server's loop must never
/// block, and answers 503 instead.
///
/// Thread-safe.
class WorkQueue {
public:
    /// Starts `threads` threads (named `name` for top and debuggers) for at most `capacity`
    /// jobs waiting (jobs being run do not count).
    WorkQueue(std::string name, unsigned threads, std::size_t capacity);
    ~WorkQueue(); ///< stop()s
    WorkQueue(const WorkQueue &) = delete;
    WorkQueue &operator=(const WorkQueue &) = delete;

    /// Queues `job`; false (and `job` is dropped) when the queue is full or stopped.
    [[nodiscard]] bool tryPush(std::function<void()> job);
    /// Drops the jobs that have not started, lets the running ones finish and joins the
    /// threads: returns as soon as the running jobs return. Idempotent.
    void stop();
    /// Jobs waiting now.
    std::size_t waiting() const;

private:
    void run();

    std::size_t capacity_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> jobs_;
    bool stopped_ = false;
    std::vector<std::thread> threads_;
};

} // namespace wsgw::daemon
