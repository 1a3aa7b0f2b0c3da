#pragma once

// The schema of config.yml: a table per map (the top level, each section, an endpoint) of its
// keys, each with its type, its bounds and where its value goes in Config, and the checks that
// span keys. Driven by the YAML walker (yaml_walker.h); called by parseConfig only.
//
// Thread-safe: the tables are built once (function-local statics) and only read after; each
// call works on its own Config.

#include "config.h"
#include "yaml_walker.h"

namespace wsgw::daemon {

/// Reads the YAML document `root` into `config` (whose `file` is set already, for the
/// positions recorded in Config::files): every key by its table, then the checks across keys
/// (endpoints exist and have unique paths, set_tags fit the tag limits, listen_addr and
/// control_addr do not overlap) and the defaults that depend on other keys (an endpoint's
/// max_message_size_kb, rate_limit and slow_consumer; the control whitelist). Throws ConfigError
/// for the first problem; a null `root` is an empty file.
void readConfigTree(const YAML::Node &root, const Walker &w, Config &config);

} // namespace wsgw::daemon
