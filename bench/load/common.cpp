#include "common.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

namespace wsgw::bench {

std::int64_t monoNs() noexcept {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// ---- Payload ----------------------------------------------------------------------------------

namespace {

constexpr char kHex[] = "0123456789abcdef";

void putHex(char *out, std::uint64_t v, int digits) noexcept {
    for (int i = digits - 1; i >= 0; --i) {
        out[i] = kHex[v & 15];
        v >>= 4;
    }
}

bool getHex(const char *p, int digits, std::uint64_t *v) noexcept {
    std::uint64_t r = 0;
    for (int i = 0; i < digits; ++i) {
        char c = p[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = unsigned(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = unsigned(c - 'a' + 10);
        else
            return false;
        r = (r << 4) | d;
    }
    *v = r;
    return true;
}

std::uint32_t fnv1a(const char *p, std::size_t n) noexcept {
    std::uint32_t h = 2166136261u;
    for (std::size_t i = 0; i < n; ++i) {
        h ^= static_cast<unsigned char>(p[i]);
        h *= 16777619u;
    }
    return h;
}

constexpr std::size_t kFillerAt = 44;

} // namespace

void writePayload(char *out, std::size_t size, const PayloadFields &f) noexcept {
    out[0] = 'w';
    out[1] = 'b';
    putHex(out + 2, f.stream, 2);
    putHex(out + 4, f.group, 4);
    putHex(out + 8, f.seq, 8);
    putHex(out + 16, f.pid, 12);
    putHex(out + 28, static_cast<std::uint64_t>(f.ts), 16);
    std::size_t end = size - 8;
    unsigned c = static_cast<unsigned>(f.pid % 26);
    for (std::size_t i = kFillerAt; i < end; ++i) {
        out[i] = static_cast<char>('a' + c);
        c = c == 25 ? 0 : c + 1;
    }
    putHex(out + end, fnv1a(out, end), 8);
}

bool readPayload(const char *p, std::size_t n, PayloadFields *out) noexcept {
    if (n < kMinPayload || n > kMaxPayload || p[0] != 'w' || p[1] != 'b') return false;
    std::uint64_t stream, group, seq, pid, ts, sum;
    if (!getHex(p + 2, 2, &stream) || !getHex(p + 4, 4, &group) || !getHex(p + 8, 8, &seq) ||
        !getHex(p + 16, 12, &pid) || !getHex(p + 28, 16, &ts) || !getHex(p + n - 8, 8, &sum))
        return false;
    if (fnv1a(p, n - 8) != sum) return false;
    out->stream = static_cast<std::uint32_t>(stream);
    out->group = static_cast<std::uint32_t>(group);
    out->seq = static_cast<std::uint32_t>(seq);
    out->pid = pid;
    out->ts = static_cast<std::int64_t>(ts);
    return true;
}

// ---- WebSocket --------------------------------------------------------------------------------

namespace {
// EVP_EncodeBlock writes 4 characters per 3 bytes, padded, without newlines, and a terminating
// NUL (hence the + 1).
std::string base64(const unsigned char *p, std::size_t n) {
    std::string out(4 * ((n + 2) / 3) + 1, '\0');
    int len = EVP_EncodeBlock(reinterpret_cast<unsigned char *>(out.data()), p, static_cast<int>(n));
    out.resize(static_cast<std::size_t>(len));
    return out;
}
} // namespace

std::string websocketKey() {
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        static thread_local std::mt19937_64 rng{std::random_device{}()};
        for (auto &b : raw) b = static_cast<unsigned char>(rng());
    }
    return base64(raw, sizeof raw);
}

std::string websocketAccept(std::string_view key) {
    std::string in(key);
    in += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(in.data(), in.size(), md, &len, EVP_sha1(), nullptr);
    return base64(md, len);
}

bool parseFrameHeader(const unsigned char *p, std::size_t n, FrameHeader *h) noexcept {
    if (n < 2) return false;
    h->fin = (p[0] & 0x80) != 0;
    h->rsv1 = (p[0] & 0x40) != 0;
    h->opcode = p[0] & 0x0f;
    h->masked = (p[1] & 0x80) != 0;
    std::uint64_t len = p[1] & 0x7f;
    std::size_t at = 2;
    if (len == 126) {
        if (n < 4) return false;
        len = (std::uint64_t(p[2]) << 8) | p[3];
        at = 4;
    } else if (len == 127) {
        if (n < 10) return false;
        len = 0;
        for (int i = 0; i < 8; ++i) len = (len << 8) | p[2 + i];
        at = 10;
    }
    if (h->masked) {
        if (n < at + 4) return false;
        std::memcpy(h->mask, p + at, 4);
        at += 4;
    }
    h->length = len;
    h->headerSize = at;
    return true;
}

std::size_t writeFrameHeader(unsigned char *out, std::uint8_t opcode, std::uint64_t length, bool fin,
                             const unsigned char *mask) noexcept {
    std::size_t n = 0;
    out[n++] = static_cast<unsigned char>((fin ? 0x80 : 0) | (opcode & 0x0f));
    unsigned char m = mask ? 0x80 : 0;
    if (length < 126) {
        out[n++] = static_cast<unsigned char>(m | length);
    } else if (length <= 0xffff) {
        out[n++] = static_cast<unsigned char>(m | 126);
        out[n++] = static_cast<unsigned char>(length >> 8);
        out[n++] = static_cast<unsigned char>(length);
    } else {
        out[n++] = static_cast<unsigned char>(m | 127);
        for (int s = 56; s >= 0; s -= 8) out[n++] = static_cast<unsigned char>(length >> s);
    }
    if (mask) {
        std::memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

void applyMask(unsigned char *p, std::size_t n, const unsigned char mask[4], std::size_t phase) noexcept {
    for (std::size_t i = 0; i < n; ++i) p[i] ^= mask[(i + phase) & 3];
}

// ---- HTTP bits --------------------------------------------------------------------------------

std::optional<std::string_view> headerValue(std::string_view head, std::string_view name) {
    std::size_t at = head.find("\r\n");
    while (at != std::string_view::npos && at + 2 < head.size()) {
        std::size_t start = at + 2;
        std::size_t end = head.find("\r\n", start);
        if (end == std::string_view::npos) end = head.size();
        std::string_view line = head.substr(start, end - start);
        std::size_t colon = line.find(':');
        if (colon == name.size() &&
            std::equal(name.begin(), name.end(), line.begin(),
                       [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) ==
                                                   std::tolower(static_cast<unsigned char>(b)); })) {
            std::string_view v = line.substr(colon + 1);
            while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
            while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
            return v;
        }
        at = end;
    }
    return std::nullopt;
}

std::optional<HostPort> parseHostPort(std::string_view s) {
    std::size_t colon = s.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    HostPort hp;
    if (colon > 0) hp.host = std::string(s.substr(0, colon));
    unsigned port = 0;
    auto p = s.substr(colon + 1);
    auto r = std::from_chars(p.data(), p.data() + p.size(), port);
    if (r.ec != std::errc() || r.ptr != p.data() + p.size() || port == 0 || port > 65535) return std::nullopt;
    hp.port = static_cast<std::uint16_t>(port);
    in_addr a{};
    if (inet_pton(AF_INET, hp.host.c_str(), &a) != 1) {
        if (hp.host == "localhost")
            hp.host = "127.0.0.1";
        else
            return std::nullopt; // IPv4 literals only: these tools talk to loopback
    }
    return hp;
}

std::optional<Url> parseUrl(std::string_view s) {
    Url u;
    std::size_t scheme = s.find("://");
    if (scheme == std::string_view::npos) return std::nullopt;
    u.scheme = std::string(s.substr(0, scheme));
    if (u.scheme != "ws" && u.scheme != "http") return std::nullopt;
    s.remove_prefix(scheme + 3);
    std::size_t slash = s.find('/');
    std::string_view authority = s.substr(0, slash);
    if (authority.find(':') == std::string_view::npos) {
        auto hp = parseHostPort(std::string(authority) + ":80");
        if (!hp) return std::nullopt;
        u.addr = *hp;
    } else {
        auto hp = parseHostPort(authority);
        if (!hp) return std::nullopt;
        u.addr = *hp;
    }
    if (slash != std::string_view::npos) u.path = std::string(s.substr(slash));
    return u;
}

namespace {
int connectTo(const HostPort &addr, int timeoutMs, std::string *error) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        if (error) *error = std::string("socket: ") + std::strerror(errno);
        return -1;
    }
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(addr.port);
    inet_pton(AF_INET, addr.host.c_str(), &sa.sin_addr);
    if (connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) != 0 && errno != EINPROGRESS) {
        if (error) *error = "connect " + addr.host + ":" + std::to_string(addr.port) + ": " + std::strerror(errno);
        close(fd);
        return -1;
    }
    pollfd p{fd, POLLOUT, 0};
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (poll(&p, 1, timeoutMs) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0) {
        if (error)
            *error = "connect " + addr.host + ":" + std::to_string(addr.port) + ": " +
                     (soerr ? std::strerror(soerr) : "timed out");
        close(fd);
        return -1;
    }
    return fd;
}
} // namespace

std::optional<std::string> httpGet(const Url &url, int timeoutMs, std::string *error) {
    std::int64_t deadline = monoNs() + std::int64_t(timeoutMs) * 1'000'000;
    int fd = connectTo(url.addr, timeoutMs, error);
    if (fd < 0) return std::nullopt;
    std::string req = "GET " + url.path + " HTTP/1.1\r\nHost: " + url.addr.host + ":" + std::to_string(url.addr.port) +
                      "\r\nAccept: text/plain\r\nConnection: close\r\n\r\n";
    if (!writeAll(fd, req.data(), req.size(), timeoutMs)) {
        if (error) *error = "GET " + url.path + ": cannot send the request";
        close(fd);
        return std::nullopt;
    }
    std::string resp;
    char buf[16384];
    for (;;) {
        int left = static_cast<int>((deadline - monoNs()) / 1'000'000);
        if (left <= 0) {
            if (error) *error = "GET " + url.path + ": timed out";
            close(fd);
            return std::nullopt;
        }
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, left) <= 0) continue;
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            resp.append(buf, static_cast<std::size_t>(n));
            if (resp.size() > (64u << 20)) break;
            // Done when the body is complete, whether or not the server closes (keep-alive).
            std::size_t headEnd = resp.find("\r\n\r\n");
            if (headEnd != std::string::npos) {
                auto cl = headerValue(std::string_view(resp).substr(0, headEnd + 2), "Content-Length");
                if (cl && resp.size() >= headEnd + 4 + std::strtoul(std::string(*cl).c_str(), nullptr, 10)) break;
            }
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        break;
    }
    close(fd);
    std::size_t end = resp.find("\r\n\r\n");
    if (resp.compare(0, 9, "HTTP/1.1 ") != 0 || end == std::string::npos || resp.size() < 12 || resp[9] != '2') {
        if (error) *error = "GET " + url.path + ": " + resp.substr(0, resp.find("\r\n"));
        return std::nullopt;
    }
    std::string_view head(resp.data(), end);
    std::string body = resp.substr(end + 4);
    auto te = headerValue(head, "Transfer-Encoding");
    if (te && te->find("chunked") != std::string_view::npos) {
        std::string out;
        std::size_t at = 0;
        while (at < body.size()) {
            std::size_t eol = body.find("\r\n", at);
            if (eol == std::string::npos) break;
            std::size_t size = std::strtoul(body.c_str() + at, nullptr, 16);
            if (size == 0) break;
            out.append(body, eol + 2, size);
            at = eol + 2 + size + 2;
        }
        body = std::move(out);
    }
    return body;
}

