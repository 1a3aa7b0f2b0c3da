#include "ws_client.h"

#define ZLIB_CONST
#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstring>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <zlib.h>

namespace wsgw::test {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::string_view kAcceptGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
// RFC 7692 7.2.1: a compressed message is a deflate stream cut before this sync-flush tail.
constexpr std::string_view kDeflateTail("\x00\x00\xff\xff", 4);
constexpr std::size_t kMaxResponseHead = 64 * 1024;

char toLower(char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return toLower(x) == toLower(y); });
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> parts;
    for (;;) {
        auto pos = s.find(sep);
        parts.push_back(trim(s.substr(0, pos)));
        if (pos == std::string_view::npos) return parts;
        s.remove_prefix(pos + 1);
    }
}

// Sec-WebSocket-Key and -Accept are short (16 and 20 bytes). EVP_EncodeBlock writes 4 characters
// per 3 bytes, padded, without newlines, and a terminating NUL (hence the + 1).
std::string base64(const unsigned char *data, std::size_t size) {
    std::string out(4 * ((size + 2) / 3) + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char *>(out.data()), data, static_cast<int>(size));
    out.resize(static_cast<std::size_t>(n));
    return out;
}

std::string errnoText(const std::string &what, int err) {
    return what + ": " + std::strerror(err);
}

int remainingMs(Clock::time_point deadline) {
    auto now = Clock::now();
    if (now >= deadline) return 0;
    auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
    return static_cast<int>(std::min<long long>(ms, INT_MAX));
}

std::string msText(Millis ms) {
    return std::to_string(ms.count()) + " ms";
}

// The reason of the earliest error on this thread's OpenSSL queue (the root cause), queue cleared.
std::string opensslError() {
    const unsigned long first = ERR_get_error();
    ERR_clear_error();
    if (first == 0) return "unknown TLS error";
    char text[256];
    ERR_error_string_n(first, text, sizeof text);
    return text;
}

