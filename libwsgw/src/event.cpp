#include <wsgw/event.h>

#include <nlohmann/json.hpp>

#include <chrono>

namespace wsgw {

namespace {

bool isVarName(std::string_view s) noexcept {
    if (s.empty()) return false;
    for (char c : s)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
    return true;
}

bool parseIndex(std::string_view s, std::size_t &out) noexcept {
    if (s.empty() || s.size() > 9) return false;
    std::size_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
        v = v * 10 + static_cast<std::size_t>(c - '0');
    }
    out = v;
    return true;
}

} // namespace

std::string_view actionName(EventAction action) noexcept {
    switch (action) {
    case EventAction::Open:
        return "open";
    case EventAction::Close:
        return "close";
    case EventAction::Message:
        return "message";
    }
    return "unknown";
}

std::optional<JsonExtractor> JsonExtractor::create(const std::vector<std::pair<std::string, std::string>> &vars,
                                                   std::string *error) {
    auto fail = [&](std::string msg) -> std::optional<JsonExtractor> {
        if (error) *error = std::move(msg);
        return std::nullopt;
    };
    JsonExtractor out;
    for (const auto &[name, path] : vars) {
        if (!isVarName(name)) return fail("invalid variable name '" + name + "': use letters, digits and '_'");
        Var var{name, {}};
        // "a.b[0].c" and "a.b.0.c" are the same path: brackets are another way to write ".N".
        std::string_view p = path;
        std::size_t i = 0;
        bool expectSegment = true;
        while (i < p.size()) {
            if (p[i] == '[') {
                std::size_t close = p.find(']', i);
                std::size_t index = 0;
                if (close == std::string_view::npos || !parseIndex(p.substr(i + 1, close - i - 1), index))
                    return fail("variable '" + name + "': bad array index in path '" + path + "' at column " +
                                std::to_string(i + 1));
                var.steps.push_back(Step{{}, index});
                i = close + 1;
                expectSegment = false;
                continue;
            }
            if (p[i] == '.') {
                if (expectSegment)
                    return fail("variable '" + name + "': empty segment in path '" + path + "' at column " +
                                std::to_string(i + 1));
                expectSegment = true;
                ++i;
                continue;
            }
            if (!expectSegment)
                return fail("variable '" + name + "': expected '.' or '[' in path '" + path + "' at column " +
                            std::to_string(i + 1));
            std::size_t end = p.find_first_of(".[", i);
            if (end == std::string_view::npos) end = p.size();
            var.steps.push_back(Step{std::string(p.substr(i, end - i)), 0});
            i = end;
            expectSegment = false;
        }
        if (var.steps.empty() || expectSegment)
            return fail("variable '" + name + "': path '" + path + "' is empty or ends with '.'");
        out.vars_.push_back(std::move(var));
    }
    return out;
}

std::vector<std::string> JsonExtractor::names() const {
    std::vector<std::string> out;
    for (const auto &v : vars_) out.push_back(v.name);
    return out;
}

Vars JsonExtractor::extract(std::string_view body) const {
    Vars out;
    if (vars_.empty()) return out;
    auto doc = nlohmann::json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded() || !doc.is_structured()) return out;
    for (const Var &var : vars_) {
        const nlohmann::json *node = &doc;
        for (const Step &step : var.steps) {
            if (!step.key.empty()) {
                // A numeric segment ("items.0") indexes an array; on an object it is a member name.
                std::size_t index = 0;
                if (node->is_array() && parseIndex(step.key, index)) {
                    node = index < node->size() ? &(*node)[index] : nullptr;
                } else if (node->is_object()) {
                    auto it = node->find(step.key);
                    node = it == node->end() ? nullptr : &*it;
                } else {
                    node = nullptr;
                }
            } else {
                node = node->is_array() && step.index < node->size() ? &(*node)[step.index] : nullptr;
            }
            if (!node) break;
        }
        if (!node || node->is_null()) continue;
        if (node->is_string()) {
            out.emplace(var.name, node->get_ref<const std::string &>());
        } else {
            out.emplace(var.name, node->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
        }
    }
    return out;
}

const std::string *Event::findTag(std::string_view key) const noexcept {
    if (auto it = tags.find(key); it != tags.end()) return &it->second;
    if (auto it = context.find(key); it != context.end()) return &it->second;
    return nullptr;
}

std::size_t Event::footprint() const noexcept {
    std::size_t n = sizeof(Event) + endpoint.capacity() + message.capacity() + reason.capacity() + lostNode.capacity();
    for (const auto &[k, v] : tags) n += 64 + k.size() + v.size();
    for (const auto &[k, v] : context) n += 64 + k.size() + v.size();
    for (const auto &[k, v] : vars) n += 64 + k.size() + v.size();
    return n;
}

Event Event::make(EventAction action, ConnectionId connection, std::string_view endpoint, const TagLookup &tagOf,
                  const EventSpec &spec) {
    Event e;
    e.action = action;
    e.connection = connection;
    e.endpoint = std::string(endpoint);
    e.timeMs = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
    for (const std::string &name : spec.includeTags)
        if (std::string_view v = tagOf(name); !v.empty()) e.tags.emplace(name, v);
    for (const std::string &name : spec.contextTags)
        if (std::string_view v = tagOf(name); !v.empty() && !e.tags.count(name)) e.context.emplace(name, v);
    return e;
}

Event Event::make(EventAction action, ConnectionId connection, std::string_view endpoint, const Tags &tags,
                  const EventSpec &spec) {
    return make(
        action, connection, endpoint,
        [&](std::string_view key) {
            auto it = tags.find(key);
            return it == tags.end() ? std::string_view() : std::string_view(it->second);
        },
        spec);
}

std::string base64Encode(std::string_view bytes) {
    static constexpr char table[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    std::size_t i = 0;
    auto byte = [&](std::size_t k) { return static_cast<unsigned char>(bytes[k]); };
    for (; i + 3 <= bytes.size(); i += 3) {
        unsigned v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
        out += table[v >> 18 & 63];
        out += table[v >> 12 & 63];
        out += table[v >> 6 & 63];
        out += table[v & 63];
    }
    if (std::size_t rest = bytes.size() - i) {
        unsigned v = byte(i) << 16 | (rest == 2 ? byte(i + 1) << 8 : 0);
        out += table[v >> 18 & 63];
        out += table[v >> 12 & 63];
        out += rest == 2 ? table[v >> 6 & 63] : '=';
        out += '=';
    }
    return out;
}

std::string toJson(const Event &event, std::string_view node) {
    nlohmann::ordered_json j;
    j["event_id"] = event.id;
    j["node"] = node;
    j["connection"] = event.connection.toString();
    j["action"] = actionName(event.action);
    j["endpoint"] = event.endpoint;
    j["time"] = event.timeMs;
    j["tags"] = encodeForm(event.tags);
    if (!event.reason.empty()) j["reason"] = event.reason;
    if (!event.lostNode.empty()) j["lost_node"] = event.lostNode;
    if (event.action == EventAction::Message) {
        if (event.type == Opcode::Text) {
            j["type"] = "text";
            j["message"] = event.message;
        } else {
            j["type"] = "binary";
            j["message"] = base64Encode(event.message);
            j["encoding"] = "base64";
        }
    }
    // Text payloads are UTF-8 checked by the transport; replace rather than throw if one is not.
    return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

} // namespace wsgw
