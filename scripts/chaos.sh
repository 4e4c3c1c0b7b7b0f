#!/usr/bin/env bash
# A randomized fault run against a cluster of real `actormq serve` processes: a stream
# of definitions changes (durable queues declared and deleted through the management
# API of random nodes; with --bindings also durable exchanges declared and deleted and
# queues bound to them) while random nodes are killed (-9), frozen (SIGSTOP, then
# SIGCONT), restarted gracefully, and, with --netns, the leader cut off from the
# others (each node in its own network namespace, joined by veth to a bridge; the
# leader's link is set down, then up). One fault at a time, so a majority stays up.
#
# At the end every fault is healed and the run checks that
#   - every node's /api/definitions export is the same (users by name and tags), and
#   - every change the client saw acknowledged holds: a queue (or exchange) last
#     declared with an answer (201 created, 204 existed) is present, one last deleted
#     (204) is absent; a binding acknowledged (201) is present unless its exchange or
#     queue was deleted (204) after it. A queue or exchange that ever had a change
#     without an answer (a timeout, an error) is not checked, nor are its bindings:
#     that change may commit later (Raft keeps a dead leader's entry).
#
# With --quorum a publisher runs all along (`actormq perf --failover` on a quorum
# queue, confirms on, moving to another node when its own fails): at the end it stops,
# consumes the queue, and every message it saw confirmed must be there.
#
# The seed is printed; the same seed replays the same choices (timings differ). With
# --steps the run ends after that many steps instead of after --duration, so a seed
# replays the same steps whatever the machine's speed. --bindings draws more choices:
# a seed gives another run with it than without it.
#
# Usage: scripts/chaos.sh [--seed N] [--duration SECS | --steps N] [--nodes N] [--netns]
#                         [--bindings] [--quorum] [--bin path/to/actormq] [--port-base P]
#   --netns needs root and `ip netns`; without it the nodes run on loopback.
set -euo pipefail

seed=$(( $(date +%s) % 100000 ))
duration=60
steps=0
bindings=0
quorum=0
count=3
netns=0
bin="${CARGO_TARGET_DIR:-target}/debug/actormq"
port_base=27100
while [ $# -gt 0 ]; do
  case "$1" in
    --seed) seed="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --bindings) bindings=1; shift ;;
    --quorum) quorum=1; shift ;;
    --nodes) count="$2"; shift 2 ;;
    --netns) netns=1; shift ;;
    --bin) bin="$2"; shift 2 ;;
    --port-base) port_base="$2"; shift 2 ;;
    *) echo "chaos: unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v jq >/dev/null || { echo "chaos: needs jq" >&2; exit 2; }
[ -x "$bin" ] || { echo "chaos: no binary at $bin (cargo build first, or --bin)" >&2; exit 2; }
bin="$(readlink -f "$bin")"
RANDOM=$seed
if [ "$steps" -gt 0 ]; then length="--steps $steps"; else length="--duration $duration"; fi
echo "chaos: seed $seed, $length, $count nodes, netns $netns, bindings $bindings, quorum $quorum (replay: $0 --seed $seed $length --nodes $count$([ $netns = 1 ] && echo ' --netns')$([ $bindings = 1 ] && echo ' --bindings')$([ $quorum = 1 ] && echo ' --quorum'))"

dir="$(mktemp -d /tmp/actormq-chaos.XXXXXX)"
export ACTORMQ__CLUSTER__SECRET="chaos-secret-$seed-0123456789abcdef"
declare -a pid addr http native state
ok=0

