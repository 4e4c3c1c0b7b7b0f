#!/usr/bin/env bash
# A quorum queue's leader while one of its followers is down (issue 17, "Snapshots sent
# to a member behind the purged log"): 3 actormq nodes on loopback, one publisher with
# confirms and no consumer (the queue grows), one follower killed -9 after $KILL_AFTER s;
# reported for the time it is down: how often the leader's queue was captured for the
# snapshot openraft sends to the member behind the purged log, how long each capture
# held the machine's lock, how often the last capture was sent again instead, the
# leader's CPU and the publish rate. Then the follower is restarted and the time until
# its member holds the whole queue (sent the snapshot, in chunks) is reported.
#
#   ACTORMQ_BIN=/path/to/actormq scripts/bench-lagging.sh
#   DURATION=40 KILL_AFTER=15 SIZE=100 RATE=15000 scripts/bench-lagging.sh   # RATE 0: as fast as it goes
#
# Nodes i (1..3) on 127.0.0.1:$PORT_BASE+i (native), +10+i (AMQP), +20+i (HTTP), +30+i
# (cluster); PORT_BASE defaults to 6300. Everything goes to $OUT (default
# target/bench-lagging), deleted at the end unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-40}
KILL_AFTER=${KILL_AFTER:-15}
SIZE=${SIZE:-100}
RATE=${RATE:-0}
PORT_BASE=${PORT_BASE:-6300}
OUT=${OUT:-target/bench-lagging}
KEEP=${KEEP:-0}
if [ "$KILL_AFTER" -ge "$((DURATION - 5))" ]; then
  echo "bench-lagging.sh: KILL_AFTER must be at least 5 s below DURATION" >&2; exit 2
