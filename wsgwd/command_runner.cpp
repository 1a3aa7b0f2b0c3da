#include "command_runner.h"

#include "metrics.h"
#include "utf8.h"

#include <wsgw/cluster.h>
#include <wsgw/hub.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <future>
#include <optional>
#include <type_traits>

namespace wsgw::daemon {

namespace {

using Clock = std::chrono::steady_clock;

// How often a caller waiting for the shards looks whether it should stop waiting.
constexpr auto kStopPoll = std::chrono::milliseconds(20);
// How long past a command's deadline we wait for a shard stuck inside something else.
constexpr auto kStuckShardGrace = std::chrono::milliseconds(1000);


struct Run {
    Hub &hub;
    Metrics &metrics;
    const std::function<bool()> &stopping;
    const char *command;
    CommandOutcome &out;

    bool fail(int status, std::string message) {
        out.status = status;
        out.message = std::move(message);
        return false;
    }

    // What a command that ended early did, for the caller to act on ("it ran on 1 of 2 shards
    // and was queued for 3 connections there; the other shard never will run it").
    template <class T> std::string partially(const CommandResult<T> &r) const {
        std::string s = "it ran on " + std::to_string(r.shards) + " of " + std::to_string(hub.shardCount()) + " shards";
        if constexpr (std::is_same_v<T, std::size_t>)
            s += " and acted on " + std::to_string(r.value) + " connection(s) there";
        if constexpr (std::is_same_v<T, TagChangeCount>)
            s += " and changed " + std::to_string(r.value.changed) + " connection(s) there";
        return s;
    }

    // Waits for `f` until `limit`; false (with the outcome written) when stopping or too late.
    template <class F> bool wait(F &f, Clock::time_point limit, const std::string &stopMessage, const std::string &late) {
        for (;;) {
            auto now = Clock::now();
            if (f.wait_for(std::min<Clock::duration>(kStopPoll, std::max<Clock::duration>(limit - now, {}))) ==
                std::future_status::ready)
                return true;
            if (stopping && stopping()) {
                out.stopping = true;
                return fail(503, stopMessage);
            }
            if (Clock::now() >= limit) return fail(504, late);
        }
    }

    // A hub command's answer (given `deadline`): the result, or why there is none.
    template <class Result> std::optional<Result> await(std::future<Result> f, Deadline deadline) {
        auto start = Clock::now();
        // The shards skip the command past its deadline and answer TimedOut; only a shard stuck
        // inside something else makes us give up without its answer, a moment later.
        if (!wait(f, deadline + kStuckShardGrace,
                  std::string(command) +
                      ": shutting down before the shards answered (the command may or may not have been applied)",
                  std::string(command) + ": a shard did not answer within control_timeout_s; a shard that had not "
                                         "started the command will not run it"))
            return std::nullopt;
        Result r = f.get();
        metrics.observeCommand(command, std::chrono::duration<double>(Clock::now() - start).count());
        switch (r.status) {
        case CommandStatus::Ok:
            return r;
        case CommandStatus::Busy:
            metrics.countBusy();
            out.busy = true;
            fail(503, std::string(command) + ": busy (a shard's command queue is full; nothing was done); retry shortly");
            return std::nullopt;
        case CommandStatus::Stopped:
            out.stopping = true;
            fail(503, std::string(command) + ": shutting down; " + partially(r));
            return std::nullopt;
        case CommandStatus::TimedOut:
            fail(504, std::string(command) + ": not every shard started it within control_timeout_s; " + partially(r) +
                          "; the others skipped it and never will run it");
            return std::nullopt;
        case CommandStatus::Failed:
            fail(500, std::string(command) + ": a shard could not run it (out of memory?); " + partially(r));
            return std::nullopt;
        }
        return std::nullopt;
    }

    // A cluster command's answer: its own deadline is the cluster's command timeout, after which
    // it answers with the nodes that did; this node's own part may end like a hub command.
    template <class T> std::optional<ClusterResult<T>> awaitCluster(Cluster &cluster, std::future<ClusterResult<T>> f) {
        auto start = Clock::now();
        if (!wait(f, start + cluster.commandTimeout() + kStuckShardGrace,
                  std::string(command) +
                      ": shutting down before the nodes answered (the command may or may not have been applied)",
                  std::string(command) + ": this node's shards did not answer in time"))
            return std::nullopt;
        ClusterResult<T> r = f.get();
        metrics.observeCommand(command, std::chrono::duration<double>(Clock::now() - start).count());
        out.missing = r.missing;
        out.answered = r.answered;
        switch (r.status) {
        case CommandStatus::Ok:
            return r;
        case CommandStatus::Busy:
            metrics.countBusy();
            out.busy = true;
            fail(503, std::string(command) + ": busy (a shard's command queue is full on this node, which did "
                                             "nothing; other nodes may have); retry shortly");
            return std::nullopt;
        case CommandStatus::Stopped:
            out.stopping = true;
            fail(503, std::string(command) + ": shutting down");
            return std::nullopt;
        case CommandStatus::TimedOut:
            fail(504, std::string(command) + ": not every shard of this node started it within its timeout");
            return std::nullopt;
        case CommandStatus::Failed:
            fail(500, std::string(command) + ": a shard of this node could not run it (out of memory?)");
            return std::nullopt;
        }
        return std::nullopt;
    }

