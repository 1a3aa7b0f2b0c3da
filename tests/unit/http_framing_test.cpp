// RequestFramer (wsgwd/http_framing.h): where a request ends, and what it refuses, whether the
// bytes arrive at once or one at a time.
#include "http_framing.h"

#include <doctest/doctest.h>

#include <string>

using wsgw::daemon::FramingLimits;
using wsgw::daemon::RequestFramer;
using Status = RequestFramer::Status;

namespace {

FramingLimits small() {
    FramingLimits l;
    l.maxRequestLine = 64;
    l.maxHeaderBytes = 256;
    l.maxBodyBytes = 100;
    return l;
}

// Scans `input` whole, and again a byte at a time; both must agree. Returns the framer that saw
// it whole.
RequestFramer scanBoth(const std::string &input, FramingLimits limits = small()) {
    RequestFramer whole(limits);
    Status a = whole.scan(input);
    RequestFramer bytewise(limits);
    Status b = Status::NeedMore;
    for (std::size_t i = 1; i <= input.size() && b == Status::NeedMore; ++i) b = bytewise.scan(std::string_view(input).substr(0, i));
    CHECK(a == b);
    if (a == Status::Complete) CHECK(whole.length() == bytewise.length());
    if (a == Status::Invalid) {
        CHECK(whole.errorStatus() == bytewise.errorStatus());
        CHECK(whole.error() == bytewise.error());
    }
    return whole;
}

} // namespace

TEST_CASE("complete requests: no body, Content-Length, chunked; the bytes after belong to the next") {
    struct Row {
        const char *what;
        std::string request;
    };
    const Row rows[] = {
        {"GET", "GET /status?group=a HTTP/1.1\r\nHost: x\r\n\r\n"},
        {"HTTP/1.0", "GET / HTTP/1.0\r\n\r\n"},
        {"POST with a length", "POST /send?id=1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"},
        {"a zero length", "POST /send HTTP/1.1\r\nContent-Length: 0\r\n\r\n"},
        {"the same length twice", "POST /send HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nhi"},
        {"chunked", "POST /send HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"},
        {"chunked, upper-case hex and spaces", "POST /s HTTP/1.1\r\ntransfer-encoding:  Chunked \r\n\r\nA \r\n0123456789\r\n0\r\n\r\n"},
        {"a GET with a body (framed by its length all the same)", "GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"},
        {"Content-Encoding identity", "POST / HTTP/1.1\r\nContent-Encoding: identity\r\nContent-Length: 1\r\n\r\nx"},
    };
    for (const Row &row : rows) {
        CAPTURE(row.what);
        for (const std::string next : {"", "GET /next HTTP/1.1\r\n\r\n", "GE"}) {
            RequestFramer f = scanBoth(row.request + next);
            REQUIRE(f.errorStatus() == 0);
            CHECK(f.scan(row.request + next) == Status::Complete);
            CHECK(f.begin() == 0);
            CHECK(f.length() == row.request.size());
        }
    }
}

TEST_CASE("the request line: method and path (without the query), and empty lines before it") {
    RequestFramer f = scanBoth("\r\n\r\nPOST /send?id=a,b#frag HTTP/1.1\r\nContent-Length: 1\r\n\r\nx");
    REQUIRE(f.scan("\r\n\r\nPOST /send?id=a,b#frag HTTP/1.1\r\nContent-Length: 1\r\n\r\nx") == Status::Complete);
    CHECK(f.head().method == "POST");
    CHECK(f.head().path == "/send");
    CHECK(f.begin() == 4);
    CHECK(f.headComplete());

    RequestFramer g;
    CHECK(g.scan("\r\n") == Status::NeedMore);
    CHECK_FALSE(g.started());
    CHECK(g.scan("\r\nGE") == Status::NeedMore);
    CHECK(g.started());
    CHECK_FALSE(g.headComplete());
}

TEST_CASE("Expect: 100-continue is reported once the head is in, only when a body is to come") {
    RequestFramer f;
    std::string head = "POST /send HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n";
    CHECK(f.scan(head) == Status::NeedMore);
    CHECK(f.headComplete());
    CHECK(f.head().expectContinue);
    CHECK(f.scan(head + "abc") == Status::Complete);

    RequestFramer g;
    CHECK(g.scan("POST /send HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n") == Status::Complete);
    CHECK_FALSE(g.head().expectContinue);
}

