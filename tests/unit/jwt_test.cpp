// JWT verification (wsgwd/jwt.h) with keys made here by OpenSSL: HS256, RS256, ES256, and the
// tokens an attacker would try (alg none, HS256 signed with the public key, tampering, expiry).
#include "jwt.h"

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include <ctime>
#include <memory>

using namespace wsgw;
using namespace wsgw::daemon;
using json = nlohmann::json;

namespace {

std::string b64url(std::string_view bytes) {
    std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char *>(out.data()),
                                  reinterpret_cast<const unsigned char *>(bytes.data()), static_cast<int>(bytes.size()));
    out.resize(static_cast<std::size_t>(n));
    while (!out.empty() && out.back() == '=') out.pop_back();
    for (char &c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
    return out;
}

std::string hmac256(std::string_view key, std::string_view data) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char *>(data.data()),
         data.size(), mac, &len);
    return std::string(reinterpret_cast<char *>(mac), len);
}

using Pkey = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

Pkey rsaKey() { return Pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048)), EVP_PKEY_free); }
Pkey ecKey(const char *curve = "P-256") { return Pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", curve), EVP_PKEY_free); }

std::string publicPem(EVP_PKEY *k) {
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, k);
    char *data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    std::string pem(data, static_cast<std::size_t>(n));
    BIO_free(bio);
    return pem;
}

// A signature as OpenSSL makes it (DER for EC).
std::string sign(EVP_PKEY *k, std::string_view data) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    std::size_t len = 0;
    EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, k);
    EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char *>(data.data()), data.size());
    std::string sig(len, '\0');
    EVP_DigestSign(ctx, reinterpret_cast<unsigned char *>(sig.data()), &len,
                   reinterpret_cast<const unsigned char *>(data.data()), data.size());
    sig.resize(len);
    EVP_MD_CTX_free(ctx);
    return sig;
}

// DER ECDSA signature -> JOSE r || s (32 bytes each).
std::string derToJose(const std::string &der) {
    const auto *p = reinterpret_cast<const unsigned char *>(der.data());
    ECDSA_SIG *s = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size()));
    std::string out(64, '\0');
    BN_bn2binpad(ECDSA_SIG_get0_r(s), reinterpret_cast<unsigned char *>(out.data()), 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(s), reinterpret_cast<unsigned char *>(out.data()) + 32, 32);
    ECDSA_SIG_free(s);
    return out;
}

std::string signingInput(const json &header, const json &claims) {
    return b64url(header.dump()) + "." + b64url(claims.dump());
}

std::string hs256(const std::string &secret, const json &claims, const json &header = {{"alg", "HS256"}, {"typ", "JWT"}}) {
    const std::string input = signingInput(header, claims);
    return input + "." + b64url(hmac256(secret, input));
}

const std::string kSecret = "0123456789abcdef0123456789abcdef-secret";
const std::int64_t kNow = 1'800'000'000;

JwtSettings settings(JwtAlg alg, const std::string &keyContent) {
    JwtSettings s;
    s.alg = alg;
    std::string why;
    s.key = JwtKey::load(alg, keyContent, &why);
    REQUIRE_MESSAGE(s.key, why);
    s.claimsToTags = {{"sub", "user"}, {"room", "room"}, {"groups", "groups"}, {"level", "level"}};
    return s;
}

} // namespace

TEST_CASE("HS256: a valid token gives its claims as tags") {
    JwtSettings s = settings(JwtAlg::HS256, kSecret);
    s.requiredClaims = {"sub"};
    json claims{{"sub", "alice"}, {"room", "r1"}, {"groups", {"a", "b", 3}}, {"level", 7}, {"exp", kNow + 60}};
    TagList tags;
    std::string why;
    REQUIRE_MESSAGE(verifyJwt(s, hs256(kSecret, claims), kNow, &tags, &why), why);
    CHECK(tags == TagList{{"user", "alice"}, {"room", "r1"}, {"groups", "a,b,3"}, {"level", "7"}});
}

TEST_CASE("HS256: what is refused, and why") {
    JwtSettings s = settings(JwtAlg::HS256, kSecret);
    s.leeway = std::chrono::seconds(30);
    std::string why;
    auto refused = [&](const std::string &token, const std::string &reason) {
        why.clear();
        CHECK_FALSE(verifyJwt(s, token, kNow, nullptr, &why));
        CHECK_MESSAGE(why.find(reason) != std::string::npos, why);
    };
    refused("", "missing token");
    refused("abc.def", "malformed");
    refused("a.b.c.d", "malformed");
    refused("!!.e30.sig", "base64url");
    refused(b64url("not json") + "." + b64url("{}") + ".c2ln", "header");
    // expired beyond the leeway; within it still fine
    refused(hs256(kSecret, {{"sub", "a"}, {"exp", kNow - 31}}), "expired");
    CHECK(verifyJwt(s, hs256(kSecret, {{"sub", "a"}, {"exp", kNow - 29}}), kNow, nullptr, &why));
    refused(hs256(kSecret, {{"sub", "a"}, {"nbf", kNow + 31}}), "not valid yet");
    CHECK(verifyJwt(s, hs256(kSecret, {{"sub", "a"}, {"nbf", kNow + 29}}), kNow, nullptr, &why));
    refused(hs256(kSecret, {{"exp", "tomorrow"}}), "exp is not a number");
    // another secret; a tampered payload
    refused(hs256("another secret, also long enough!!", {{"sub", "a"}}), "bad token signature");
    std::string good = hs256(kSecret, {{"sub", "alice"}});
    std::string tampered = good.substr(0, good.find('.')) + "." + b64url(json{{"sub", "admin"}}.dump()) +
                           good.substr(good.rfind('.'));
    refused(tampered, "bad token signature");
    // alg none, with or without a signature
    json none{{"alg", "none"}};
    refused(signingInput(none, {{"sub", "a"}}) + ".", "'none' is not accepted");
    refused(hs256(kSecret, {{"sub", "a"}}, none), "'none' is not accepted");
    refused(hs256(kSecret, {{"sub", "a"}}, json{{"typ", "JWT"}}), "no alg");
    // required claims; claims that cannot be tags
    s.requiredClaims = {"sub", "room"};
    refused(hs256(kSecret, {{"sub", "a"}}), "required claim 'room'");
    s.requiredClaims.clear();
    refused(hs256(kSecret, {{"sub", {{"nested", 1}}}}), "claim 'sub' cannot be a tag");
    refused(hs256(kSecret, {{"groups", json::array({json::array({1})})}}), "claim 'groups' cannot be a tag");
}

