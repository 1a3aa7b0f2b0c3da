#include "ws_jwt_admission.h"

#include <ctime>
#include <vector>

namespace wsgw::daemon {

namespace {

std::string header(lws *wsi, lws_token_indexes token) {
    const int len = lws_hdr_total_length(wsi, token);
    if (len <= 0) return {};
    std::string out(static_cast<std::size_t>(len) + 1, '\0');
    const int n = lws_hdr_copy(wsi, out.data(), len + 1, token);
    out.resize(n < 0 ? 0 : static_cast<std::size_t>(n));
    return out;
}

// The value of query parameter `name` (lws has split and URL-decoded the arguments).
std::string queryValue(lws *wsi, const std::string &name) {
    const int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
    if (total <= 0) return {};
    std::vector<char> buf(static_cast<std::size_t>(total) + 1);
    for (int i = 0;; ++i) {
        const int n = lws_hdr_copy_fragment(wsi, buf.data(), static_cast<int>(buf.size()), WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0) return {};
        std::string_view arg(buf.data(), static_cast<std::size_t>(n));
        if (arg.size() > name.size() && arg.compare(0, name.size(), name) == 0 && arg[name.size()] == '=')
            return std::string(arg.substr(name.size() + 1));
    }
}

} // namespace

bool admitByJwt(ShardState &s, lws *wsi, const WsEndpoint &endpoint, std::string *why) {
    const JwtSettings &jwt = *endpoint.jwt;
    const std::string query = queryValue(wsi, jwt.tokenQuery);
    const std::string authorization = header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    TagList tags;
    if (!verifyJwt(jwt, jwtFromRequest(query, authorization), static_cast<std::int64_t>(std::time(nullptr)), &tags,
                   why))
        return false;
    if (!tags.empty()) {
        TagList &kept = s.admitted[wsi].tags;
        kept.insert(kept.end(), tags.begin(), tags.end());
    }
    return true;
}

} // namespace wsgw::daemon
