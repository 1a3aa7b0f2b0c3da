// ControlServer (wsgwd/control_server.h) in process, on a free port, with small limits and
// handlers of the test's own: lanes, deadlines, the connection limit, the queue bound,
// pipelining, 100-continue, streams, and a prompt stop().
#include "control_server.h"
#include "metrics.h"

#include <doctest/doctest.h>
#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using namespace wsgw::daemon;
using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

namespace {

// A blocking TCP client that writes what it is told and parses what comes back.
class RawClient {
public:
    explicit RawClient(std::uint16_t port) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(port);
        if (::connect(fd_, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) {
            ::close(fd_);
            fd_ = -1;
        }
    }
    ~RawClient() {
        if (fd_ >= 0) ::close(fd_);
    }
    bool ok() const { return fd_ >= 0; }
    bool send(const std::string &bytes) {
        return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
    }

    struct Response {
        int status = 0; ///< 0: none (EOF or timeout)
        std::string head;
        std::string body;
        bool header(const std::string &line) const { return head.find("\r\n" + line + "\r\n") != std::string::npos; }
    };

    /// The next response (a 1xx counts), within `limit`.
    Response read(Millis limit = 3000ms) {
        Response r;
        auto until = Clock::now() + limit;
        std::size_t end;
        while ((end = buf_.find("\r\n\r\n")) == std::string::npos)
            if (!fill(until)) return r;
        r.head = buf_.substr(0, end + 2);
        buf_.erase(0, end + 4);
        r.status = std::atoi(r.head.c_str() + 9);
        std::size_t length = 0;
        if (auto cl = r.head.find("Content-Length: "); cl != std::string::npos) length = std::stoul(r.head.substr(cl + 16));
        while (buf_.size() < length)
            if (!fill(until)) return Response{};
        r.body = buf_.substr(0, length);
        buf_.erase(0, length);
        return r;
    }

    /// Reads until what has come after the last response's head holds `needle` `n` times.
    bool receivedWithin(const std::string &needle, std::size_t n, Millis limit) {
        auto until = Clock::now() + limit;
        for (;;) {
            std::size_t found = 0;
            for (std::size_t at = buf_.find(needle); at != std::string::npos; at = buf_.find(needle, at + needle.size()))
                ++found;
            if (found >= n) return true;
            if (!fill(until)) return false;
        }
    }

    /// Waits for the server to close (EOF or reset), reading and dropping what comes.
    bool closedWithin(Millis limit) {
        auto until = Clock::now() + limit;
        while (Clock::now() < until) {
            if (!fill(until)) return eof_;
        }
        return false;
    }

private:
    bool fill(Clock::time_point until) {
        auto left = std::chrono::duration_cast<Millis>(until - Clock::now()).count();
        if (left <= 0) return false;
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
        char b[4096];
        ssize_t n = ::recv(fd_, b, sizeof b, 0);
        if (n <= 0) {
            eof_ = true;
            return false;
        }
        buf_.append(b, static_cast<std::size_t>(n));
        return true;
    }

    int fd_ = -1;
    std::string buf_;
    bool eof_ = false;
};

// A gate the /block handler waits at, until opened or the server stops.
struct Gate {
    std::mutex mu;
    std::condition_variable cv;
    bool open = false;
    int waiting = 0;
    void release() {
        {
            std::lock_guard lock(mu);
            open = true;
        }
        cv.notify_all();
    }
    // Waits, as a handler waiting for the shards does: in slices, looking at stopping().
    void pass(ControlServer &server) {
        std::unique_lock lock(mu);
        ++waiting;
        while (!open && !server.stopping()) cv.wait_for(lock, 20ms);
        --waiting;
    }
    int waiters() {
        std::lock_guard lock(mu);
        return waiting;
    }
};

struct Fixture {
    explicit Fixture(ControlServerOptions o = options()) {
        std::signal(SIGPIPE, SIG_IGN);
        server = std::make_unique<ControlServer>(o, counters, [](const RequestHead &h) {
            if (h.path == "/healthz") return Lane::Inline;
            if (h.path == "/aux") return Lane::Aux;
            if (h.path == "/stream") return Lane::Inline;
            return Lane::Command;
        });
        HttpRouter &r = server->router();
        r.Get("/healthz", [](const httplib::Request &, httplib::Response &res) { res.set_content("ok", "text/plain"); });
        r.Get("/aux", [](const httplib::Request &, httplib::Response &res) { res.set_content("aux", "text/plain"); });
        r.Get("/block", [this](const httplib::Request &, httplib::Response &res) {
            gate.pass(*server);
            res.set_content(server->stopping() ? "stopped" : "passed", "text/plain");
        });
        // An event every 100 ms, numbered; opened on the loop thread (Inline).
        r.Get("/stream", [](const httplib::Request &, httplib::Response &res) {
            res.status = 200;
            auto n = std::make_shared<int>(0);
            HttpRouter::openStream({"text/event-stream", 100ms, [n] { return "data: " + std::to_string(++*n) + "\n\n"; }});
        });
        // 256 KiB every 20 ms, opened on a worker: a reader that does not read falls behind.
        r.Get("/big", [](const httplib::Request &, httplib::Response &res) {
            res.status = 200;
            HttpRouter::openStream({"application/octet-stream", 20ms, [] { return std::string(256 * 1024, 'x'); }});
        });
        r.Post("/echo", [](const httplib::Request &req, httplib::Response &res) {
            res.set_content(req.body + "|" + req.remote_addr, "text/plain");
        });
        std::string error;
        REQUIRE_MESSAGE(server->start(&error), error);
        port = server->port();
        REQUIRE(port != 0);
    }
    ~Fixture() {
        gate.release();
        server->stop();
    }

