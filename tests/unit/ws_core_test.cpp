// The daemon's WebSocket core without sockets: the upgrade decision, the outbound queue, UTF-8
// checked piece by piece, close frames to refuse, permessage-deflate offers.

#include "close_frame.h"
#include "deflate_offer.h"
#include "utf8.h"
#include "ws_handshake.h"

#include <doctest/doctest.h>

using namespace wsgw;
using namespace wsgw::daemon;

namespace {

UpgradeRequest good() {
    UpgradeRequest r;
    r.path = "/connect";
    r.connection = "keep-alive, Upgrade";
    r.key = "dGhlIHNhbXBsZSBub25jZQ==";
    r.version = "13";
    return r;
}

} // namespace

TEST_CASE("checkUpgrade: each bad request gets the status and message a client can act on") {
    WsEndpoint ep;
    ep.path = "/connect";
    struct Row {
        const char *what;
        UpgradeRequest req;
        const WsEndpoint *endpoint;
        bool draining, full, paused;
        unsigned status;
        Refusal reason;
        const char *message;
    };
    UpgradeRequest noGet = good(), noUpgrade = good(), badKey = good(), shortKey = good(), v8 = good(), noVersion = good();
    noGet.path = "";
    noUpgrade.connection = "keep-alive";
    badKey.key = "dGhlIHNhbXBsZSBub25jZQ=!";
    shortKey.key = "c2hvcnQ=";
    v8.version = "8";
    noVersion.version = "";
    const Row rows[] = {
        {"not a GET", noGet, &ep, false, false, false, 400, Refusal::BadRequest, "a WebSocket upgrade is a GET"},
        {"unknown path", good(), nullptr, false, false, false, 404, Refusal::NotFound, "no WebSocket endpoint here"},
        {"draining", good(), &ep, true, false, false, 503, Refusal::Draining, "shutting down"},
        {"no Connection: Upgrade", noUpgrade, &ep, false, false, false, 400, Refusal::BadRequest, "missing 'Connection: Upgrade'"},
        {"bad key", badKey, &ep, false, false, false, 400, Refusal::BadRequest,
         "missing or malformed Sec-WebSocket-Key (16 bytes, base64)"},
        {"short key", shortKey, &ep, false, false, false, 400, Refusal::BadRequest,
         "missing or malformed Sec-WebSocket-Key (16 bytes, base64)"},
        {"version 8", v8, &ep, false, false, false, 426, Refusal::Version,
         "unsupported Sec-WebSocket-Version: this server speaks 13 (RFC 6455)"},
        {"no version", noVersion, &ep, false, false, false, 426, Refusal::Version,
         "unsupported Sec-WebSocket-Version: this server speaks 13 (RFC 6455)"},
        {"at capacity", good(), &ep, false, true, false, 503, Refusal::Capacity, "too many connections; retry later"},
        {"event backlog full", good(), &ep, false, false, true, 503, Refusal::Backpressure,
         "event backlog full; retry later"},
    };
    for (const Row &row : rows) {
        CAPTURE(row.what);
        UpgradeVerdict v = checkUpgrade(row.req, row.endpoint, {row.draining, row.full, row.paused});
        CHECK(v.status == row.status);
        CHECK(v.reason == row.reason);
        CHECK(v.message == row.message);
    }
    CHECK(checkUpgrade(good(), &ep, {}).status == 0);
}

TEST_CASE("checkUpgrade: origins and subprotocols") {
    WsEndpoint ep;
    ep.path = "/connect";
    ep.allowedOrigins = {"https://app.example"};
    UpgradeRequest r = good();
    r.origin = "https://APP.example"; // case-insensitive
    CHECK(checkUpgrade(r, &ep, {}).status == 0);
    r.origin = "https://evil.example";
    UpgradeVerdict v = checkUpgrade(r, &ep, {});
    CHECK(v.status == 403);
    CHECK(v.reason == Refusal::Origin);
    r.origin = ""; // not a browser
    CHECK(checkUpgrade(r, &ep, {}).status == 0);

    r.protocol = " chat.v2 , chat.v1";
    v = checkUpgrade(r, &ep, {});
    CHECK(v.status == 0);
    CHECK(v.subprotocol == "chat.v2");
    r.protocol = " , chat";
    CHECK(checkUpgrade(r, &ep, {}).status == 400);
}

