#pragma once

// The JSON control API beside the original's: its request bodies and queries, read strictly
// (an unknown field is an error, so a typo never turns into "everyone"), and its answers.
//   POST /v1/send      {"selector":{...}, "message":"text"} or {"selector":..., "message_base64":"..."}
//   POST /v1/settags   {"selector":{...}, "tags":{"k":"v","gone":""}}
//   POST /v1/close     {"selector":{...}} with an optional last message as in /v1/send
//   GET  /v1/count?selector=<JSON>                          (absent: every connection)
//   GET  /v1/connections?selector=<JSON>&limit=N&cursor=C   (a page; next_cursor for the next)
// The selector is wsgw::Selector's JSON form. Pure functions: thread-safe.

#include "command_runner.h"

#include <wsgw/connection_id.h>
#include <wsgw/selector.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace wsgw::daemon::v1 {

inline constexpr std::size_t kDefaultPage = 100;
inline constexpr std::size_t kMaxPage = 1000;

/// The body of POST /v1/send, /v1/settags or /v1/close as a command for the CommandRunner, or
/// nullopt with what is wrong in `*error` (for a 400).
[[nodiscard]] std::optional<CommandRequest> parseCommand(CommandAction action, std::string_view body,
                                                         std::string *error);

/// The query of GET /v1/count (`paged` false: only `selector`) or /v1/connections.
struct ListQuery {
    Selector selector = Selector::all();
    std::size_t limit = kDefaultPage;
    std::optional<ConnectionId> cursor; ///< list the connections after this one
};
[[nodiscard]] std::optional<ListQuery> parseListQuery(std::string_view rawQuery, bool paged, std::string *error);

/// Standard base64 (RFC 4648 section 4, padding optional) to bytes; false if it is not base64.
[[nodiscard]] bool base64Decode(std::string_view in, std::string &out);

} // namespace wsgw::daemon::v1
