// wsgw::base64Encode (the library's own, so that libwsgw needs no OpenSSL) against OpenSSL's
// EVP_EncodeBlock: every length from 0 to 1,100 bytes (every padding case many times over),
// every byte value (the high half catches a sign-extension slip), and a few large inputs.
// Only this test links libcrypto.

#include <wsgw/event.h>

#include <doctest/doctest.h>

#include <openssl/evp.h>

#include <cstdint>
#include <random>
#include <string>

using namespace wsgw;

namespace {

std::string evpEncode(const std::string &bytes) {
    // 4 characters per 3 bytes, padded, no newlines, and a terminating NUL.
    std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char *>(out.data()),
                            reinterpret_cast<const unsigned char *>(bytes.data()), static_cast<int>(bytes.size()));
    REQUIRE(n >= 0);
    out.resize(static_cast<std::size_t>(n));
    return out;
}

// EVP_DecodeBlock answers whole 3-byte groups: the padding's zero bytes are cut off here.
std::string evpDecode(const std::string &text) {
    std::string out(text.size() / 4 * 3 + 1, '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char *>(out.data()),
                            reinterpret_cast<const unsigned char *>(text.data()), static_cast<int>(text.size()));
    REQUIRE(n >= 0);
    std::size_t size = static_cast<std::size_t>(n);
    if (!text.empty() && text[text.size() - 1] == '=') --size;
    if (text.size() >= 2 && text[text.size() - 2] == '=') --size;
    out.resize(size);
    return out;
}

std::string randomBytes(std::mt19937_64 &rng, std::size_t n) {
    std::string s(n, '\0');
    for (char &c : s) c = static_cast<char>(rng() & 0xff);
    return s;
}

} // namespace

TEST_CASE("base64Encode equals EVP_EncodeBlock on random bytes of every length up to 1,100") {
    std::mt19937_64 rng(20240611);
    for (std::size_t n = 0; n <= 1100; ++n) {
        std::string bytes = randomBytes(rng, n);
        std::string ours = base64Encode(bytes);
        INFO("length " << n);
        REQUIRE(ours == evpEncode(bytes));
        REQUIRE(evpDecode(ours) == bytes);
    }
}

TEST_CASE("base64Encode equals EVP_EncodeBlock for every byte value in every position") {
    // 256 values at offsets 0, 1 and 2 of a 3-byte group.
    for (std::size_t shift = 0; shift < 3; ++shift) {
        std::string bytes(shift, 'x');
        for (int v = 0; v < 256; ++v) bytes += static_cast<char>(v);
        INFO("shift " << shift);
        CHECK(base64Encode(bytes) == evpEncode(bytes));
    }
    for (int v = 0; v < 256; ++v) {
        std::string one(1, static_cast<char>(v));
        INFO("byte " << v);
        CHECK(base64Encode(one) == evpEncode(one));
    }
}

TEST_CASE("base64Encode equals EVP_EncodeBlock on large inputs") {
    std::mt19937_64 rng(7);
    for (std::size_t n : {std::size_t(64 * 1024), std::size_t(1 << 20) + 1, std::size_t(1 << 20) + 2}) {
        std::string bytes = randomBytes(rng, n);
        INFO("length " << n);
        CHECK(base64Encode(bytes) == evpEncode(bytes));
    }
}
