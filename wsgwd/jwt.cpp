#include "jwt.h"

#include <nlohmann/json.hpp>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>

namespace wsgw::daemon {

namespace {

using json = nlohmann::json;


bool fail(std::string *error, std::string why) {
    if (error) *error = std::move(why);
    return false;
}

// ES256 signs with r || s, 32 bytes each (RFC 7518 3.4); OpenSSL verifies DER.
bool joseToDer(std::string_view sig, std::string &der) {
    if (sig.size() != 64) return false;
    ECDSA_SIG *s = ECDSA_SIG_new();
    if (!s) return false;
    BIGNUM *r = BN_bin2bn(reinterpret_cast<const unsigned char *>(sig.data()), 32, nullptr);
    BIGNUM *ss = BN_bin2bn(reinterpret_cast<const unsigned char *>(sig.data()) + 32, 32, nullptr);
    if (!r || !ss || ECDSA_SIG_set0(s, r, ss) != 1) {
        BN_free(r);
        BN_free(ss);
        ECDSA_SIG_free(s);
        return false;
    }
    const int len = i2d_ECDSA_SIG(s, nullptr);
    bool ok = len > 0;
    if (ok) {
        der.resize(static_cast<std::size_t>(len));
        auto *p = reinterpret_cast<unsigned char *>(der.data());
        ok = i2d_ECDSA_SIG(s, &p) == len;
    }
    ECDSA_SIG_free(s);
    return ok;
}

// A claim as a tag value: strings as they are, numbers and booleans as JSON text, arrays of
// strings and numbers as a comma list. False for objects and other arrays.
bool claimText(const json &v, std::string &out) {
    if (v.is_string()) {
        out = v.get<std::string>();
        return true;
    }
    if (v.is_number() || v.is_boolean()) {
        out = v.dump();
        return true;
    }
    if (v.is_array()) {
        out.clear();
        for (const json &item : v) {
            std::string s;
            if (!(item.is_string() || item.is_number()) || !claimText(item, s)) return false;
            if (!out.empty()) out += ',';
            out += s;
        }
        return true;
    }
    return false;
}

} // namespace

const char *jwtAlgName(JwtAlg alg) noexcept {
    switch (alg) {
    case JwtAlg::HS256: return "HS256";
    case JwtAlg::RS256: return "RS256";
    case JwtAlg::ES256: return "ES256";
    }
    return "?";
}

void JwtKey::PkeyFree::operator()(void *p) const noexcept { EVP_PKEY_free(static_cast<EVP_PKEY *>(p)); }

JwtKey::JwtKey(JwtAlg alg, std::string secret, void *pkey) : alg_(alg), secret_(std::move(secret)), pkey_(pkey) {}

JwtKey::~JwtKey() = default;

std::shared_ptr<const JwtKey> JwtKey::load(JwtAlg alg, std::string content, std::string *error) {
    if (alg == JwtAlg::HS256) {
        if (content.size() < 32) {
            fail(error, "an HS256 secret must be at least 32 bytes (RFC 7518 3.2), this one has " +
                            std::to_string(content.size()));
            return nullptr;
        }
        return std::shared_ptr<const JwtKey>(new JwtKey(alg, std::move(content), nullptr));
    }
    BIO *bio = BIO_new_mem_buf(content.data(), static_cast<int>(content.size()));
    EVP_PKEY *pkey = bio ? PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr) : nullptr;
    BIO_free(bio);
    if (!pkey) {
        fail(error, "not a PEM public key (-----BEGIN PUBLIC KEY-----)");
        return nullptr;
    }
    std::shared_ptr<const JwtKey> key(new JwtKey(alg, {}, pkey));
    const int type = EVP_PKEY_get_base_id(pkey);
    if (alg == JwtAlg::RS256 && type != EVP_PKEY_RSA) {
        fail(error, "an RS256 key must be an RSA public key");
        return nullptr;
    }
    if (alg == JwtAlg::ES256) {
        char curve[64] = "";
        std::size_t len = 0;
        if (type != EVP_PKEY_EC ||
            EVP_PKEY_get_utf8_string_param(pkey, "group", curve, sizeof curve, &len) != 1 ||
            std::string_view(curve) != "prime256v1") {
            fail(error, "an ES256 key must be an EC public key on P-256 (prime256v1)");
            return nullptr;
        }
    }
    return key;
}

bool JwtKey::verify(std::string_view input, std::string_view sig) const {
    if (alg_ == JwtAlg::HS256) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        if (!HMAC(EVP_sha256(), secret_.data(), static_cast<int>(secret_.size()),
                  reinterpret_cast<const unsigned char *>(input.data()), input.size(), mac, &len))
            return false;
        return sig.size() == len && CRYPTO_memcmp(mac, sig.data(), len) == 0;
    }
    std::string der;
    if (alg_ == JwtAlg::ES256) {
        if (!joseToDer(sig, der)) return false;
        sig = der;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) return false;
    const bool ok =
        EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, static_cast<EVP_PKEY *>(pkey_.get())) == 1 &&
        EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char *>(sig.data()), sig.size(),
                         reinterpret_cast<const unsigned char *>(input.data()), input.size()) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