cleanup() {
  # Only the script itself cleans up. A node is started as `cmd &`: until bash execs
  # the binary, that child is a copy of this shell, EXIT trap included, and a fault
  # sent then (a restart's SIGTERM right after a heal) ran this function in the child,
  # which killed -9 every other node from its copy of `pid` (seed 72692, step 175).
  [ "$BASHPID" = "$$" ] || return 0
  {
    [ -n "${perf_pid:-}" ] && { kill -9 "$perf_pid" || true; }
    for i in $(seq 1 "$count"); do
      [ -n "${pid[$i]:-}" ] && { kill -CONT "${pid[$i]}" || true; kill -9 "${pid[$i]}" || true; }
    done
    # (bash reports each job it reaps here as "Killed": not news.)
    wait || true
  } 2>/dev/null
  if [ "$netns" = 1 ]; then
    # The host end of each veth too: a deleted namespace's link can outlive it (seen
    # here), and the next run's `ip link add` would then fail with "File exists".
    for i in $(seq 1 "$count"); do
      ip netns del "amqchaos$i" 2>/dev/null || true
      ip link del "amqc$i" 2>/dev/null || true
    done
    ip link del amqchaosbr 2>/dev/null || true
  fi
  if [ "$ok" = 1 ] && [ -z "${CHAOS_KEEP:-}" ]; then rm -rf "$dir"; else echo "chaos: logs kept in $dir" >&2; fi
}
trap cleanup EXIT

if [ "$netns" = 1 ]; then
  ip link add amqchaosbr type bridge
  ip addr add 10.77.0.254/24 dev amqchaosbr
  ip link set amqchaosbr up
fi
for i in $(seq 1 "$count"); do
  if [ "$netns" = 1 ]; then
    ip netns add "amqchaos$i"
    ip link add "amqc$i" type veth peer name eth0 netns "amqchaos$i"
    ip link set "amqc$i" master amqchaosbr up
    ip netns exec "amqchaos$i" ip addr add "10.77.0.$i/24" dev eth0
    ip netns exec "amqchaos$i" ip link set eth0 up
    ip netns exec "amqchaos$i" ip link set lo up
    addr[$i]="10.77.0.$i:25672"; http[$i]="10.77.0.$i:15672"; native[$i]="10.77.0.$i:5680"
  else
    addr[$i]="127.0.0.1:$((port_base + i))"; http[$i]="127.0.0.1:$((port_base + 100 + i))"
    native[$i]="127.0.0.1:$((port_base + 200 + i))"
  fi
done
# guest may log in from loopback only: the run's own administrator.
hash="$("$bin" hash-password chaos-password | tail -1)"
seeds=""
for i in $(seq 1 "$count"); do seeds="$seeds{ id = $i, address = \"${addr[$i]}\" },"; done
for i in $(seq 1 "$count"); do
  mkdir -p "$dir/n$i"
  cat > "$dir/n$i/actormq.toml" <<EOF
[broker]
workers = 1
[storage]
data_dir = "$dir/n$i/data"
[cluster]
node_id = $i
bind = "${addr[$i]}"
seeds = [${seeds%,}]
election_timeout_min_ms = 600
election_timeout_max_ms = 1200
heartbeat_ms = 150

[[users]]
name = "chaos"
password_hash = "$hash"
tags = ["administrator"]
EOF
done

start() {
  local i=$1 run=()
  [ "$netns" = 1 ] && run=(ip netns exec "amqchaos$i")
  # The native port is known in advance only for --quorum's publisher.
  local server_bind=127.0.0.1:0
  [ "$quorum" = 1 ] && server_bind="${native[$i]}"
  ACTORMQ__SERVER__BIND="$server_bind" ACTORMQ__AMQP__BIND=127.0.0.1:0 ACTORMQ__HTTP__BIND="${http[$i]}" \
    RUST_LOG=warn,actormq::cluster=info \
    "${run[@]}" "$bin" serve --config "$dir/n$i/actormq.toml" >>"$dir/n$i/out.log" 2>>"$dir/n$i/node.log" &
  pid[$i]=$!
  state[$i]=up
  # A fault must hit the broker, not the shell that is about to exec it: wait (up to
  # 5 s) until the process runs the binary (`ip netns exec` execs it too).
  local end=$(( $(date +%s) + 5 ))
  while [ "$(readlink "/proc/${pid[$i]}/exe" 2>/dev/null)" != "$bin" ] && [ "$(date +%s)" -lt "$end" ]; do
    sleep 0.01
  done
}
api() { # METHOD NODE PATH [BODY]: the HTTP status; 000 when no answer came, "none"
  # when nothing was sent (the node was not listening)
  local out rc=0
  out=$(curl -s -o /dev/null -w '%{http_code}' -m 15 --connect-timeout 2 -u chaos:chaos-password -X "$1" \
    -H 'content-type: application/json' ${4:+-d "$4"} "http://${http[$2]}$3") || rc=$?
  if [ "$rc" = 7 ]; then echo none; else echo "${out:-000}"; fi
}
leader() { # the leader one node reports, or nothing
  "$bin" cluster status --json --node "${addr[$1]}" 2>/dev/null | jq -r '.leader // empty' 2>/dev/null || true
}
defs() { # a node's export, reduced to what must be equal everywhere; the lists as
  # sets (a node restored from its disk lists bindings in another order)
  curl -s -m 10 -u chaos:chaos-password "http://${http[$1]}/api/definitions" |
    jq -S '{vhosts, exchanges, queues, bindings, policies, users: [.users[] | {name, tags}]}
      | map_values(if type == "array" then sort else . end)'
}

