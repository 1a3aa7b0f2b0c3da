#include "webhook_signature.h"

#include <wsgw/event.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <vector>

namespace wsgw::webhook {

std::optional<std::string> decodeSecret(std::string_view secret, std::string *error) {
    constexpr std::string_view kPrefix = "whsec_";
    if (secret.substr(0, kPrefix.size()) == kPrefix) secret.remove_prefix(kPrefix.size());
    auto fail = [&](const char *why) -> std::optional<std::string> {
        if (error) *error = why;
        return std::nullopt;
    };
    if (secret.empty() || secret.size() % 4 != 0)
        return fail("the secret must be whsec_ followed by base64 (a multiple of 4 characters)");
    std::vector<unsigned char> out(secret.size() / 4 * 3 + 1);
    // EVP_DecodeBlock rejects characters outside the alphabet and counts padding as zero bytes.
    const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char *>(secret.data()),
                                  static_cast<int>(secret.size()));
    if (n < 0) return fail("the secret is not valid base64 (expected whsec_ followed by base64)");
    std::size_t len = static_cast<std::size_t>(n);
    if (secret.back() == '=') --len;
    if (secret[secret.size() - 2] == '=') --len;
    if (len == 0) return fail("the secret decodes to no bytes");
    return std::string(reinterpret_cast<const char *>(out.data()), len);
}

std::string signature(std::string_view key, std::string_view id, std::int64_t timestamp, std::string_view body) {
    std::string content;
    const std::string ts = std::to_string(timestamp);
    content.reserve(id.size() + ts.size() + body.size() + 2);
    content.append(id).append(".").append(ts).append(".").append(body);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int macLen = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char *>(content.data()),
         content.size(), mac, &macLen);
    return "v1," + base64Encode(std::string_view(reinterpret_cast<const char *>(mac), macLen));
}

} // namespace wsgw::webhook
