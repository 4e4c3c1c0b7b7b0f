#!/usr/bin/env bash
# Cluster benchmark: a 3-node actormq cluster against a 3-node RabbitMQ cluster on this
# machine, both on loopback, a quorum queue on each, measured with the same tool and the
# same AMQP clients (issue 17, "Performance").
#
#   scripts/bench-cluster.sh                         # 3 rounds of 10 s, then the failover runs
#   ROUNDS=1 DURATION=5 scripts/bench-cluster.sh     # quick
#   CLIENTS=raw FAILOVER_ROUNDS=2 scripts/bench-cluster.sh
#   ACTORMQ_BIN=/path/to/actormq scripts/bench-cluster.sh   # a release build (--features amqp) kept aside
#   RABBITMQ=0 ACTORMQ_QUEUE_TYPE=quorum scripts/bench-cluster.sh  # actormq alone (before/after runs
#                                                    # of one change: RabbitMQ neither started nor measured)
#   ACTORMQ_LOG=warn,actormq::cluster::quorum=debug scripts/bench-cluster.sh  # the nodes' RUST_LOG
#   WINDOW=5000 scripts/bench-cluster.sh             # confirms outstanding in the throughput runs (1000)
#   CONSUMERS=0 PREFETCH=300 scripts/bench-cluster.sh # consumers (1) and their prefetch (100) in them
#   MULTI_ACK=10 scripts/bench-cluster.sh            # the consumer acks every N deliveries with one
#                                                    # `multiple` ack (1, the default: an ack each)
#
# Throughput: `actormq perf` with 1 producer and 1 consumer, 1 KiB persistent messages,
# publisher confirms with 1000 outstanding, prefetch 100, through each AMQP client of
# $CLIENTS (default "raw lapin"): confirmed/s, confirm latency (publish to confirm) and
# end-to-end latency (publish to consume), p50 and p99. The queue is declared first,
# then both clients connect to its leader's node (RabbitMQ: `rabbitmqctl list_queues
# name leader`; actormq: the `leader` of /api/queues, else the node that declared it).
# For actormq the script also reads every node's CPU from /proc over the measured window
# (the tool reports the leader's only) and the CPU of the leader's threads by name:
# cores and microseconds per message for the leader and each follower, the three
# nodes' sum, the client's cores and the load average, in a table and in
# $OUT/cpu-nodes.json. ACTORMQ_LOG=warn,actormq::cluster::stages=debug adds the stage
# times of each commit round to the nodes' logs (each append's write and fsync, each
# append's round trip to a follower and its time there).
#
# Failover: `actormq perf --failover` publishes with confirms for $FAILOVER_DURATION s
# (default 20) to a queue whose leader is first in its server list; after $KILL_AFTER s
# (default 6) the script kill -9s the queue leader's node, the tool reconnects to the
# next node, republishes what was unconfirmed (also after $FAILOVER_TIMEOUT s, default 5,
# without a confirm, as an application's confirm timeout would), and at the end
# consumes the queue to check that no confirmed message is missing. Reported: the tool's failover time (last
# confirm before the connection failed to the first after), the time from the kill to
# the first confirm after it, the confirmed messages missing (must be 0), and the time
# the broker kept the publisher blocked (a memory or disk alarm: no failover, the tool
# waits; with no consumer, a queue held in memory reaches the default 1 GiB watermark
# about 10 s into a run at full speed). The killed node is restarted before the next run.
#
# actormq's queue type: ACTORMQ_QUEUE_TYPE=auto (default) declares a quorum queue on the
# cluster when the cluster takes one; while it refuses them (quorum replication not
# landed), the cluster is measured with a classic queue on its home node instead and
# the failover run kills the cluster's Raft leader with the queue homed on another node
# (publishes to a classic queue never go through Raft: a stand-in, labelled so), and a
# single actormq node's quorum queue is measured too. ACTORMQ_QUEUE_TYPE=quorum or
# classic forces one.
#
# Nodes: actormq node i (1..3) listens on 127.0.0.1:$PORT_BASE+i (native), +10+i (AMQP),
# +20+i (HTTP), +30+i (cluster); the single node on +40 (native) and +41 (AMQP).
# RabbitMQ 3.10 (Debian's package, installed when missing) runs nodes actormq-q1..3@localhost
# on AMQP ports $PORT_BASE+50+i and distribution ports +60+i, with their data, logs and
# an empty plugin list under $OUT, joined by `rabbitmqctl join_cluster`. PORT_BASE
# defaults to 6200. A system rabbit@localhost, or any other node, is never touched.
# Everything, the JSON reports included, goes to $OUT (default target/bench-cluster).
set -eEuo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "bench-cluster.sh: no arguments but --help (settings are variables; see --help)" >&2; exit 2 ;;
esac

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
FAILOVER_ROUNDS=${FAILOVER_ROUNDS:-1}
FAILOVER_DURATION=${FAILOVER_DURATION:-20}
KILL_AFTER=${KILL_AFTER:-6}
FAILOVER_TIMEOUT=${FAILOVER_TIMEOUT:-5}
OUT=${OUT:-target/bench-cluster}
CLIENTS=${CLIENTS:-raw lapin}
PORT_BASE=${PORT_BASE:-6200}
ACTORMQ_QUEUE_TYPE=${ACTORMQ_QUEUE_TYPE:-auto}
RABBITMQ=${RABBITMQ:-1}
ACTORMQ_LOG=${ACTORMQ_LOG:-warn}
case "$RABBITMQ" in 0|1) ;; *) echo "bench-cluster.sh: RABBITMQ is 0 or 1" >&2; exit 2 ;; esac
for c in $CLIENTS; do
  case "$c" in lapin|raw) ;; *) echo "bench-cluster.sh: no AMQP client '$c' (CLIENTS: raw, lapin)" >&2; exit 2 ;; esac
