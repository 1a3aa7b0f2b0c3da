// The cluster: a command on this node's hub and, through the transport, on every other live
// node's; the answers summed; the missing nodes named; a lost node's connections closed.
#include "cluster_wire.h"

#include <wsgw/cluster.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

namespace wsgw {

ClusterTransport::~ClusterTransport() = default;
ClusterTransport::Receiver::~Receiver() = default;

std::uint16_t clusterIdPrefix(std::string_view node) noexcept {
    // FNV-1a, folded to 16 bits: stable across builds and machines, which std::hash is not.
    std::uint32_t h = 2166136261u;
    for (unsigned char c : node) h = (h ^ c) * 16777619u;
    return static_cast<std::uint16_t>((h >> 16) ^ (h & 0xFFFF));
}

namespace {

using Clock = std::chrono::steady_clock;
namespace cw = cluster_wire;

std::int64_t wallMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

CommandStatus worse(CommandStatus a, CommandStatus b) {
    auto rank = [](CommandStatus s) {
        switch (s) {
        case CommandStatus::Ok: return 0;
        case CommandStatus::TimedOut: return 1;
        case CommandStatus::Failed: return 2;
        case CommandStatus::Busy: return 3;
        case CommandStatus::Stopped: return 4;
        }
        return 0;
    };
    return rank(b) > rank(a) ? b : a;
}

// One command in flight: what this node and each other node did, until all answered or the
// command timeout. Guarded by Impl::mu.
struct Pending {
    cw::Op op = cw::Op::Send;
    std::uint64_t tag = 0;
    Clock::time_point started;
    Clock::time_point deadline;
    std::set<std::string> waiting; // posted, not answered
    std::vector<std::string> answered, missing;
    bool localDone = false;
    bool finished = false;
    CommandStatus status = CommandStatus::Ok;
    std::size_t count = 0;
    TagChangeCount tags;
    std::vector<ClusterConnectionInfo> connections;
    TagTree tree;
    std::size_t limit = 0; // Status: a page of at most this many
    std::function<void(Pending &)> finish; // builds the typed answer and calls `done`
};

} // namespace

struct Cluster::Impl final : ClusterTransport::Receiver {
    Impl(Hub &h, std::unique_ptr<ClusterTransport> t, ClusterOptions o)
        : hub(h), transport(std::move(t)), options(std::move(o)), prefix(clusterIdPrefix(options.node)),
          startedMs(wallMs()) {
        for (std::size_t i = 0; i <= std::size(ClusterStats::kRoundTripBuckets); ++i) roundTrip.push_back(0);
    }

    Hub &hub;
    std::unique_ptr<ClusterTransport> transport;
    const ClusterOptions options;
    const std::uint16_t prefix;
    const std::int64_t startedMs;

    std::mutex dispatchMu; // one command at a time into the hub and the transport: one order for both

    mutable std::mutex mu;
    std::unordered_map<std::uint64_t, std::shared_ptr<Pending>> pending;
    std::multimap<Clock::time_point, std::uint64_t> deadlines;
    std::uint64_t nextTag = 1;
    std::vector<NodeInfo> live; // as the transport last said, without this node
    bool stopped = false;
    std::vector<std::uint64_t> roundTrip;
    double roundTripSum = 0;

    std::condition_variable timerWake;
    std::thread timer;
    std::atomic<bool> started{false};
    std::atomic<bool> up{false};
    std::atomic<std::size_t> localConnections{0};
    std::atomic<std::uint64_t> sent{0}, receivedCount{0}, timedOut{0}, unreachable{0}, lost{0}, lostConnections{0};

    // --- entering a command ---------------------------------------------------------------------

    // The other live nodes that may hold a selected connection.
    std::vector<std::string> targets(const Selector &sel) {
        std::vector<std::string> out;
        std::lock_guard lock(mu);
        for (const NodeInfo &n : live) {
            if (n.id == options.node) continue;
            // Only the ids' nodes, when the selector is (or is narrowed by) a list of ids.
            const std::vector<ConnectionId> *ids = sel.kind() == Selector::Kind::Ids ? &sel.ids()
                                                   : sel.clauses() && sel.clauses()->ids ? &*sel.clauses()->ids
                                                                                         : nullptr;
            if (options.idsCarryNode && ids) {
                const std::uint16_t p = clusterIdPrefix(n.id);
                if (std::none_of(ids->begin(), ids->end(), [&](const ConnectionId &id) { return id.prefix() == p; }))
                    continue;
            }
            out.push_back(n.id);
        }
        return out;
    }

