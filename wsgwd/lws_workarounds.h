#pragma once

// Workarounds for bugs and gaps of libwebsockets 4.1.6 (Debian 12), in one place so that they
// can go when lws is upgraded. Each says what lws does wrong and how we get around it.
//
// Elsewhere, marked "lws_workarounds.h":
// - WsConnection::writeCompressed keeps the message it passed to lws_write (inflight_) until the
//   next WRITEABLE: with permessage-deflate lws reads its input over several callbacks.
// - The subprotocol echo (echoSubprotocol below) writes into the shard's protocol table.
// - A vhost has no listen socket of its own (CONTEXT_PORT_NO_LISTEN_SERVER): we accept on our
//   own SO_REUSEPORT socket and adopt the fds, since lws 4.1.6's `iface` still listens on every
//   interface unless IPv6 is disabled for the vhost.
// - Every accepted socket gets TCP_NODELAY from us (ws_accept.cpp), as lws' own listener would
//   give it.
// - A client's close frame that must not be echoed (a 1-byte payload, a reason that is not
//   UTF-8) is answered with writeCloseFrame from WsConnection::onPeerClose.
// - No lws validity timers (retry_and_idle_policy with no timers): lws keeps them in one sorted
//   list that every connect walks; our sweep pings and times out connections itself.

#include <wsgw/connection.h>

#include <libwebsockets.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace wsgw::daemon {

struct ShardState;

/// lws 4.1.6's permessage-deflate stops inflating when its output buffer fills just as its input
/// runs out: the rest of the message stays inside zlib until the client sends more, so the
/// message never completes. Its buffer is 1 KiB by default, capped at the protocol's
/// rx_buffer_size; a 64 KiB buffer (allocated by lws only once the client sends a compressed
/// message) makes this rare for ordinary traffic. What remains is caught by the inflate stall
/// watchdog (ws_sweep.cpp), which closes with writeCloseFrameAndCut. Call on ESTABLISHED.
void enlargeInflateBuffer(lws *wsi);

/// How long a compressed message may make no progress, while the client sends nothing more,
/// before it counts as stuck inside lws (see enlargeInflateBuffer).
inline constexpr std::int64_t kInflateStallMs = 3000;

/// Writes a whole close frame (code, reason cut to 123 bytes) as raw bytes and has lws drop the
/// connection `cutAfterS` seconds later (0: at once). For connections lws will not close
/// politely: one stuck inside inflate never reaches a WRITEABLE, and lws 4.1 keeps
/// LWS_WRITE_CLOSE to itself. A close frame is never compressed, so raw bytes are right.
void writeCloseFrameAndCut(lws *wsi, std::uint16_t code, std::string_view reason, int cutAfterS);

/// Writes a whole close frame as raw bytes, nothing else. lws 4.1 answers a client's close frame
/// only by echoing it, whatever it holds (a 1-byte payload, a reason that is not UTF-8 unless
/// the context validates all UTF-8 itself); from LWS_CALLBACK_WS_PEER_INITIATED_CLOSE we write
/// our answer with this and return -1, and lws closes TCP after it.
void writeCloseFrame(lws *wsi, std::uint16_t code, std::string_view reason);

/// lws 4.1.6 gives no HTTP answer at all, and closes the connection, when Sec-WebSocket-Extensions
/// is 255 bytes or longer (its offer parser gives up at that bound; three permessage-deflate
/// offers with parameters get there). Call on HTTP_CONFIRM_UPGRADE: a header that long is cut,
/// in lws' own header table, just after its first permessage-deflate offer (the one lws would
/// take anyway), or to nothing when that offer itself reaches the bound, so the client gets a
/// 101 with compression, or without. Shorter headers are left alone.
void trimLongExtensionOffers(lws *wsi);

/// lws 4.1.6 neither applies nor echoes server_max_window_bits from an offer, and on a vhost
/// with no listen port of its own (ours) it compresses with the window of its
/// client_max_window_bits setting instead of server_max_window_bits. So setting that option to
/// `bits` (9..15) on an established connection makes our compressor stay within the window the
/// client asked for. Call on ESTABLISHED, before the first compressed write.
void limitDeflateWindow(lws *wsi, int bits);

/// The other half (RFC 7692 7.1.2.1: a server that accepts server_max_window_bits must name it):
/// from LWS_CALLBACK_ADD_HEADERS of the 101, appends "; server_max_window_bits=`bits`" to the
/// Sec-WebSocket-Extensions line lws wrote just before (its last line, which lws has ended
/// with CRLF already). Returns false, changing nothing, if the line before is not that.
bool echoServerWindowBits(lws_process_html_args &args, int bits);

/// After failing a connection for a protocol error (its own, or ours from RECEIVE), lws 4.1.6
/// writes its close frame and then waits up to 5 s for the client's close frame, which it often
/// cannot find: the rest of the read that held the bad frame is dropped, so its parser is out
/// of step with the client's frames. The client, having answered, waits for us to close TCP
/// (Autobahn 3.x, 5.14: not a clean close). RFC 6455 7.1.7 lets a failing endpoint close TCP
/// once its close frame is out, so the shard cuts such a connection kFailCutMs after the
/// failure (`id`; one that has gone by then is skipped).
void scheduleFailCut(ShardState &s, ConnectionId id);
inline constexpr std::int64_t kFailCutMs = 250;

/// lws 4.1.6 fails some protocol errors without a close frame: a control frame longer than 125
/// bytes (RFC 6455 5.5 wants 1002) just drops TCP. Called when lws starts closing a connection
/// we did not close (WS_SERVER_DROP_PROTOCOL): if lws has no close reason to send and the
/// client has not closed its side (so it is not simply gone), writes close 1002 first.
void closeSilentFailure(lws *wsi);

/// lws accepts only subprotocols it has a protocol entry for; the original gateway accepted any.
/// So the shard's spare protocol entry (`slot`, `size` bytes) takes the name of the subprotocol
/// the client offered first, and lws binds and echoes it. Safe because only the shard's thread
/// uses its table. Returns false if the name does not fit.
bool echoSubprotocol(char *slot, std::size_t size, std::string_view name);

/// lws 4.1.6 gives every TLS vhost a client context of its own, which we never use, and leaks
/// it: at destruction it looks up its bookkeeping through an OpenSSL ex-data index that the next
/// shard's context creation has replaced. The vhosts share one made by us instead (set as
/// provided_client_ssl_ctx), which lws leaves alone; it must outlive them.
SSL_CTX *newSharedClientTls();

} // namespace wsgw::daemon
