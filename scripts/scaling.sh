#!/usr/bin/env bash
# How actormq's cost grows with the work: throughput against message size, queue count
# and connection count; memory per idle connection, per empty queue and per queued
# message; idle CPU with 1,000 idle connections. Topic routing against the number of
# bindings is `cargo bench --bench routing`.
#
#   scripts/scaling.sh                 # DURATION=5 seconds per point by default
#   PORT=5690 SIZES="16 1024" DURATION=2 scripts/scaling.sh
#
# Builds the release binary, then starts its own broker (several times: a fresh one per
# section) on 127.0.0.1:$PORT (default 5680) with a temporary data directory, and
# measures it with `actormq perf`. Refuses to start when something already listens on
# that port: it would measure that instead. The broker's and perf's output go to $OUT
# (default target/scaling); any failure stops the script with a message saying what
# failed and where its log is.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "scaling.sh: unexpected argument '$1' (it takes none; see --help)" >&2; exit 2 ;;
esac

DURATION=${DURATION:-5}
PORT=${PORT:-5680}
OUT=${OUT:-target/scaling}
ADDR=127.0.0.1:$PORT
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "scaling.sh: something already listens on $ADDR (another broker?): stop it, or choose" >&2
  echo "another port with PORT=..." >&2
  exit 1
fi
mkdir -p "$OUT"
LOG="$OUT/actormq.log"
PERF_LOG="$OUT/perf.log"
: >"$PERF_LOG"
trap 'echo "scaling.sh: failed at line $LINENO: $BASH_COMMAND (broker log: $LOG, perf log: $PERF_LOG)" >&2' ERR

echo "scaling.sh: building the release binary, then measuring a broker of its own on $ADDR" >&2
echo "  (${DURATION} s per point; broker log $LOG, perf log $PERF_LOG)" >&2
cargo build --release -q
BIN=target/release/actormq
DATA=$(mktemp -d)
# Keep the broker's data directory out of the working tree, and its port our own.
export ACTORMQ__STORAGE__DATA_DIR="$DATA" ACTORMQ__SERVER__BIND="$ADDR" ACTORMQ__AMQP__BIND="127.0.0.1:0" ACTORMQ__HTTP__BIND="127.0.0.1:0"
PID=

start() {
  RUST_LOG=warn "$BIN" serve >>"$LOG" 2>&1 &
  PID=$!
  local ready=
  for _ in $(seq 100); do
    if ! kill -0 "$PID" 2>/dev/null; then break; fi
    if "$BIN" declare-exchange scaling.ready --type direct --server "$ADDR" >/dev/null 2>&1; then
      ready=1; break
    fi
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    echo "scaling.sh: the broker did not start on $ADDR; the end of its log ($LOG):" >&2
    tail -5 "$LOG" >&2
    exit 1
  fi
  # Start-up reads whole log segments; the allocator hands those buffers back to the
  # OS within a moment. Measure RSS after that, not during it.
  sleep 1
}
stop() { if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=; fi; }
rss_kib() { awk '/VmRSS/ {print $2}' /proc/"$1"/status; }
field() { python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"; }
perf() { "$BIN" perf --server "$ADDR" --duration "${D:-$DURATION}" --json --broker-pid "$PID" "$@" 2>>"$PERF_LOG"; }
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
r=$("$BIN" perf --server "$ADDR" --consumers 0 --rate 500000 --warmup 0 --duration 2 --json --prefix backlog 2>>"$PERF_LOG")
depth=$(echo "$r" | field 'j["queue_depth_end"]')
after=$(rss_kib "$PID")
echo "per queued 16 B message: $(( (after - before) * 1024 / depth )) bytes ($depth messages)"
