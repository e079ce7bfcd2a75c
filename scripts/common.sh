# Shared by the benchmark scripts (sourced): free ports, readiness, and the
# two servers on temporary data dirs under $WORK. Expects TARGET (the
# release dir), WORK and a PIDS array, and adds to PIDS what it starts.

# A free loopback port: `free_port` (TCP) or `free_port DGRAM` (UDP).
free_port() {
  python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_${1:-STREAM}); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"
}

wait_ping() {
  for _ in $(seq 600); do curl -sf "$1/ping" >/dev/null && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; return 1
}

# start_dynaflux DIR: one node (its own free RPC and gossip ports); sets
# DPORT and DPID.
start_dynaflux() {
  DPORT=$(free_port)
  DYNAFLUX_CLUSTER__RPC_BIND="127.0.0.1:$(free_port)" \
  DYNAFLUX_CLUSTER__GOSSIP_BIND="127.0.0.1:$(free_port DGRAM)" \
    "$TARGET/dynaflux" serve --http-bind "127.0.0.1:$DPORT" --data-dir "$1" 2>"$1.log" &
  DPID=$!; PIDS+=("$DPID")
  wait_ping "http://127.0.0.1:$DPORT"
}

# start_influxdb DIR [EXTRA [data] SETTINGS]: InfluxDB 1.6.7 (Debian package
# `influxdb`); sets IPORT and IPID.
start_influxdb() {
  local dir=$1 extra=${2:-} rport
  IPORT=$(free_port); rport=$(free_port)
  mkdir -p "$dir"
  cat > "$dir.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$rport"
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false
$extra
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:$IPORT"
  log-enabled = false
[continuous_queries]
  enabled = false
CONF
  influxd -config "$dir.conf" 2>"$dir.log" &
  IPID=$!; PIDS+=("$IPID")
  wait_ping "http://127.0.0.1:$IPORT"
}
