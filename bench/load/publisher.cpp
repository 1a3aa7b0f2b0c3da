// The publisher's thread: opening its connections, publishing (paced by the window or, for the
// latency scenario, by the clock), building each server's publish request, reading the answers
// (a 503 is sent again, in order) and retiring publishes once every recipient has them.

#include "publisher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace wsgw::bench {

Publisher::Publisher(Shared &s, PublishKind kind, HostPort addr) : s_(s), kind_(kind), addr_(std::move(addr)) {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    s_.publisherWake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = ~0ull;
    epoll_ctl(ep_, EPOLL_CTL_ADD, s_.publisherWake, &ev);
    s_.publishedAll.assign(kMaxStreams, 0);
    s_.publishedGroup.assign(std::size_t(kMaxStreams) * std::size_t(s_.opt.groups), 0);
    payload_.resize(std::size_t(s_.opt.size));
    rng_.seed(12345);
}

Publisher::~Publisher() {
    stopThread();
    for (Stream &st : streams_)
        if (st.fd >= 0) close(st.fd);
    close(ep_);
    close(s_.publisherWake);
}

bool Publisher::open(int count, std::string *error) {
    streams_.resize(std::size_t(count));
    for (std::size_t k = 0; k < streams_.size(); ++k) {
        if (!reconnect(streams_[k], k, error)) return false;
    }
    return true;
}

void Publisher::run(Mode mode, int window, int streams, std::int64_t intervalNs, Targets targets) {
    std::lock_guard lock(mu_);
    targets_ = std::move(targets);
    groupsWithMembers_.clear();
    for (std::size_t g = 0; g < targets_.group.size(); ++g)
        if (targets_.group[g] > 0) groupsWithMembers_.push_back(std::uint32_t(g));
    window_ = window;
    activeStreams_ = std::min<int>(streams, int(streams_.size()));
    intervalNs_ = intervalNs;
    nextDueNs_ = monoNs();
    // Each scenario is judged on its own: what failed before stays in that scenario's report.
    published_ = completed_ = timedOut_ = httpErrors_ = countMismatches_ = skipped_ = 0;
    firstError_.clear();
    lastRecipients_.clear();
    loaded_.clear();
    mode_.store(mode);
}