for i in $(seq 1 "$count"); do start "$i"; done
wait_until() { # SECONDS COMMAND...: polls until the command succeeds
  local end=$(( $(date +%s) + $1 )); shift
  until "$@"; do [ "$(date +%s)" -ge "$end" ] && return 1; sleep 0.2; done
}
has_leader() { [ -n "$(leader 1)" ]; }
wait_until 60 has_leader || { echo "chaos: no leader formed" >&2; exit 1; }

perf_pid=""
if [ "$quorum" = 1 ]; then
  servers="$(IFS=,; echo "${native[*]:1}")"
  # Runs until told to stop (SIGINT) after the last step; paced, so that the queue
  # (held in memory by every member) stays small on a debug build.
  "$bin" perf --server "$servers" --user chaos --password chaos-password --failover \
    --queue-type quorum --persistent --size 64 --rate 200 --confirm-window 100 \
    --duration 100000 --warmup 0 --failover-timeout 30 --prefix chaos --json \
    >"$dir/perf.json" 2>"$dir/perf.log" &
  perf_pid=$!
fi

declare -A expect xexpect bexpect
acked=0; unknown=0; reads=0; faults_kill=0; faults_stop=0; faults_restart=0; faults_part=0
fault=""; fault_node=0; heal_at=0
heal() {
  case "$fault" in
    kill|restart) start "$fault_node" ;;
    stop) kill -CONT "${pid[$fault_node]}"; state[$fault_node]=up ;;
    part) ip link set "amqc$fault_node" up; state[$fault_node]=up ;;
  esac
  fault=""
}
# An exchange or binding change (--bindings) on node $1, queue $2 for a binding.
xop() {
  local n=$1 q=$2 x s want k
  x="x$((RANDOM % 8))"
  case $((RANDOM % 4)) in
    0|1) s=$(api PUT "$n" "/api/exchanges/%2F/$x" '{"type":"direct","durable":true}'); want=present ;;
    2) s=$(api DELETE "$n" "/api/exchanges/%2F/$x"); want=absent ;;
    # From the first 8 queues, so that both ends often exist.
    *) q="q$((RANDOM % 8))"
       s=$(api POST "$n" "/api/bindings/%2F/e/$x/q/$q" '{"routing_key":"k"}'); want=bound ;;
  esac
  k="$x>$q"
  case "$want $s" in
    "present 204") reads=$((reads + 1)); acked=$((acked + 1)); [ "${xexpect[$x]:-}" = unknown ] || xexpect[$x]=present ;;
    "bound 2"??) acked=$((acked + 1)); [ "${bexpect[$k]:-}" = unknown ] || bexpect[$k]=present ;;
    "absent 2"??) acked=$((acked + 1)); [ "${xexpect[$x]:-}" = unknown ] || xexpect[$x]=absent
      for b in "${!bexpect[@]}"; do
        [ "${b%%>*}" = "$x" ] && [ "${bexpect[$b]}" != unknown ] && bexpect[$b]=absent
      done ;;
    *" 2"??) acked=$((acked + 1)); [ "${xexpect[$x]:-}" = unknown ] || xexpect[$x]=present ;;
    *" none"|*" 404") ;;
    "bound "*) unknown=$((unknown + 1)); bexpect[$k]=unknown ;;
    *) unknown=$((unknown + 1)); xexpect[$x]=unknown ;;
  esac
  echo "$(date +%T.%N | cut -c1-12) step $step: $want $([ $want = bound ] && echo "$k" || echo "$x") on node $n: HTTP $s" >>"$dir/history"
}
end=$(( $(date +%s) + duration ))
step=0
going() { if [ "$steps" -gt 0 ]; then [ "$step" -lt "$steps" ]; else [ "$(date +%s)" -lt "$end" ]; fi; }
while going; do
  step=$((step + 1))
  [ -n "$fault" ] && [ "$step" -ge "$heal_at" ] && heal
  # A node that exits by itself is a failure of the run.
  for i in $(seq 1 "$count"); do
    if [ "${state[$i]}" != down ] && ! kill -0 "${pid[$i]}" 2>/dev/null; then
      echo "chaos: FAILED (seed $seed): node $i (pid ${pid[$i]}) exited by itself at step $step; its log: $dir/n$i/node.log" >&2
      tail -5 "$dir/n$i/node.log" >&2
      exit 1
    fi
  done
  r=$((RANDOM % 20))
  if [ "$r" -lt 16 ] || [ -n "$fault" ]; then
    # A definitions change on a node that is up.
    n=$((RANDOM % count + 1)); q="q$((RANDOM % 40))"
    if [ "${state[$n]}" != up ]; then continue; fi
    if [ "$bindings" = 1 ] && [ $((RANDOM % 3)) = 0 ]; then xop "$n" "$q"; continue; fi
    if [ $((RANDOM % 10)) -lt 7 ]; then
      s=$(api PUT "$n" "/api/queues/%2F/$q" '{"durable":true}'); want=present
    else
      s=$(api DELETE "$n" "/api/queues/%2F/$q"); want=absent
    fi
    case "$want $s" in
      # 204 to a declare: the queue existed (the node answers after a read barrier,
      # so from the cluster's state, not a lagging one of its own).
      "present 204") reads=$((reads + 1)); acked=$((acked + 1)); [ "${expect[$q]:-}" = unknown ] || expect[$q]=present ;;
      *" 2"??) acked=$((acked + 1)); [ "${expect[$q]:-}" = unknown ] || expect[$q]=$want
        if [ "$want" = absent ]; then
          for b in "${!bexpect[@]}"; do
            [ "${b#*>}" = "$q" ] && [ "${bexpect[$b]}" != unknown ] && bexpect[$b]=absent
          done
        fi ;;
      # Refused before anything was proposed: not listening, or no such queue there.
      *" none"|*" 404") ;;
      *) unknown=$((unknown + 1)); expect[$q]=unknown ;;
    esac
    echo "$(date +%T.%N | cut -c1-12) step $step: $want $q on node $n: HTTP $s" >>"$dir/history"
  else
    n=$((RANDOM % count + 1)); kind=$((RANDOM % (netns == 1 ? 4 : 3)))
    case "$kind" in
      0) fault=kill; kill -9 "${pid[$n]}"; wait "${pid[$n]}" 2>/dev/null || true; state[$n]=down; faults_kill=$((faults_kill + 1)) ;;
      1) fault=stop; kill -STOP "${pid[$n]}"; state[$n]=stopped; faults_stop=$((faults_stop + 1)) ;;
      2) fault=restart; kill -TERM "${pid[$n]}"; wait "${pid[$n]}" 2>/dev/null || true; state[$n]=down; faults_restart=$((faults_restart + 1)) ;;
      3) l=$(leader $(( n % count + 1 ))); [ -n "$l" ] && n=$l
         fault=part; ip link set "amqc$n" down; state[$n]=cut; faults_part=$((faults_part + 1)) ;;
    esac
    fault_node=$n; heal_at=$((step + 3 + RANDOM % 12))
    echo "$(date +%T.%N | cut -c1-12) step $step: fault $fault on node $n (pid ${pid[$n]}, healed at step $heal_at)" >>"$dir/history"
  fi
