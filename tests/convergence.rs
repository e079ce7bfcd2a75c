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

fn create_database(url: &str) {
    let (status, body) = common::post_query(url, "CREATE DATABASE db");
    assert_eq!(status, 200, "{body}");
}

/// `hosts` series, `per_host` points each, one line per point: `n` is the
/// point's index in its series, so its sum is known.
fn lines(hosts: usize, per_host: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(hosts * per_host);
    for t in 0..per_host {
        for h in 0..hosts {
            out.push(format!(
                "cpu,host=h{h:03} v={}.5,n={t}i {}",
                t + h,
                t as i64 * 1_000_000_000
            ));
        }
    }
    out
}

/// Write `lines` at quorum through nodes 1 and 2 in turn.
fn write_all(cluster: &TestCluster, lines: &[String]) {
    for (i, chunk) in lines.chunks(5000).enumerate() {
        let (status, body) = write_at(&cluster.url(i % 2), "db", "quorum", &chunk.join("\n"));
        assert_eq!(status, 204, "{body}");
    }
}

/// `(count(v), sum(n))` on one node.
fn count_and_sum(url: &str) -> (u64, u64) {
    let answer = query(url, "db", "SELECT count(v), sum(n) FROM cpu");
    let row = &answer["results"][0]["series"][0]["values"][0];
    (row[1].as_u64().unwrap_or(0), row[2].as_u64().unwrap_or(0))
}

/// Node 3, with nodes 1 and 2 killed, answers every point exactly once.
fn assert_node3_alone_has(cluster: &mut TestCluster, hosts: usize, per_host: usize) {
    cluster.nodes[0].kill9();
    cluster.nodes[1].kill9();
    let url = cluster.url(2);
    let sum_n = (hosts * per_host * (per_host - 1) / 2) as u64;
    assert_eq!(count_and_sum(&url), ((hosts * per_host) as u64, sum_n));
    let per_series = query(&url, "db", "SELECT count(v) FROM cpu GROUP BY host");
    let series = per_series["results"][0]["series"]
        .as_array()
        .expect("series");
    assert_eq!(series.len(), hosts);
    for one in series {
        assert_eq!(one["values"][0][1].as_u64(), Some(per_host as u64), "{one}");
    }
}

/// Waits until node 3 alone (reads at `one` are local on a replica) holds
/// `count` points with `sum(n) = sum`.
fn wait_node3_has(cluster: &TestCluster, count: u64, sum: u64, within: Duration) {
    let started = Instant::now();
    wait_until("node 3 to hold every point", within, || {
        count_and_sum(&cluster.url(2)) == (count, sum)
    });
    eprintln!("node 3 converged {:?} after it was back", started.elapsed());
}

const CONVERGING: [(&str, &str); 3] = [
    ("DYNAFLUX_HANDOFF__ENABLED", "false"),
    ("DYNAFLUX_ANTI_ENTROPY__INTERVAL", "5s"),
    ("DYNAFLUX_CLUSTER__READ_CONSISTENCY", "one"),
];

/// Handoff off: node 3 misses 200,000 quorum writes while it is down; back,
/// with no further writes, anti-entropy alone gives it every point.
#[test]
fn anti_entropy_gives_a_returning_replica_every_point_it_missed() {
    const HOSTS: usize = 100;
    const PER_HOST: usize = 2000;
    let mut cluster = TestCluster::start_with(3, 3, &CONVERGING);
    create_database(&cluster.url(0));
    assert!(cluster.nodes[2].terminate().success());
    write_all(&cluster, &lines(HOSTS, PER_HOST));
    cluster.nodes[2].restart();
    cluster.wait_live(3);
    let sum_n = (HOSTS * PER_HOST * (PER_HOST - 1) / 2) as u64;
    wait_node3_has(
        &cluster,
        (HOSTS * PER_HOST) as u64,
        sum_n,
        Duration::from_secs(60),
    );
    // Rounds after convergence find every replica in sync.
    wait_until(
        "a round that finds nothing to repair",
        Duration::from_secs(30),
        || {
            let (status, body) =
                request("POST", &format!("{}/cluster/repair", cluster.url(2)), None);
            let report: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            status == 200 && report["partitions_repaired"] == 0 && report["peers"] == 2
        },
    );
    // Node 3 got the rows: pulled by its own rounds or pushed by the others'.
    let moved: u64 = (0..3)
        .map(|i| {
            let ae = &cluster.nodes[i].cluster_status()["local"]["anti_entropy"];
            if i == 2 {
                // The repair command's rounds.
                assert!(ae["last_round"]["duration_ms"].is_u64(), "{ae}");
            }
            let rows = if i == 2 {
                &ae["rows_received"]
            } else {
                &ae["rows_sent"]
            };
            rows.as_u64().unwrap_or(0)
        })
        .sum();
    assert!(moved > 0, "no rows streamed to node 3");
    assert_node3_alone_has(&mut cluster, HOSTS, PER_HOST);
}