done
case "$ACTORMQ_QUEUE_TYPE" in auto|quorum|classic) ;; *) echo "bench-cluster.sh: ACTORMQ_QUEUE_TYPE is auto, quorum or classic" >&2; exit 2 ;; esac
if [ "$KILL_AFTER" -ge "$FAILOVER_DURATION" ]; then
  echo "bench-cluster.sh: KILL_AFTER ($KILL_AFTER) must be below FAILOVER_DURATION ($FAILOVER_DURATION)" >&2; exit 2
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/*.kill
trap 'echo "bench-cluster.sh: failed at line $LINENO: $BASH_COMMAND (logs in $OUT)" >&2' ERR

native_port() { echo $((PORT_BASE + $1)); }
amqp_port() { echo $((PORT_BASE + 10 + $1)); }
http_port() { echo $((PORT_BASE + 20 + $1)); }
cluster_port() { echo $((PORT_BASE + 30 + $1)); }
rabbit_port() { echo $((PORT_BASE + 50 + $1)); }
rabbit_node() { echo "actormq-q$1@localhost"; }
SINGLE_NATIVE=$((PORT_BASE + 40))
SINGLE_AMQP=$((PORT_BASE + 41))

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for i in 1 2 3; do
  for port in $(native_port $i) $(amqp_port $i) $(http_port $i) $(cluster_port $i) $(rabbit_port $i) $((PORT_BASE + 60 + i)); do
    if port_taken "$port"; then
      echo "bench-cluster.sh: 127.0.0.1:$port is already in use: stop what listens there or set PORT_BASE" >&2
      exit 1
    fi
  done
done

if [ "$RABBITMQ" = 1 ] && ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "installing rabbitmq-server from Debian's packages..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
fi
if [ -n "${ACTORMQ_BIN:-}" ]; then
  BIN=$ACTORMQ_BIN
  echo "using $BIN (ACTORMQ_BIN)" >&2
else
  echo "building actormq (release, with the amqp feature for lapin)..." >&2
  cargo build --release --features amqp -q
  BIN=target/release/actormq
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

ACTORMQ_PIDS=(0 0 0 0)
SINGLE_PID=
RABBIT_STARTED=(0 0 0 0)
RABBIT_BASE="$OUT/rabbitmq"
rabbitmqctl_on() { local i=$1; shift; rabbitmqctl -q -n "$(rabbit_node "$i")" "$@"; }
cleanup() {
  for i in 1 2 3; do
    if [ "${ACTORMQ_PIDS[$i]}" != 0 ]; then kill "${ACTORMQ_PIDS[$i]}" 2>/dev/null || true; fi
    if [ "${RABBIT_STARTED[$i]}" = 1 ]; then rabbitmqctl_on "$i" stop >/dev/null 2>&1 || true; fi
  done
  if [ -n "$SINGLE_PID" ]; then kill "$SINGLE_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

# ---- RabbitMQ: three nodes of our own on loopback, defaults otherwise.
rabbit_env() {
  local i=$1 base="$RABBIT_BASE/q$1"
  echo RABBITMQ_NODENAME="$(rabbit_node "$i")" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$(rabbit_port "$i")" RABBITMQ_DIST_PORT="$((PORT_BASE + 60 + i))" \
    RABBITMQ_MNESIA_BASE="$base/mnesia" RABBITMQ_LOG_BASE="$base/log" \
    RABBITMQ_PID_FILE="$base/rabbit.pid" RABBITMQ_ENABLED_PLUGINS_FILE="$RABBIT_BASE/enabled_plugins"
}
start_rabbit() {
  local i=$1
  # shellcheck disable=SC2046
  env $(rabbit_env "$i") RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    rabbitmq-server -detached >>"$RABBIT_BASE/q$i/start.log" 2>&1
  RABBIT_STARTED[$i]=1
}
await_rabbit() {
  local i=$1 deadline=$((SECONDS + 90))
  while [ $SECONDS -lt $deadline ]; do
    if rabbitmqctl_on "$i" await_startup --timeout 5 >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "bench-cluster.sh: RabbitMQ node $(rabbit_node "$i") did not start within 90 s; see $RABBIT_BASE/q$i/log" >&2
  exit 1
}
rabbit_pid() { cat "$RABBIT_BASE/q$1/rabbit.pid"; }

if [ "$RABBITMQ" = 1 ]; then
  for i in 1 2 3; do
    if rabbitmqctl_on "$i" status >/dev/null 2>&1; then
      echo "bench-cluster.sh: a node named $(rabbit_node "$i") already runs; stop it first" >&2
      exit 1
    fi
  done
  rm -rf "$RABBIT_BASE"
  for i in 1 2 3; do mkdir -p "$RABBIT_BASE/q$i"; done
  echo "[]." >"$RABBIT_BASE/enabled_plugins"
  # Debian's rabbitmq-server runs the node as the rabbitmq user: let it write there.
  if id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq:rabbitmq "$RABBIT_BASE"; fi
  echo "starting RabbitMQ nodes $(rabbit_node 1), $(rabbit_node 2), $(rabbit_node 3)..." >&2
  for i in 1 2 3; do start_rabbit "$i"; done
  for i in 1 2 3; do await_rabbit "$i"; done
  for i in 2 3; do
    { rabbitmqctl_on "$i" stop_app && rabbitmqctl_on "$i" join_cluster "$(rabbit_node 1)" &&
      rabbitmqctl_on "$i" start_app; } >>"$RABBIT_BASE/join.log" 2>&1
  done
  rabbitmqctl_on 1 cluster_status >"$OUT/rabbitmq-cluster-status.txt"
fi

# ---- actormq: three nodes (docs/CLUSTERING.md "Running 3 nodes on one machine").
export ACTORMQ__CLUSTER__SECRET="bench-cluster-secret-0123456789"
ACTORMQ_BASE="$OUT/actormq"
rm -rf "$ACTORMQ_BASE"
for i in 1 2 3; do
  mkdir -p "$ACTORMQ_BASE/n$i"
  cat >"$ACTORMQ_BASE/n$i/Settings.toml" <<EOF
[server]
bind = "127.0.0.1:$(native_port "$i")"
[amqp]
bind = ["127.0.0.1:$(amqp_port "$i")"]
[http]
bind = ["127.0.0.1:$(http_port "$i")"]
[storage]
data_dir = "$ACTORMQ_BASE/n$i/data"
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
start_actormq() {
  local i=$1
  (cd "$ACTORMQ_BASE/n$i" && RUST_LOG="$ACTORMQ_LOG" exec "$BIN" serve --config Settings.toml >>"$ACTORMQ_BASE/n$i/actormq.log" 2>&1) &
  ACTORMQ_PIDS[$i]=$!
}
# Ready once a definitions change (which needs a leader) succeeds on the node.
await_actormq() {
  local addr=$1 pid=$2 log=$3 deadline=$((SECONDS + 60))
  while [ $SECONDS -lt $deadline ]; do
    kill -0 "$pid" 2>/dev/null || break
    if "$BIN" declare-exchange bench.ready --type direct --server "$addr" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "bench-cluster.sh: actormq did not get ready on $addr; the end of $log:" >&2
  tail -5 "$log" >&2
  exit 1
}
echo "starting actormq nodes 1..3..." >&2
for i in 1 2 3; do start_actormq "$i"; done
for i in 1 2 3; do await_actormq "127.0.0.1:$(native_port "$i")" "${ACTORMQ_PIDS[$i]}" "$ACTORMQ_BASE/n$i/actormq.log"; done
cluster_leader() {
  local i
  for i in 1 2 3; do
    "$BIN" cluster status --node "127.0.0.1:$(cluster_port "$i")" 2>/dev/null | awk '/^leader:/ && $2 ~ /^[0-9]+$/ {print $2; found=1} END {exit !found}' && return 0
  done
  return 1
}

qt=$ACTORMQ_QUEUE_TYPE
if [ "$qt" = auto ]; then
  if "$BIN" declare-queue bench.probe --durable --arg x-queue-type=quorum --server "127.0.0.1:$(native_port 1)" >"$OUT/quorum-probe.log" 2>&1; then
    qt=quorum
  else
    qt=classic
    echo "the cluster refuses quorum queues ($(tail -1 "$OUT/quorum-probe.log")):" >&2
    echo "  measuring it with a classic queue, and a single node's quorum queue, as stand-ins" >&2
  fi
  "$BIN" delete-queue bench.probe --server "127.0.0.1:$(native_port 1)" >/dev/null 2>&1 || true
fi
ACTORMQ_QT=$qt
TARGETS="rabbitmq actormq-cluster"
[ "$RABBITMQ" = 1 ] || TARGETS="actormq-cluster"
if [ "$ACTORMQ_QT" = classic ]; then
  TARGETS="$TARGETS actormq-single"
  SINGLE_DATA="$ACTORMQ_BASE/single"
  mkdir -p "$SINGLE_DATA"
  # No [cluster] (the secret variable alone would make one), no ./Settings.toml.
  (cd "$SINGLE_DATA" && exec env -u ACTORMQ__CLUSTER__SECRET ACTORMQ__STORAGE__DATA_DIR="$SINGLE_DATA" \
    ACTORMQ__SERVER__BIND="127.0.0.1:$SINGLE_NATIVE" ACTORMQ__AMQP__BIND="127.0.0.1:$SINGLE_AMQP" \
    ACTORMQ__HTTP__BIND="127.0.0.1:0" RUST_LOG=warn "$BIN" serve >"$SINGLE_DATA.log" 2>&1) &
  SINGLE_PID=$!
  await_actormq "127.0.0.1:$SINGLE_NATIVE" "$SINGLE_PID" "$SINGLE_DATA.log"
fi

# ---- Where each target's queue lives, and how to reach its nodes.
queue_type_of() { case "$1" in rabbitmq|actormq-single) echo quorum ;; actormq-cluster) echo "$ACTORMQ_QT" ;; esac; }
url_of() { # target, node index
  case "$1" in
    rabbitmq) echo "amqp://guest:guest@127.0.0.1:$(rabbit_port "$2")/%2f" ;;
    actormq-cluster) echo "amqp://guest:guest@127.0.0.1:$(amqp_port "$2")/%2f" ;;
    actormq-single) echo "amqp://guest:guest@127.0.0.1:$SINGLE_AMQP/%2f" ;;
  esac
}
pid_of() { # target, node index
  case "$1" in
    rabbitmq) rabbit_pid "$2" ;;
    actormq-cluster) echo "${ACTORMQ_PIDS[$2]}" ;;
    actormq-single) echo "$SINGLE_PID" ;;
  esac
}
# The node list from `first` on: "u_first,u_next,u_last".
urls_from() {
  local t=$1 first=$2 k list=""
  for k in 0 1 2; do list="$list,$(url_of "$t" $(((first - 1 + k) % 3 + 1)))"; done
  echo "${list#,}"
}
# The index (1..3) of the node leading queue $2 of target $1; the declaring node ($3)
# when the broker names none (a classic queue lives where it was declared).
queue_leader() {
  local t=$1 q=$2 home=$3 i leader=""
  case "$t" in
    rabbitmq)
      for i in 1 2 3; do
        leader=$(rabbitmqctl_on "$i" list_queues name leader --no-table-headers 2>/dev/null | awk -v q="$q" '$1 == q {print $2}') && [ -n "$leader" ] && break
      done
      [[ "$leader" =~ ^actormq-q([0-9])@ ]] && { echo "${BASH_REMATCH[1]}"; return; } ;;
    actormq-cluster)
      for i in 1 2 3; do
        leader=$(curl -sf -u guest:guest "http://127.0.0.1:$(http_port "$i")/api/queues/%2f/$q" | python3 -c '
import json, re, sys
l = json.load(sys.stdin).get("leader")
ports = sys.argv[1:]
if isinstance(l, int): print(l)
elif isinstance(l, str):
    m = re.search(r"node(\d+)@", l)
    if m: print(m.group(1))
    else:
        for i, p in enumerate(ports, 1):
            if p in l: print(i)
' "$(cluster_port 1)" "$(cluster_port 2)" "$(cluster_port 3)") && [ -n "$leader" ] && break
      done
      [[ "$leader" =~ ^[1-3]$ ]] && { echo "$leader"; return; } ;;
  esac
  echo "$home"
}
# Declares (or with $4 = delete, deletes) the run's queue through node $3 of target $1.
# Retried: a RabbitMQ node just restarted answered a declare with INTERNAL_ERROR once.
queue_op() {
  local t=$1 prefix=$2 node=$3 op=${4:-declare} extra=() try
  [ "$op" = delete ] && extra=(--predeclared --delete-queues)
  for try in 1 2 3 4 5 6 7 8 9 10; do
    if "$BIN" perf --producers 0 --consumers 0 --duration 0 --warmup 0 --persistent --queue-type "$(queue_type_of "$t")" \
      --prefix "$prefix" --amqp-url "$(url_of "$t" "$node")" --amqp-client raw "${extra[@]}" >>"$OUT/queue-ops.log" 2>&1; then
      return 0
    fi
    sleep 1
  done
  echo "bench-cluster.sh: could not $op $prefix.q0 on $t node $node (see $OUT/queue-ops.log)" >&2
  return 1
}

# CPU of every node of the cluster (and of the leader's threads) over the measured
# window of a throughput run: `perf --broker-pid` reports the leader alone, and with
# three nodes and the client on a few cores each node's CPU per message counts. Read
# from /proc by the script, so any build can be measured: from 1.5 s after the start
# (the tool's 1 s warm-up and its connections) to 0.5 s before the end.
proc_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0; }
thread_ticks() { # pid: "tid name ticks" per thread
  local t
  for t in /proc/"$1"/task/*; do
    awk -v tid="${t##*/}" '{n = $0; sub(/^[^(]*\(/, "", n); sub(/\).*/, "", n); gsub(/ /, "_", n); sub(/.*\) /, ""); print tid, n, $12 + $13}' "$t/stat" 2>/dev/null || true # a thread gone meanwhile
  done
}
sample_nodes() { # out file, leader index, then the nodes' pids
  local out=$1 leader=$2 i pid; shift 2
  local pids=("$@")
  sleep 1.5
  { echo "leader $leader"; echo "t0 $(date +%s.%N)"; echo "load0 $(cut -d' ' -f1-3 /proc/loadavg)"
    for i in "${!pids[@]}"; do echo "node0 $((i + 1)) $(proc_ticks "${pids[$i]}")"; done
    thread_ticks "${pids[$((leader - 1))]}" | sed 's/^/thread0 /'; } >"$out.tmp"
  sleep "$(awk -v d="$DURATION" 'BEGIN {print (d > 2.5 ? d - 2 : 0.5)}')"
  { echo "t1 $(date +%s.%N)"; echo "load1 $(cut -d' ' -f1-3 /proc/loadavg)"
    for i in "${!pids[@]}"; do echo "node1 $((i + 1)) $(proc_ticks "${pids[$i]}")"; done
    thread_ticks "${pids[$((leader - 1))]}" | sed 's/^/thread1 /'; } >>"$out.tmp"
  mv "$out.tmp" "$out"
}

