// beast: a WebSocket server on Boost.Beast that embeds libwsgw, built the way a user builds:
//   c++ -std=c++17 beast.cpp $(pkg-config --cflags --libs libwsgw) -pthread
// One io_context thread per shard runs that shard (HubOptions::ownThreads = false); each session
// is a wsgw::Connection whose outbound half is a wsgw::Outbound. README: "Embedding in your own
// server" explains the pattern; tests/beast/run.sh drives this file with node's `ws` clients.
//
// usage: beast [--port N] [--shards N] [--max-bytes N] [--policy close|drop_newest|drop_oldest]
//              [--backlog EVENTS] [--include TAG,TAG]
// Clients connect to ws://HOST:PORT/ANY/PATH?k=v&k2=v2: the query's pairs are the connection's
// tags (the key `id` is refused, HTTP 400). Events are JSON lines on stdout, through a sink that
// pauses reading from clients while more than --backlog events wait (stdout not read).
// Commands are lines on stdin; each answers one line "= N" (connections reached) or "! why" on
// stderr, where "# listening on PORT" and "# reads paused|resumed" appear too:
//   send SELECTOR TEXT...      sendb SELECTOR HEX      settags SELECTOR k=v&k2=
//   close SELECTOR CODE REASON...                       stats
// A SELECTOR is the control API's query form ("group=a&role=b", "id=ID1,ID2", "*" for all).
// SIGTERM or SIGINT: close every client with 1001, wait for them, flush the events, exit 0.

#include <wsgw/wsgw.h>

#include <boost/asio.hpp>
#include <boost/beast.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

class Session;

// One shard's event loop: its io_context (one thread), its shard and the sessions living on it.
struct Loop {
    asio::io_context ioc{1};
    wsgw::Shard *shard = nullptr;
    std::set<Session *> sessions; // touched on this loop's thread only
    std::thread thread;
};

wsgw::EventSpec spec;                 // what events carry (--include); read-only once serving
wsgw::OutboundOptions outboundOptions; // --max-bytes, --policy
std::atomic<std::uint64_t> messagesRead{0};

class Session final : public wsgw::Connection, public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket socket, Loop &loop)
        : Connection(wsgw::ConnectionId::random()), ws_(std::move(socket)), loop_(loop), out_(outboundOptions) {}

    void start() {
        beast::error_code ec;
        tcp::endpoint peer = beast::get_lowest_layer(ws_).socket().remote_endpoint(ec);
        std::ostringstream addr;
        addr << peer; // "ip:port", "[v6]:port"
        remote_ = addr.str();
        beast::get_lowest_layer(ws_).expires_after(30s);
        http::async_read(ws_.next_layer(), buf_, req_, [self = shared_from_this()](beast::error_code e, std::size_t) {
            if (!e) self->upgrade();
        });
    }

    // wsgw::Connection: called on this loop's thread by the hub's commands.
    wsgw::SendStatus send(const wsgw::MessagePtr &msg) override {
        wsgw::SendStatus status = out_.push(msg);
        kick();
        return status;
    }
    void close(std::uint16_t code, std::string_view reason) override {
        out_.close(code, reason);
        kick();
    }
    std::string remoteAddress() const override { return remote_; }
    std::string_view endpoint() const override { return endpoint_; }

    // Reads stopped for backpressure start again once this endpoint's sinks have caught up.
    void resume() {
        if (!parked_ || gone_ || loop_.shard->hub().events().paused(endpoint_)) return;
        parked_ = false;
        read();
    }
    // Shutdown's last resort: the socket goes at once, the connection is reported closed.
    void cut() {
        out_.abort();
        beast::error_code ec;
        beast::get_lowest_layer(ws_).socket().close(ec);
        finish();
    }

