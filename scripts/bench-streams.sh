#!/usr/bin/env bash
# Streams side by side, in one run on this machine: actormq's stream queues (native
# protocol), RabbitMQ 3.x's stream queue over AMQP 0-9-1 (the same `actormq perf`, through
# its raw AMQP client), and NATS JetStream (file storage) through async-nats (the peer
# tool in benches/peers/nats, a cargo project of its own, not a member of actormq's
# workspace). For each: publish with confirms, 1 KiB, WINDOW outstanding, then replay the
# stream from its first record.
#
#   scripts/bench-streams.sh                      # ROUNDS=3, PUB_SECONDS=15, REPLAY_SECONDS=4
#   ROUNDS=1 PUB_SECONDS=5 scripts/bench-streams.sh
#   scripts/bench-streams.sh --scaling            # actormq alone: replay vs message size
#                                                 # (16 B, 1 KiB, 64 KiB) and vs consumers
#                                                 # (1, 10, 100 of one stream)
#   PRODUCERS=2 JETSTREAM=0 ACTORMQ_BIN=/path/to/actormq scripts/bench-streams.sh
#                                                 # 2 publishing connections to the one stream,
#                                                 # no JetStream, a release build kept aside
#
# Each round also runs scripts/publish-ceiling.c (built with cc) with the same size,
# window and producers: the rate at which a program that only reads the frames, appends
# them, fdatasyncs and confirms can go on this machine, the bound no broker with the same
# fsync rule passes (CEILING=0 skips it).
#
# Starts its own brokers, on loopback, with their data under $OUT (default
# target/bench-streams; removed at the end): actormq on $ACTORMQ_PORT (5780), a RabbitMQ
# node $RABBIT_NODE (actormq-streams@localhost) on $RABBIT_PORT (5783, distribution
# port + 20000), nats-server -js on $NATS_PORT (4333). Refuses to start when one of the
# ports is taken. Prints the medians over the rounds: rates, and the broker's CPU per
# message (from /proc/<pid>/stat), the figure that holds when the client sets the rate.
#
# What "confirmed" means differs: actormq confirms after the group's fsync; RabbitMQ's
# stream queue after the write to the OS (osiris does not fsync; replicas are its
# durability); JetStream 2.9 syncs its files every 2 minutes by default, not per write.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALING=
case "${1:-}" in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
  --scaling) SCALING=1 ;;
  "") ;;
  *) echo "bench-streams.sh: unexpected argument '$1' (see --help)" >&2; exit 2 ;;
esac

ROUNDS=${ROUNDS:-3}
PUB_SECONDS=${PUB_SECONDS:-15}
REPLAY_SECONDS=${REPLAY_SECONDS:-4}
SIZE=${SIZE:-1024}
WINDOW=${WINDOW:-1000}
PRODUCERS=${PRODUCERS:-1}
JETSTREAM=${JETSTREAM:-1}
CEILING=${CEILING:-1}
OUT=${OUT:-target/bench-streams}
ACTORMQ_PORT=${ACTORMQ_PORT:-5780}
RABBIT_NODE=${RABBIT_NODE:-actormq-streams@localhost}
RABBIT_PORT=${RABBIT_PORT:-5783}
NATS_PORT=${NATS_PORT:-4333}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$ACTORMQ_PORT" "$RABBIT_PORT" "$((RABBIT_PORT + 20000))" "$NATS_PORT"; do
  if port_taken "$port"; then
    echo "bench-streams.sh: 127.0.0.1:$port is already in use (set ACTORMQ_PORT, RABBIT_PORT, NATS_PORT)" >&2
    exit 1
  fi
done
pkgs=rabbitmq-server
if [ "$JETSTREAM" = 1 ]; then pkgs="$pkgs nats-server"; fi
for pkg in $pkgs; do
  if ! command -v "$pkg" >/dev/null 2>&1; then
    echo "installing $pkg from Debian's packages..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
  fi
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
trap 'echo "bench-streams.sh: failed at line $LINENO: $BASH_COMMAND (logs in $OUT)" >&2' ERR

if [ -n "${ACTORMQ_BIN:-}" ]; then
  BIN=$ACTORMQ_BIN
else
  echo "bench-streams.sh: building actormq (release)..." >&2
  cargo build --release -q
  BIN=target/release/actormq
fi
if [ -z "$SCALING" ] && [ "$JETSTREAM" = 1 ]; then
  echo "bench-streams.sh: building the JetStream peer tool..." >&2
  CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/peers" \
    cargo build --release -q --manifest-path benches/peers/nats/Cargo.toml
fi
NATS_BENCH="${CARGO_TARGET_DIR:-$PWD/target}/peers/release/nats-peer-bench"
CEILING_BIN="$OUT/publish-ceiling"
if [ -z "$SCALING" ] && [ "$CEILING" = 1 ]; then
  cc -O2 -pthread -o "$CEILING_BIN" scripts/publish-ceiling.c
fi

