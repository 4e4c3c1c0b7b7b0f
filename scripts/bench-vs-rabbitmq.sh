#!/usr/bin/env bash
# Side-by-side benchmark: actormq against RabbitMQ on this machine, same tool, same
# workloads (actormq perf, which speaks AMQP 0-9-1 to RabbitMQ through lapin).
#
#   scripts/bench-vs-rabbitmq.sh              # every scenario, 3 rounds, 10 s each
#   ROUNDS=1 DURATION=5 scripts/bench-vs-rabbitmq.sh 1 5   # quick: scenarios 1 and 5
#   CLIENTS="lapin raw" scripts/bench-vs-rabbitmq.sh 1     # AMQP through a second client too
#   ACTORMQ_BIN=/path/to/actormq scripts/bench-vs-rabbitmq.sh  # a release build (--features amqp) kept aside
#
# Each scenario runs against actormq's native protocol, actormq's AMQP 0-9-1 port
# ($ACTORMQ_AMQP_PORT, default 5681) and RabbitMQ, the two AMQP ones through the same
# client: lapin, and with CLIENTS="lapin raw" also `--amqp-client raw`, the tool's own
# lean AMQP client (lapin runs a thread per connection and can be what sets the rate;
# the client CPU columns show it).
#
# Installs RabbitMQ from Debian's packages when it is missing, then starts a RabbitMQ
# node of its own: node name $RABBIT_NODE (default actormq-bench@localhost), AMQP port
# $RABBIT_PORT (default 5673) and distribution port $RABBIT_PORT + 20000, on loopback,
# with its data, logs and (empty) plugin list under $OUT. It never stops or touches
# another node (a system rabbit@localhost keeps running). It starts `actormq serve`
# (release build) on 127.0.0.1:$ACTORMQ_PORT (default 5680), runs each scenario against
# the brokers in turn each round, and prints the medians and the ratios. Raw JSON reports go to $OUT (default target/bench-vs-rabbitmq).
# Refuses to start when one of its ports is taken or its node already runs.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
OUT=${OUT:-target/bench-vs-rabbitmq}
RABBIT_NODE=${RABBIT_NODE:-actormq-bench@localhost}
RABBIT_PORT=${RABBIT_PORT:-5673}
ACTORMQ_PORT=${ACTORMQ_PORT:-5680}
ACTORMQ_ADDR=127.0.0.1:$ACTORMQ_PORT
ACTORMQ_AMQP_PORT=${ACTORMQ_AMQP_PORT:-5681}
CLIENTS=${CLIENTS:-lapin}
for c in $CLIENTS; do
  case "$c" in
    lapin|raw) ;;
    *) echo "bench-vs-rabbitmq.sh: no AMQP client '$c' (CLIENTS: lapin, raw)" >&2; exit 2 ;;
  esac
done
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -eq 0 ] && SCENARIOS=(1 1a 2 3 4 5 6 7)
for s in "${SCENARIOS[@]}"; do
  case "$s" in
    1|1a|2|3|4|5|6|7) ;;
    *) echo "bench-vs-rabbitmq.sh: no scenario '$s' (1 1a 2 3 4 5 6 7; see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
trap 'echo "bench-vs-rabbitmq.sh: failed at line $LINENO: $BASH_COMMAND (logs in $OUT)" >&2' ERR

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$ACTORMQ_PORT" "$ACTORMQ_AMQP_PORT" "$RABBIT_PORT" "$((RABBIT_PORT + 20000))"; do
  if port_taken "$port"; then
    echo "bench-vs-rabbitmq.sh: 127.0.0.1:$port is already in use: stop what listens there, or" >&2
    echo "set ACTORMQ_PORT / ACTORMQ_AMQP_PORT / RABBIT_PORT (RabbitMQ also takes RABBIT_PORT + 20000)" >&2
    exit 1
  fi
done

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "installing rabbitmq-server from Debian's packages..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
fi

echo "bench-vs-rabbitmq.sh: scenarios ${SCENARIOS[*]}; $ROUNDS round(s) of ${DURATION} s per broker;" >&2
echo "  actormq on $ACTORMQ_ADDR, RabbitMQ node $RABBIT_NODE on 127.0.0.1:$RABBIT_PORT; output in $OUT" >&2
if [ -n "${ACTORMQ_BIN:-}" ]; then
  # A binary built before (release, `--features amqp`): to measure a build kept aside.
  BIN=$ACTORMQ_BIN
  echo "using $BIN (ACTORMQ_BIN)" >&2
else
  echo "building actormq (release, with the amqp feature for lapin)..." >&2
  cargo build --release --features amqp -q
  BIN=target/release/actormq
fi

