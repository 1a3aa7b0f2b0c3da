#include "control_transport.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace wsgw::daemon {

ControlTransport::~ControlTransport() {
    if (ssl_) SSL_free(ssl_);
    if (fd_ >= 0) ::close(fd_);
}

ControlTransport::Io ControlTransport::tlsResult(int ok) noexcept {
    if (ok == 1) return Io::Done;
    int err = SSL_get_error(ssl_, ok);
    switch (err) {
    case SSL_ERROR_WANT_READ:
        return Io::WantRead;
    case SSL_ERROR_WANT_WRITE:
        return Io::WantWrite;
    case SSL_ERROR_ZERO_RETURN:
        return Io::Eof;
    case SSL_ERROR_SYSCALL:
        // A TCP close without close_notify shows up here with nothing in the error queue.
        ERR_clear_error();
        return errno == 0 || errno == ECONNRESET ? Io::Eof : Io::Error;
    default:
        ERR_clear_error(); // the queue is per thread: leave nothing behind for the next call
        return Io::Error;
    }
}

ControlTransport::Io ControlTransport::handshake() noexcept {
    if (!ssl_) return Io::Done;
    ERR_clear_error();
    errno = 0;
    int rc = SSL_do_handshake(ssl_);
    Io io = tlsResult(rc);
    // A peer that closes during the handshake, or speaks plain HTTP to it, is simply gone.
    return io == Io::Eof ? Io::Error : io;
}

ControlTransport::Io ControlTransport::read(char *buf, std::size_t cap, std::size_t &n) noexcept {
    n = 0;
    if (ssl_) {
        ERR_clear_error();
        errno = 0;
        return tlsResult(SSL_read_ex(ssl_, buf, cap, &n));
    }
    for (;;) {
        ssize_t r = ::recv(fd_, buf, cap, 0);
        if (r > 0) {
            n = static_cast<std::size_t>(r);
            return Io::Done;
        }
        if (r == 0) return Io::Eof;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return Io::WantRead;
        return errno == ECONNRESET ? Io::Eof : Io::Error;
    }
}

ControlTransport::Io ControlTransport::write(const char *buf, std::size_t len, std::size_t &n) noexcept {
    n = 0;
    if (ssl_) {
        ERR_clear_error();
        errno = 0;
        Io io = tlsResult(SSL_write_ex(ssl_, buf, len, &n));
        return io == Io::Eof ? Io::Error : io;
    }
    for (;;) {
        ssize_t r = ::send(fd_, buf, len, MSG_NOSIGNAL);
        if (r >= 0) {
            n = static_cast<std::size_t>(r);
            return Io::Done;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return Io::WantWrite;
        return Io::Error;
    }
}

void ControlTransport::shutdownWrite() noexcept {
    if (writeShut_) return;
    writeShut_ = true;
    if (ssl_ && SSL_is_init_finished(ssl_)) {
        ERR_clear_error();
        (void)SSL_shutdown(ssl_); // one non-blocking attempt; the peer's close_notify is not awaited
        ERR_clear_error();
    }
    ::shutdown(fd_, SHUT_WR);
}

} // namespace wsgw::daemon
