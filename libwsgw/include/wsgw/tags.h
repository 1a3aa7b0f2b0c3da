#pragma once

#include <wsgw/export.h>

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wsgw {

/// A connection's tags: key -> value, ordered by key. Values are never empty: an empty value
/// means "no such tag" wherever tags are changed.
using Tags = std::map<std::string, std::string, std::less<>>;

/// An ordered list of key=value pairs as they were written (a query string, a form body, a
/// config's set_tags). Keys may repeat; the functions that take one say which occurrence wins.
using TagList = std::vector<std::pair<std::string, std::string>>;

/// Decodes an application/x-www-form-urlencoded string (also a URL query): pairs separated by
/// '&', key and value separated by the first '=', '+' is a space, %XX is a byte. Empty pairs
/// ("a=1&&b=2", a trailing '&') are skipped; a pair without '=' has an empty value.
/// Returns nullopt and sets `*error` (if given) for a malformed %-escape or an empty key; the
/// message names the offending position.
[[nodiscard]] WSGW_EXPORT std::optional<TagList> parseForm(std::string_view text, std::string *error = nullptr);

/// Encodes pairs as application/x-www-form-urlencoded ("a=1&b=x+y"): the inverse of parseForm.
WSGW_EXPORT std::string encodeForm(const Tags &tags);
WSGW_EXPORT std::string encodeForm(const TagList &pairs);

/// Percent-decodes `text`: each %XX (two hex digits, either case) becomes that byte; every other
/// byte is copied as it is, except that with `plusIsSpace` '+' becomes a space (as in an
/// application/x-www-form-urlencoded component or a query string; without it, as in a URL's
/// user, password or path, '+' stays '+'). Decoded bytes are not checked: "%00" gives a NUL.
/// Returns nullopt for a '%' not followed by two hex digits and then sets `*badOffset` (if
/// given) to that '%''s offset in `text`. Pure: thread-safe.
[[nodiscard]] WSGW_EXPORT std::optional<std::string> percentDecode(std::string_view text, bool plusIsSpace,
                                                                   std::size_t *badOffset = nullptr);

/// Percent-decodes one form component: percentDecode(text, true).
[[nodiscard]] WSGW_EXPORT std::optional<std::string> formDecode(std::string_view text);
/// Percent-encodes one form component: unreserved bytes stay, space becomes '+'.
WSGW_EXPORT std::string formEncode(std::string_view text);

} // namespace wsgw
