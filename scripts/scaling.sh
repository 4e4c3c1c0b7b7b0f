#!/usr/bin/env bash
# How actormq's cost grows with the work: throughput against message size, queue count
# and connection count; memory per idle connection, per empty queue and per queued
# message; idle CPU with 1,000 idle connections. Topic routing against the number of
# bindings is `cargo bench --bench routing`.
#
#   scripts/scaling.sh            # DURATION=5 seconds per point by default
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
cargo build --release -q
BIN=target/release/actormq
DATA=$(mktemp -d)
# Keep the broker's data directory out of the working tree.
export ACTORMQ__STORAGE__DATA_DIR="$DATA"
grep -q '^\[storage\]' Settings.toml || unset ACTORMQ__STORAGE__DATA_DIR

start() {
  RUST_LOG=warn "$BIN" serve >/dev/null 2>&1 &
  PID=$!
  for _ in $(seq 100); do "$BIN" declare-exchange scaling.ready --type direct >/dev/null 2>&1 && break; sleep 0.1; done
  # Start-up reads whole log segments; the allocator hands those buffers back to the
  # OS within a moment. Measure RSS after that, not during it.
  sleep 1
}
stop() { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; }
rss_kib() { awk '/VmRSS/ {print $2}' /proc/"$1"/status; }
field() { python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"; }
perf() { "$BIN" perf --duration "${D:-$DURATION}" --json --broker-pid "$PID" "$@" 2>/dev/null; }
trap 'stop; rm -rf "$DATA"' EXIT

start
echo "## throughput vs message size (1 producer, 1 consumer, manual ack, prefetch 100)"
printf "%10s %14s %12s\n" size consumed/s MiB/s
for size in ${SIZES:-16 256 1024 16384 65536 1048576}; do
  r=$(perf --size "$size")
  c=$(echo "$r" | field 'round(j["consumed_per_sec"])')
  printf "%10s %14s %12.1f\n" "$size" "$c" "$(python3 -c "print($c*$size/1048576)")"
done

stop; start  # a fresh broker per section: RSS is not what 1 MiB messages left behind
echo "## throughput vs queues (1 producer round-robin over the queues, one consumer per queue on 10 connections)"
printf "%10s %14s %14s\n" queues consumed/s "peak RSS MiB"
for q in 1 100 10000; do
  r=$(perf --queues "$q" --consumers "$q" --connections 10 --prefix "sq$q")
  echo "$r" | field '"%10d %14d %14.1f" % (j["options"]["queues"], round(j["consumed_per_sec"]), j["broker_peak_rss"] / 1048576)'
done

stop; start
echo "## throughput vs connections (one consumer connection per queue, 1 producer)"
printf "%10s %14s %14s\n" connections consumed/s "peak RSS MiB"
for n in 1 100 1000; do
  r=$(perf --queues "$n" --consumers "$n" --prefix "sc$n")
  echo "$r" | field '"%10d %14d %14.1f" % (j["options"]["consumers"], round(j["consumed_per_sec"]), j["broker_peak_rss"] / 1048576)'
done
stop

echo "## memory"
start
idle=$(rss_kib "$PID")
r=$(D=10 perf --producers 0 --consumers 0 --idle-connections 1000 --prefix idle)
cpu=$(echo "$r" | field 'j["broker_cpu_cores"]')
with=$(echo "$r" | field 'j["broker_peak_rss"]//1024')
echo "idle broker RSS: $((idle / 1024)) MiB"
echo "per idle connection: $(( (with - idle) * 1024 / 1000 )) bytes (1,000 connections)"
echo "idle CPU with 1,000 idle connections: $cpu cores"
stop
start
before=$(rss_kib "$PID")
D=1 perf --producers 0 --consumers 0 --queues 10000 --prefix empty >/dev/null
after=$(rss_kib "$PID")
echo "per empty queue: $(( (after - before) * 1024 / 10000 )) bytes (10,000 queues)"
stop
start
before=$(rss_kib "$PID")
r=$("$BIN" perf --consumers 0 --rate 500000 --warmup 0 --duration 2 --json --prefix backlog 2>/dev/null)
depth=$(echo "$r" | field 'j["queue_depth_end"]')
after=$(rss_kib "$PID")
echo "per queued 16 B message: $(( (after - before) * 1024 / depth )) bytes ($depth messages)"
