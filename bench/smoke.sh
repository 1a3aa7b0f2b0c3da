#!/bin/bash
# A short run of wsgw-bench against a real wsgwd that checks correctness, not speed: every frame
# of every scenario arrives, in order and intact, every inbound message reaches the event sink,
# and the same with permessage-deflate. About 10 seconds. Registered as the meson test
# 'bench_smoke' (suite integration).
#
#   bench/smoke.sh WSGWD WSGW_BENCH
set -euo pipefail

WSGWD=${1:?usage: smoke.sh WSGWD WSGW_BENCH}
BENCH=${2:?usage: smoke.sh WSGWD WSGW_BENCH}
WORK=$(mktemp -d)
PID=""

cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill "$PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Starts wsgwd on free ports with 10 endpoints /g0../g9 (tags all=1, group=gN); sets PID, WS, CTL.
start_wsgwd() {
    local compression=$1
    for attempt in 1 2 3 4 5; do
        WS=$((20000 + (RANDOM % 2500) * 4)); CTL=$((WS + 1))
        {
            echo "listen_addr: 127.0.0.1:$WS"
            echo "control_addr: 127.0.0.1:$CTL"
            echo "threads: 2"
            echo "event_log: discard"
            echo "log_level: warn"
            echo "endpoints:"
            for g in $(seq 0 9); do
                printf '  - path: /g%d\n    compression: %s\n    set_tags: {all: 1, group: g%d}\n' "$g" "$compression" "$g"
            done
        } > "$WORK/config.yml"
        "$WSGWD" --config "$WORK/config.yml" > /dev/null 2> "$WORK/wsgwd.log" &
        PID=$!
        for _ in $(seq 50); do
            if ! kill -0 "$PID" 2>/dev/null; then break; fi
            if (exec 3<>/dev/tcp/127.0.0.1/$CTL) 2>/dev/null; then return 0; fi
            sleep 0.1
        done
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
        PID=""
        echo "smoke: wsgwd did not start (attempt $attempt):" >&2
        cat "$WORK/wsgwd.log" >&2
    done
    return 1
}

stop_wsgwd() {
    kill "$PID"
    wait "$PID" || { echo "smoke: wsgwd exited with $?" >&2; return 1; }
    PID=""
}

run_bench() {
    "$BENCH" --name "$1" --url "ws://127.0.0.1:$WS/g{group}" --connections 300 --threads 2 --groups 10 \
        --sources 4 --publish "wsgw@127.0.0.1:$CTL" --scenarios connect,throughput,latency,groups,inbound \
        --warmup 0.3 --duration 1 --latency-duration 1 --groups-duration 1 --inbound-duration 1 \
        --send-rate 20000 --sink-url "http://127.0.0.1:$CTL/metrics" \
        --sink-pattern 'wsgw_events_published_total{sink="null"' --server-pid "$PID" --timeout 5 \
        "${@:2}" > "$WORK/results.jsonl"
    # Every scenario reported, and each one checked out.
    local lines ok
    lines=$(grep -c '^{' "$WORK/results.jsonl" || true)
    ok=$(grep -c '"ok":true' "$WORK/results.jsonl" || true)
    if [ "$lines" != 5 ] || [ "$ok" != 5 ]; then
        echo "smoke: $1: $ok of $lines scenarios passed (5 expected)" >&2
        cat "$WORK/results.jsonl" >&2
        return 1
    fi
}

start_wsgwd false
run_bench wsgwd
stop_wsgwd

start_wsgwd true
run_bench wsgwd-deflate --deflate
stop_wsgwd

echo "smoke: 2 passed, 0 failed"
