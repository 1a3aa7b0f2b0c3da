// embed: the smallest server of your own that uses libwsgw.
//
// Your server keeps its sockets; libwsgw answers "which connections does this command reach?"
// and delivers to them on the right thread. You
//   1. subclass wsgw::Connection for your transport,
//   2. run a wsgw::Hub (here with its own shard thread),
//   3. hand each connection to a shard when it opens (on that shard's thread),
//   4. send, re-tag and close by selector from any thread,
//   5. tell the shard when a connection is gone.
// Open and close events go to an event sink; this one prints them to stdout as JSON lines.
//
// Build in the tree: ninja -C build examples/embed/embed

#include <wsgw/wsgw.h>

#include <chrono>
#include <cstdio>
#include <future>
#include <optional>
#include <string>
#include <utility>

namespace {

// A connection of your transport. This one "writes" a message by printing it.
//
// Like every Connection it is thread-bound: the hub calls it only on its shard's thread.
class PrintConnection final : public wsgw::Connection {
public:
    explicit PrintConnection(std::string name) : Connection(wsgw::ConnectionId::random()), name_(std::move(name)) {}

    wsgw::SendStatus send(const wsgw::MessagePtr &msg) override {
        if (closing_) return wsgw::SendStatus::Closed;
        // A real transport queues a reference to msg and writes it when the socket is writable.
        std::printf("  %s <- \"%.*s\"\n", name_.c_str(), static_cast<int>(msg->size()), msg->payload().data());
        return wsgw::SendStatus::Queued;
    }

    void close(std::uint16_t code, std::string_view reason) override {
        // A real transport starts the closing handshake here; once the socket is gone it calls
        // Shard::closed (see the end of main).
        if (closing_) return;
        closing_ = true;
        std::printf("  %s closing: %u %.*s\n", name_.c_str(), code, static_cast<int>(reason.size()), reason.data());
    }

    std::string remoteAddress() const override { return "192.0.2.1:40000"; }
    std::string_view endpoint() const override { return "/ws"; }

private:
    std::string name_;
    bool closing_ = false;
};

// Runs `fn` on the shard's thread and waits until it has run. A shard's registry and
// connections belong to its thread, so this is how other threads reach them.
template <class Fn> bool runOnShard(wsgw::Shard &shard, Fn fn) {
    std::promise<void> done;
    std::future<void> ran = done.get_future();
    if (!shard.post([&](wsgw::Shard &s) {
            fn(s);
            done.set_value();
        }))
        return false; // inbox full or hub stopped: fn will not run
    ran.wait();
    return true;
}

} // namespace

int main() {
    // One shard on a thread the hub runs itself. A server with its own event loops would set
    // ownThreads = false, give each shard a wake-up (Shard::setWakeup) and call Shard::drain().
    wsgw::HubOptions options;
    options.shards = 1;
    options.ownThreads = true;
    wsgw::Hub hub(options);

    // Sinks are added before start(). Events carry the tags the endpoint asks for.
    hub.events().addSink(wsgw::makeLogSink(stdout, "embed"));
    if (std::string why; !hub.start(&why)) {
        std::fprintf(stderr, "embed: %s\n", why.c_str());
        return 1;
    }
    wsgw::EventSpec spec;
    spec.includeTags = {"group"};

    // Connections must outlive their registration; here main owns them.
    PrintConnection alice("alice");
    PrintConnection bob("bob");
    wsgw::Shard &shard = hub.shard(0);
    bool opened = false;
    runOnShard(shard, [&](wsgw::Shard &s) {
        opened = s.open(alice, {{"group", "a"}, {"user", "alice"}}, spec) &&
                 s.open(bob, {{"group", "b"}, {"user", "bob"}}, spec);
    });
    if (!opened) {
        std::fprintf(stderr, "embed: could not open the connections\n");
        return 1;
    }

    // A selector in the control API's query-string form: every key=value must match.
    std::string error;
    std::optional<wsgw::Selector> groupA = wsgw::Selector::parse("group=a", &error);
    if (!groupA) {
        std::fprintf(stderr, "embed: bad selector: %s\n", error.c_str());
        return 1;
    }

    // Any thread may send. The future-returning calls block until every shard has answered,
    // so never wait on one from a shard's own thread.
    wsgw::CountResult sent = hub.send(*groupA, wsgw::Message::text("hello, group a")).get();
    if (!sent.ok()) {
        std::fprintf(stderr, "embed: send did not complete\n");
        return 1;
    }
    std::printf("sent to %zu connection(s) matching %s\n", sent.value, groupA->toString().c_str());
    std::fflush(stdout);

    // Close everyone; then report the connections gone, as the transport does once their
    // sockets have closed. Shard::closed publishes each close event.
    wsgw::CountResult closing =
        hub.close(wsgw::Selector::all(), wsgw::close_code::kNormal, "Closed by server").get();
    runOnShard(shard, [&](wsgw::Shard &s) {
        s.closed(alice, spec);
        s.closed(bob, spec);
    });
    std::printf("closed %zu connection(s)\n", closing.ok() ? closing.value : 0);
    std::fflush(stdout);

    // Stop the shard thread and give the log sink up to a second to write what it holds.
    hub.stop(std::chrono::seconds(1));
    return sent.value == 1 && closing.value == 2 ? 0 : 1;
}
