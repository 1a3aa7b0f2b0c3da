#include "deflate_offer.h"

#include "ws_handshake.h"

#include <algorithm>
#include <cctype>

namespace wsgw::daemon {

namespace {

bool equalsLower(std::string_view a, std::string_view lower) {
    return a.size() == lower.size() && std::equal(a.begin(), a.end(), lower.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == y;
           });
}

// A parameter value: a token or a quoted string (RFC 7692 4: the same value either way).
int windowBits(std::string_view value) {
    value = trimOws(value);
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
    if (value.empty() || value.size() > 2) return -1;
    int n = 0;
    for (char c : value) {
        if (c < '0' || c > '9') return -1;
        n = n * 10 + (c - '0');
    }
    return n >= 8 && n <= 15 && value.front() != '0' ? n : -1;
}

} // namespace

DeflateOffer firstDeflateOffer(std::string_view header) noexcept {
    DeflateOffer out;
    std::size_t start = 0;
    while (start <= header.size()) {
        std::size_t end = header.find(',', start);
        if (end == std::string_view::npos) end = header.size();
        std::string_view offer = header.substr(start, end - start);
        std::size_t semi = offer.find(';');
        if (equalsLower(trimOws(offer.substr(0, semi)), "permessage-deflate")) {
            out.found = true;
            out.begin = start;
            out.end = end;
            while (semi != std::string_view::npos) {
                std::size_t next = offer.find(';', semi + 1);
                std::string_view param = offer.substr(semi + 1, next == std::string_view::npos ? next : next - semi - 1);
                std::size_t eq = param.find('=');
                if (equalsLower(trimOws(param.substr(0, eq)), "server_max_window_bits"))
                    out.serverMaxWindowBits = eq == std::string_view::npos ? -1 : windowBits(param.substr(eq + 1));
                semi = next;
            }
            return out;
        }
        start = end + 1;
    }
    return out;
}

} // namespace wsgw::daemon