    // Registers `p`, posts `request` to the other nodes, then runs `local` (which must end in
    // localAnswer()). Under dispatchMu, so that two commands reach the hub and every other node
    // in one order.
    void dispatch(std::shared_ptr<Pending> p, cw::Request request, const Selector &sel,
                  const std::function<void(Deadline)> &local) noexcept {
        try {
            std::lock_guard order(dispatchMu);
            const auto now = Clock::now();
            p->started = now;
            p->deadline = now + options.commandTimeout;
            p->op = request.op;
            const std::vector<std::string> nodes = stopped_() ? std::vector<std::string>() : targets(sel);
            {
                std::lock_guard lock(mu);
                p->tag = request.tag = nextTag++;
                pending.emplace(p->tag, p);
                deadlines.emplace(p->deadline, p->tag);
                p->waiting.insert(nodes.begin(), nodes.end());
            }
            timerWake.notify_one();
            request.from = options.node;
            request.remainingMs = options.commandTimeout.count();
            request.selector = sel.toString();
            const std::string bytes = nodes.empty() ? std::string() : cw::encode(request);
            for (const std::string &n : nodes) {
                if (transport->post(n, p->tag, bytes)) {
                    sent.fetch_add(1, std::memory_order_relaxed);
                } else {
                    unreachable.fetch_add(1, std::memory_order_relaxed);
                    std::lock_guard lock(mu);
                    p->waiting.erase(n);
                    p->missing.push_back(n);
                }
            }
            local(p->deadline);
        } catch (...) {
            // Out of memory on the way: answer with what is known, never leave `done` uncalled.
            std::lock_guard lock(mu);
            if (!p->localDone) {
                p->localDone = true;
                p->status = worse(p->status, CommandStatus::Failed);
            }
        }
        maybeFinish(p);
    }

    bool stopped_() {
        std::lock_guard lock(mu);
        return stopped;
    }

    template <class T> void localAnswer(const std::shared_ptr<Pending> &p, const CommandResult<T> &r) noexcept {
        {
            std::lock_guard lock(mu);
            if (p->localDone) return;
            p->localDone = true;
            p->status = worse(p->status, r.status);
            if constexpr (std::is_same_v<T, std::size_t>) p->count += r.value;
            if constexpr (std::is_same_v<T, TagChangeCount>) {
                p->tags.changed += r.value.changed;
                p->tags.over += r.value.over;
            }
            if constexpr (std::is_same_v<T, std::vector<ConnectionInfo>>)
                for (const ConnectionInfo &c : r.value) p->connections.push_back({options.node, c});
            if constexpr (std::is_same_v<T, TagTree>)
                for (const auto &[k, vs] : r.value)
                    for (const auto &[v, n] : vs) p->tree[k][v] += n;
        }
        maybeFinish(p);
    }

    // Calls the answer once: when this node and every posted node answered, or (timer) past the
    // deadline, once this node answered.
    void maybeFinish(const std::shared_ptr<Pending> &p, bool expired = false) noexcept {
        {
            std::lock_guard lock(mu);
            if (p->finished || !p->localDone) return;
            if (!p->waiting.empty() && !expired && !stopped && Clock::now() < p->deadline) return;
            for (const std::string &n : p->waiting) {
                p->missing.push_back(n);
                timedOut.fetch_add(1, std::memory_order_relaxed);
            }
            p->waiting.clear();
            p->finished = true;
            pending.erase(p->tag);
        }
        std::sort(p->missing.begin(), p->missing.end());
        std::sort(p->answered.begin(), p->answered.end());
        try {
            p->finish(*p);
        } catch (...) {
        }
    }

    template <class T, class Make>
    std::shared_ptr<Pending> makePending(Callback<T> done, Make make) {
        auto p = std::make_shared<Pending>();
        p->finish = [done = std::move(done), make](Pending &q) {
            ClusterResult<T> r;
            r.status = q.status;
            r.value = make(q);
            r.answered = std::move(q.answered);
            r.missing = std::move(q.missing);
            if (done) done(std::move(r));
        };
        return p;
    }

    // --- the transport's side -------------------------------------------------------------------