    void counted(std::size_t n) {
        out.status = 200;
        out.count = n;
        out.message = std::to_string(n);
    }
};

} // namespace

const char *commandName(CommandAction a) noexcept {
    switch (a) {
    case CommandAction::Send:
        return "send";
    case CommandAction::SetTags:
        return "settags";
    case CommandAction::Close:
        return "close";
    }
    return "?";
}

CommandRunner::CommandRunner(Hub &hub, Cluster *cluster, Metrics &metrics, std::size_t messageHeadroom)
    : hub_(hub), cluster_(cluster), metrics_(metrics), headroom_(messageHeadroom) {}

CommandOutcome CommandRunner::run(const CommandRequest &req, const ControlApiOptions &limits,
                                  const std::function<bool()> &stopping) const noexcept {
    CommandOutcome out;
    try {
        Run r{hub_, metrics_, stopping, commandName(req.action), out};
        std::string error;
        // The original gateway read `?*` as a key `*` without a value, which selects no one; the
        // HTTP contract (and so the command bus) keeps that, though Selector::parse reads it as
        // everyone.
        auto sel = req.parsedSelector                      ? req.parsedSelector
                   : req.selector == "*" ? std::optional<Selector>(Selector::none())
                                         : Selector::parse(req.selector, &error);
        if (!sel) {
            r.fail(400, "bad selector: " + error);
            return out;
        }
        Cluster *cluster = req.nodeOnly ? nullptr : cluster_;
        out.nodeScope = req.nodeOnly && cluster_;
        // A message: binary as asked, else text that must be UTF-8.
        auto message = [&]() -> MessagePtr {
            if (!req.binary && !isValidUtf8(req.body)) {
                r.fail(400, "the body is not valid UTF-8, so it cannot be a text message: send binary data with "
                            "Content-Type: application/octet-stream");
                return nullptr;
            }
            return Message::create(req.binary ? Opcode::Binary : Opcode::Text, req.body, headroom_);
        };
        auto deadline = [&] { return Clock::now() + limits.commandTimeout; };

        switch (req.action) {
        case CommandAction::Send: {
            MessagePtr msg = message();
            if (!msg) return out;
            if (cluster) {
                if (auto c = r.awaitCluster(*cluster, cluster->send(std::move(*sel), std::move(msg)))) r.counted(c->value);
            } else {
                Deadline d = deadline();
                if (auto h = r.await(hub_.send(std::move(*sel), std::move(msg), d), d)) r.counted(h->value);
            }
            return out;
        }
        case CommandAction::Close: {
            MessagePtr last;
            if (!req.body.empty()) {
                last = message();
                if (!last) return out;
            }
            if (cluster) {
                if (auto c = r.awaitCluster(*cluster, cluster->close(std::move(*sel), close_code::kNormal,
                                                                     "Closed by server", std::move(last))))
                    r.counted(c->value);
            } else {
                Deadline d = deadline();
                if (auto h = r.await(hub_.close(std::move(*sel), close_code::kNormal, "Closed by server",
                                                std::move(last), d),
                                     d))
                    r.counted(h->value);
            }
            return out;
        }
        case CommandAction::SetTags: {
            auto changes = req.tags ? req.tags : parseForm(req.body, &error);
            if (!changes) {
                r.fail(400, "bad body: expected form-encoded tags like admin=1&group=a: " + error);
                return out;
            }
            for (const auto &[k, v] : *changes) {
                if (k == kSelectorIdKey) {
                    r.fail(400, "tag key 'id' is reserved: selectors read id= as connection ids, so such a tag "
                                "could never be selected; nothing changed");
                    return out;
                }
                if (k.size() > limits.maxTagKeyLen) {
                    r.fail(400, "tag key longer than max_tag_key_len (" + std::to_string(limits.maxTagKeyLen) +
                                    " bytes); nothing changed");
                    return out;
                }
                if (v.size() > limits.maxTagValueLen) {
                    r.fail(400, "value of tag '" + k + "' longer than max_tag_value_len (" +
                                    std::to_string(limits.maxTagValueLen) + " bytes); nothing changed");
                    return out;
                }
            }
            // Checked and changed in one step on each connection's shard: a connection that would
            // end up with too many tags keeps its own.
            std::optional<TagChangeCount> t;
            if (cluster) {
                if (auto c = r.awaitCluster(*cluster, cluster->setTags(std::move(*sel), std::move(*changes),
                                                                       limits.maxTagsPerConnection)))
                    t = c->value;
            } else {
                Deadline d = deadline();
                if (auto h = r.await(hub_.setTags(std::move(*sel), std::move(*changes), limits.maxTagsPerConnection, d), d))
                    t = h->value;
            }
            if (!t) return out;
            if (t->over > 0) {
                r.fail(400, std::to_string(t->over) + " connection(s) would have had more than " +
                                std::to_string(limits.maxTagsPerConnection) +
                                " tags (max_tags_per_connection) and kept theirs unchanged; " +
                                std::to_string(t->changed) + " changed");
                out.count = t->changed;
                return out;
            }
            r.counted(t->changed);
            return out;
        }
        }
    } catch (const std::exception &e) {
        out = CommandOutcome{};
        out.status = 500;
        out.message = std::string("internal error: ") + e.what();
    } catch (...) {
        out = CommandOutcome{};
        out.status = 500;
        out.message = "internal error";
    }
    return out;
}

} // namespace wsgw::daemon
