#include "command_bus.h"

#include <optional>

namespace wsgw::daemon {

namespace {

std::optional<CommandAction> actionOf(const std::string &a) {
    if (a == "send") return CommandAction::Send;
    if (a == "settags") return CommandAction::SetTags;
    if (a == "close") return CommandAction::Close;
    return std::nullopt;
}

// What kind of malformed command a 400 of the runner was, for logs and metrics (each kind is
// logged once).
std::string malformedKind(const std::string &message) {
    if (message.rfind("bad selector", 0) == 0) return "bad selector";
    if (message.rfind("bad body", 0) == 0) return "bad tags";
    if (message.rfind("the body is not valid UTF-8", 0) == 0) return "text message not UTF-8";
    if (message.find("max_tag_key_len") != std::string::npos || message.find("max_tag_value_len") != std::string::npos)
        return "tag too long";
    return "invalid";
}

} // namespace

BusHandler makeBusHandler(const CommandRunner &runner, std::function<ControlApiOptions()> limits,
                          std::function<bool()> stopping) {
    return [&runner, limits = std::move(limits), stopping = std::move(stopping)](const BusCommand &cmd) -> BusResult {
        BusResult out;
        auto action = actionOf(cmd.action);
        if (!action) {
            out.kind = BusResult::Kind::Invalid;
            out.malformedKind = "unknown action";
            out.error = "unknown action '" + cmd.action + "' (send, settags or close)";
            return out;
        }
        CommandRequest req;
        req.action = *action;
        req.selector = cmd.selector;
        // The JSON form, as in the control API's /v1 (a query string never starts with '{').
        if (!cmd.selector.empty() && cmd.selector.front() == '{') {
            std::string why;
            req.parsedSelector = Selector::parseJson(cmd.selector, &why);
            if (!req.parsedSelector) {
                out.kind = BusResult::Kind::Invalid;
                out.malformedKind = "bad selector";
                out.error = "bad selector: " + why;
                return out;
            }
        }
        req.body = *action == CommandAction::SetTags ? cmd.tags : cmd.message;
        req.binary = cmd.binary;
        CommandOutcome o = runner.run(req, limits(), stopping);
        out.count = o.count;
        out.missing = std::move(o.missing);
        if (o.status == 200) {
            out.kind = BusResult::Kind::Applied;
            return out;
        }
        out.error = o.message;
        // Over max_tags_per_connection is a 400 that did change some connections: not malformed.
        const bool overMaxTags = o.message.find("max_tags_per_connection") != std::string::npos;
        if (o.status == 400 && !overMaxTags) {
            out.kind = BusResult::Kind::Invalid;
            out.malformedKind = malformedKind(o.message);
        } else if (o.busy || (o.stopping && o.status == 503 && stopping && stopping())) {
            out.kind = BusResult::Kind::Retry;
        } else {
            out.kind = BusResult::Kind::Failed;
        }
        return out;
    };
}

} // namespace wsgw::daemon
