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
die() {
    echo "node suite: $*" >&2
    exit 1
}

[ $# -ge 1 ] || die "usage: $0 PATH/TO/wsgwd [node --test args...]"
wsgwd=$1
shift
[ -x "$wsgwd" ] || die "wsgwd is not an executable: $wsgwd (build it first: ninja -C build)"

command -v node >/dev/null 2>&1 ||
    die "node is not installed: run scripts/bootstrap (or apt-get install nodejs npm), then test again"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 18 ] || die "node $(node --version) is too old: these tests need node 18 or newer"

# --- 1. the `ws` package --------------------------------------------------------------------
wanted=$(node -p 'require(process.argv[1]).packages["node_modules/ws"].version' "$here/package-lock.json")
installed=$(node -p 'try { require(process.argv[1]).version } catch { "" }' "$here/node_modules/ws/package.json")
if [ "$installed" != "$wanted" ]; then
    command -v npm >/dev/null 2>&1 ||
        die "npm is not installed, and tests/node/node_modules lacks ws $wanted: run scripts/bootstrap (or apt-get install npm)"
    echo "node suite: installing ws $wanted into tests/node/node_modules (npm ci)"
    # Two builds testing at once must not install over each other.
    exec 9>"${TMPDIR:-/tmp}/wsgw-node-npm.lock"
    flock -w 180 9 || die "another npm install into tests/node has held its lock for 3 minutes"
    installed=$(node -p 'try { require(process.argv[1]).version } catch { "" }' "$here/node_modules/ws/package.json")
    if [ "$installed" != "$wanted" ]; then
        if ! (cd "$here" && timeout 180 npm ci --no-audit --no-fund --prefer-offline --fetch-retries=1 --fetch-timeout=30000 >&2); then
            die "npm ci failed (see above): is the npm registry reachable? Once ws $wanted is in tests/node/node_modules the suite runs offline"
        fi
    fi
    exec 9>&-
fi

# --- 2. ports and config --------------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wsgw-node.XXXXXX")
pid=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -f "$tmp/wsgwd.log" ]; then
        echo "--- last lines of wsgwd's log ($tmp/wsgwd.log) ---" >&2
        tail -n 40 "$tmp/wsgwd.log" >&2 || true
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Two ports the kernel hands out now, both held at once so they differ.
read -r ws_port control_port < <(node -e '
  const net = require("node:net");
  const a = net.createServer().listen(0, "127.0.0.1", () => {
    const b = net.createServer().listen(0, "127.0.0.1", () => {
      console.log(a.address().port, b.address().port);
      a.close(); b.close();
    });
  });')
[ -n "${control_port:-}" ] || die "could not pick free ports"

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
"$wsgwd" --config "$tmp/config.yml" >"$tmp/events.jsonl" 2>"$tmp/wsgwd.log" &
pid=$!

node -e '
  const [url, pid] = [process.argv[1], Number(process.argv[2])];
  const deadline = Date.now() + 10000;
  (async function poll() {
    try { process.kill(pid, 0); } catch { console.error("wsgwd exited during startup"); process.exit(1); }
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (r.status === 200) process.exit(0);
    } catch {}
    if (Date.now() > deadline) { console.error("wsgwd did not answer " + url + " within 10 s"); process.exit(1); }
    setTimeout(poll, 50);
  })();' "http://127.0.0.1:$control_port/readyz" "$pid" || die "wsgwd did not start (its log follows)"
echo "node suite: wsgwd (pid $pid) up: WebSocket 127.0.0.1:$ws_port, control 127.0.0.1:$control_port"

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
kill -TERM "$pid"
stopped=""
for _ in $(seq 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
        stopped=yes
        break
    fi
    sleep 0.1
done
if [ -z "$stopped" ]; then
    echo "node suite: FAIL: wsgwd did not exit within 10 s of SIGTERM" >&2
    exit 1
fi
wsgwd_rc=0
wait "$pid" || wsgwd_rc=$?
pid=""
if [ "$wsgwd_rc" -ne 0 ]; then
    echo "node suite: FAIL: wsgwd exited $wsgwd_rc after SIGTERM (expected 0)" >&2
    exit 1
fi
echo "node suite: wsgwd stopped cleanly on SIGTERM"
exit "$status"
