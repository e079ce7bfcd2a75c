#!/usr/bin/env bash
# Hinted handoff benchmark on a 3-node RF 3 cluster of real processes on this
# machine: ingest (loadgen, consistency quorum, connections over the live
# nodes) with all nodes up, then with node 3 stopped (its share becomes
# hints on nodes 1 and 2), then the replay rate once node 3 is back: the
# points it missed divided by the time until every hint queue is empty.
#
#   scripts/bench_handoff.sh [POINTS]        (default 1000000)
set -euo pipefail
POINTS=${1:-1000000}
cd "$(dirname "$0")/.."
cargo build --release --bin dynaflux --example loadgen >&2
TARGET=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
source scripts/common.sh
rate() { sed -n 's/.*points_per_sec=\([0-9]*\).*/\1/p'; }

declare -a HTTP RPC GOSSIP NODE_PID
for i in 0 1 2; do HTTP[$i]=$(free_port); RPC[$i]=$(free_port); GOSSIP[$i]=$(free_port DGRAM); done
start_node() {
  local i=$1 seeds=()
  for j in 0 1 2; do [ "$j" != "$i" ] && seeds+=("127.0.0.1:${GOSSIP[$j]}"); done
  DYNAFLUX_CLUSTER__RPC_BIND="127.0.0.1:${RPC[$i]}" DYNAFLUX_CLUSTER__GOSSIP_BIND="127.0.0.1:${GOSSIP[$i]}" \
  DYNAFLUX_CLUSTER__SEEDS="$(IFS=,; echo "${seeds[*]}")" \
    "$TARGET/dynaflux" serve --node-id "node-$((i + 1))" --http-bind "127.0.0.1:${HTTP[$i]}" \
      --data-dir "$WORK/node-$i" 2>>"$WORK/node-$i.log" &
  NODE_PID[$i]=$!; PIDS+=("${NODE_PID[$i]}")
  wait_ping "http://127.0.0.1:${HTTP[$i]}"
}
live() { curl -s "http://127.0.0.1:${HTTP[$1]}/cluster" | grep -o '"live":true' | wc -l; }
hints() { curl -s "http://127.0.0.1:${HTTP[$1]}/cluster" | python3 -c 'import json,sys; print(sum(q["entries"] for q in json.load(sys.stdin)["local"]["hints"].values()))'; }
for i in 0 1 2; do start_node "$i"; done
for _ in $(seq 300); do [ "$(live 0)" = 3 ] && [ "$(live 2)" = 3 ] && break; sleep 0.1; done
url() { echo "http://127.0.0.1:${HTTP[$1]}"; }

up=$("$TARGET/examples/loadgen" --url "$(url 0),$(url 1),$(url 2)" --db up --points "$POINTS" --connections 6 | rate)
kill "${NODE_PID[2]}"; wait "${NODE_PID[2]}" || true
for _ in $(seq 300); do [ "$(live 0)" = 2 ] && break; sleep 0.1; done
down=$("$TARGET/examples/loadgen" --url "$(url 0),$(url 1)" --db down --points "$POINTS" --connections 6 | rate)
queued=$(( $(hints 0) + $(hints 1) ))
start=$(date +%s.%N)
start_node 2
for _ in $(seq 6000); do [ "$(( $(hints 0) + $(hints 1) ))" = 0 ] && break; sleep 0.1; done
end=$(date +%s.%N)
printf '%-44s %12s\n' "ingest, all 3 up (points/s)" "$up"
printf '%-44s %12s\n' "ingest, node 3 down (points/s)" "$down"
printf '%-44s %12s\n' "hints queued for node 3 (requests)" "$queued"
python3 -c "print('%-44s %12.0f' % ('replay to node 3 (points/s)', $POINTS / ($end - $start)))"