std::optional<double> numberAfter(std::string_view text, std::string_view pattern) {
    const std::size_t brace = pattern.find('{');
    const bool openLabels = brace != std::string_view::npos && pattern.find('}', brace) == std::string_view::npos;
    std::size_t at = 0;
    for (std::size_t from = 0;; from = at + 1) {
        at = text.find(pattern, from);
        if (at == std::string_view::npos) return std::nullopt;
        std::size_t after = at + pattern.size();
        if (!openLabels) {
            at = after;
            break;
        }
        // `name{sink="redis"` matches a sample whose label set begins with those labels.
        if (after < text.size() && text[after] == '}') {
            at = after + 1;
            break;
        }
        if (after < text.size() && text[after] == ',') {
            std::size_t close = text.find('}', after);
            if (close == std::string_view::npos) return std::nullopt;
            at = close + 1;
            break;
        }
    }
    while (at < text.size() && (text[at] == ' ' || text[at] == '\t' || text[at] == ':' || text[at] == '='))
        ++at;
    std::size_t end = at;
    while (end < text.size() && (std::isdigit(static_cast<unsigned char>(text[end])) || text[end] == '.' ||
                                 text[end] == 'e' || text[end] == 'E' || text[end] == '+' || text[end] == '-'))
        ++end;
    if (end == at) return std::nullopt;
    return std::strtod(std::string(text.substr(at, end - at)).c_str(), nullptr);
}

