#pragma once

// Pieces of the AMQP sink (amqp_sink.cpp) that need none of its state: conversions between
// rabbitmq-c's types and ours, and the parts of connecting that rabbitmq-c would report only as
// "a socket error occurred".
#include <amqp.h>

#include <sys/time.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace wsgw::amqp {

/// A view of `s` as rabbitmq-c bytes (no copy: `s` must outlive the use).
inline amqp_bytes_t bytesOf(std::string_view s) { return amqp_bytes_t{s.size(), const_cast<char *>(s.data())}; }

inline std::string text(amqp_bytes_t b) { return b.bytes ? std::string(static_cast<const char *>(b.bytes), b.len) : ""; }

inline timeval toTimeval(std::chrono::milliseconds ms) {
    if (ms.count() < 0) ms = std::chrono::milliseconds(0);
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>(ms.count() % 1000 * 1000);
    return tv;
}

inline std::string seconds(std::chrono::milliseconds ms) {
    if (ms.count() % 1000 == 0) return std::to_string(ms.count() / 1000) + " s";
    return std::to_string(ms.count()) + " ms";
}

/// "320 CONNECTION_FORCED - broker forced connection closure ..." from a connection.close or
/// channel.close method; "unexpected method 0x..." for any other.
std::string closeReason(const amqp_method_t &m);

/// A TCP connection to host:port within `timeout`, non-blocking as rabbitmq-c wants it, with
/// TCP_NODELAY and keep-alives. Returns the socket, or -1 with a message a person can act on in
/// `*error` ("cannot connect to 127.0.0.1:5672: Connection refused", "... timed out after 5 s").
/// Done here rather than by amqp_socket_open_noblock, which reports every failure as "a socket
/// error occurred".
int connectTcp(const std::string &host, std::uint16_t port, std::chrono::milliseconds timeout, std::string *error);

/// The CA bundle for TLS: `configured`, else $SSL_CERT_FILE (as OpenSSL honours it), else
/// Debian's system bundle.
std::string caFile(const std::string &configured);

} // namespace wsgw::amqp
