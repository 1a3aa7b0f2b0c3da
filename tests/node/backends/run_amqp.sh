#!/usr/bin/env bash
# Commands in over AMQP, with a backend we did not write (amqplib) and npm `ws` clients against two
# real wsgwd nodes, a real redis-server (both started by command_amqp_check.js) and a private
# RabbitMQ node: the C++ tests' fixture through rabbitmq_run, started here and stopped (it stops
# the broker when its stdin closes) whatever happens.
# Usage: tests/node/backends/run_amqp.sh PATH/TO/wsgwd PATH/TO/rabbitmq_run
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
wsgw_label="command bus over AMQP (node)"
# shellcheck source=tests/node/lib/daemon.sh
. "$here/../lib/daemon.sh"
[ $# -ge 2 ] || wsgw_die "usage: $0 PATH/TO/wsgwd PATH/TO/rabbitmq_run"
wsgw_check_node
wsgw_ensure_ws

dir=$(mktemp -d)
mkfifo "$dir/stdin"
"$2" <"$dir/stdin" >"$dir/port" 2>"$dir/rabbitmq.log" &
rabbit_pid=$!
exec 3>"$dir/stdin" # held open until the end: closing it stops the broker
cleanup() {
    exec 3>&-
    wait "$rabbit_pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 1 1800); do
    grep -q '^port ' "$dir/port" && break
    kill -0 "$rabbit_pid" 2>/dev/null || break
    sleep 0.1
done
if ! grep -q '^port ' "$dir/port"; then
    rc=0
    wait "$rabbit_pid" || rc=$?
    [ "$rc" -eq 77 ] && wsgw_missing "rabbitmq-server is not installed (Debian package rabbitmq-server; scripts/bootstrap installs it)"
    cat "$dir/rabbitmq.log" >&2
    wsgw_die "rabbitmq_run did not start the broker (exit $rc)"
fi
node "$here/command_amqp_check.js" "$1" "$(awk '/^port /{print $2}' "$dir/port")"
