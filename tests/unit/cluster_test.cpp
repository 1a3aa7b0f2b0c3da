// The cluster's pure parts (the wire format, the id prefix) and the Cluster itself over an
// in-process transport: several hubs in one process acting as one, as an embedder could run them.
#include "cluster_wire.h"

#include <wsgw/cluster.h>
#include <wsgw/hub.h>

#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace wsgw;
using namespace std::chrono_literals;
namespace cw = wsgw::cluster_wire;

namespace {

Selector sel(std::string_view query) {
    auto s = Selector::parse(query);
    REQUIRE(s);
    return *s;
}

void onShard(Shard &shard, std::function<void(Shard &)> fn) {
    std::promise<void> done;
    REQUIRE(shard.post([&](Shard &s) {
        fn(s);
        done.set_value();
    }));
    done.get_future().wait();
}

// Records every payload it is sent, in order, readable from any thread.
class RecordingConnection final : public Connection {
public:
    explicit RecordingConnection(ConnectionId id) : Connection(id) {}
    SendStatus send(const MessagePtr &m) override {
        std::lock_guard lock(mu);
        got.emplace_back(m->payload());
        return SendStatus::Queued;
    }
    void close(std::uint16_t, std::string_view) override {}
    std::string remoteAddress() const override { return "127.0.0.1:1"; }
    std::string_view endpoint() const override { return "/c"; }
    std::vector<std::string> payloads() {
        std::lock_guard lock(mu);
        return got;
    }

private:
    std::mutex mu;
    std::vector<std::string> got;
};

const EventSpec kNoEvents{};

// An in-process transport: each node has an inbox served by a thread of its own (so the order of
// one sender's messages holds, as with Redis pub/sub). A node can be muted: what is posted to it
// is dropped, as a partition would.
class LocalNet {
public:
    class Node;
    std::mutex mu;
    std::map<std::string, Node *> nodes;
    std::set<std::string> muted;

    class Node final : public ClusterTransport {
    public:
        explicit Node(LocalNet &net) : net_(net) {}
        ~Node() override { stop(); }
        std::string name() const override { return "local"; }
        bool start(const std::string &self, Receiver &r, std::string *) noexcept override {
            self_ = self;
            receiver_ = &r;
            thread_ = std::thread([this] { run(); });
            std::vector<Node *> all;
            {
                std::lock_guard lock(net_.mu);
                net_.nodes[self] = this;
                for (auto &[n, node] : net_.nodes) all.push_back(node);
            }
            for (Node *n : all) n->announce();
            r.stateChanged(true, {});
            return true;
        }
        void stop() noexcept override {
            {
                std::lock_guard lock(mu_);
                if (stopping_) return;
                stopping_ = true;
            }
            {
                std::lock_guard lock(net_.mu);
                net_.nodes.erase(self_);
            }
            wake_.notify_one();
            if (thread_.joinable()) thread_.join();
        }
        bool post(const std::string &node, std::uint64_t, std::string message) noexcept override {
            std::lock_guard lock(net_.mu);
            auto it = net_.nodes.find(node);
            if (it == net_.nodes.end()) return false;
            if (net_.muted.count(node)) return true; // lost on the way
            it->second->deliver(std::move(message));
            return true;
        }
        bool connected() const noexcept override { return true; }

        void announce() {
            std::vector<NodeInfo> live;
            {
                std::lock_guard lock(net_.mu);
                for (auto &[n, node] : net_.nodes) live.push_back(NodeInfo{n, "", 0, 0, 0});
            }
            receiver_->membership(std::move(live));
        }
        void deliver(std::string m) {
            {
                std::lock_guard lock(mu_);
                inbox_.push_back(std::move(m));
            }
            wake_.notify_one();
        }

    private:
        void run() {
            std::unique_lock lock(mu_);
            for (;;) {
                wake_.wait(lock, [&] { return stopping_ || !inbox_.empty(); });
                if (stopping_) return;
                std::string m = std::move(inbox_.front());
                inbox_.pop_front();
                lock.unlock();
                receiver_->received(std::move(m));
                lock.lock();
            }
        }
        LocalNet &net_;
        std::string self_;
        Receiver *receiver_ = nullptr;
        std::thread thread_;
        std::mutex mu_;
        std::condition_variable wake_;
        std::deque<std::string> inbox_;
        bool stopping_ = false;
    };
};

struct TestNode {
    TestNode(LocalNet &net, const std::string &name, std::chrono::milliseconds timeout = 2000ms)
        : hub({.shards = 2, .inboxCapacity = 256, .ownThreads = true}) {
        REQUIRE(hub.start());
        ClusterOptions o;
        o.node = name;
        o.commandTimeout = timeout;
        o.idsCarryNode = true;
        cluster = std::make_unique<Cluster>(hub, std::make_unique<LocalNet::Node>(net), o);
        REQUIRE(cluster->start());
        for (int i = 0; i < 2; ++i) {
            conns.push_back(std::make_unique<RecordingConnection>(ConnectionId::random(clusterIdPrefix(name))));
            RecordingConnection *c = conns.back().get();
            onShard(hub.shard(i % 2), [&](Shard &s) { REQUIRE(s.open(*c, {{"g", "1"}, {"node", name}}, kNoEvents)); });
        }
    }
    ~TestNode() {
        cluster->stop();
        hub.stop();
    }
    std::vector<std::unique_ptr<RecordingConnection>> conns; // outlive the hub's registries
    Hub hub;
    std::unique_ptr<Cluster> cluster;
};

} // namespace

