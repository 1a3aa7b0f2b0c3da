#pragma once
// Form encoding into a caller's buffer: what encodeForm (wsgw/tags.h) does, without a string per
// call, for the sinks that encode every event's tags. Pure: thread-safe.

#include <wsgw/export.h>
#include <wsgw/tags.h>

#include <string>
#include <string_view>

namespace wsgw {

/// Appends `text` application/x-www-form-urlencoded (as formEncode) to `out`. Exported for
/// libwsgw-amqp (its command reader), not part of the public API.
WSGW_EXPORT void appendFormEncoded(std::string &out, std::string_view text);
/// Appends the tags as encodeForm gives them ("a=1&b=x+y") to `out`. Exported for libwsgw-redis
/// (its stream sink), not part of the public API.
WSGW_EXPORT void appendForm(std::string &out, const Tags &tags);

} // namespace wsgw
