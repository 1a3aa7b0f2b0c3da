#include "lws_workarounds.h"

#include <algorithm>
#include <cstring>

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

void writeCloseFrameAndCut(lws *wsi, std::uint16_t code, std::string_view reason, int cutAfterS) {
    unsigned char frame[LWS_PRE + 4 + 123];
    unsigned char *p = frame + LWS_PRE;
    std::size_t n = std::min<std::size_t>(reason.size(), 123);
    p[0] = 0x88; // FIN + close
    p[1] = static_cast<unsigned char>(2 + n);
    p[2] = static_cast<unsigned char>(code >> 8);
    p[3] = static_cast<unsigned char>(code & 0xff);
    std::memcpy(p + 4, reason.data(), n);
    (void)lws_write(wsi, p, 4 + n, LWS_WRITE_HTTP); // the cut follows either way
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, cutAfterS > 0 ? cutAfterS : LWS_TO_KILL_ASYNC);
}

bool echoSubprotocol(char *slot, std::size_t size, std::string_view name) {
    if (name.empty() || name.size() >= size) return false;
    std::memcpy(slot, name.data(), name.size());
    slot[name.size()] = '\0';
    return true;
}

SSL_CTX *newSharedClientTls() { return SSL_CTX_new(TLS_client_method()); }

} // namespace wsgw::daemon