TEST_CASE("RS256: valid; an HS256 token signed with the public key as secret is refused") {
    Pkey k = rsaKey();
    REQUIRE(k);
    const std::string pem = publicPem(k.get());
    JwtSettings s = settings(JwtAlg::RS256, pem);
    const json claims{{"sub", "bob"}, {"exp", kNow + 10}};
    const std::string input = signingInput({{"alg", "RS256"}}, claims);
    TagList tags;
    std::string why;
    REQUIRE_MESSAGE(verifyJwt(s, input + "." + b64url(sign(k.get(), input)), kNow, &tags, &why), why);
    CHECK(tags == TagList{{"user", "bob"}});
    // The classic confusion: alg HS256 with the (public) PEM text as the HMAC key.
    CHECK_FALSE(verifyJwt(s, hs256(pem, claims), kNow, nullptr, &why));
    CHECK(why.find("'HS256' is not accepted") != std::string::npos);
    // Another key's signature
    Pkey other = rsaKey();
    CHECK_FALSE(verifyJwt(s, input + "." + b64url(sign(other.get(), input)), kNow, nullptr, &why));
    CHECK(why == "bad token signature");
}

TEST_CASE("ES256: the JOSE r||s signature verifies; DER or another curve do not") {
    Pkey k = ecKey();
    REQUIRE(k);
    JwtSettings s = settings(JwtAlg::ES256, publicPem(k.get()));
    const std::string input = signingInput({{"alg", "ES256"}}, {{"sub", "carol"}, {"room", "x"}});
    const std::string der = sign(k.get(), input);
    TagList tags;
    std::string why;
    REQUIRE_MESSAGE(verifyJwt(s, input + "." + b64url(derToJose(der)), kNow, &tags, &why), why);
    CHECK(tags == TagList{{"user", "carol"}, {"room", "x"}});
    CHECK_FALSE(verifyJwt(s, input + "." + b64url(der), kNow, nullptr, &why)); // DER is not JOSE
    std::string jose = derToJose(der);
    jose[10] ^= 1;
    CHECK_FALSE(verifyJwt(s, input + "." + b64url(jose), kNow, nullptr, &why));
    CHECK(why == "bad token signature");

    Pkey p384 = ecKey("P-384");
    CHECK_FALSE(JwtKey::load(JwtAlg::ES256, publicPem(p384.get()), &why));
    CHECK(why.find("P-256") != std::string::npos);
}

TEST_CASE("keys that cannot work are refused when loaded") {
    std::string why;
    CHECK_FALSE(JwtKey::load(JwtAlg::HS256, "short", &why));
    CHECK(why.find("32 bytes") != std::string::npos);
    CHECK_FALSE(JwtKey::load(JwtAlg::RS256, "not a pem", &why));
    CHECK(why.find("PEM public key") != std::string::npos);
    Pkey ec = ecKey();
    CHECK_FALSE(JwtKey::load(JwtAlg::RS256, publicPem(ec.get()), &why));
    CHECK(why.find("RSA") != std::string::npos);
    Pkey rsa = rsaKey();
    CHECK_FALSE(JwtKey::load(JwtAlg::ES256, publicPem(rsa.get()), &why));
}

TEST_CASE("the token comes from the query parameter, else Authorization: Bearer") {
    CHECK(jwtFromRequest("q.t.s", "Bearer h.t.s") == "q.t.s");
    CHECK(jwtFromRequest("", "Bearer h.t.s") == "h.t.s");
    CHECK(jwtFromRequest("", "bearer  h.t.s ") == "h.t.s");
    CHECK(jwtFromRequest("", "Basic dXNlcjpwdw==").empty());
    CHECK(jwtFromRequest("", "").empty());
    std::string out;
    CHECK(base64UrlDecode("aGk", out));
    CHECK(out == "hi");
    CHECK_FALSE(base64UrlDecode("aGk=", out)); // padding is not base64url as JWTs use it
    CHECK_FALSE(base64UrlDecode("a+/b", out));
}
