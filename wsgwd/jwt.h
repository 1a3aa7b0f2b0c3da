#pragma once

// JWT connects (an endpoint's jwt: section): a client proves who it is with a token signed by
// the backend, checked here without a round trip. HS256 (a shared secret), RS256 and ES256 (a
// PEM public key); OpenSSL does every signature, nlohmann-json reads the claims.
//
// What is refused: a token that is not three base64url parts of JSON; an alg other than the
// endpoint's own (so never "none", and no HS256 token checked with an RSA or EC public key as
// its HMAC secret); a bad signature; exp in the past or nbf in the future (each by more than
// leeway_s); a required claim missing; a claim for a tag that is an object, or an array holding
// anything but strings and numbers.
//
// JwtKey is immutable once loaded and thread-safe (OpenSSL keys are safe for concurrent
// verification); JwtSettings is a plain value, thread-compatible.

#include <wsgw/tags.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wsgw::daemon {

enum class JwtAlg { HS256, RS256, ES256 };
const char *jwtAlgName(JwtAlg alg) noexcept;

/// A loaded verification key: the HS256 secret's bytes, or an RSA / P-256 public key.
class JwtKey {
public:
    /// `content` is the key file's content: the secret for HS256, a PEM public key otherwise.
    /// nullptr with a message in `*error` if it is not one (a PEM that is no public key, an RSA
    /// key for ES256, an EC key on another curve than P-256).
    static std::shared_ptr<const JwtKey> load(JwtAlg alg, std::string content, std::string *error);
    ~JwtKey();
    JwtKey(const JwtKey &) = delete;
    JwtKey &operator=(const JwtKey &) = delete;

    JwtAlg alg() const { return alg_; }
    /// Whether `signature` signs `signingInput` (the token's "header.payload") with this key.
    bool verify(std::string_view signingInput, std::string_view signature) const;

private:
    struct PkeyFree {
        void operator()(void *p) const noexcept;
    };
    JwtKey(JwtAlg alg, std::string secret, void *pkey);
    JwtAlg alg_;
    std::string secret_;                   // HS256
    std::unique_ptr<void, PkeyFree> pkey_; // EVP_PKEY, RS256 and ES256
};

/// An endpoint's jwt: section.
struct JwtSettings {
    JwtAlg alg = JwtAlg::HS256;
    std::string keyFile;            ///< hs256_secret_file, rs256_public_key_file or es256_public_key_file
    std::string tokenQuery = "token"; ///< token_query: the query parameter holding the token
    /// claims_to_tags: claim -> tag, in the order written.
    std::vector<std::pair<std::string, std::string>> claimsToTags;
    std::vector<std::string> requiredClaims; ///< required_claims
    std::chrono::seconds leeway{0};          ///< leeway_s: clock skew allowed on exp and nbf
    std::shared_ptr<const JwtKey> key;       ///< loaded from keyFile by readConfigFiles

    friend bool operator==(const JwtSettings &a, const JwtSettings &b);
};

/// Checks `token` at `nowS` (Unix seconds) against `settings`. True with the tags its claims
/// give (claims_to_tags) appended to `*tags`; false with why in `*error` ("token expired").
[[nodiscard]] bool verifyJwt(const JwtSettings &settings, std::string_view token, std::int64_t nowS, TagList *tags,
                             std::string *error);

/// The token of an upgrade request: the value of the token_query parameter if given, else the
/// credentials of "Authorization: Bearer <token>"; empty if neither.
std::string_view jwtFromRequest(std::string_view queryValue, std::string_view authorization);

/// base64url (RFC 4648 section 5) without padding, as JWTs use it. False for anything else.
[[nodiscard]] bool base64UrlDecode(std::string_view in, std::string &out);

} // namespace wsgw::daemon
