#pragma once

// A small blocking WebSocket client (RFC 6455, with RFC 7692 permessage-deflate, over TCP or
// TLS) for the integration tests of wsgwd. It is written independently of libwebsockets so that it can test
// our libwebsockets-based server, and it can send deliberately broken traffic.
//
// Errors: no exception leaves a public function except std::bad_alloc. Every failure, including
// misuse such as sending before connect(), is reported through the returned value (false, a
// result with a Kind/Failure and an error string) and kept in WsClient::error().
//
// Thread-compatible: one WsClient is used by one thread at a time; distinct clients are
// independent.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wsgw::test {

using Millis = std::chrono::milliseconds;

/// RFC 6455 opcodes. Raw frames may use any 4-bit value, see RawFrame.
enum class Opcode : std::uint8_t {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
};

/// HTTP header fields in the order they were sent or received.
using HeaderList = std::vector<std::pair<std::string, std::string>>;

/// Value of the first field called `name` (compared case-insensitively), or nullopt.
std::optional<std::string> findHeader(const HeaderList &headers, std::string_view name);

/// Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + RFC 6455 GUID)).
std::string websocketAccept(std::string_view key);

/// True if `data` is well-formed UTF-8 (no overlong forms, surrogates or code points > U+10FFFF).
bool isValidUtf8(std::string_view data);

/// What the client offers for permessage-deflate (RFC 7692).
struct DeflateOffer {
    bool enabled = false;
    bool clientNoContextTakeover = false; ///< offer client_no_context_takeover
    bool serverNoContextTakeover = false; ///< offer server_no_context_takeover
    bool clientMaxWindowBits = true;      ///< offer client_max_window_bits (no value): server may limit ours
    std::optional<int> serverMaxWindowBits; ///< offer server_max_window_bits=N (8..15)
};

/// What the server accepted for permessage-deflate.
struct NegotiatedDeflate {
    bool clientNoContextTakeover = false;
    bool serverNoContextTakeover = false;
    int clientMaxWindowBits = 15;
    int serverMaxWindowBits = 15;
};

struct ConnectOptions {
    /// Extra request fields. One named like a generated field (Host, Upgrade, Connection,
    /// Sec-WebSocket-Key, Sec-WebSocket-Version, Origin, Sec-WebSocket-Protocol,
    /// Sec-WebSocket-Extensions) replaces that field's value in place; others are appended.
    HeaderList headers;
    /// Generated fields to leave out, e.g. {"Sec-WebSocket-Key"} for a 400 test.
    std::vector<std::string> omitHeaders;
    /// Offered in Sec-WebSocket-Protocol, in this order. Empty: no such field.
    std::vector<std::string> subprotocols;
    /// Sent as Origin when not empty.
    std::string origin;
    DeflateOffer deflate;
    /// TLS (wss://, OpenSSL): the TLS handshake runs right after the TCP connect, and every byte
    /// after it (the request, frames, sendBytes()) goes through TLS. ALPN offers http/1.1; SNI
    /// carries the host unless it is an IP address.
    bool tls = false;
    /// Verify the server's certificate chain and that it names the host connected to (a DNS name,
    /// or an IP address in subjectAltName). Off by default: tests use self-signed certificates.
    bool tlsVerify = false;
    /// PEM file of the certificates to trust when verifying (a self-signed certificate is its
    /// own CA). Empty: OpenSSL's default locations.
    std::string tlsCaFile;
    /// TCP connect, the TLS handshake and the WebSocket handshake must all finish within this time.
    Millis timeout{5000};
    /// Longest time one send call may wait for the socket to accept its bytes.
    Millis sendTimeout{5000};
    /// Local address to bind before connecting (e.g. "127.0.0.2"). Empty: the kernel chooses.
    std::string bindAddress;
    /// Raw mode: these bytes are sent verbatim instead of the generated request (headers,
    /// subprotocols, origin and deflate are then ignored). The response is read and parsed as
    /// usual; on a 101 Sec-WebSocket-Accept is checked only if the raw request carries a
    /// Sec-WebSocket-Key, and extensions are not negotiated.
    std::optional<std::string> rawRequest;
    /// Answer each ping read by receive()/waitPong()/waitClosed() with a pong. Pings are
    /// recorded either way. Set false to test the server's idle or ping timeouts.
    bool answerPings = true;
    /// Answer a close frame from the server with a close echoing its code (if we have not sent
    /// one already).
    bool answerClose = true;
    /// Keep every frame read in frameLog().
    bool recordFrames = true;
    /// Largest message (after inflation) or frame accepted from the server.
    std::size_t maxMessageSize = std::size_t{64} << 20;
};