    static ControlServerOptions options() {
        ControlServerOptions o;
        o.host = "127.0.0.1";
        o.port = 0;
        o.limits.maxBodyBytes = 1000;
        o.requestTimeout = 600ms;
        o.keepAliveTimeout = 400ms;
        o.lingerTimeout = 300ms;
        o.maxConnections = 64;
        o.commandWorkers = 2;
        o.commandQueue = 2;
        o.maxStreams = 2;
        o.maxStreamBacklog = 64 * 1024;
        return o;
    }
    std::uint64_t refused(ControlRefusal r) { return counters.refused[static_cast<std::size_t>(r)].get(); }

    ControlCounters counters;
    Gate gate;
    std::unique_ptr<ControlServer> server;
    std::uint16_t port = 0;
};

const std::string kHealth = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
const std::string kBlock = "GET /block HTTP/1.1\r\nHost: x\r\n\r\n";

std::string echo(const std::string &body, const std::string &extra = "") {
    return "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra + "\r\n" +
           body;
}

} // namespace

TEST_CASE("requests on one connection, pipelined ones answered in order, with the peer's address") {
    Fixture f;
    RawClient c(f.port);
    REQUIRE(c.send(kHealth + echo("one") + "GET /aux HTTP/1.1\r\n\r\n" + echo("two")));
    auto a = c.read(), b = c.read(), x = c.read(), d = c.read();
    CHECK(a.status == 200);
    CHECK(a.body == "ok");
    CHECK(a.header("Keep-Alive: timeout=1, max=1000")); // keep-alive timeout 400 ms, shown as whole seconds
    CHECK(b.body == "one|127.0.0.1");
    CHECK(x.body == "aux");
    CHECK(d.body == "two|127.0.0.1");
    // Connection: close is honoured, after the answer.
    REQUIRE(c.send(echo("last", "Connection: close\r\n")));
    auto last = c.read();
    CHECK(last.body == "last|127.0.0.1");
    CHECK(last.header("Connection: close"));
    CHECK(c.closedWithin(1000ms));
}

TEST_CASE("the inline lane answers while every worker waits and the queue is full; the next command gets 503") {
    Fixture f;
    std::vector<std::unique_ptr<RawClient>> blocked;
    auto block = [&] {
        blocked.push_back(std::make_unique<RawClient>(f.port));
        REQUIRE(blocked.back()->send(kBlock));
    };
    // Both workers wait at the gate, then two more requests fill the queue.
    block();
    block();
    auto until = Clock::now() + 2000ms;
    while (f.gate.waiters() < 2 && Clock::now() < until) std::this_thread::sleep_for(5ms);
    REQUIRE(f.gate.waiters() == 2);
    block();
    block();
    std::this_thread::sleep_for(100ms);

    RawClient over(f.port);
    auto t0 = Clock::now();
    REQUIRE(over.send(kBlock));
    auto busy = over.read(1000ms);
    CHECK(busy.status == 503);
    CHECK(busy.header("Retry-After: 1"));
    CHECK(busy.body == "busy: too many control requests at once; retry shortly\n");
    CHECK(f.refused(ControlRefusal::Busy) == 1);
    // The connection stays usable: the whole request was read.
    REQUIRE(over.send(kHealth));
    CHECK(over.read(1000ms).status == 200);

    RawClient health(f.port);
    REQUIRE(health.send(kHealth));
    CHECK(health.read(1000ms).body == "ok");
    RawClient aux(f.port);
    REQUIRE(aux.send("GET /aux HTTP/1.1\r\n\r\n"));
    CHECK(aux.read(1000ms).body == "aux");
    CHECK(Clock::now() - t0 < 500ms);

    f.gate.release();
    for (auto &b : blocked) CHECK(b->read().body == "passed");
}

