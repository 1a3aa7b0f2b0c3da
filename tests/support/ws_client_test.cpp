// Unit tests of the WebSocket test client, against a minimal echo server defined below.

#include "skip.h"
#include "ws_client.h"

#include <doctest/doctest.h>

#define ZLIB_CONST
#include <arpa/inet.h>
#include <atomic>
#include <climits>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <zlib.h>

using namespace wsgw::test;
using namespace std::chrono_literals;

namespace {

// ---------------------------------------------------------------------------------------------
// Echo server: just enough of RFC 6455/7692 on the server side to exercise the client. One
// thread per connection. The request path picks a behaviour; text messages starting with "cmd:"
// make the server do something instead of echoing (see Session::command()). Everything else is
// echoed back as one frame, compressed if it arrived compressed. Given a TLS context, it speaks
// TLS (the client's wss://) on every connection.
// ---------------------------------------------------------------------------------------------

constexpr std::string_view kTail("\x00\x00\xff\xff", 4);

struct SeenFrame {
    std::uint8_t opcode;
    bool fin;
    bool rsv1;
    std::size_t size;
};

struct WireFrame {
    std::uint8_t opcode = 0;
    bool fin = false, rsv1 = false, rsv2 = false, rsv3 = false, masked = false;
    std::string payload;
};

std::string lowerCase(std::string s) {
    for (auto &c : s)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::string deflateMessage(z_stream &z, std::string_view in) {
    z.next_in = reinterpret_cast<const Bytef *>(in.data());
    z.avail_in = static_cast<uInt>(in.size());
    std::string out;
    int ret;
    do {
        char buf[16384];
        z.next_out = reinterpret_cast<Bytef *>(buf);
        z.avail_out = sizeof buf;
        ret = deflate(&z, Z_SYNC_FLUSH);
        out.append(buf, sizeof buf - z.avail_out);
    } while (ret == Z_OK && z.avail_out == 0);
    // No doctest assertions here: this runs on the server's threads.
    if (out.size() >= 4 && std::string_view(out).substr(out.size() - 4) == kTail) out.resize(out.size() - 4);
    return out;
}

std::string inflateMessage(z_stream &z, std::string_view in) {
    std::string input(in);
    input += kTail;
    z.next_in = reinterpret_cast<const Bytef *>(input.data());
    z.avail_in = static_cast<uInt>(input.size());
    std::string out;
    while (z.avail_in > 0) {
        char buf[16384];
        z.next_out = reinterpret_cast<Bytef *>(buf);
        z.avail_out = sizeof buf;
        const int ret = inflate(&z, Z_SYNC_FLUSH);
        out.append(buf, sizeof buf - z.avail_out);
        if (ret != Z_OK) break;
    }
    return out;
}

class EchoServer {
public:
    explicit EchoServer(const char *address = "127.0.0.1", SSL_CTX *tls = nullptr)
        : tls_(tls) {
        sockaddr_storage addr{};
        socklen_t size;
        int family;
        if (std::strchr(address, ':')) {
            auto &a6 = reinterpret_cast<sockaddr_in6 &>(addr);
            a6.sin6_family = AF_INET6;
            inet_pton(AF_INET6, address, &a6.sin6_addr);
            size = sizeof a6;
            family = AF_INET6;
        } else {
            auto &a4 = reinterpret_cast<sockaddr_in &>(addr);
            a4.sin_family = AF_INET;
            inet_pton(AF_INET, address, &a4.sin_addr);
            size = sizeof a4;
            family = AF_INET;
        }
        listenFd_ = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(listenFd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (listenFd_ < 0 || ::bind(listenFd_, reinterpret_cast<sockaddr *>(&addr), size) != 0 ||
            ::listen(listenFd_, 64) != 0) {
            if (listenFd_ >= 0) ::close(listenFd_);
            listenFd_ = -1;
            return;
        }
        getsockname(listenFd_, reinterpret_cast<sockaddr *>(&addr), &size);
        port_ = ntohs(family == AF_INET6 ? reinterpret_cast<sockaddr_in6 &>(addr).sin6_port
                                         : reinterpret_cast<sockaddr_in &>(addr).sin_port);
        acceptThread_ = std::thread([this] { acceptLoop(); });
    }

    ~EchoServer() {
        stop_ = true;
        if (acceptThread_.joinable()) acceptThread_.join();
        std::lock_guard lock(mutex_);
        for (auto &t : workers_)
            t.join();
        if (listenFd_ >= 0) ::close(listenFd_);
    }

    bool listening() const { return listenFd_ >= 0; }
    std::uint16_t port() const { return port_; }

    std::vector<SeenFrame> frames() {
        std::lock_guard lock(mutex_);
        return frames_;
    }
    std::vector<std::uint16_t> closeCodes() {
        std::lock_guard lock(mutex_);
        return closeCodes_;
    }
    std::vector<std::pair<std::string, std::string>> requestHeaders() {
        std::lock_guard lock(mutex_);
        return requestHeaders_;
    }
    std::string peer() {
        std::lock_guard lock(mutex_);
        return peer_;
    }
    void clearFrames() {
        std::lock_guard lock(mutex_);
        frames_.clear();
    }
    std::size_t tlsFailures() const { return tlsFailures_; }

private:
    struct Session;

    void acceptLoop() {
        while (!stop_) {
            pollfd p{listenFd_, POLLIN, 0};
            if (::poll(&p, 1, 20) <= 0) continue;
            sockaddr_storage addr{};
            socklen_t size = sizeof addr;
            int fd = ::accept4(listenFd_, reinterpret_cast<sockaddr *>(&addr), &size, SOCK_CLOEXEC);
            if (fd < 0) continue;
            char text[INET6_ADDRSTRLEN] = {};
            if (addr.ss_family == AF_INET)
                inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in &>(addr).sin_addr, text, sizeof text);
            else
                inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6 &>(addr).sin6_addr, text, sizeof text);
            std::lock_guard lock(mutex_);
            peer_ = text;
            workers_.emplace_back([this, fd] { serve(fd); });
        }
    }

    void serve(int fd);

    SSL_CTX *tls_ = nullptr; // borrowed
    std::atomic<std::size_t> tlsFailures_{0};
    int listenFd_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::thread acceptThread_;
    std::mutex mutex_;
    std::vector<std::thread> workers_;
    std::vector<SeenFrame> frames_;
    std::vector<std::uint16_t> closeCodes_;
    std::vector<std::pair<std::string, std::string>> requestHeaders_;
    std::string peer_;
};

struct EchoServer::Session {
    EchoServer &server;
    int fd;
    SSL *ssl = nullptr; // with TLS: every byte goes through it
    std::string in;
    bool deflate = false;
    bool serverNoContext = false;
    bool clientNoContext = false;
    z_stream def{};
    z_stream inf{};

