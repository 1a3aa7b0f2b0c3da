#include "cluster_wire.h"

#include <nlohmann/json.hpp>

namespace wsgw::cluster_wire {

namespace {

using json = nlohmann::json;

// Every string goes as MessagePack bin: tags and payloads are bytes, not necessarily UTF-8.
json bin(std::string_view s) { return json::binary(json::binary_t::container_type(s.begin(), s.end())); }

std::string text(const json &j) {
    const auto &b = j.get_binary();
    return std::string(b.begin(), b.end());
}

json pairs(const TagList &list) {
    json a = json::array();
    for (const auto &[k, v] : list) a.push_back(json::array({bin(k), bin(v)}));
    return a;
}

json pairs(const Tags &tags) {
    json a = json::array();
    for (const auto &[k, v] : tags) a.push_back(json::array({bin(k), bin(v)}));
    return a;
}

template <class Out> void readPairs(const json &a, Out &out) {
    for (const json &p : a) {
        if constexpr (std::is_same_v<Out, TagList>)
            out.emplace_back(text(p.at(0)), text(p.at(1)));
        else
            out.emplace(text(p.at(0)), text(p.at(1)));
    }
}

} // namespace

std::string encode(const Request &r) {
    json j = {{"k", "q"},
              {"t", r.tag},
              {"f", bin(r.from)},
              {"op", static_cast<int>(r.op)},
              {"sel", bin(r.selector)},
              {"ms", r.remainingMs}};
    if (r.hasMessage) {
        j["bin"] = r.opcode == Opcode::Binary;
        j["body"] = bin(r.payload);
    }
    if (r.op == Op::SetTags) {
        j["ch"] = pairs(r.changes);
        j["max"] = r.maxTags;
    }
    if (r.op == Op::Close) {
        j["code"] = r.code;
        j["why"] = bin(r.reason);
    }
    if (r.op == Op::Status && !r.after.empty()) j["after"] = bin(r.after);
    if (r.op == Op::Status && r.limit > 0) j["lim"] = r.limit;
    std::vector<std::uint8_t> out = json::to_msgpack(j);
    return std::string(out.begin(), out.end());
}

std::string encode(const Reply &r) {
    json j = {{"k", "r"}, {"t", r.tag}, {"f", bin(r.from)}, {"st", static_cast<int>(r.status)}, {"n", r.count}};
    if (r.over) j["over"] = r.over;
    if (!r.connections.empty()) {
        json a = json::array();
        for (const ConnectionInfo &c : r.connections)
            a.push_back(json::array({bin(c.id.toString()), bin(c.endpoint), bin(c.remoteAddress), pairs(c.tags), c.shard}));
        j["conns"] = std::move(a);
    }
    if (!r.tree.empty()) {
        json a = json::array();
        for (const auto &[key, values] : r.tree) {
            json vs = json::array();
            for (const auto &[value, count] : values) vs.push_back(json::array({bin(value), count}));
            a.push_back(json::array({bin(key), std::move(vs)}));
        }
        j["tree"] = std::move(a);
    }
    std::vector<std::uint8_t> out = json::to_msgpack(j);
    return std::string(out.begin(), out.end());
}

std::optional<std::variant<Request, Reply>> decode(std::string_view bytes, std::string *error) {
    try {
        json j = json::from_msgpack(bytes.begin(), bytes.end());
        const std::string kind = j.at("k").get<std::string>();
        if (kind == "q") {
            Request r;
            r.tag = j.at("t").get<std::uint64_t>();
            r.from = text(j.at("f"));
            const int op = j.at("op").get<int>();
            if (op < 1 || op > static_cast<int>(Op::Count)) throw std::runtime_error("unknown command " + std::to_string(op));
            r.op = static_cast<Op>(op);
            r.selector = text(j.at("sel"));
            r.remainingMs = j.at("ms").get<std::int64_t>();
            if (j.contains("body")) {
                r.hasMessage = true;
                r.opcode = j.at("bin").get<bool>() ? Opcode::Binary : Opcode::Text;
                r.payload = text(j.at("body"));
            }
            if (r.op == Op::Send && !r.hasMessage) throw std::runtime_error("a send without a message");
            if (r.op == Op::SetTags) {
                readPairs(j.at("ch"), r.changes);
                r.maxTags = j.at("max").get<std::uint64_t>();
            }
            if (r.op == Op::Close) {
                r.code = j.at("code").get<std::uint16_t>();
                r.reason = text(j.at("why"));
            }
            if (j.contains("after")) r.after = text(j.at("after"));
            if (j.contains("lim")) r.limit = j.at("lim").get<std::uint64_t>();
            return r;
        }
        if (kind == "r") {
            Reply r;
            r.tag = j.at("t").get<std::uint64_t>();
            r.from = text(j.at("f"));
            const int st = j.at("st").get<int>();
            if (st < 0 || st > static_cast<int>(CommandStatus::TimedOut)) throw std::runtime_error("unknown status");
            r.status = static_cast<CommandStatus>(st);
            r.count = j.at("n").get<std::uint64_t>();
            if (j.contains("over")) r.over = j.at("over").get<std::uint64_t>();
            if (j.contains("conns")) {
                for (const json &c : j.at("conns")) {
                    ConnectionInfo info;
                    auto id = ConnectionId::parse(text(c.at(0)));
                    if (!id) throw std::runtime_error("a connection id that is not a UUID");
                    info.id = *id;
                    info.endpoint = text(c.at(1));
                    info.remoteAddress = text(c.at(2));
                    readPairs(c.at(3), info.tags);
                    info.shard = c.at(4).get<std::size_t>();
                    r.connections.push_back(std::move(info));
                }
            }
            if (j.contains("tree")) {
                for (const json &k : j.at("tree")) {
                    auto &values = r.tree[text(k.at(0))];
                    for (const json &v : k.at(1)) values[text(v.at(0))] += v.at(1).get<std::size_t>();
                }
            }
            return r;
        }
        throw std::runtime_error("unknown kind '" + kind + "'");
    } catch (const std::exception &e) {
        if (error) *error = std::string("not a cluster message: ") + e.what();
        return std::nullopt;
    }
}

} // namespace wsgw::cluster_wire
