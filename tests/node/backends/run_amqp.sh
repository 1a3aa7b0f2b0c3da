#!/usr/bin/env bash
# Commands in over AMQP, with a backend we did not write (amqplib) and npm `ws` clients against two
# real wsgwd nodes, a real redis-server (both started by command_amqp_check.js) and a private
# RabbitMQ node: the C++ tests' fixture through rabbitmq_run, started here and stopped whatever
# happens (wsgw_start_rabbitmq, tests/node/lib/daemon.sh).
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
cleanup() {
    wsgw_stop_rabbitmq
    rm -rf "$dir"
}
trap cleanup EXIT
wsgw_start_rabbitmq "$2" "$dir"
node "$here/command_amqp_check.js" "$1" "$wsgw_amqp_port"
