//! The `influx` CLI (Debian package `influxdb-client`) against a real node:
//! CREATE DATABASE, SHOW DATABASES, INSERT and SELECT.
//! Without the CLI the test is skipped locally, but fails in CI (`CI` set).

mod common;

use std::process::Command;

fn influx(node: &common::Node, args: &[&str]) -> String {
    let port = node.port.to_string();
    let output = Command::new("influx")
        .args(["-host", "127.0.0.1", "-port", &port])
        .args(args)
        .output()
        .expect("run influx");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "influx {args:?} failed: {stdout}{stderr}"
    );
    stdout + &stderr
}

#[test]
fn influx_cli_creates_inserts_and_selects() {
    if Command::new("influx").arg("-version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the influx CLI is required in CI"
        );
        eprintln!(
            "skipped: the `influx` CLI is not installed (apt-get install -y influxdb-client)"
        );
        return;
    }
    let node = common::Node::start();
    let version = influx(&node, &["-execute", "SHOW DATABASES"]);
    assert!(version.contains("name: databases"), "{version}");
    influx(&node, &["-execute", "CREATE DATABASE clidb"]);
    let databases = influx(&node, &["-execute", "SHOW DATABASES"]);
    assert!(
        databases.lines().any(|line| line.trim() == "clidb"),
        "{databases}"
    );
    influx(
        &node,
        &[
            "-database",
            "clidb",
            "-execute",
            "INSERT cpu,host=server01 value=0.64,busy=true 1704067200000000000",
        ],
    );
    influx(
        &node,
        &[
            "-database",
            "clidb",
            "-precision",
            "s",
            "-execute",
            "INSERT cpu,host=server02 value=1.5 1704067260",
        ],
    );
    let rows = influx(
        &node,
        &[
            "-database",
            "clidb",
            "-precision",
            "rfc3339",
            "-execute",
            "SELECT * FROM cpu",
        ],
    );
    assert!(rows.contains("name: cpu"), "{rows}");
    assert!(
        rows.contains("2024-01-01T00:00:00Z true server01 0.64"),
        "{rows}"
    );
    assert!(
        rows.contains("2024-01-01T00:01:00Z") && rows.contains("server02 1.5"),
        "{rows}"
    );
    let csv = influx(
        &node,
        &[
            "-database",
            "clidb",
            "-format",
            "csv",
            "-execute",
            "SELECT value FROM cpu WHERE host = 'server02'",
        ],
    );
    assert!(
        csv.contains("name,time,value") && csv.contains("cpu,1704067260000000000,1.5"),
        "{csv}"
    );
    let json = influx(
        &node,
        &[
            "-database",
            "clidb",
            "-format",
            "json",
            "-execute",
            "SHOW MEASUREMENTS",
        ],
    );
    assert!(json.contains("\"measurements\""), "{json}");
}