ACTORMQ_PID= RABBIT_STARTED= NATS_PID=
rabbitmqctl_own() { rabbitmqctl -q -n "$RABBIT_NODE" "$@"; }
cleanup() {
  if [ -n "$ACTORMQ_PID" ]; then kill "$ACTORMQ_PID" 2>/dev/null || true; fi
  if [ -n "$NATS_PID" ]; then kill "$NATS_PID" 2>/dev/null || true; fi
  if [ -n "$RABBIT_STARTED" ]; then rabbitmqctl_own stop >/dev/null 2>&1 || true; fi
  wait 2>/dev/null || true
  rm -rf "$OUT/actormq-data" "$OUT/rabbitmq" "$OUT/nats-data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# actormq: storage on (fsync = always, the default), its own data directory.
rm -rf "$OUT/actormq-data"
ACTORMQ__STORAGE__DATA_DIR="$OUT/actormq-data" ACTORMQ__SERVER__BIND="127.0.0.1:$ACTORMQ_PORT" \
  ACTORMQ__AMQP__BIND="127.0.0.1:0" ACTORMQ__HTTP__BIND="127.0.0.1:0" RUST_LOG=warn \
  "$BIN" serve >"$OUT/actormq.log" 2>&1 &
ACTORMQ_PID=$!

if [ -n "$SCALING" ]; then
  until "$BIN" declare-exchange bench.ready --type direct --server "127.0.0.1:$ACTORMQ_PORT" >/dev/null 2>&1; do sleep 0.2; done
  one() {  # name, then perf arguments: one JSON report in $OUT/scaling-<name>.json
    local name=$1; shift
    "$BIN" perf --server "127.0.0.1:$ACTORMQ_PORT" --stream --broker-pid "$ACTORMQ_PID" --json "$@" \
      >"$OUT/scaling-$name.json" 2>"$OUT/scaling-$name.log"
  }
  row() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); s=int(sys.argv[3]); r=j["consumed_per_sec"] or j["confirmed_per_sec"]; b=j.get("broker_us_per_msg") or 0; c=j.get("client_cpu_cores") or 0; print(f"| {sys.argv[2]} | {r/1000:.1f}k msg/s | {r*s/1e6:.1f} MB/s | {b:.2f} | {c:.2f} |")' "$OUT/scaling-$1.json" "$2" "$3"; }
  echo "| run | rate | bodies | broker µs/msg | client cores |"
  echo "|---|---|---|---|---|"
  for size in 16 1024 65536; do
    one "pub-$size" --prefix "sc$size" --producers 2 --consumers 0 --confirm --size "$size" --duration "$PUB_SECONDS"
    row "pub-$size" "publish with confirms, $size B, 2 producers" "$size"
    one "replay-$size" --prefix "sc$size" --predeclared --producers 0 --consumers 1 --prefetch 1000 \
      --multi-ack 100 --warmup 0 --duration "$REPLAY_SECONDS"
    row "replay-$size" "replay from first, $size B, 1 consumer" "$size"
  done
  for n in 1 10 100; do
    conns=$(( n < 10 ? n : 10 ))
    one "consumers-$n" --prefix sc1024 --predeclared --producers 0 --consumers "$n" --connections "$conns" \
      --threads 2 --prefetch 1000 --multi-ack 100 --warmup 0 --duration "$REPLAY_SECONDS"
    row "consumers-$n" "replay from first, 1 KiB, $n consumers of one stream ($conns connections), in all" 1024
  done
  exit 0
fi

# RabbitMQ: a node of our own (as scripts/bench-vs-rabbitmq.sh starts it).
RABBIT_BASE="$OUT/rabbitmq"
rm -rf "$RABBIT_BASE"; mkdir -p "$RABBIT_BASE"
echo "[]." >"$RABBIT_BASE/enabled_plugins"
if id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq:rabbitmq "$RABBIT_BASE"; fi
if rabbitmqctl_own status >/dev/null 2>&1; then
  echo "bench-streams.sh: a node named $RABBIT_NODE already runs; stop it or set RABBIT_NODE" >&2
  exit 1
fi
RABBITMQ_NODENAME="$RABBIT_NODE" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT="$RABBIT_PORT" RABBITMQ_DIST_PORT="$((RABBIT_PORT + 20000))" \
  RABBITMQ_MNESIA_BASE="$RABBIT_BASE/mnesia" RABBITMQ_LOG_BASE="$RABBIT_BASE/log" \
  RABBITMQ_PID_FILE="$RABBIT_BASE/rabbit.pid" RABBITMQ_ENABLED_PLUGINS_FILE="$RABBIT_BASE/enabled_plugins" \
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
  rabbitmq-server -detached >"$RABBIT_BASE/start.log" 2>&1
RABBIT_STARTED=1

# NATS with JetStream, file storage under $OUT.
if [ "$JETSTREAM" = 1 ]; then
  rm -rf "$OUT/nats-data"
  nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$OUT/nats-data" >"$OUT/nats.log" 2>&1 &
  NATS_PID=$!
fi

deadline=$((SECONDS + 90))
until "$BIN" declare-exchange bench.ready --type direct --server "127.0.0.1:$ACTORMQ_PORT" >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { echo "bench-streams.sh: actormq did not start (see $OUT/actormq.log)" >&2; exit 1; }
  sleep 0.2