// OpenSSL writes with write(2), which raises SIGPIPE on a connection the peer has closed (the
// plain path sends with MSG_NOSIGNAL instead). Runs `f` (an OpenSSL call that may write) with
// SIGPIPE blocked in this thread and discards a SIGPIPE it raised; errno is kept.
template <class F>
int withoutSigpipe(F &&f) {
    sigset_t pipeSet, old, pending;
    sigemptyset(&pipeSet);
    sigaddset(&pipeSet, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipeSet, &old);
    sigpending(&pending);
    const bool pendingBefore = sigismember(&pending, SIGPIPE);
    const int result = f();
    const int savedErrno = errno;
    sigpending(&pending);
    if (!pendingBefore && sigismember(&pending, SIGPIPE)) {
        const timespec zero{};
        sigtimedwait(&pipeSet, nullptr, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    errno = savedErrno;
    return result;
}

bool isIpLiteral(const std::string &host) {
    in_addr a4{};
    in6_addr a6{};
    return inet_pton(AF_INET, host.c_str(), &a4) == 1 || inet_pton(AF_INET6, host.c_str(), &a6) == 1;
}

// Close codes an endpoint may put on the wire (RFC 6455 7.4, plus the IANA-registered 1012-1014).
bool isSendableCloseCode(std::uint16_t code) {
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

std::string describeEndpoint(const sockaddr_storage &addr) {
    char text[INET6_ADDRSTRLEN] = {};
    if (addr.ss_family == AF_INET) {
        const auto &in = reinterpret_cast<const sockaddr_in &>(addr);
        inet_ntop(AF_INET, &in.sin_addr, text, sizeof text);
        return std::string(text) + ":" + std::to_string(ntohs(in.sin_port));
    }
    if (addr.ss_family == AF_INET6) {
        const auto &in6 = reinterpret_cast<const sockaddr_in6 &>(addr);
        inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text);
        return "[" + std::string(text) + "]:" + std::to_string(ntohs(in6.sin6_port));
    }
    return {};
}

// Appends a frame to `out`. `declared` is the length written in the header.
void encodeFrame(std::string &out, std::uint8_t firstByte, bool masked,
                 const std::array<std::uint8_t, 4> &key, LengthEncoding encoding, std::uint64_t declared,
                 std::string_view payload) {
    out.reserve(out.size() + payload.size() + 14);
    out.push_back(static_cast<char>(firstByte));
    const std::uint8_t maskBit = masked ? 0x80 : 0x00;
    if (encoding == LengthEncoding::Minimal && declared <= 125) {
        out.push_back(static_cast<char>(maskBit | declared));
    } else if (encoding != LengthEncoding::Force64 && declared <= 0xFFFF) {
        out.push_back(static_cast<char>(maskBit | 126));
        out.push_back(static_cast<char>(declared >> 8));
        out.push_back(static_cast<char>(declared & 0xFF));
    } else {
        out.push_back(static_cast<char>(maskBit | 127));
        for (int shift = 56; shift >= 0; shift -= 8)
            out.push_back(static_cast<char>((declared >> shift) & 0xFF));
    }
    if (!masked) {
        out.append(payload);
        return;
    }
    out.append(reinterpret_cast<const char *>(key.data()), key.size());
    const std::size_t start = out.size();
    out.append(payload);
    for (std::size_t i = 0; i < payload.size(); ++i)
        out[start + i] = static_cast<char>(static_cast<std::uint8_t>(out[start + i]) ^ key[i & 3]);
}

} // namespace

std::optional<std::string> findHeader(const HeaderList &headers, std::string_view name) {
    for (const auto &[field, value] : headers)
        if (iequals(field, name)) return value;
    return std::nullopt;
}

std::string websocketAccept(std::string_view key) {
    std::string input(key);
    input += kAcceptGuid;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    if (EVP_Digest(input.data(), input.size(), digest, &size, EVP_sha1(), nullptr) != 1) return {};
    return base64(digest, size);
}

bool isValidUtf8(std::string_view data) {
    std::size_t i = 0;
    while (i < data.size()) {
        const auto lead = static_cast<std::uint8_t>(data[i]);
        if (lead < 0x80) {
            ++i;
            continue;
        }
        std::size_t length;
        std::uint32_t cp;
        if (lead >= 0xC2 && lead <= 0xDF) {
            length = 2;
            cp = lead & 0x1F;
        } else if ((lead & 0xF0) == 0xE0) {
            length = 3;
            cp = lead & 0x0F;
        } else if (lead >= 0xF0 && lead <= 0xF4) {
            length = 4;
            cp = lead & 0x07;
        } else {
            return false;
        }
        if (data.size() - i < length) return false;
        for (std::size_t k = 1; k < length; ++k) {
            const auto cont = static_cast<std::uint8_t>(data[i + k]);
            if ((cont & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (cont & 0x3F);
        }
        if (length == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return false;
        if (length == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return false;
        i += length;
    }
    return true;
}

// permessage-deflate state for one connection: one deflate stream for what we send, one inflate
// stream for what we receive, each kept across messages unless no_context_takeover applies.
struct WsClient::Deflate {
    NegotiatedDeflate params;
    z_stream def{};
    z_stream inf{};
    bool defReady = false;
    bool infReady = false;

    explicit Deflate(const NegotiatedDeflate &p)
        : params(p) {}
    ~Deflate() {
        if (defReady) deflateEnd(&def);
        if (infReady) inflateEnd(&inf);
    }
    Deflate(const Deflate &) = delete;
    Deflate &operator=(const Deflate &) = delete;

    bool init(std::string &error) {
        // zlib cannot make a raw stream with a 256-byte window (it would use 512 anyway), so a
        // server limiting us to 8 bits gets 9. libwebsockets and most servers inflate with 15.
        const int bits = std::max(params.clientMaxWindowBits, 9);
        if (deflateInit2(&def, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            error = "deflateInit2 failed";
            return false;
        }
        defReady = true;
        // The largest window inflates streams made with any smaller one.
        if (inflateInit2(&inf, -15) != Z_OK) {
            error = "inflateInit2 failed";
            return false;
        }
        infReady = true;
        return true;
    }

    bool compress(std::string_view in, std::string &out, std::string &error) {
        if (in.size() > UINT_MAX) {
            error = "message too large to compress";
            return false;
        }
        def.next_in = reinterpret_cast<const Bytef *>(in.data());
        def.avail_in = static_cast<uInt>(in.size());
        out.clear();
        for (;;) {
            const std::size_t old = out.size();
            const std::size_t chunk = 16384 + in.size() / 2;
            out.resize(old + chunk);
            def.next_out = reinterpret_cast<Bytef *>(out.data() + old);
            def.avail_out = static_cast<uInt>(chunk);
            const int ret = ::deflate(&def, Z_SYNC_FLUSH);
            out.resize(old + chunk - def.avail_out);
            if (ret == Z_BUF_ERROR) // nothing left to flush
                break;
            if (ret != Z_OK) {
                error = std::string("deflate failed: ") + (def.msg ? def.msg : std::to_string(ret));
                return false;
            }
            if (def.avail_out != 0) break;
        }
        if (out.size() < kDeflateTail.size() ||
            std::string_view(out).substr(out.size() - 4) != kDeflateTail) {
            error = "deflate output does not end with a sync flush";
            return false;
        }
        out.resize(out.size() - kDeflateTail.size());
        if (params.clientNoContextTakeover) deflateReset(&def);
        return true;
    }

    bool decompress(std::string_view in, std::string &out, std::size_t limit, std::string &error) {
        std::string input(in);
        input += kDeflateTail;
        if (input.size() > UINT_MAX) {
            error = "compressed message too large";
            return false;
        }
        inf.next_in = reinterpret_cast<const Bytef *>(input.data());
        inf.avail_in = static_cast<uInt>(input.size());
        out.clear();
        for (;;) {
            const std::size_t old = out.size();
            const std::size_t chunk = 65536;
            out.resize(old + chunk);
            inf.next_out = reinterpret_cast<Bytef *>(out.data() + old);
            inf.avail_out = static_cast<uInt>(chunk);
            const int ret = inflate(&inf, Z_SYNC_FLUSH);
            out.resize(old + chunk - inf.avail_out);
            if (out.size() > limit) {
                error = "inflated message exceeds " + std::to_string(limit) + " bytes";
                return false;
            }
            if (ret == Z_STREAM_END) {
                // A final block ends the stream: the appended tail is ignored and the next
                // message starts a new stream.
                inflateReset(&inf);
                break;
            }
            if (ret == Z_BUF_ERROR) // no progress possible: the input is used up
                break;
            if (ret != Z_OK) {
                error = std::string("inflate failed: ") + (inf.msg ? inf.msg : std::to_string(ret));
                return false;
            }
            if (inf.avail_in == 0 && inf.avail_out != 0) break;
        }
        if (params.serverNoContextTakeover) inflateReset(&inf);
        return true;
    }
};

// The TLS session of one connection (ConnectOptions::tls).
struct WsClient::Tls {
    SSL_CTX *ctx = nullptr;
    SSL *ssl = nullptr;
    bool failed = false; // a fatal error: no close_notify may be sent any more

    Tls() = default;
    ~Tls() {
        if (ssl) SSL_free(ssl);
        if (ctx) SSL_CTX_free(ctx);
    }
    Tls(const Tls &) = delete;
    Tls &operator=(const Tls &) = delete;
};

WsClient::WsClient()
    : rng_(std::random_device{}()) {}

WsClient::~WsClient() {
    reset();
}

void WsClient::reset() noexcept {
    disconnect();
    request_.clear();
    negotiated_.reset();
    deflate_.reset();
    in_.clear();
    inPos_ = 0;
    readError_.clear();
    lastLengthNonMinimal_ = false;
    inMessage_ = false;
    msgFrames_ = 0;
    msgData_.clear();
    pending_.clear();
    closeCode_.reset();
    closeReason_.clear();
    closeSent_ = false;
    eof_ = false;
    pings_.clear();
    pongs_.clear();
    frameLog_.clear();
}

bool WsClient::fail(std::string message) {
    error_ = std::move(message);
    return false;
}

void WsClient::shutdownWrite() noexcept {
    if (fd_ < 0) return;
    if (tls_ && !tls_->failed) {
        // Best effort: one try at the close_notify, whatever the socket buffer allows.
        withoutSigpipe([this] {
            ERR_clear_error();
            const int rc = SSL_shutdown(tls_->ssl);
            ERR_clear_error();
            return rc;
        });
    }
    ::shutdown(fd_, SHUT_WR);
}

std::string WsClient::tlsVersion() const {
    return tls_ ? SSL_get_version(tls_->ssl) : "";
}

void WsClient::disconnect() noexcept {
    tls_.reset(); // no close_notify: this is the abrupt close
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    open_ = false;
}

std::string WsClient::localEndpoint() const {
    if (fd_ < 0) return {};
    sockaddr_storage addr{};
    socklen_t size = sizeof addr;
    if (getsockname(fd_, reinterpret_cast<sockaddr *>(&addr), &size) != 0) return {};
    return describeEndpoint(addr);
}

HandshakeResult WsClient::connect(const std::string &host, std::uint16_t port, const std::string &path,
                                  const ConnectOptions &options) {
    HandshakeResult result;
    if (fd_ >= 0) {
        result.failure = HandshakeFailure::Misuse;
        result.error = error_ = "already connected";
        return result;
    }
    reset();
    options_ = options;
    const auto deadline = Clock::now() + options.timeout;
    const std::string portText = std::to_string(port);

    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo *list = nullptr;
    if (int rc = getaddrinfo(host.c_str(), portText.c_str(), &hints, &list); rc != 0) {
        result.failure = HandshakeFailure::Connect;
        result.error = error_ = "cannot resolve " + host + ": " + gai_strerror(rc);
        return result;
    }
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> listGuard(list, freeaddrinfo);

    std::string lastError = "no address";
    bool timedOut = false;
    for (addrinfo *ai = list; ai && !timedOut; ai = ai->ai_next) {
        int fd = ::socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            lastError = errnoText("socket", errno);
            continue;
        }
        auto closeFd = [&fd] {
            ::close(fd);
            fd = -1;
        };
        if (!options.bindAddress.empty()) {
            addrinfo bindHints{};
            bindHints.ai_family = ai->ai_family;
            bindHints.ai_socktype = SOCK_STREAM;
            bindHints.ai_flags = AI_NUMERICHOST | AI_PASSIVE;
            addrinfo *local = nullptr;
            if (getaddrinfo(options.bindAddress.c_str(), nullptr, &bindHints, &local) != 0) {
                lastError = "bind address " + options.bindAddress +
                            " is not a numeric address of the target's family";
                closeFd();
                continue;
            }
            const int rc = ::bind(fd, local->ai_addr, local->ai_addrlen);
            const int err = errno;
            freeaddrinfo(local);
            if (rc != 0) {
                lastError = errnoText("bind to " + options.bindAddress, err);
                closeFd();
                continue;
            }
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            if (errno != EINPROGRESS) {
                lastError = errnoText("connect", errno);
                closeFd();
                continue;
            }
            pollfd p{fd, POLLOUT, 0};
            int pr;
            do {
                pr = ::poll(&p, 1, remainingMs(deadline));
            } while (pr < 0 && errno == EINTR);
            if (pr <= 0) {
                lastError = pr == 0 ? "TCP connect timed out after " + msText(options.timeout)
                                    : errnoText("poll", errno);
                timedOut = pr == 0;
                closeFd();
                continue;
            }
            int soError = 0;
            socklen_t size = sizeof soError;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &size);
            if (soError != 0) {
                lastError = errnoText("connect", soError);
                closeFd();
                continue;
            }
        }
        fd_ = fd;
        break;
    }
    if (fd_ < 0) {
        result.failure = timedOut ? HandshakeFailure::Timeout : HandshakeFailure::Connect;
        result.error = error_ = "cannot connect to " + host + " port " + portText + ": " + lastError;
        return result;
    }

    if (options.tls) {
        const HandshakeFailure failure = startTls(host, options, deadline);
        if (failure != HandshakeFailure::None) {
            result.failure = failure;
            result.error = error_;
            disconnect();
            return result;
        }
    }

    const std::string hostHeader =
        (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + portText;
    result = handshake(hostHeader, path, options, deadline);
    if (result.ok()) {
        open_ = true;
    } else {
        error_ = result.error;
        disconnect();
    }
    return result;
}

// The client side of the TLS handshake on the connected socket fd_, within `deadline`. Sets
// tls_ and returns None, or returns why not with the reason in error_.
HandshakeFailure WsClient::startTls(const std::string &host, const ConnectOptions &options,
                                    Clock::time_point deadline) {
    auto tls = std::make_unique<Tls>();
    auto failTls = [&](const std::string &why) {
        error_ = "TLS with " + host + ": " + why;
        return HandshakeFailure::Tls;
    };
    ERR_clear_error();
    tls->ctx = SSL_CTX_new(TLS_client_method());
    if (!tls->ctx) return failTls("cannot create a context: " + opensslError());
    SSL_CTX_set_min_proto_version(tls->ctx, TLS1_2_VERSION);
    // Partial writes let writeAll() go on from where a write stopped, as with send().
    SSL_CTX_set_mode(tls->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    // A server that closes TCP without a close_notify is an EOF, as on a plain connection.
    SSL_CTX_set_options(tls->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    if (options.tlsVerify) {
        SSL_CTX_set_verify(tls->ctx, SSL_VERIFY_PEER, nullptr);
        const int loaded = options.tlsCaFile.empty()
                               ? SSL_CTX_set_default_verify_paths(tls->ctx)
                               : SSL_CTX_load_verify_locations(tls->ctx, options.tlsCaFile.c_str(), nullptr);
        if (loaded != 1)
            return failTls("cannot load the trusted certificates" +
                           (options.tlsCaFile.empty() ? std::string() : " from '" + options.tlsCaFile + "'") +
                           ": " + opensslError());
    }
    tls->ssl = SSL_new(tls->ctx);
    if (!tls->ssl || SSL_set_fd(tls->ssl, fd_) != 1)
        return failTls("cannot create a session: " + opensslError());
    const bool ip = isIpLiteral(host);
    if (!ip) SSL_set_tlsext_host_name(tls->ssl, host.c_str());
    if (options.tlsVerify) {
        const int set = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(tls->ssl), host.c_str())
                           : SSL_set1_host(tls->ssl, host.c_str());
        if (set != 1) return failTls("cannot set the name to verify: " + opensslError());
    }
    static constexpr unsigned char kAlpn[] = "\x08http/1.1";
    SSL_set_alpn_protos(tls->ssl, kAlpn, sizeof kAlpn - 1);

    for (;;) {
        int err = 0;
        const int rc = withoutSigpipe([&] {
            ERR_clear_error();
            errno = 0; // SSL_ERROR_SYSCALL without a failed call leaves errno as it was
            const int r = SSL_connect(tls->ssl);
            err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(tls->ssl, r);
            return r;
        });
        if (rc == 1) break;
        short events = 0;
        if (err == SSL_ERROR_WANT_READ)
            events = POLLIN;
        else if (err == SSL_ERROR_WANT_WRITE)
            events = POLLOUT;
        if (events == 0) {
            const long verify = SSL_get_verify_result(tls->ssl);
            if (options.tlsVerify && verify != X509_V_OK)
                return failTls(std::string("the server's certificate did not verify: ") +
                               X509_verify_cert_error_string(verify));
            if (err == SSL_ERROR_SYSCALL && errno != 0) return failTls(errnoText("handshake", errno));
            if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN)
                return failTls("the server closed the connection during the handshake");
            return failTls("handshake failed: " + opensslError());
        }
        pollfd p{fd_, events, 0};
        const int pr = ::poll(&p, 1, remainingMs(deadline));
        if (pr < 0 && errno != EINTR) return failTls(errnoText("poll", errno));
        if (pr == 0) {
            error_ = "TLS with " + host + ": no complete handshake within " + msText(options.timeout);
            return HandshakeFailure::Timeout;
        }
    }
    tls_ = std::move(tls);
    return HandshakeFailure::None;
}

// Takes `result` by reference so that `message` may be built from views into it.
HandshakeResult WsClient::refuse(HandshakeResult &result, HandshakeFailure failure, std::string message) {
    result.failure = failure;
    result.error = std::move(message);
    return std::move(result);
}

HandshakeResult WsClient::handshake(const std::string &hostHeader, const std::string &path,
                                    const ConnectOptions &options, Clock::time_point deadline) {
    HandshakeResult result;
    const bool raw = options.rawRequest.has_value();
    std::string key;
    if (raw) {
        request_ = *options.rawRequest;
        std::string_view rest = request_;
        while (!rest.empty()) {
            auto eol = rest.find("\r\n");
            auto line = rest.substr(0, eol);
            if (line.empty()) break;
            auto colon = line.find(':');
            if (colon != std::string_view::npos && iequals(trim(line.substr(0, colon)), "Sec-WebSocket-Key"))
                key = trim(line.substr(colon + 1));
            if (eol == std::string_view::npos) break;
            rest.remove_prefix(eol + 2);
        }
    } else {
        std::array<unsigned char, 16> nonce;
        for (auto &b : nonce)
            b = static_cast<unsigned char>(rng_());
        HeaderList fields = {
            {"Host", hostHeader},
            {"Upgrade", "websocket"},
            {"Connection", "Upgrade"},
            {"Sec-WebSocket-Key", base64(nonce.data(), nonce.size())},
            {"Sec-WebSocket-Version", "13"},
        };
        if (!options.origin.empty()) fields.emplace_back("Origin", options.origin);
        if (!options.subprotocols.empty()) {
            std::string list;
            for (const auto &p : options.subprotocols)
                list += (list.empty() ? "" : ", ") + p;
            fields.emplace_back("Sec-WebSocket-Protocol", list);
        }
        if (options.deflate.enabled) {
            std::string offer = "permessage-deflate";
            if (options.deflate.clientNoContextTakeover) offer += "; client_no_context_takeover";
            if (options.deflate.serverNoContextTakeover) offer += "; server_no_context_takeover";
            if (options.deflate.serverMaxWindowBits)
                offer += "; server_max_window_bits=" + std::to_string(*options.deflate.serverMaxWindowBits);
            if (options.deflate.clientMaxWindowBits) offer += "; client_max_window_bits";
            fields.emplace_back("Sec-WebSocket-Extensions", offer);
        }
        // A user field named like a generated one replaces it once; repeats are appended, so a
        // test can send a field twice.
        const std::size_t generated = fields.size();
        std::vector<bool> replaced(generated, false);
        for (const auto &[name, value] : options.headers) {
            std::size_t i = 0;
            while (i < generated && !(iequals(fields[i].first, name) && !replaced[i]))
                ++i;
            if (i < generated) {
                fields[i].second = value;
                replaced[i] = true;
            } else {
                fields.emplace_back(name, value);
            }
        }
        std::erase_if(fields, [&](const auto &field) {
            return std::any_of(options.omitHeaders.begin(), options.omitHeaders.end(),
                               [&](const std::string &omit) { return iequals(omit, field.first); });
        });
        key = findHeader(fields, "Sec-WebSocket-Key").value_or("");
        request_ = "GET " + path + " HTTP/1.1\r\n";
        for (const auto &[name, value] : fields)
            request_ += name + ": " + value + "\r\n";
        request_ += "\r\n";
    }

    if (!writeAll(request_)) return refuse(result, HandshakeFailure::Io, "sending the request: " + error_);

    std::size_t headEnd;
    for (;;) {
        headEnd = buffered().find("\r\n\r\n");
        if (headEnd != std::string_view::npos) break;
        if (buffered().size() > kMaxResponseHead)
            return refuse(result, HandshakeFailure::Malformed, "response head exceeds 64 KiB");
        const std::string got = " (" + std::to_string(buffered().size()) + " bytes of response received)";
        switch (readSome(deadline)) {
        case ReadStatus::Data:
            continue;
        case ReadStatus::Timeout:
            return refuse(result, HandshakeFailure::Timeout,
                          "no complete response within " + msText(options.timeout) + got);
        case ReadStatus::Eof:
            return refuse(result, HandshakeFailure::Eof,
                          "server closed the connection before a complete response" + got +
                              (readError_.empty() ? "" : ": " + readError_));
        case ReadStatus::Error:
            return refuse(result, HandshakeFailure::Io, "reading the response: " + readError_);
        }
    }
    const std::string head(buffered().substr(0, headEnd));
    consume(headEnd + 4);

    // Status line: HTTP/1.x SSS reason
    auto lines = std::string_view(head);
    auto eol = lines.find("\r\n");
    const auto statusLine = lines.substr(0, eol);
    lines = eol == std::string_view::npos ? std::string_view() : lines.substr(eol + 2);
    if (statusLine.size() < 12 || !statusLine.starts_with("HTTP/1.") || statusLine[8] != ' ' ||
        !std::all_of(statusLine.begin() + 9, statusLine.begin() + 12,
                     [](char c) { return c >= '0' && c <= '9'; }) ||
        (statusLine.size() > 12 && statusLine[12] != ' '))
        return refuse(result, HandshakeFailure::Malformed,
                      "malformed status line: \"" + std::string(statusLine) + "\"");
    result.status = std::stoi(std::string(statusLine.substr(9, 3)));
    result.reason = statusLine.size() > 13 ? std::string(statusLine.substr(13)) : std::string();
    while (!lines.empty()) {
        eol = lines.find("\r\n");
        const auto line = lines.substr(0, eol);
        lines = eol == std::string_view::npos ? std::string_view() : lines.substr(eol + 2);
        const auto colon = line.find(':');
        if (line.front() == ' ' || line.front() == '\t' || colon == std::string_view::npos || colon == 0)
            return refuse(result, HandshakeFailure::Malformed,
                          "malformed header line: \"" + std::string(line) + "\"");
        result.headers.emplace_back(std::string(line.substr(0, colon)),
                                    std::string(trim(line.substr(colon + 1))));
    }

    if (result.status != 101) {
        // Read the body of the refusal, as far as the server delimits it.
        const auto te = findHeader(result.headers, "Transfer-Encoding");
        const auto cl = findHeader(result.headers, "Content-Length");
        if (te && iequals(split(*te, ',').back(), "chunked")) {
            for (bool done = false; !done;) {
                auto lineEnd = buffered().find("\r\n");
                if (lineEnd != std::string_view::npos) {
                    const std::string sizeText(buffered().substr(0, lineEnd));
                    const std::size_t size = std::strtoul(sizeText.c_str(), nullptr, 16);
                    if (size == 0) break;
                    if (buffered().size() >= lineEnd + 2 + size + 2) {
                        result.body += buffered().substr(lineEnd + 2, size);
                        consume(lineEnd + 2 + size + 2);
                        continue;
                    }
                }
                done = readSome(deadline) != ReadStatus::Data;
            }
        } else if (cl) {
            const std::size_t length = std::strtoul(cl->c_str(), nullptr, 10);
            while (buffered().size() < length && readSome(deadline) == ReadStatus::Data) {
            }
            result.body = buffered().substr(0, length);
        } else if (result.status != 204 && result.status != 304) {
            while (readSome(deadline) == ReadStatus::Data) {
            }
            result.body = buffered();
        }
        return refuse(result, HandshakeFailure::NotUpgraded,
                      "server refused the upgrade: " + std::to_string(result.status) + " " + result.reason);
    }

    const auto upgrade = findHeader(result.headers, "Upgrade");
    if (!upgrade || !iequals(*upgrade, "websocket"))
        return refuse(result, HandshakeFailure::Invalid, "101 response without Upgrade: websocket");
    const std::string connection = findHeader(result.headers, "Connection").value_or("");
    const auto tokens = split(connection, ',');
    if (std::none_of(tokens.begin(), tokens.end(), [](std::string_view t) { return iequals(t, "upgrade"); }))
        return refuse(result, HandshakeFailure::Invalid, "101 response without Connection: Upgrade");
    if (!raw || !key.empty()) {
        const auto accept = findHeader(result.headers, "Sec-WebSocket-Accept");
        const std::string expected = websocketAccept(key);
        if (!accept)
            return refuse(result, HandshakeFailure::Invalid, "101 response without Sec-WebSocket-Accept");
        if (*accept != expected)
            return refuse(result, HandshakeFailure::Invalid,
                          "Sec-WebSocket-Accept is \"" + *accept + "\", expected \"" + expected + "\"");
    }

    std::size_t protocolFields = 0;
    for (const auto &[name, value] : result.headers) {
        if (!iequals(name, "Sec-WebSocket-Protocol")) continue;
        ++protocolFields;
        result.subprotocol = value;
    }
    if (protocolFields > 1)
        return refuse(result, HandshakeFailure::Invalid, "more than one Sec-WebSocket-Protocol field");
    if (protocolFields == 1 && !raw &&
        std::find(options.subprotocols.begin(), options.subprotocols.end(), result.subprotocol) ==
            options.subprotocols.end())
        return refuse(result, HandshakeFailure::Invalid,
                      "server selected subprotocol \"" + result.subprotocol + "\", which was not offered");

    if (!raw) {
        for (const auto &[name, value] : result.headers) {
            if (!iequals(name, "Sec-WebSocket-Extensions")) continue;
            for (auto extension : split(value, ',')) {
                auto params = split(extension, ';');
                if (!iequals(params.front(), "permessage-deflate") || !options.deflate.enabled)
                    return refuse(result, HandshakeFailure::Invalid,
                                  "server accepted extension \"" + std::string(extension) +
                                      "\", which was not offered");
                if (result.deflate)
                    return refuse(result, HandshakeFailure::Invalid, "permessage-deflate accepted twice");
                NegotiatedDeflate nd;
                nd.clientNoContextTakeover = options.deflate.clientNoContextTakeover;
                bool seen[4] = {};
                bool serverNoContextTakeover = false;
                bool serverBits = false;
                for (std::size_t i = 1; i < params.size(); ++i) {
                    auto eq = params[i].find('=');
                    auto pname = trim(params[i].substr(0, eq));
                    std::optional<std::string_view> pvalue;
                    if (eq != std::string_view::npos) {
                        auto v = trim(params[i].substr(eq + 1));
                        if (v.size() >= 2 && v.front() == '"' && v.back() == '"')
                            v = v.substr(1, v.size() - 2);
                        pvalue = v;
                    }
                    auto bits = [&]() -> int {
                        if (!pvalue || pvalue->size() < 1 || pvalue->size() > 2 ||
                            !std::all_of(pvalue->begin(), pvalue->end(),
                                         [](char c) { return c >= '0' && c <= '9'; }))
                            return 0;
                        const int n = std::stoi(std::string(*pvalue));
                        return n >= 8 && n <= 15 ? n : 0;
                    };
                    int index;
                    bool valid = true;
                    if (pname == "server_no_context_takeover") {
                        index = 0;
                        valid = !pvalue;
                        serverNoContextTakeover = true;
                        nd.serverNoContextTakeover = true;
                    } else if (pname == "client_no_context_takeover") {
                        index = 1;
                        valid = !pvalue;
                        nd.clientNoContextTakeover = true;
                    } else if (pname == "server_max_window_bits") {
                        index = 2;
                        nd.serverMaxWindowBits = bits();
                        valid = nd.serverMaxWindowBits != 0 &&
                                nd.serverMaxWindowBits <= options.deflate.serverMaxWindowBits.value_or(15);
                        serverBits = true;
                    } else if (pname == "client_max_window_bits") {
                        index = 3;
                        nd.clientMaxWindowBits = bits();
                        valid = nd.clientMaxWindowBits != 0 && options.deflate.clientMaxWindowBits;
                    } else {
                        return refuse(result, HandshakeFailure::Invalid,
                                      "unknown permessage-deflate parameter \"" + std::string(params[i]) +
                                          "\"");
                    }
                    if (!valid || seen[index])
                        return refuse(result, HandshakeFailure::Invalid,
                                      "invalid or repeated permessage-deflate parameter \"" +
                                          std::string(params[i]) + "\"");
                    seen[index] = true;
                }
                // RFC 7692 7.1.1.1 and 7.1.2.1: a server accepting these offered parameters
                // must echo them.
                if (options.deflate.serverNoContextTakeover && !serverNoContextTakeover)
                    return refuse(
                        result, HandshakeFailure::Invalid,
                        "server accepted permessage-deflate without the offered server_no_context_takeover");
                if (options.deflate.serverMaxWindowBits && !serverBits)
                    return refuse(
                        result, HandshakeFailure::Invalid,
                        "server accepted permessage-deflate without the offered server_max_window_bits");
                result.deflate = nd;
            }
        }
        if (result.deflate) {
            auto state = std::make_unique<Deflate>(*result.deflate);
            std::string error;
            if (!state->init(error)) return refuse(result, HandshakeFailure::Invalid, error);
            deflate_ = std::move(state);
            negotiated_ = result.deflate;
        }
    }

    result.failure = HandshakeFailure::None;
    return result;
}

bool WsClient::writeAll(std::string_view data) {
    if (fd_ < 0) return fail("not connected");
    const auto deadline = Clock::now() + options_.sendTimeout;
    while (tls_ && !data.empty()) {
        int err = 0;
        const int n = withoutSigpipe([&] {
            ERR_clear_error();
            errno = 0;
            const auto size = static_cast<int>(std::min<std::size_t>(data.size(), INT_MAX));
            const int r = SSL_write(tls_->ssl, data.data(), size);
            err = r > 0 ? SSL_ERROR_NONE : SSL_get_error(tls_->ssl, r);
            return r;
        });
        if (n > 0) {
            data.remove_prefix(static_cast<std::size_t>(n));
            continue;
        }
        // A write that must wait is retried with the same bytes, as OpenSSL requires.
        const short events = err == SSL_ERROR_WANT_WRITE ? POLLOUT : err == SSL_ERROR_WANT_READ ? POLLIN : 0;
        if (events == 0) {
            tls_->failed = true;
            if (err == SSL_ERROR_SYSCALL && errno != 0) return fail(errnoText("send (TLS)", errno));
            return fail("send (TLS): " + opensslError());
        }
        pollfd p{fd_, events, 0};
        const int pr = ::poll(&p, 1, remainingMs(deadline));
        if (pr < 0 && errno != EINTR) return fail(errnoText("poll", errno));
        if (pr == 0)
            return fail("send timed out after " + msText(options_.sendTimeout) + " with " +
                        std::to_string(data.size()) + " bytes unsent");
    }
    while (!data.empty()) {
        const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
        if (n > 0) {
            data.remove_prefix(static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            pollfd p{fd_, POLLOUT, 0};
            const int pr = ::poll(&p, 1, remainingMs(deadline));
            if (pr < 0 && errno != EINTR) return fail(errnoText("poll", errno));
            if (pr == 0)
                return fail("send timed out after " + msText(options_.sendTimeout) + " with " +
                            std::to_string(data.size()) + " bytes unsent");
            continue;
        }
        return fail(errnoText("send", errno));
    }
    return true;
}

WsClient::ReadStatus WsClient::readSome(Clock::time_point deadline) {
    if (fd_ < 0) {
        readError_ = "not connected";
        return ReadStatus::Error;
    }
    if (eof_) return ReadStatus::Eof;
    if (inPos_ > 0 && inPos_ >= in_.size() / 2) {
        in_.erase(0, inPos_);
        inPos_ = 0;
    }
    while (tls_) {
        // SSL_read comes before any poll: bytes OpenSSL has already taken from the socket
        // (SSL_pending) would not wake poll().
        char chunk[65536];
        int err = 0;
        const int n = withoutSigpipe([&] {
            ERR_clear_error();
            errno = 0;
            const int r = SSL_read(tls_->ssl, chunk, sizeof chunk);
            err = r > 0 ? SSL_ERROR_NONE : SSL_get_error(tls_->ssl, r);
            return r;
        });
        if (n > 0) {
            in_.append(chunk, static_cast<std::size_t>(n));
            return ReadStatus::Data;
        }
        short events = 0;
        switch (err) {
        case SSL_ERROR_ZERO_RETURN: // close_notify, or TCP closed (SSL_OP_IGNORE_UNEXPECTED_EOF)
            eof_ = true;
            return ReadStatus::Eof;
        case SSL_ERROR_WANT_READ:
            events = POLLIN;
            break;
        case SSL_ERROR_WANT_WRITE:
            events = POLLOUT;
            break;
        case SSL_ERROR_SYSCALL:
            if (errno == EINTR) continue;
            tls_->failed = true;
            eof_ = true;
            if (errno == ECONNRESET || errno == 0) {
                if (errno == ECONNRESET) readError_ = "connection reset by peer";
                return ReadStatus::Eof;
            }
            readError_ = errnoText("recv (TLS)", errno);
            return ReadStatus::Error;
        default:
            tls_->failed = true;
            readError_ = "TLS: " + opensslError();
            return ReadStatus::Error;
        }
        pollfd p{fd_, events, 0};
        const int pr = ::poll(&p, 1, remainingMs(deadline));
        if (pr < 0 && errno != EINTR) {
            readError_ = errnoText("poll", errno);
            return ReadStatus::Error;
        }
        if (pr == 0) return ReadStatus::Timeout;
    }
    for (;;) {
        char chunk[65536];
        const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
        if (n > 0) {
            in_.append(chunk, static_cast<std::size_t>(n));
            return ReadStatus::Data;
        }
        if (n == 0) {
            eof_ = true;
            return ReadStatus::Eof;
        }
        if (errno == EINTR) continue;
        if (errno == ECONNRESET) {
            eof_ = true;
            readError_ = "connection reset by peer";
            return ReadStatus::Eof;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            readError_ = errnoText("recv", errno);
            return ReadStatus::Error;
        }
        pollfd p{fd_, POLLIN, 0};
        const int pr = ::poll(&p, 1, remainingMs(deadline));
        if (pr < 0 && errno != EINTR) {
            readError_ = errnoText("poll", errno);
            return ReadStatus::Error;
        }
        if (pr == 0) return ReadStatus::Timeout;
    }
}

void WsClient::consume(std::size_t n) {
    inPos_ += n;
    if (inPos_ >= in_.size()) {
        in_.clear();
        inPos_ = 0;
    }
}

WsClient::ParseStatus WsClient::parseFrame(Frame &frame) {
    const auto b = buffered();
    auto byte = [&b](std::size_t i) { return static_cast<std::uint8_t>(b[i]); };
    if (b.size() < 2) return ParseStatus::Incomplete;
    std::uint64_t length = byte(1) & 0x7F;
    std::size_t pos = 2;
    lastLengthNonMinimal_ = false;
    if (length == 126) {
        if (b.size() < 4) return ParseStatus::Incomplete;
        length = std::uint64_t{byte(2)} << 8 | byte(3);
        pos = 4;
        lastLengthNonMinimal_ = length <= 125;
    } else if (length == 127) {
        if (b.size() < 10) return ParseStatus::Incomplete;
        length = 0;
        for (std::size_t i = 2; i < 10; ++i)
            length = length << 8 | byte(i);
        pos = 10;
        if (length >> 63) {
            readError_ = "frame length has its most significant bit set";
            return ParseStatus::Error;
        }
        lastLengthNonMinimal_ = length <= 0xFFFF;
    }
    if (length > options_.maxMessageSize) {
        readError_ = "frame of " + std::to_string(length) + " bytes exceeds the limit of " +
                     std::to_string(options_.maxMessageSize);
        return ParseStatus::Error;
    }
    const bool masked = byte(1) & 0x80;
    std::array<std::uint8_t, 4> key{};
    if (masked) {
        if (b.size() < pos + 4) return ParseStatus::Incomplete;
        for (std::size_t i = 0; i < 4; ++i)
            key[i] = byte(pos + i);
        pos += 4;
    }
    if (b.size() - pos < length) return ParseStatus::Incomplete;
    frame.fin = byte(0) & 0x80;
    frame.rsv1 = byte(0) & 0x40;
    frame.rsv2 = byte(0) & 0x20;
    frame.rsv3 = byte(0) & 0x10;
    frame.opcode = byte(0) & 0x0F;
    frame.masked = masked;
    frame.payload.assign(b.substr(pos, static_cast<std::size_t>(length)));
    if (masked)
        for (std::size_t i = 0; i < frame.payload.size(); ++i)
            frame.payload[i] = static_cast<char>(static_cast<std::uint8_t>(frame.payload[i]) ^ key[i & 3]);
    consume(pos + static_cast<std::size_t>(length));
    return ParseStatus::Frame;
}

FrameResult WsClient::readFrame(Clock::time_point deadline) {
    FrameResult result;
    for (;;) {
        const auto parsed = parseFrame(result.frame);
        if (parsed == ParseStatus::Frame) {
            if (options_.recordFrames) frameLog_.push_back(result.frame);
            result.kind = FrameResult::Kind::Frame;
            return result;
        }
        if (parsed == ParseStatus::Error) {
            result.kind = FrameResult::Kind::Error;
            result.error = error_ = "protocol violation by the server: " + readError_;
            return result;
        }
        switch (readSome(deadline)) {
        case ReadStatus::Data:
            continue;
        case ReadStatus::Timeout:
            result.kind = FrameResult::Kind::Timeout;
            result.error = error_ = "timed out";
            return result;
        case ReadStatus::Eof:
            result.kind = FrameResult::Kind::Eof;
            result.error = readError_;
            if (!buffered().empty())
                result.error += (result.error.empty() ? "" : "; ") + std::string("EOF inside a frame (") +
                                std::to_string(buffered().size()) + " bytes buffered)";
            if (inMessage_)
                result.error +=
                    (result.error.empty() ? "" : "; ") + std::string("EOF inside a fragmented message");
            if (result.error.empty()) result.error = "connection closed by the server";
            error_ = result.error;
            return result;
        case ReadStatus::Error:
            result.kind = FrameResult::Kind::Error;
            result.error = error_ = readError_;
            return result;
        }
    }
}

FrameResult WsClient::receiveFrame(Millis timeout) {
    if (fd_ < 0) {
        FrameResult result;
        result.kind = FrameResult::Kind::Error;
        result.error = error_ = "not connected";
        return result;
    }
    return readFrame(Clock::now() + timeout);
}

Received WsClient::handleFrame(Frame &frame, bool &complete) {
    Received r;
    complete = true;
    auto violation = [&](const std::string &what) {
        r.kind = Received::Kind::Error;
        r.error = error_ = "protocol violation by the server: " + what;
        return r;
    };
    const std::string opcodeText = "opcode " + std::to_string(frame.opcode);
    if (frame.masked) return violation("masked frame (" + opcodeText + ")");
    if (frame.rsv2 || frame.rsv3) return violation("RSV2 or RSV3 set (" + opcodeText + ")");
    if (lastLengthNonMinimal_)
        return violation("payload length not in its minimal encoding (" + opcodeText + ")");
    switch (static_cast<Opcode>(frame.opcode)) {
    case Opcode::Continuation:
    case Opcode::Text:
    case Opcode::Binary:
    case Opcode::Close:
    case Opcode::Ping:
    case Opcode::Pong:
        break;
    default:
        return violation("reserved " + opcodeText);
    }

    if (frame.opcode & 0x08) {
        if (!frame.fin) return violation("fragmented control frame (" + opcodeText + ")");
        if (frame.rsv1) return violation("RSV1 on a control frame (" + opcodeText + ")");
        if (frame.payload.size() > 125)
            return violation("control frame with a " + std::to_string(frame.payload.size()) +
                             "-byte payload");
        if (frame.opcode == static_cast<std::uint8_t>(Opcode::Ping)) {
            pings_.push_back(frame.payload);
            if (options_.answerPings && !closeSent_ && !sendPong(frame.payload)) {
                r.kind = Received::Kind::Error;
                r.error = "answering a ping: " + error_;
                return r;
            }
            complete = false;
            return r;
        }
        if (frame.opcode == static_cast<std::uint8_t>(Opcode::Pong)) {
            pongs_.push_back(frame.payload);
            complete = false;
            return r;
        }
        if (frame.payload.size() == 1) return violation("close frame with a 1-byte payload");
        r.kind = Received::Kind::Close;
        if (frame.payload.empty()) {
            r.closeCode = 1005;
        } else {
            r.closeCode = static_cast<std::uint16_t>(static_cast<std::uint8_t>(frame.payload[0]) << 8 |
                                                     static_cast<std::uint8_t>(frame.payload[1]));
            r.closeReason = frame.payload.substr(2);
        }
        closeCode_ = r.closeCode;
        closeReason_ = r.closeReason;
        if (!frame.payload.empty() && !isSendableCloseCode(r.closeCode))
            return violation("close code " + std::to_string(r.closeCode) + " is not allowed on the wire");
        if (!isValidUtf8(r.closeReason)) return violation("close reason is not valid UTF-8");
        if (options_.answerClose && !closeSent_) {
            // Best effort: the server may already have closed TCP.
            const std::string saved = error_;
            const bool sent = frame.payload.empty() ? sendCloseEmpty() : sendClose(r.closeCode);
            if (!sent) error_ = saved;
        }
        return r;
    }

    if (frame.opcode == static_cast<std::uint8_t>(Opcode::Continuation)) {
        if (!inMessage_) return violation("continuation frame without a message in progress");
        if (frame.rsv1) return violation("RSV1 on a continuation frame");
    } else {
        if (inMessage_) return violation("new data frame (" + opcodeText + ") inside a fragmented message");
        if (frame.rsv1 && !deflate_) return violation("RSV1 set but permessage-deflate was not negotiated");
        inMessage_ = true;
        msgOpcode_ = static_cast<Opcode>(frame.opcode);
        msgCompressed_ = frame.rsv1;
        msgFrames_ = 0;
        msgData_.clear();
    }
    if (msgData_.size() + frame.payload.size() > options_.maxMessageSize)
        return violation("message exceeds the limit of " + std::to_string(options_.maxMessageSize) +
                         " bytes");
    msgData_ += frame.payload;
    ++msgFrames_;
    if (!frame.fin) {
        complete = false;
        return r;
    }
    inMessage_ = false;
    r.kind = Received::Kind::Message;
    r.opcode = msgOpcode_;
    r.compressed = msgCompressed_;
    r.frames = msgFrames_;
    if (msgCompressed_) {
        std::string error;
        if (!deflate_->decompress(msgData_, r.data, options_.maxMessageSize, error))
            return violation("cannot inflate the message: " + error);
    } else {
        r.data = std::move(msgData_);
    }
    msgData_.clear();
    if (r.opcode == Opcode::Text && !isValidUtf8(r.data)) return violation("text message is not valid UTF-8");
    return r;
}

Received WsClient::nextEvent(Clock::time_point deadline) {
    for (;;) {
        auto fr = readFrame(deadline);
        Received r;
        switch (fr.kind) {
        case FrameResult::Kind::Frame: {
            bool complete = false;
            r = handleFrame(fr.frame, complete);
            if (complete) return r;
            continue;
        }
        case FrameResult::Kind::Timeout:
            r.kind = Received::Kind::Timeout;
            break;
        case FrameResult::Kind::Eof:
            r.kind = Received::Kind::Eof;
            break;
        case FrameResult::Kind::Error:
            r.kind = Received::Kind::Error;
            break;
        }
        r.error = fr.error;
        return r;
    }
}

Received WsClient::receive(Millis timeout) {
    if (!pending_.empty()) {
        Received r = std::move(pending_.front());
        pending_.pop_front();
        return r;
    }
    if (fd_ < 0) {
        Received r;
        r.kind = Received::Kind::Error;
        r.error = error_ = "not connected";
        return r;
    }
    return nextEvent(Clock::now() + timeout);
}

std::optional<std::string> WsClient::waitPong(Millis timeout) {
    if (fd_ < 0) {
        fail("not connected");
        return std::nullopt;
    }
    const auto deadline = Clock::now() + timeout;
    const std::size_t seen = pongs_.size();
    for (;;) {
        auto fr = readFrame(deadline);
        if (fr.kind != FrameResult::Kind::Frame) return std::nullopt;
        bool complete = false;
        auto r = handleFrame(fr.frame, complete);
        if (complete) {
            if (r.kind == Received::Kind::Error) return std::nullopt;
            const bool closed = r.kind == Received::Kind::Close;
            pending_.push_back(std::move(r));
            if (closed) {
                fail("the server sent a close frame before a pong");
                return std::nullopt;
            }
            continue;
        }
        if (pongs_.size() > seen) return pongs_[seen];
    }
}

CloseResult WsClient::waitClosed(Millis timeout) {
    CloseResult result;
    const auto deadline = Clock::now() + timeout;
    for (const auto &r : pending_)
        if (r.kind == Received::Kind::Message) ++result.discardedMessages;
    pending_.clear();
    if (!closeCode_) {
        if (fd_ < 0) {
            result.kind = CloseResult::Kind::Error;
            result.error = error_ = "not connected";
            return result;
        }
        for (bool closed = false; !closed;) {
            auto r = nextEvent(deadline);
            switch (r.kind) {
            case Received::Kind::Message:
                ++result.discardedMessages;
                break;
            case Received::Kind::Close:
                closed = true;
                break;
            case Received::Kind::Timeout:
                result.kind = CloseResult::Kind::Timeout;
                result.error = r.error;
                return result;
            case Received::Kind::Eof:
                result.kind = CloseResult::Kind::Eof;
                result.code = 1006;
                result.tcpClosed = true;
                result.error = r.error;
                return result;
            case Received::Kind::Error:
                result.kind = CloseResult::Kind::Error;
                result.error = r.error;
                return result;
            }
        }
    }
    result.kind = CloseResult::Kind::CloseFrame;
    result.code = *closeCode_;
    result.reason = closeReason_;
    if (fd_ < 0) return result;
    // The server closes TCP first (RFC 6455 7.1.1); anything it sends meanwhile is dropped.
    for (;;) {
        consume(buffered().size());
        const auto status = readSome(deadline);
        if (status == ReadStatus::Eof) {
            result.tcpClosed = true;
            break;
        }
        if (status != ReadStatus::Data) break;
    }
    return result;
}

bool WsClient::sendFrame(std::uint8_t opcode, bool fin, bool rsv1, std::string_view payload) {
    if (fd_ < 0) return fail("not connected");
    std::array<std::uint8_t, 4> key;
    for (auto &b : key)
        b = static_cast<std::uint8_t>(rng_());
    std::string out;
    const auto firstByte = static_cast<std::uint8_t>((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0F));
    encodeFrame(out, firstByte, true, key, LengthEncoding::Minimal, payload.size(), payload);
    return writeAll(out);
}

std::optional<std::string> WsClient::compress(std::string_view data) {
    std::string out;
    std::string error;
    if (!deflate_->compress(data, out, error)) {
        fail(error);
        return std::nullopt;
    }
    return out;
}

bool WsClient::sendMessage(Opcode opcode, std::string_view data, Compression c) {
    if (fd_ < 0) return fail("not connected");
    if (c == Compression::Negotiated && deflate_) {
        auto compressed = compress(data);
        return compressed && sendFrame(static_cast<std::uint8_t>(opcode), true, true, *compressed);
    }
    return sendFrame(static_cast<std::uint8_t>(opcode), true, false, data);
}

bool WsClient::sendText(std::string_view text, Compression c) {
    return sendMessage(Opcode::Text, text, c);
}

bool WsClient::sendBinary(std::string_view data, Compression c) {
    return sendMessage(Opcode::Binary, data, c);
}

bool WsClient::sendInvalidUtf8Text() {
    // 0xC3 starts a 2-byte sequence that 0x28 does not continue.
    return sendFrame(static_cast<std::uint8_t>(Opcode::Text), true, false, "invalid \xC3\x28 utf-8");
}

bool WsClient::sendFragmented(Opcode opcode, std::string_view data, const std::vector<std::size_t> &sizes,
                              const FragmentOptions &options) {
    if (fd_ < 0) return fail("not connected");
    std::string compressed;
    std::string_view payload = data;
    bool rsv1 = false;
    if (options.compression == Compression::Negotiated && deflate_) {
        auto z = compress(data);
        if (!z) return false;
        compressed = std::move(*z);
        payload = compressed;
        rsv1 = true;
    }
    std::vector<std::string_view> parts;
    for (std::size_t size : sizes) {
        const std::size_t n = std::min(size, payload.size());
        parts.push_back(payload.substr(0, n));
        payload.remove_prefix(n);
    }
    if (!payload.empty() || parts.empty()) parts.push_back(payload);
    for (std::size_t i = 0; i < parts.size(); ++i) {
        if (i > 0) {
            if (options.delayBetween.count() > 0) std::this_thread::sleep_for(options.delayBetween);
            if (options.pingBetween && !sendPing(*options.pingBetween)) return false;
        }
        const auto op =
            i == 0 ? static_cast<std::uint8_t>(opcode) : static_cast<std::uint8_t>(Opcode::Continuation);
        if (!sendFrame(op, i + 1 == parts.size(), i == 0 && rsv1, parts[i])) return false;
    }
    return true;
}

bool WsClient::sendPing(std::string_view payload) {
    return sendFrame(static_cast<std::uint8_t>(Opcode::Ping), true, false, payload);
}

bool WsClient::sendPong(std::string_view payload) {
    return sendFrame(static_cast<std::uint8_t>(Opcode::Pong), true, false, payload);
}

bool WsClient::sendClose(std::uint16_t code, std::string_view reason) {
    std::string payload;
    payload.push_back(static_cast<char>(code >> 8));
    payload.push_back(static_cast<char>(code & 0xFF));
    payload += reason;
    if (!sendFrame(static_cast<std::uint8_t>(Opcode::Close), true, false, payload)) return false;
    closeSent_ = true;
    return true;
}

bool WsClient::sendCloseEmpty() {
    if (!sendFrame(static_cast<std::uint8_t>(Opcode::Close), true, false, {})) return false;
    closeSent_ = true;
    return true;
}

bool WsClient::sendRaw(const RawFrame &frame) {
    if (fd_ < 0) return fail("not connected");
    if (frame.opcode > 0x0F) return fail("RawFrame opcode must be 0..15");
    const std::uint64_t declared = frame.declaredLength.value_or(frame.payload.size());
    if (frame.encoding == LengthEncoding::Force16 && declared > 0xFFFF)
        return fail("LengthEncoding::Force16 with a length above 65535");
    std::array<std::uint8_t, 4> key;
    if (frame.maskKey)
        key = *frame.maskKey;
    else
        for (auto &b : key)
            b = static_cast<std::uint8_t>(rng_());
    const auto firstByte =
        static_cast<std::uint8_t>((frame.fin ? 0x80 : 0) | (frame.rsv1 ? 0x40 : 0) | (frame.rsv2 ? 0x20 : 0) |
                                  (frame.rsv3 ? 0x10 : 0) | frame.opcode);
    std::string out;
    encodeFrame(out, firstByte, frame.masked, key, frame.encoding, declared, frame.payload);
    return writeAll(out);
}

bool WsClient::sendBytes(std::string_view bytes) {
    return writeAll(bytes);
}

} // namespace wsgw::test