    Session(EchoServer &s, int f)
        : server(s)
        , fd(f) {}
    ~Session() {
        if (deflate) {
            deflateEnd(&def);
            inflateEnd(&inf);
        }
        if (ssl) SSL_free(ssl);
        ::close(fd);
    }

    // Waits until `in` holds n bytes; false on EOF or server stop.
    bool fill(std::size_t n, std::chrono::milliseconds timeout = 10s) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (in.size() < n) {
            if (server.stop_ || std::chrono::steady_clock::now() > deadline) return false;
            if (!ssl || SSL_pending(ssl) == 0) { // decrypted bytes waiting would not wake poll()
                pollfd p{fd, POLLIN, 0};
                if (::poll(&p, 1, 20) <= 0) continue;
            }
            char buf[65536];
            const ssize_t got = ssl ? SSL_read(ssl, buf, sizeof buf) : ::recv(fd, buf, sizeof buf, 0);
            if (got <= 0) return false;
            in.append(buf, static_cast<std::size_t>(got));
        }
        return true;
    }

    void write(std::string_view data) {
        while (!data.empty()) {
            const ssize_t n = ssl ? SSL_write(ssl, data.data(), static_cast<int>(data.size()))
                                  : ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
            if (n <= 0) return;
            data.remove_prefix(static_cast<std::size_t>(n));
        }
    }

