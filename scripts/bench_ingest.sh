#!/usr/bin/env bash
# Ingest benchmark: the same TSBS-like load (examples/loadgen.rs) against
# Dynaflux and against InfluxDB 1.6.7 (Debian package `influxdb`), one after
# the other on this machine, each on a temporary data dir and a loopback port.
# Prints points/s and disk bytes per field value (du -sb of the whole data dir
# once each server has turned its write-ahead log into its own files).
#
#   scripts/bench_ingest.sh [POINTS]        (default 5000000)
set -euo pipefail
POINTS=${1:-5000000}
CONNECTIONS=${CONNECTIONS:-4}
BATCH=${BATCH:-5000}
cd "$(dirname "$0")/.."
cargo build --release --bin dynaflux --example loadgen >&2
TARGET=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

source scripts/common.sh
values=$((POINTS * 10))

# ---- Dynaflux
start_dynaflux "$WORK/dynaflux"
dpid=$DPID
dline=$("$TARGET/examples/loadgen" --url "http://127.0.0.1:$DPORT" --points "$POINTS" --batch "$BATCH" --connections "$CONNECTIONS")
kill -TERM "$dpid"; wait "$dpid" || true
dbytes=$(du -sb "$WORK/dynaflux" | cut -f1)
dalloc=$(du -s --block-size=1 "$WORK/dynaflux" | cut -f1)
drate=$(sed -E 's/.*points_per_sec=([0-9]+).*/\1/' <<<"$dline")

# ---- InfluxDB 1.6.7
start_influxdb "$WORK/influxdb" '  cache-snapshot-write-cold-duration = "5s"
  compact-full-write-cold-duration = "10s"'
ipid=$IPID; iport=$IPORT
iline=$("$TARGET/examples/loadgen" --url "http://127.0.0.1:$iport" --points "$POINTS" --batch "$BATCH" --connections "$CONNECTIONS")
# Wait (with a deadline) until InfluxDB has snapshotted its WAL into TSM files
# and compacted them: the data dir stops changing.
previous=0
for _ in $(seq 120); do
  sleep 5
  current=$(du -sb "$WORK/influxdb" | cut -f1)
  wal=$(du -sb "$WORK/influxdb/wal" | cut -f1)
  if [ "$current" = "$previous" ] && [ "$wal" -lt 1048576 ]; then break; fi
  previous=$current
done
kill -TERM "$ipid"; wait "$ipid" || true
ibytes=$(du -sb "$WORK/influxdb" | cut -f1)
ialloc=$(du -s --block-size=1 "$WORK/influxdb" | cut -f1)
irate=$(sed -E 's/.*points_per_sec=([0-9]+).*/\1/' <<<"$iline")

python3 - "$POINTS" "$drate" "$dbytes" "$dalloc" "$irate" "$ibytes" "$ialloc" <<'PY'
import sys
points, drate, dbytes, dalloc, irate, ibytes, ialloc = map(int, sys.argv[1:])
values = points * 10
print("%-16s %12s %22s %22s" % ("server", "points/s", "bytes/value (du -sb)", "bytes/value (allocated)"))
print("%-16s %12d %22.2f %22.2f" % ("dynaflux", drate, dbytes / values, dalloc / values))
print("%-16s %12d %22.2f %22.2f" % ("influxdb 1.6.7", irate, ibytes / values, ialloc / values))
print("ingest ratio dynaflux/influxdb: %.2fx; disk ratio (du -sb): %.2f; (allocated): %.2f"
      % (drate / irate, dbytes / ibytes, dalloc / ialloc))
PY