/// Node 3 loses its disk: restarted empty with the same id, anti-entropy
/// rebuilds it completely (its schema comes back by the schema exchange).
#[test]
fn a_replica_that_lost_its_disk_is_rebuilt_by_anti_entropy() {
    const HOSTS: usize = 50;
    const PER_HOST: usize = 1000;
    let mut cluster = TestCluster::start_with(3, 3, &CONVERGING);
    create_database(&cluster.url(0));
    write_all(&cluster, &lines(HOSTS, PER_HOST));
    cluster.nodes[2].kill9();
    std::fs::remove_dir_all(&cluster.nodes[2].data_dir).expect("delete node 3's data");
    cluster.nodes[2].restart();
    cluster.wait_live(3);
    let sum_n = (HOSTS * PER_HOST * (PER_HOST - 1) / 2) as u64;
    wait_node3_has(
        &cluster,
        (HOSTS * PER_HOST) as u64,
        sum_n,
        Duration::from_secs(60),
    );
    assert_node3_alone_has(&mut cluster, HOSTS, PER_HOST);
}

/// Handoff and anti-entropy off: node 3 misses writes; one quorum read
/// through node 1 finds it behind and writes the points back to it.
#[test]
fn a_quorum_read_repairs_a_stale_replica() {
    let mut cluster = TestCluster::start_with(
        3,
        3,
        &[
            ("DYNAFLUX_HANDOFF__ENABLED", "false"),
            ("DYNAFLUX_ANTI_ENTROPY__ENABLED", "false"),
            ("DYNAFLUX_CLUSTER__READ_CONSISTENCY", "quorum"),
        ],
    );
    create_database(&cluster.url(0));
    write_all(&cluster, &lines(10, 100)[..500]);
    cluster.nodes[2].kill9();
    write_all(&cluster, &lines(10, 100)[500..]);
    cluster.nodes[2].restart();
    cluster.wait_live(3);
    let sum_n = (10 * 100 * 99 / 2) as u64;
    // Read repair is opportunistic: a read that happens while node 3 is
    // not yet answering RPCs repairs nothing, and the next one does.
    wait_until(
        "read repair to reach node 3",
        Duration::from_secs(30),
        || {
            assert_eq!(count_and_sum(&cluster.url(0)), (1000, sum_n));
            cluster.nodes[0].cluster_status()["local"]["read_repair"]["points_repaired"]
                .as_u64()
                .unwrap_or(0)
                >= 1000 // 500 missed points, of two fields (v and n) each
        },
    );
    // Node 3 alone, at `one`, without any other copy to read.
    cluster.nodes[0].kill9();
    cluster.nodes[1].kill9();
    cluster.nodes[2].kill9();
    cluster.nodes[2].set_env("DYNAFLUX_CLUSTER__READ_CONSISTENCY", "one");
    cluster.nodes[2].restart();
    let answer = query(&cluster.url(2), "db", "SELECT count(v), sum(n) FROM cpu");
    let row = &answer["results"][0]["series"][0]["values"][0];
    assert_eq!(row[1].as_u64(), Some(1000), "{answer}");
    assert_eq!(row[2].as_u64(), Some(sum_n), "{answer}");
}

/// `count(v)` on one node, optionally of one host.
fn count_on(url: &str, host: Option<&str>) -> u64 {
    let q = match host {
        Some(host) => format!("SELECT count(v) FROM cpu WHERE host = '{host}'"),
        None => "SELECT count(v) FROM cpu".to_string(),
    };
    query(url, "db", &q)["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .unwrap_or(0)
}

/// A DELETE and a DROP SERIES issued while node 3 is down (handoff off:
/// only anti-entropy can tell it): once it is back and the cluster has
/// converged, the deleted points are gone on every node, and further
/// repair rounds do not bring them back from node 3's old copy.
#[test]
fn deletes_issued_while_a_replica_is_down_stay_deleted_everywhere() {
    let mut cluster = TestCluster::start_with(3, 3, &CONVERGING);
    create_database(&cluster.url(0));
    write_all(&cluster, &lines(10, 100));
    cluster.nodes[2].kill9();
    for statement in [
        "DELETE FROM cpu WHERE host = 'h001' AND time < 50s",
        "DROP SERIES FROM cpu WHERE host = 'h002'",
    ] {
        let (status, body) = get_query(&cluster.url(0), &[("db", "db"), ("q", statement)]);
        assert_eq!(status, 200, "{statement}: {body}");
        assert!(body["results"][0]["error"].is_null(), "{body}");
    }
    assert_eq!(count_on(&cluster.url(0), None), 850);
    cluster.nodes[2].restart();
    cluster.wait_live(3);
    wait_until(
        "every node to apply the deletes",
        Duration::from_secs(60),
        || (0..3).all(|i| count_on(&cluster.url(i), None) == 850),
    );
    for _ in 0..2 {
        for i in 0..3 {
            let (status, body) =
                request("POST", &format!("{}/cluster/repair", cluster.url(i)), None);
            assert_eq!(status, 200, "{body}");
        }
    }
    for i in 0..3 {
        let url = cluster.url(i);
        assert_eq!(count_on(&url, None), 850, "node {}", i + 1);
        assert_eq!(count_on(&url, Some("h001")), 50, "node {}", i + 1);
        assert_eq!(count_on(&url, Some("h002")), 0, "node {}", i + 1);
        assert_eq!(count_on(&url, Some("h003")), 100, "node {}", i + 1);
    }
    // Node 3 alone agrees.
    cluster.nodes[0].kill9();
    cluster.nodes[1].kill9();
    assert_eq!(count_on(&cluster.url(2), None), 850);
    assert_eq!(count_on(&cluster.url(2), Some("h002")), 0);
}
