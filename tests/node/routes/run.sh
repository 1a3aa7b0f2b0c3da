#!/usr/bin/env bash
# The meson test `routes_node` (suite `node`): endpoints routed to their own backends, checked
# with npm `ws` clients, npm `ioredis` backends and, given rabbitmq_run, npm `amqplib` consumers
# of a private RabbitMQ node with two vhosts (routes.js says what exactly).
#
# Usage: tests/node/routes/run.sh PATH/TO/wsgwd [PATH/TO/rabbitmq_run]
#   (without rabbitmq_run, a build without rabbitmq-c, the AMQP backends are left out, and say so)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
wsgw_label="routes (node)"
# shellcheck source=tests/node/lib/daemon.sh
. "$here/../lib/daemon.sh"

[ $# -ge 1 ] && [ $# -le 2 ] || wsgw_die "usage: $0 PATH/TO/wsgwd [PATH/TO/rabbitmq_run]"
[ -x "$1" ] || wsgw_die "wsgwd is not an executable: $1 (build it first: ninja -C build)"
wsgw_check_node
wsgw_ensure_ws >&2
if [ $# -eq 1 ]; then
    echo "$wsgw_label: built without rabbitmq-c: no AMQP backends in this run" >&2
    exec node "$here/routes.js" "$1"
fi
dir=$(mktemp -d)
cleanup() {
    wsgw_stop_rabbitmq
    rm -rf "$dir"
}
trap cleanup EXIT
wsgw_start_rabbitmq "$2" "$dir" --vhost chat --vhost billing
WSGW_AMQP_PORT=$wsgw_amqp_port node "$here/routes.js" "$1"
