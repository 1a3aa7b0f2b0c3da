// grip-origin: the smallest origin server for Pushpin's WebSocket-over-HTTP, for the comparison.
// One thread, epoll, HTTP/1.1 keep-alive.
//
//   grip-origin --listen 127.0.0.1:7010
//
// Pushpin turns each WebSocket connection's events into POSTs (Content-Type:
// application/websocket-events). To OPEN this answers OPEN plus GRIP subscribe control messages
// for the channels "all" and "gN", N being the last number in the request path ("/g17"), so that
// publishes to either reach the connection. TEXT and BINARY events are client messages: they
// are counted (and checked against the bench payload): this process is Pushpin's event sink.
// CLOSE is acknowledged with CLOSE.
//
//   GET /stats   opens, inbound_frames, bad_frames

#include "common.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace wsgw::bench {
namespace {

std::atomic<bool> gQuit{false};

struct Peer {
    int fd = -1;
    std::string in;
};

class Origin {
public:
    int run(const HostPort &addr) {
        std::string error;
        listen_ = listenTcp(addr, 4096, &error);
        if (listen_ < 0) {
            std::fprintf(stderr, "grip-origin: %s\n", error.c_str());
            return 1;
        }
        ep_ = epoll_create1(EPOLL_CLOEXEC);
        watch(listen_, nullptr);
        std::fprintf(stderr, "grip-origin: listening on %s:%u\n", addr.host.c_str(), unsigned(addr.port));
        buf_.resize(256 * 1024);
        epoll_event events[256];
        while (!gQuit.load()) {
            int n = epoll_wait(ep_, events, 256, 200);
            for (int i = 0; i < n; ++i) {
                if (!events[i].data.ptr)
                    accept();
                else
                    onReadable(*static_cast<Peer *>(events[i].data.ptr));
            }
            graveyard_.clear();
        }
        return 0;
    }

private:
    void watch(int fd, void *tag) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = tag;
        epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
    }

    void accept() {
        for (int i = 0; i < 256; ++i) {
            int fd = accept4(listen_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) return;
            tuneSocket(fd);
            auto p = std::make_unique<Peer>();
            p->fd = fd;
            watch(fd, p.get());
            peers_.push_back(std::move(p));
        }
    }

    void drop(Peer &p) {
        if (p.fd < 0) return;
        epoll_ctl(ep_, EPOLL_CTL_DEL, p.fd, nullptr);
        close(p.fd);
        p.fd = -1;
        for (auto &q : peers_) {
            if (q.get() == &p) {
                graveyard_.push_back(std::move(q));
                q = std::move(peers_.back());
                peers_.pop_back();
                break;
            }
        }
    }

    void onReadable(Peer &p) {
        for (;;) {
            ssize_t n = recv(p.fd, buf_.data(), buf_.size(), 0);
            if (n > 0) {
                p.in.append(buf_.data(), std::size_t(n));
                handle(p);
                if (p.fd < 0 || std::size_t(n) < buf_.size()) return;
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
            drop(p);
            return;
        }
    }

    void handle(Peer &p) {
        for (;;) {
            std::size_t end = p.in.find("\r\n\r\n");
            if (end == std::string::npos) return;
            std::string_view head(p.in.data(), end + 2);
            std::size_t length = 0;
            if (auto cl = headerValue(head, "Content-Length")) length = std::strtoul(std::string(*cl).c_str(), nullptr, 10);
            if (p.in.size() < end + 4 + length) return;
            std::string_view body(p.in.data() + end + 4, length);
            std::string out;
            std::string contentType = "application/websocket-events";
            if (head.compare(0, 10, "GET /stats") == 0) {
                contentType = "text/plain";
                out = "opens " + std::to_string(opens_) + "\ninbound_frames " + std::to_string(inbound_) +
                      "\nbad_frames " + std::to_string(bad_) + "\n";
            } else {
                std::size_t sp1 = head.find(' '), sp2 = head.find(' ', sp1 + 1);
                std::string_view path = head.substr(sp1 + 1, sp2 - sp1 - 1);
                path = path.substr(0, path.find('?'));
                events(path, body, &out);
            }
            std::string resp = "HTTP/1.1 200 OK\r\nContent-Type: " + contentType +
                               "\r\nSec-WebSocket-Extensions: grip\r\nContent-Length: " + std::to_string(out.size()) +
                               "\r\n\r\n" + out;
            p.in.erase(0, end + 4 + length);
            if (!writeAll(p.fd, resp.data(), resp.size(), 5000)) {
                drop(p);
                return;
            }
        }
    }

    static void textEvent(std::string *out, const std::string &content) {
        char len[16];
        std::snprintf(len, sizeof len, "%zx", content.size());
        *out += "TEXT ";
        *out += len;
        *out += "\r\n";
        *out += content;
        *out += "\r\n";
    }

    // Parses the WebSocket-over-HTTP events in `body` and writes the answer's events to `out`.
    void events(std::string_view path, std::string_view body, std::string *out) {
        std::size_t at = 0;
        while (at < body.size()) {
            std::size_t eol = body.find("\r\n", at);
            if (eol == std::string_view::npos) break;
            std::string_view line = body.substr(at, eol - at);
            at = eol + 2;
            std::string_view type = line.substr(0, line.find(' '));
            std::size_t size = 0;
            if (line.size() > type.size())
                size = std::strtoul(std::string(line.substr(type.size() + 1)).c_str(), nullptr, 16);
            std::string_view content = body.substr(at, size);
            if (size > 0) at += size + 2;
            if (type == "OPEN") {
                ++opens_;
                std::size_t digits = path.size();
                while (digits > 0 && std::isdigit(static_cast<unsigned char>(path[digits - 1]))) --digits;
                std::string group = digits < path.size() ? "g" + std::string(path.substr(digits)) : "g0";
                *out += "OPEN\r\n";
                textEvent(out, R"(c:{"type":"subscribe","channel":"all"})");
                textEvent(out, R"(c:{"type":"subscribe","channel":")" + group + R"("})");
            } else if (type == "TEXT" || type == "BINARY") {
                PayloadFields f;
                if (readPayload(content.data(), content.size(), &f))
                    ++inbound_;
                else
                    ++bad_;
            } else if (type == "CLOSE") {
                *out += "CLOSE\r\n";
            }
        }
    }

    int listen_ = -1;
    int ep_ = -1;
    std::vector<std::unique_ptr<Peer>> peers_;
    std::vector<std::unique_ptr<Peer>> graveyard_;
    std::vector<char> buf_;
    std::uint64_t opens_ = 0;
    std::uint64_t inbound_ = 0;
    std::uint64_t bad_ = 0;
};

} // namespace
} // namespace wsgw::bench

int main(int argc, char **argv) {
    using namespace wsgw::bench;
    HostPort addr{"127.0.0.1", 7010};
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--listen" && i + 1 < argc) {
            auto hp = parseHostPort(argv[++i]);
            if (!hp) return std::fprintf(stderr, "grip-origin: --listen HOST:PORT\n"), 2;
            addr = *hp;
        } else {
            std::fprintf(stderr, "usage: grip-origin [--listen HOST:PORT]\n");
            return a == "--help" || a == "-h" ? 0 : 2;
        }
    }
    std::signal(SIGPIPE, SIG_IGN);
    auto stop = [](int) { gQuit = true; };
    std::signal(SIGINT, stop);
    std::signal(SIGTERM, stop);
    return Origin().run(addr);
}