    void received(std::string message) noexcept override {
        std::string error;
        auto m = cw::decode(message, &error);
        if (!m) return; // not ours: nothing to answer
        if (auto *reply = std::get_if<cw::Reply>(&*m)) return answerFrom(std::move(*reply));
        run(std::move(std::get<cw::Request>(*m)));
    }

    void answerFrom(cw::Reply r) noexcept {
        std::shared_ptr<Pending> p;
        {
            std::lock_guard lock(mu);
            auto it = pending.find(r.tag);
            if (it == pending.end()) return; // too late: it was answered without this node
            p = it->second;
            if (!p->waiting.erase(r.from)) return;
            p->answered.push_back(r.from);
            const double seconds = std::chrono::duration<double>(Clock::now() - p->started).count();
            std::size_t b = 0;
            while (b < std::size(ClusterStats::kRoundTripBuckets) && seconds > ClusterStats::kRoundTripBuckets[b]) ++b;
            ++roundTrip[b];
            roundTripSum += seconds;
            // A node's part counts whatever its status: it says what it did. A node that could not
            // run it all is named missing too, so that the answer never claims more than was done.
            if (r.status != CommandStatus::Ok) p->missing.push_back(r.from);
            try {
                switch (p->op) {
                case cw::Op::Send:
                case cw::Op::Close:
                case cw::Op::Count:
                    p->count += r.count;
                    break;
                case cw::Op::SetTags:
                    p->tags.changed += r.count;
                    p->tags.over += r.over;
                    break;
                case cw::Op::Status:
                    for (ConnectionInfo &c : r.connections) p->connections.push_back({r.from, std::move(c)});
                    break;
                case cw::Op::Tree:
                    for (const auto &[k, vs] : r.tree)
                        for (const auto &[v, n] : vs) p->tree[k][v] += n;
                    break;
                }
            } catch (...) {
                p->missing.push_back(r.from);
            }
        }
        maybeFinish(p);
    }

    // A command from another node: run on this hub, answer with what it did.
    void run(cw::Request q) noexcept {
        receivedCount.fetch_add(1, std::memory_order_relaxed);
        try {
            const Deadline deadline = Clock::now() + std::chrono::milliseconds(std::max<std::int64_t>(q.remainingMs, 0));
            auto answer = [this, tag = q.tag, to = q.from](CommandStatus status, std::size_t count, std::size_t over,
                                                          std::vector<ConnectionInfo> conns, TagTree tree) {
                cw::Reply r;
                r.tag = tag;
                r.from = options.node;
                r.status = status;
                r.count = count;
                r.over = over;
                r.connections = std::move(conns);
                r.tree = std::move(tree);
                if (!transport->post(to, 0, cw::encode(r))) unreachable.fetch_add(1, std::memory_order_relaxed);
            };
            auto sel = Selector::fromString(q.selector);
            if (!sel) return answer(CommandStatus::Failed, 0, 0, {}, {});
            MessagePtr msg;
            if (q.hasMessage) msg = Message::create(q.opcode, q.payload, options.messageHeadroom);
            auto counted = [answer](CountResult r) { answer(r.status, r.value, 0, {}, {}); };
            switch (q.op) {
            case cw::Op::Send:
                hub.send(std::move(*sel), std::move(msg), counted, deadline);
                break;
            case cw::Op::Close:
                hub.close(std::move(*sel), q.code, std::move(q.reason), std::move(msg), counted, deadline);
                break;
            case cw::Op::SetTags:
                hub.setTags(std::move(*sel), std::move(q.changes), static_cast<std::size_t>(q.maxTags),
                            [answer](SetTagsResult r) { answer(r.status, r.value.changed, r.value.over, {}, {}); },
                            deadline);
                break;
            case cw::Op::Status: {
                StatusPage page;
                page.limit = static_cast<std::size_t>(q.limit);
                if (!q.after.empty()) {
                    page.after = ConnectionId::parse(q.after);
                    if (!page.after) return answer(CommandStatus::Failed, 0, 0, {}, {});
                }
                hub.status(std::move(*sel), page,
                           [answer](StatusResult r) { answer(r.status, 0, 0, std::move(r.value), {}); }, deadline);
                break;
            }
            case cw::Op::Count:
                hub.count(std::move(*sel), counted, deadline);
                break;
            case cw::Op::Tree:
                hub.tree([answer](TreeResult r) { answer(r.status, 0, 0, {}, std::move(r.value)); }, deadline);
                break;
            }
        } catch (...) {
            // out of memory: the sender counts this node missing when its timeout comes
        }
    }

