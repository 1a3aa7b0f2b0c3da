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
// - No lws validity timers (retry_and_idle_policy with no timers): lws keeps them in one sorted
//   list that every connect walks; our sweep pings and times out connections itself.

#include <libwebsockets.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace wsgw::daemon {

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