bool Publisher::idle(int timeoutS) {
    mode_.store(Mode::Idle);
    std::int64_t deadline = monoNs() + std::int64_t(timeoutS) * 1'000'000'000;
    while (monoNs() < deadline) {
        {
            std::lock_guard lock(mu_);
            if (active_ == 0 && busyStreams() == 0) return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return false;
}

Publisher::Report Publisher::report() {
    std::lock_guard lock(mu_);
    Report r;
    r.published = published_;
    r.completed = completed_;
    r.timedOut = timedOut_;
    r.httpErrors = httpErrors_;
    r.countMismatches = countMismatches_;
    r.skipped = skipped_;
    r.lastRecipient = lastRecipients_;
    r.loaded = loaded_;
    r.firstError = firstError_;
    return r;
}

void Publisher::resetLoaded() {
    std::lock_guard lock(mu_);
    loaded_.clear();
}

std::uint64_t Publisher::publishedCount() {
    std::lock_guard lock(mu_);
    return published_;
}

int Publisher::busyStreams() const {
    int n = 0;
    for (const Stream &st : streams_) n += st.busy;
    return n;
}

bool Publisher::reconnect(Stream &st, std::size_t k, std::string *error) {
    if (st.fd >= 0) {
        epoll_ctl(ep_, EPOLL_CTL_DEL, st.fd, nullptr);
        close(st.fd);
    }
    st.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(addr_.port);
    inet_pton(AF_INET, addr_.host.c_str(), &sa.sin_addr);
    if (st.fd < 0 || connect(st.fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) != 0) {
        if (error)
            *error = "publisher: connect " + addr_.host + ":" + std::to_string(addr_.port) + ": " +
                     std::strerror(errno);
        if (st.fd >= 0) close(st.fd);
        st.fd = -1;
        return false;
    }
    tuneSocket(st.fd);
    st.in.clear();
    st.in.reserve(4096);
    st.out.reserve(1024 + std::size_t(s_.opt.size) * 2);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = k;
    epoll_ctl(ep_, EPOLL_CTL_ADD, st.fd, &ev);
    return true;
}

void Publisher::fail(const std::string &what) {
    if (firstError_.empty()) firstError_ = what;
}

void Publisher::loop() {
    epoll_event events[64];
    while (!quit_ && !gQuit.load(std::memory_order_relaxed)) {
        Mode mode = mode_.load();
        int timeout = 20;
        if (mode == Mode::Paced) {
            std::int64_t wait = nextDueNs_ - monoNs();
            timeout = int(std::clamp<std::int64_t>(wait / 1'000'000, 0, 20));
        } else if (mode != Mode::Idle) {
            timeout = 2;
        }
        int n = epoll_wait(ep_, events, 64, timeout);
        std::lock_guard lock(mu_);
        for (int i = 0; i < n; ++i) {
            if (events[i].data.u64 == ~0ull) { // a worker saw a publish complete
                std::uint64_t v;
                (void)!read(s_.publisherWake, &v, sizeof v);
                continue;
            }
            std::size_t k = events[i].data.u64;
            if (events[i].events & EPOLLOUT) flush(streams_[k], k);
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) readResponses(streams_[k], k);
        }
        retire(monoNs());
        publishMore(mode_.load());
    }
}

void Publisher::retire(std::int64_t now) {
    if (active_ == 0) return;
    const std::int64_t limit = std::int64_t(s_.opt.timeoutS) * 1'000'000'000;
    for (std::size_t i = 0; i < activeList_.size();) {
        Slot &slot = s_.slots[activeList_[i] % kRing];
        std::uint32_t need = s_.threadsFor(slot.target);
        bool done = slot.threadsDone.load(std::memory_order_acquire) >= need;
        bool late = !done && now - slot.publishNs > limit;
        if (!done && !late) {
            ++i;
            continue;
        }
        if (done) {
            std::int64_t lat = need == 0 ? 0 : slot.lastRecvNs.load(std::memory_order_relaxed) - slot.publishNs;
            ++completed_;
            if (mode_.load() == Mode::Paced)
                lastRecipients_.push_back(lat);
            else
                loaded_.record(lat);
        } else {
            ++timedOut_;
            fail("publish " + std::to_string(activeList_[i]) + " was not delivered to every recipient within " +
                 std::to_string(s_.opt.timeoutS) + " s");
        }
        slot.active = false;
        slot.pid.store(~0ull, std::memory_order_release);
        activeList_[i] = activeList_.back();
        activeList_.pop_back();
        --active_;
    }
}

void Publisher::publishMore(Mode mode) {
    if (mode == Mode::Idle || !firstError_.empty()) return;
    std::int64_t now = monoNs();
    if (mode == Mode::Paced) {
        if (now < nextDueNs_) return;
        Stream &st = streams_[0];
        if (st.busy || active_ >= window_) {
            // Still busy with earlier broadcasts: this one is skipped, and the server is
            // reported as not keeping up (a backlog would only grow).
            if (now - nextDueNs_ >= intervalNs_) {
                ++skipped_;
                nextDueNs_ += intervalNs_;
            }
            return;
        }
        publish(st, 0, kAllGroup, now);
        nextDueNs_ += intervalNs_;
        if (nextDueNs_ < now) nextDueNs_ = now + intervalNs_;
        return;
    }
    for (int k = 0; k < activeStreams_ && active_ < window_; ++k) {
        Stream &st = streams_[std::size_t(k)];
        if (st.busy) continue;
        std::uint32_t target = kAllGroup;
        if (mode == Mode::Groups) {
            if (groupsWithMembers_.empty()) return;
            target = groupsWithMembers_[rng_() % groupsWithMembers_.size()];
        }
        publish(st, std::size_t(k), target, monoNs());
    }
}

void Publisher::publish(Stream &st, std::size_t k, std::uint32_t target, std::int64_t now) {
    std::uint64_t pid = nextPid_++;
    Slot &slot = s_.slots[pid % kRing];
    if (slot.active) { // a publish kRing ago never completed: give up on it now
        ++timedOut_;
        fail("publish " + std::to_string(slot.pid.load()) + " was never delivered to everyone");
        activeList_.erase(std::find(activeList_.begin(), activeList_.end(), slot.pid.load()));
        --active_;
    }
    slot.threadsDone.store(0, std::memory_order_relaxed);
    slot.lastRecvNs.store(0, std::memory_order_relaxed);
    slot.publishNs = now;
    slot.target = target;
    slot.active = true;
    slot.pid.store(pid, std::memory_order_release);
    activeList_.push_back(pid);
    ++active_;

    PayloadFields f;
    f.stream = std::uint32_t(k);
    f.group = target;
    std::uint32_t &seq = target == kAllGroup ? s_.publishedAll[k]
                                             : s_.publishedGroup[k * std::size_t(s_.opt.groups) + target];
    f.seq = seq++;
    f.pid = pid;
    f.ts = now;
    writePayload(payload_.data(), payload_.size(), f);
    buildRequest(st, target);
    st.pid = pid;
    st.target = target;
    st.retries = 0;
    st.busy = true;
    st.sentNs = now;
    ++published_;
    flush(st, k);
}

void Publisher::buildRequest(Stream &st, std::uint32_t target) {
    char path[64];
    std::string_view body(payload_.data(), payload_.size());
    std::string &o = st.out;
    o.clear();
    st.outAt = 0;
    switch (kind_) {
    case PublishKind::Wsgw:
        if (target == kAllGroup)
            std::snprintf(path, sizeof path, "/send?all=1");
        else
            std::snprintf(path, sizeof path, "/send?group=g%u", target);
        break;
    case PublishKind::Nchan:
        if (target == kAllGroup)
            std::snprintf(path, sizeof path, "/pub/all");
        else
            std::snprintf(path, sizeof path, "/pub/g%u", target);
        break;
    case PublishKind::Pushpin:
        std::snprintf(path, sizeof path, "/publish/");
        break;
    }
    char channel[16];
    if (target == kAllGroup)
        std::snprintf(channel, sizeof channel, "all");
    else
        std::snprintf(channel, sizeof channel, "g%u", target);
    std::size_t length = body.size();
    static constexpr std::string_view kPre = R"({"items":[{"channel":")";
    static constexpr std::string_view kMid = R"(","formats":{"ws-message":{"content":")";
    static constexpr std::string_view kPost = R"("}}}]})";
    if (kind_ == PublishKind::Pushpin) length += kPre.size() + std::strlen(channel) + kMid.size() + kPost.size();
    char head[256];
    int n = std::snprintf(head, sizeof head,
                          "POST %s HTTP/1.1\r\nHost: %s:%u\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                          path, addr_.host.c_str(), unsigned(addr_.port),
                          kind_ == PublishKind::Pushpin ? "application/json" : "text/plain", length);
    o.append(head, std::size_t(n));
    if (kind_ == PublishKind::Pushpin) {
        o.append(kPre);
        o.append(channel);
        o.append(kMid);
        o.append(body);
        o.append(kPost);
    } else {
        o.append(body);
    }
}

