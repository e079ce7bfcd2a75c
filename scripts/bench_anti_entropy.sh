#!/usr/bin/env bash
# Anti-entropy benchmark on 3-node RF 3 clusters of real processes on this
# machine (handoff off, so only anti-entropy repairs):
#   1. ingest points/s (loadgen, quorum, connections over the 3 nodes) with
#      anti-entropy rounds every 10 s, and on a second cluster with
#      anti_entropy.enabled = false, in one run;
#   2. node 3 of the first cluster loses its data dir and restarts empty:
#      time until it alone holds every point again (a repair round started
#      by POST /cluster/repair as soon as it is ready);
#   3. CPU (user+system of node 1's process, /proc) and duration of an idle
#      round, when every replica agrees, averaged over 10 rounds.
#
#   scripts/bench_anti_entropy.sh [POINTS]        (default 2000000)
set -euo pipefail
POINTS=${1:-2000000}
cd "$(dirname "$0")/.."
cargo build --release --bin dynaflux --example loadgen >&2
TARGET=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
source scripts/common.sh
rate() { sed -n 's/.*points_per_sec=\([0-9]*\).*/\1/p'; }

# start_cluster NAME ENABLED: three nodes under $WORK/NAME-i.
declare -A HTTP RPC GOSSIP NODE_PID
start_node() {
  local name=$1 i=$2 enabled=$3 seeds=()
  for j in 0 1 2; do [ "$j" != "$i" ] && seeds+=("127.0.0.1:${GOSSIP[$name$j]}"); done
  DYNAFLUX_CLUSTER__RPC_BIND="127.0.0.1:${RPC[$name$i]}" DYNAFLUX_CLUSTER__GOSSIP_BIND="127.0.0.1:${GOSSIP[$name$i]}" \
  DYNAFLUX_CLUSTER__SEEDS="$(IFS=,; echo "${seeds[*]}")" DYNAFLUX_HANDOFF__ENABLED=false \
  DYNAFLUX_ANTI_ENTROPY__ENABLED="$enabled" DYNAFLUX_ANTI_ENTROPY__INTERVAL=10s \
    "$TARGET/dynaflux" serve --node-id "node-$((i + 1))" --http-bind "127.0.0.1:${HTTP[$name$i]}" \
      --data-dir "$WORK/$name-$i" 2>>"$WORK/$name-$i.log" &
  NODE_PID[$name$i]=$!; PIDS+=("${NODE_PID[$name$i]}")
  wait_ping "http://127.0.0.1:${HTTP[$name$i]}"
}
url() { echo "http://127.0.0.1:${HTTP[$1$2]}"; }
wait_healthy() { for _ in $(seq 600); do curl -sf "$(url "$1" "$2")/health" >/dev/null && return 0; sleep 0.1; done; return 1; }
start_cluster() {
  for i in 0 1 2; do HTTP[$1$i]=$(free_port); RPC[$1$i]=$(free_port); GOSSIP[$1$i]=$(free_port DGRAM); done
  for i in 0 1 2; do start_node "$1" "$i" "$2"; done
  for i in 0 1 2; do wait_healthy "$1" "$i"; done
}
count_on() {
  curl -s -G "$(url "$1" "$2")/query" --data-urlencode db=benchmark \
    --data-urlencode "q=SELECT count(usage_user) FROM cpu" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["results"][0]; print(r["series"][0]["values"][0][1] if "series" in r else 0)'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# One cluster at a time: the first is stopped before the second starts.
start_cluster off false
off=$("$TARGET/examples/loadgen" --url "$(url off 0),$(url off 1),$(url off 2)" --points "$POINTS" --connections 6 | rate)
for i in 0 1 2; do kill "${NODE_PID[off$i]}"; wait "${NODE_PID[off$i]}" 2>/dev/null || true; done
rm -rf "$WORK"/off-*
start_cluster on true
on=$("$TARGET/examples/loadgen" --url "$(url on 0),$(url on 1),$(url on 2)" --points "$POINTS" --connections 6 | rate)

# Disk lost on node 3 of the first cluster.
kill -9 "${NODE_PID[on2]}"; wait "${NODE_PID[on2]}" 2>/dev/null || true
rm -rf "$WORK/on-2"
start=$(date +%s.%N)
start_node on 2 true
wait_healthy on 2
curl -s -X POST "$(url on 2)/cluster/repair" >/dev/null
for _ in $(seq 3000); do [ "$(count_on on 2)" = "$POINTS" ] && break; sleep 0.2; done
end=$(date +%s.%N)
have=$(count_on on 2)

# Idle rounds: everything agrees now.
curl -s -X POST "$(url on 0)/cluster/repair" >/dev/null
hz=$(getconf CLK_TCK)
before=$(cpu_ticks "${NODE_PID[on0]}")
total_ms=0
for _ in $(seq 10); do
  ms=$(curl -s -X POST "$(url on 0)/cluster/repair" | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["partitions_repaired"]==0, r; print(r["duration_ms"])')
  total_ms=$((total_ms + ms))
done
after=$(cpu_ticks "${NODE_PID[on0]}")

printf '%-58s %12s\n' "ingest, anti-entropy every 10 s (points/s)" "$on"
printf '%-58s %12s\n' "ingest, anti-entropy off (points/s)" "$off"
python3 -c "print('%-58s %11.1f%%' % ('anti-entropy on vs off', (float($on) / float($off) - 1) * 100))"
python3 -c "print('%-58s %12.1f' % ('repair of node 3 after losing its disk (s)', $end - $start))"
printf '%-58s %12s\n' "points on node 3 afterwards (of $POINTS)" "$have"
python3 -c "print('%-58s %12.1f' % ('repair rate (points/s)', $have / ($end - $start)))"
python3 -c "print('%-58s %12.1f' % ('idle round: duration (ms, mean of 10)', $total_ms / 10))"
python3 -c "print('%-58s %12.1f' % ('idle round: CPU of node 1 (ms, mean of 10)', ($after - $before) * 1000 / $hz / 10))"