// ---- Sockets ----------------------------------------------------------------------------------

int listenTcp(const HostPort &addr, int backlog, std::string *error) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        if (error) *error = std::string("socket: ") + std::strerror(errno);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(addr.port);
    inet_pton(AF_INET, addr.host.c_str(), &sa.sin_addr);
    if (bind(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) != 0 || listen(fd, backlog) != 0) {
        if (error) *error = "listen on " + addr.host + ":" + std::to_string(addr.port) + ": " + std::strerror(errno);
        close(fd);
        return -1;
    }
    return fd;
}

void tuneSocket(int fd) noexcept {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

bool writeAll(int fd, const char *data, std::size_t n, int timeoutMs) noexcept {
    std::int64_t deadline = monoNs() + std::int64_t(timeoutMs) * 1'000'000;
    while (n > 0) {
        ssize_t w = send(fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            data += w;
            n -= static_cast<std::size_t>(w);
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
        int left = static_cast<int>((deadline - monoNs()) / 1'000'000);
        if (left <= 0) return false;
        pollfd p{fd, POLLOUT, 0};
        poll(&p, 1, left);
    }
    return true;
}

// ---- Measurement ------------------------------------------------------------------------------

void Histogram::record(std::int64_t ns) noexcept {
    if (ns < 0) ns = 0;
    std::uint64_t v = static_cast<std::uint64_t>(ns);
    int index;
    if (v < kSub) {
        index = static_cast<int>(v);
    } else {
        int msb = 63 - std::countl_zero(v); // >= 6
        int shift = msb - 6;
        index = (shift + 1) * kSub + static_cast<int>((v >> shift) & (kSub - 1));
    }
    if (index >= kBuckets) index = kBuckets - 1;
    ++buckets_[static_cast<std::size_t>(index)];
    ++count_;
    min_ = std::min(min_, ns);
    max_ = std::max(max_, ns);
}

void Histogram::merge(const Histogram &o) noexcept {
    for (std::size_t i = 0; i < buckets_.size(); ++i) buckets_[i] += o.buckets_[i];
    count_ += o.count_;
    min_ = std::min(min_, o.min_);
    max_ = std::max(max_, o.max_);
}

std::int64_t Histogram::quantile(double q) const noexcept {
    if (count_ == 0) return 0;
    auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_)));
    if (rank == 0) rank = 1;
    std::uint64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
        seen += buckets_[static_cast<std::size_t>(i)];
        if (seen >= rank) {
            std::int64_t upper;
            if (i < kSub) {
                upper = i;
            } else {
                int shift = i / kSub - 1;
                std::uint64_t base = std::uint64_t(kSub + i % kSub) << shift;
                upper = static_cast<std::int64_t>(base + (std::uint64_t(1) << shift) - 1);
            }
            return std::clamp(upper, min(), max_);
        }
    }
    return max_;
}

