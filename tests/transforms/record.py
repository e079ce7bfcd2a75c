#!/usr/bin/env python3
"""Record the answers of a server to queries.txt into cases.json.

Point it at a scratch InfluxDB 1.6.7 (it drops and recreates the database
`transforms`, then writes data.lp with precision=s):

    python3 record.py --url http://127.0.0.1:8086

`--check` compares the server's answers with cases.json instead of writing
it (byte for byte), to see where another server differs.
"""
import argparse
import json
import pathlib
import urllib.error
import urllib.parse
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
DB = "transforms"


def call(url, method="GET", data=None):
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def query(base, q, db=None):
    params = {"q": q}
    if db:
        params["db"] = db
    return call(f"{base}/query?" + urllib.parse.urlencode(params))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    base = args.url.rstrip("/")
    query(base, f"DROP DATABASE {DB}")
    query(base, f"CREATE DATABASE {DB}")
    status, body = call(
        f"{base}/write?db={DB}&precision=s", "POST", (HERE / "data.lp").read_bytes()
    )
    assert status == 204, (status, body)
    queries = [
        line.rstrip("\n")
        for line in (HERE / "queries.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    if args.check:
        recorded = json.loads((HERE / "cases.json").read_text())["cases"]
        different = 0
        for case in recorded:
            status, body = query(base, case["q"], DB)
            if (status, body) != (case["status"], case["body"]):
                different += 1
                print("DIFFERENT", case["q"])
                print("  recorded:", case["status"], case["body"].strip())
                print("  now     :", status, body.strip())
        print(f"{len(recorded) - different} same, {different} different")
        return
    cases = []
    for q in queries:
        status, body = query(base, q, DB)
        cases.append({"q": q, "status": status, "body": body})
    document = {
        "recorded_from": "InfluxDB 1.6.7 (influxd 1.6.7~rc0), GET /query?db=transforms",
        "cases": cases,
    }
    (HERE / "cases.json").write_text(json.dumps(document, indent=1) + "\n")
    print(f"{len(cases)} cases recorded")


if __name__ == "__main__":
    main()
