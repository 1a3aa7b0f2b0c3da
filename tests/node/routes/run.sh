#!/usr/bin/env bash
# The meson test `routes_node` (suite `node`): endpoints routed to their own backends, checked
# with npm `ws` clients and npm `ioredis` backends (routes.js says what exactly).
#
# Usage: tests/node/routes/run.sh PATH/TO/wsgwd
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
wsgw_label="routes (node)"
# shellcheck source=tests/node/lib/daemon.sh
. "$here/../lib/daemon.sh"

[ $# -eq 1 ] || wsgw_die "usage: $0 PATH/TO/wsgwd"
[ -x "$1" ] || wsgw_die "wsgwd is not an executable: $1 (build it first: ninja -C build)"
wsgw_check_node
wsgw_ensure_ws >&2
exec node "$here/routes.js" "$1"