WORKLOAD="--producers 1 --consumers ${CONSUMERS:-1} --size 1024 --persistent --confirm --confirm-window ${WINDOW:-1000} --prefetch ${PREFETCH:-100} --multi-ack ${MULTI_ACK:-1}"
echo "bench-cluster.sh: targets $TARGETS (actormq cluster queue type: $ACTORMQ_QT); clients $CLIENTS;" >&2
echo "  $ROUNDS round(s) of $DURATION s, $FAILOVER_ROUNDS failover run(s) of $FAILOVER_DURATION s; output in $OUT" >&2
for r in $(seq "$ROUNDS"); do
  for t in $TARGETS; do
    for c in $CLIENTS; do
      queue_op "$t" bc 1
      leader=$(queue_leader "$t" bc.q0 1)
      echo "round $r: $t via $c (queue leader: node $leader)" >&2
      sampler=
      if [ "$t" = actormq-cluster ]; then
        sample_nodes "$OUT/cpu-$t-$c-$r.txt" "$leader" "${ACTORMQ_PIDS[1]}" "${ACTORMQ_PIDS[2]}" "${ACTORMQ_PIDS[3]}" &
        sampler=$!
      fi
      # shellcheck disable=SC2086
      "$BIN" perf $WORKLOAD --queue-type "$(queue_type_of "$t")" --predeclared --delete-queues --prefix bc \
        --amqp-url "$(url_of "$t" "$leader")" --amqp-client "$c" --duration "$DURATION" \
        --broker-pid "$(pid_of "$t" "$leader")" --json >"$OUT/tput-$t-$c-$r.json" 2>"$OUT/tput-$t-$c-$r.log"
      if [ -n "$sampler" ]; then wait "$sampler" || true; fi
    done
  done
