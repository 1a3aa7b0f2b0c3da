#!/usr/bin/env bash
# The meson test `churn` (suite `integration`), and the machinery of bench/soak: hundreds of
# concurrent `ws` clients connecting, sending and leaving while a backend broadcasts and changes
# tags, then exact checks that wsgwd kept nothing and lost nothing (churn.js says what exactly).
#
# Usage: tests/node/churn/run.sh PATH/TO/wsgwd [churn.js options: --duration S, --clients N, ...]
#
#   1. Installs `ws` into tests/node/node_modules if needed (the node suite's install step).
#   2. Writes a temporary config.yml on two free ports: threads 2, event_log stdout, two
#      endpoints /a and /b without compression (set_tags group=churn and ep=a or ep=b).
#   3. Starts wsgwd, its stdout (the event log) and stderr (its log) to files in the temporary
#      directory, and waits for GET /readyz.
#   4. Runs churn.js, which churns and checks.
#   5. Stops wsgwd with SIGTERM and fails unless it exits 0 within 15 s.
# Whatever happens, the trap on EXIT stops wsgwd (by its PID only) and removes the temporary
# directory; on failure it prints the tail of wsgwd's log first. WSGW_CHURN_KEEP=1 keeps the
# directory (its path is printed) for a look at the event log.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
wsgw_label=${WSGW_CHURN_LABEL:-churn}
# shellcheck source=tests/node/lib/daemon.sh
. "$here/../lib/daemon.sh"

[ $# -ge 1 ] || wsgw_die "usage: $0 PATH/TO/wsgwd [churn.js options]"
wsgwd=$1
shift
[ -x "$wsgwd" ] || wsgw_die "wsgwd is not an executable: $wsgwd (build it first: ninja -C build)"
wsgw_check_node

# --- 1. the `ws` package --------------------------------------------------------------------
wsgw_ensure_ws >&2

# --- 2. ports and config --------------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wsgw-churn.XXXXXX")
wsgw_traps "$tmp" "${WSGW_CHURN_KEEP:-}"

read -r ws_port control_port < <(wsgw_free_ports 2)
[ -n "${control_port:-}" ] || wsgw_die "could not pick free ports"

cat >"$tmp/config.yml" <<EOF
# Written by tests/node/churn/run.sh; churn.js relies on this layout.
listen_addr: 127.0.0.1:$ws_port
control_addr: 127.0.0.1:$control_port
threads: 2
event_log: stdout
log_level: ${WSGW_CHURN_LOG_LEVEL:-info}
prometheus:
  enabled: true
endpoints:
  - path: /a
    set_tags:
      group: churn
      ep: a
    stream_include_tags: [group, ep, room, vip, phase]
    compression: false
  - path: /b
    set_tags:
      group: churn
      ep: b
    stream_include_tags: [group, room]
    compression: false
EOF

# --- 3. the daemon --------------------------------------------------------------------------
wsgw_start "$wsgwd" "$tmp/config.yml" "$tmp/events.jsonl" "$tmp/wsgwd.log"
wsgw_wait_ready "$control_port"
echo "$wsgw_label: wsgwd (pid $wsgw_pid) up: WebSocket 127.0.0.1:$ws_port, control 127.0.0.1:$control_port" >&2

# --- 4. churn and check ---------------------------------------------------------------------
status=0
WSGW_WS_PORT=$ws_port WSGW_CONTROL_PORT=$control_port WSGW_EVENTS_FILE="$tmp/events.jsonl" WSGWD_PID=$wsgw_pid \
    node "$here/churn.js" "$@" || status=$?

# --- 5. a clean stop ------------------------------------------------------------------------
wsgw_stop_clean 15 || exit 1
exit "$status"
