#!/usr/bin/env bash
# Commands in over AMQP, with a backend we did not write (amqplib) and npm `ws` clients against two
# real wsgwd nodes, a real redis-server and a private RabbitMQ node (see command_amqp_check.js,
# which starts and stops them).
# Usage: tests/node/backends/run_amqp.sh PATH/TO/wsgwd PATH/TO/rabbitmq_run
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
wsgw_label="command bus over AMQP (node)"
# shellcheck source=tests/node/lib/daemon.sh
. "$here/../lib/daemon.sh"
[ $# -ge 2 ] || wsgw_die "usage: $0 PATH/TO/wsgwd PATH/TO/rabbitmq_run"
wsgw_check_node
wsgw_ensure_ws
exec node "$here/command_amqp_check.js" "$1" "$2"
