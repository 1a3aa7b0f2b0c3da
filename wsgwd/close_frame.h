#pragma once

#include "utf8.h"

#include <wsgw/connection.h>

#include <cstdint>
#include <optional>
#include <string_view>

namespace wsgw::daemon {

/// How to answer a client's close frame that breaks RFC 6455 5.5.1 instead of echoing it.
struct CloseFrameFault {
    std::uint16_t code;
    std::string_view reason;
};

/// A client's close frame payload (code and reason, unmasked): nullopt when it may be echoed,
/// else the code to fail the connection with. A one-byte payload cannot hold a code (1002); a
/// reason must be UTF-8 (1007). Invalid codes are libwebsockets' to answer (it replies 1002).
inline std::optional<CloseFrameFault> checkCloseFrame(std::string_view payload) noexcept {
    if (payload.size() == 1) return CloseFrameFault{close_code::kProtocolError, "close frame payload of 1 byte"};
    if (payload.size() > 2 && !isValidUtf8(payload.substr(2)))
        return CloseFrameFault{close_code::kInvalidPayload, "close reason is not valid UTF-8"};
    return std::nullopt;
}

} // namespace wsgw::daemon