done

restart() { # target, node index
  case "$1" in
    rabbitmq) start_rabbit "$2"; await_rabbit "$2" ;;
    actormq-cluster)
      start_actormq "$2"
      await_actormq "127.0.0.1:$(native_port "$2")" "${ACTORMQ_PIDS[$2]}" "$ACTORMQ_BASE/n$2/actormq.log" ;;
  esac
}
for r in $(seq "$FAILOVER_ROUNDS"); do
  for t in $TARGETS; do
    [ "$t" = actormq-single ] && continue
    for c in $CLIENTS; do
      if [ "$t" = actormq-cluster ] && [ "$ACTORMQ_QT" = classic ]; then
        # Stand-in: the Raft leader dies, the queue lives on another node.
        victim=$(cluster_leader) || { echo "bench-cluster.sh: no cluster leader" >&2; exit 1; }
        home=$((victim % 3 + 1))
        kind="cluster leader (classic queue on node $home)"
      else
        home=1
      fi
      queue_op "$t" fo "$home"
      leader=$(queue_leader "$t" fo.q0 "$home")
      if [ "$t" = rabbitmq ] || [ "$ACTORMQ_QT" = quorum ]; then victim=$leader; kind="queue leader"; fi
      echo "failover $r: $t via $c, publishing on node $leader, killing node $victim ($kind)" >&2
      "$BIN" perf --failover --size 1024 --persistent --confirm-window 1000 --queue-type "$(queue_type_of "$t")" \
        --predeclared --prefix fo --amqp-url "$(urls_from "$t" "$leader")" --amqp-client "$c" \
        --duration "$FAILOVER_DURATION" --failover-timeout "$FAILOVER_TIMEOUT" --json >"$OUT/failover-$t-$c-$r.json" 2>"$OUT/failover-$t-$c-$r.log" &
      perf_pid=$!
      sleep "$KILL_AFTER"
      vpid=$(pid_of "$t" "$victim")
      echo "$(date +%s%3N) $victim $kind" >"$OUT/failover-$t-$c-$r.kill"
      kill -9 "$vpid"
      # The node's shell job (actormq) reports the kill: not an error of this script.
      wait "$vpid" 2>/dev/null || true
      if [ "$t" = rabbitmq ]; then RABBIT_STARTED[$victim]=0; fi
      wait "$perf_pid" || echo "bench-cluster.sh: the failover run failed: see $OUT/failover-$t-$c-$r.log" >&2
      restart "$t" "$victim"
      queue_op "$t" fo "$home" delete || true
    done
  done
