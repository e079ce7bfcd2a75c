#!/usr/bin/env bash
# Ingest benchmark of the cluster: the same TSBS-like points (examples/loadgen.rs)
# written, one after the other on this machine, to
#   1. a 3-node RF 3 Dynaflux cluster (`dynaflux local --nodes 3`), the
#      load generator's connections spread over the three nodes,
#      consistency quorum (the default);
#   2. a single Dynaflux node;
#   3. InfluxDB 1.6.7 (Debian package `influxdb`).
#
#   scripts/bench_cluster.sh [POINTS]        (default 2000000)
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

base=$((30000 + RANDOM % 10000))
"$TARGET/dynaflux" local --nodes 3 --port "$base" --data-dir "$WORK/cluster" >"$WORK/local.out" 2>&1 &
PIDS+=("$!")
for i in 0 1 2; do wait_ping "http://127.0.0.1:$((base + i))"; done
for _ in $(seq 300); do
  [ "$(curl -s "http://127.0.0.1:$base/cluster" | grep -o '"live":true' | wc -l)" = 3 ] && break; sleep 0.1
done
urls="http://127.0.0.1:$base,http://127.0.0.1:$((base + 1)),http://127.0.0.1:$((base + 2))"
cluster=$("$TARGET/examples/loadgen" --url "$urls" --points "$POINTS" --connections 6 | rate)
kill -INT "${PIDS[0]}"; wait "${PIDS[0]}" || true; PIDS=()

start_dynaflux "$WORK/single"
single=$("$TARGET/examples/loadgen" --url "http://127.0.0.1:$DPORT" --points "$POINTS" | rate)
kill "$DPID"; wait "$DPID" || true; PIDS=()

start_influxdb "$WORK/influxdb"
influx=$("$TARGET/examples/loadgen" --url "http://127.0.0.1:$IPORT" --points "$POINTS" | rate)

printf '%-32s %12s\n' "server" "points/s"
printf '%-32s %12s\n' "Dynaflux 3 nodes RF 3 (quorum)" "$cluster"
printf '%-32s %12s\n' "Dynaflux 1 node" "$single"
printf '%-32s %12s\n' "InfluxDB 1.6.7" "$influx"
python3 -c "print('cluster / InfluxDB: %.2f   single / InfluxDB: %.2f' % ($cluster / $influx, $single / $influx))"
