#include "work_queue.h"

#include <pthread.h>

#include <algorithm>

namespace wsgw::daemon {

WorkQueue::WorkQueue(std::string name, unsigned threads, std::size_t capacity) : capacity_(capacity) {
    name.resize(std::min<std::size_t>(name.size(), 15)); // the kernel's limit for a thread's name
    for (unsigned i = 0; i < std::max(threads, 1u); ++i) {
        threads_.emplace_back([this] { run(); });
        pthread_setname_np(threads_.back().native_handle(), name.c_str());
    }
}

WorkQueue::~WorkQueue() { stop(); }

bool WorkQueue::tryPush(std::function<void()> job) {
    {
        std::lock_guard lock(mu_);
        if (stopped_ || jobs_.size() >= capacity_) return false;
        jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
    return true;
}

void WorkQueue::stop() {
    std::deque<std::function<void()>> dropped;
    {
        std::lock_guard lock(mu_);
        stopped_ = true;
        dropped.swap(jobs_);
    }
    cv_.notify_all();
    for (auto &t : threads_)
        if (t.joinable()) t.join();
    // `dropped` is destroyed here, outside the lock: a job's captures may be large.
}

std::size_t WorkQueue::waiting() const {
    std::lock_guard lock(mu_);
    return jobs_.size();
}

void WorkQueue::run() {
    for (;;) {
        std::function<void()> job;
        {
            std::unique_lock lock(mu_);
            cv_.wait(lock, [this] { return stopped_ || !jobs_.empty(); });
            if (stopped_) return;
            job = std::move(jobs_.front());
            jobs_.pop_front();
        }
        job();
    }
}

} // namespace wsgw::daemon
