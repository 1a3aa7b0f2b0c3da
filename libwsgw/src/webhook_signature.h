#pragma once

// Standard Webhooks signing (https://www.standardwebhooks.com): the secret's format and the
// signature header. OpenSSL does the HMAC and the base64 decoding. Pure functions, thread-safe.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace wsgw::webhook {

/// The signing key of a secret "whsec_<base64>" (the prefix may be left out): the decoded
/// bytes. nullopt with a message in `*error` if it is not base64 or decodes to nothing.
[[nodiscard]] std::optional<std::string> decodeSecret(std::string_view secret, std::string *error = nullptr);

/// The webhook-signature header value: "v1," + base64(HMAC-SHA256(key, id + "." + timestamp +
/// "." + body)).
std::string signature(std::string_view key, std::string_view id, std::int64_t timestamp, std::string_view body);

} // namespace wsgw::webhook
