#include "ws_authorize.h"

#include "authorizer.h"
#include "peer_address.h"

#include <ev.h>
#include <spdlog/spdlog.h>

#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>

namespace wsgw::daemon {

namespace {

// A request head longer than this is not an upgrade we serve: answered 431.
constexpr std::size_t kMaxHead = 16 * 1024;
// How long a client may take to send its request head (lws allows the same: timeout_secs_ah_idle).
constexpr double kHeadTimeoutS = 10.0;

struct Pending {
    ShardState *shard = nullptr;
    std::uint64_t key = 0;
    int fd = -1;
    std::string head; // every byte read so far, handed to lws on admission
    ev_io io{};
    ev_timer timer{};
    bool asked = false;
    std::size_t endpoint = 0;
    ConnectionId id;
    bool failOpen = false;
    std::chrono::steady_clock::time_point askedAt;
};

void answer(int fd, unsigned status, std::string_view body);

} // namespace

// The shard's held upgrades and the answers that came back for them.
struct PendingUpgrades {
    std::unordered_map<std::uint64_t, std::unique_ptr<Pending>> byKey;
    std::uint64_t nextKey = 1;
    std::mutex mu; // guards `answers`: pool threads add, the shard takes
    std::vector<std::pair<std::uint64_t, AuthorizeDecision>> answers;
};

void PendingUpgradesFree::operator()(PendingUpgrades *p) const noexcept { delete p; }

namespace {

PendingUpgrades &pendingOf(ShardState &s) {
    if (!s.pending) s.pending.reset(new PendingUpgrades);
    return *s.pending;
}

const char *reasonPhrase(unsigned status) {
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return status < 500 ? "Client Error" : "Server Error";
    }
}

// A short answer on a socket nothing else has written to, then the socket closed. The answer
// fits the socket buffer of a fresh connection; a client that does not read loses it.
void answer(int fd, unsigned status, std::string_view body) {
    std::string msg = "HTTP/1.1 " + std::to_string(status) + " " + reasonPhrase(status) +
                      "\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: " +
                      std::to_string(body.size() + 1) + "\r\n\r\n" + std::string(body) + "\n";
    (void)::send(fd, msg.data(), msg.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    ::shutdown(fd, SHUT_WR);
    ::close(fd);
}

// Stops watching `p` and forgets it; returns its socket (still open).
int release(ShardState &s, Pending &p) {
    ev_io_stop(s.loop, &p.io);
    ev_timer_stop(s.loop, &p.timer);
    const int fd = p.fd;
    p.fd = -1;
    pendingOf(s).byKey.erase(p.key); // destroys p
    return fd;
}

// Hands the socket and what was read of it to lws, with what the authorizer gave.
void admit(ShardState &s, Pending &p, const AuthorizeDecision *d) {
    std::string head = std::move(p.head);
    const ConnectionId id = d && d->id ? *d->id : p.id;
    TagList tags;
    if (d) tags = d->tags;
    const int fd = release(s, p);
    s.adopting.emplace(fd, ShardState::Admission{std::move(tags), id, d != nullptr});
    lws *wsi = lws_adopt_socket_vhost_readbuf(s.vhost, fd, head.data(), head.size()); // closes fd on failure
    // Not taken by an upgrade confirmed inside the call: kept for when lws gets to it.
    if (s.adopting && wsi) s.admitted[wsi] = std::move(s.adopting->second);
    s.adopting.reset();
}

void refuseHeld(ShardState &s, Pending &p, unsigned status, std::string_view body) {
    s.counters.upgradesRefused[static_cast<std::size_t>(Refusal::Authorizer)].add();
    answer(release(s, p), status, body);
}

void apply(ShardState &s, Pending &p, const AuthorizeDecision &d) {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - p.askedAt).count();
    s.server.metrics.observeAuthorize(outcomeName(d.outcome), seconds);
    const WsEndpoint *e = p.endpoint < s.settings.endpoints.size() ? &s.settings.endpoints[p.endpoint] : nullptr;
    switch (d.outcome) {
    case AuthorizeDecision::Outcome::Accepted:
        admit(s, p, &d);
        return;
    case AuthorizeDecision::Outcome::FailedOpen:
        spdlog::debug("authorize {}: {}; admitted (fail_open)", e ? e->path : "?", d.message);
        {
            AuthorizeDecision none; // set_tags only
            none.outcome = d.outcome;
            admit(s, p, &none);
        }
        return;
    case AuthorizeDecision::Outcome::Refused:
        refuseHeld(s, p, d.status, d.message);
        return;
    case AuthorizeDecision::Outcome::Failed:
        spdlog::debug("authorize {}: {}; answered 503", e ? e->path : "?", d.message);
        refuseHeld(s, p, 503, "authorization unavailable; retry later");
        return;
    }
}

// The request head: "GET /path?query HTTP/1.1" and its fields. False if it is not one.
struct Head {
    std::string method, path, query;
    std::vector<std::pair<std::string, std::string>> headers;
};

bool parseHead(std::string_view text, Head &h) {
    const std::size_t lineEnd = text.find("\r\n");
    const std::string_view line = text.substr(0, lineEnd);
    const std::size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
    if (sp1 == std::string_view::npos || sp2 == sp1) return false;
    h.method = std::string(line.substr(0, sp1));
    const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::size_t q = target.find('?');
    h.path = std::string(target.substr(0, q));
    if (q != std::string_view::npos) h.query = std::string(target.substr(q + 1));
    std::size_t pos = lineEnd + 2;
    while (pos < text.size()) {
        const std::size_t end = text.find("\r\n", pos);
        if (end == std::string_view::npos || end == pos) break;
        const std::string_view field = text.substr(pos, end - pos);
        const std::size_t colon = field.find(':');
        if (colon != std::string_view::npos && colon > 0) {
            std::string_view value = field.substr(colon + 1);
            while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
            while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
            h.headers.emplace_back(std::string(field.substr(0, colon)), std::string(value));
        }
        pos = end + 2;
    }
    return true;
}

bool isWebSocketUpgrade(const Head &h) {
    for (const auto &[name, value] : h.headers) {
        if (name.size() != 7) continue;
        std::string n = name, v = value;
        for (char &c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        for (char &c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (n == "upgrade" && v.find("websocket") != std::string::npos) return true;
    }
    return false;
}

// The head is complete: hand it to lws, or hold it and ask the authorizer.
void headRead(ShardState &s, Pending &p) {
    Head h;
    const std::size_t end = p.head.find("\r\n\r\n");
    std::size_t index = 0;
    const WsEndpoint *e = nullptr;
    if (parseHead(std::string_view(p.head).substr(0, end + 2), h) && h.method == "GET" && isWebSocketUpgrade(h))
        e = s.endpointFor(h.path, &index);
    if (!e || !e->authorize) {
        admit(s, p, nullptr); // lws decides as for any request (404, 426, jwt, ...)
        return;
    }
    WsServer::Impl &server = s.server;
    ev_io_stop(s.loop, &p.io);
    p.asked = true;
    p.endpoint = index;
    p.failOpen = e->authorize->failOpen;
    p.askedAt = std::chrono::steady_clock::now();
    AuthorizeQuestion q{p.id, e->path, h.path, h.query, std::move(h.headers), peerAddress(p.fd)};
    const std::string body = authorizeBody(q, *e->authorize);
    // The shard's own deadline: a late answer finds its key gone and is dropped.
    ev_timer_stop(s.loop, &p.timer);
    ev_timer_set(&p.timer, std::chrono::duration<double>(e->authorize->timeout).count(), 0.);
    ev_timer_start(s.loop, &p.timer);
    ShardState *sp = &s;
    const std::uint64_t key = p.key;
    const bool failOpen = p.failOpen;
    PendingUpgrades *pending = &pendingOf(s);
    const bool queued = server.authorizer &&
                        server.authorizer->submit(e->authorize->url, body, e->authorize->timeout,
                                                  [sp, pending, key, failOpen](AuthorizeAnswer a) {
                                                      AuthorizeDecision d = decideAuthorize(a, failOpen);
                                                      {
                                                          std::lock_guard lock(pending->mu);
                                                          pending->answers.emplace_back(key, std::move(d));
                                                      }
                                                      std::lock_guard lock(sp->wakeMu);
                                                      if (sp->context) lws_cancel_service(sp->context);
                                                  });
    if (!queued) {
        AuthorizeAnswer none;
        none.error = "too many upgrades waiting for the authorizer";
        apply(s, p, decideAuthorize(none, failOpen));
    }
}

void onReadable(struct ev_loop *, ev_io *w, int) {
    Pending &p = *static_cast<Pending *>(w->data);
    ShardState &s = *p.shard;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::recv(p.fd, buf, sizeof buf, 0);
        if (n > 0) {
            const std::size_t scanFrom = p.head.size() >= 3 ? p.head.size() - 3 : 0;
            p.head.append(buf, static_cast<std::size_t>(n));
            if (p.head.find("\r\n\r\n", scanFrom) != std::string::npos) {
                headRead(s, p);
                return;
            }
            if (p.head.size() > kMaxHead) {
                s.counters.upgradesRefused[static_cast<std::size_t>(Refusal::BadRequest)].add();
                answer(release(s, p), 431, "request head too large");
                return;
            }
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0 && errno == EINTR) continue;
        ::close(release(s, p)); // the client left (or the socket failed) before its head was complete
        return;
    }
}

void onTimer(struct ev_loop *, ev_timer *w, int) {
    Pending &p = *static_cast<Pending *>(w->data);
    ShardState &s = *p.shard;
    if (!p.asked) {
        s.counters.upgradesRefused[static_cast<std::size_t>(Refusal::Timeout)].add();
        ::close(release(s, p));
        return;
    }
    AuthorizeAnswer none;
    none.error = "timeout";
    apply(s, p, decideAuthorize(none, p.failOpen));
}

} // namespace

void preReadUpgrade(ShardState &s, int fd) {
    PendingUpgrades &pending = pendingOf(s);
    auto p = std::make_unique<Pending>();
    p->shard = &s;
    p->key = pending.nextKey++;
    p->fd = fd;
    p->id = ConnectionId::random();
    ev_io_init(&p->io, onReadable, fd, EV_READ);
    p->io.data = p.get();
    ev_timer_init(&p->timer, onTimer, kHeadTimeoutS, 0.);
    p->timer.data = p.get();
    ev_io_start(s.loop, &p->io);
    ev_timer_start(s.loop, &p->timer);
    pending.byKey.emplace(p->key, std::move(p));
}

void applyAuthorizeAnswers(ShardState &s) {
    if (!s.pending) return;
    std::vector<std::pair<std::uint64_t, AuthorizeDecision>> answers;
    {
        std::lock_guard lock(s.pending->mu);
        answers.swap(s.pending->answers);
    }
    for (auto &[key, d] : answers) {
        auto it = s.pending->byKey.find(key);
        if (it == s.pending->byKey.end()) continue; // timed out meanwhile: answered already
        apply(s, *it->second, d);
    }
}

void dropPendingUpgrades(ShardState &s) {
    if (!s.pending) return;
    for (auto &[key, p] : s.pending->byKey) {
        ev_io_stop(s.loop, &p->io);
        ev_timer_stop(s.loop, &p->timer);
        if (p->fd >= 0) ::close(p->fd);
    }
    s.pending->byKey.clear();
}

} // namespace wsgw::daemon