TEST_CASE("the wire format carries a command and an answer byte for byte") {
    cw::Request q;
    q.tag = 42;
    q.from = "gw-1";
    q.op = cw::Op::SetTags;
    q.selector = "g=1";
    q.remainingMs = 1500;
    q.hasMessage = true;
    q.opcode = Opcode::Binary;
    q.payload = std::string("\0\xff\x80 bytes", 9);
    q.changes = {{"k", "v\xff"}, {"gone", ""}};
    q.maxTags = 7;
    auto back = cw::decode(cw::encode(q), nullptr);
    REQUIRE(back);
    auto &r = std::get<cw::Request>(*back);
    CHECK(r.tag == 42);
    CHECK(r.from == "gw-1");
    CHECK(r.op == cw::Op::SetTags);
    CHECK(r.selector == "g=1");
    CHECK(r.remainingMs == 1500);
    CHECK(r.opcode == Opcode::Binary);
    CHECK(r.payload == q.payload);
    CHECK(r.changes == q.changes);
    CHECK(r.maxTags == 7);

    cw::Reply a;
    a.tag = 9;
    a.from = "gw-2";
    a.status = CommandStatus::TimedOut;
    a.count = 3;
    ConnectionInfo info;
    info.id = ConnectionId::random();
    info.endpoint = "/connect";
    info.remoteAddress = "10.0.0.1:5";
    info.tags = {{"a", "1"}};
    info.shard = 1;
    a.connections.push_back(info);
    a.tree["a"]["1"] = 2;
    auto back2 = cw::decode(cw::encode(a), nullptr);
    REQUIRE(back2);
    auto &b = std::get<cw::Reply>(*back2);
    CHECK(b.status == CommandStatus::TimedOut);
    CHECK(b.count == 3);
    REQUIRE(b.connections.size() == 1);
    CHECK(b.connections[0].id == info.id);
    CHECK(b.connections[0].tags == info.tags);
    CHECK(b.tree == a.tree);

    std::string error;
    CHECK_FALSE(cw::decode("not msgpack at all", &error));
    CHECK(error.find("not a cluster message") == 0);
    CHECK_FALSE(cw::decode("", &error));
}

TEST_CASE("ids carry their node's prefix and stay version 4 UUIDs") {
    const std::uint16_t p = clusterIdPrefix("gw-1");
    CHECK(p == clusterIdPrefix("gw-1"));
    CHECK(p != clusterIdPrefix("gw-2"));
    for (int i = 0; i < 100; ++i) {
        ConnectionId id = ConnectionId::random(p);
        CHECK(id.prefix() == p);
        CHECK((id.bytes()[6] >> 4) == 4);
        CHECK((id.bytes()[8] & 0xC0) == 0x80);
        CHECK(ConnectionId::parse(id.toString()) == id);
    }
}

TEST_CASE("a command on any node reaches every connection of every node exactly once") {
    LocalNet net;
    std::vector<std::unique_ptr<TestNode>> nodes;
    for (const char *n : {"a", "b", "c"}) nodes.push_back(std::make_unique<TestNode>(net, n));
    for (auto &n : nodes) REQUIRE(n->cluster->nodes().size() == 3);
    for (std::size_t from = 0; from < nodes.size(); ++from) {
        auto r = nodes[from]->cluster->send(sel("g=1"), Message::text("m" + std::to_string(from))).get();
        CHECK(r.ok());
        CHECK(r.value == 6);
        CHECK(r.missing.empty());
        CHECK(r.answered.size() == 2);
    }
    for (auto &n : nodes)
        for (auto &c : n->conns) CHECK(c->payloads() == std::vector<std::string>{"m0", "m1", "m2"});

    auto st = nodes[1]->cluster->status(sel("g=1")).get();
    CHECK(st.value.size() == 6);
    auto tree = nodes[2]->cluster->tree().get();
    CHECK(tree.value["g"]["1"] == 6);
    CHECK(tree.value["node"]["a"] == 2);
    auto tags = nodes[0]->cluster->setTags(sel("node=b"), {{"x", "1"}}, 100).get();
    CHECK(tags.value.changed == 2);
    CHECK(nodes[2]->cluster->tree().get().value["x"]["1"] == 2);
}

