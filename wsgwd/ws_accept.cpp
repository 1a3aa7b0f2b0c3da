// A shard's listening socket: accepts what is pending and hands each connection to lws.
//
// At the open-file limit accept() fails with EMFILE while the connection stays queued, so the
// listener stays readable: retrying would spin. Instead each shard keeps one descriptor in
// reserve: it gives it up for a moment to accept the client, answers 503 and closes (the client
// is refused at once, not left hanging), then takes the reserve back. If another thread took the
// freed descriptor first, the listener is paused for a moment. Service comes back by itself when
// descriptors free up. One warning per episode, and a line with the count when it ends: after
// two seconds without a failed accept, so that clients coming and going at the limit do not make
// an episode of each.

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

void resumeListener(lws_sorted_usec_list_t *sul) {
    ShardState &s = *reinterpret_cast<ShardState::ListenerTimer *>(sul)->owner;
    if (s.reserveFd < 0) s.reserveFd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (s.listener) lws_rx_flow_control(s.listener, 1);
}

void pauseListener(ShardState &s) {
    if (!s.listener) return;
    lws_rx_flow_control(s.listener, 0);
    s.listenerTimer.owner = &s;
    lws_sul_schedule(s.context, 0, &s.listenerTimer.sul, resumeListener, kListenerPauseUs);
}

enum class Reserve { Refused, NothingPending, Unavailable };

// Gives up the reserve to accept one client and refuse it. At the limit accept() fails with
// EMFILE before it looks at the queue, so there may be nobody to refuse (NothingPending).
// Unavailable: there was no reserve, or another thread took the freed descriptor.
Reserve refuseOnReserve(ShardState &s) {
    if (s.reserveFd < 0) return Reserve::Unavailable;
    ::close(s.reserveFd);
    s.reserveFd = -1;
    int fd = accept4(s.listenFd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    const int err = errno;
    if (fd >= 0) {
        // Read what the client sent already, so that closing does not reset the connection
        // before it reads the answer.
        char sink[4096];
        (void)::recv(fd, sink, sizeof sink, MSG_DONTWAIT);
        (void)::send(fd, kRefusal, sizeof kRefusal - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        ::close(fd);
        s.counters.upgradesRefused[static_cast<std::size_t>(Refusal::FdLimit)].add();
        s.server.refusedAtFdLimit.fetch_add(1, std::memory_order_relaxed);
    }
    s.reserveFd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) return Reserve::Refused;
    return err == EAGAIN || err == EWOULDBLOCK ? Reserve::NothingPending : Reserve::Unavailable;
}

} // namespace

void openReserveFd(ShardState &s) {
    if (s.reserveFd < 0) s.reserveFd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
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
    if (s.reserveFd >= 0) ::close(s.reserveFd);
    s.reserveFd = -1;
}

void acceptPending(ShardState &s) {
    // A bounded batch, so one busy listener cannot starve the connections.
    for (int i = 0; i < 64; ++i) {
        int fd = accept4(s.listenFd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            const int err = errno;
            if (err == EINTR || err == ECONNABORTED) continue;
            if (err == EAGAIN || err == EWOULDBLOCK) break;
            if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
                Reserve r = refuseOnReserve(s);
                if (r == Reserve::NothingPending) break;
                enterFdLimit(s);
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
        if (s.reserveFd < 0) openReserveFd(s);
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
