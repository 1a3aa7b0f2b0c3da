// TLS: wss:// (tls:) and the control API over HTTPS (control_tls:), with a self-signed
// certificate that the test makes with the openssl command.
#include "harness.h"
#include "skip.h"

#include "ws_client.h"

#include <doctest/doctest.h>
#include <httplib.h>

#include <csignal>
#include <cstdlib>
#include <memory>
#include <stdexcept>

using namespace wsgw::itest;
using wsgw::test::CloseResult;
using wsgw::test::ConnectOptions;
using wsgw::test::HandshakeFailure;
using wsgw::test::WsClient;

namespace {

// Every test here needs certificates from the openssl command: without it the program is skipped
// (exit 77), or fails under CI=true (tests/support/skip.h).
const wsgw::test::Prerequisite opensslCommand{
    "the openssl command is not installed (Debian package openssl; scripts/bootstrap installs it)",
    [] { return !wsgw::test::findInPath("openssl").empty(); }};

// A self-signed certificate and its key, PEM, for localhost and 127.0.0.1, valid for a day.
struct Certificate {
    std::string cert;
    std::string key;
};

Certificate makeCertificate(const TempDir &dir, const std::string &name) {
    Certificate c{dir.file(name + ".crt"), dir.file(name + ".key")};
    const std::string command = "openssl req -x509 -newkey rsa:2048 -nodes -keyout '" + c.key + "' -out '" + c.cert +
                                "' -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1"
                                " >/dev/null 2>&1";
    if (std::system(command.c_str()) != 0) throw std::runtime_error("openssl req failed: " + command);
    return c;
}

// One certificate for the whole run: RSA key generation is slow.
const Certificate &testCertificate() {
    static TempDir dir;
    static const Certificate c = makeCertificate(dir, "localhost");
    return c;
}

std::string tlsFiles(const std::string &key, const Certificate &c) {
    return key + ": {cert: '" + c.cert + "', key: '" + c.key + "'}\n";
}

std::unique_ptr<httplib::SSLClient> httpsClient(std::uint16_t port) {
    auto client = std::make_unique<httplib::SSLClient>("127.0.0.1", port);
    client->set_ca_cert_path(testCertificate().cert.c_str());
    client->enable_server_certificate_verification(true);
    client->set_connection_timeout(2, 0);
    client->set_read_timeout(10, 0);
    return client;
}

// wsgwd with the test config plus `extra`, healthy over HTTPS (the harness checks plain HTTP).
std::unique_ptr<Daemon> startHttps(const std::string &extra) {
    std::uint16_t ws = freePort(), control = freePort();
    while (control == ws) control = freePort();
    auto d = std::make_unique<Daemon>(testConfig(ws, control, extra));
    d->wsPort = ws;
    d->controlPort = control;
    bool healthy = eventually(
        [&] {
            if (!d->running()) return false;
            auto r = httpsClient(control)->Get("/healthz");
            return r && r->status == 200;
        },
        10000ms);
    if (!healthy) throw std::runtime_error("wsgwd did not become healthy over HTTPS; stderr:\n" + d->err());
    return d;
}

ConnectOptions wss(bool deflate = false) {
    ConnectOptions o;
    o.tls = true;
    o.tlsVerify = true;
    o.tlsCaFile = testCertificate().cert;
    o.deflate.enabled = deflate;
    return o;
}

// The id of the newest connection that opened, once its event is out.
std::string newestOpen(Daemon &d, std::size_t opensBefore) {
    std::string id;
    eventually([&] {
        std::size_t opens = 0;
        for (auto &e : d.events())
            if (e["action"] == "open") {
                ++opens;
                id = e["connection"];
            }
        return opens > opensBefore;
    });
    return id;
}

std::string post(std::uint16_t port, const std::string &target, const std::string &body,
                 const std::string &type = "text/plain") {
    auto r = httpsClient(port)->Post(target.c_str(), body, type.c_str());
    REQUIRE_MESSAGE(r, httplib::to_string(r.error()));
    REQUIRE_MESSAGE(r->status == 200, r->body);
    return r->body;
}

} // namespace

