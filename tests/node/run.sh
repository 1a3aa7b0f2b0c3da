#!/usr/bin/env bash
# The meson suite `node`: wsgwd checked by a WebSocket client we did not write (npm `ws`).
#
# Usage: tests/node/run.sh PATH/TO/wsgwd [node --test args...]
#
# What it does, in order:
#   1. Installs `ws` into tests/node/node_modules from the committed package-lock.json (`npm ci`)
#      unless the locked version is already there; after that first install it needs no network.
#      Fails with a clear message when node or npm is missing or the registry cannot be reached.
#   2. Picks two free TCP ports and writes a temporary config.yml: threads 2, a short idle
#      timeout, and two endpoints, /ws (permessage-deflate, json_extract_vars, 2 MiB limit) and
#      /plain (compression: false, 64 KiB limit). tests/node/lib/gw.js knows the same layout.
#   3. Starts the real wsgwd with that config, its stdout (the JSON event log) and stderr (its
#      log) going to files in the temporary directory, and waits for GET /readyz (its event log connected).
#   4. Runs tests/node/*.test.js with node's built-in runner (`node --test`).
#   5. Stops wsgwd with SIGTERM and fails unless it exits 0 within 10 s.
# Whatever happens, the trap on EXIT stops wsgwd (by its PID only) and removes the temporary
# directory; on failure it prints the tail of wsgwd's log first.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
wsgw_label="node suite"
# shellcheck source=tests/node/lib/daemon.sh
. "$here/lib/daemon.sh"

[ $# -ge 1 ] || wsgw_die "usage: $0 PATH/TO/wsgwd [node --test args...]"
wsgwd=$1
shift
[ -x "$wsgwd" ] || wsgw_die "wsgwd is not an executable: $wsgwd (build it first: ninja -C build)"
wsgw_check_node

# --- 1. the `ws` package --------------------------------------------------------------------
wsgw_ensure_ws

# --- 2. ports and config --------------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wsgw-node.XXXXXX")
wsgw_traps "$tmp"

read -r ws_port control_port < <(wsgw_free_ports 2)
[ -n "${control_port:-}" ] || wsgw_die "could not pick free ports"

idle_timeout_s=5
cat >"$tmp/config.yml" <<EOF
# Written by tests/node/run.sh; tests/node/lib/gw.js relies on this layout.
listen_addr: 127.0.0.1:$ws_port
control_addr: 127.0.0.1:$control_port
max_message_size_kb: 2048
threads: 2
idle_timeout_s: $idle_timeout_s
event_log: stdout
log_level: ${WSGW_NODE_LOG_LEVEL:-info}
prometheus:
  enabled: true
endpoints:
  - path: /ws
    set_tags:
      group: node
    stream_include_tags:
      - group
      - user
      - t
    max_message_size_kb: 2048
    compression: true
    json_extract_vars:
      command: data.command
      ref: data.actionRef
  - path: /plain
    set_tags:
      group: plain
    stream_include_tags:
      - group
      - t
    max_message_size_kb: 64
    compression: false
EOF

# --- 3. the daemon --------------------------------------------------------------------------
wsgw_start "$wsgwd" "$tmp/config.yml" "$tmp/events.jsonl" "$tmp/wsgwd.log"
wsgw_wait_ready "$control_port"
echo "node suite: wsgwd (pid $wsgw_pid) up: WebSocket 127.0.0.1:$ws_port, control 127.0.0.1:$control_port"

# --- 4. the tests ---------------------------------------------------------------------------
runner_args=(--test)
# Node 20 prints TAP when not on a terminal; the spec reporter reads better in meson's log.
node --test-reporter=spec -e '' >/dev/null 2>&1 && runner_args+=(--test-reporter=spec)
# The files keep out of each other's way (each selects only connections it tagged itself), so
# they may run side by side; node 20 would otherwise run one at a time on a 2-core machine.
node --test-concurrency=4 -e '' >/dev/null 2>&1 && runner_args+=(--test-concurrency=4)
status=0
WSGW_WS_PORT=$ws_port WSGW_CONTROL_PORT=$control_port WSGW_EVENTS_FILE="$tmp/events.jsonl" \
    WSGW_IDLE_TIMEOUT_S=$idle_timeout_s \
    node "${runner_args[@]}" "$@" "$here"/*.test.js || status=$?

# --- 5. a clean stop ------------------------------------------------------------------------
wsgw_stop_clean 10 || exit 1
exit "$status"
