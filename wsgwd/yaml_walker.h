#pragma once

// Walking a yaml-cpp tree for the config parser: the typed reads every config key uses (a
// number in bounds, a boolean, one of some names, a map, a list) and the checks every map gets
// (keys are names, no duplicates, no unknown key: "did you mean" the nearest known one). Every
// problem is thrown as a ConfigError at the node to blame; parseConfig catches it and prefixes
// FILE:LINE:COL. Nothing here knows which keys exist: the schema (config_schema.h) says that.
//
// Thread-compatible: a Walker only reads the text it was given.

#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace wsgw::daemon {

/// A problem in the config and the node it is about. Thrown inside the parser only.
struct ConfigError {
    YAML::Mark mark;
    std::string message;
};

/// One "key: value" of a map, with the key's node (for messages about the key itself).
struct Entry {
    std::string key;
    YAML::Node keyNode;
    YAML::Node value;
};

/// "a map", "a list", "nothing" or "a value": what a node is, for messages.
const char *kindName(const YAML::Node &n);

/// "FILE:LINE:COL" (1-based) of `mark`; line and column 1 for a null mark, "<config>" for an
/// empty file name.
std::string position(const std::string &file, const YAML::Mark &mark);

/// The key of `known` nearest to `key`, if it is within two edits (a typo); else empty.
std::string_view nearestKey(std::string_view key, const std::vector<std::string_view> &known);

class Walker {
public:
    /// `text` is the YAML source, kept to find characters within scalars (charMark). Borrowed:
    /// it must outlive the Walker.
    explicit Walker(std::string_view text)
        : text_(text) {}

    [[noreturn]] void fail(const YAML::Mark &mark, std::string message) const;

    /// The map's entries in order. Keys must be scalars and unique; when `known` is not empty
    /// every key must be one of them ("unknown key 'x' in WHERE: did you mean 'y'?"). A null
    /// node is an empty map. `where` names the map in messages ("" = the top level).
    std::vector<Entry> entries(const YAML::Node &map, const std::string &where,
                               const std::vector<std::string_view> &known) const;

    /// A scalar's text. `what` describes what is expected, for the message.
    std::string scalar(const Entry &e, const std::string &name, std::string_view what) const;
    std::string scalarNode(const YAML::Node &n, const std::string &name, std::string_view what) const;
    /// A scalar that must not be empty.
    std::string nonEmpty(const Entry &e, const std::string &name, std::string_view what) const;
    /// A whole number in min..max, decimal digits only.
    std::uint64_t number(const Entry &e, const std::string &name, std::uint64_t min, std::uint64_t max) const;
    /// true/yes/on or false/no/off, any case.
    bool boolean(const Entry &e, const std::string &name) const;
    /// One of `choices`, exactly.
    std::string choice(const Entry &e, const std::string &name,
                       const std::vector<std::string_view> &choices) const;
    /// A map value (null is an empty map).
    const YAML::Node &map(const Entry &e, const std::string &name, std::string_view what) const;
    /// A list value (null is an empty list).
    const YAML::Node &list(const Entry &e, const std::string &name, std::string_view what) const;

    /// Where character `index` of scalar `n`'s value is in the file. Exact when the value is
    /// written on one line as its own text (plain, or quoted without escapes); otherwise the
    /// scalar's own position, and `*exact` is false.
    YAML::Mark charMark(const YAML::Node &n, std::size_t index, bool *exact) const;

    /// Fails at the character a library message's "at column N" names, within scalar `n`, and
    /// drops that phrase from the message when the position is exact.
    [[noreturn]] void failWithin(const YAML::Node &n, const std::string &prefix, std::string inner) const;

private:
    std::string_view text_;
};

} // namespace wsgw::daemon
