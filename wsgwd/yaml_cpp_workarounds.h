#pragma once

// Workarounds for yaml-cpp bugs, in one place so that they can go when Debian's yaml-cpp is
// fixed. Each names the upstream issue and the versions it affects.

#include <yaml-cpp/yaml.h>

#include <optional>
#include <string>

namespace wsgw::daemon {

/// yaml-cpp up to 0.8.0 never consumes a ',' that starts a document (",", "a: 1\n---\n,"): its
/// parser reports an empty document again and again, and LoadAll keeps each one until memory
/// runs out (upstream issue jbeder/yaml-cpp#1040; found by tests/fuzz/config_fuzz). Call this
/// before LoadAll: it counts documents the way LoadAll loops, with the same parser, and more
/// documents than the text can hold (each one past the first needs a 3-byte marker) means that
/// loop. Returns the offending ',' then, nullopt when LoadAll is safe. Thread-compatible.
std::optional<YAML::Mark> endlessDocuments(const std::string &text);

} // namespace wsgw::daemon