done

python3 - "$OUT" "$ACTORMQ_QT" "$CLIENTS" "$TARGETS" <<'PY'
import glob, json, os, statistics, sys
out, qt, clients, targets = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
def load(pattern):
    res = []
    for f in sorted(glob.glob(f"{out}/{pattern}")):
        try: res.append((f, json.load(open(f))))
        except Exception: pass
    return res
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
def fmt(x, unit=""):
    return "-" if x is None else f"{x:,.0f}{unit}"
names = {"rabbitmq": "RabbitMQ 3.10, 3 nodes, quorum",
         "actormq-cluster": f"actormq, 3 nodes, {qt}" + (" (stand-in)" if qt != "quorum" else ""),
         "actormq-single": "actormq, 1 node, quorum (stand-in)"}
print(f"\n{os.uname().nodename}, {os.cpu_count()} cores; 1 KiB persistent, confirms (1000 outstanding), 1 producer + 1 consumer on the queue leader's node; medians of rounds")
print(f"{'broker':<38} {'client':<6} {'confirmed/s':>12} {'conf p50':>9} {'conf p99':>9} {'e2e p50':>9} {'e2e p99':>9} {'vs RMQ':>7}")
rmq = {}
for t in targets:
    for c in clients:
        runs = [j for _, j in load(f"tput-{t}-{c}-*.json")]
        if not runs: continue
        cps = med([j["confirmed_per_sec"] for j in runs])
        if t == "rabbitmq": rmq[c] = cps
        ratio = f"{cps / rmq[c]:.1f}x" if t != "rabbitmq" and rmq.get(c) and cps is not None else ""
        cl = lambda k: med([(j.get("confirm_latency_us") or {}).get(k) for j in runs])
        el = lambda k: med([j["latency_us"][k] for j in runs])
        ms = lambda v: None if v is None else v / 1000
        print(f"{names[t]:<38} {c:<6} {fmt(cps):>12} {fmt(ms(cl('p50')), ' ms'):>9} {fmt(ms(cl('p99')), ' ms'):>9} {fmt(ms(el('p50')), ' ms'):>9} {fmt(ms(el('p99')), ' ms'):>9} {ratio:>7}")