TEST_CASE("refusals: each with its status and a message that says why") {
    struct Row {
        const char *what;
        std::string request;
        int status;
        const char *message; // a part of error()
    };
    const Row rows[] = {
        {"a bare LF", "GET / HTTP/1.1\nHost: x\r\n\r\n", 400, "CRLF"},
        {"a bare LF in a header", "GET / HTTP/1.1\r\nHost: x\n\r\n", 400, "CRLF"},
        {"two spaces", "GET  / HTTP/1.1\r\n\r\n", 400, "malformed request line"},
        {"no version", "GET /\r\n\r\n", 400, "malformed request line"},
        {"a bad method", "G(T / HTTP/1.1\r\n\r\n", 400, "malformed request line"},
        {"garbage", "\x16\x03\x01\x02 x y\r\n\r\n", 400, "malformed request line"},
        {"HTTP/2.0", "GET / HTTP/2.0\r\n\r\n", 505, "HTTP version 2.0"},
        {"no colon", "GET / HTTP/1.1\r\nHost x\r\n\r\n", 400, "malformed header line"},
        {"space before the colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, "malformed header line"},
        {"obsolete folding", "GET / HTTP/1.1\r\nX-A: b\r\n  c\r\n\r\n", 400, "folding"},
        {"a bad length", "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400, "Content-Length"},
        {"a negative length", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "Content-Length"},
        {"a list of lengths", "POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n", 400, "Content-Length"},
        {"two lengths", "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy", 400, "conflicting"},
        {"length and chunked", "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
         "both Content-Length and Transfer-Encoding"},
        {"gzip transfer coding", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "not supported"},
        {"a compressed body", "POST / HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 1\r\n\r\nx", 415,
         "Content-Encoding 'gzip'"},
        {"a body over the limit", "POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413, "the limit is 100 bytes"},
        {"a huge length", "POST / HTTP/1.1\r\nContent-Length: 99999999999999999\r\n\r\n", 413, "too large"},
        {"a long request line", "GET /" + std::string(70, 'a') + " HTTP/1.1\r\n\r\n", 414, "request line too long"},
        {"a long request line, unfinished", "GET /" + std::string(70, 'a'), 414, "request line too long"},
        {"too many headers", "GET / HTTP/1.1\r\n" + std::string(10, 'x') + ": " + std::string(250, 'y') + "\r\n\r\n", 431,
         "header fields too large"},
        {"too many headers, unfinished", "GET / HTTP/1.1\r\nX: " + std::string(300, 'y'), 431, "header fields too large"},
        {"a bad chunk size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "bad chunk size"},
        {"an empty chunk size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", 400, "bad chunk size"},
        {"chunk data too long", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n", 400,
         "not followed by CRLF"},
        {"chunks over the limit", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + std::string(64, 'x') +
                                      "\r\n40\r\n",
         413, "the limit is 100 bytes"},
        {"a huge chunk", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", 413, "too large"},
        {"tiny chunks with long extensions",
         [] {
             std::string r = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
             for (int i = 0; i < 100; ++i) r += "1;" + std::string(1000, 'e') + "\r\nx\r\n";
             return r;
         }(),
         413, "too large"},
        {"a long chunk size line", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;" + std::string(1100, 'e'), 400,
         "chunk size line too long"},
        {"trailer fields", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n", 400, "trailer"},
    };
    for (const Row &row : rows) {
        CAPTURE(row.what);
        RequestFramer f = scanBoth(row.request);
        CHECK(f.scan(row.request) == Status::Invalid);
        CHECK(f.errorStatus() == row.status);
        CHECK_MESSAGE(f.error().find(row.message) != std::string::npos, f.error());
    }
}

TEST_CASE("an unfinished request needs more, and reset() starts the next one") {
    FramingLimits limits; // the defaults
    RequestFramer f(limits);
    std::string r = "POST /send HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234";
    CHECK(f.scan(r) == Status::NeedMore);
    CHECK(f.headComplete());
    CHECK(f.scan(r + "56789") == Status::Complete);
    CHECK(f.length() == r.size() + 5);
    f.reset();
    CHECK_FALSE(f.started());
    CHECK(f.scan("GET /healthz HTTP/1.1\r\n\r\n") == Status::Complete);
    CHECK(f.head().path == "/healthz");
}
