#pragma once

// An endpoint's jwt: at the upgrade (LWS_CALLBACK_HTTP_CONFIRM_UPGRADE), on the shard's thread.

#include "ws_shard.h"

#include <string>

namespace wsgw::daemon {

/// Checks the upgrade's token against `endpoint.jwt` (which must be set). True: admitted, with
/// the claims' tags kept in s.admitted for ESTABLISHED; false: refuse with 401 and `*why`.
bool admitByJwt(ShardState &s, lws *wsi, const WsEndpoint &endpoint, std::string *why);

} // namespace wsgw::daemon
