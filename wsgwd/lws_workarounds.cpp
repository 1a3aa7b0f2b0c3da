#include "lws_workarounds.h"

#include "deflate_offer.h"
#include "socket_stats.h"
#include "ws_connection.h"
#include "ws_shard.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace wsgw::daemon {

namespace {
// permessage-deflate inflate buffer and its log2 as lws wants it.
constexpr std::size_t kInflateBuffer = 64 * 1024;
constexpr const char *kInflateBufferPower = "16";
} // namespace

void enlargeInflateBuffer(lws *wsi) {
    // The cap is read at the time of the call, so the protocol's value is raised just for it
    // (this shard's thread alone uses its vhost's table).
    auto *proto = const_cast<lws_protocols *>(lws_get_protocol(wsi));
    if (!proto) return;
    std::size_t saved = proto->rx_buffer_size;
    proto->rx_buffer_size = kInflateBuffer;
    lws_set_extension_option(wsi, "permessage-deflate", "rx_buf_size", kInflateBufferPower);
    proto->rx_buffer_size = saved;
}

void writeCloseFrame(lws *wsi, std::uint16_t code, std::string_view reason) {
    unsigned char frame[LWS_PRE + 4 + 123];
    unsigned char *p = frame + LWS_PRE;
    std::size_t n = std::min<std::size_t>(reason.size(), 123);
    p[0] = 0x88; // FIN + close
    p[1] = static_cast<unsigned char>(2 + n);
    p[2] = static_cast<unsigned char>(code >> 8);
    p[3] = static_cast<unsigned char>(code & 0xff);
    std::memcpy(p + 4, reason.data(), n);
    (void)lws_write(wsi, p, 4 + n, LWS_WRITE_HTTP); // the close follows either way
}

void writeCloseFrameAndCut(lws *wsi, std::uint16_t code, std::string_view reason, int cutAfterS) {
    writeCloseFrame(wsi, code, reason);
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, cutAfterS > 0 ? cutAfterS : LWS_TO_KILL_ASYNC);
}

void trimLongExtensionOffers(lws *wsi) {
    // lws_extension_server_handshake() stops at byte 255 of its copy of the header.
    constexpr int kLwsLimit = 255;
    // lws' header table: every value NUL-terminated, in one buffer of max_http_header_data
    // bytes (we leave it at lws' 4096), in the order received, the request URI first.
    constexpr std::size_t kHeaderData = 4096;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_EXTENSIONS) < kLwsLimit) return;
    const int len = lws_hdr_fragment_length(wsi, WSI_TOKEN_EXTENSIONS, 0);
    if (len <= 0) return;
    std::string value(static_cast<std::size_t>(len) + 1, '\0');
    if (lws_hdr_copy_fragment(wsi, value.data(), len + 1, WSI_TOKEN_EXTENSIONS, 0) != len) return;
    char *uri = nullptr;
    int uriLen = 0;
    if (lws_http_get_uri_and_method(wsi, &uri, &uriLen) < 0 || !uri) return;
    // lws 4.1 exports no writable pointer to a header: find the value (with its NUL) after the
    // URI. The scan stops at the first match, which is there, so it stays inside the table.
    const std::string_view needle(value.data(), value.size());
    char *at = nullptr;
    for (std::size_t i = 0; i + needle.size() <= kHeaderData; ++i) {
        if (uri[i] == needle[0] && std::string_view(uri + i, needle.size()) == needle) {
            at = uri + i;
            break;
        }
    }
    if (!at) return;
    // lws reads its copy up to the first NUL: a NUL in the table ends the header for it.
    const DeflateOffer offer = firstDeflateOffer(std::string_view(value.data(), static_cast<std::size_t>(len)));
    const std::size_t cut = offer.found && offer.end < kLwsLimit - 1 ? offer.end : 0;
    at[cut] = '\0';
}

void limitDeflateWindow(lws *wsi, int bits) {
    if (bits < 9 || bits > 15) return;
    lws_set_extension_option(wsi, "permessage-deflate", "client_max_window_bits", std::to_string(bits).c_str());
}

bool echoServerWindowBits(lws_process_html_args &args, int bits) {
    constexpr std::string_view kLine = "\r\nSec-WebSocket-Extensions: permessage-deflate";
    if (bits < 9 || bits > 15 || !args.p) return false;
    // Back over the CRLF lws ended the line with, to the CRLF that began it (bounded: lws gives
    // the extension line a budget of 192 bytes).
    char *end = args.p;
    if (end[-2] != '\r' || end[-1] != '\n') return false;
    char *begin = end - 2;
    for (int i = 0; i < 256 && !(begin[-1] == '\n' && begin[-2] == '\r'); ++i) --begin;
    begin -= 2;
    if (std::string_view(begin, kLine.size()) != kLine) return false;
    const std::string param = "; server_max_window_bits=" + std::to_string(bits) + "\r\n";
    if (args.max_len < static_cast<int>(param.size())) return false;
    std::memcpy(end - 2, param.data(), param.size());
    args.p = end - 2 + param.size();
    args.max_len -= static_cast<int>(param.size()) - 2;
    return true;
}

void closeSilentFailure(lws *wsi) {
    if (lws_get_close_length(wsi) != 0) return; // lws writes its own close frame
    if (!tcpEstablished(lws_get_socket_fd(wsi))) return;
    writeCloseFrame(wsi, 1002, "protocol error");
}

namespace {

void runFailCuts(lws_sorted_usec_list_t *sul) {
    ShardState &s = *reinterpret_cast<ShardState::FailCutTimer *>(sul)->owner;
    const std::int64_t now = nowMs();
    while (!s.failCuts.empty() && s.failCuts.front().first <= now) {
        ConnectionId id = s.failCuts.front().second;
        s.failCuts.pop_front();
        if (auto *c = static_cast<WsConnection *>(s.shard.registry().find(id))) c->cutNow();
    }
    if (!s.failCuts.empty())
        lws_sul_schedule(s.context, 0, &s.failCutTimer.sul, runFailCuts,
                         std::max<std::int64_t>(1, s.failCuts.front().first - now) * LWS_US_PER_MS);
}

} // namespace

void scheduleFailCut(ShardState &s, ConnectionId id) {
    // Every entry waits as long, so the queue is in due order.
    const bool idle = s.failCuts.empty();
    s.failCuts.emplace_back(nowMs() + kFailCutMs, id);
    if (idle) {
        s.failCutTimer.owner = &s;
        lws_sul_schedule(s.context, 0, &s.failCutTimer.sul, runFailCuts, kFailCutMs * LWS_US_PER_MS);
    }
}

bool echoSubprotocol(char *slot, std::size_t size, std::string_view name) {
    if (name.empty() || name.size() >= size) return false;
    std::memcpy(slot, name.data(), name.size());
    slot[name.size()] = '\0';
    return true;
}

SSL_CTX *newSharedClientTls() { return SSL_CTX_new(TLS_client_method()); }

} // namespace wsgw::daemon
