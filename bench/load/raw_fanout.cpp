// raw-fanout: the physical bound. A minimal WebSocket server on one thread: it completes the
// handshake, and writes prebuilt frames to every matching socket in a tight loop — no tags, no
// queues, no allocation per message. What it reaches is what the kernel and loopback allow on
// this machine for the same work the real servers do.
//
// The publishes that arrive in one round of the event loop form a batch: each is answered at once
// (the number of connections it is for), each frame is built once, and each socket gets all of the
// batch's frames meant for it in one write (as a server that coalesces its pending frames would),
// in publish order.
//
//   raw-fanout --listen 127.0.0.1:7000 --control 127.0.0.1:7001
//
// WebSocket clients connect to any path; the last number in the path is the connection's group
// ("/g17" -> 17, none -> 0). The control port speaks just enough HTTP/1.1 (keep-alive,
// pipelining) for wsgw-bench's publisher, in the shape of wsgwd's control API:
//   POST /send?all=1        the body to every connection          -> the number of them
//   POST /send?group=gN     the body to the connections of group N
//   GET  /stats             connections, inbound frames (masked client frames, each payload
//                           checked with the bench's checksum) and bad ones
//
// A socket that cannot take a frame at once is waited for (poll, 5 s at most, then dropped):
// the kernel's own back-pressure, not a queue.

#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
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

struct Client {
    enum class Kind { WebSocket, Control } kind;
    int fd = -1;
    bool open = false;       // WebSocket: handshake done
    std::uint32_t group = 0;
    std::size_t allIndex = 0;   // position in Server::all_
    std::size_t groupIndex = 0; // position in Server::groups_[group]
    std::string in;
};

class Server {
public:
    int run(const HostPort &wsAddr, const HostPort &controlAddr) {
        std::string error;
        wsListen_ = listenTcp(wsAddr, 4096, &error);
        if (wsListen_ < 0) return fail(error);
        controlListen_ = listenTcp(controlAddr, 128, &error);
        if (controlListen_ < 0) return fail(error);
        ep_ = epoll_create1(EPOLL_CLOEXEC);
        watch(wsListen_, &wsListen_);
        watch(controlListen_, &controlListen_);
        std::fprintf(stderr, "raw-fanout: WebSocket on %s:%u, control on %s:%u\n", wsAddr.host.c_str(),
                     unsigned(wsAddr.port), controlAddr.host.c_str(), unsigned(controlAddr.port));
        readBuf_.resize(256 * 1024);
        epoll_event events[256];
        while (!gQuit.load()) {
            int n = epoll_wait(ep_, events, 256, 200);
            for (int i = 0; i < n; ++i) {
                void *tag = events[i].data.ptr;
                if (tag == &wsListen_)
                    accept(wsListen_, Client::Kind::WebSocket);
                else if (tag == &controlListen_)
                    accept(controlListen_, Client::Kind::Control);
                else
                    onReadable(*static_cast<Client *>(tag));
            }
            flushBatch();
            graveyard_.clear();
        }
        return 0;
    }

private:
    int fail(const std::string &what) {
        std::fprintf(stderr, "raw-fanout: %s\n", what.c_str());
        return 1;
    }