done
[ -n "$fault" ] && heal

# Everyone up and caught up: the exports converge.
all_equal() {
  local first; first="$(defs 1)" || return 1
  [ -n "$first" ] || return 1
  for i in $(seq 2 "$count"); do [ "$(defs "$i")" = "$first" ] || return 1; done
}
if ! wait_until 90 all_equal; then
  echo "chaos: FAILED (seed $seed): the nodes' definitions differ" >&2
  for i in $(seq 1 "$count"); do defs "$i" >"$dir/defs-$i.json"; done
  exit 1
fi
final="$(defs 1)"
bad=0; checked=0
for q in "${!expect[@]}"; do
  [ "${expect[$q]}" = unknown ] && continue
  checked=$((checked + 1))
  there=$(jq --arg q "$q" '[.queues[] | select(.name == $q)] | length' <<<"$final")
  if { [ "${expect[$q]}" = present ] && [ "$there" != 1 ]; } || { [ "${expect[$q]}" = absent ] && [ "$there" != 0 ]; }; then
    echo "chaos: queue $q should be ${expect[$q]} (last acknowledged change), is not" >&2; bad=1
  fi
done
xchecked=0; bchecked=0
for x in "${!xexpect[@]}"; do
  [ "${xexpect[$x]}" = unknown ] && continue
  xchecked=$((xchecked + 1))
  there=$(jq --arg x "$x" '[.exchanges[] | select(.name == $x)] | length' <<<"$final")
  if { [ "${xexpect[$x]}" = present ] && [ "$there" != 1 ]; } || { [ "${xexpect[$x]}" = absent ] && [ "$there" != 0 ]; }; then
    echo "chaos: exchange $x should be ${xexpect[$x]} (last acknowledged change), is not" >&2; bad=1
  fi