TEST_CASE("a request not complete within the request timeout gets 408 and a close; a silent connection just a close") {
    Fixture f;
    RawClient partial(f.port), silent(f.port), body(f.port);
    auto t0 = Clock::now();
    REQUIRE(partial.send("GET /healthz HTTP/1.1\r\nX-Slow: "));
    REQUIRE(body.send("POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345"));
    // Bytes that keep coming do not extend the deadline: it is for the whole request.
    for (int i = 0; i < 4; ++i) {
        std::this_thread::sleep_for(100ms);
        REQUIRE(partial.send("a"));
    }
    auto timedOut = partial.read(2000ms);
    auto took = Clock::now() - t0;
    CHECK(timedOut.status == 408);
    CHECK(timedOut.body ==
          "request timeout: the request was not complete within 0.6 s (control_request_timeout_s)\n");
    CHECK(took >= 550ms);
    CHECK(took < 1500ms);
    CHECK(partial.closedWithin(1000ms));
    CHECK(body.read(1000ms).status == 408);
    CHECK(silent.closedWithin(1000ms));
    CHECK(f.refused(ControlRefusal::Timeout) == 3);
}

TEST_CASE("an idle keep-alive connection is closed after the keep-alive timeout") {
    Fixture f;
    RawClient c(f.port);
    REQUIRE(c.send(kHealth));
    REQUIRE(c.read().status == 200);
    auto t0 = Clock::now();
    CHECK(c.closedWithin(2000ms));
    CHECK(Clock::now() - t0 >= 350ms);
    CHECK(f.refused(ControlRefusal::Timeout) == 0); // not a refusal: it had its answer
}

TEST_CASE("at the connection limit: the oldest idle goes first, then the oldest unfinished; else 503") {
    ControlServerOptions o = Fixture::options();
    o.maxConnections = 3;
    o.keepAliveTimeout = 10s;
    o.requestTimeout = 10s;
    Fixture f(o);

    // Three idle keep-alive connections; a fourth pushes out the oldest.
    std::vector<std::unique_ptr<RawClient>> idle;
    for (int i = 0; i < 3; ++i) {
        idle.push_back(std::make_unique<RawClient>(f.port));
        REQUIRE(idle.back()->send(kHealth));
        REQUIRE(idle.back()->read().status == 200);
    }
    RawClient fourth(f.port);
    REQUIRE(fourth.send(kHealth));
    CHECK(fourth.read().status == 200);
    CHECK(idle[0]->closedWithin(1000ms));
    CHECK(f.refused(ControlRefusal::Evicted) == 0); // closing an idle connection refuses nothing

    // Unfinished requests (a slowloris) take the places; a health check still gets in, and the
    // oldest unfinished one goes.
    std::vector<std::unique_ptr<RawClient>> slow;
    for (int i = 0; i < 3; ++i) {
        slow.push_back(std::make_unique<RawClient>(f.port));
        REQUIRE(slow.back()->send("GET /healthz HTTP/1.1\r\nX-Slow: "));
        std::this_thread::sleep_for(20ms);
    }
    RawClient health(f.port);
    REQUIRE(health.send(kHealth));
    CHECK(health.read().body == "ok");
    CHECK(slow[0]->closedWithin(1000ms));
    CHECK(f.refused(ControlRefusal::Evicted) >= 1);

    // Every place held by a request being answered: the newcomer gets 503 and a close.
    std::vector<std::unique_ptr<RawClient>> working;
    for (int i = 0; i < 3; ++i) {
        working.push_back(std::make_unique<RawClient>(f.port));
        REQUIRE(working.back()->send(kBlock));
        std::this_thread::sleep_for(50ms);
    }
    RawClient refused(f.port);
    auto r = refused.read(1000ms);
    CHECK(r.status == 503);
    CHECK(r.body == "too many connections to the control API; retry shortly\n");
    CHECK(f.refused(ControlRefusal::Capacity) >= 1);
    f.gate.release();
    for (auto &w : working) CHECK(w->read().body == "passed");
}