    void writeFrame(std::uint8_t opcode, std::string_view payload, bool fin = true, bool rsv1 = false,
                    bool mask = false) {
        std::string out;
        out.push_back(static_cast<char>((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode));
        const std::uint8_t maskBit = mask ? 0x80 : 0;
        if (payload.size() <= 125) {
            out.push_back(static_cast<char>(maskBit | payload.size()));
        } else if (payload.size() <= 0xFFFF) {
            out.push_back(static_cast<char>(maskBit | 126));
            out.push_back(static_cast<char>(payload.size() >> 8));
            out.push_back(static_cast<char>(payload.size() & 0xFF));
        } else {
            out.push_back(static_cast<char>(maskBit | 127));
            for (int shift = 56; shift >= 0; shift -= 8)
                out.push_back(static_cast<char>((std::uint64_t{payload.size()} >> shift) & 0xFF));
        }
        if (mask) out.append("\x01\x02\x03\x04", 4);
        const std::size_t start = out.size();
        out.append(payload);
        if (mask)
            for (std::size_t i = 0; i < payload.size(); ++i)
                out[start + i] = static_cast<char>(out[start + i] ^ static_cast<char>(i % 4 + 1));
        write(out);
    }

    void closeWith(std::uint16_t code) {
        std::string payload{static_cast<char>(code >> 8), static_cast<char>(code & 0xFF)};
        writeFrame(0x8, payload);
    }

    bool readFrame(WireFrame &f) {
        if (!fill(2)) return false;
        const auto b0 = static_cast<std::uint8_t>(in[0]);
        const auto b1 = static_cast<std::uint8_t>(in[1]);
        f.fin = b0 & 0x80;
        f.rsv1 = b0 & 0x40;
        f.rsv2 = b0 & 0x20;
        f.rsv3 = b0 & 0x10;
        f.opcode = b0 & 0x0F;
        f.masked = b1 & 0x80;
        std::uint64_t length = b1 & 0x7F;
        std::size_t pos = 2;
        if (length == 126) {
            if (!fill(4)) return false;
            length = std::uint64_t{static_cast<std::uint8_t>(in[2])} << 8 | static_cast<std::uint8_t>(in[3]);
            pos = 4;
        } else if (length == 127) {
            if (!fill(10)) return false;
            length = 0;
            for (std::size_t i = 2; i < 10; ++i)
                length = length << 8 | static_cast<std::uint8_t>(in[i]);
            pos = 10;
        }
        if (length > (16u << 20)) return false;
        std::uint8_t key[4] = {};
        if (f.masked) {
            if (!fill(pos + 4)) return false;
            std::memcpy(key, in.data() + pos, 4);
            pos += 4;
        }
        if (!fill(pos + length)) return false;
        f.payload.assign(in, pos, length);
        for (std::size_t i = 0; f.masked && i < f.payload.size(); ++i)
            f.payload[i] = static_cast<char>(f.payload[i] ^ static_cast<char>(key[i % 4]));
        in.erase(0, pos + length);
        std::lock_guard lock(server.mutex_);
        server.frames_.push_back({f.opcode, f.fin, f.rsv1, f.payload.size()});
        return true;
    }

    void respond(const std::string &status, const std::string &extra, const std::string &body) {
        write("HTTP/1.1 " + status + "\r\n" + extra + "Content-Length: " + std::to_string(body.size()) +
              "\r\nConnection: close\r\n\r\n" + body);
    }

    // Reads frames until the client's close frame; records its code.
    void awaitClose() {
        WireFrame f;
        while (readFrame(f)) {
            if (f.opcode == 0x8) {
                recordClose(f.payload);
                return;
            }
        }
    }

    void recordClose(const std::string &payload) {
        const std::uint16_t code =
            payload.size() >= 2 ? static_cast<std::uint16_t>(static_cast<std::uint8_t>(payload[0]) << 8 |
                                                             static_cast<std::uint8_t>(payload[1]))
                                : 1005;
        std::lock_guard lock(server.mutex_);
        server.closeCodes_.push_back(code);
    }

    void sendMessage(std::uint8_t opcode, std::string_view data, bool compress) {
        if (compress) {
            const std::string z = deflateMessage(def, data);
            if (serverNoContext) deflateReset(&def);
            writeFrame(opcode, z, true, true);
        } else {
            writeFrame(opcode, data);
        }
    }

    // Returns false when the session should end.
    bool command(std::string_view cmd) {
        if (cmd.starts_with("close:")) { // close:<code>:<reason>
            cmd.remove_prefix(6);
            const auto colon = cmd.find(':');
            const auto code = static_cast<std::uint16_t>(std::stoi(std::string(cmd.substr(0, colon))));
            std::string payload{static_cast<char>(code >> 8), static_cast<char>(code & 0xFF)};
            payload += cmd.substr(colon + 1);
            writeFrame(0x8, payload);
            awaitClose();
            return false;
        }
        if (cmd == "close-empty") {
            writeFrame(0x8, "");
            awaitClose();
            return false;
        }
        if (cmd.starts_with("ping:")) { // answers "pong:<payload>" or "no-pong" after 300 ms
            const std::string payload(cmd.substr(5));
            writeFrame(0x9, payload);
            WireFrame f;
            while (fill(2, 300ms) && readFrame(f)) {
                if (f.opcode == 0xA) {
                    writeFrame(0x1, "pong:" + f.payload);
                    return true;
                }
            }
            writeFrame(0x1, "no-pong");
            return true;
        }
        if (cmd.starts_with("frag:")) { // frag:<size>:<text>, compressed if negotiated
            cmd.remove_prefix(5);
            const auto colon = cmd.find(':');
            const std::size_t size = std::stoul(std::string(cmd.substr(0, colon)));
            std::string payload(cmd.substr(colon + 1));
            if (deflate) {
                payload = deflateMessage(def, payload);
                if (serverNoContext) deflateReset(&def);
            }
            std::string_view rest = payload;
            bool first = true;
            do {
                const auto part = rest.substr(0, size);
                rest.remove_prefix(part.size());
                writeFrame(first ? 0x1 : 0x0, part, rest.empty(), first && deflate);
                first = false;
            } while (!rest.empty());
            return true;
        }
        if (cmd == "drop") return false;
        if (cmd == "masked") {
            writeFrame(0x1, "masked", true, false, true);
            return true;
        }
        if (cmd == "badutf8") {
            writeFrame(0x1, "\xED\xA0\x80"); // a UTF-16 surrogate
            return true;
        }
        if (cmd == "big-ping") {
            writeFrame(0x9, std::string(126, 'p'));
            return true;
        }
        writeFrame(0x1, "unknown command");
        return true;
    }

    void run() {
        // Request head.
        std::size_t end;
        while ((end = in.find("\r\n\r\n")) == std::string::npos)
            if (in.size() > 16384 || !fill(in.size() + 1)) return;
        const std::string head = in.substr(0, end);
        in.erase(0, end + 4);
        const auto firstEol = head.find("\r\n");
        const std::string requestLine = head.substr(0, firstEol);
        std::vector<std::pair<std::string, std::string>> headers;
        for (std::size_t pos = firstEol; pos != std::string::npos && pos < head.size();) {
            const std::size_t start = pos + 2;
            const std::size_t eol = head.find("\r\n", start);
            const std::string line =
                head.substr(start, eol == std::string::npos ? std::string::npos : eol - start);
            const auto colon = line.find(':');
            if (colon != std::string::npos) {
                auto value = line.substr(colon + 1);
                value.erase(0, value.find_first_not_of(' '));
                headers.emplace_back(lowerCase(line.substr(0, colon)), value);
            }
            pos = eol;
        }
        {
            std::lock_guard lock(server.mutex_);
            server.requestHeaders_ = headers;
        }
        auto header = [&headers](const std::string &name) -> std::string {
            for (const auto &[n, v] : headers)
                if (n == name) return v;
            return {};
        };
        const auto sp1 = requestLine.find(' ');
        const auto sp2 = requestLine.find(' ', sp1 + 1);
        const std::string path = sp1 == std::string::npos ? "" : requestLine.substr(sp1 + 1, sp2 - sp1 - 1);

        if (path == "/404") return respond("404 Not Found", "Content-Type: text/plain\r\n", "not found");
        if (path == "/chunked-403")
            return write("HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "3\r\nfor\r\n6\r\nbidden\r\n0\r\n\r\n");
        if (path == "/silent") {
            fill(SIZE_MAX, 5s);
            return;
        }
        if (lowerCase(header("upgrade")) != "websocket" || header("sec-websocket-key").empty() ||
            requestLine.substr(0, 4) != "GET ")
            return respond("400 Bad Request", "", "bad request");
        if (header("sec-websocket-version") != "13")
            return respond("426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n", "");

        std::string accept = websocketAccept(header("sec-websocket-key"));
        if (path == "/bad-accept") accept[0] = accept[0] == 'A' ? 'B' : 'A';
        std::string extra;
        if (path == "/bad-protocol") extra += "Sec-WebSocket-Protocol: nope\r\n";
        const std::string offered = header("sec-websocket-protocol");
        for (const char *proto : {"chat", "superchat"}) {
            if (path != "/bad-protocol" &&
                (", " + offered + ",").find(std::string(" ") + proto + ",") != std::string::npos) {
                extra += std::string("Sec-WebSocket-Protocol: ") + proto + "\r\n";
                break;
            }
        }
        const std::string extensions = header("sec-websocket-extensions");
        if (extensions.find("permessage-deflate") != std::string::npos) {
            deflate = true;
            serverNoContext = extensions.find("server_no_context_takeover") != std::string::npos;
            clientNoContext = extensions.find("client_no_context_takeover") != std::string::npos;
            extra += "Sec-WebSocket-Extensions: permessage-deflate";
            extra += serverNoContext ? "; server_no_context_takeover" : "";
            extra += clientNoContext ? "; client_no_context_takeover" : "";
            extra += "\r\n";
            deflateInit2(&def, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
            inflateInit2(&inf, -15);
        }
        write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Accept: " +
              accept + "\r\n" + extra + "\r\n");

        // Frames.
        std::string message;
        std::uint8_t messageOpcode = 0;
        bool compressed = false;
        bool inMessage = false;
        WireFrame f;
        while (readFrame(f)) {
            if (!f.masked || f.rsv2 || f.rsv3 || (f.rsv1 && (!deflate || f.opcode == 0 || f.opcode >= 8)) ||
                (f.opcode > 2 && f.opcode < 8) || f.opcode > 0xA) {
                closeWith(1002);
                return awaitClose();
            }
            if (f.opcode == 0x8) {
                recordClose(f.payload);
                writeFrame(0x8, f.payload);
                return;
            }
            if (f.opcode == 0x9) {
                writeFrame(0xA, f.payload);
                continue;
            }
            if (f.opcode == 0xA) continue;
            if (f.opcode != 0) {
                messageOpcode = f.opcode;
                compressed = f.rsv1;
                message.clear();
                inMessage = true;
            } else if (!inMessage) {
                closeWith(1002);
                return awaitClose();
            }
            message += f.payload;
            if (!f.fin) continue;
            inMessage = false;
            if (compressed) {
                message = inflateMessage(inf, message);
                if (clientNoContext) inflateReset(&inf);
            }
            if (messageOpcode == 0x1 && !isValidUtf8(message)) {
                closeWith(1007);
                return awaitClose();
            }
            if (messageOpcode == 0x1 && message.starts_with("cmd:")) {
                if (!command(std::string_view(message).substr(4))) return;
                continue;
            }
            sendMessage(messageOpcode, message, compressed);
        }
    }
};

void EchoServer::serve(int fd) {
    Session session(*this, fd);
    if (tls_) {
        // SSL_write writes with write(2): a client gone must not kill the test with SIGPIPE.
        sigset_t pipeSet;
        sigemptyset(&pipeSet);
        sigaddset(&pipeSet, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipeSet, nullptr);
        // The socket blocks; a client that never finishes its handshake must not hang the test.
        timeval limit{5, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
        session.ssl = SSL_new(tls_);
        SSL_set_fd(session.ssl, fd);
        if (SSL_accept(session.ssl) != 1) {
            ERR_clear_error();
            ++tlsFailures_;
            return;
        }
    }
    session.run();
}

// A self-signed certificate (EC P-256) for `cn` with subjectAltName `altNames`, valid for an hour.
struct TestCertificate {
    std::string certPem;
    std::string keyPem;
};

TestCertificate makeCertificate(const std::string &cn, const std::string &altNames) {
    auto pem = [](auto write) {
        BIO *bio = BIO_new(BIO_s_mem());
        write(bio);
        char *data = nullptr;
        const long size = BIO_get_mem_data(bio, &data);
        std::string out(data, static_cast<std::size_t>(size));
        BIO_free(bio);
        return out;
    };
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), static_cast<long>(std::random_device{}() & 0x7fffffff));
    X509_gmtime_adj(X509_getm_notBefore(cert), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char *>(cn.c_str()), -1,
                               -1, 0);
    X509_set_issuer_name(cert, name);
    X509_set_pubkey(cert, key);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
    X509_EXTENSION *san = X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name, altNames.c_str());
    X509_add_ext(cert, san, -1);
    X509_EXTENSION_free(san);
    X509_sign(cert, key, EVP_sha256());
    TestCertificate out{pem([&](BIO *b) { PEM_write_bio_X509(b, cert); }),
                        pem([&](BIO *b) { PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr); })};
    X509_free(cert);
    EVP_PKEY_free(key);
    return out;
}

