#!/usr/bin/env bash
# Query benchmark: the same TSBS-like data (examples/loadgen.rs, default 10M
# points) written to Dynaflux and to InfluxDB 1.6.7, then each query run
# RUNS (5) times against each server over a kept-alive connection and RUNS
# times on new connections; prints the medians and the ratios
# (scripts/query_times.py).
#
#   scripts/bench_query.sh [POINTS]        (default 10000000)
set -euo pipefail
POINTS=${1:-10000000}
RUNS=${RUNS:-5}
cd "$(dirname "$0")/.."
cargo build --release --bin dynaflux --example loadgen >&2
TARGET=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
source scripts/common.sh
start_dynaflux "$WORK/dynaflux"; dport=$DPORT
start_influxdb "$WORK/influxdb"; iport=$IPORT
for port in "$dport" "$iport"; do
  "$TARGET/examples/loadgen" --url "http://127.0.0.1:$port" --points "$POINTS" >&2
done
# The whole range of the data: 10 s per step, POINTS/1000 steps from 2016-01-01.
END=$(python3 -c "import datetime; print((datetime.datetime(2016,1,1)+datetime.timedelta(seconds=10*($POINTS//1000)+60)).strftime('%Y-%m-%dT%H:%M:%SZ'))")
RANGE="time >= '2016-01-01T00:00:00Z' AND time < '$END'"
QUERIES=(
  "SELECT mean(usage_user) FROM cpu WHERE $RANGE GROUP BY time(1m)"
  "SELECT mean(usage_user) FROM cpu WHERE $RANGE GROUP BY time(1m), host"
  "SELECT max(usage_user) FROM cpu WHERE host='host_42'"
  "SELECT * FROM cpu WHERE host='host_7' ORDER BY time DESC LIMIT 100"
  "SHOW TAG VALUES FROM cpu WITH KEY = host"
)
python3 scripts/query_times.py "http://127.0.0.1:$dport" "http://127.0.0.1:$iport" "$RUNS" "${QUERIES[@]}"