    void watch(int fd, void *tag) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = tag;
        epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
    }

    void accept(int listenFd, Client::Kind kind) {
        for (int i = 0; i < 256; ++i) {
            int fd = accept4(listenFd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) return;
            tuneSocket(fd);
            auto c = std::make_unique<Client>();
            c->kind = kind;
            c->fd = fd;
            watch(fd, c.get());
            clients_.push_back(std::move(c));
        }
    }

    void drop(Client &c) {
        if (c.fd < 0) return;
        epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
        close(c.fd);
        c.fd = -1;
        if (c.open) {
            c.open = false;
            // swap-remove from the broadcast list and the group list
            all_[c.allIndex] = all_.back();
            all_[c.allIndex]->allIndex = c.allIndex;
            all_.pop_back();
            auto &g = groups_[c.group];
            g[c.groupIndex] = g.back();
            g[c.groupIndex]->groupIndex = c.groupIndex;
            g.pop_back();
        }
        // Free the client after this round of events (others may still point at it).
        for (auto &p : clients_) {
            if (p.get() == &c) {
                graveyard_.push_back(std::move(p));
                p = std::move(clients_.back());
                clients_.pop_back();
                break;
            }
        }
    }

    void onReadable(Client &c) {
        for (;;) {
            ssize_t n = recv(c.fd, readBuf_.data(), readBuf_.size(), 0);
            if (n > 0) {
                c.in.append(readBuf_.data(), std::size_t(n));
                if (c.kind == Client::Kind::Control)
                    onControl(c);
                else if (!c.open)
                    onHandshake(c);
                else
                    onFrames(c);
                if (c.fd < 0 || std::size_t(n) < readBuf_.size()) return;
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
            drop(c);
            return;
        }
    }

    void onHandshake(Client &c) {
        std::size_t end = c.in.find("\r\n\r\n");
        if (end == std::string::npos) {
            if (c.in.size() > 16384) drop(c);
            return;
        }
        std::string_view head(c.in.data(), end + 2);
        std::size_t sp1 = head.find(' '), sp2 = head.find(' ', sp1 + 1);
        auto key = headerValue(head, "Sec-WebSocket-Key");
        if (head.compare(0, 4, "GET ") != 0 || sp2 == std::string_view::npos || !key) {
            static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            writeAll(c.fd, bad, sizeof bad - 1, 1000);
            drop(c);
            return;
        }
        std::string_view path = head.substr(sp1 + 1, sp2 - sp1 - 1);
        path = path.substr(0, path.find('?'));
        std::size_t digits = path.size();
        while (digits > 0 && std::isdigit(static_cast<unsigned char>(path[digits - 1]))) --digits;
        c.group = digits < path.size() ? std::uint32_t(std::strtoul(std::string(path.substr(digits)).c_str(), nullptr, 10)) : 0;
        if (c.group > 65535) c.group = 0;
        std::string resp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Accept: " + websocketAccept(*key) + "\r\n";
        if (auto proto = headerValue(head, "Sec-WebSocket-Protocol")) {
            std::string_view first = proto->substr(0, proto->find(','));
            while (!first.empty() && first.back() == ' ') first.remove_suffix(1);
            resp += "Sec-WebSocket-Protocol: " + std::string(first) + "\r\n";
        }
        resp += "\r\n";
        if (!writeAll(c.fd, resp.data(), resp.size(), 1000)) {
            drop(c);
            return;
        }
        c.in.erase(0, end + 4);
        c.open = true;
        c.allIndex = all_.size();
        all_.push_back(&c);
        if (groups_.size() <= c.group) groups_.resize(c.group + 1);
        c.groupIndex = groups_[c.group].size();
        groups_[c.group].push_back(&c);
        if (!c.in.empty()) onFrames(c);
    }

    // Client frames (masked): count them and check the bench payload.
    void onFrames(Client &c) {
        std::size_t at = 0;
        auto *p = reinterpret_cast<unsigned char *>(c.in.data());
        while (at < c.in.size()) {
            FrameHeader h;
            if (!parseFrameHeader(p + at, c.in.size() - at, &h)) break;
            if (c.in.size() - at < h.headerSize + h.length) break;
            unsigned char *payload = p + at + h.headerSize;
            if (h.masked) applyMask(payload, std::size_t(h.length), h.mask);
            if (h.opcode == 0x8) {
                drop(c);
                return;
            }
            if (h.opcode == 0x1 || h.opcode == 0x2) {
                PayloadFields f;
                if (h.masked && readPayload(reinterpret_cast<char *>(payload), std::size_t(h.length), &f))
                    ++inbound_;
                else
                    ++bad_;
            }
            at += h.headerSize + std::size_t(h.length);
        }
        c.in.erase(0, at);
    }

    void onControl(Client &c) {
        for (;;) {
            std::size_t end = c.in.find("\r\n\r\n");
            if (end == std::string::npos) return;
            std::string_view head(c.in.data(), end + 2);
            std::size_t length = 0;
            if (auto cl = headerValue(head, "Content-Length")) length = std::strtoul(std::string(*cl).c_str(), nullptr, 10);
            if (c.in.size() < end + 4 + length) return;
            std::string_view body(c.in.data() + end + 4, length);
            std::string answer;
            int status = 200;
            if (head.compare(0, 10, "POST /send") == 0) {
                std::string_view target = head.substr(5, head.find(' ', 5) - 5);
                queuePublish(c, target, body);
                c.in.erase(0, end + 4 + length);
                continue;
            }
            if (head.compare(0, 10, "GET /stats") == 0) {
                flushBatch(); // answers in request order
                answer = "connections " + std::to_string(all_.size()) + "\ninbound_frames " + std::to_string(inbound_) +
                         "\nbad_frames " + std::to_string(bad_) + "\nframes_sent " + std::to_string(sent_) +
                         "\nbatches " + std::to_string(batches_) + "\npublishes " + std::to_string(publishes_) +
                         "\nwrites " + std::to_string(writes_) + "\nwaits " + std::to_string(waits_) + "\n";
            } else {
                flushBatch();
                status = 404;
                answer = "not found\n";
            }
            c.in.erase(0, end + 4 + length);
            if (!respond(c, status, answer)) return;
        }
    }

    bool respond(Client &c, int status, const std::string &answer) {
        std::string resp = "HTTP/1.1 " + std::to_string(status) + (status == 200 ? " OK" : " Not Found") +
                           "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(answer.size()) +
                           "\r\n\r\n" + answer;
        if (!writeAll(c.fd, resp.data(), resp.size(), 5000)) {
            drop(c);
            return false;
        }
        return true;
    }

    struct Pending {
        Client *from;
        std::uint32_t group; // kAllGroup: everyone
        std::size_t at, size; // the frame in frames_
    };

    void queuePublish(Client &c, std::string_view target, std::string_view body) {
        std::uint32_t group = kAllGroup;
        std::size_t q = target.find("group=g");
        if (q != std::string_view::npos)
            group = std::uint32_t(std::strtoul(std::string(target.substr(q + 7)).c_str(), nullptr, 10));
        unsigned char header[14];
        std::size_t hs = writeFrameHeader(header, 0x1, body.size(), true, nullptr);
        Pending p{&c, group, frames_.size(), hs + body.size()};
        frames_.insert(frames_.end(), header, header + hs);
        frames_.insert(frames_.end(), body.begin(), body.end());
        batch_.push_back(p);
    }

    // Answers every publish of the batch with the number of connections it is for (like wsgwd's
    // /send, which answers once the frame is queued: so publishers can send more while this
    // writes, and the next batch holds what came meanwhile), then writes the batch: each socket
    // gets its frames in one write.
    void flushBatch() {
        if (batch_.empty()) return;
        ++batches_;
        publishes_ += batch_.size();
        for (const Pending &p : batch_) {
            std::size_t n = p.group == kAllGroup ? all_.size() : p.group < groups_.size() ? groups_[p.group].size() : 0;
            if (p.from->fd >= 0) respond(*p.from, 200, std::to_string(n));
        }
        bool broadcast = false;
        groupsInBatch_.clear();
        for (const Pending &p : batch_) {
            if (p.group == kAllGroup)
                broadcast = true;
            else if (p.group < groups_.size() &&
                     std::find(groupsInBatch_.begin(), groupsInBatch_.end(), p.group) == groupsInBatch_.end())
                groupsInBatch_.push_back(p.group);
        }
        // The bytes for a connection of group g: the batch's frames for everyone or for g.
        auto bytesFor = [&](std::uint32_t g, std::vector<char> *out) {
            out->clear();
            for (const Pending &p : batch_)
                if (p.group == kAllGroup || p.group == g)
                    out->insert(out->end(), frames_.begin() + std::ptrdiff_t(p.at),
                                frames_.begin() + std::ptrdiff_t(p.at + p.size));
        };
        if (perGroup_.size() < groups_.size()) perGroup_.resize(groups_.size());
        if (broadcast) {
            bytesFor(kAllGroup, &common_);
            for (std::uint32_t g : groupsInBatch_) bytesFor(g, &perGroup_[g]);
            for (std::size_t i = 0; i < all_.size();) {
                Client *c = all_[i];
                bool own = std::find(groupsInBatch_.begin(), groupsInBatch_.end(), c->group) != groupsInBatch_.end();
                const std::vector<char> &bytes = own ? perGroup_[c->group] : common_;
                if (writeFrames(*c, bytes)) ++i;
            }
        } else {
            for (std::uint32_t g : groupsInBatch_) {
                std::vector<char> &bytes = perGroup_[g];
                bytesFor(g, &bytes);
                auto &list = groups_[g];
                for (std::size_t i = 0; i < list.size();) {
                    if (writeFrames(*list[i], bytes)) ++i;
                }
            }
        }
        batch_.clear();
        frames_.clear();
    }

    // Writes `bytes` to a connection, waiting for the socket if it must; on failure drops the
    // connection (which swap-removes it from the lists) and returns false.
    bool writeFrames(Client &c, const std::vector<char> &bytes) {
        if (bytes.empty()) return true;
        ++writes_;
        ssize_t w = send(c.fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w != ssize_t(bytes.size())) ++waits_;
        if (w == ssize_t(bytes.size()) ||
            (w >= 0 && writeAll(c.fd, bytes.data() + w, bytes.size() - std::size_t(w), 5000)) ||
            (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && writeAll(c.fd, bytes.data(), bytes.size(), 5000))) {
            sent_ += countFrames(bytes.size());
            return true;
        }
        drop(c);
        return false;
    }

    std::uint64_t countFrames(std::size_t bytes) const {
        // Every frame of a batch has the same size in practice; count by the first one's.
        return batch_.empty() || batch_.front().size == 0 ? 0 : bytes / batch_.front().size;
    }

    int wsListen_ = -1;
    int controlListen_ = -1;
    int ep_ = -1;
    std::vector<std::unique_ptr<Client>> clients_;
    std::vector<std::unique_ptr<Client>> graveyard_;
    std::vector<Client *> all_;
    std::vector<std::vector<Client *>> groups_;
    std::vector<char> readBuf_;
    std::vector<Pending> batch_;
    std::vector<char> frames_;
    std::vector<std::uint32_t> groupsInBatch_;
    std::vector<std::vector<char>> perGroup_;
    std::vector<char> common_;
    std::uint64_t inbound_ = 0;
    std::uint64_t bad_ = 0;
    std::uint64_t sent_ = 0;
    std::uint64_t batches_ = 0, publishes_ = 0, writes_ = 0, waits_ = 0;
};

} // namespace
} // namespace wsgw::bench

int main(int argc, char **argv) {
    using namespace wsgw::bench;
    HostPort ws{"127.0.0.1", 7000}, control{"127.0.0.1", 7001};
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> std::optional<HostPort> { return i + 1 < argc ? parseHostPort(argv[++i]) : std::nullopt; };
        if (a == "--listen") {
            auto hp = next();
            if (!hp) return std::fprintf(stderr, "raw-fanout: --listen HOST:PORT\n"), 2;
            ws = *hp;
        } else if (a == "--control") {
            auto hp = next();
            if (!hp) return std::fprintf(stderr, "raw-fanout: --control HOST:PORT\n"), 2;
            control = *hp;
        } else {
            std::fprintf(stderr, "usage: raw-fanout [--listen HOST:PORT] [--control HOST:PORT]\n");
            return a == "--help" || a == "-h" ? 0 : 2;
        }
    }
    std::signal(SIGPIPE, SIG_IGN);
    auto stop = [](int) { gQuit = true; };
    std::signal(SIGINT, stop);
    std::signal(SIGTERM, stop);
    return Server().run(ws, control);
}