TEST_CASE("wss:// and HTTPS: messages both ways, /send, events, compression off and on, SIGTERM") {
    const Certificate &cert = testCertificate();
    auto d = startHttps(tlsFiles("tls", cert) + tlsFiles("control_tls", cert) + "drain_s: 1\n");
    const std::string log = d->err();
    CHECK(log.find("Listening on 127.0.0.1:" + std::to_string(d->wsPort) + " (WebSocket over TLS") !=
          std::string::npos);
    CHECK(log.find("(HTTPS)") != std::string::npos);
    CHECK(log.find("tls: certificate " + cert.cert + " (CN=localhost), valid until") != std::string::npos);

    // Compression off: the client offers none.
    WsClient plain;
    auto hs = plain.connect("127.0.0.1", d->wsPort, "/connect", wss());
    REQUIRE_MESSAGE(hs.ok(), hs.error);
    CHECK(hs.status == 101);
    CHECK_FALSE(plain.tlsVersion().empty());
    const std::string id = newestOpen(*d, 0);
    REQUIRE(id.size() == 36);

    REQUIRE(plain.sendText("h\xC3\xA9llo over TLS"));
    auto text = d->waitEvent([](auto &e) { return e["action"] == "message" && e["type"] == "text"; });
    REQUIRE(text);
    CHECK((*text)["message"] == "h\xC3\xA9llo over TLS");
    CHECK((*text)["connection"] == id);
    REQUIRE(plain.sendBinary(std::string("\x00\xff\x10\x80", 4)));
    auto binary = d->waitEvent([](auto &e) { return e["action"] == "message" && e["type"] == "binary"; });
    REQUIRE(binary);
    CHECK((*binary)["message"] == "AP8QgA==");

    CHECK(post(d->controlPort, "/send?id=" + id, "to you") == "1");
    auto got = plain.receive(3000ms);
    REQUIRE_MESSAGE(got.isText(), got.error);
    CHECK(got.data == "to you");
    CHECK_FALSE(got.compressed);
    CHECK(post(d->controlPort, "/send?id=" + id, std::string("\x01\x00\xfe", 3), "application/octet-stream") == "1");
    got = plain.receive(3000ms);
    REQUIRE_MESSAGE(got.isBinary(), got.error);
    CHECK(got.data == std::string("\x01\x00\xfe", 3));

    // Many frames at once (coalesced into large TLS writes) and one larger than a TLS record.
    for (int i = 0; i < 50; ++i) CHECK(post(d->controlPort, "/send?id=" + id, "burst " + std::to_string(i)) == "1");
    std::string big(60 * 1024, 'x');
    for (std::size_t i = 0; i < big.size(); i += 7) big[i] = static_cast<char>('a' + i % 26);
    CHECK(post(d->controlPort, "/send?id=" + id, big) == "1");
    for (int i = 0; i < 50; ++i) {
        got = plain.receive(3000ms);
        REQUIRE_MESSAGE(got.isText(), got.error);
        CHECK(got.data == "burst " + std::to_string(i));
    }
    got = plain.receive(3000ms);
    REQUIRE_MESSAGE(got.isText(), got.error);
    CHECK(got.data == big);

    // Compression on: /connect enables it and this client offers it.
    WsClient deflated;
    hs = deflated.connect("127.0.0.1", d->wsPort, "/connect", wss(true));
    REQUIRE_MESSAGE(hs.ok(), hs.error);
    REQUIRE(deflated.negotiatedDeflate());
    const std::string deflatedId = newestOpen(*d, 1);
    std::string json;
    while (json.size() < 20000) json += "{\"command\":\"compress me\",\"n\":" + std::to_string(json.size()) + "},";
    REQUIRE(deflated.sendText(json));
    auto compressedEvent = d->waitEvent([&](auto &e) { return e["action"] == "message" && e["message"] == json; });
    CHECK(compressedEvent);
    CHECK(post(d->controlPort, "/send?id=" + deflatedId, json) == "1");
    got = deflated.receive(3000ms);
    REQUIRE_MESSAGE(got.isText(), got.error);
    CHECK(got.compressed);
    CHECK(got.data == json);

    // Both get the broadcast; the close handshake and the close event work over TLS.
    CHECK(post(d->controlPort, "/send?group=default", "everyone") == "2");
    CHECK(plain.receive(3000ms).data == "everyone");
    CHECK(deflated.receive(3000ms).data == "everyone");
    REQUIRE(plain.sendClose(1000, "bye"));
    auto closed = plain.waitClosed(3000ms);
    CHECK(closed.kind == CloseResult::Kind::CloseFrame);
    CHECK(closed.code == 1000);
    CHECK(d->waitEvent([&](auto &e) { return e["action"] == "close" && e["connection"] == id; }));

    // SIGTERM: the TLS client is closed like the others (1012, drained), then exit 0.
    CHECK(d->stop(SIGTERM) == 0);
    closed = deflated.waitClosed(3000ms);
    CHECK(closed.code == 1012);
    CHECK(closed.reason == "service restart");
}

