#pragma once

#include "control_transport.h"
#include "http_exchange.h"
#include "http_framing.h"

#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace wsgw::daemon {

/// Where a control connection is.
enum class ConnPhase : std::size_t {
    Handshake, ///< TLS handshake (counts against the first request's deadline)
    Reading,   ///< receiving a request
    Working,   ///< a complete request is with a lane; nothing is read meanwhile
    Writing,   ///< writing the answer
    Idle,      ///< keep-alive, between requests
    Lingering, ///< our side is shut; reading and dropping what the peer still sends
    Streaming, ///< an answer that stays open (StreamSource): written on a timer, no deadline
    Count
};

/// One connection of the control server: its socket, its buffers and where it is.
/// Thread-bound (to the server's loop).
struct ControlConnection {
    using Clock = std::chrono::steady_clock;

    ControlConnection(std::uint64_t connId, int fd, SSL *ssl, const FramingLimits &limits)
        : id(connId), io(fd, ssl), framer(limits) {}

    const std::uint64_t id;
    ControlTransport io;
    Peer peer;
    ConnPhase phase = ConnPhase::Reading;
    Clock::time_point since;                          ///< entered its phase
    Clock::time_point deadline = Clock::time_point::max();
    std::string in;          ///< received: consumed bytes, then the current request, then what follows
    std::size_t inStart = 0; ///< the current request begins here
    RequestFramer framer;
    std::string out;
    std::size_t outPos = 0;
    bool continueSent = false;   ///< we wrote "100 Continue" for the current request
    bool closeAfterWrite = false;
    bool peerDone = false;       ///< the peer has shut its side (EOF read)
    bool readWantsWrite = false; ///< TLS: the last read (or handshake) needs the socket writable
    bool writeWantsRead = false; ///< TLS: the last write needs it readable
    unsigned requests = 0;
    std::size_t lingered = 0;
    std::uint32_t interest = 0;  ///< the epoll events registered
    std::size_t inFlight = 0;    ///< Working: the size of the request's copy with a lane
    bool onSpare = false;        ///< accepted on the acceptor's spare descriptor (out of them)
    std::shared_ptr<const StreamSource> stream; ///< Streaming: what writes it
    Clock::time_point nextEvent;                ///< Streaming: when stream->next() runs again

    /// The current request's bytes so far, and whatever follows them.
    std::string_view pending() const { return std::string_view(in).substr(inStart); }
    bool nothingPending() const { return inStart == in.size(); }
    /// Consumes `n` bytes of pending(); the rest moves to the front only once the consumed part
    /// is large, so that many small pipelined requests cost linear time.
    void consume(std::size_t n);
    void dropInput();
    void dropOutput();
    /// What the connection holds in memory: its buffers' capacity and a request with a lane.
    std::size_t footprint() const { return in.capacity() + out.capacity() + inFlight; }

private:
    friend class ConnectionTable;
    bool listed_ = false;
    std::list<ControlConnection *>::iterator order_; ///< in its phase's list
    std::size_t accounted_ = 0; ///< its share of ConnectionTable::buffered()
};

/// The control server's connections, by id, each also in the list of its phase in the order it
/// entered it, so that the one waiting longest is at the front; and what all their buffers hold.
/// Removing a connection closes its socket. Thread-bound (to the server's loop).
class ConnectionTable {
public:
    using Clock = ControlConnection::Clock;

    ControlConnection *find(std::uint64_t id);
    ControlConnection &add(std::unique_ptr<ControlConnection> c);
    /// Moves `c` to the back of `phase`'s list, with a new deadline.
    void enter(ControlConnection &c, ConnPhase phase, Clock::time_point deadline);
    void remove(ControlConnection &c);
    std::size_t size() const { return byId_.size(); }
    bool empty() const { return byId_.empty(); }

    /// Takes `c`'s buffers into account again after they changed.
    void account(ControlConnection &c);
    std::size_t buffered() const { return buffered_; }

    /// Whom to close to make room for a new connection: the one waiting longest among those
    /// closing, then idle, then unfinished (a handshake or a request), then slow readers.
    /// Never one whose request is being answered. nullptr if there is none.
    ControlConnection *longestWaiting() const;
    /// Whom to close when the buffers hold too much: the one holding most among idle and
    /// closing connections, then unfinished ones, then slow readers. nullptr if none holds
    /// anything.
    ControlConnection *largest() const;

    /// Connections past their deadline (none in Working has one).
    std::vector<std::uint64_t> expired(Clock::time_point now) const;
    std::vector<std::uint64_t> ids() const;

private:
    const std::list<ControlConnection *> &list(ConnPhase p) const { return lists_[static_cast<std::size_t>(p)]; }
    std::list<ControlConnection *> &list(ConnPhase p) { return lists_[static_cast<std::size_t>(p)]; }

    std::unordered_map<std::uint64_t, std::unique_ptr<ControlConnection>> byId_;
    std::list<ControlConnection *> lists_[static_cast<std::size_t>(ConnPhase::Count)];
    std::size_t buffered_ = 0;
};

} // namespace wsgw::daemon