fi
BIN=${ACTORMQ_BIN:-target/release/actormq}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -rf "${OUT:?}"/*

native_port() { echo $((PORT_BASE + $1)); }
amqp_port() { echo $((PORT_BASE + 10 + $1)); }
http_port() { echo $((PORT_BASE + 20 + $1)); }
cluster_port() { echo $((PORT_BASE + 30 + $1)); }

export ACTORMQ__CLUSTER__SECRET="bench-lagging-secret-0123456789"
PIDS=(0 0 0 0)
PERF_PID=0
cleanup() {
  for i in 1 2 3; do
    if [ "${PIDS[$i]}" != 0 ]; then kill "${PIDS[$i]}" 2>/dev/null || true; fi
  done
  if [ "$PERF_PID" != 0 ]; then kill "$PERF_PID" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  if [ "$KEEP" != 1 ]; then rm -rf "${OUT:?}"/n1 "${OUT:?}"/n2 "${OUT:?}"/n3; fi
}
trap cleanup EXIT

for i in 1 2 3; do
  mkdir -p "$OUT/n$i"
  cat >"$OUT/n$i/Settings.toml" <<EOF
[server]
bind = "127.0.0.1:$(native_port "$i")"
[amqp]
bind = ["127.0.0.1:$(amqp_port "$i")"]
[http]
bind = ["127.0.0.1:$(http_port "$i")"]
[storage]
data_dir = "$OUT/n$i/data"
[cluster]
node_id = $i
bind = "127.0.0.1:$(cluster_port "$i")"
seeds = [
  { id = 1, address = "127.0.0.1:$(cluster_port 1)" },
  { id = 2, address = "127.0.0.1:$(cluster_port 2)" },
  { id = 3, address = "127.0.0.1:$(cluster_port 3)" },
]
EOF
done
start() {
  local i=$1
  (cd "$OUT/n$i" && RUST_LOG="warn,actormq::cluster::quorum::group=debug,actormq::cluster::quorum::wire=info" exec "$BIN" serve --config Settings.toml >>"$OUT/n$i/actormq.log" 2>&1) &
  PIDS[$i]=$!
}
await() {
  local i=$1 deadline=$((SECONDS + 60))
  while [ $SECONDS -lt $deadline ]; do
    if "$BIN" declare-exchange bench.ready --type direct --server "127.0.0.1:$(native_port "$i")" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "bench-lagging.sh: node $i did not get ready (see $OUT/n$i/actormq.log)" >&2; exit 1
}
for i in 1 2 3; do start "$i"; done
for i in 1 2 3; do await "$i"; done

url() { echo "amqp://guest:guest@127.0.0.1:$(amqp_port "$1")/%2f"; }
"$BIN" perf --producers 0 --consumers 0 --duration 0 --warmup 0 --persistent --queue-type quorum \
  --prefix lag --amqp-url "$(url 1)" --amqp-client raw >"$OUT/declare.log" 2>&1
# The group's leader, by the port in its node's name as /api/queues gives it.
queue_field() { # node, field
  curl -sf -u guest:guest "http://127.0.0.1:$(http_port "$1")/api/queues/%2f/lag.q0" |
    python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1]))' "$2"
}
leader=""
for _ in $(seq 100); do
  name=$(queue_field 1 leader || true)
  for i in 1 2 3; do
    case "$name" in *"$(cluster_port "$i")"* | *"node$i@"*) leader=$i ;; esac
  done
  [ -n "$leader" ] && break
  sleep 0.2
done
[ -n "$leader" ] || { echo "bench-lagging.sh: no leader for lag.q0 (last: $name)" >&2; exit 1; }
down=$((leader % 3 + 1))
echo "leader: node $leader; the follower killed: node $down" >&2

"$BIN" perf --producers 1 --consumers 0 --size "$SIZE" --persistent --confirm --confirm-window 1000 \
  --rate "$RATE" --duration "$DURATION" --warmup 0 --prefix lag --predeclared --amqp-url "$(url "$leader")" \
  --amqp-client raw --json >"$OUT/perf.json" 2>"$OUT/perf.log" &
PERF_PID=$!
sleep "$KILL_AFTER"
ticks() { awk '{print $14 + $15}' "/proc/${PIDS[$leader]}/stat"; }
log="$OUT/n$leader/actormq.log"
from=$(wc -l <"$log")
t0=$(ticks); s0=$(date +%s.%N)
kill -9 "${PIDS[$down]}"; PIDS[$down]=0
load=$(cut -d' ' -f1-3 /proc/loadavg)
sleep "$((DURATION - KILL_AFTER - 2))"
t1=$(ticks); s1=$(date +%s.%N)
wait "$PERF_PID"; PERF_PID=0
tail -n +"$from" "$log" >"$OUT/down.log"
hz=$(getconf CLK_TCK)
python3 - "$OUT/down.log" "$OUT/perf.json" "$t0" "$t1" "$s0" "$s1" "$hz" "$load" <<'PY'
import json, re, sys
log, perf, t0, t1, s0, s1, hz, load = sys.argv[1:]
held = []; built = []; again = 0
for line in open(log, errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    if "queue captured for a snapshot" in line:
        us = int(re.search(r"\bus[=:] ?(\d+)", line).group(1))
        (built if re.search(r"rebase[=:] ?true", line) else held).append(us)
    elif "last capture sent again" in line:
        again += 1
secs = float(s1) - float(s0)
cpu = (int(t1) - int(t0)) / int(hz) / secs * 100
try:
    p = json.load(open(perf))
    rate = {k: p.get(k) for k in ("published_per_sec", "confirmed_per_sec", "queue_depth_end")}
except Exception as e:
    rate = f"(perf json unreadable: {e})"
def ms(v): return f"{sum(v)/1000:.1f} ms in all, max {max(v)/1000:.1f} ms" if v else "none"
print(f"load average at the kill: {load}")
print(f"follower down for {secs:.1f} s: leader CPU {cpu:.0f}%")
print(f"captures to send to the member behind: {len(held)} ({ms(held)}); sent again from the last capture: {again}")
print(f"snapshots built (the cadence): {len(built)} ({ms(built)})")
print(f"publisher: {json.dumps(rate)[:400]}")
PY

# The follower back: until its member holds the whole queue.
expected=$(queue_field "$leader" messages)
start "$down"
s0=$(date +%s.%N)
deadline=$((SECONDS + 300))
while [ $SECONDS -lt $deadline ]; do
  got=$(queue_field "$down" messages 2>/dev/null || true)
  [ "$got" = "$expected" ] && break
  sleep 0.2
done
s1=$(date +%s.%N)
echo "node $down back: holds $got of $expected messages after $(python3 -c "print(f'{$s1 - $s0:.1f}')") s (start included)"
grep -h "installing the snapshot received" "$OUT/n$down/actormq.log" | tail -1 || true
