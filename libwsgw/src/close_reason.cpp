#include <wsgw/connection.h>

namespace wsgw {

std::string_view cutCloseReason(std::string_view reason) noexcept {
    if (reason.size() <= kMaxCloseReasonBytes) return reason;
    std::size_t n = kMaxCloseReasonBytes;
    // reason[n] is the first byte left out: while it continues a sequence (10xxxxxx), the kept
    // bytes end inside that sequence, so its lead byte and continuations go too. A UTF-8
    // sequence has at most 3 continuation bytes; past that the input is not UTF-8 and is cut as is.
    for (int back = 0; back < 3 && n > 0 && (static_cast<unsigned char>(reason[n]) & 0xC0) == 0x80; ++back) --n;
    if ((static_cast<unsigned char>(reason[n]) & 0xC0) == 0x80) return reason.substr(0, kMaxCloseReasonBytes);
    return reason.substr(0, n);
}

} // namespace wsgw
