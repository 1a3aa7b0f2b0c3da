#pragma once

// What nodes of a cluster say to one another: a command and its answer, as MessagePack (binary
// safe, compact, and read by nlohmann::json, which libwsgw has already).

#include <wsgw/cluster.h>
#include <wsgw/hub.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace wsgw::cluster_wire {

enum class Op : std::uint8_t { Send = 1, SetTags = 2, Close = 3, Status = 4, Tree = 5, Count = 6 };

/// A command for another node. Deadlines cross machines as the time left, not a clock reading.
struct Request {
    std::uint64_t tag = 0; ///< the sender's id for it; the answer carries it back
    std::string from;      ///< the sender's node
    Op op = Op::Send;
    std::string selector;  ///< Selector::toString()
    std::int64_t remainingMs = 0;
    bool hasMessage = false; ///< Send always; Close when it sends a last message
    Opcode opcode = Opcode::Text;
    std::string payload;
    TagList changes;         ///< SetTags
    std::uint64_t maxTags = 0;
    std::uint16_t code = 0;  ///< Close
    std::string reason;      ///< Close
    std::string after;       ///< Status: a page after this id (ConnectionId::toString()); "" from the start
    std::uint64_t limit = 0; ///< Status: at most this many; 0 all
};

/// A node's answer to a Request.
struct Reply {
    std::uint64_t tag = 0;
    std::string from;
    CommandStatus status = CommandStatus::Ok;
    std::uint64_t count = 0;  ///< Send, Close; SetTags: changed
    std::uint64_t over = 0;   ///< SetTags
    std::vector<ConnectionInfo> connections; ///< Status
    TagTree tree;             ///< Tree
};

std::string encode(const Request &r);
std::string encode(const Reply &r);

/// A Request or a Reply; nullopt with a message for anything else (a foreign or broken message).
std::optional<std::variant<Request, Reply>> decode(std::string_view bytes, std::string *error);

} // namespace wsgw::cluster_wire