def node_cpu(path, rate):
    t, nodes, threads, load = {}, {}, {}, {}
    for line in open(path):
        f = line.split()
        if not f: continue
        if f[0] == "leader": t["leader"] = int(f[1])
        elif f[0] in ("t0", "t1"): t[f[0]] = float(f[1])
        elif f[0] in ("load0", "load1"): load[f[0]] = f[1]
        elif f[0] in ("node0", "node1"): nodes.setdefault(int(f[1]), {})[f[0]] = int(f[2])
        elif f[0] in ("thread0", "thread1"): threads.setdefault((f[1], f[2]), {})[f[0]] = int(f[3])
    secs = t["t1"] - t["t0"]
    cores = {n: (v.get("node1", 0) - v.get("node0", 0)) / 100 / secs for n, v in nodes.items() if "node1" in v}
    names = {}
    for (tid, name), v in threads.items():
        if "thread0" in v and "thread1" in v:
            names[name] = names.get(name, 0) + (v["thread1"] - v["thread0"]) / 100 / secs
    top = {n: max((c for (tid, nm), w in threads.items() if nm == n and "thread1" in w and "thread0" in w
                   for c in [(w["thread1"] - w["thread0"]) / 100 / secs]), default=0) for n in names}
    us = {n: c / rate * 1e6 for n, c in cores.items()} if rate else {}
    return {"leader": t.get("leader"), "secs": secs, "cores": cores, "us_per_msg": us, "load": [load.get("load0"), load.get("load1")],
            "leader_threads": {n: {"cores": round(c, 3), "busiest_thread": round(top[n], 3)} for n, c in
                               sorted(names.items(), key=lambda kv: -kv[1])}}
