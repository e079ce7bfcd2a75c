//! Replicas converge by themselves: no write acknowledged by a node that
//! has not met its peers, anti-entropy, read repair and replicated deletes,
//! over real processes and sockets.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{encode, get_query, request, wait_until, TestCluster};
use serde_json::Value;

fn write_at(url: &str, db: &str, consistency: &str, body: &str) -> (u16, String) {
    request(
        "POST",
        &format!(
            "{url}/write?{}",
            encode(&[("db", db), ("consistency", consistency)])
        ),
        Some((body.as_bytes(), "text/plain")),
    )
}

fn query(url: &str, db: &str, q: &str) -> Value {
    let (status, body) = get_query(url, &[("db", db), ("q", q)]);
    assert_eq!(status, 200, "{q}: {body}");
    body
}

/// The `v` values of `SELECT v FROM m WHERE writer = …` on one node.
fn values_on(url: &str, writer: usize) -> BTreeSet<i64> {
    let answer = query(
        url,
        "db",
        &format!("SELECT v FROM m WHERE writer = 'w{writer}'"),
    );
    answer["results"][0]["series"][0]["values"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|row| row[1].as_i64()).collect())
        .unwrap_or_default()
}

/// Three nodes started together, each written to by its own client from
/// the moment it answers `/ping`. A node that has not met its peers
/// answers 503 (the client retries, as InfluxDB clients do on 5xx); every
/// point that was acknowledged at quorum is on at least two nodes at once,
/// and on all three after convergence.
#[test]
fn writes_from_the_first_ping_are_on_a_quorum_when_acknowledged() {
    const WRITERS: usize = 3;
    const BATCHES: usize = 100;
    const BATCH: usize = 20;
    let mut cluster =
        TestCluster::unstarted(3, 3, &[("DYNAFLUX_CLUSTER__READ_CONSISTENCY", "one")]);
    let urls: Vec<String> = (0..WRITERS).map(|i| cluster.url(i)).collect();
    let writers: Vec<_> = urls
        .iter()
        .enumerate()
        .map(|(writer, url)| {
            let url = url.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while request("GET", &format!("{url}/ping"), None).0 != 204 {
                    assert!(Instant::now() < deadline, "no /ping from {url}");
                    std::thread::sleep(Duration::from_millis(2));
                }
                let mut refused = 0u64;
                let mut acked: Vec<i64> = Vec::new();
                for batch in 0..BATCHES {
                    let values: Vec<i64> = (0..BATCH)
                        .map(|i| (writer * 1_000_000 + batch * BATCH + i) as i64)
                        .collect();
                    let body: Vec<String> = values
                        .iter()
                        .map(|v| format!("m,writer=w{writer} v={v}i {}", v * 1_000_000_000))
                        .collect();
                    loop {
                        assert!(Instant::now() < deadline, "writes to {url} never taken");
                        // CREATE DATABASE is idempotent: each client makes
                        // sure of it on its own node, as a fresh client would.
                        if batch == 0 {
                            common::post_query(&url, "CREATE DATABASE db");
                        }
                        let (status, text) = write_at(&url, "db", "quorum", &body.join("\n"));
                        if status == 204 {
                            acked.extend(&values);
                            break;
                        }
                        if status == 503 && text.contains("cluster not ready") {
                            refused += 1;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                (acked, refused)
            })
        })
        .collect();
    cluster.spawn_all();
    let mut acked: Vec<BTreeSet<i64>> = Vec::new();
    let mut refused = 0;
    for writer in writers {
        let (values, not_ready) = writer.join().expect("writer");
        acked.push(values.into_iter().collect());
        refused += not_ready;
    }
    eprintln!("writes refused while a node was not ready: {refused}");
    cluster.wait_live(3);
    for (writer, values) in acked.iter().enumerate() {
        assert_eq!(values.len(), BATCHES * BATCH);
        let on: Vec<BTreeSet<i64>> = urls.iter().map(|url| values_on(url, writer)).collect();
        let under_quorum: Vec<&i64> = values
            .iter()
            .filter(|v| on.iter().filter(|node| node.contains(v)).count() < 2)
            .collect();
        assert!(
            under_quorum.is_empty(),
            "writer {writer}: {} acknowledged points on fewer than two nodes, e.g. {:?}",
            under_quorum.len(),
            &under_quorum[..under_quorum.len().min(5)]
        );
    }
    wait_until(
        "every node to hold every point",
        Duration::from_secs(60),
        || {
            acked.iter().enumerate().all(|(writer, values)| {
                urls.iter()
                    .all(|url| values_on(url, writer).is_superset(values))
            })
        },
    );
}
