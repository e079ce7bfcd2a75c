//! Transformations (`derivative`, `difference`, `moving_average`, …), alone
//! and several in one query, over HTTP: the queries of
//! `tests/transforms/queries.txt` on `tests/transforms/data.lp`, whose
//! answers were recorded from a real InfluxDB 1.6.7
//! (`tests/transforms/record.py` writes `cases.json`), must come back byte
//! for byte the same (status and body).
//!
//! `DYNAFLUX_TEST_URL`: run against an external server instead.

mod common;

use std::path::PathBuf;

use serde_json::Value;

const DB: &str = "transforms";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/transforms")
}

fn cases() -> Vec<Value> {
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(dir().join("cases.json")).expect("cases.json"),
    )
    .expect("cases.json is JSON");
    let cases = cases["cases"].as_array().cloned().unwrap_or_default();
    assert!(cases.len() > 200, "{} cases", cases.len());
    cases
}

fn query(url: &str, q: &str) -> (u16, String) {
    common::request(
        "GET",
        &format!("{url}/query?{}", common::encode(&[("db", DB), ("q", q)])),
        None,
    )
}

/// (Re)create the database and write the points (precision s).
fn load(url: &str) {
    query(url, &format!("DROP DATABASE {DB}"));
    let (status, body) = query(url, &format!("CREATE DATABASE {DB}"));
    assert_eq!(status, 200, "{body}");
    let data = std::fs::read(dir().join("data.lp")).expect("data.lp");
    let (status, body) = common::request(
        "POST",
        &format!(
            "{url}/write?{}",
            common::encode(&[("db", DB), ("precision", "s")])
        ),
        Some((&data, "text/plain; charset=utf-8")),
    );
    assert_eq!(status, 204, "{body}");
}

/// The cases whose answer differs from InfluxDB's, described.
fn differences(url: &str, cases: &[Value]) -> Vec<String> {
    let mut different = Vec::new();
    for case in cases {
        let q = case["q"].as_str().unwrap_or_default();
        let status = case["status"].as_u64().unwrap_or_default();
        let body = case["body"].as_str().unwrap_or_default();
        let (got_status, got_body) = query(url, q);
        if (u64::from(got_status), got_body.as_str()) != (status, body) {
            different.push(format!(
                "{q}\n  InfluxDB: {status} {}\n  we:       {got_status} {}",
                body.trim_end(),
                got_body.trim_end()
            ));
        }
    }
    different
}

#[test]
fn transformations_answer_as_influxdb_1_6_7() {
    let cases = cases();
    let target = common::Target::from_env();
    let url = target.url();
    load(&url);
    let different = differences(&url, &cases);
    assert!(
        different.is_empty(),
        "{} of {} answers differ:\n{}",
        different.len(),
        cases.len(),
        different.join("\n")
    );
}

/// 3 nodes, RF 1: most series are held by another node than the one asked,
/// whose points (and partial aggregates) come over RPC.
#[test]
fn transformations_answer_alike_on_a_cluster() {
    if std::env::var("DYNAFLUX_TEST_URL").is_ok_and(|url| !url.is_empty()) {
        return;
    }
    let cases = cases();
    let cluster = common::TestCluster::start(3, 1);
    load(&cluster.url(0));
    let different = differences(&cluster.url(1), &cases);
    assert!(
        different.is_empty(),
        "{} of {} answers differ on the cluster:\n{}",
        different.len(),
        cases.len(),
        different.join("\n")
    );
}