// A server context that presents `c`.
std::unique_ptr<SSL_CTX, void (*)(SSL_CTX *)> serverContext(const TestCertificate &c) {
    std::unique_ptr<SSL_CTX, void (*)(SSL_CTX *)> ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
    BIO *certBio = BIO_new_mem_buf(c.certPem.data(), static_cast<int>(c.certPem.size()));
    BIO *keyBio = BIO_new_mem_buf(c.keyPem.data(), static_cast<int>(c.keyPem.size()));
    X509 *cert = PEM_read_bio_X509(certBio, nullptr, nullptr, nullptr);
    EVP_PKEY *key = PEM_read_bio_PrivateKey(keyBio, nullptr, nullptr, nullptr);
    SSL_CTX_use_certificate(ctx.get(), cert);
    SSL_CTX_use_PrivateKey(ctx.get(), key);
    X509_free(cert);
    EVP_PKEY_free(key);
    BIO_free(certBio);
    BIO_free(keyBio);
    return ctx;
}

// A file with `text`, removed on destruction.
struct TempFile {
    explicit TempFile(const std::string &text) {
        char name[] = "/tmp/ws-client-test-XXXXXX";
        const int fd = mkstemp(name);
        if (fd >= 0) ::close(fd);
        path = name;
        std::ofstream(path) << text;
    }
    ~TempFile() { std::remove(path.c_str()); }
    std::string path;
};

// ---------------------------------------------------------------------------------------------

std::string pattern(std::size_t size, unsigned seed = 1) {
    std::string s(size, '\0');
    std::uint32_t x = seed * 2654435761u + 1;
    for (auto &c : s) {
        x = x * 1664525u + 1013904223u;
        c = static_cast<char>('a' + (x >> 24) % 26); // ASCII, so valid as text too
    }
    return s;
}

ConnectOptions deflateOptions(bool clientNoContext = false, bool serverNoContext = false) {
    ConnectOptions o;
    o.deflate.enabled = true;
    o.deflate.clientNoContextTakeover = clientNoContext;
    o.deflate.serverNoContextTakeover = serverNoContext;
    return o;
}

std::uint16_t closedPort() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a);
    socklen_t size = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr *>(&a), &size);
    ::close(fd);
    return ntohs(a.sin_port);
}

} // namespace

