#!/usr/bin/env bash
# Times a broker's restart on a data directory that holds a long stream (docs/STREAMS.md,
# docs/BENCHMARKS.md): from the broker's spawn to its "listening" line, and to the
# stream answering with all its records (a passive declare reporting RECORDS messages),
# with the broker's CPU by then (/proc/<pid>/stat); then the time to read the stream's
# first record (from a sealed segment) and its last. The broker is killed with SIGKILL
# at the end, so the next run is a restart after kill -9.
#
#   scripts/stream-recovery.sh BIN DATA_DIR QUEUE RECORDS [cold]
#
# `cold` drops the page cache first (echo 3 > /proc/sys/vm/drop_caches, as root).
# Make the stream with examples/stream_fill.rs (declare it on a broker first).
set -euo pipefail
bin=$1 data=$2 queue=$3 want=$4 cold=${5:-}
out=$(mktemp) log=$(mktemp) cfg=$(mktemp --suffix=.toml)
trap 'rm -f "$out" "$log" "$cfg"' EXIT
printf '[broker]\nworkers = 2\n' >"$cfg"
if [ "$cold" = cold ]; then
    sync
    echo 3 >/proc/sys/vm/drop_caches
fi
now() { date +%s.%N; }
t0=$(now)
ACTORMQ__SERVER__BIND=127.0.0.1:0 ACTORMQ__AMQP__BIND=127.0.0.1:0 \
    ACTORMQ__HTTP__BIND=127.0.0.1:0 ACTORMQ__STORAGE__DATA_DIR="$data" RUST_LOG=info \
    "$bin" serve --config "$cfg" >"$out" 2>"$log" &
pid=$!
addr=
while [ -z "$addr" ]; do
    addr=$(sed -n 's/^actormq listening on //p' "$out")
    kill -0 "$pid" || { cat "$log"; exit 1; }
    [ -n "$addr" ] || sleep 0.01
done
t_listen=$(now)
until "$bin" declare-queue --server "$addr" --passive "$queue" 2>/dev/null |
    grep -qx "messages: $want"; do
    sleep 0.02
done
t_answer=$(now)
read -r -a stat <"/proc/$pid/stat"
cpu=$(echo "scale=2; (${stat[13]} + ${stat[14]}) / $(getconf CLK_TCK)" | bc)
t1=$(now)
"$bin" consume --server "$addr" --queue "$queue" --count 1 --timeout 60 \
    --arg x-stream-offset=first >/dev/null
t_first=$(now)
"$bin" consume --server "$addr" --queue "$queue" --count 1 --timeout 60 \
    --arg x-stream-offset=$((want - 1)) >/dev/null
t_last=$(now)
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
printf 'listening %.2f s, answering with %s records %.2f s (broker CPU %s s); first record read in %.2f s, last in %.2f s; %s\n' \
    "$(echo "$t_listen - $t0" | bc)" "$want" "$(echo "$t_answer - $t0" | bc)" "$cpu" \
    "$(echo "$t_first - $t1" | bc)" "$(echo "$t_last - $t_first" | bc)" "$(uptime | sed 's/.*load/load/')"
grep -E "stream recovered|index not used" "$log" | tail -3 || true
