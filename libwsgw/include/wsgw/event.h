#pragma once

#include <wsgw/connection_id.h>
#include <wsgw/export.h>
#include <wsgw/message.h>
#include <wsgw/tags.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wsgw {

/// What happened to a connection. The names on the wire are "open", "close" and "message".
/// (Connection state, tags included, is mirrored by a ConnectionMirror, not by events.)
enum class EventAction : std::uint8_t { Open, Close, Message };
WSGW_EXPORT std::string_view actionName(EventAction action) noexcept;

/// Variables extracted from a message's JSON body: name -> value. Strings keep their text;
/// numbers, booleans, arrays and objects are their compact JSON text; null and absent paths are
/// left out.
using Vars = std::map<std::string, std::string, std::less<>>;

/// Extracts named variables from JSON message bodies (the endpoint's json_extract_vars). A path
/// is dotted member names with array indices as numbers or in brackets: "data.actionRef",
/// "items.0.id", "items[0].id". Value type; thread-compatible.
class WSGW_EXPORT JsonExtractor {
public:
    JsonExtractor() = default;

    /// `vars` maps a variable name ([a-zA-Z0-9_]+) to its path. An invalid name or path returns
    /// nullopt with a message naming it in `*error`.
    [[nodiscard]] static std::optional<JsonExtractor> create(const std::vector<std::pair<std::string, std::string>> &vars,
                                                             std::string *error = nullptr);

    /// The variables found in `body`. A body that is not JSON (or not an object) yields none.
    Vars extract(std::string_view body) const;

    bool empty() const noexcept { return vars_.empty(); }
    std::vector<std::string> names() const;

private:
    struct Step {
        std::string key;   ///< member name, or empty when this step is an array index
        std::size_t index; ///< array index when key is empty
    };
    struct Var {
        std::string name;
        std::vector<Step> steps;
    };
    std::vector<Var> vars_;
};

/// What an endpoint puts into the events of its connections. Thread-compatible.
struct EventSpec {
    /// Tags copied into the event's `tags` field (stream_include_tags).
    std::vector<std::string> includeTags;
    /// Further tags to carry in Event::context, never written out as fields. The tags the
    /// hub's sinks read themselves (EventSink::tagsUsed) are added by the shards anyway.
    std::vector<std::string> contextTags;
    /// Variables extracted from message bodies (json_extract_vars).
    JsonExtractor json;
};

/// One open/close/message event. Immutable once published; shared by every sink.
struct WSGW_EXPORT Event {
    /// Set by EventBus::publish: increases by one per event (the event_id of the streams,
    /// without gaps; a sink gets them in this order).
    std::uint64_t id = 0;
    EventAction action = EventAction::Open;
    ConnectionId connection;
    std::string endpoint;
    std::int64_t timeMs = 0; ///< wall clock, milliseconds since the Unix epoch
    Tags tags;               ///< the included tags the connection has (EventSpec::includeTags)
    Tags context;            ///< tags for templates only (EventSpec::contextTags)
    Opcode type = Opcode::Text; ///< Message only
    std::string message;        ///< Message only: the payload, byte for byte
    Vars vars;                  ///< Message only: the extracted variables
    /// Close only, when the close was not seen by the connection's own node: "node_lost" (its
    /// node stopped heartbeating and another node of the cluster reports it). Empty otherwise.
    std::string reason;
    std::string lostNode; ///< with reason "node_lost": the node that held the connection

    /// A tag for templates: from `tags`, then `context`; nullptr if absent.
    const std::string *findTag(std::string_view key) const noexcept;
    /// Approximate heap bytes the event holds (for backlog limits).
    std::size_t footprint() const noexcept;

    /// Looks up one of the connection's tags by key; an empty view when it has none.
    using TagLookup = std::function<std::string_view(std::string_view key)>;

    /// Builds an event for a connection, stamped with the current time and carrying the tags
    /// `spec` asks for. The id is left 0 for EventBus::publish to assign.
    static Event make(EventAction action, ConnectionId connection, std::string_view endpoint, const TagLookup &tagOf,
                      const EventSpec &spec);
    static Event make(EventAction action, ConnectionId connection, std::string_view endpoint, const Tags &tags,
                      const EventSpec &spec);
};

using EventPtr = std::shared_ptr<const Event>;

/// The event as one JSON object (no newline): event_id, node, connection, action, endpoint,
/// time, tags (form-encoded, as in a Redis stream entry), reason and lost_node when set, and,
/// for messages, type and message.
/// A binary message is base64 in `message` with "encoding":"base64".
WSGW_EXPORT std::string toJson(const Event &event, std::string_view node);

/// Standard base64 (RFC 4648, with padding).
WSGW_EXPORT std::string base64Encode(std::string_view bytes);

} // namespace wsgw
