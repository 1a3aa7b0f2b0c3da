#!/usr/bin/env bash
# The meson test `cluster_node` (suite `cluster`): three wsgwd nodes on one redis-server, checked
# with npm `ws` clients and an npm `ioredis` backend (cluster.js says what exactly).
#
# Usage: tests/node/cluster/run.sh PATH/TO/wsgwd
#
# Installs the locked npm packages into tests/node/node_modules if needed (as the node suite
# does), then runs cluster.js, which starts and stops every server it needs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
wsgw_label="cluster (node)"
# shellcheck source=tests/node/lib/daemon.sh
. "$here/../lib/daemon.sh"

[ $# -eq 1 ] || wsgw_die "usage: $0 PATH/TO/wsgwd"
[ -x "$1" ] || wsgw_die "wsgwd is not an executable: $1 (build it first: ninja -C build)"
wsgw_check_node
wsgw_ensure_ws >&2
exec node "$here/cluster.js" "$1"