bool operator==(const JwtSettings &a, const JwtSettings &b) {
    return a.alg == b.alg && a.keyFile == b.keyFile && a.tokenQuery == b.tokenQuery &&
           a.claimsToTags == b.claimsToTags && a.requiredClaims == b.requiredClaims && a.leeway == b.leeway;
}

bool base64UrlDecode(std::string_view in, std::string &out) {
    if (in.size() % 4 == 1) return false;
    std::string b64(in);
    for (char &c : b64) {
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return false; // padding, '+', '/' and anything else are not base64url
    }
    const std::size_t pad = (4 - b64.size() % 4) % 4;
    b64.append(pad, '=');
    out.assign(b64.size() / 4 * 3, '\0');
    const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char *>(out.data()),
                                  reinterpret_cast<const unsigned char *>(b64.data()), static_cast<int>(b64.size()));
    if (n < 0) return false;
    out.resize(static_cast<std::size_t>(n) - pad);
    return true;
}

std::string_view jwtFromRequest(std::string_view queryValue, std::string_view authorization) {
    if (!queryValue.empty()) return queryValue;
    constexpr std::string_view kBearer = "bearer ";
    if (authorization.size() <= kBearer.size()) return {};
    for (std::size_t i = 0; i < kBearer.size(); ++i)
        if (static_cast<char>(std::tolower(static_cast<unsigned char>(authorization[i]))) != kBearer[i]) return {};
    std::string_view t = authorization.substr(kBearer.size());
    while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
    while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
    return t;
}

bool verifyJwt(const JwtSettings &settings, std::string_view token, std::int64_t nowS, TagList *tags,
               std::string *error) {
    if (token.empty()) return fail(error, "missing token");
    if (!settings.key) return fail(error, "no key loaded");
    const std::size_t dot1 = token.find('.');
    const std::size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
    if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos)
        return fail(error, "malformed token: not three dot-separated parts");
    std::string headerText, payloadText, signature;
    if (!base64UrlDecode(token.substr(0, dot1), headerText) ||
        !base64UrlDecode(token.substr(dot1 + 1, dot2 - dot1 - 1), payloadText) ||
        !base64UrlDecode(token.substr(dot2 + 1), signature))
        return fail(error, "malformed token: a part is not base64url");
    const json header = json::parse(headerText, nullptr, false);
    if (!header.is_object()) return fail(error, "malformed token: the header is not a JSON object");
    const auto alg = header.find("alg");
    if (alg == header.end() || !alg->is_string()) return fail(error, "malformed token: no alg");
    // The endpoint's algorithm only: never "none", and never another family with this key.
    if (alg->get<std::string>() != jwtAlgName(settings.key->alg()))
        return fail(error, "token alg '" + alg->get<std::string>() + "' is not accepted here (expected " +
                               jwtAlgName(settings.key->alg()) + ")");
    if (!settings.key->verify(token.substr(0, dot2), signature)) return fail(error, "bad token signature");

    const json claims = json::parse(payloadText, nullptr, false);
    if (!claims.is_object()) return fail(error, "malformed token: the payload is not a JSON object");
    const std::int64_t leeway = settings.leeway.count();
    if (auto exp = claims.find("exp"); exp != claims.end()) {
        if (!exp->is_number()) return fail(error, "malformed token: exp is not a number");
        if (nowS > exp->get<double>() + static_cast<double>(leeway)) return fail(error, "token expired");
    }
    if (auto nbf = claims.find("nbf"); nbf != claims.end()) {
        if (!nbf->is_number()) return fail(error, "malformed token: nbf is not a number");
        if (nowS + leeway < nbf->get<double>()) return fail(error, "token not valid yet (nbf)");
    }
    for (const std::string &c : settings.requiredClaims) {
        auto it = claims.find(c);
        if (it == claims.end() || it->is_null()) return fail(error, "token lacks the required claim '" + c + "'");
    }
    TagList out;
    for (const auto &[claim, tag] : settings.claimsToTags) {
        auto it = claims.find(claim);
        if (it == claims.end() || it->is_null()) continue;
        std::string value;
        if (!claimText(*it, value))
            return fail(error, "claim '" + claim + "' cannot be a tag (an object, or an array of other than strings and numbers)");
        out.emplace_back(tag, std::move(value));
    }
    if (tags) tags->insert(tags->end(), out.begin(), out.end());
    return true;
}

} // namespace wsgw::daemon
