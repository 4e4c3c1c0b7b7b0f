#!/usr/bin/env bash
# The cost of watching: what scraping `/metrics` and `/api/queues` once a second costs
# the broker, measured two ways (docs/MANAGEMENT.md has the figures).
#
#   scripts/scrape-overhead.sh                 # both parts, 8 rounds
#   ROUNDS=3 scripts/scrape-overhead.sh cost    # only the CPU cost per scrape
#
# `cost`: starts `actormq serve` (release build) with $QUEUES queues (default 200), each
# holding a message, then reads the broker's own CPU time (/proc/PID/stat) around 300
# scrapes of both endpoints: the broker CPU one scrape costs, net of its idle CPU. This
# figure does not depend on what else the machine runs, where a throughput comparison
# on a shared 2-core VM does.
#
# `pairs`: scenarios 1 and 6 of `actormq perf` (10 s each) without and with a scraper
# (curl, once a second), in alternating order, $ROUNDS rounds: consumed/s and broker CPU
# per consumed message, with the ratio of each pair.
#
# Uses ports 5692 and 15698 on loopback and a temporary data directory; run it from any
# directory (it runs the broker from a temporary one, so no Settings.toml is read).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

BIN=${BIN:-$PWD/target/release/actormq}
ROUNDS=${ROUNDS:-8}
QUEUES=${QUEUES:-200}
WHAT=${1:-all}
[ -x "$BIN" ] || cargo build --release --quiet
OUT=${OUT:-$PWD/target/scrape-overhead}
mkdir -p "$OUT"
DATA=$(mktemp -d)
cd "$DATA"
ACTORMQ__STORAGE__DATA_DIR=$DATA ACTORMQ__SERVER__BIND=127.0.0.1:5692 \
  ACTORMQ__AMQP__BIND=127.0.0.1:0 ACTORMQ__HTTP__BIND=127.0.0.1:15698 RUST_LOG=warn \
  "$BIN" serve >"$OUT/broker.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do
  curl -s -u guest:guest -o /dev/null http://127.0.0.1:15698/api/overview && break
  sleep 0.1
done

if [ "$WHAT" = all ] || [ "$WHAT" = cost ]; then
  python3 - "$PID" "$QUEUES" <<'PY'
import base64, http.client, json, os, sys, time
pid, queues = int(sys.argv[1]), int(sys.argv[2])
tick = os.sysconf("SC_CLK_TCK")
def cpu():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick
auth = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
        "content-type": "application/json"}
def call(conn, method, path, body=None):
    conn.request(method, path, body=body and json.dumps(body), headers=auth)
    r = conn.getresponse(); r.read()
    return r.status
c = http.client.HTTPConnection("127.0.0.1", 15698)
for i in range(queues):
    assert call(c, "PUT", f"/api/queues/%2F/watched-{i}", {"durable": False}) in (201, 204)
    call(c, "POST", "/api/exchanges/%2F/amq.default/publish",
         {"routing_key": f"watched-{i}", "payload": "x" * 16, "payload_encoding": "string",
          "properties": {}})
time.sleep(2)
idle0 = cpu(); time.sleep(10); idle = (cpu() - idle0) / 10
c = http.client.HTTPConnection("127.0.0.1", 15698)
n = 300
t0, w0 = cpu(), time.time()
for _ in range(n):
    call(c, "GET", "/metrics"); call(c, "GET", "/api/queues")
spent, wall = cpu() - t0, time.time() - w0
per = (spent - idle * wall) / n
print(f"{queues} queues: idle broker CPU {idle * 1000:.2f} ms/s; one scrape of /metrics + "
      f"/api/queues costs {per * 1000:.2f} ms of broker CPU, so once a second is "
      f"{per * 100:.2f}% of one core")
for i in range(queues):
    call(c, "DELETE", f"/api/queues/%2F/watched-{i}")
PY
fi

if [ "$WHAT" = all ] || [ "$WHAT" = pairs ]; then
  args() {
    case "$1" in
      1) echo "--producers 1 --consumers 1 --size 16 --prefetch 100" ;;
      6) echo "--producers 1 --consumers 200 --queues 200 --size 16 --prefetch 100" ;;
    esac
  }
  run() { # scenario mode round
    local scraper=""
    if [ "$2" = scrape ]; then
      (while true; do
        curl -s -u guest:guest -o /dev/null http://127.0.0.1:15698/metrics
        curl -s -u guest:guest -o /dev/null http://127.0.0.1:15698/api/queues
        sleep 1
      done) &
      scraper=$!
    fi
    # shellcheck disable=SC2046 # the scenario's arguments, split on purpose
    "$BIN" perf $(args "$1") --server 127.0.0.1:5692 --duration 10 --broker-pid "$PID" \
      --json --prefix "so$1" --delete-queues >"$OUT/s$1-$2-$3.json" 2>/dev/null
    [ -n "$scraper" ] && kill "$scraper"
    return 0
  }
  for r in $(seq "$ROUNDS"); do
    for s in 6 1; do
      if [ $((r % 2)) = 1 ]; then run $s none "$r"; run $s scrape "$r"
      else run $s scrape "$r"; run $s none "$r"; fi
    done
  done
  python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics as st, sys
out, rounds = sys.argv[1], int(sys.argv[2])
for s in (1, 6):
    pairs = []
    for r in range(1, rounds + 1):
        n = json.load(open(f"{out}/s{s}-none-{r}.json")); c = json.load(open(f"{out}/s{s}-scrape-{r}.json"))
        pairs.append((n["consumed_per_sec"], c["consumed_per_sec"],
                      n["broker_cpu_cores"] / n["consumed_per_sec"] * 1e6,
                      c["broker_cpu_cores"] / c["consumed_per_sec"] * 1e6))
    ratios = [c / n for n, c, _, _ in pairs]
    print(f"scenario {s}: consumed/s median {st.median(p[0] for p in pairs):,.0f} without, "
          f"{st.median(p[1] for p in pairs):,.0f} with scraping; pair ratios "
          f"{min(ratios):.2f}-{max(ratios):.2f}, median {st.median(ratios):.3f}; broker CPU "
          f"per message {st.median(p[2] for p in pairs):.2f} vs {st.median(p[3] for p in pairs):.2f} us")
PY
fi