TEST_CASE("helpers: accept key and UTF-8 validation") {
    // RFC 6455 section 1.3.
    CHECK(websocketAccept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

    CHECK(isValidUtf8(""));
    CHECK(isValidUtf8("plain ascii"));
    CHECK(isValidUtf8("\xC3\xA9t\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));
    CHECK(isValidUtf8("\xF4\x8F\xBF\xBF"));       // U+10FFFF
    CHECK_FALSE(isValidUtf8("\xC3"));             // truncated
    CHECK_FALSE(isValidUtf8("\xC0\xAF"));         // overlong '/'
    CHECK_FALSE(isValidUtf8("\xE0\x80\xAF"));     // overlong
    CHECK_FALSE(isValidUtf8("\xED\xA0\x80"));     // surrogate
    CHECK_FALSE(isValidUtf8("\xF4\x90\x80\x80")); // > U+10FFFF
    CHECK_FALSE(isValidUtf8("\xFF"));
    CHECK_FALSE(isValidUtf8("a\x80"));
}

TEST_CASE("handshake: request fields, accept key, subprotocol") {
    EchoServer server;
    REQUIRE(server.listening());
    WsClient client;
    ConnectOptions o;
    o.origin = "http://example.test";
    o.subprotocols = {"x-unknown", "chat"};
    o.headers = {{"X-Tenant", "acme"}, {"Authorization", "Bearer t0k3n"}};
    auto r = client.connect("127.0.0.1", server.port(), "/echo?x=1", o);
    REQUIRE_MESSAGE(r.ok(), r.error);
    CHECK(r.status == 101);
    CHECK(r.subprotocol == "chat");
    CHECK_FALSE(r.deflate);
    CHECK(client.isOpen());
    CHECK(findHeader(r.headers, "sec-websocket-accept").has_value());
    CHECK(client.request().starts_with("GET /echo?x=1 HTTP/1.1\r\n"));

    const auto seen = server.requestHeaders();
    auto value = [&seen](const std::string &name) { return findHeader(seen, name).value_or("<none>"); };
    CHECK(value("host") == "127.0.0.1:" + std::to_string(server.port()));
    CHECK(value("origin") == "http://example.test");
    CHECK(value("sec-websocket-protocol") == "x-unknown, chat");
    CHECK(value("x-tenant") == "acme");
    CHECK(value("authorization") == "Bearer t0k3n");
    CHECK(value("sec-websocket-version") == "13");
    CHECK(value("sec-websocket-extensions") == "<none>");
}

TEST_CASE("handshake: invalid 101 responses are rejected") {
    EchoServer server;
    WsClient client;
    auto r = client.connect("127.0.0.1", server.port(), "/bad-accept");
    CHECK(r.failure == HandshakeFailure::Invalid);
    CHECK(r.status == 101);
    CHECK(r.error.find("Sec-WebSocket-Accept") != std::string::npos);
    CHECK_FALSE(client.isOpen());
    CHECK(client.error() == r.error);

    ConnectOptions o;
    o.subprotocols = {"chat"};
    r = client.connect("127.0.0.1", server.port(), "/bad-protocol", o);
    CHECK(r.failure == HandshakeFailure::Invalid);
    CHECK(r.error.find("not offered") != std::string::npos);

    // A subprotocol chosen although none was offered.
    r = client.connect("127.0.0.1", server.port(), "/bad-protocol");
    CHECK(r.failure == HandshakeFailure::Invalid);
}

TEST_CASE("handshake: refused upgrades expose status, headers and body") {
    EchoServer server;
    WsClient client;

    auto r = client.connect("127.0.0.1", server.port(), "/404");
    CHECK(r.failure == HandshakeFailure::NotUpgraded);
    CHECK(r.status == 404);
    CHECK(r.reason == "Not Found");
    CHECK(r.body == "not found");
    CHECK(findHeader(r.headers, "content-type") == "text/plain");
    CHECK_FALSE(client.isOpen());

    r = client.connect("127.0.0.1", server.port(), "/chunked-403");
    CHECK(r.status == 403);
    CHECK(r.body == "forbidden");

    ConnectOptions version;
    version.headers = {{"Sec-WebSocket-Version", "8"}};
    r = client.connect("127.0.0.1", server.port(), "/echo", version);
    CHECK(r.status == 426);
    CHECK(findHeader(r.headers, "Sec-WebSocket-Version") == "13");

    ConnectOptions noKey;
    noKey.omitHeaders = {"Sec-WebSocket-Key"};
    r = client.connect("127.0.0.1", server.port(), "/echo", noKey);
    CHECK(r.status == 400);
    CHECK(client.request().find("Sec-WebSocket-Key") == std::string::npos);

    ConnectOptions raw;
    raw.rawRequest = "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\r\n"; // no Upgrade field
    r = client.connect("127.0.0.1", server.port(), "/ignored", raw);
    CHECK(r.failure == HandshakeFailure::NotUpgraded);
    CHECK(r.status == 400);
    CHECK(r.body == "bad request");
}

TEST_CASE("handshake: raw request that upgrades is still validated and usable") {
    EchoServer server;
    WsClient client;
    ConnectOptions raw;
    raw.rawRequest = "GET /echo HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    auto r = client.connect("127.0.0.1", server.port(), "/", raw);
    REQUIRE_MESSAGE(r.ok(), r.error);
    CHECK(findHeader(r.headers, "Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    REQUIRE(client.sendText("raw"));
    CHECK(client.receive(2s).data == "raw");
}

TEST_CASE("echo of text and binary messages of boundary sizes") {
    EchoServer server;
    WsClient client;
    REQUIRE(client.connect("127.0.0.1", server.port(), "/echo").ok());
    for (std::size_t size : {std::size_t{0}, std::size_t{125}, std::size_t{126}, std::size_t{65535},
                             std::size_t{65536}, std::size_t{1} << 20}) {
        CAPTURE(size);
        const std::string data = pattern(size, static_cast<unsigned>(size));
        server.clearFrames();
        client.clearFrameLog();

        REQUIRE(client.sendText(data));
        auto m = client.receive(5s);
        REQUIRE_MESSAGE(m.isText(), m.error);
        CHECK(m.data == data);
        CHECK(m.frames == 1);
        CHECK_FALSE(m.compressed);

        REQUIRE(client.sendBinary(data));
        m = client.receive(5s);
        REQUIRE_MESSAGE(m.isBinary(), m.error);
        CHECK(m.data == data);

        const auto frames = server.frames();
        REQUIRE(frames.size() == 2);
        CHECK(frames[0].opcode == 0x1);
        CHECK(frames[1].opcode == 0x2);
        CHECK(frames[0].size == size);
        CHECK(frames[0].fin);
        REQUIRE(client.frameLog().size() == 2);
        CHECK(client.frameLog()[1].payload.size() == size);
        CHECK_FALSE(client.frameLog()[1].masked);
    }
}

TEST_CASE("fragmented send and reassembly on receive") {
    EchoServer server;
    WsClient client;
    REQUIRE(client.connect("127.0.0.1", server.port(), "/echo").ok());

    SUBCASE("send: sizes cut the payload, the rest goes last") {
        REQUIRE(client.sendFragmented(Opcode::Text, "hello world", {1, 2, 3}));
        auto m = client.receive(2s);
        REQUIRE(m.isText());
        CHECK(m.data == "hello world");
        const auto frames = server.frames();
        REQUIRE(frames.size() == 4);
        CHECK(frames[0].opcode == 0x1);
        CHECK(frames[1].opcode == 0x0);
        CHECK(frames[3].opcode == 0x0);
        CHECK(frames[0].size == 1);
        CHECK(frames[2].size == 3);
        CHECK(frames[3].size == 5);
        CHECK_FALSE(frames[2].fin);
        CHECK(frames[3].fin);
    }
    SUBCASE("send: empty fragments and a ping between fragments") {
        FragmentOptions fo;
        fo.pingBetween = "between";
        fo.delayBetween = 5ms;
        REQUIRE(client.sendFragmented(Opcode::Binary, "abc", {0, 3, 0}, fo));
        auto m = client.receive(2s);
        REQUIRE(m.isBinary());
        CHECK(m.data == "abc");
        CHECK(client.receivedPongs() == std::vector<std::string>{"between", "between"});
        const auto frames = server.frames();
        REQUIRE(frames.size() == 5); // data, ping, data, ping, data
        CHECK(frames[1].opcode == 0x9);
        CHECK(frames[4].fin);
        CHECK(frames[4].size == 0);
    }
    SUBCASE("receive: a message sent in three frames") {
        client.clearFrameLog();
        REQUIRE(client.sendText("cmd:frag:3:abcdefgh"));
        auto m = client.receive(2s);
        REQUIRE(m.isText());
        CHECK(m.data == "abcdefgh");
        CHECK(m.frames == 3);
        const auto &log = client.frameLog();
        REQUIRE(log.size() == 3);
        CHECK(log[0].opcode == 0x1);
        CHECK_FALSE(log[0].fin);
        CHECK(log[1].opcode == 0x0);
        CHECK(log[2].fin);
        CHECK(log[2].payload == "gh");
    }
    SUBCASE("receiveFrame gives the frames without reassembly") {
        REQUIRE(client.sendText("cmd:frag:4:abcdef"));
        auto f = client.receiveFrame(2s);
        REQUIRE(f.kind == FrameResult::Kind::Frame);
        CHECK(f.frame.opcode == 0x1);
        CHECK_FALSE(f.frame.fin);
        CHECK(f.frame.payload == "abcd");
        f = client.receiveFrame(2s);
        REQUIRE(f.kind == FrameResult::Kind::Frame);
        CHECK(f.frame.opcode == 0x0);
        CHECK(f.frame.fin);
        CHECK(f.frame.payload == "ef");
    }
}

TEST_CASE("ping and pong") {
    EchoServer server;
    WsClient client;
    SUBCASE("client ping is answered") {
        REQUIRE(client.connect("127.0.0.1", server.port(), "/echo").ok());
        REQUIRE(client.sendPing("abc"));
        CHECK(client.waitPong(2s) == "abc");
        REQUIRE(client.sendPing(""));
        CHECK(client.waitPong(2s) == "");
    }
    SUBCASE("messages read while waiting for a pong are kept") {
        REQUIRE(client.connect("127.0.0.1", server.port(), "/echo").ok());
        REQUIRE(client.sendText("first"));
        REQUIRE(client.sendPing("p"));
        CHECK(client.waitPong(2s) == "p");
        CHECK(client.receive(2s).data == "first");
    }
    SUBCASE("server ping is answered automatically and recorded") {
        REQUIRE(client.connect("127.0.0.1", server.port(), "/echo").ok());
        REQUIRE(client.sendText("cmd:ping:xyz"));
        auto m = client.receive(2s);
        CHECK(m.data == "pong:xyz");
        CHECK(client.receivedPings() == std::vector<std::string>{"xyz"});
    }
    SUBCASE("server ping is not answered when answerPings is off") {
        ConnectOptions o;
        o.answerPings = false;
        REQUIRE(client.connect("127.0.0.1", server.port(), "/echo", o).ok());
        REQUIRE(client.sendText("cmd:ping:xyz"));
        auto m = client.receive(3s);
        CHECK(m.data == "no-pong");
        CHECK(client.receivedPings() == std::vector<std::string>{"xyz"});
    }
    SUBCASE("waitPong times out") {
        REQUIRE(client.connect("127.0.0.1", server.port(), "/echo").ok());
        CHECK_FALSE(client.waitPong(50ms));
        CHECK(client.error() == "timed out");
    }
}

TEST_CASE("close handshake") {
    EchoServer server;
    WsClient client;
    REQUIRE(client.connect("127.0.0.1", server.port(), "/echo").ok());

    SUBCASE("client-initiated, with code and reason") {
        REQUIRE(client.sendClose(1000, "bye"));
        CHECK(client.closeSent());
        auto c = client.waitClosed(2s);
        CHECK(c.kind == CloseResult::Kind::CloseFrame);
        CHECK(c.code == 1000);
        CHECK(c.reason == "bye");
        CHECK(c.tcpClosed);
        CHECK(client.closeCode() == 1000);
        CHECK(server.closeCodes() == std::vector<std::uint16_t>{1000});
    }
    SUBCASE("client-initiated, application code") {
        REQUIRE(client.sendClose(4321));
        auto c = client.waitClosed(2s);
        CHECK(c.code == 4321);
        CHECK(c.reason.empty());
    }
    SUBCASE("server-initiated: receive() returns it and the client echoes the code") {
        REQUIRE(client.sendText("cmd:close:1001:going away"));
        auto r = client.receive(2s);
        REQUIRE(r.kind == Received::Kind::Close);
        CHECK(r.closeCode == 1001);
        CHECK(r.closeReason == "going away");
        auto c = client.waitClosed(2s);
        CHECK(c.kind == CloseResult::Kind::CloseFrame);
        CHECK(c.code == 1001);
        CHECK(c.tcpClosed);
        CHECK(server.closeCodes() == std::vector<std::uint16_t>{1001});
    }
    SUBCASE("server-initiated, empty close: 1005, messages before it dropped by waitClosed") {
        REQUIRE(client.sendText("one"));
        REQUIRE(client.sendText("cmd:close-empty"));
        auto c = client.waitClosed(2s);
        CHECK(c.kind == CloseResult::Kind::CloseFrame);
        CHECK(c.code == 1005);
        CHECK(c.discardedMessages == 1);
        CHECK(server.closeCodes() == std::vector<std::uint16_t>{1005});
    }
    SUBCASE("TCP closed without a close frame") {
        REQUIRE(client.sendText("cmd:drop"));
        auto r = client.receive(2s);
        CHECK(r.kind == Received::Kind::Eof);
        CHECK_FALSE(client.isOpen());
        auto c = client.waitClosed(1s);
        CHECK(c.kind == CloseResult::Kind::Eof);
        CHECK(c.code == 1006);
    }
}

TEST_CASE("permessage-deflate") {
    EchoServer server;
    WsClient client;
    const std::string big = [] {
        std::string s;
        while (s.size() < 100 * 1024)
            s += "{\"event\":\"tick\",\"seq\":" + std::to_string(s.size()) +
                 ",\"payload\":\"aaaaaaaaaaaaaaaa\"}\n";
        return s.substr(0, 100 * 1024);
    }();

    SUBCASE("offer without parameters, context takeover both ways") {
        auto r = client.connect("127.0.0.1", server.port(), "/echo", deflateOptions());
        REQUIRE_MESSAGE(r.ok(), r.error);
        REQUIRE(r.deflate);
        CHECK_FALSE(r.deflate->serverNoContextTakeover);
        CHECK(findHeader(server.requestHeaders(), "sec-websocket-extensions") ==
              "permessage-deflate; client_max_window_bits");
        for (int round = 0; round < 3; ++round) {
            server.clearFrames();
            REQUIRE(client.sendText(big));
            auto m = client.receive(5s);
            REQUIRE_MESSAGE(m.isText(), m.error);
            CHECK(m.compressed);
            CHECK(m.data == big);
            const auto frames = server.frames();
            REQUIRE(frames.size() == 1);
            CHECK(frames[0].rsv1);
            CHECK(frames[0].size < big.size() / 10);
            CHECK(client.frameLog().back().rsv1);
        }
    }
    SUBCASE("no_context_takeover both ways") {
        auto r = client.connect("127.0.0.1", server.port(), "/echo", deflateOptions(true, true));
        REQUIRE_MESSAGE(r.ok(), r.error);
        REQUIRE(r.deflate);
        REQUIRE(client.negotiatedDeflate());
        CHECK(client.negotiatedDeflate()->serverNoContextTakeover);
        CHECK(r.deflate->clientNoContextTakeover);
        CHECK(r.deflate->serverNoContextTakeover);
        for (int round = 0; round < 3; ++round) {
            REQUIRE(client.sendBinary(big));
            auto m = client.receive(5s);
            REQUIRE(m.isBinary());
            CHECK(m.data == big);
        }
    }
    SUBCASE("empty, uncompressed and fragmented messages") {
        REQUIRE(client.connect("127.0.0.1", server.port(), "/echo", deflateOptions()).ok());
        REQUIRE(client.sendText(""));
        auto m = client.receive(2s);
        CHECK(m.isText());
        CHECK(m.data.empty());

        server.clearFrames();
        REQUIRE(client.sendText("plain", Compression::None));
        m = client.receive(2s);
        CHECK(m.data == "plain");
        CHECK_FALSE(m.compressed);
        CHECK_FALSE(server.frames().at(0).rsv1);

        server.clearFrames();
        REQUIRE(client.sendFragmented(Opcode::Text, big, {100, 100}));
        m = client.receive(5s);
        CHECK(m.data == big);
        const auto frames = server.frames();
        REQUIRE(frames.size() == 3);
        CHECK(frames[0].rsv1);
        CHECK_FALSE(frames[1].rsv1);

        REQUIRE(client.sendText("cmd:frag:5:compressed and fragmented by the server"));
        m = client.receive(2s);
        CHECK(m.data == "compressed and fragmented by the server");
        CHECK(m.compressed);
        CHECK(m.frames > 1);
    }
}

TEST_CASE("timeouts") {
    EchoServer server;
    WsClient client;
    SUBCASE("receive on an idle connection") {
        REQUIRE(client.connect("127.0.0.1", server.port(), "/echo").ok());
        const auto start = std::chrono::steady_clock::now();
        auto r = client.receive(150ms);
        const auto elapsed = std::chrono::steady_clock::now() - start;
        CHECK(r.kind == Received::Kind::Timeout);
        CHECK(elapsed >= 150ms);
        CHECK(elapsed < 2s);
        CHECK(client.isOpen());
        auto c = client.waitClosed(50ms);
        CHECK(c.kind == CloseResult::Kind::Timeout);
        // Still usable after timeouts.
        REQUIRE(client.sendText("after"));
        CHECK(client.receive(2s).data == "after");
    }
    SUBCASE("handshake without a response") {
        ConnectOptions o;
        o.timeout = 200ms;
        const auto start = std::chrono::steady_clock::now();
        auto r = client.connect("127.0.0.1", server.port(), "/silent", o);
        CHECK(r.failure == HandshakeFailure::Timeout);
        CHECK(r.status == 0);
        CHECK(std::chrono::steady_clock::now() - start < 2s);
    }
    SUBCASE("connection refused") {
        auto r = client.connect("127.0.0.1", closedPort(), "/echo");
        CHECK(r.failure == HandshakeFailure::Connect);
        CHECK(r.error.find("refused") != std::string::npos);
    }
}

TEST_CASE("protocol violations") {
    EchoServer server;
    WsClient client;
    REQUIRE(client.connect("127.0.0.1", server.port(), "/echo").ok());

    SUBCASE("by the server are reported as errors") {
        REQUIRE(client.sendText("cmd:masked"));
        auto r = client.receive(2s);
        CHECK(r.kind == Received::Kind::Error);
        CHECK(r.error.find("masked") != std::string::npos);
    }
    SUBCASE("invalid UTF-8 from the server") {
        REQUIRE(client.sendText("cmd:badutf8"));
        auto r = client.receive(2s);
        CHECK(r.kind == Received::Kind::Error);
        CHECK(r.error.find("UTF-8") != std::string::npos);
    }
    SUBCASE("oversized control frame from the server") {
        REQUIRE(client.sendText("cmd:big-ping"));
        CHECK(client.receive(2s).kind == Received::Kind::Error);
    }
    SUBCASE("raw frame with RSV2 makes the server close with 1002") {
        RawFrame f;
        f.rsv2 = true;
        f.payload = "x";
        REQUIRE(client.sendRaw(f));
        auto c = client.waitClosed(2s);
        CHECK(c.kind == CloseResult::Kind::CloseFrame);
        CHECK(c.code == 1002);
    }
    SUBCASE("unmasked raw frame with a non-minimal length") {
        RawFrame f;
        f.masked = false;
        f.payload = "x";
        f.encoding = LengthEncoding::Force64;
        REQUIRE(client.sendRaw(f));
        CHECK(client.waitClosed(2s).code == 1002);
        const auto frames = server.frames();
        REQUIRE_FALSE(frames.empty());
        CHECK(frames[0].size == 1);
    }
    SUBCASE("reserved opcode with a fixed mask key") {
        RawFrame f;
        f.opcode = 0x3;
        f.maskKey = std::array<std::uint8_t, 4>{0, 0, 0, 0};
        REQUIRE(client.sendRaw(f));
        CHECK(client.waitClosed(2s).code == 1002);
    }
    SUBCASE("invalid UTF-8 text makes the server close with 1007") {
        REQUIRE(client.sendInvalidUtf8Text());
        CHECK(client.waitClosed(2s).code == 1007);
    }
    SUBCASE("continuation without a start, via sendBytes") {
        REQUIRE(client.sendBytes(std::string("\x80\x80\0\0\0\0", 6)));
        CHECK(client.waitClosed(2s).code == 1002);
    }
    SUBCASE("misuse is reported, not thrown") {
        RawFrame f;
        f.opcode = 16;
        CHECK_FALSE(client.sendRaw(f));
        CHECK(client.error().find("opcode") != std::string::npos);
        client.disconnect();
        CHECK_FALSE(client.sendText("x"));
        CHECK(client.error() == "not connected");
        CHECK(client.receive(10ms).kind == Received::Kind::Error);
    }
}

TEST_CASE("source address and IPv6") {
    SUBCASE("bind to 127.0.0.2") {
        EchoServer server;
        WsClient client;
        ConnectOptions o;
        o.bindAddress = "127.0.0.2";
        auto r = client.connect("127.0.0.1", server.port(), "/echo", o);
        REQUIRE_MESSAGE(r.ok(), r.error);
        CHECK(client.localEndpoint().starts_with("127.0.0.2:"));
        CHECK(server.peer() == "127.0.0.2");
    }
    SUBCASE("::1") {
        EchoServer server("::1");
        if (!server.listening()) {
            wsgw::test::skipCase("no IPv6 loopback (::1) to listen on");
            return;
        }
        WsClient client;
        auto r = client.connect("::1", server.port(), "/echo");
        REQUIRE_MESSAGE(r.ok(), r.error);
        CHECK(findHeader(server.requestHeaders(), "host") == "[::1]:" + std::to_string(server.port()));
        CHECK(client.localEndpoint().starts_with("[::1]:"));
        REQUIRE(client.sendText("v6"));
        CHECK(client.receive(2s).data == "v6");
    }
}

TEST_CASE("TLS (wss://)") {
    const TestCertificate cert = makeCertificate("localhost", "DNS:localhost,IP:127.0.0.1");
    auto ctx = serverContext(cert);
    EchoServer server("127.0.0.1", ctx.get());
    ConnectOptions tls;
    tls.tls = true;

    SUBCASE("messages both ways, large ones in many records, compression, close handshake") {
        WsClient client;
        auto r = client.connect("127.0.0.1", server.port(), "/echo", tls);
        REQUIRE_MESSAGE(r.ok(), r.error);
        CHECK(client.tlsVersion() == "TLSv1.3");
        for (std::size_t size : {std::size_t{0}, std::size_t{125}, std::size_t{70000}, std::size_t{1} << 20}) {
            CAPTURE(size);
            const std::string data = pattern(size, static_cast<unsigned>(size));
            REQUIRE(client.sendText(data));
            auto m = client.receive(5s);
            REQUIRE_MESSAGE(m.isText(), m.error);
            CHECK(m.data == data);
            REQUIRE(client.sendBinary(data));
            m = client.receive(5s);
            REQUIRE_MESSAGE(m.isBinary(), m.error);
            CHECK(m.data == data);
        }
        REQUIRE(client.sendText("cmd:ping:over tls"));
        CHECK(client.receive(2s).data == "pong:over tls");
        REQUIRE(client.sendClose(1000, "bye"));
        auto closed = client.waitClosed(2s);
        CHECK(closed.kind == CloseResult::Kind::CloseFrame);
        CHECK(closed.code == 1000);

        WsClient compressed;
        ConnectOptions o = deflateOptions();
        o.tls = true;
        REQUIRE(compressed.connect("127.0.0.1", server.port(), "/echo", o).ok());
        REQUIRE(compressed.negotiatedDeflate());
        REQUIRE(compressed.sendText(pattern(100000)));
        auto m = compressed.receive(5s);
        CHECK(m.compressed);
        CHECK(m.data == pattern(100000));
    }

    SUBCASE("verified against the certificate as CA: by IP address and by name") {
        TempFile ca(cert.certPem);
        tls.tlsVerify = true;
        tls.tlsCaFile = ca.path;
        for (const char *host : {"127.0.0.1", "localhost"}) {
            CAPTURE(host);
            WsClient client;
            auto r = client.connect(host, server.port(), "/echo", tls);
            REQUIRE_MESSAGE(r.ok(), r.error);
            REQUIRE(client.sendText("verified"));
            CHECK(client.receive(2s).data == "verified");
        }
    }

    SUBCASE("verification fails for an untrusted certificate or another name") {
        TempFile other(makeCertificate("localhost", "DNS:localhost,IP:127.0.0.1").certPem);
        tls.tlsVerify = true;
        tls.tlsCaFile = other.path;
        WsClient client;
        auto r = client.connect("127.0.0.1", server.port(), "/echo", tls);
        CHECK(r.failure == HandshakeFailure::Tls);
        CHECK(r.error.find("did not verify") != std::string::npos);
        CHECK_FALSE(client.isOpen());

        const TestCertificate elsewhere = makeCertificate("elsewhere", "DNS:elsewhere.example");
        auto otherCtx = serverContext(elsewhere);
        EchoServer misnamed("127.0.0.1", otherCtx.get());
        TempFile trusted(elsewhere.certPem);
        tls.tlsCaFile = trusted.path;
        r = client.connect("127.0.0.1", misnamed.port(), "/echo", tls);
        CHECK(r.failure == HandshakeFailure::Tls);
        CHECK(r.error.find("mismatch") != std::string::npos);
    }

    SUBCASE("a plain client to the TLS server, and a TLS client to a plain server") {
        WsClient plain;
        auto r = plain.connect("127.0.0.1", server.port(), "/echo");
        CHECK_FALSE(r.ok());
        CHECK(r.status == 0);
        for (int i = 0; i < 200 && server.tlsFailures() == 0; ++i)
            std::this_thread::sleep_for(10ms);
        CHECK(server.tlsFailures() == 1);

        EchoServer plainServer;
        WsClient client;
        tls.timeout = 300ms;
        r = client.connect("127.0.0.1", plainServer.port(), "/echo", tls);
        CHECK(r.failure == HandshakeFailure::Timeout);
        CHECK(r.error.find("handshake") != std::string::npos);
    }
}