private:
    void upgrade() {
        std::string_view target(req_.target().data(), req_.target().size());
        std::size_t q = target.find('?');
        endpoint_ = std::string(target.substr(0, q));
        std::string why;
        std::optional<wsgw::TagList> tags = wsgw::parseForm(q == target.npos ? "" : target.substr(q + 1), &why);
        if (!tags) why = "bad query string: " + why;
        for (const auto &[key, value] : tags ? *tags : wsgw::TagList{})
            if (key == wsgw::kSelectorIdKey) why = "tag key 'id' is reserved: it selects connection ids";
        if (!websocket::is_upgrade(req_)) why = "not a WebSocket upgrade";
        if (!why.empty()) return refuse(why);
        tags_ = std::move(*tags);
        beast::get_lowest_layer(ws_).expires_never(); // the websocket stream's own timeouts from here
        ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
        ws_.read_message_max(1u << 20); // over it: Beast closes with 1009
        ws_.async_accept(req_, [self = shared_from_this()](beast::error_code e) {
            if (!e) self->opened();
        });
    }

    void refuse(const std::string &why) {
        auto res = std::make_shared<http::response<http::string_body>>(http::status::bad_request, req_.version());
        res->body() = why + "\n";
        res->prepare_payload();
        // Once written, the last reference goes and the socket with it.
        http::async_write(ws_.next_layer(), *res, [self = shared_from_this(), res](beast::error_code, std::size_t) {});
    }

    void opened() {
        // The shard shares ownership from here until after closed(): a session with reads
        // parked and nothing to write has no pending handler holding it.
        if (!loop_.shard->open(std::shared_ptr<wsgw::Connection>(shared_from_this()), tags_, spec)) {
            ws_.async_close(websocket::close_code::internal_error, [self = shared_from_this()](beast::error_code) {});
            return;
        }
        open_ = true;
        loop_.sessions.insert(this);
        parked_ = true; // start reading unless the sinks already ask for a pause
        resume();
    }

    void read() {
        ws_.async_read(in_, [self = shared_from_this()](beast::error_code e, std::size_t) { self->onRead(e); });
    }
    void onRead(beast::error_code e) {
        if (e) return finish(); // the peer closed, our close completed, a protocol error (Beast
                                // answered it with its close code), or a cut socket
        ++messagesRead;
        loop_.shard->message(*this, ws_.got_text() ? wsgw::Opcode::Text : wsgw::Opcode::Binary,
                             std::string_view(static_cast<const char *>(in_.data().data()), in_.size()), spec);
        in_.consume(in_.size());
        parked_ = true; // read on unless the sinks ask to pause: resume() then runs later
        resume();
    }

    // The writer: one Beast write at a time, the Outbound batch message by message, then the
    // close frame once everything before it is out.
    void kick() {
        if (!open_ || gone_ || closing_ || out_.writing()) return;
        if (out_.hasQueued()) {
            out_.startWrite();
            write(0);
        } else if (out_.takeCloseDue()) {
            closing_ = true;
            websocket::close_reason cr(static_cast<websocket::close_code>(out_.closeCode()),
                                       beast::string_view(out_.closeReason().data(), out_.closeReason().size()));
            ws_.async_close(cr, [self = shared_from_this()](beast::error_code) { self->finish(); });
        }
    }
    void write(std::size_t i) {
        const wsgw::MessagePtr &m = out_.inFlight()[i];
        ws_.text(m->isText());
        ws_.async_write(asio::buffer(m->data(), m->size()),
                        [self = shared_from_this(), i](beast::error_code e, std::size_t) {
                            if (e) return self->cut();
                            if (i + 1 < self->out_.inFlight().size()) return self->write(i + 1);
                            self->out_.finishWrite();
                            self->kick();
                        });
    }

    // Reported to the shard exactly once, whichever way the connection ended.
    void finish() {
        if (gone_) return;
        gone_ = true;
        out_.abort();
        if (!open_) return;
        loop_.sessions.erase(this);
        loop_.shard->closed(*this, spec);
    }

    websocket::stream<beast::tcp_stream> ws_;
    Loop &loop_;
    wsgw::Outbound out_;
    beast::flat_buffer buf_, in_;
    http::request<http::empty_body> req_;
    std::string remote_, endpoint_;
    wsgw::TagList tags_;
    bool open_ = false, parked_ = false, closing_ = false, gone_ = false;
};

