#pragma once

#include <cstddef>
#include <string_view>

namespace wsgw::daemon {

/// The first permessage-deflate offer of a Sec-WebSocket-Extensions header (RFC 7692), which is
/// the one libwebsockets takes.
struct DeflateOffer {
    bool found = false;
    std::size_t begin = 0; ///< where the offer starts in the header
    std::size_t end = 0;   ///< just past it: the ',' before the next offer, or the header's end
    /// server_max_window_bits: 0 not offered, -1 offered without a value or with one outside
    /// 8..15 (RFC 7692 7.1.2.1: the offer must then be declined), else the value.
    int serverMaxWindowBits = 0;
};

/// Finds the first offer named permessage-deflate (ASCII case-insensitive) in `header`.
/// Pure: no lws.
DeflateOffer firstDeflateOffer(std::string_view header) noexcept;

} // namespace wsgw::daemon