TEST_CASE("an id= command goes to the owning node only, and commands keep their order") {
    LocalNet net;
    std::vector<std::unique_ptr<TestNode>> nodes;
    for (const char *n : {"a", "b", "c"}) nodes.push_back(std::make_unique<TestNode>(net, n));
    const ConnectionId target = nodes[2]->conns[0]->id();
    const auto before = nodes[0]->cluster->stats().commandsSent;
    for (int i = 0; i < 50; ++i) {
        auto r = nodes[0]->cluster->send(Selector::withIds({target}), Message::text(std::to_string(i)));
        if (i == 49) CHECK(r.get().value == 1);
    }
    CHECK(nodes[0]->cluster->stats().commandsSent - before == 50); // to c alone, not to b
    CHECK(nodes[1]->cluster->stats().commandsReceived == 0);
    std::vector<std::string> want;
    for (int i = 0; i < 50; ++i) want.push_back(std::to_string(i));
    CHECK(nodes[2]->conns[0]->payloads() == want);
}

TEST_CASE("a node that does not answer is named missing after the command timeout, never counted") {
    LocalNet net;
    std::vector<std::unique_ptr<TestNode>> nodes;
    for (const char *n : {"a", "b", "c"}) nodes.push_back(std::make_unique<TestNode>(net, n, 300ms));
    {
        std::lock_guard lock(net.mu);
        net.muted.insert("c");
    }
    const auto start = std::chrono::steady_clock::now();
    auto r = nodes[0]->cluster->send(sel("g=1"), Message::text("x")).get();
    const auto took = std::chrono::steady_clock::now() - start;
    CHECK(r.ok());
    CHECK(r.value == 4);
    CHECK(r.missing == std::vector<std::string>{"c"});
    CHECK(r.answered == std::vector<std::string>{"b"});
    CHECK(took >= 300ms);
    CHECK(took < 2000ms);
    CHECK(nodes[0]->cluster->stats().commandsTimedOut == 1);
}

TEST_CASE("the wire carries count and a status page") {
    cw::Request q;
    q.op = cw::Op::Status;
    q.selector = R"({"has":["k"]})";
    q.after = ConnectionId::random().toString();
    q.limit = 25;
    auto back = cw::decode(cw::encode(q), nullptr);
    REQUIRE(back);
    auto &r = std::get<cw::Request>(*back);
    CHECK(r.op == cw::Op::Status);
    CHECK(r.selector == q.selector);
    CHECK(r.after == q.after);
    CHECK(r.limit == 25);
    q = cw::Request{};
    q.op = cw::Op::Count;
    q.selector = "*";
    back = cw::decode(cw::encode(q), nullptr);
    REQUIRE(back);
    CHECK(std::get<cw::Request>(*back).op == cw::Op::Count);
}

TEST_CASE("count, a status page and a JSON selector with ids over the cluster") {
    LocalNet net;
    std::vector<std::unique_ptr<TestNode>> nodes;
    for (const char *n : {"a", "b", "c"}) nodes.push_back(std::make_unique<TestNode>(net, n));
    std::size_t total = 0;
    std::vector<ConnectionId> all;
    for (auto &n : nodes)
        for (auto &c : n->conns) {
            all.push_back(c->id());
            ++total;
        }
    std::sort(all.begin(), all.end());
    auto counted = nodes[1]->cluster->count(Selector::all()).get();
    CHECK(counted.ok());
    CHECK(counted.value == total);
    CHECK(counted.missing.empty());
    CHECK(counted.answered.size() == 2);

    // Pages of 2 from node a list every connection of every node once, in id order.
    std::vector<ConnectionId> listed;
    StatusPage page;
    page.limit = 2;
    for (std::size_t i = 0; i <= total; ++i) {
        auto r = nodes[0]->cluster->status(Selector::all(), page).get();
        REQUIRE(r.ok());
        CHECK(r.value.size() <= 2);
        for (auto &c : r.value) listed.push_back(c.info.id);
        if (r.value.size() < 2) break;
        page.after = r.value.back().info.id;
    }
    CHECK(listed == all);

    // A JSON selector narrowed by ids goes to the ids' node only.
    const ConnectionId target = nodes[2]->conns[0]->id();
    SelectorClauses c;
    c.ids = std::vector<ConnectionId>{target};
    c.excludeIds = {nodes[2]->conns.back()->id()};
    c.none = {{"nosuch", "tag"}};
    Selector sel = Selector::where(std::move(c));
    REQUIRE(sel.kind() == Selector::Kind::Where);
    const auto received = nodes[1]->cluster->stats().commandsReceived;
    auto sent = nodes[0]->cluster->send(sel, Message::text("where")).get();
    CHECK(sent.value == (nodes[2]->conns.size() > 1 ? 1u : 0u));
    CHECK(nodes[1]->cluster->stats().commandsReceived == received);
}