// Runs fn on a loop's thread and waits for it (only from a thread that is no loop's).
template <class Fn> void runOn(Loop &loop, Fn fn) {
    std::promise<void> done;
    asio::post(loop.ioc, [&] { fn(); done.set_value(); });
    done.get_future().wait();
}

// One stdin command; returns its answer line.
std::string command(wsgw::Hub &hub, const std::string &line) {
    auto answer = [](const wsgw::CountResult &r) { return r.ok() ? "= " + std::to_string(r.value) : "! not completed"; };
    std::istringstream in(line);
    std::string verb, sel, arg;
    in >> verb;
    if (verb == "stats")
        return "= connections=" + std::to_string(hub.connectionCount()) + " read=" + std::to_string(messagesRead) +
               " paused=" + std::to_string(hub.events().paused()) + " errors=" + std::to_string(hub.connectionErrors());
    in >> sel;
    std::string why;
    std::optional<wsgw::Selector> selector = wsgw::Selector::parse(sel, &why);
    if (!selector) return "! selector: " + why;
    std::getline(in.ignore(1), arg); // the rest of the line, after one space
    if (verb == "send") return answer(hub.send(*selector, wsgw::Message::text(arg)).get());
    if (verb == "sendb") {
        std::string bytes;
        for (std::size_t i = 0; i + 1 < arg.size(); i += 2) bytes.push_back(char(std::stoi(arg.substr(i, 2), nullptr, 16)));
        return answer(hub.send(*selector, wsgw::Message::binary(bytes)).get());
    }
    if (verb == "settags") {
        std::optional<wsgw::TagList> changes = wsgw::parseForm(arg, &why);
        if (!changes) return "! tags: " + why;
        for (const auto &[key, value] : *changes)
            if (key == wsgw::kSelectorIdKey) return "! tag key 'id' is reserved";
        return answer(hub.setTags(*selector, std::move(*changes)).get());
    }
    if (verb == "close") {
        std::size_t space = arg.find(' ');
        int code = std::atoi(arg.c_str());
        if (code < 1000 || code > 4999) return "! close code must be 1000-4999";
        return answer(hub.close(*selector, std::uint16_t(code), space == arg.npos ? "" : arg.substr(space + 1)).get());
    }
    return "! unknown command '" + verb + "'";
}

} // namespace

