#pragma once

#include <httplib.h>

#include <chrono>
#include <functional>
#include <memory>
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

/// A response that stays open (server-sent events, say). Contract: the server writes the head
/// (200, `contentType`, "Cache-Control: no-store", "Connection: close", no length: the body ends
/// with the connection), then what `next()` returns at once and every `interval` after, until
/// the peer goes, stop() or the peer reads too slowly (the server's backlog bound). `next` runs on
/// the server's loop thread, so it must be quick and never block (read atomics, not the shards);
/// it may return "" to write nothing this time. Nothing more is read from the connection.
struct StreamSource {
    std::string contentType;
    std::chrono::milliseconds interval{1000};
    std::function<std::string()> next;
};

/// What one request turned into.
struct Exchange {
    std::string response; ///< status line, headers and body, ready to write
    bool close = false;   ///< the connection must end after this response
    /// Set: `response` is only the stream's head; the server keeps the connection open for it
    /// (or answers 503 if it has too many streams already).
    std::shared_ptr<const StreamSource> stream;
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

    /// Called by a handler inside exchange() (on its thread): the answer becomes `source`'s stream,
    /// whatever the handler put in the response; false (and nothing changed) when not inside
    /// exchange(). The handler should still set status 200: access refusals and errors before
    /// it answer as usual.
    static bool openStream(StreamSource source);
};

/// An answer the server writes without cpp-httplib (framing refusals, 408, 503), shaped like
/// the handlers' own: plain text, `text` and a newline, "Connection: close" when `close`,
/// "Retry-After: 1" when `retryAfter`.
std::string plainResponse(int status, std::string_view text, bool close, bool retryAfter = false);

} // namespace wsgw::daemon
