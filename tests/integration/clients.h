#pragma once

// Our own WebSocket client (tests/support) connected to a Daemon under test. For doctest suites:
// a failed handshake stops the test case with the server's answer.

#include "harness.h"
#include "ws_client.h"

#include <doctest/doctest.h>

#include <memory>
#include <string>

namespace wsgw::itest {

/// A client connected to `d` on `path` (the test endpoints of testConfig()).
inline std::unique_ptr<wsgw::test::WsClient> connect(Daemon &d, const std::string &path = "/connect",
                                                     wsgw::test::ConnectOptions opts = {}) {
    auto ws = std::make_unique<wsgw::test::WsClient>();
    auto hs = ws->connect("127.0.0.1", d.wsPort, path, opts);
    REQUIRE_MESSAGE(hs.ok(), hs.error);
    return ws;
}

} // namespace wsgw::itest