# RabbitMQ: a node of our own, on loopback only, defaults otherwise (as for the
# reference numbers in docs/BENCHMARKS.md). Everything it writes stays under $RABBIT_BASE.
RABBIT_BASE="$OUT/rabbitmq"
rm -rf "$RABBIT_BASE"
mkdir -p "$RABBIT_BASE"
echo "[]." >"$RABBIT_BASE/enabled_plugins"
# Debian's rabbitmq-server runs the node as the rabbitmq user: let it write there.
if id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq:rabbitmq "$RABBIT_BASE"; fi
export RABBITMQ_NODENAME="$RABBIT_NODE" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT="$RABBIT_PORT" RABBITMQ_DIST_PORT="$((RABBIT_PORT + 20000))" \
  RABBITMQ_MNESIA_BASE="$RABBIT_BASE/mnesia" RABBITMQ_LOG_BASE="$RABBIT_BASE/log" \
  RABBITMQ_PID_FILE="$RABBIT_BASE/rabbit.pid" RABBITMQ_ENABLED_PLUGINS_FILE="$RABBIT_BASE/enabled_plugins" \
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
rabbitmqctl_own() { rabbitmqctl -q -n "$RABBIT_NODE" "$@"; }
if rabbitmqctl_own status >/dev/null 2>&1; then
  echo "bench-vs-rabbitmq.sh: a node named $RABBIT_NODE already runs; stop it or set RABBIT_NODE" >&2
  exit 1
fi
RABBIT_STARTED=
ACTORMQ_PID=
DATA=$(mktemp -d)
cleanup() {
  if [ -n "$ACTORMQ_PID" ]; then kill "$ACTORMQ_PID" 2>/dev/null || true; fi
  if [ -n "$RABBIT_STARTED" ]; then rabbitmqctl_own stop >/dev/null 2>&1 || true; fi
  rm -rf "$DATA"
}
trap cleanup EXIT
rabbitmq-server -detached >"$RABBIT_BASE/start.log" 2>&1
RABBIT_STARTED=1
# The node registers with epmd a few seconds after -detached; a node that failed to
# boot leaves no log of its own beyond $RABBIT_BASE/log. A minute at most.
rabbit_up=
deadline=$((SECONDS + 60))
while [ $SECONDS -lt $deadline ]; do
  if rabbitmqctl_own await_startup --timeout 5 >/dev/null 2>&1; then rabbit_up=1; break; fi
  sleep 0.5
done
if [ -z "$rabbit_up" ]; then
  echo "bench-vs-rabbitmq.sh: RabbitMQ node $RABBIT_NODE did not start within 60 s; see $RABBIT_BASE/log" >&2
  exit 1
fi
RABBIT_PID=$(cat "$RABBIT_BASE/rabbit.pid" 2>/dev/null || pgrep -f "beam.smp.*$RABBIT_NODE" | head -1)

# Keep the broker's data directory out of the working tree, and its port our own.
ACTORMQ_LOG="$OUT/actormq.log"
ACTORMQ__STORAGE__DATA_DIR="$DATA" ACTORMQ__SERVER__BIND="$ACTORMQ_ADDR" ACTORMQ__AMQP__BIND="127.0.0.1:$ACTORMQ_AMQP_PORT" ACTORMQ__HTTP__BIND="127.0.0.1:0" RUST_LOG=warn \
  "$BIN" serve >"$ACTORMQ_LOG" 2>&1 &
ACTORMQ_PID=$!
ready=
for _ in $(seq 100); do  # wait for readiness (a request that succeeds), 10 s at most
  kill -0 "$ACTORMQ_PID" 2>/dev/null || break
  if "$BIN" declare-exchange bench.ready --type direct --server "$ACTORMQ_ADDR" >/dev/null 2>&1; then
    ready=1; break
  fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "bench-vs-rabbitmq.sh: actormq did not start on $ACTORMQ_ADDR; the end of $ACTORMQ_LOG:" >&2
  tail -5 "$ACTORMQ_LOG" >&2
  exit 1
fi

idle_actormq=$(awk '/VmRSS/ {print $2}' /proc/$ACTORMQ_PID/status)
idle_rabbit=$(awk '/VmRSS/ {print $2}' /proc/$RABBIT_PID/status)

# Every run deletes its queues at the end: a backlog one broker is left with (RabbitMQ
# ends scenarios 1 and 2 with 130k-290k messages queued) must not cost it CPU while the
# other broker is being measured.
# Scenario 3 runs the load generator on two threads: on one, its five connections
# kept it at ~0.9 cores and it, not the broker (0.7 cores), set the rate. Both brokers
# get the same client.
scenario_args() {
  case "$1" in
    1)  echo "--producers 1 --consumers 1 --size 16 --prefetch 100" ;;
    1a) echo "--producers 1 --consumers 1 --size 16 --prefetch 100 --auto-ack" ;;
    2)  echo "--producers 1 --consumers 1 --size 1024 --prefetch 100" ;;
    3)  echo "--producers 1 --consumers 4 --queues 4 --exchange-type fanout --size 16 --prefetch 100 --threads 2" ;;
    4)  echo "--producers 1 --consumers 1 --size 1024 --persistent --confirm --confirm-window 1000 --prefetch 100" ;;
    5)  echo "--producers 1 --consumers 1 --size 16 --rate 5000 --prefetch 100" ;;
    6)  echo "--producers 1 --consumers 200 --queues 200 --size 16 --prefetch 100" ;;
    7)  echo "--producers 1 --consumers 1 --size 16 --prefetch 100 --rate 100000 --consumer-rate 50000" ;;
  esac
}
scenario_name() {
  case "$1" in
    1)  echo "1P1C transient 16 B manual ack prefetch 100" ;;
    1a) echo "1P1C transient 16 B auto-ack" ;;
    2)  echo "1P1C transient 1 KiB manual ack" ;;
    3)  echo "fanout to 4 queues, 4 consumers, 16 B" ;;
    4)  echo "durable, persistent 1 KiB, confirms (1000 outstanding)" ;;
    5)  echo "latency at 5000 msg/s, 16 B" ;;
    6)  echo "200 consumer connections on own queues + 1 publisher" ;;
    7)  echo "consumer at half the producer's rate (30 s)" ;;
  esac
}

