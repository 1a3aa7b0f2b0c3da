// A shard's listening socket: accepts what is pending and hands each connection to lws.
//
// At the open-file limit accept() fails with EMFILE while the connection stays queued, so the
// listener stays readable: retrying would spin. Instead the server keeps descriptors in reserve
// (one per shard, in a pool the shards share): a shard gives one up for a moment to accept the
// client, answers 503 and closes (the client is refused at once, not left hanging), and the
// refused socket's descriptor becomes the reserve again (dup3 over it: no moment where another
// thread could take it). Between giving the reserve up and accept() another thread could take
// the descriptor: during an episode every shard's accept takes the pool's lock, so none of them
// can; anything else (a sink reconnecting, the control API) may, and then the pool is one short
// until a descriptor frees up (a shard whose accept succeeds, or whose paused listener resumes,
// tops it up). With no reserve at all the listener is paused for a moment. Service comes back by
// itself when descriptors free up. One warning per episode, and a line with the count when it
// ends: after two seconds without a failed accept, so that clients coming and going at the limit
// do not make an episode of each.

#include "ws_authorize.h"
#include "ws_shard.h"

#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace wsgw::daemon {

namespace {

// How long the listener rests when even the reserve descriptor cannot be had.
constexpr lws_usec_t kListenerPauseUs = 250 * LWS_US_PER_MS;

constexpr char kRefusal[] = "HTTP/1.1 503 Service Unavailable\r\n"
                            "Content-Type: text/plain\r\n"
                            "Retry-After: 1\r\n"
                            "Connection: close\r\n"
                            "Content-Length: 46\r\n"
                            "\r\n"
                            "server at its open-file limit; retry shortly\r\n";
static_assert(sizeof "server at its open-file limit; retry shortly\r\n" - 1 == 46);

unsigned long long openFileLimit() {
    rlimit rl{};
    return getrlimit(RLIMIT_NOFILE, &rl) == 0 ? static_cast<unsigned long long>(rl.rlim_cur) : 0;
}

// How long accepts must not fail for the limit before its episode counts as over.
constexpr std::int64_t kFdLimitQuietMs = 2000;

void enterFdLimit(ShardState &s) {
    s.server.lastFdLimitMs.store(nowMs(), std::memory_order_relaxed);
    if (!s.server.atFdLimit.exchange(true))
        spdlog::warn("accept: at the open-file limit ({} descriptors): new clients are refused with 503 until "
                     "descriptors free up (raise LimitNOFILE / ulimit -n, or lower max_connections)",
                     openFileLimit());
}

// /dev/null, opened once for the life of the process: reserves are duplicates of it, and dup3()
// of it over a refused socket closes the socket and makes its descriptor a reserve in one step.
int nullFd() {
    static const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    return fd;
}

int newReserve() {
    return nullFd() >= 0 ? fcntl(nullFd(), F_DUPFD_CLOEXEC, 0) : ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}

// Fills the pool up to one reserve per running shard, as far as descriptors allow. Holds
// server.reserveMu.
void topUpLocked(WsServer::Impl &server) {
    while (server.reserves.size() < server.reserveTarget) {
        const int fd = newReserve();
        if (fd < 0) break;
        server.reserves.push_back(fd);
    }
    server.reserveCount.store(server.reserves.size(), std::memory_order_relaxed);
}

void topUp(WsServer::Impl &server) {
    if (server.reserveCount.load(std::memory_order_relaxed) >= server.reserveTarget.load(std::memory_order_relaxed))
        return; // the common case, without the lock
    std::lock_guard lock(server.reserveMu);
    topUpLocked(server);
}

// Answers an accepted client 503 and closes it. Holds server.reserveMu: the descriptor goes back
// to the pool if it is short.
void refuseAcceptedLocked(ShardState &s, int fd) {
    // Read what the client sent already, so that closing does not reset the connection
    // before it reads the answer.
    char sink[4096];
    (void)::recv(fd, sink, sizeof sink, MSG_DONTWAIT);
    (void)::send(fd, kRefusal, sizeof kRefusal - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    WsServer::Impl &server = s.server;
    if (server.reserves.size() < server.reserveTarget && nullFd() >= 0 && dup3(nullFd(), fd, O_CLOEXEC) == fd)
        server.reserves.push_back(fd);
    else
        ::close(fd);
    server.reserveCount.store(server.reserves.size(), std::memory_order_relaxed);
    s.counters.upgradesRefused[static_cast<std::size_t>(Refusal::FdLimit)].add();
    server.refusedAtFdLimit.fetch_add(1, std::memory_order_relaxed);
}

void resumeListener(lws_sorted_usec_list_t *sul) {
    ShardState &s = *reinterpret_cast<ShardState::ListenerTimer *>(sul)->owner;
    topUp(s.server);
    if (s.listener) lws_rx_flow_control(s.listener, 1);
}

void pauseListener(ShardState &s) {
    if (!s.listener) return;
    lws_rx_flow_control(s.listener, 0);
    s.listenerTimer.owner = &s;
    lws_sul_schedule(s.context, 0, &s.listenerTimer.sul, resumeListener, kListenerPauseUs);
}

enum class Reserve { Refused, NothingPending, Unavailable };

// Gives up a reserve to accept one client and refuse it. At the limit accept() fails with
// EMFILE before it looks at the queue, so there may be nobody to refuse (NothingPending).
// Unavailable: there was no reserve, or something other than a shard took the freed descriptor.
Reserve refuseOnReserve(ShardState &s) {
    WsServer::Impl &server = s.server;
    std::lock_guard lock(server.reserveMu);
    if (server.reserves.empty()) topUpLocked(server);
    if (server.reserves.empty()) return Reserve::Unavailable;
    ::close(server.reserves.back());
    server.reserves.pop_back();
    int fd = accept4(s.listenFd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    const int err = errno;
    if (fd >= 0) {
        refuseAcceptedLocked(s, fd); // the descriptor is the reserve again
        return Reserve::Refused;
    }
    topUpLocked(server);
    return err == EAGAIN || err == EWOULDBLOCK ? Reserve::NothingPending : Reserve::Unavailable;
}

} // namespace

void openReserveFd(ShardState &s) {
    std::lock_guard lock(s.server.reserveMu);
    s.server.reserveTarget.fetch_add(1, std::memory_order_relaxed);
    topUpLocked(s.server);
}

void endFdLimitEpisodeIfQuiet(WsServer::Impl &server) {
    if (!server.atFdLimit.load(std::memory_order_relaxed)) return;
    if (nowMs() - server.lastFdLimitMs.load(std::memory_order_relaxed) < kFdLimitQuietMs) return;
    if (server.atFdLimit.exchange(false))
        spdlog::info("accept: below the open-file limit again; {} client(s) were refused meanwhile",
                     server.refusedAtFdLimit.exchange(0));
}

void closeReserveFd(ShardState &s) {
    lws_sul_cancel(&s.listenerTimer.sul);
    WsServer::Impl &server = s.server;
    std::lock_guard lock(server.reserveMu);
    if (server.reserveTarget.load(std::memory_order_relaxed) > 0)
        server.reserveTarget.fetch_sub(1, std::memory_order_relaxed);
    while (server.reserves.size() > server.reserveTarget) {
        ::close(server.reserves.back());
        server.reserves.pop_back();
    }
    server.reserveCount.store(server.reserves.size(), std::memory_order_relaxed);
}

void acceptPending(ShardState &s) {
    // A bounded batch, so one busy listener cannot starve the connections.
    for (int i = 0; i < 64; ++i) {
        int fd;
        if (s.server.atFdLimit.load(std::memory_order_acquire)) {
            // Not while another shard has given up a reserve to refuse a client.
            std::lock_guard lock(s.server.reserveMu);
            fd = accept4(s.listenFd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        } else {
            fd = accept4(s.listenFd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        }
        if (fd < 0) {
            const int err = errno;
            if (err == EINTR || err == ECONNABORTED) continue;
            if (err == EAGAIN || err == EWOULDBLOCK) break;
            if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
                enterFdLimit(s); // before the reserve is given up: other shards' accepts now wait
                Reserve r = refuseOnReserve(s);
                if (r == Reserve::NothingPending) break;
                if (r == Reserve::Refused) continue;
                pauseListener(s);
                break;
            }
            if (!s.acceptErrorLogged) {
                s.acceptErrorLogged = true;
                spdlog::warn("accept: {}", std::strerror(err));
            }
            pauseListener(s);
            break;
        }
        s.acceptErrorLogged = false;
        topUp(s.server);
        if (s.draining.load(std::memory_order_relaxed)) {
            ::close(fd);
            continue;
        }
        // No Nagle: lws writes a message in several send()s (a frame header, a compressed
        // message in pieces), and with Nagle each of them after the first waits for the
        // client's delayed ACK (40 ms on Linux) whenever a write is still unacknowledged. Our
        // own coalescing (kCoalesceBytes) already makes writes as large as they can be.
        const int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        // With a connect authorizer, the request head is read before lws sees the socket.
        if (s.server.authorizer) {
            preReadUpgrade(s, fd);
            continue;
        }
        // On a TLS vhost lws starts the server handshake; on a plain one ALLOW_SSL is ignored.
        lws_sock_file_fd_type desc;
        desc.sockfd = fd;
        lws_adopt_descriptor_vhost(
            s.vhost, static_cast<lws_adoption_type>(LWS_ADOPT_SOCKET | LWS_ADOPT_HTTP | LWS_ADOPT_ALLOW_SSL), desc,
            nullptr, nullptr); // closes fd itself on failure
    }
}

} // namespace wsgw::daemon