cpu_rows = []
for c in clients:
    for f, j in load(f"tput-actormq-cluster-{c}-*.json"):
        path = f.replace("/tput-", "/cpu-")[:-5] + ".txt"
        if not os.path.exists(path): continue
        rate = j["consumed_per_sec"] or j["confirmed_per_sec"] or j["published_per_sec"]
        try: cpu = node_cpu(path, rate)
        except Exception as e: print(f"{path}: {e}"); continue
        cpu.update(client=c, file=os.path.basename(f), confirmed_per_sec=j["confirmed_per_sec"],
                   consumed_per_sec=j["consumed_per_sec"], client_cores=j.get("client_cpu_cores"),
                   confirm_p50_ms=((j.get("confirm_latency_us") or {}).get("p50") or 0) / 1000,
                   confirm_p99_ms=((j.get("confirm_latency_us") or {}).get("p99") or 0) / 1000)
        cpu_rows.append(cpu)
if cpu_rows:
    json.dump(cpu_rows, open(f"{out}/cpu-nodes.json", "w"), indent=1)
    print("\nactormq's nodes over each throughput run's window (script's /proc reading; us/msg per consumed, else confirmed, message)")
    print(f"{'run':<32} {'confirmed/s':>11} {'consumed/s':>10} {'cores: leader/others':>22} {'us/msg: leader/others':>22} {'3 nodes':>8} {'client':>7} {'load':>16}")
    for r in cpu_rows:
        ns = sorted(r["cores"], key=lambda n: (n != r["leader"], n))
        cores = "/".join(f"{r['cores'][n]:.2f}" for n in ns)
        us = "/".join(f"{r['us_per_msg'].get(n, 0):.1f}" for n in ns)
        tot = sum(r["us_per_msg"].values())
        cl = f"{r['client_cores']:.2f}" if r.get("client_cores") is not None else "-"
        print(f"{r['file']:<32} {r['confirmed_per_sec']:>11,.0f} {r['consumed_per_sec']:>10,.0f} {cores:>22} {us:>22} {tot:>8.1f} {cl:>7} {r['load'][0]+'-'+r['load'][1]:>16}")
        busy = ", ".join(f"{n} {v['cores']:.2f} (max {v['busiest_thread']:.2f})" for n, v in list(r["leader_threads"].items())[:5])
        print(f"{'':<32} leader's threads: {busy}")
