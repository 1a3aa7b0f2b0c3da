#pragma once

#include "http_exchange.h"
#include "http_framing.h"
#include "tls.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace wsgw::daemon {

struct ControlCounters;

/// Where a complete request is answered.
enum class Lane {
    Inline,  ///< on the loop thread, at once: only for handlers that never block (health checks)
    Aux,     ///< one thread of its own with its own queue (/metrics): never behind commands
    Command, ///< the command workers (they wait for the shards)
};

struct ControlServerOptions {
    /// An IP literal; "" means 0.0.0.0; "::" every interface, IPv4 and IPv6. Brackets allowed.
    std::string host = "127.0.0.1";
    std::uint16_t port = 0; ///< 0: a free port, see ControlServer::port()
    std::optional<TlsFiles> tls; ///< set: HTTPS only
    FramingLimits limits;
    /// A request's headers and body must arrive within this (408 otherwise), and an answer be
    /// written within it (the connection is dropped otherwise). Changed later by
    /// setRequestTimeout().
    std::chrono::milliseconds requestTimeout{10'000};
    std::chrono::milliseconds keepAliveTimeout{5'000}; ///< idle between requests
    std::chrono::milliseconds lingerTimeout{2'000};    ///< draining a peer's bytes before a close
    /// Open connections at most. Beyond, room is made by closing the connection that has
    /// been waiting longest: closing, then idle, then unfinished; else the new one gets 503.
    std::size_t maxConnections = 4096;
    std::size_t maxRequestsPerConnection = 1000;
    /// What every connection's buffers may hold together; beyond it the connections holding
    /// the most are closed (idle ones first, then unfinished requests, then slow readers).
    /// 0: 64 MiB, or eight of the largest requests the limits allow if that is more.
    std::size_t maxBufferedBytes = 0;
    unsigned commandWorkers = 8;
    std::size_t commandQueue = 256; ///< complete requests waiting for a command worker; then 503
    std::size_t auxQueue = 64;      ///< ... for the aux lane
    /// Open streams (HttpRouter::openStream) at most; one more is answered 503.
    std::size_t maxStreams = 16;
    /// A stream whose peer leaves more than this unread (written by the source, not yet taken
    /// by the socket) is closed: a slow reader costs at most this.
    std::size_t maxStreamBacklog = 64 * 1024;
    /// stop() lets the answers being computed and written finish for up to this long.
    std::chrono::milliseconds stopGrace{300};
};

/// An HTTP/1.1 server that slow, idle and flooding clients cannot blind. One loop thread
/// (epoll) owns the listening socket and every connection: it accepts, reads each request
/// into the connection's buffer under a total deadline and the framing limits, and hands only
/// complete requests to a lane; it writes each answer without blocking, under a deadline,
/// then waits for the next request of the connection (pipelined ones are answered in order)
/// or closes it. So a thread is only ever busy with a whole request; a client that sends, or
/// reads, a byte a minute costs a buffer and an entry in epoll.
///
/// cpp-httplib parses, routes and writes the answers (router(): set routes before start()).
/// With TLS, OpenSSL runs non-blocking in the loop (handshakes included).
///
/// Handlers run concurrently on the worker threads; one that can wait for long must return
/// promptly once stopping() is true, since stop() joins the workers.
///
/// Streams: a handler that calls HttpRouter::openStream() turns its answer into a stream that
/// stays open (no request or keep-alive deadline applies to it). The loop thread calls the
/// source's next() on its timer (at the source's interval, to the 100 ms tick) and writes what it
/// returns; the stream ends when the peer closes, when its unsent bytes pass maxStreamBacklog,
/// or at stop(), which closes it at once. At most maxStreams are open; past that, 503.
///
/// Thread-safe.
class ControlServer {
public:
    /// `classify` picks the lane of each complete request from its method and path; it runs
    /// on the loop thread and must be quick. `counters` must outlive the server.
    ControlServer(ControlServerOptions options, ControlCounters &counters,
                  std::function<Lane(const RequestHead &)> classify);
    ~ControlServer(); ///< stop()s
    ControlServer(const ControlServer &) = delete;
    ControlServer &operator=(const ControlServer &) = delete;

    /// Routes, handlers and cpp-httplib settings; set them before start().
    HttpRouter &router() noexcept;

    /// Loads the TLS files (the message names the file and OpenSSL's reason), binds and starts
    /// the threads. false with a message otherwise.
    bool start(std::string *error);
    /// Stops promptly: closes the listener and idle and unfinished connections at once, lets
    /// the answers in progress finish for up to stopGrace, closes the rest, joins the threads.
    /// Idempotent.
    void stop();
    /// true from the start of stop(): for handlers that wait.
    bool stopping() const noexcept;
    /// The bound port (after start()).
    std::uint16_t port() const noexcept;
    /// Takes effect for requests that start after the call.
    void setRequestTimeout(std::chrono::milliseconds timeout) noexcept;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace wsgw::daemon