TEST_CASE("plain clients on TLS ports are refused; the daemon goes on serving") {
    const Certificate &cert = testCertificate();
    auto d = startHttps(tlsFiles("tls", cert) + tlsFiles("control_tls", cert));

    for (int i = 0; i < 3; ++i) {
        WsClient plain;
        auto hs = plain.connect("127.0.0.1", d->wsPort, "/connect");
        CHECK_FALSE(hs.ok());
        CHECK(hs.status != 101);
        CHECK(hs.failure == HandshakeFailure::Eof); // the TLS handshake fails on "GET ": no answer
        CHECK_FALSE(plain.isOpen());
    }
    httplib::Client http("127.0.0.1", d->controlPort);
    http.set_connection_timeout(2, 0);
    http.set_read_timeout(3, 0);
    auto r = http.Get("/healthz");
    CHECK((!r || r->status != 200));

    // A TLS client that does not trust the certificate gives up; one that does gets in.
    WsClient untrusting;
    ConnectOptions system = wss();
    system.tlsCaFile.clear(); // the system's CAs: they do not know our self-signed certificate
    auto hs = untrusting.connect("127.0.0.1", d->wsPort, "/connect", system);
    CHECK(hs.failure == HandshakeFailure::Tls);

    WsClient good;
    hs = good.connect("127.0.0.1", d->wsPort, "/raw", wss());
    REQUIRE_MESSAGE(hs.ok(), hs.error);
    CHECK(post(d->controlPort, "/send?id=" + newestOpen(*d, 0), "still here") == "1");
    CHECK(good.receive(3000ms).data == "still here");
    CHECK(d->running());
}

TEST_CASE("tls: and control_tls: are independent") {
    const Certificate &cert = testCertificate();
    SUBCASE("WebSocket over TLS, control API plain") {
        auto d = Daemon::start(tlsFiles("tls", cert));
        WsClient ws;
        auto hs = ws.connect("127.0.0.1", d->wsPort, "/raw", wss());
        REQUIRE_MESSAGE(hs.ok(), hs.error);
        REQUIRE(eventually([&] { return httpPost(d->controlPort, "/send?id=" + newestOpen(*d, 0), "x").body == "1"; }));
        CHECK(ws.receive(3000ms).data == "x");
    }
    SUBCASE("control API over HTTPS, WebSocket plain") {
        auto d = startHttps(tlsFiles("control_tls", cert));
        WsClient ws;
        auto hs = ws.connect("127.0.0.1", d->wsPort, "/raw");
        REQUIRE_MESSAGE(hs.ok(), hs.error);
        CHECK(post(d->controlPort, "/send?id=" + newestOpen(*d, 0), "y") == "1");
        CHECK(ws.receive(3000ms).data == "y");
        CHECK(d->err().find("(WebSocket, 2 shards)") != std::string::npos);
    }
}

TEST_CASE("certificate problems: unreadable files at config load (2), unusable ones at start (1)") {
    const Certificate &cert = testCertificate();
    TempDir dir;
    const std::string garbage = dir.file("garbage.pem");
    writeFile(garbage, "this is not a certificate\n");
    std::uint16_t ws = freePort(), control = freePort();

    SUBCASE("a file that cannot be read") {
        Daemon d(testConfig(ws, control, "tls: {cert: /nonexistent/tls.crt, key: '" + cert.key + "'}\n"));
        CHECK(d.wait(10000ms) == 2);
        CHECK(d.err().find("tls.cert: cannot read '/nonexistent/tls.crt'") != std::string::npos);
    }
    SUBCASE("a certificate that is not PEM") {
        Daemon d(testConfig(ws, control, "tls: {cert: '" + garbage + "', key: '" + cert.key + "'}\n"));
        CHECK(d.wait(10000ms) == 1);
        CHECK(d.err().find("tls.cert: cannot load '" + garbage + "' as a PEM certificate: no start line") !=
              std::string::npos);
    }
    SUBCASE("a key that is not PEM") {
        Daemon d(testConfig(ws, control, "tls: {cert: '" + cert.cert + "', key: '" + garbage + "'}\n"));
        CHECK(d.wait(10000ms) == 1);
        CHECK(d.err().find("tls.key: cannot load '" + garbage + "' as a PEM private key") != std::string::npos);
    }
    SUBCASE("the key of another certificate") {
        const Certificate other = makeCertificate(dir, "other");
        Daemon d(testConfig(ws, control, "tls: {cert: '" + cert.cert + "', key: '" + other.key + "'}\n"));
        CHECK(d.wait(10000ms) == 1);
        CHECK(d.err().find("tls.key: '" + other.key + "' is not the private key of the certificate '" + cert.cert +
                           "'") != std::string::npos);
    }
    SUBCASE("control_tls with a certificate that is not PEM") {
        Daemon d(testConfig(ws, control, "control_tls: {cert: '" + garbage + "', key: '" + cert.key + "'}\n"));
        CHECK(d.wait(10000ms) == 1);
        CHECK(d.err().find("control_tls.cert: cannot load '" + garbage + "' as a PEM certificate") !=
              std::string::npos);
    }
}