print("\nfailover: kill -9 of the node named, while publishing with confirms")
print(f"{'broker':<38} {'client':<6} {'killed':<50} {'failover':>13} {'kill->confirm':>13} {'confirmed':>10} {'missing':>8} {'republished':>11} {'blocked':>9}")
for t in ["rabbitmq", "actormq-cluster"]:
    for c in clients:
        for f, j in load(f"failover-{t}-{c}-*.json"):
            fo = j.get("failover") or {}
            kill = open(f[:-5] + ".kill").read().split(maxsplit=2) if os.path.exists(f[:-5] + ".kill") else None
            kill_ms = int(kill[0]) if kill else None
            rec, frm, to = fo.get("recovered_unix_ms"), fo.get("max_gap_from_unix_ms"), fo.get("max_gap_to_unix_ms")
            if kill_ms and rec and rec > kill_ms: k2c = f"{rec - kill_ms:,} ms"
            elif kill_ms and frm and to and frm <= kill_ms <= to: k2c = f"{to - kill_ms:,} ms"
            elif kill_ms and fo.get("unrecovered_ms") is None: k2c = "no pause"
            else: k2c = "-"
            check = fo.get("check") or {}
            missing = check.get("confirmed_missing", "?") if check else "no check"
            killed = f"node {kill[1]}: {kill[2].strip()}" if kill else "-"
            fms, un = fo.get("failover_ms"), fo.get("unrecovered_ms")
            if fms is not None: shown = fmt(fms, " ms")
            elif un is not None: shown = f">{un:,.0f} ms"
            else: shown = fmt(fo.get("max_confirm_gap_ms"), " ms") + " gap"
            blocked = fmt(fo.get("blocked_ms"), " ms") if fo.get("blocked_ms") else "-"
            print(f"{names[t]:<38} {c:<6} {killed:<50} {shown:>13} {k2c:>13} {fo.get('confirmed', 0):>10,} {missing!s:>8} {fo.get('republished', 0):>11,} {blocked:>9}")
print("\nfailover: the tool's (last confirm before the publisher's connection failed to the first after);")
print("'>N ms': no confirm came after the failure before the run ended; 'gap': the connection never")
print("failed, the longest silence between two confirms. kill->confirm: from the kill to the first")
print("confirm after the failure (or the end of a confirm gap spanning the kill; 'no pause': none did).")
print("blocked: time the broker kept the publisher blocked (memory or disk alarm), not a failover.")
PY