TEST_CASE("framing refusals answer with their status and close; a body over the limit gets 413, not a reset") {
    Fixture f;
    {
        RawClient c(f.port);
        REQUIRE(c.send("GET / HTTP/2.0\r\n\r\n"));
        auto r = c.read();
        CHECK(r.status == 505);
        CHECK(r.header("Connection: close"));
        CHECK(c.closedWithin(1000ms));
    }
    // The client writes its whole body before it reads; the answer must survive that.
    httplib::Client client("127.0.0.1", f.port);
    auto big = client.Post("/echo", std::string(512 * 1024, 'x'), "text/plain");
    REQUIRE(big);
    CHECK(big->status == 413);
    CHECK(big->body == "request body too large (the limit is 1000 bytes)\n");
    CHECK(f.refused(ControlRefusal::BadRequest) == 2);
}

TEST_CASE("Expect: 100-continue gets one 100 before the body, then the answer") {
    Fixture f;
    RawClient c(f.port);
    REQUIRE(c.send("POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"));
    auto cont = c.read();
    CHECK(cont.status == 100);
    REQUIRE(c.send("hello"));
    auto r = c.read();
    CHECK(r.status == 200);
    CHECK(r.body == "hello|127.0.0.1");
    REQUIRE(c.send(kHealth));
    CHECK(c.read().status == 200); // nothing stray in between
}

TEST_CASE("stop() returns promptly whatever the clients do, and answers the waiting handlers") {
    auto f = std::make_unique<Fixture>();
    std::vector<std::unique_ptr<RawClient>> clients;
    for (int i = 0; i < 20; ++i) {
        clients.push_back(std::make_unique<RawClient>(f->port));
        REQUIRE(clients.back()->send("GET /healthz HTTP/1.1\r\nX-Slow: ")); // unfinished
    }
    RawClient idle(f->port);
    REQUIRE(idle.send(kHealth));
    REQUIRE(idle.read().status == 200);
    RawClient waiting(f->port);
    REQUIRE(waiting.send(kBlock));
    auto until = Clock::now() + 2000ms;
    while (f->gate.waiters() < 1 && Clock::now() < until) std::this_thread::sleep_for(5ms);
    REQUIRE(f->gate.waiters() == 1);

    auto t0 = Clock::now();
    f->server->stop();
    CHECK(Clock::now() - t0 < 500ms);
    // The waiting handler saw stopping() and its answer went out before the close.
    auto r = waiting.read(1000ms);
    CHECK(r.status == 200);
    CHECK(r.body == "stopped");
    CHECK(idle.closedWithin(1000ms));
    for (auto &c : clients) CHECK(c->closedWithin(1000ms));
    CHECK(f->counters.connections.get() == 0);
    // Nobody listens any more.
    RawClient late(f->port);
    CHECK_FALSE(late.ok());
}

TEST_CASE("many pipelined requests on one connection are all answered, while others are served in between") {
    Fixture f;
    RawClient greedy(f.port);
    std::string burst;
    for (int i = 0; i < 900; ++i) burst += kHealth;
    auto writer = std::async(std::launch::async, [&] { return greedy.send(burst); });
    RawClient other(f.port);
    REQUIRE(other.send(kHealth));
    CHECK(other.read(1000ms).status == 200);
    int answered = 0;
    while (answered < 900 && greedy.read(2000ms).status == 200) ++answered;
    CHECK(answered == 900);
    CHECK(writer.get());
}

TEST_CASE("over the buffer budget, the connections holding the most are closed; the others go on") {
    ControlServerOptions o = Fixture::options();
    o.limits.maxBodyBytes = 256 * 1024;
    o.maxBufferedBytes = 600 * 1024;
    o.requestTimeout = 10s;
    Fixture f(o);
    std::vector<std::unique_ptr<RawClient>> big;
    for (int i = 0; i < 3; ++i) {
        big.push_back(std::make_unique<RawClient>(f.port));
        REQUIRE(big.back()->send("POST /echo HTTP/1.1\r\nContent-Length: 262144\r\n\r\n" + std::string(200 * 1024, 'x')));
        std::this_thread::sleep_for(100ms);
    }
    int closed = 0;
    std::vector<RawClient *> open;
    for (auto &b : big) {
        if (b->closedWithin(300ms))
            ++closed;
        else
            open.push_back(b.get());
    }
    CHECK(closed >= 1);
    REQUIRE_FALSE(open.empty());
    CHECK(f.refused(ControlRefusal::Evicted) == static_cast<std::uint64_t>(closed));
    // A survivor finishes its request and is answered.
    REQUIRE(open.front()->send(std::string(56 * 1024, 'y')));
    auto r = open.front()->read(2000ms);
    CHECK(r.status == 200);
    CHECK(r.body.size() == 256 * 1024 + std::string("|127.0.0.1").size());
    RawClient health(f.port);
    REQUIRE(health.send(kHealth));
    CHECK(health.read(1000ms).status == 200);
}