/// Why connect() failed.
enum class HandshakeFailure {
    None,        ///< upgraded: the client is open
    Connect,     ///< name resolution, bind or TCP connect failed
    Tls,         ///< the TLS handshake failed, or the server's certificate did not verify
    Timeout,     ///< ConnectOptions::timeout expired
    Eof,         ///< the server closed the connection before a complete response head
    Io,          ///< a socket error while sending or receiving
    Malformed,   ///< the response is not parseable HTTP/1.x
    NotUpgraded, ///< a valid HTTP response other than 101: see status, headers, body
    Invalid,     ///< a 101 that fails validation (accept key, subprotocol, extensions, ...)
    Misuse,      ///< bad arguments or the client is already connected
};

struct HandshakeResult {
    HandshakeFailure failure = HandshakeFailure::Misuse;
    std::string error; ///< empty on success
    int status = 0;    ///< HTTP status, 0 if no status line was read
    std::string reason;
    HeaderList headers;
    std::string body;        ///< for refusals; read per Content-Length, chunked, or until EOF/timeout
    std::string subprotocol; ///< the one the server selected, empty if none
    std::optional<NegotiatedDeflate> deflate;

    bool ok() const noexcept { return failure == HandshakeFailure::None; }
};

/// One frame as it was on the wire (payload unmasked).
struct Frame {
    std::uint8_t opcode = 0;
    bool fin = false;
    bool rsv1 = false;
    bool rsv2 = false;
    bool rsv3 = false;
    bool masked = false;
    std::string payload;
};

/// Result of receive().
struct Received {
    enum class Kind {
        Message, ///< a complete text or binary message in `data`
        Close,   ///< a close frame: closeCode (1005 if it had no payload), closeReason
        Timeout, ///< nothing complete within the timeout; partial input is kept for later calls
        Eof,     ///< the server closed TCP (error says "connection reset by peer" on a reset)
        Error,   ///< the server violated the protocol, or a socket error: see error
    };
    Kind kind = Kind::Timeout;
    Opcode opcode = Opcode::Text; ///< Text or Binary for a Message
    bool compressed = false;      ///< the message had RSV1 set and was inflated
    std::size_t frames = 0;       ///< how many frames the message arrived in
    std::string data;
    std::uint16_t closeCode = 0;
    std::string closeReason;
    std::string error;

    bool isMessage() const noexcept { return kind == Kind::Message; }
    bool isText() const noexcept { return kind == Kind::Message && opcode == Opcode::Text; }
    bool isBinary() const noexcept { return kind == Kind::Message && opcode == Opcode::Binary; }
};

/// Result of receiveFrame().
struct FrameResult {
    enum class Kind { Frame, Timeout, Eof, Error };
    Kind kind = Kind::Timeout;
    wsgw::test::Frame frame;
    std::string error;
};

/// Result of waitClosed().
struct CloseResult {
    enum class Kind {
        CloseFrame, ///< the server sent a close frame: code, reason
        Eof,        ///< TCP closed without a close frame (code is 1006)
        Timeout,    ///< neither within the timeout
        Error,      ///< protocol violation or socket error: see error
    };
    Kind kind = Kind::Timeout;
    std::uint16_t code = 0; ///< 1005 if the close frame had no payload
    std::string reason;
    bool tcpClosed = false;            ///< the server also closed TCP before the timeout
    std::size_t discardedMessages = 0; ///< data messages read (and dropped) while waiting
    std::string error;
};

/// Whether a message is compressed, when permessage-deflate was negotiated.
enum class Compression {
    Negotiated, ///< compress (RSV1) if permessage-deflate was negotiated
    None,       ///< send uncompressed
};

struct FragmentOptions {
    Compression compression = Compression::Negotiated;
    /// If set, a ping with this payload is sent between consecutive fragments.
    std::optional<std::string> pingBetween;
    /// Pause between fragments (lets the server see them in separate reads).
    Millis delayBetween{0};
};

