#pragma once

#include <httplib.h>

#include <string>
#include <string_view>

namespace wsgw::daemon {

/// The two ends of a connection, as a request handler sees them (Request::remote_addr, ...).
struct Peer {
    std::string remoteAddr; ///< numeric, as cpp-httplib gives it ("127.0.0.1", "::1")
    int remotePort = 0;
    std::string localAddr;
    int localPort = 0;
};

/// What one request turned into.
struct Exchange {
    std::string response; ///< status line, headers and body, ready to write
    bool close = false;   ///< the connection must end after this response
};

/// cpp-httplib as a function from one complete request's bytes to its response's bytes: its
/// parser, router, handlers and response writer, without its sockets, threads or timeouts.
/// Routes and handlers are set through the httplib::Server interface before the first
/// exchange(); the bytes come from a framer (http_framing.h) that has already bounded them.
///
/// It runs httplib::Server::process_request (protected, so this subclass) over an in-memory
/// httplib::Stream. That function is what cpp-httplib's own workers call once per request on
/// a connection; v0.11.4 (Debian's, and the wrap's) exports it from the shared library.
///
/// Thread-safe once the routes are set (cpp-httplib's own workers call it concurrently).
class HttpRouter : public httplib::Server {
public:
    /// `closeAfter`: answer with "Connection: close" (the last request of a connection).
    /// Never throws: a failure inside cpp-httplib becomes a 500 that closes the connection.
    Exchange exchange(std::string_view request, const Peer &peer, bool closeAfter) noexcept;
};

/// An answer the server writes without cpp-httplib (framing refusals, 408, 503), shaped like
/// the handlers' own: plain text, `text` and a newline, "Connection: close" when `close`,
/// "Retry-After: 1" when `retryAfter`.
std::string plainResponse(int status, std::string_view text, bool close, bool retryAfter = false);

} // namespace wsgw::daemon