TEST_CASE("a stream: its head and first event at once, then events on the timer past every timeout") {
    Fixture f;
    RawClient c(f.port);
    auto t0 = Clock::now();
    REQUIRE(c.send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"));
    auto r = c.read(1000ms);
    REQUIRE(r.status == 200);
    CHECK(r.header("Content-Type: text/event-stream"));
    CHECK(r.header("Cache-Control: no-store"));
    CHECK(r.head.find("Content-Length") == std::string::npos);
    REQUIRE(c.receivedWithin("data: 1\n\n", 1, 500ms));
    CHECK(Clock::now() - t0 < 300ms);
    // Past the request (600 ms) and keep-alive (400 ms) timeouts: 8 intervals of 100 ms or more.
    REQUIRE(c.receivedWithin("\n\n", 9, 4000ms));
    CHECK(Clock::now() - t0 >= 800ms);
    CHECK_FALSE(c.closedWithin(200ms));
    CHECK(f.refused(ControlRefusal::Timeout) == 0);
}

TEST_CASE("at most maxStreams streams; one more gets 503; a stream whose peer leaves frees its place") {
    Fixture f;
    auto one = std::make_unique<RawClient>(f.port);
    RawClient two(f.port);
    REQUIRE(one->send("GET /stream HTTP/1.1\r\n\r\n"));
    REQUIRE(one->read().status == 200);
    REQUIRE(two.send("GET /stream HTTP/1.1\r\n\r\n"));
    REQUIRE(two.read().status == 200);
    RawClient three(f.port);
    REQUIRE(three.send("GET /stream HTTP/1.1\r\n\r\n"));
    auto r = three.read();
    CHECK(r.status == 503);
    CHECK(r.body.find("too many streams") != std::string::npos);
    CHECK(three.closedWithin(1000ms));
    // Other requests are served meanwhile.
    RawClient health(f.port);
    REQUIRE(health.send(kHealth));
    CHECK(health.read().status == 200);

    one.reset(); // the peer goes: the server sees it and frees the place
    auto until = Clock::now() + 2000ms;
    int status = 0;
    while (status != 200 && Clock::now() < until) {
        RawClient again(f.port);
        REQUIRE(again.send("GET /stream HTTP/1.1\r\n\r\n"));
        status = again.read().status;
        if (status != 200) std::this_thread::sleep_for(50ms);
    }
    CHECK(status == 200);
}

TEST_CASE("a stream reader that falls more than maxStreamBacklog behind is dropped") {
    Fixture f;
    RawClient slow(f.port);
    REQUIRE(slow.send("GET /big HTTP/1.1\r\n\r\n")); // and never reads
    auto until = Clock::now() + 5000ms;
    while (f.refused(ControlRefusal::Timeout) == 0 && Clock::now() < until) std::this_thread::sleep_for(20ms);
    CHECK(f.refused(ControlRefusal::Timeout) == 1);
    CHECK(slow.closedWithin(5000ms));
    CHECK(f.counters.connections.get() == 0);
}

TEST_CASE("stop() ends open streams at once") {
    auto f = std::make_unique<Fixture>();
    RawClient a(f->port), b(f->port);
    REQUIRE(a.send("GET /stream HTTP/1.1\r\n\r\n"));
    REQUIRE(b.send("GET /big HTTP/1.1\r\n\r\n"));
    REQUIRE(a.read().status == 200);
    REQUIRE(a.receivedWithin("\n\n", 2, 1000ms));
    auto t0 = Clock::now();
    f->server->stop();
    CHECK(Clock::now() - t0 < 500ms);
    CHECK(a.closedWithin(1000ms));
    CHECK(b.closedWithin(5000ms));
    CHECK(f->counters.connections.get() == 0);
}
