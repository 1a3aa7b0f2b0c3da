# shellcheck shell=bash
# Shell helpers shared by the scripts that drive the real wsgwd with node's `ws` package:
# tests/node/run.sh (the `node` suite), tests/node/churn/run.sh (the `churn` test) and bench/soak.
# Source it (bash); set `wsgw_label` first, the prefix of every message.
#
#   wsgw_die MESSAGE             prints "<label>: MESSAGE" to stderr, exits 1
#   wsgw_missing MESSAGE         a prerequisite is missing: prints "<label>: SKIP: MESSAGE" and
#                                exits 77 (meson: SKIP); with CI=true (.ci/run sets it) prints
#                                "<label>: FAIL: ..." and exits 1 instead
#   wsgw_check_node              node 18 or newer is installed, else wsgw_missing
#   wsgw_ensure_ws               every dependency of tests/node/package.json (ws, and the independent
#                                Redis and AMQP clients ioredis and amqplib), at the version locked
#                                in tests/node/package-lock.json, is in tests/node/node_modules:
#                                installs them with `npm ci` if not, once,
#                                under a lock so that two builds testing at once do not collide;
#                                wsgw_missing when npm is missing or cannot install it
#   wsgw_free_ports N            prints N distinct TCP ports that are free now, on one line
#   wsgw_start WSGWD CONFIG OUT ERR
#                                starts WSGWD in the background, stdout appended to OUT (so
#                                that a reader may free the part it has read, see churn.js),
#                                stderr to ERR; sets wsgw_pid
#   wsgw_wait_ready CONTROL_PORT [SECONDS]
#                                waits for GET /readyz to answer 200 (10 s unless told); dies if
#                                wsgwd exits first or never gets ready
#   wsgw_stop_clean [SECONDS]    SIGTERM to wsgwd; returns 0 only if it exits 0 within SECONDS
#                                (10 unless told), else prints why and returns 1
#   wsgw_kill                    for an EXIT trap: stops wsgwd by its PID if it still runs
#                                (SIGTERM, then SIGKILL after 5 s)
#   wsgw_traps DIR [KEEP]        the EXIT, INT and TERM traps of a runner whose files are in DIR:
#                                on exit wsgw_kill, on failure the tail of DIR/wsgwd.log, then
#                                DIR is removed (kept, and its path printed, when KEEP is not
#                                empty); the exit status stays the script's
#   wsgw_start_rabbitmq RABBITMQ_RUN DIR [--vhost NAME]...
#                                starts the tests' private RabbitMQ node through RABBITMQ_RUN
#                                (tests/integration/rabbitmq_run; its files in DIR), waits up to
#                                3 minutes for it to take logins and sets wsgw_amqp_port;
#                                wsgw_missing when rabbitmq-server is not installed
#   wsgw_stop_rabbitmq           stops it (closes its stdin) and waits for it; for an EXIT trap
#
# Only the processes started by wsgw_start and wsgw_start_rabbitmq are ever signalled, by PID.

wsgw_node_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
wsgw_pid=""
: "${wsgw_label:=wsgw}"

wsgw_die() {
    echo "$wsgw_label: $*" >&2
    exit 1
}

wsgw_missing() {
    case ${CI:-} in
    [Tt][Rr][Uu][Ee] | 1 | yes)
        echo "$wsgw_label: FAIL: $* (CI=true: a missing prerequisite fails instead of skipping)" >&2
        exit 1
        ;;
    esac
    echo "$wsgw_label: SKIP: $*" >&2
    exit 77
}

wsgw_check_node() {
    command -v node >/dev/null 2>&1 ||
        wsgw_missing "node is not installed: run scripts/bootstrap (or apt-get install nodejs npm), then test again"
    local major
    major=$(node -p 'process.versions.node.split(".")[0]')
    [ "$major" -ge 18 ] || wsgw_missing "node $(node --version) is too old: these tests need node 18 or newer"
}

# Prints the direct dependencies (package.json) whose locked version is not the one installed in
# node_modules, as "name@version" words; nothing when node_modules is up to date.
wsgw_node_stale() {
    node -e '
      const dir = process.argv[1];
      const lock = require(dir + "/package-lock.json").packages;
      const deps = Object.keys(require(dir + "/package.json").dependencies || {});
      const stale = [];
      for (const d of deps) {
        const want = lock["node_modules/" + d] && lock["node_modules/" + d].version;
        let have = "";
        try { have = require(dir + "/node_modules/" + d + "/package.json").version; } catch (e) {}
        if (have !== want) stale.push(d + "@" + want);
      }
      console.log(stale.join(" "));
    ' "$wsgw_node_dir"
}

wsgw_ensure_ws() {
    local here=$wsgw_node_dir stale
    stale=$(wsgw_node_stale)
    [ -z "$stale" ] && return 0
    command -v npm >/dev/null 2>&1 ||
        wsgw_missing "npm is not installed, and tests/node/node_modules lacks $stale: run scripts/bootstrap (or apt-get install npm)"
    echo "$wsgw_label: installing $stale into tests/node/node_modules (npm ci)"
    # Two builds testing at once must not install over each other.
    exec 9>"${TMPDIR:-/tmp}/wsgw-node-npm.lock"
    flock -w 180 9 || wsgw_die "another npm install into tests/node has held its lock for 3 minutes"
    stale=$(wsgw_node_stale)
    if [ -n "$stale" ]; then
        if ! (cd "$here" && timeout 180 npm ci --no-audit --no-fund --prefer-offline --fetch-retries=1 --fetch-timeout=30000 >&2); then
            wsgw_missing "npm ci failed (see above): is the npm registry reachable? Once $stale are in tests/node/node_modules the tests run offline"
        fi
    fi
    exec 9>&-
}