/// How the payload length is encoded in a RawFrame header.
enum class LengthEncoding {
    Minimal, ///< as RFC 6455 requires
    Force16, ///< 126 + 16-bit length, even for short payloads (payload <= 65535)
    Force64, ///< 127 + 64-bit length, even for short payloads
};

/// A frame sent exactly as described, for protocol-violation tests.
struct RawFrame {
    std::uint8_t opcode = 0x1; ///< any value 0..15
    bool fin = true;
    bool rsv1 = false;
    bool rsv2 = false;
    bool rsv3 = false;
    bool masked = true;
    std::optional<std::array<std::uint8_t, 4>> maskKey; ///< default: random
    std::string payload;                                ///< sent (masked if `masked`) in full
    std::optional<std::uint64_t> declaredLength; ///< length written in the header instead of payload.size()
    LengthEncoding encoding = LengthEncoding::Minimal;
};

/// A client connection. Construct, connect(), then send and receive; the destructor closes the
/// socket without a close handshake.
///
/// Sends never validate their arguments against the protocol (a reason longer than 123 bytes,
/// invalid UTF-8 in a text message and sends after a close all go out as asked): this is a test
/// tool. Receives are strict: anything the server must not send is reported as an Error.
///
/// Thread-compatible.
class WsClient {
public:
    WsClient();
    ~WsClient();
    WsClient(const WsClient &) = delete;
    WsClient &operator=(const WsClient &) = delete;

    /// Connects to host:port (a numeric IPv4/IPv6 address or a name) and upgrades on `path`.
    /// On failure the socket is closed and the client may connect again.
    HandshakeResult connect(const std::string &host, std::uint16_t port, const std::string &path,
                            const ConnectOptions &options = {});

    /// Connected and upgraded, not disconnected by us and no EOF read from the server.
    bool isOpen() const noexcept { return fd_ >= 0 && open_ && !eof_; }
    /// The last failure of any call.
    const std::string &error() const noexcept { return error_; }
    /// The socket, or -1. With TLS, bytes written to it directly bypass the TLS session.
    int fd() const noexcept { return fd_; }
    /// The TLS version in use ("TLSv1.3"), empty without TLS.
    std::string tlsVersion() const;
    /// Our end of the TCP connection as "address:port" ("[addr]:port" for IPv6), empty if none.
    std::string localEndpoint() const;
    /// The request exactly as it was sent.
    const std::string &request() const noexcept { return request_; }
    /// What was negotiated, if anything.
    const std::optional<NegotiatedDeflate> &negotiatedDeflate() const noexcept { return negotiated_; }

    // Sending. Each returns false (and sets error()) if the client is not connected, the socket
    // fails, or ConnectOptions::sendTimeout expires. Data frames carry a fresh random mask.

    [[nodiscard]] bool sendText(std::string_view text, Compression c = Compression::Negotiated);
    [[nodiscard]] bool sendBinary(std::string_view data, Compression c = Compression::Negotiated);
    [[nodiscard]] bool sendMessage(Opcode opcode, std::string_view data,
                                   Compression c = Compression::Negotiated);
    /// Sends a text message that is not valid UTF-8.
    [[nodiscard]] bool sendInvalidUtf8Text();
    /// Sends one message as several frames. The payload (compressed first, if compressing) is
    /// cut by `sizes` in order: each entry yields one frame of min(size, bytes left) bytes, and
    /// bytes left after the last entry go in one more frame; the last frame has FIN. So {} sends
    /// one frame and {0, 0} on an empty message sends two empty frames.
    [[nodiscard]] bool sendFragmented(Opcode opcode, std::string_view data,
                                      const std::vector<std::size_t> &sizes,
                                      const FragmentOptions &options = {});
    [[nodiscard]] bool sendPing(std::string_view payload = {});
    [[nodiscard]] bool sendPong(std::string_view payload = {});
    /// Close frame with a 2-byte code and `reason`; later server close frames are not answered.
    [[nodiscard]] bool sendClose(std::uint16_t code, std::string_view reason = {});
    /// Close frame with no payload.
    [[nodiscard]] bool sendCloseEmpty();
    [[nodiscard]] bool sendRaw(const RawFrame &frame);
    /// Arbitrary bytes on the socket (truncated frames, garbage).
    [[nodiscard]] bool sendBytes(std::string_view bytes);

    // Receiving.

