#!/usr/bin/env bash
# Join benchmark on a 3-node RF 2 cluster of real processes on this machine
# (anti-entropy off, so only streaming moves data):
#   1. load POINTS points (loadgen, quorum, 6 connections over the 3 nodes);
#      that ingest rate is the baseline;
#   2. while a second loadgen writes POINTS/2 more points (later
#      timestamps) and a probe times a small query every 0.2 s, node 4
#      joins: time until it is normal, what it streamed (rows, bytes), the
#      points it then holds, and the concurrent ingest rate and query
#      latency against the baseline (the probe also runs before the join).
#
#   scripts/bench_join.sh [POINTS]        (default 2000000)
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

declare -A HTTP RPC GOSSIP NODE_PID
for i in 0 1 2 3; do HTTP[$i]=$(free_port); RPC[$i]=$(free_port); GOSSIP[$i]=$(free_port DGRAM); done
url() { echo "http://127.0.0.1:${HTTP[$1]}"; }
start_node() {
  local i=$1 seeds=()
  for j in 0 1 2; do [ "$j" != "$i" ] && seeds+=("127.0.0.1:${GOSSIP[$j]}"); done
  DYNAFLUX_CLUSTER__RPC_BIND="127.0.0.1:${RPC[$i]}" DYNAFLUX_CLUSTER__GOSSIP_BIND="127.0.0.1:${GOSSIP[$i]}" \
  DYNAFLUX_CLUSTER__SEEDS="$(IFS=,; echo "${seeds[*]}")" DYNAFLUX_CLUSTER__REPLICATION_FACTOR=2 \
  DYNAFLUX_ANTI_ENTROPY__ENABLED=false DYNAFLUX_CLUSTER__CLEANUP_DELAY=5s \
    "$TARGET/dynaflux" serve --node-id "node-$((i + 1))" --http-bind "127.0.0.1:${HTTP[$i]}" \
      --data-dir "$WORK/node-$i" 2>>"$WORK/node-$i.log" &
  NODE_PID[$i]=$!; PIDS+=("${NODE_PID[$i]}")
  wait_ping "$(url "$i")"
}
stable() { curl -sf "$(url "$1")/cluster" | python3 -c 'import json,sys; b=json.load(sys.stdin); sys.exit(0 if not b["moving"] and all(m["state"]=="normal" for m in b["members"]) else 1)'; }
state_of() { curl -sf "$(url "$1")/cluster" | python3 -c "import json,sys; b=json.load(sys.stdin); print(next((m['state'] for m in b['members'] if m['id']=='$2'), ''))"; }
probe() { # probe OUT: time a small query every 0.2 s until $WORK/stop-probe exists
  while [ ! -e "$WORK/stop-probe" ]; do
    curl -s -o /dev/null -w '%{time_total}\n' -G "$(url 0)/query" --data-urlencode db=benchmark \
      --data-urlencode "q=SELECT max(usage_user) FROM cpu WHERE hostname='host_7'" >>"$1"
    sleep 0.2
  done
}
quantiles() { python3 -c "import sys; v=sorted(float(x)*1000 for x in open('$1') if x.strip()); print('%.2f %.2f' % (v[len(v)//2], v[min(len(v)-1, int(len(v)*0.99))]))"; }

for i in 0 1 2; do start_node "$i"; done
for _ in $(seq 600); do stable 0 && stable 1 && stable 2 && break; sleep 0.1; done
base=$("$TARGET/examples/loadgen" --url "$(url 0),$(url 1),$(url 2)" --points "$POINTS" --connections 6 | rate)

# The probe alone, before the join.
rm -f "$WORK/stop-probe"; probe "$WORK/before.txt" & PROBE=$!
sleep 10; touch "$WORK/stop-probe"; wait $PROBE

# The join, under a concurrent load and the probe.
rm -f "$WORK/stop-probe"; probe "$WORK/during.txt" & PROBE=$!
"$TARGET/examples/loadgen" --url "$(url 0),$(url 1),$(url 2)" --points "$((POINTS / 2))" --connections 6 \
  --start 1460000000 --seed 7 >"$WORK/during-load.txt" & LOAD=$!
start=$(date +%s.%N)
(
  seeds="127.0.0.1:${GOSSIP[0]},127.0.0.1:${GOSSIP[1]},127.0.0.1:${GOSSIP[2]}"
  DYNAFLUX_CLUSTER__RPC_BIND="127.0.0.1:${RPC[3]}" DYNAFLUX_CLUSTER__GOSSIP_BIND="127.0.0.1:${GOSSIP[3]}" \
  DYNAFLUX_CLUSTER__SEEDS="$seeds" DYNAFLUX_CLUSTER__REPLICATION_FACTOR=2 \
  DYNAFLUX_ANTI_ENTROPY__ENABLED=false DYNAFLUX_CLUSTER__CLEANUP_DELAY=5s \
    exec "$TARGET/dynaflux" serve --node-id node-4 --http-bind "127.0.0.1:${HTTP[3]}" \
      --data-dir "$WORK/node-3" 2>>"$WORK/node-3.log"
) & NODE_PID[3]=$!; PIDS+=("${NODE_PID[3]}")
wait_ping "$(url 3)"
for _ in $(seq 6000); do [ "$(state_of 3 node-4)" = normal ] && break; sleep 0.1; done
end=$(date +%s.%N)
touch "$WORK/stop-probe"; wait $PROBE
wait $LOAD
during=$(rate <"$WORK/during-load.txt")
stream=$(curl -s "$(url 3)/cluster?points=true")
read -r rows bytes stream_ms held < <(echo "$stream" | python3 -c 'import json,sys; b=json.load(sys.stdin); s=b["streaming"] or {}; print(s.get("rows_received",0), s.get("bytes_received",0), s.get("elapsed_ms",0), b["local"]["points_held"])')
read -r b50 b99 < <(quantiles "$WORK/before.txt")
read -r d50 d99 < <(quantiles "$WORK/during.txt")

printf '%-60s %12s\n' "ingest on 3 nodes, nothing moving (points/s)" "$base"
printf '%-60s %12s\n' "ingest during the join (points/s)" "$during"
python3 -c "print('%-60s %11.1f%%' % ('ingest during the join vs before', (float($during) / float($base) - 1) * 100))"
python3 -c "print('%-60s %12.1f' % ('join: node 4 started to normal (s)', $end - $start))"
python3 -c "print('%-60s %12.1f' % ('streaming itself (s)', $stream_ms / 1000))"
printf '%-60s %12s\n' "points node 4 holds after the join" "$held"
printf '%-60s %12s\n' "rows (series x field columns) streamed" "$rows"
python3 -c "print('%-60s %12.1f' % ('MB streamed', $bytes / 1e6))"
python3 -c "print('%-60s %12.0f' % ('streaming rate (points/s, held / streaming time)', $held / max($stream_ms / 1000, 0.001)))"
python3 -c "print('%-60s %12.1f' % ('streaming rate (MB/s)', $bytes / 1e6 / max($stream_ms / 1000, 0.001)))"
printf '%-60s %12s\n' "query latency before the join, p50 / p99 (ms)" "$b50 / $b99"
printf '%-60s %12s\n' "query latency during the join, p50 / p99 (ms)" "$d50 / $d99"