done
until rabbitmqctl_own await_startup --timeout 5 >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { echo "bench-streams.sh: RabbitMQ did not start (see $RABBIT_BASE/log)" >&2; exit 1; }
  sleep 0.5
done
until [ "$JETSTREAM" = 0 ] || port_taken "$NATS_PORT"; do
  [ $SECONDS -lt $deadline ] || { echo "bench-streams.sh: nats-server did not start (see $OUT/nats.log)" >&2; exit 1; }
  sleep 0.2
done
RABBIT_PID=$(cat "$RABBIT_BASE/rabbit.pid")
RABBIT_URL="amqp://guest:guest@127.0.0.1:$RABBIT_PORT/%2f"

# One broker, one round: publish for PUB_SECONDS, then replay what it holds from first.
perf_pair() {
  local who=$1 pid=$2 r=$3; shift 3
  local prefix="bs$r"
  "$BIN" perf "$@" --stream --prefix "$prefix" --producers "$PRODUCERS" --consumers 0 --size "$SIZE" \
    --confirm --confirm-window "$WINDOW" --duration "$PUB_SECONDS" --broker-pid "$pid" --json \
    >"$OUT/$who-publish-$r.json" 2>"$OUT/$who-publish-$r.log"
  "$BIN" perf "$@" --stream --prefix "$prefix" --predeclared --producers 0 --consumers 1 \
    --prefetch 1000 --multi-ack 100 --warmup 0 --duration "$REPLAY_SECONDS" --broker-pid "$pid" \
    --json --delete-queues >"$OUT/$who-replay-$r.json" 2>"$OUT/$who-replay-$r.log"
}
for r in $(seq "$ROUNDS"); do
  echo "round $r: actormq" >&2
  perf_pair actormq "$ACTORMQ_PID" "$r" --server "127.0.0.1:$ACTORMQ_PORT"
  echo "round $r: rabbitmq" >&2
  perf_pair rabbitmq "$RABBIT_PID" "$r" --amqp-url "$RABBIT_URL" --amqp-client raw
  if [ "$JETSTREAM" = 1 ]; then
    echo "round $r: jetstream" >&2
    "$NATS_BENCH" publish --url "nats://127.0.0.1:$NATS_PORT" --stream "bs$r" --size "$SIZE" \
      --window "$WINDOW" --duration "$PUB_SECONDS" --pid "$NATS_PID" >"$OUT/jetstream-publish-$r.json"
    "$NATS_BENCH" replay --url "nats://127.0.0.1:$NATS_PORT" --stream "bs$r" --warmup 0 \
      --duration "$REPLAY_SECONDS" --pid "$NATS_PID" >"$OUT/jetstream-replay-$r.json"
  fi
  if [ "$CEILING" = 1 ]; then
    echo "round $r: ceiling" >&2
    "$CEILING_BIN" "$OUT" "$SIZE" "$WINDOW" "$PUB_SECONDS" "$PRODUCERS" >"$OUT/ceiling-$r.txt"
  fi
done

python3 - "$OUT" "$ROUNDS" "$SIZE" "$JETSTREAM" "$CEILING" "$PRODUCERS" <<'PY'
import json, re, statistics, sys
out, rounds, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
jetstream, ceiling, producers = sys.argv[4] == "1", sys.argv[5] == "1", sys.argv[6]
def load(who, mode):
    return [json.load(open(f"{out}/{who}-{mode}-{r}.json")) for r in range(1, rounds + 1)]
def rng(xs, fmt):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return "-"
    m = statistics.median(xs)
    return fmt(m) + (f" ({fmt(xs[0])}-{fmt(xs[-1])})" if len(xs) > 1 else "")
k = lambda v: f"{v/1000:.1f}k"
us = lambda v: f"{v:.1f}"
print(f"{producers} producer(s)")
print(f"| broker | publish {size} B with confirms: msg/s | broker µs/msg | replay from first: msg/s | MB/s of bodies | broker µs/msg |")
print("|---|---|---|---|---|---|")
for who in ("actormq", "rabbitmq") + (("jetstream",) if jetstream else ()):
    p, c = load(who, "publish"), load(who, "replay")
    print(f"| {who} | {rng([j['confirmed_per_sec'] for j in p], k)} | {rng([j.get('broker_us_per_msg') for j in p], us)} "
          f"| {rng([j['consumed_per_sec'] for j in c], k)} | {rng([j['consumed_per_sec'] * size / 1e6 for j in c], lambda v: f'{v:.0f}')} "
          f"| {rng([j.get('broker_us_per_msg') for j in c], us)} |")
if ceiling:
    rates = []
    for r in range(1, rounds + 1):
        m = re.search(r"([0-9.]+)k confirmed/s", open(f"{out}/ceiling-{r}.txt").read())
        rates.append(float(m.group(1)) * 1000)
    print(f"| ceiling (scripts/publish-ceiling.c: read, append, fdatasync, confirm; nothing else) | {rng(rates, k)} | | | | |")
PY