ACTORMQ_URL="amqp://guest:guest@127.0.0.1:$ACTORMQ_AMQP_PORT/%2f"
RABBIT_URL="amqp://guest:guest@127.0.0.1:$RABBIT_PORT/%2f"
# One run: name, broker pid, then the perf arguments that pick the broker.
run_one() {
  local name=$1 pid=$2; shift 2
  echo "scenario $s round $r: $name" >&2
  "$BIN" perf $args "$@" --duration "$dur" --broker-pid "$pid" --json --prefix "bench$s" --delete-queues \
    >"$OUT/s$s-$name-$r.json" 2>"$OUT/s$s-$name-$r.log"
}
for s in "${SCENARIOS[@]}"; do
  args=$(scenario_args "$s")
  dur=$DURATION; [ "$s" = 7 ] && dur=30
  for r in $(seq "$ROUNDS"); do
    run_one native "$ACTORMQ_PID" --server "$ACTORMQ_ADDR"
    for c in $CLIENTS; do
      run_one "amqp-$c" "$ACTORMQ_PID" --amqp-url "$ACTORMQ_URL" --amqp-client "$c"
      run_one "rabbitmq-$c" "$RABBIT_PID" --amqp-url "$RABBIT_URL" --amqp-client "$c"
    done
  done
done

python3 - "$OUT" "$idle_actormq" "$idle_rabbit" "$CLIENTS" "${SCENARIOS[@]}" <<'PY'
import json, statistics, sys, glob, os
out, idle_a, idle_r, clients, scen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(), sys.argv[5:]
def load(s, who):
    return [json.load(open(f)) for f in sorted(glob.glob(f"{out}/s{s}-{who}-*.json"))]
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
def fmt(x):
    if x is None: return "-"
    return f"{x:,.0f}"
def ratio(a, b):
    return f"{a / b:.2f}x" if (a is not None and b) else "-"
def cpu(runs):
    b, c = med([j.get("broker_cpu_cores") for j in runs]), med([j.get("client_cpu_cores") for j in runs])
    return f"{b:.2f}/{c:.2f}" if b is not None and c is not None else "-"
print(f"\nactormq (native, AMQP) vs RabbitMQ, medians of rounds, {os.uname().nodename}, {os.cpu_count()} cores")
print("CPU columns: broker/client cores. AMQP ratios: actormq's AMQP port / RabbitMQ, and / actormq native.")
for client in clients:
    print(f"\nAMQP client: {client}")
    print(f"{'sc':<3} {'metric':<13} {'native':>11} {'AMQP':>11} {'RabbitMQ':>11} {'AMQP/RMQ':>9} {'AMQP/nat':>9} {'native CPU':>11} {'AMQP CPU':>11} {'RMQ CPU':>11}")
    for s in scen:
        n, a, r = load(s, "native"), load(s, f"amqp-{client}"), load(s, f"rabbitmq-{client}")
        if not n or not a or not r: continue
        metrics = [("consumed/s", lambda j: j["consumed_per_sec"])]
        if s == "4": metrics = [("confirmed/s", lambda j: j["confirmed_per_sec"])]
        if s == "5": metrics = [("p50 µs", lambda j: j["latency_us"]["p50"]),
                                ("p99 µs", lambda j: j["latency_us"]["p99"]),
                                ("p99.9 µs", lambda j: j["latency_us"]["p999"])]
        if s in ("6", "7"): metrics.append(("peak RSS MiB", lambda j: (j["broker_peak_rss"] or 0) / 1048576))
        if s == "7": metrics.append(("depth at end", lambda j: j["queue_depth_end"]))
        for i, (name, f) in enumerate(metrics):
            mn, ma, mr = (med([f(j) for j in x]) for x in (n, a, r))
            cpus = (cpu(n), cpu(a), cpu(r)) if i == 0 else ("", "", "")
            print(f"{s:<3} {name:<13} {fmt(mn):>11} {fmt(ma):>11} {fmt(mr):>11} {ratio(ma, mr):>9} {ratio(ma, mn):>9} {cpus[0]:>11} {cpus[1]:>11} {cpus[2]:>11}")
print(f"\nidle RSS: actormq {idle_a/1024:.1f} MiB, RabbitMQ {idle_r/1024:.1f} MiB")
PY
