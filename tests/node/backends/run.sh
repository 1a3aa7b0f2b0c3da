#!/usr/bin/env bash
# Commands in over Redis, with a backend we did not write (ioredis) and npm `ws` clients against two
# real wsgwd nodes and a real redis-server (see command_bus_check.js, which starts and stops them).
# Usage: tests/node/backends/run.sh PATH/TO/wsgwd
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
wsgw_label="command bus (node)"
# shellcheck source=tests/node/lib/daemon.sh
. "$here/../lib/daemon.sh"
[ $# -ge 1 ] || wsgw_die "usage: $0 PATH/TO/wsgwd"
wsgw_check_node
wsgw_ensure_ws
exec node "$here/command_bus_check.js" "$1"
