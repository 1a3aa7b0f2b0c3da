// The connect authorizer's pure parts (wsgwd/authorizer.h): the question's body and how an
// answer is read. The exchange with a real backend: tests/integration/authorize_test.cpp.
#include "authorizer.h"

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

using namespace wsgw;
using namespace wsgw::daemon;
using json = nlohmann::json;
using Outcome = AuthorizeDecision::Outcome;

TEST_CASE("the question: every field, headers lower case, hop-by-hop and handshake fields left out") {
    AuthorizeQuestion q;
    q.connectionId = *ConnectionId::parse("0b6cb7d2-4b57-4e43-9d8e-6f1a2c3b4d5e");
    q.endpoint = "/connect";
    q.path = "/connect";
    q.query = "a=1";
    q.headers = {{"Host", "gw"},        {"Upgrade", "websocket"}, {"Connection", "Upgrade"},
                 {"Sec-WebSocket-Key", "k"}, {"X-App", "one"},  {"x-app", "two"},
                 {"Cookie", "c=1"},     {"Sec-WebSocket-Protocol", "chat"}};
    q.remoteAddr = "127.0.0.1:5555";
    AuthorizeSettings all;
    const json body = json::parse(authorizeBody(q, all));
    CHECK(body["connection_id"] == "0b6cb7d2-4b57-4e43-9d8e-6f1a2c3b4d5e");
    CHECK(body["endpoint"] == "/connect");
    CHECK(body["query"] == "a=1");
    CHECK(body["remote_addr"] == "127.0.0.1:5555");
    CHECK(body["headers"] == json{{"host", "gw"}, {"x-app", "one, two"}, {"cookie", "c=1"},
                                  {"sec-websocket-protocol", "chat"}});
    AuthorizeSettings some;
    some.forwardHeaders = {"cookie", "authorization"};
    CHECK(json::parse(authorizeBody(q, some))["headers"] == json{{"cookie", "c=1"}});
    // Bytes that are not UTF-8 do not break the JSON.
    q.headers = {{"X-Bin", std::string("\xff\xfe", 2)}};
    CHECK(json::parse(authorizeBody(q, all))["headers"].contains("x-bin"));
}

TEST_CASE("reading the answer") {
    auto decide = [](int status, std::string body, bool failOpen = false) {
        AuthorizeAnswer a;
        a.status = status;
        a.body = std::move(body);
        return decideAuthorize(a, failOpen);
    };
    AuthorizeDecision d = decide(200, R"({"tags":{"user":"u1","n":3,"b":true},"id":"0b6cb7d2-4b57-4e43-9d8e-6f1a2c3b4d5e"})");
    CHECK(d.outcome == Outcome::Accepted);
    CHECK(d.tags == TagList{{"b", "true"}, {"n", "3"}, {"user", "u1"}});
    REQUIRE(d.id);
    CHECK(*d.id == *ConnectionId::parse("0b6cb7d2-4b57-4e43-9d8e-6f1a2c3b4d5e"));
    CHECK(decide(204, "{}").outcome == Outcome::Accepted);
    CHECK(decide(200, R"({"tags":null})").tags.empty());

    d = decide(403, "go away");
    CHECK(d.outcome == Outcome::Refused);
    CHECK(d.status == 403);
    CHECK(d.message == "go away");
    CHECK(decide(401, "").message == "refused by the authorizer");
    CHECK(decide(404, std::string(5000, 'x')).message.size() == 1024);

    // A pair, not a structured binding: CAPTURE's lambda cannot capture a binding before clang 16.
    for (const auto &answer : std::vector<std::pair<int, std::string>>{
             {500, "{}"}, {302, ""}, {200, "not json"}, {200, "[1]"}, {200, R"({"tags":[1]})"},
             {200, R"({"tags":{"a":{"b":1}}})"}, {200, R"({"tags":{"":"x"}})"}, {200, R"({"id":"nope"})"},
             {200, R"({"id":7})"}}) {
        const int status = answer.first;
        const std::string &body = answer.second;
        CAPTURE(status);
        CAPTURE(body);
        d = decide(status, body);
        CHECK(d.outcome == Outcome::Failed);
        CHECK(d.status == 503);
        CHECK(decide(status, body, true).outcome == Outcome::FailedOpen);
    }
    AuthorizeAnswer none;
    none.error = "Connection";
    d = decideAuthorize(none, false);
    CHECK(d.outcome == Outcome::Failed);
    CHECK(d.message.find("Connection") != std::string::npos);
    CHECK(std::string(outcomeName(Outcome::FailedOpen)) == "failed_open");
}
