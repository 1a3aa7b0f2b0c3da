#include "http_exchange.h"

#include <cstring>

namespace wsgw::daemon {

namespace {

// The request's bytes in, the response's bytes out. End of input reads as a closed
// connection, which is where cpp-httplib stops reading a body that has no length.
class MemoryStream final : public httplib::Stream {
public:
    MemoryStream(std::string_view in, const Peer &peer, std::string &out) : in_(in), peer_(peer), out_(out) {}

    bool is_readable() const override { return true; }
    bool is_writable() const override { return true; }
    ssize_t read(char *ptr, size_t size) override {
        size_t n = std::min(size, in_.size() - pos_);
        std::memcpy(ptr, in_.data() + pos_, n);
        pos_ += n;
        return static_cast<ssize_t>(n);
    }
    ssize_t write(const char *ptr, size_t size) override {
        out_.append(ptr, size);
        return static_cast<ssize_t>(size);
    }
    void get_remote_ip_and_port(std::string &ip, int &port) const override {
        ip = peer_.remoteAddr;
        port = peer_.remotePort;
    }
    void get_local_ip_and_port(std::string &ip, int &port) const override {
        ip = peer_.localAddr;
        port = peer_.localPort;
    }
    // Not a socket. (cpp-httplib built without CPPHTTPLIB_USE_POLL answers 500 for a socket
    // at or above FD_SETSIZE; -1 is below it, so the check cannot misfire here.)
    socket_t socket() const override { return INVALID_SOCKET; }

private:
    std::string_view in_;
    size_t pos_ = 0;
    const Peer &peer_;
    std::string &out_;
};

// The exchange() running on this thread, for openStream().
thread_local Exchange *tCurrent = nullptr;

struct CurrentExchange {
    explicit CurrentExchange(Exchange &ex) { tCurrent = &ex; }
    ~CurrentExchange() { tCurrent = nullptr; }
};

std::string streamHead(const StreamSource &s) {
    return "HTTP/1.1 200 OK\r\nContent-Type: " + s.contentType +
           "\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n";
}

const char *reasonPhrase(int status) {
    switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

} // namespace

std::string plainResponse(int status, std::string_view text, bool close, bool retryAfter) {
    std::string r = "HTTP/1.1 " + std::to_string(status) + " " + reasonPhrase(status) + "\r\n";
    if (close) r += "Connection: close\r\n";
    r += "Content-Length: " + std::to_string(text.size() + 1) + "\r\n";
    r += "Content-Type: text/plain; charset=utf-8\r\n";
    if (retryAfter) r += "Retry-After: 1\r\n";
    r += "\r\n";
    r += text;
    r += "\n";
    return r;
}

Exchange HttpRouter::exchange(std::string_view request, const Peer &peer, bool closeAfter) noexcept {
    Exchange ex;
    try {
        MemoryStream stream(request, peer, ex.response);
        bool closed = false;
        bool ok;
        {
            CurrentExchange current(ex);
            ok = process_request(stream, closeAfter, closed, nullptr);
        }
        if (ex.stream) {
            ex.response = streamHead(*ex.stream);
            ex.close = true;
            return ex;
        }
        ex.close = closeAfter || closed || !ok || ex.response.empty();
        if (!ex.response.empty()) return ex;
    } catch (...) {
    }
    ex.stream.reset();
    ex.response = plainResponse(500, "internal error: the request could not be processed", true);
    ex.close = true;
    return ex;
}

bool HttpRouter::openStream(StreamSource source) {
    if (!tCurrent || !source.next) return false;
    tCurrent->stream = std::make_shared<const StreamSource>(std::move(source));
    return true;
}

} // namespace wsgw::daemon
