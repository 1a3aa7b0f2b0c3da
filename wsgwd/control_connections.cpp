#include "control_connections.h"

namespace wsgw::daemon {

namespace {

constexpr std::size_t kKeepCapacity = 16 * 1024; // an emptied buffer larger than this gives its memory back

} // namespace

void ControlConnection::consume(std::size_t n) {
    inStart += n;
    if (inStart == in.size()) {
        dropInput();
    } else if (inStart >= kKeepCapacity && inStart * 2 >= in.size()) {
        in.erase(0, inStart);
        inStart = 0;
    }
}

void ControlConnection::dropInput() {
    if (in.capacity() > kKeepCapacity) std::string().swap(in);
    in.clear();
    inStart = 0;
}

void ControlConnection::dropOutput() {
    if (out.capacity() > kKeepCapacity) std::string().swap(out);
    out.clear();
    outPos = 0;
}

ControlConnection *ConnectionTable::find(std::uint64_t id) {
    auto it = byId_.find(id);
    return it == byId_.end() ? nullptr : it->second.get();
}

ControlConnection &ConnectionTable::add(std::unique_ptr<ControlConnection> c) {
    ControlConnection &ref = *c;
    byId_.emplace(ref.id, std::move(c));
    return ref;
}

void ConnectionTable::enter(ControlConnection &c, ConnPhase phase, Clock::time_point deadline) {
    if (c.listed_) list(c.phase).erase(c.order_);
    c.phase = phase;
    c.since = Clock::now();
    c.deadline = deadline;
    auto &l = list(phase);
    c.order_ = l.insert(l.end(), &c);
    c.listed_ = true;
}

void ConnectionTable::remove(ControlConnection &c) {
    if (c.listed_) list(c.phase).erase(c.order_);
    buffered_ -= c.accounted_;
    byId_.erase(c.id); // destroys c, closing its socket
}

void ConnectionTable::account(ControlConnection &c) {
    std::size_t now = c.footprint();
    buffered_ = buffered_ - c.accounted_ + now;
    c.accounted_ = now;
}

ControlConnection *ConnectionTable::longestWaiting() const {
    for (ConnPhase p : {ConnPhase::Lingering, ConnPhase::Idle})
        if (!list(p).empty()) return list(p).front();
    ControlConnection *victim = nullptr;
    for (ConnPhase p : {ConnPhase::Handshake, ConnPhase::Reading})
        if (!list(p).empty() && (!victim || list(p).front()->since < victim->since)) victim = list(p).front();
    if (!victim && !list(ConnPhase::Writing).empty()) victim = list(ConnPhase::Writing).front();
    return victim;
}

ControlConnection *ConnectionTable::largest() const {
    static const ConnPhase order[][2] = {{ConnPhase::Idle, ConnPhase::Lingering},
                                         {ConnPhase::Reading, ConnPhase::Handshake},
                                         {ConnPhase::Writing, ConnPhase::Writing}};
    for (const auto &phases : order) {
        ControlConnection *victim = nullptr;
        for (ConnPhase p : phases)
            for (ControlConnection *c : list(p))
                if (c->accounted_ > 0 && (!victim || c->accounted_ > victim->accounted_)) victim = c;
        if (victim) return victim;
    }
    return nullptr;
}

std::vector<std::uint64_t> ConnectionTable::expired(Clock::time_point now) const {
    std::vector<std::uint64_t> out;
    for (ConnPhase p : {ConnPhase::Handshake, ConnPhase::Reading, ConnPhase::Writing, ConnPhase::Idle, ConnPhase::Lingering})
        for (const ControlConnection *c : list(p))
            if (c->deadline <= now) out.push_back(c->id);
    return out;
}

std::vector<std::uint64_t> ConnectionTable::ids() const {
    std::vector<std::uint64_t> out;
    out.reserve(byId_.size());
    for (const auto &[id, c] : byId_) out.push_back(id);
    return out;
}

} // namespace wsgw::daemon
