// JWT connects against the real wsgwd: an endpoint with jwt: admits a client whose token (query
// parameter or Authorization: Bearer) verifies, with tags from its claims, and answers 401 to
// the rest. The verification rules in detail: tests/unit/jwt_test.cpp.
#include "clients.h"
#include "harness.h"

#include <doctest/doctest.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <ctime>

using namespace wsgw::itest;
using wsgw::test::ConnectOptions;
using wsgw::test::WsClient;
using json = nlohmann::json;

namespace {

const std::string kSecret = "an-hs256-secret-of-at-least-32-bytes!";

std::string b64url(std::string_view bytes) {
    std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char *>(out.data()),
                                  reinterpret_cast<const unsigned char *>(bytes.data()), static_cast<int>(bytes.size()));
    out.resize(static_cast<std::size_t>(n));
    while (!out.empty() && out.back() == '=') out.pop_back();
    for (char &c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
    return out;
}

std::string token(const json &claims, const std::string &secret = kSecret, const std::string &alg = "HS256") {
    const std::string input = b64url(json{{"alg", alg}, {"typ", "JWT"}}.dump()) + "." + b64url(claims.dump());
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char *>(input.data()), input.size(), mac, &len);
    return input + "." + b64url(std::string_view(reinterpret_cast<char *>(mac), len));
}

std::int64_t now() { return static_cast<std::int64_t>(std::time(nullptr)); }

struct JwtGateway {
    TempDir keys;
    std::unique_ptr<Daemon> d;
    JwtGateway() {
        writeFile(keys.file("jwt.key"), kSecret + "\n");
        const std::uint16_t ws = freePort();
        std::uint16_t control = freePort();
        while (control == ws) control = freePort();
        const std::string config = "listen_addr: 127.0.0.1:" + std::to_string(ws) + "\n" +
                                   "control_addr: 127.0.0.1:" + std::to_string(control) + "\n" +
                                   "threads: 2\n"
                                   "endpoints:\n"
                                   "  - path: /secure\n"
                                   "    set_tags: {group: default, user: nobody}\n"
                                   "    stream_include_tags: [group, user, room]\n"
                                   "    jwt:\n"
                                   "      hs256_secret_file: " + keys.file("jwt.key") + "\n"
                                   "      claims_to_tags: {sub: user, room: room}\n"
                                   "      required_claims: [sub]\n"
                                   "      leeway_s: 5\n"
                                   "  - path: /open\n";
        d = std::make_unique<Daemon>(config, std::vector<std::string>{}, control);
        d->wsPort = ws;
        d->controlPort = control;
    }
    wsgw::test::HandshakeResult connect(WsClient &ws, const std::string &target, ConnectOptions o = {}) {
        return ws.connect("127.0.0.1", d->wsPort, target, o);
    }
};

} // namespace

TEST_CASE("a valid token in the query admits the client with its claims as tags") {
    JwtGateway g;
    WsClient ws;
    auto hs = g.connect(ws, "/secure?x=1&token=" + token({{"sub", "alice"}, {"room", "lobby"}, {"exp", now() + 60}}));
    REQUIRE_MESSAGE(hs.ok(), hs.error);
    auto open = g.d->waitEvent([](const json &e) { return e["action"] == "open"; });
    REQUIRE(open);
    // The claim's user= replaces set_tags' user=nobody; group stays.
    CHECK((*open)["tags"] == "group=default&room=lobby&user=alice"); // sorted by key
    auto status = httpGet(g.d->controlPort, "/status?user=alice");
    CHECK(status.body.find("room=lobby") != std::string::npos);
}

TEST_CASE("Authorization: Bearer works too; an endpoint without jwt: needs no token") {
    JwtGateway g;
    WsClient ws;
    ConnectOptions o;
    o.headers.push_back({"Authorization", "Bearer " + token({{"sub", "bob"}})});
    auto hs = g.connect(ws, "/secure", o);
    REQUIRE_MESSAGE(hs.ok(), hs.error);
    CHECK(httpGet(g.d->controlPort, "/status?user=bob").body.find("id=") != std::string::npos);
    WsClient plain;
    CHECK(g.connect(plain, "/open").ok());
}

TEST_CASE("missing, expired, forged, alg none and claim-less tokens get 401") {
    JwtGateway g;
    struct Case {
        std::string target;
        std::string reason;
    } cases[] = {
        {"/secure", "missing token"},
        {"/secure?token=" + token({{"sub", "a"}, {"exp", now() - 60}}), "token expired"},
        {"/secure?token=" + token({{"sub", "a"}, {"nbf", now() + 600}}), "not valid yet"},
        {"/secure?token=" + token({{"sub", "a"}}, "another secret that is long enough!!"), "bad token signature"},
        {"/secure?token=" + b64url(R"({"alg":"none"})") + "." + b64url(R"({"sub":"a"})") + ".", "'none'"},
        {"/secure?token=" + token({{"room", "r"}}), "required claim 'sub'"},
        {"/secure?token=not.a.jwt!", "malformed"},
    };
    for (const Case &c : cases) {
        CAPTURE(c.target);
        WsClient ws;
        auto hs = g.connect(ws, c.target);
        CHECK(hs.status == 401);
        CHECK_MESSAGE(hs.body.find(c.reason) != std::string::npos, hs.body);
    }
    CHECK(metric(*g.d, "wsgw_upgrades_refused_total{reason=\"unauthorized\"}") == std::size(cases));
    CHECK(g.d->events().empty());
}

TEST_CASE("jwt: config mistakes name the line") {
    TempDir dir;
    writeFile(dir.file("short.key"), "too short\n");
    struct Case {
        std::string jwt;
        std::string expect;
    } cases[] = {
        {"    jwt: {token_query: t}\n", "endpoints[0].jwt: missing the key"},
        {"    jwt: {hs256_secret_file: " + dir.file("short.key") + "}\n", "at least 32 bytes"},
        {"    jwt: {hs256_secret_file: " + dir.file("none.key") + "}\n", "jwt.hs256_secret_file: cannot read"},
        {"    jwt: {hs256_secret_file: a, rs256_public_key_file: b}\n", "give one key file"},
        {"    jwt: {es256_public_key_file: " + dir.file("short.key") + "}\n", "not a PEM public key"},
    };
    for (const Case &c : cases) {
        CAPTURE(c.jwt);
        Daemon d("endpoints:\n  - path: /s\n" + c.jwt, {"--check-config"});
        CHECK(d.wait(10000ms) == 1); // --check-config: 1 invalid (wsgwd(8))
        CHECK_MESSAGE(d.err().find(c.expect) != std::string::npos, d.err());
    }
}