    void undeliverable(const std::string &node, std::uint64_t tag) noexcept override {
        if (tag == 0) return; // an answer: its command's node counts us missing
        std::shared_ptr<Pending> p;
        {
            std::lock_guard lock(mu);
            auto it = pending.find(tag);
            if (it == pending.end()) return;
            p = it->second;
            if (!p->waiting.erase(node)) return;
            p->missing.push_back(node);
        }
        unreachable.fetch_add(1, std::memory_order_relaxed);
        maybeFinish(p);
    }

    NodeInfo describe() noexcept override {
        NodeInfo n;
        try {
            n.id = options.node;
            n.address = options.address;
        } catch (...) {
        }
        n.connections = localConnections.load();
        n.heartbeatMs = wallMs();
        n.startedMs = startedMs;
        return n;
    }

    void membership(std::vector<NodeInfo> nodes) noexcept override {
        bool changed = false;
        {
            std::lock_guard lock(mu);
            std::set<std::string> before, after;
            for (const NodeInfo &n : live) before.insert(n.id);
            for (const NodeInfo &n : nodes) after.insert(n.id);
            changed = before != after;
            live = nodes;
        }
        if (changed && options.onMembership) {
            try {
                options.onMembership(nodes);
            } catch (...) {
            }
        }
    }

    void nodeLost(const std::string &node, std::vector<LostConnection> connections) noexcept override {
        static const EventSpec kNoTags;
        std::size_t n = 0;
        for (LostConnection &c : connections) {
            try {
                const EventSpec *spec = options.eventSpec ? options.eventSpec(c.endpoint) : nullptr;
                Event e = Event::make(EventAction::Close, c.id, c.endpoint, c.tags, spec ? *spec : kNoTags);
                e.reason = "node_lost";
                e.lostNode = node;
                hub.events().publish(std::move(e));
                ++n;
            } catch (...) {
            }
        }
        lost.fetch_add(1, std::memory_order_relaxed);
        lostConnections.fetch_add(n, std::memory_order_relaxed);
        if (options.onNodeLost) {
            try {
                options.onNodeLost(node, n);
            } catch (...) {
            }
        }
    }

    void stateChanged(bool isUp, const std::string &why) noexcept override {
        up.store(isUp);
        if (options.onStateChange) {
            try {
                options.onStateChange(isUp, why);
            } catch (...) {
            }
        }
    }

    // --- the timer: deadlines, and the connection count the heartbeats carry --------------------