wsgw_free_ports() {
    # Ports the kernel hands out now, all held at once so they differ.
    node -e '
      const net = require("node:net");
      const n = Number(process.argv[1]);
      const servers = [];
      (function next() {
        if (servers.length === n) {
          console.log(servers.map((s) => s.address().port).join(" "));
          for (const s of servers) s.close();
          return;
        }
        const s = net.createServer().listen(0, "127.0.0.1", next);
        servers.push(s);
      })();' "$1"
}

wsgw_start() {
    local wsgwd=$1 config=$2 out=$3 err=$4
    [ -x "$wsgwd" ] || wsgw_die "wsgwd is not an executable: $wsgwd (build it first: ninja -C build)"
    "$wsgwd" --config "$config" >>"$out" 2>"$err" &
    wsgw_pid=$!
}

wsgw_wait_ready() {
    local port=$1 seconds=${2:-10}
    node -e '
      const [url, pid, ms] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]) * 1000];
      const deadline = Date.now() + ms;
      (async function poll() {
        try { process.kill(pid, 0); } catch { console.error("wsgwd exited during startup"); process.exit(1); }
        try {
          const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
          if (r.status === 200) process.exit(0);
        } catch {}
        if (Date.now() > deadline) { console.error("wsgwd did not answer " + url + " within " + ms / 1000 + " s"); process.exit(1); }
        setTimeout(poll, 50);
      })();' "http://127.0.0.1:$port/readyz" "$wsgw_pid" "$seconds" || wsgw_die "wsgwd did not start (its log follows)"
}

wsgw_stop_clean() {
    local seconds=${1:-10} rc=0 i
    [ -n "$wsgw_pid" ] || return 0
    kill -TERM "$wsgw_pid"
    for ((i = 0; i < seconds * 10; ++i)); do
        kill -0 "$wsgw_pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$wsgw_pid" 2>/dev/null; then
        echo "$wsgw_label: FAIL: wsgwd did not exit within $seconds s of SIGTERM" >&2
        return 1
    fi
    wait "$wsgw_pid" || rc=$?
    wsgw_pid=""
    if [ "$rc" -ne 0 ]; then
        echo "$wsgw_label: FAIL: wsgwd exited $rc after SIGTERM (expected 0)" >&2
        return 1
    fi
    echo "$wsgw_label: wsgwd stopped cleanly on SIGTERM" >&2
}

wsgw_kill() {
    local i
    if [ -n "$wsgw_pid" ] && kill -0 "$wsgw_pid" 2>/dev/null; then
        kill -TERM "$wsgw_pid" 2>/dev/null || true
        for ((i = 0; i < 50; ++i)); do
            kill -0 "$wsgw_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$wsgw_pid" 2>/dev/null || true
        wait "$wsgw_pid" 2>/dev/null || true
    fi
    wsgw_pid=""
}

wsgw_traps() {
    wsgw_trap_dir=$1
    wsgw_trap_keep=${2:-}
    trap wsgw_on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# shellcheck disable=SC2317 # called by the EXIT trap
wsgw_on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    wsgw_kill
    if [ "$rc" -ne 0 ] && [ -f "$wsgw_trap_dir/wsgwd.log" ]; then
        echo "--- last lines of wsgwd's log ($wsgw_trap_dir/wsgwd.log) ---" >&2
        tail -n 40 "$wsgw_trap_dir/wsgwd.log" >&2 || true
    fi
    if [ -n "$wsgw_trap_keep" ]; then
        echo "$wsgw_label: kept $wsgw_trap_dir" >&2
    else
        rm -rf "$wsgw_trap_dir"
    fi
    exit "$rc"
}

wsgw_rabbit_pid=""
wsgw_amqp_port=""

wsgw_start_rabbitmq() {
    local run=$1 dir=$2 rc=0
    shift 2
    mkfifo "$dir/rabbit-stdin"
    "$run" "$@" <"$dir/rabbit-stdin" >"$dir/rabbit-port" 2>"$dir/rabbitmq.log" &
    wsgw_rabbit_pid=$!
    exec 8>"$dir/rabbit-stdin" # held open until wsgw_stop_rabbitmq: closing it stops the broker
    for _ in $(seq 1 1800); do
        grep -q '^port ' "$dir/rabbit-port" && break
        kill -0 "$wsgw_rabbit_pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q '^port ' "$dir/rabbit-port"; then
        wait "$wsgw_rabbit_pid" || rc=$?
        wsgw_rabbit_pid=""
        [ "$rc" -eq 77 ] && wsgw_missing "rabbitmq-server is not installed (Debian package rabbitmq-server; scripts/bootstrap installs it)"
        cat "$dir/rabbitmq.log" >&2
        wsgw_die "rabbitmq_run did not start the broker (exit $rc)"
    fi
    wsgw_amqp_port=$(awk '/^port /{print $2}' "$dir/rabbit-port")
}

wsgw_stop_rabbitmq() {
    [ -n "$wsgw_rabbit_pid" ] || return 0
    exec 8>&-
    wait "$wsgw_rabbit_pid" 2>/dev/null || true
    wsgw_rabbit_pid=""
}
