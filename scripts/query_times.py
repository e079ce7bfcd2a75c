#!/usr/bin/env python3
"""Times InfluxQL queries against two servers side by side (used by
bench_query.sh).

    query_times.py DYNAFLUX_URL INFLUXDB_URL RUNS QUERY...

For each query and server: one warm-up, then RUNS timed requests over one
kept-alive HTTP/1.1 connection (as Grafana, Telegraf and the client
libraries send them), then RUNS timed requests each on a new connection
(as `curl` per query). Prints the medians in milliseconds, their ratios, and
whether both servers gave the same answer (floats within 1e-9: the two sum
in different orders)."""
import http.client
import json
import math
import statistics
import sys
import time
import urllib.parse


def request(conn, path):
    started = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        sys.exit(f"HTTP {response.status}: {body[:200]!r}")
    return elapsed, body


def timings(url, query, runs):
    parsed = urllib.parse.urlsplit(url)
    path = "/query?" + urllib.parse.urlencode({"db": "benchmark", "q": query})
    kept = http.client.HTTPConnection(parsed.hostname, parsed.port)
    _, body = request(kept, path)
    alive = [request(kept, path)[0] for _ in range(runs)]
    kept.close()
    fresh = []
    for _ in range(runs):
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port)
        fresh.append(request(conn, path)[0])
        conn.close()
    return statistics.median(alive), statistics.median(fresh), json.loads(body)


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


def main():
    dynaflux, influxdb, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print("%-4s %-25s %-25s %-13s %s" % ("", "kept-alive d / i (ms)", "new conn d / i (ms)", "ratios", "answers"))
    for number, query in enumerate(sys.argv[4:], start=1):
        d_alive, d_fresh, d_body = timings(dynaflux, query, runs)
        i_alive, i_fresh, i_body = timings(influxdb, query, runs)
        print("Q%-3d %9.3f / %-9.3f   %9.3f / %-9.3f   %.2f / %.2f   %s   %s" % (
            number, d_alive * 1e3, i_alive * 1e3, d_fresh * 1e3, i_fresh * 1e3,
            d_alive / i_alive, d_fresh / i_fresh,
            "same" if same(d_body, i_body) else "DIFFER", query), flush=True)


if __name__ == "__main__":
    main()