TEST_CASE("header helpers") {
    CHECK(trimOws(" \tx y\t ") == "x y");
    CHECK(hasToken("keep-alive,UPGRADE", "upgrade"));
    CHECK(hasToken("Upgrade", "upgrade"));
    CHECK_FALSE(hasToken("upgrades", "upgrade"));
    CHECK_FALSE(hasToken("", "upgrade"));
    CHECK(validKey("AAAAAAAAAAAAAAAAAAAAAA=="));
    CHECK_FALSE(validKey("AAAAAAAAAAAAAAAAAAAAAAA="));
    CHECK_FALSE(validKey("AAAAAAAAAAAAAAAAAAAAA-=="));
}

TEST_CASE("checkUtf8Prefix: a cut character is fine as far as it goes; what cannot become UTF-8 is not") {
    struct Row {
        std::string_view in;
        bool valid;
        std::size_t whole;
    };
    const Row rows[] = {
        {"", true, 0},
        {"hello", true, 5},
        {"caf\xC3\xA9", true, 5},
        {"caf\xC3", true, 3},                 // cut after the lead byte
        {"\xF4\x8F\xBF", true, 0},           // can still become U+10FFFF
        {"\xF4\x90", false, 0},               // would be above U+10FFFF (Autobahn 6.4.2)
        {"ab\xED\xA0", false, 2},             // a surrogate
        {"\xE0\x80", false, 0},               // overlong
        {"\xC0", false, 0},                   // never a lead byte
        {"0123456789\xCE\xBA\xE1", true, 12}, // past the 8-byte fast path
        {"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80", false, 11},
    };
    for (const Row &r : rows) {
        CAPTURE(r.in);
        Utf8Prefix p = checkUtf8Prefix(r.in);
        CHECK(p.valid == r.valid);
        CHECK(p.whole == r.whole);
    }
    CHECK(isValidUtf8("\xF0\x9F\x98\x80"));
    CHECK_FALSE(isValidUtf8("\xF0\x9F\x98")); // a whole message may not end inside a character
    // Fed piece by piece the way WsConnection does, the invalid byte is found in its piece.
    const std::string msg = "\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xF4\x90\x80\x80" "edited";
    std::string rx;
    std::size_t whole = 0, failedAt = 0;
    for (std::size_t i = 0; i < msg.size() && !failedAt; ++i) {
        rx += msg[i];
        Utf8Prefix p = checkUtf8Prefix(std::string_view(rx).substr(whole));
        if (!p.valid) failedAt = i;
        whole += p.whole;
    }
    CHECK(failedAt == 12); // the 0x90 after 0xF4
}

TEST_CASE("checkCloseFrame: 1 byte is a protocol error, a reason must be UTF-8, the rest is echoed") {
    CHECK_FALSE(checkCloseFrame(""));
    CHECK_FALSE(checkCloseFrame("\x03\xE8"));
    CHECK_FALSE(checkCloseFrame("\x03\xE8" "bye \xC3\xA9"));
    auto one = checkCloseFrame("\x03");
    REQUIRE(one);
    CHECK(one->code == 1002);
    auto bad = checkCloseFrame("\x03\xE8" "\xCE\xBA\xF4\x90\x80\x80");
    REQUIRE(bad);
    CHECK(bad->code == 1007);
}

TEST_CASE("firstDeflateOffer: where the first permessage-deflate offer ends and its server window") {
    auto o = firstDeflateOffer("permessage-deflate; client_max_window_bits");
    CHECK(o.found);
    CHECK(o.serverMaxWindowBits == 0);
    CHECK(o.end == std::string_view("permessage-deflate; client_max_window_bits").size());
    o = firstDeflateOffer("x-webkit-deflate-frame, Permessage-Deflate; server_max_window_bits=9, permessage-deflate");
    CHECK(o.found);
    CHECK(o.begin == 23);
    CHECK(o.serverMaxWindowBits == 9);
    CHECK(o.end == std::string_view("x-webkit-deflate-frame, Permessage-Deflate; server_max_window_bits=9").size());
    CHECK(firstDeflateOffer("permessage-deflate; server_max_window_bits=\"15\"").serverMaxWindowBits == 15);
    CHECK(firstDeflateOffer("permessage-deflate; server_max_window_bits").serverMaxWindowBits == -1);
    CHECK(firstDeflateOffer("permessage-deflate; server_max_window_bits=16").serverMaxWindowBits == -1);
    CHECK(firstDeflateOffer("permessage-deflate; server_max_window_bits=08").serverMaxWindowBits == -1);
    CHECK(firstDeflateOffer("permessage-deflate; server_max_window_bits=8").serverMaxWindowBits == 8);
    CHECK_FALSE(firstDeflateOffer("x-other; a=1").found);
    CHECK_FALSE(firstDeflateOffer("").found);
}