    /// The next message, close frame, timeout, EOF or error, within `timeout`. Reassembles
    /// fragments, inflates compressed messages, validates UTF-8 of text, answers pings (see
    /// ConnectOptions::answerPings) and records pings and pongs on the way.
    Received receive(Millis timeout);
    /// The next frame as it is, with no validation, reply, reassembly or inflation. Do not
    /// call it in the middle of a fragmented message that receive() is assembling.
    FrameResult receiveFrame(Millis timeout);
    /// Reads until a pong arrives and returns its payload; nullopt on timeout, EOF or error
    /// (see error()). Messages and a close frame read meanwhile are kept for receive().
    std::optional<std::string> waitPong(Millis timeout);
    /// Reads until the server's close frame (dropping messages), then until the server closes
    /// TCP, within `timeout` in total. If receive() already returned the close frame, only
    /// waits for TCP to close.
    CloseResult waitClosed(Millis timeout);

    /// The code of the close frame received from the server (1005 if it had no payload), if any.
    std::optional<std::uint16_t> closeCode() const noexcept { return closeCode_; }
    const std::string &closeReason() const noexcept { return closeReason_; }
    bool closeSent() const noexcept { return closeSent_; }

    /// Payloads of the pings and pongs read so far, in order.
    const std::vector<std::string> &receivedPings() const noexcept { return pings_; }
    const std::vector<std::string> &receivedPongs() const noexcept { return pongs_; }
    /// Every frame read so far (if ConnectOptions::recordFrames), in order.
    const std::vector<Frame> &frameLog() const noexcept { return frameLog_; }
    void clearFrameLog() noexcept { frameLog_.clear(); }

    /// Half-closes TCP (shutdown SHUT_WR) without a close frame; with TLS, after a close_notify.
    void shutdownWrite() noexcept;
    /// Closes the socket at once, without a close frame.
    void disconnect() noexcept;

private:
    struct Deflate;
    struct Tls;
    using Clock = std::chrono::steady_clock;
    enum class ReadStatus { Data, Timeout, Eof, Error };
    enum class ParseStatus { Incomplete, Frame, Error };

    void reset() noexcept;
    bool fail(std::string message);
    HandshakeFailure startTls(const std::string &host, const ConnectOptions &options,
                              Clock::time_point deadline);
    HandshakeResult handshake(const std::string &hostHeader, const std::string &path,
                              const ConnectOptions &options, Clock::time_point deadline);
    HandshakeResult refuse(HandshakeResult &result, HandshakeFailure failure, std::string message);
    bool writeAll(std::string_view data);
    ReadStatus readSome(Clock::time_point deadline);
    ParseStatus parseFrame(Frame &frame);
    FrameResult readFrame(Clock::time_point deadline);
    bool sendFrame(std::uint8_t opcode, bool fin, bool rsv1, std::string_view payload);
    std::optional<std::string> compress(std::string_view data);
    Received handleFrame(Frame &frame, bool &complete);
    Received nextEvent(Clock::time_point deadline);
    std::string_view buffered() const noexcept { return std::string_view(in_).substr(inPos_); }
    void consume(std::size_t n);

    int fd_ = -1;
    bool open_ = false;
    std::string error_;
    std::string request_;
    ConnectOptions options_;
    std::optional<NegotiatedDeflate> negotiated_;
    std::unique_ptr<Deflate> deflate_;
    std::unique_ptr<Tls> tls_; // the TLS session over fd_, if ConnectOptions::tls
    std::mt19937 rng_;

    std::string in_; // bytes read but not yet consumed, from inPos_
    std::size_t inPos_ = 0;
    std::string readError_;
    bool lastLengthNonMinimal_ = false; // set by parseFrame()

    // Message being reassembled.
    bool inMessage_ = false;
    Opcode msgOpcode_ = Opcode::Text;
    bool msgCompressed_ = false;
    std::size_t msgFrames_ = 0;
    std::string msgData_;

    std::deque<Received> pending_; // read by waitPong(), handed out by receive()
    std::optional<std::uint16_t> closeCode_;
    std::string closeReason_;
    bool closeSent_ = false;
    bool eof_ = false;
    std::vector<std::string> pings_;
    std::vector<std::string> pongs_;
    std::vector<Frame> frameLog_;
};

} // namespace wsgw::test
