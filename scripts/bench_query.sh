#!/usr/bin/env bash
# Query benchmark: the same TSBS-like data (examples/loadgen.rs, default 10M
# points) written to Dynaflux and to InfluxDB 1.6.7, then each query run 5
# times against each server; prints the median seconds and the ratio.
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
median() { python3 -c "import sys, statistics; print('%.4f' % statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
printf '%-8s %-10s %-10s %-7s %s\n' "query" "dynaflux" "influxdb" "ratio" "text"
n=0
for q in "${QUERIES[@]}"; do
  n=$((n+1))
  declare -A med
  for server in dynaflux influxdb; do
    port=$dport; [ "$server" = influxdb ] && port=$iport
    # one warm-up, then RUNS timed runs
    curl -s -o /dev/null -G "http://127.0.0.1:$port/query" --data-urlencode db=benchmark --data-urlencode "q=$q"
    times=()
    for _ in $(seq "$RUNS"); do
      times+=("$(curl -s -o "$WORK/out.$server" -w '%{time_total}' -G "http://127.0.0.1:$port/query" --data-urlencode db=benchmark --data-urlencode "q=$q")")
    done
    med[$server]=$(median "${times[@]}")
  done
  ratio=$(python3 -c "print('%.2f' % (${med[dynaflux]} / ${med[influxdb]}))")
  printf 'Q%-7s %-10s %-10s %-7s %s\n' "$n" "${med[dynaflux]}" "${med[influxdb]}" "$ratio" "$q"
  python3 - "$WORK/out.dynaflux" "$WORK/out.influxdb" <<'PY' || true
import json, math, sys
def same(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b
a, b = (json.load(open(p)) for p in sys.argv[1:3])
print("   answers: %s" % ("same (floats within 1e-9)" if same(a, b) else "DIFFER"))
PY
done