void Publisher::flush(Stream &st, std::size_t k) {
    while (st.outAt < st.out.size()) {
        ssize_t w = send(st.fd, st.out.data() + st.outAt, st.out.size() - st.outAt, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            st.outAt += std::size_t(w);
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            epoll_event ev{};
            ev.events = EPOLLIN | EPOLLOUT;
            ev.data.u64 = k;
            epoll_ctl(ep_, EPOLL_CTL_MOD, st.fd, &ev);
            return;
        }
        fail(std::string("publisher: send: ") + std::strerror(errno));
        return;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = k;
    epoll_ctl(ep_, EPOLL_CTL_MOD, st.fd, &ev);
}

void Publisher::readResponses(Stream &st, std::size_t k) {
    char buf[8192];
    bool eof = false;
    for (;;) {
        ssize_t n = recv(st.fd, buf, sizeof buf, 0);
        if (n > 0) {
            st.in.append(buf, std::size_t(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) eof = true;
        break;
    }
    for (;;) {
        std::size_t end = st.in.find("\r\n\r\n");
        if (end == std::string::npos) break;
        std::string_view head(st.in.data(), end + 2);
        std::size_t bodyLen = 0;
        bool chunked = false;
        if (auto cl = headerValue(head, "Content-Length")) {
            bodyLen = std::strtoul(std::string(*cl).c_str(), nullptr, 10);
        } else if (auto te = headerValue(head, "Transfer-Encoding"); te && te->find("chunked") != std::string_view::npos) {
            chunked = true;
        }
        std::size_t total;
        if (chunked) {
            std::size_t last = st.in.find("\r\n0\r\n\r\n", end);
            if (st.in.compare(end + 4, 5, "0\r\n\r\n") == 0)
                total = end + 9;
            else if (last != std::string::npos)
                total = last + 7;
            else
                break;
        } else {
            total = end + 4 + bodyLen;
            if (st.in.size() < total) break;
        }
        int status = head.size() > 12 ? std::atoi(std::string(head.substr(9, 3)).c_str()) : 0;
        std::string body = chunked ? std::string() : st.in.substr(end + 4, bodyLen);
        bool closeAfter = false;
        if (auto conn = headerValue(head, "Connection"))
            closeAfter = conn->find("close") != std::string_view::npos;
        st.in.erase(0, total);
        onResponse(st, k, status, body);
        if (closeAfter) {
            eof = false;
            std::string error;
            if (!reconnect(st, k, &error)) fail(error);
            return;
        }
    }
    if (eof) {
        if (st.busy) fail("publisher: the server closed a connection with a request in flight");
        std::string error;
        if (!reconnect(st, k, &error)) fail(error);
    }
}

void Publisher::onResponse(Stream &st, std::size_t k, int status, const std::string &body) {
    if (!st.busy) {
        fail("publisher: an answer nobody asked for");
        return;
    }
    if (status < 200 || status > 299) {
        ++httpErrors_;
        if (status == 503 && st.retries < 50) { // busy: the same request again, in order
            ++st.retries;
            st.outAt = 0;
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
            flush(st, k);
            return;
        }
        fail("publisher: HTTP " + std::to_string(status) + ": " + body.substr(0, 200));
        st.busy = false;
        return;
    }
    if (kind_ == PublishKind::Wsgw) {
        std::uint64_t want = st.target == kAllGroup ? targets_.all : targets_.group[st.target];
        std::uint64_t got = std::strtoull(body.c_str(), nullptr, 10);
        if (got != want) {
            ++countMismatches_;
            fail("publisher: the server queued a message for " + std::to_string(got) + " connections, expected " +
                 std::to_string(want));
        }
    }
    st.busy = false;
}

} // namespace wsgw::bench
