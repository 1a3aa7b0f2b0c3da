#pragma once

// One way to run a control command (send, settags, close) whatever carried it in: the HTTP control
// API (control_api.cpp) and the command bus readers (Redis stream, AMQP queue; command_bus.cpp)
// both hand it a CommandRequest and turn the CommandOutcome into their own answer. Selector
// parsing, the message checks, tag limits, cluster-wide application with its count and missing
// nodes, and how a shard's or node's failure reads: all here, once.

#include "control_options.h"

#include <wsgw/selector.h>
#include <wsgw/tags.h>

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace wsgw {
class Hub;
class Cluster;
} // namespace wsgw

namespace wsgw::daemon {

class Metrics;

enum class CommandAction { Send, SetTags, Close };

/// "send", "settags", "close": the command's name in answers, logs and metrics.
const char *commandName(CommandAction a) noexcept;

/// A command as its carrier received it. Value type.
struct CommandRequest {
    CommandAction action = CommandAction::Send;
    /// The selector in the control API's query-string form: "group=a&admin=1", "id=a,b".
    std::string selector;
    /// send and close: the message (close: none when empty); settags: form-encoded tags
    /// ("k=v&k2="; an empty value deletes the tag).
    std::string body;
    bool binary = false;   ///< the message is a binary frame (else text, which must be UTF-8)
    bool nodeOnly = false; ///< this node's connections only, even in a cluster
    /// Set: the selector, already parsed (the JSON API), and `selector` is not read.
    std::optional<Selector> parsedSelector;
    /// settags, set: the changes (the JSON API), and `body` is not read as a form.
    std::optional<TagList> tags;
};

/// What came of it, in the control API's terms. Value type.
struct CommandOutcome {
    /// 200 done (count says on how many connections); 400 a bad command: nothing was done (but see
    /// settags' max_tags_per_connection in `message`); 500, 503 and 504 as the control API
    /// answers them (a shard or node failed, busy or shutting down, timed out).
    int status = 200;
    std::string message;        ///< 200: the count as digits; else why, for a person
    std::size_t count = 0;      ///< connections acted on (200)
    std::vector<std::string> missing; ///< nodes whose part is unknown (a cluster command)
    std::vector<std::string> answered; ///< other nodes that answered (a cluster command)
    bool busy = false;          ///< 503 because a shard's queue was full: nothing was done; retry shortly
    bool stopping = false;      ///< 503 because this node is shutting down
    bool nodeScope = false;     ///< it ran on this node only although there is a cluster
};

/// Thread-safe: run() may be called from any number of threads but never from a shard's.
class CommandRunner {
public:
    /// `hub` and `cluster` (nullptr: no cluster) must outlive it.
    CommandRunner(Hub &hub, Cluster *cluster, Metrics &metrics, std::size_t messageHeadroom);

    /// Runs `request` and waits for its answer: on every live node when there is a cluster (unless
    /// nodeOnly), else on this hub. `limits` gives max_tag_* and control_timeout_s. `stopping` is
    /// asked every 20 ms while it waits: true ends the wait at once (503; the command may or may
    /// not have been applied). Never throws.
    CommandOutcome run(const CommandRequest &request, const ControlApiOptions &limits,
                       const std::function<bool()> &stopping) const noexcept;

private:
    Hub &hub_;
    Cluster *cluster_;
    Metrics &metrics_;
    std::size_t headroom_;
};

} // namespace wsgw::daemon