done
for b in "${!bexpect[@]}"; do
  x="${b%%>*}"; q="${b#*>}"
  { [ "${bexpect[$b]}" = unknown ] || [ "${xexpect[$x]:-}" = unknown ] || [ "${expect[$q]:-}" = unknown ]; } && continue
  bchecked=$((bchecked + 1))
  there=$(jq --arg x "$x" --arg q "$q" '[.bindings[] | select(.source == $x and .destination == $q and .destination_type == "queue" and .routing_key == "k")] | length' <<<"$final")
  if { [ "${bexpect[$b]}" = present ] && [ "$there" != 1 ]; } || { [ "${bexpect[$b]}" = absent ] && [ "$there" != 0 ]; }; then
    echo "chaos: binding $x -> $q should be ${bexpect[$b]} (last acknowledged change), is not" >&2; bad=1
  fi
done
quorum_result=""
if [ -n "$perf_pid" ]; then
  kill -INT "$perf_pid" 2>/dev/null || true
  prc=0; wait "$perf_pid" || prc=$?
  if [ "$prc" != 0 ] || ! jq -e . "$dir/perf.json" >/dev/null 2>&1; then
    echo "chaos: FAILED (seed $seed): the quorum publisher failed (exit $prc); its log: $dir/perf.log" >&2
    tail -20 "$dir/perf.log" >&2
    exit 1
  fi
  quorum_result="$(jq -r '.failover | "quorum queue: \(.confirmed) confirmed, \(.nacked) nacked, \(.reconnects) reconnects, longest silence \(.max_confirm_gap_ms | floor) ms\(if .gave_up then ", gave up: \(.gave_up)" else "" end); history: \(if .check then "\(.check.confirmed_missing) confirmed missing of \(.check.distinct) consumed" else "not checked: \(.check_error)" end)"' "$dir/perf.json")"
  if ! jq -e '.failover.check.confirmed_missing == 0 and .failover.confirmed > 0 and .failover.gave_up == null' "$dir/perf.json" >/dev/null; then
    echo "chaos: FAILED (seed $seed): $quorum_result (report: $dir/perf.json)" >&2
    bad=1
  fi
fi
echo "chaos: seed $seed: $step steps, $acked changes acknowledged, $unknown without an answer, $reads of them redeclares of an existing queue or exchange; faults: $faults_kill kill -9, $faults_stop SIGSTOP, $faults_restart restart, $faults_part leader partition; checked: $checked queues, $xchecked exchanges, $bchecked bindings; definitions equal on $count nodes${quorum_result:+; $quorum_result}"
if [ "$bad" = 1 ]; then echo "chaos: FAILED (seed $seed)" >&2; exit 1; fi
ok=1
echo "chaos: OK"
