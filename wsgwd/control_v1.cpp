#include "control_v1.h"

#include "jwt.h"

#include <wsgw/tags.h>

#include <nlohmann/json.hpp>

#include <charconv>

namespace wsgw::daemon::v1 {

using nlohmann::json;

bool base64Decode(std::string_view in, std::string &out) {
    while (!in.empty() && in.back() == '=' && in.size() % 4 != 1) in.remove_suffix(1);
    std::string url(in);
    for (char &c : url) {
        if (c == '+') c = '-';
        else if (c == '/') c = '_';
        else if (c == '-' || c == '_') return false; // base64url's, not base64's
    }
    return base64UrlDecode(url, out);
}

namespace {

bool fail(std::string *error, std::string message) {
    if (error) *error = std::move(message);
    return false;
}

// `message` (text) or `message_base64` (binary) into the request; `required` for send.
bool readMessage(const json &j, bool required, CommandRequest &r, std::string *error) {
    const bool text = j.contains("message"), binary = j.contains("message_base64");
    if (text && binary) return fail(error, "give message (a text frame) or message_base64 (a binary frame), not both");
    if (!text && !binary)
        return required ? fail(error, "no message: give message (a text frame) or message_base64 (a binary frame)")
                        : true;
    const json &m = text ? j.at("message") : j.at("message_base64");
    if (!m.is_string()) return fail(error, text ? "message must be a string" : "message_base64 must be a string");
    if (text) {
        r.body = m.get<std::string>();
        r.binary = false;
        return true;
    }
    if (!base64Decode(m.get_ref<const std::string &>(), r.body)) return fail(error, "message_base64 is not base64");
    r.binary = true;
    return true;
}

} // namespace

std::optional<CommandRequest> parseCommand(CommandAction action, std::string_view body, std::string *error) {
    json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
        fail(error, std::string("the body must be a JSON object such as ") +
                        (action == CommandAction::SetTags ? R"({"selector":{"all":{"group":"a"}},"tags":{"admin":"1"}})"
                                                          : R"({"selector":{"all":{"group":"a"}},"message":"hi"})"));
        return std::nullopt;
    }
    for (const auto &[field, value] : j.items()) {
        const bool known = field == "selector" || (action == CommandAction::SetTags
                                                       ? field == "tags"
                                                       : field == "message" || field == "message_base64");
        if (!known) {
            fail(error, "unknown field '" + field + "' for " + commandName(action) + " (expected selector and " +
                            (action == CommandAction::SetTags ? "tags" : "message or message_base64") + ")");
            return std::nullopt;
        }
    }
    auto sel = j.find("selector");
    if (sel == j.end()) {
        fail(error, R"(no selector: every command names whom it is for, e.g. "selector":{"all":{"group":"a"}} ({} is everyone))");
        return std::nullopt;
    }
    std::string why;
    auto selector = Selector::parseJson(sel->dump(), &why);
    if (!selector) {
        fail(error, "bad selector: " + why);
        return std::nullopt;
    }
    CommandRequest r;
    r.action = action;
    r.parsedSelector = std::move(*selector);
    if (action == CommandAction::SetTags) {
        auto tags = j.find("tags");
        if (tags == j.end() || !tags->is_object() || tags->empty()) {
            fail(error, R"(tags must be a non-empty object of strings: {"k":"v","gone":""} ("" deletes a tag))");
            return std::nullopt;
        }
        TagList changes;
        for (const auto &[k, v] : tags->items()) {
            if (k.empty()) {
                fail(error, "tags: an empty key");
                return std::nullopt;
            }
            if (!v.is_string()) {
                fail(error, "tags." + k + ": expected a string (\"\" deletes the tag)");
                return std::nullopt;
            }
            changes.emplace_back(k, v.get<std::string>());
        }
        r.tags = std::move(changes);
        return r;
    }
    if (!readMessage(j, action == CommandAction::Send, r, error)) return std::nullopt;
    return r;
}

std::optional<ListQuery> parseListQuery(std::string_view rawQuery, bool paged, std::string *error) {
    std::string why;
    auto params = parseForm(rawQuery, &why);
    if (!params) {
        fail(error, "bad query: " + why);
        return std::nullopt;
    }
    ListQuery q;
    bool seen[3] = {false, false, false};
    for (const auto &[k, v] : *params) {
        const int which = k == "selector" ? 0 : (paged && k == "limit") ? 1 : (paged && k == "cursor") ? 2 : -1;
        if (which < 0) {
            fail(error, "unknown parameter '" + k + "' (expected " +
                            (paged ? "selector, limit and cursor" : "selector") + ")");
            return std::nullopt;
        }
        if (seen[which]) {
            fail(error, "parameter '" + k + "' given twice");
            return std::nullopt;
        }
        seen[which] = true;
        if (which == 0) {
            auto sel = Selector::parseJson(v, &why);
            if (!sel) {
                fail(error, "bad selector: " + why);
                return std::nullopt;
            }
            q.selector = std::move(*sel);
        } else if (which == 1) {
            std::size_t n = 0;
            auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
            if (ec != std::errc() || end != v.data() + v.size() || n < 1 || n > kMaxPage) {
                fail(error, "limit must be a number from 1 to " + std::to_string(kMaxPage) + ", not '" + v + "'");
                return std::nullopt;
            }
            q.limit = n;
        } else {
            q.cursor = ConnectionId::parse(v);
            if (!q.cursor) {
                fail(error, "cursor '" + v + "' is not one this API gave (next_cursor of a page)");
                return std::nullopt;
            }
        }
    }
    return q;
}

} // namespace wsgw::daemon::v1