    void timerLoop() {
        auto nextCount = Clock::now();
        std::unique_lock lock(mu);
        while (!stopped) {
            const auto now = Clock::now();
            std::vector<std::shared_ptr<Pending>> expired;
            while (!deadlines.empty() && deadlines.begin()->first <= now) {
                auto it = pending.find(deadlines.begin()->second);
                if (it != pending.end()) expired.push_back(it->second);
                deadlines.erase(deadlines.begin());
            }
            if (!expired.empty() || now >= nextCount) {
                lock.unlock();
                for (auto &p : expired) maybeFinish(p, true);
                if (now >= nextCount) {
                    nextCount = now + std::chrono::milliseconds(250);
                    hub.forEachShard([](Shard &s) { return s.registry().size(); },
                                     [this](CountResult r) {
                                         if (r.ok()) localConnections.store(r.value);
                                     },
                                     Clock::now() + std::chrono::milliseconds(250));
                }
                lock.lock();
                continue;
            }
            auto until = nextCount;
            if (!deadlines.empty()) until = std::min(until, deadlines.begin()->first);
            timerWake.wait_until(lock, until);
        }
    }
};

Cluster::Cluster(Hub &hub, std::unique_ptr<ClusterTransport> transport, ClusterOptions options)
    : impl_(std::make_unique<Impl>(hub, std::move(transport), std::move(options))) {}

Cluster::~Cluster() { stop(); }

bool Cluster::start(std::string *error) noexcept {
    Impl &d = *impl_;
    if (d.started.exchange(true)) return true;
    try {
        d.timer = std::thread([&d] { d.timerLoop(); });
    } catch (const std::exception &e) {
        if (error) *error = std::string("cannot start the cluster's timer thread: ") + e.what();
        return false;
    }
    if (!d.transport->start(d.options.node, d, error)) {
        {
            std::lock_guard lock(d.mu);
            d.stopped = true;
        }
        d.timerWake.notify_one();
        d.timer.join();
        return false;
    }
    return true;
}

void Cluster::stop() noexcept {
    Impl &d = *impl_;
    std::vector<std::shared_ptr<Pending>> left;
    {
        std::lock_guard lock(d.mu);
        if (d.stopped && !d.timer.joinable()) return;
        d.stopped = true;
        for (auto &[tag, p] : d.pending) left.push_back(p);
    }
    d.timerWake.notify_one();
    if (d.timer.joinable()) d.timer.join();
    d.transport->stop();
    for (auto &p : left) d.maybeFinish(p, true);
}

void Cluster::send(Selector sel, MessagePtr msg, Callback<std::size_t> done) noexcept {
    Impl &d = *impl_;
    std::shared_ptr<Pending> p;
    cw::Request q;
    try {
        p = d.makePending<std::size_t>(std::move(done), [](Pending &x) { return x.count; });
        q.op = cw::Op::Send;
        q.hasMessage = true;
        q.opcode = msg ? msg->opcode() : Opcode::Text;
        q.payload = msg ? std::string(msg->payload()) : std::string();
    } catch (...) {
        return;
    }
    d.dispatch(p, std::move(q), sel, [&](Deadline deadline) {
        d.hub.send(sel, msg, [&d, p](CountResult r) { d.localAnswer(p, r); }, deadline);
    });
}

void Cluster::setTags(Selector sel, TagList changes, std::size_t maxTags, Callback<TagChangeCount> done) noexcept {
    Impl &d = *impl_;
    std::shared_ptr<Pending> p;
    cw::Request q;
    try {
        p = d.makePending<TagChangeCount>(std::move(done), [](Pending &x) { return x.tags; });
        q.op = cw::Op::SetTags;
        q.changes = changes;
        q.maxTags = maxTags;
    } catch (...) {
        return;
    }
    d.dispatch(p, std::move(q), sel, [&](Deadline deadline) {
        d.hub.setTags(sel, std::move(changes), maxTags, [&d, p](SetTagsResult r) { d.localAnswer(p, r); }, deadline);
    });
}

void Cluster::close(Selector sel, std::uint16_t code, std::string reason, MessagePtr last,
                    Callback<std::size_t> done) noexcept {
    Impl &d = *impl_;
    std::shared_ptr<Pending> p;
    cw::Request q;
    try {
        p = d.makePending<std::size_t>(std::move(done), [](Pending &x) { return x.count; });
        q.op = cw::Op::Close;
        q.code = code;
        q.reason = reason;
        if (last) {
            q.hasMessage = true;
            q.opcode = last->opcode();
            q.payload = std::string(last->payload());
        }
    } catch (...) {
        return;
    }
    d.dispatch(p, std::move(q), sel, [&](Deadline deadline) {
        d.hub.close(sel, code, std::move(reason), std::move(last), [&d, p](CountResult r) { d.localAnswer(p, r); },
                    deadline);
    });
}

void Cluster::status(Selector sel, Callback<std::vector<ClusterConnectionInfo>> done) noexcept {
    status(std::move(sel), StatusPage{}, std::move(done));
}

void Cluster::status(Selector sel, StatusPage page, Callback<std::vector<ClusterConnectionInfo>> done) noexcept {
    Impl &d = *impl_;
    std::shared_ptr<Pending> p;
    cw::Request q;
    try {
        p = d.makePending<std::vector<ClusterConnectionInfo>>(std::move(done), [](Pending &x) {
            std::sort(x.connections.begin(), x.connections.end(),
                      [](const ClusterConnectionInfo &a, const ClusterConnectionInfo &b) { return a.info.id < b.info.id; });
            // Each node sent its first `limit`; the page is the first `limit` of them all.
            if (x.limit > 0 && x.connections.size() > x.limit) x.connections.resize(x.limit);
            return std::move(x.connections);
        });
        p->limit = page.limit;
        q.op = cw::Op::Status;
        if (page.after) q.after = page.after->toString();
        q.limit = page.limit;
    } catch (...) {
        return;
    }
    d.dispatch(p, std::move(q), sel, [&](Deadline deadline) {
        d.hub.status(sel, page, [&d, p](StatusResult r) { d.localAnswer(p, r); }, deadline);
    });
}

void Cluster::count(Selector sel, Callback<std::size_t> done) noexcept {
    Impl &d = *impl_;
    std::shared_ptr<Pending> p;
    cw::Request q;
    try {
        p = d.makePending<std::size_t>(std::move(done), [](Pending &x) { return x.count; });
        q.op = cw::Op::Count;
    } catch (...) {
        return;
    }
    d.dispatch(p, std::move(q), sel, [&](Deadline deadline) {
        d.hub.count(sel, [&d, p](CountResult r) { d.localAnswer(p, r); }, deadline);
    });
}

void Cluster::tree(Callback<TagTree> done) noexcept {
    Impl &d = *impl_;
    std::shared_ptr<Pending> p;
    cw::Request q;
    try {
        p = d.makePending<TagTree>(std::move(done), [](Pending &x) { return std::move(x.tree); });
        q.op = cw::Op::Tree;
    } catch (...) {
        return;
    }
    d.dispatch(p, std::move(q), Selector::all(), [&](Deadline deadline) {
        d.hub.tree([&d, p](TreeResult r) { d.localAnswer(p, r); }, deadline);
    });
}

namespace {
template <class T> std::pair<std::function<void(ClusterResult<T>)>, std::future<ClusterResult<T>>> promised() {
    auto promise = std::make_shared<std::promise<ClusterResult<T>>>();
    auto future = promise->get_future();
    return {[promise](ClusterResult<T> r) { promise->set_value(std::move(r)); }, std::move(future)};
}
} // namespace

std::future<ClusterCount> Cluster::send(Selector sel, MessagePtr msg) noexcept {
    auto [cb, f] = promised<std::size_t>();
    send(std::move(sel), std::move(msg), std::move(cb));
    return std::move(f);
}
std::future<ClusterSetTags> Cluster::setTags(Selector sel, TagList changes, std::size_t maxTags) noexcept {
    auto [cb, f] = promised<TagChangeCount>();
    setTags(std::move(sel), std::move(changes), maxTags, std::move(cb));
    return std::move(f);
}
std::future<ClusterCount> Cluster::close(Selector sel, std::uint16_t code, std::string reason, MessagePtr last) noexcept {
    auto [cb, f] = promised<std::size_t>();
    close(std::move(sel), code, std::move(reason), std::move(last), std::move(cb));
    return std::move(f);
}
std::future<ClusterStatus> Cluster::status(Selector sel) noexcept {
    auto [cb, f] = promised<std::vector<ClusterConnectionInfo>>();
    status(std::move(sel), std::move(cb));
    return std::move(f);
}
std::future<ClusterStatus> Cluster::status(Selector sel, StatusPage page) noexcept {
    auto [cb, f] = promised<std::vector<ClusterConnectionInfo>>();
    status(std::move(sel), page, std::move(cb));
    return std::move(f);
}
std::future<ClusterCount> Cluster::count(Selector sel) noexcept {
    auto [cb, f] = promised<std::size_t>();
    count(std::move(sel), std::move(cb));
    return std::move(f);
}
std::future<ClusterTree> Cluster::tree() noexcept {
    auto [cb, f] = promised<TagTree>();
    tree(std::move(cb));
    return std::move(f);
}

std::vector<NodeInfo> Cluster::nodes() const {
    std::vector<NodeInfo> out{impl_->describe()};
    std::lock_guard lock(impl_->mu);
    for (const NodeInfo &n : impl_->live)
        if (n.id != impl_->options.node) out.push_back(n);
    std::sort(out.begin() + 1, out.end(), [](const NodeInfo &a, const NodeInfo &b) { return a.id < b.id; });
    return out;
}

ClusterStats Cluster::stats() const {
    const Impl &d = *impl_;
    ClusterStats s;
    s.connected = d.up.load();
    s.nodes = nodes().size();
    s.commandsSent = d.sent.load();
    s.commandsReceived = d.receivedCount.load();
    s.commandsTimedOut = d.timedOut.load();
    s.commandsUnreachable = d.unreachable.load();
    s.nodesLost = d.lost.load();
    s.lostConnections = d.lostConnections.load();
    std::lock_guard lock(d.mu);
    std::uint64_t cumulative = 0;
    for (std::uint64_t n : d.roundTrip) s.roundTripCounts.push_back(cumulative += n);
    s.roundTripSum = d.roundTripSum;
    return s;
}

const std::string &Cluster::node() const noexcept { return impl_->options.node; }
std::chrono::milliseconds Cluster::commandTimeout() const noexcept { return impl_->options.commandTimeout; }

} // namespace wsgw
