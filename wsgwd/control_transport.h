#pragma once

#include <cstddef>

typedef struct ssl_st SSL;

namespace wsgw::daemon {

/// Bytes in and out of one accepted, non-blocking TCP connection, in plain text or through
/// OpenSSL: what the control server's loop needs from a socket and nothing else. No call
/// blocks; each says what it needs to go on.
///
/// With TLS, OpenSSL writes to the socket with write(2): the process must ignore SIGPIPE
/// (wsgwd's main does). Thread-bound (to the control server's loop).
class ControlTransport {
public:
    enum class Io {
        Done,      ///< progress: bytes moved (see n), or the handshake finished
        WantRead,  ///< try again once the socket is readable
        WantWrite, ///< try again once the socket is writable
        Eof,       ///< the peer closed (for TLS also: close_notify, or a TCP close without one)
        Error,     ///< the connection is broken (reset, a TLS error); close it
    };

    /// Takes ownership of `fd` and of `ssl` (nullptr: plain text), which must already be set
    /// to that fd in accept state.
    ControlTransport(int fd, SSL *ssl) noexcept : fd_(fd), ssl_(ssl) {}
    ~ControlTransport(); ///< frees the TLS session and closes the socket
    ControlTransport(const ControlTransport &) = delete;
    ControlTransport &operator=(const ControlTransport &) = delete;

    int fd() const noexcept { return fd_; }
    bool tls() const noexcept { return ssl_ != nullptr; }

    /// TLS: drives the handshake; plain text: Done at once.
    Io handshake() noexcept;
    /// Up to `cap` bytes into `buf`; `n` is how many on Done.
    Io read(char *buf, std::size_t cap, std::size_t &n) noexcept;
    /// Up to `len` bytes of `buf`; `n` is how many on Done (may be fewer than `len`).
    Io write(const char *buf, std::size_t len, std::size_t &n) noexcept;
    /// Says we will send nothing more: TLS close_notify (best effort), then a TCP FIN. Reading
    /// still works, so the peer's remaining bytes can be drained before the close.
    void shutdownWrite() noexcept;

private:
    Io tlsResult(int ok) noexcept;

    int fd_;
    SSL *ssl_;
    bool writeShut_ = false;
};

} // namespace wsgw::daemon
