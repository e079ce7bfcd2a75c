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

#[test]
fn transformations_answer_as_influxdb_1_6_7() {
    let target = common::Target::from_env();
    let url = target.url();
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(dir().join("cases.json")).expect("cases.json"),
    )
    .expect("cases.json is JSON");
    let cases = cases["cases"].as_array().cloned().unwrap_or_default();
    assert!(cases.len() > 200, "{} cases", cases.len());

    let query = |q: &str| {
        common::request(
            "GET",
            &format!("{url}/query?{}", common::encode(&[("db", DB), ("q", q)])),
            None,
        )
    };
    query(&format!("DROP DATABASE {DB}"));
    let (status, body) = query(&format!("CREATE DATABASE {DB}"));
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

    let mut different = Vec::new();
    for case in &cases {
        let q = case["q"].as_str().unwrap_or_default();
        let status = case["status"].as_u64().unwrap_or_default();
        let body = case["body"].as_str().unwrap_or_default();
        let (got_status, got_body) = query(q);
        if (u64::from(got_status), got_body.as_str()) != (status, body) {
            different.push(format!(
                "{q}\n  InfluxDB: {status} {}\n  we:       {got_status} {}",
                body.trim_end(),
                got_body.trim_end()
            ));
        }
    }
    assert!(
        different.is_empty(),
        "{} of {} answers differ:\n{}",
        different.len(),
        cases.len(),
        different.join("\n")
    );
}
