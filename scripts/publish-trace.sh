#!/usr/bin/env bash
# Records the syscalls of a confirmed stream publish (1 KiB, window 1,000, 1 producer),
# broker and client on one clock, for scripts/publish-stages.py; or of
# scripts/publish-ceiling.c, the same job in C.
#
#   scripts/publish-trace.sh broker BIN OUT   # OUT-b.data, OUT-c.data, OUT.json
#   scripts/publish-trace.sh ceiling CEILING_BINARY OUT   # OUT.data
#   scripts/publish-stages.py broker OUT-b.data OUT-c.data
#
# A fresh broker on a free port with its data under $TMPDIR, removed after. The stream
# is declared first and the broker's recording started before the client publishes, so
# both byte streams are followed from their first message. DURATION (default 2 s,
# after a 1 s warm-up). Needs perf (root or perf_event_paranoid <= 1).
set -euo pipefail
mode=$1 bin=$2 out=$3
filter='id == 0 || id == 1 || id == 18 || id == 20 || id == 44 || id == 45 || id == 75 || id == 202'
record() { exec perf record -q -k CLOCK_MONOTONIC -e raw_syscalls:sys_enter --filter "$filter" \
  -e raw_syscalls:sys_exit --filter "$filter" "$@"; }
load() { cut -d' ' -f1 /proc/loadavg; }
if [ "$mode" = ceiling ]; then
  dir=$(mktemp -d)
  echo "load $(load)"
  (record -o "$out.data" -- "$bin" "$dir" 1024 1000 "${DURATION:-3}" 1)
  rm -rf "$dir"
  exit 0
fi
dir=$(mktemp -d)
port=$((21000 + RANDOM % 2000))
ACTORMQ__STORAGE__DATA_DIR="$dir" ACTORMQ__SERVER__BIND="127.0.0.1:$port" \
  ACTORMQ__AMQP__BIND=127.0.0.1:0 ACTORMQ__HTTP__BIND=127.0.0.1:0 RUST_LOG=warn \
  "$bin" serve >"$out.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null; rm -rf "$dir"' EXIT
until "$bin" declare-exchange bench.ready --type direct --server "127.0.0.1:$port" >/dev/null 2>&1; do sleep 0.1; done
"$bin" perf --server "127.0.0.1:$port" --stream --producers 0 --consumers 0 --warmup 0 --duration 1 >/dev/null
record -p "$broker" -o "$out-b.data" &
recorder=$!
sleep 1
echo "load $(load)"
(record -o "$out-c.data" -- "$bin" perf --server "127.0.0.1:$port" --stream --predeclared --confirm \
  --size 1024 --confirm-window 1000 --producers 1 --consumers 0 --warmup 1 \
  --duration "${DURATION:-2}" --broker-pid "$broker" --json >"$out.json")
kill -INT $recorder
wait $recorder || true
echo "load $(load)"