std::optional<std::int64_t> processCpuNs(int pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(f, line)) return std::nullopt;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    std::size_t close = line.rfind(')');
    if (close == std::string::npos) return std::nullopt;
    std::istringstream in(line.substr(close + 2));
    std::string field;
    unsigned long long utime = 0, stime = 0;
    // Field 3 is the state; utime and stime are fields 14 and 15.
    for (int i = 3; i <= 15 && in >> field; ++i) {
        if (i == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
        if (i == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
    }
    static const long tick = sysconf(_SC_CLK_TCK);
    return static_cast<std::int64_t>((utime + stime) * (1'000'000'000ull / static_cast<unsigned long long>(tick)));
}

std::optional<std::int64_t> processRssBytes(int pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(f, line)) {
        if (line.compare(0, 6, "VmRSS:") == 0) return std::strtoll(line.c_str() + 6, nullptr, 10) * 1024;
    }
    return std::nullopt;
}

std::int64_t selfCpuNs() noexcept {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    auto ns = [](const timeval &tv) { return std::int64_t(tv.tv_sec) * 1'000'000'000 + std::int64_t(tv.tv_usec) * 1000; };
    return ns(ru.ru_utime) + ns(ru.ru_stime);
}

std::string humanCount(double v) {
    char buf[32];
    if (v >= 1e9)
        std::snprintf(buf, sizeof buf, "%.2fG", v / 1e9);
    else if (v >= 1e6)
        std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
    else if (v >= 1e4)
        std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
    else
        std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
}

std::string humanNs(double ns) {
    char buf[32];
    if (ns >= 1e9)
        std::snprintf(buf, sizeof buf, "%.2f s", ns / 1e9);
    else if (ns >= 1e6)
        std::snprintf(buf, sizeof buf, "%.2f ms", ns / 1e6);
    else if (ns >= 1e3)
        std::snprintf(buf, sizeof buf, "%.1f µs", ns / 1e3);
    else
        std::snprintf(buf, sizeof buf, "%.0f ns", ns);
    return buf;
}

} // namespace wsgw::bench