int main(int argc, char **argv) {
    unsigned short port = 0;
    std::size_t shards = 2, backlog = 100'000;
    for (int i = 1; i < argc; i += 2) {
        std::string flag = argv[i], value = i + 1 < argc ? argv[i + 1] : "";
        if (flag == "--port") port = static_cast<unsigned short>(std::atoi(value.c_str()));
        else if (flag == "--shards") shards = std::max(1, std::atoi(value.c_str()));
        else if (flag == "--max-bytes") outboundOptions.maxBytes = std::strtoul(value.c_str(), nullptr, 10);
        else if (flag == "--backlog") backlog = std::strtoul(value.c_str(), nullptr, 10);
        else if (flag == "--include") {
            std::istringstream names(value);
            for (std::string n; std::getline(names, n, ',');) spec.includeTags.push_back(n);
        } else if (flag == "--policy" && value != "close")
            outboundOptions.policy = value == "drop_newest" ? wsgw::SlowConsumerPolicy::DropNewest
                                                             : wsgw::SlowConsumerPolicy::DropOldest;
        else if (flag != "--policy") return std::fprintf(stderr, "beast: unknown flag %s\n", argv[i]), 2;
    }

    wsgw::HubOptions options;
    options.shards = shards;
    options.ownThreads = false; // the shards run in our io_contexts
    wsgw::Hub hub(options);
    std::vector<std::unique_ptr<Loop>> loops;
    for (std::size_t i = 0; i < shards; ++i) {
        Loop &loop = *loops.emplace_back(std::make_unique<Loop>());
        loop.shard = &hub.shard(i);
        // Called from any thread, the loop's own included: post the drain, never run it inline.
        loop.shard->setWakeup([&loop] { asio::post(loop.ioc, [&loop] { loop.shard->drain(); }); });
    }
    wsgw::SinkOptions sinkOptions;
    sinkOptions.maxBacklogEvents = backlog;
    sinkOptions.overflow = wsgw::OverflowPolicy::PauseReading;
    hub.events().addSink(wsgw::makeLogSink(stdout, "beast"), sinkOptions);
    hub.events().onBackpressure([&loops](bool paused) { // on whichever thread crossed the bound
        std::fprintf(stderr, paused ? "# reads paused\n" : "# reads resumed\n");
        if (paused) return; // each read completion checks paused() itself
        for (auto &l : loops)
            asio::post(l->ioc, [&loop = *l] {
                for (Session *s : std::set<Session *>(loop.sessions)) s->resume();
            });
    });
    if (std::string why; !hub.start(&why)) return std::fprintf(stderr, "beast: %s\n", why.c_str()), 1;

    tcp::acceptor acceptor(loops[0]->ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    std::size_t next = 0;
    std::function<void()> accept = [&] {
        Loop &loop = *loops[next++ % loops.size()]; // round robin over the shards
        acceptor.async_accept(loop.ioc, [&accept, &loop](beast::error_code e, tcp::socket socket) {
            if (e) return; // the acceptor was closed
            asio::post(loop.ioc, [&loop, s = std::make_shared<tcp::socket>(std::move(socket))]() mutable {
                std::make_shared<Session>(std::move(*s), loop)->start();
            });
            accept();
        });
    };
    accept();
    std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
    for (auto &l : loops) {
        guards.push_back(asio::make_work_guard(l->ioc));
        l->thread = std::thread([&ioc = l->ioc] { ioc.run(); });
    }

    // Commands from stdin and signals, on the main thread (no loop's, so it may wait on futures).
    asio::io_context control;
    asio::signal_set signals(control, SIGTERM, SIGINT);
    signals.async_wait([&control](beast::error_code, int) { control.stop(); });
    std::fprintf(stderr, "# listening on %u\n", acceptor.local_endpoint().port());
    asio::posix::stream_descriptor input(control, ::dup(0));
    asio::streambuf lines;
    std::function<void()> readLine = [&] {
        asio::async_read_until(input, lines, '\n', [&](beast::error_code e, std::size_t n) {
            if (e) return; // stdin closed: keep serving until a signal
            std::string line(asio::buffers_begin(lines.data()), asio::buffers_begin(lines.data()) + n - 1);
            lines.consume(n);
            std::string reply;
            try {
                reply = command(hub, line);
            } catch (const std::exception &x) { // a malformed number (std::stoi)
                reply = std::string("! bad argument: ") + x.what();
            }
            std::fprintf(stderr, "%s\n", reply.c_str());
            readLine();
        });
    };
    readLine();
    control.run();

    // Shutdown: stop accepting, close everyone, wait for them (cut the stragglers), flush, stop.
    runOn(*loops[0], [&] { acceptor.close(); });
    hub.close(wsgw::Selector::all(), wsgw::close_code::kGoingAway, "going away").wait();
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (hub.connectionCount() > 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(10ms);
    for (auto &l : loops)
        runOn(*l, [&loop = *l] {
            for (Session *s : std::set<Session *>(loop.sessions)) s->cut();
        });
    for (auto &l : loops) runOn(*l, [&loop = *l] { loop.shard->drain(); }); // lets go of closed sessions
    std::size_t undelivered = hub.stop(2s);
    for (auto &l : loops) {
        l->ioc.stop();
        l->thread.join();
    }
    std::fprintf(stderr, "# stopped, %zu event(s) undelivered\n", undelivered);
    return undelivered == 0 ? 0 : 1;
}
