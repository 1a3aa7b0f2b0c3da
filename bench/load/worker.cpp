// A worker's thread: its epoll loop, the tasks the driver runs on it, and closing connections.

#include "worker.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace wsgw::bench {

Worker::Worker(Shared &shared, int index, std::size_t capacity, Url url)
    : s_(shared), index_(index), url_(std::move(url)) {
    conns_.reserve(capacity);
    readBuf_.resize(kReadBuffer);
    inflateBuf_.resize(64 * 1024);
    local_.resize(kRing);
    groupMembers_.assign(std::size_t(shared.opt.groups), 0);
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    wake_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;
    epoll_ctl(ep_, EPOLL_CTL_ADD, wake_, &ev);
}

Worker::~Worker() {
    for (Conn &c : conns_) closeConn(c, State::Closed);
    close(ep_);
    close(wake_);
}

void Worker::call(std::function<void()> fn) {
    std::unique_lock lock(mu_);
    task_ = std::move(fn);
    taskDone_ = false;
    std::uint64_t one = 1;
    (void)!write(wake_, &one, sizeof one);
    if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return taskDone_; })) {
        std::fprintf(stderr, "wsgw-bench: worker %d did not answer for 60 s; giving up\n", index_);
        std::_Exit(2);
    }
}

void Worker::addConnections(std::uint32_t from, std::uint32_t to, int threads) {
    for (std::uint32_t i = from; i < to; ++i) {
        if (int(i % std::uint32_t(threads)) != index_) continue;
        Conn &c = conns_.emplace_back();
        c.index = i;
        c.group = i % std::uint32_t(s_.opt.groups);
        pending_.push_back(&c);
    }
}

void Worker::closeFrom(std::uint32_t index) {
    for (Conn &c : conns_)
        if (c.index >= index && c.state != State::Closed && c.state != State::Failed) closeConn(c, State::Closed);
}

void Worker::prepare() {
    open_.clear();
    std::fill(groupMembers_.begin(), groupMembers_.end(), 0);
    for (Conn &c : conns_) {
        if (c.state != State::Open) continue;
        open_.push_back(&c);
        ++groupMembers_[c.group];
    }
    allMembers_ = std::uint32_t(open_.size());
    for (auto &l : local_) l = Local{};
}

void Worker::setSending(bool on, double rate, int batch) {
    sending_ = on;
    if (on) inbound_ = true;
    sendRate_ = rate;
    sendBatch_ = std::max(1, batch);
    tokens_ = 0;
    lastTickNs_ = monoNs();
}

void Worker::takeLatency(Histogram *out, bool reset) {
    out->merge(latency_);
    if (reset) latency_.clear();
}

void Worker::verify(int streams, std::uint64_t *missing, std::uint64_t *extra, std::string *first) {
    for (Conn *c : open_) {
        for (int k = 0; k < streams; ++k) {
            auto check = [&](std::uint32_t got, std::uint32_t want, const char *what) {
                if (got == want) return;
                if (got < want)
                    *missing += want - got;
                else
                    *extra += got - want;
                if (first->empty())
                    *first = "connection " + std::to_string(c->index) + " stream " + std::to_string(k) + " " + what +
                             ": received up to seq " + std::to_string(got) + ", published " + std::to_string(want);
            };
            check(c->seqAll[k], s_.publishedAll[std::size_t(k)], "broadcasts");
            check(c->seqGroup[k], s_.publishedGroup[std::size_t(k) * std::size_t(s_.opt.groups) + c->group],
                  ("group " + std::to_string(c->group)).c_str());
        }
        if (c->state != State::Open && first->empty())
            *first = "connection " + std::to_string(c->index) + " was closed during the run";
    }
}

void Worker::loop() {
    epoll_event events[512];
    std::int64_t lastSweep = monoNs();
    while (!gQuit.load(std::memory_order_relaxed)) {
        int timeout = 50;
        if (sending_) timeout = idleRound_ ? 1 : 0;
        else if (!pending_.empty() || !retry_.empty() || connecting_ > 0) timeout = 5;
        int n = epoll_wait(ep_, events, 512, timeout);
        now_ = monoNs();
        for (int i = 0; i < n; ++i) {
            if (!events[i].data.ptr) {
                std::uint64_t v;
                (void)!read(wake_, &v, sizeof v);
                runTask();
                continue;
            }
            Conn &c = *static_cast<Conn *>(events[i].data.ptr);
            onEvent(c, events[i].events);
        }
        startConnects();
        if (sending_) sendRound();
        if (now_ - lastSweep > 100'000'000) {
            lastSweep = now_;
            sweepTimeouts();
        }
        framesA.store(stats.frames, std::memory_order_relaxed);
        sentA.store(stats.sent, std::memory_order_relaxed);
        errorsA.store(stats.corrupt + stats.outOfOrder + stats.misrouted + stats.serverCloses + stats.protocolErrors,
                      std::memory_order_relaxed);
    }
}

void Worker::runTask() {
    std::function<void()> fn;
    {
        std::lock_guard lock(mu_);
        fn = std::move(task_);
        task_ = nullptr;
    }
    if (!fn) return;
    fn();
    {
        std::lock_guard lock(mu_);
        taskDone_ = true;
    }
    cv_.notify_all();
}

void Worker::error(const std::string &what) {
    if (firstError_.empty()) firstError_ = what;
}

void Worker::closeConn(Conn &c, State to) {
    if (c.fd >= 0) {
        epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
        close(c.fd);
        c.fd = -1;
    }
    if (c.inflater) {
        inflateEnd(c.inflater);
        delete c.inflater;
        c.inflater = nullptr;
    }
    c.rx.clear();
    c.state = to;
}

} // namespace wsgw::bench
