//! A node joins a loaded cluster while writers and a reader keep going:
//! every count over already written data stays exact through the move,
//! every acknowledged write is there after it, the new node truly holds
//! its share (each original node killed in turn), and cleanup brings the
//! points stored back to RF x points.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{encode, get_query, request, wait_until, TestCluster};

const SERIES: usize = 100;
const PER_SERIES: usize = 3_000;
const FIXED: i64 = (SERIES * PER_SERIES) as i64;
/// 2020-01-01T00:00:00Z, in seconds.
const T0: i64 = 1_577_836_800;
const RF: u64 = 2;

fn count(url: &str, q: &str) -> Result<i64, String> {
    let (status, body) = get_query(url, &[("db", "db"), ("q", q)]);
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    let values = &body["results"][0]["series"][0]["values"][0][1];
    Ok(values.as_i64().unwrap_or(0))
}

fn fixed_count(url: &str) -> Result<i64, String> {
    count(
        url,
        &format!(
            "SELECT count(v) FROM m WHERE time >= {}s AND time < {}s",
            T0,
            T0 + PER_SERIES as i64
        ),
    )
}

fn write_at(url: &str, body: &str, consistency: &str) -> u16 {
    request(
        "POST",
        &format!(
            "{url}/write?{}",
            encode(&[
                ("db", "db"),
                ("precision", "s"),
                ("consistency", consistency)
            ])
        ),
        Some((body.as_bytes(), "text/plain")),
    )
    .0
}

/// Every (writer, sequence) stored up to `max_seq`, read through `url` in
/// pages (an answer stays well under the client's 10 MB limit).
fn live_points(url: &str, max_seq: i64) -> BTreeSet<(String, i64)> {
    const PAGE: i64 = 20_000;
    let mut out = BTreeSet::new();
    for writer in 0..4 {
        for page in 0..=max_seq / PAGE {
            let from = T0 + 10_000_000 + page * PAGE;
            let q = format!(
                "SELECT v FROM live WHERE w = 'w{writer}' AND time >= {from}s AND time < {}s",
                from + PAGE
            );
            let (status, body) = get_query(url, &[("db", "db"), ("q", &q)]);
            assert_eq!(status, 200, "{body}");
            let rows = &body["results"][0]["series"][0]["values"];
            for row in rows.as_array().into_iter().flatten() {
                out.insert((format!("w{writer}"), row[1].as_i64().unwrap_or(-1)));
            }
        }
    }
    out
}

#[test]
fn a_node_joins_under_load_and_every_answer_stays_right() {
    let env = [
        ("DYNAFLUX_CLUSTER__CLEANUP_DELAY", "2s"),
        ("DYNAFLUX_ANTI_ENTROPY__ENABLED", "false"),
    ];
    let mut cluster = TestCluster::start_with(3, RF as u32, &env);
    let first = cluster.url(0);
    assert_eq!(
        common::post_query(&first, "CREATE DATABASE db").0,
        200,
        "create database"
    );
    wait_until(
        "the database on every node",
        Duration::from_secs(30),
        || (0..3).all(|i| count(&cluster.url(i), "SELECT count(v) FROM m").is_ok()),
    );
    // The fixed data: 100 series x 3000 points, at RF 2 (quorum = both).
    let mut batch = String::new();
    for t in 0..PER_SERIES {
        for s in 0..SERIES {
            batch.push_str(&format!("m,s=s{s} v={t}i {}\n", T0 + t as i64));
        }
        if batch.len() > 200_000 || t + 1 == PER_SERIES {
            let url = cluster.url(t % 3);
            assert_eq!(write_at(&url, &batch, "quorum"), 204);
            batch.clear();
        }
    }
    for i in 0..3 {
        assert_eq!(fixed_count(&cluster.url(i)), Ok(FIXED));
    }

    let urls = Arc::new(Mutex::new(
        (0..3).map(|i| cluster.url(i)).collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let wrong = Arc::new(Mutex::new(Vec::<String>::new()));
    let reads = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(Mutex::new(BTreeSet::<(String, i64)>::new()));
    let mut threads = Vec::new();
    for writer in 0..4 {
        let (urls, stop, acked) = (urls.clone(), stop.clone(), acked.clone());
        threads.push(std::thread::spawn(move || {
            let mut seq = 0i64;
            let mut turn = writer;
            while !stop.load(Ordering::Relaxed) {
                let url = {
                    let urls = urls.lock().expect("urls");
                    turn += 1;
                    urls[turn % urls.len()].clone()
                };
                let mut body = String::new();
                let first = seq;
                for _ in 0..50 {
                    // Later than the fixed range: a separate measurement.
                    body.push_str(&format!(
                        "live,w=w{writer} v={seq}i {}\n",
                        T0 + 10_000_000 + seq
                    ));
                    seq += 1;
                }
                if write_at(&url, &body, "quorum") == 204 {
                    let mut acked = acked.lock().expect("acked");
                    for s in first..seq {
                        acked.insert((format!("w{writer}"), s));
                    }
                }
            }
        }));
    }
    {
        let (urls, stop, wrong, reads) = (urls.clone(), stop.clone(), wrong.clone(), reads.clone());
        threads.push(std::thread::spawn(move || {
            let mut turn = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let (url, joiner) = {
                    let urls = urls.lock().expect("urls");
                    turn += 1;
                    let index = turn % urls.len();
                    (urls[index].clone(), index == 3)
                };
                match fixed_count(&url) {
                    Ok(n) if n == FIXED => {
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    // The joiner answers 503 until it has copied the index.
                    Err(e) if joiner && e.starts_with("503") => {}
                    other => wrong
                        .lock()
                        .expect("wrong")
                        .push(format!("{url}: {other:?}")),
                }
            }
        }));
    }
    // Let the load run, then the fourth node joins.
    std::thread::sleep(Duration::from_secs(2));
    let joiner = cluster.add_node(&[]);
    urls.lock().expect("urls").push(cluster.url(joiner));
    wait_until(
        "node-4 normal on every node",
        Duration::from_secs(240),
        || (0..4).all(|i| cluster.nodes[i].state_of("node-4") == "normal"),
    );
    cluster.wait_live(4);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("thread");
    }
    let wrong = wrong.lock().expect("wrong").clone();
    assert!(
        wrong.is_empty(),
        "{} wrong answers of {}: {:?}",
        wrong.len(),
        reads.load(Ordering::Relaxed),
        &wrong[..wrong.len().min(10)]
    );
    assert!(reads.load(Ordering::Relaxed) > 10, "the reader read");
    let acked = acked.lock().expect("acked").clone();
    assert!(acked.len() > 1000, "the writers wrote: {}", acked.len());
    let max_seq = acked.iter().map(|(_, seq)| *seq).max().unwrap_or(0);
    let stored = live_points(&cluster.url(3), max_seq);
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged points lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let live_total = count(&cluster.url(3), "SELECT count(v) FROM live").expect("count");
    // The new node holds its share: with each original node down in turn,
    // the other three still answer every point.
    for down in 0..3 {
        cluster.nodes[down].kill9();
        for i in (0..4).filter(|i| *i != down) {
            let url = cluster.url(i);
            assert_eq!(
                fixed_count(&url),
                Ok(FIXED),
                "node {} with node {} down",
                i + 1,
                down + 1
            );
            let live = count(&url, "SELECT count(v) FROM live").expect("count");
            assert_eq!(
                live,
                live_total,
                "node {} with node {} down",
                i + 1,
                down + 1
            );
        }
        cluster.nodes[down].restart();
        cluster.wait_live(4);
    }
    // Cleanup: the old owners drop what moved, back to RF copies.
    let expected = RF * (FIXED + live_total) as u64;
    let mut held = Vec::new();
    wait_until(
        "RF x points stored over all nodes",
        Duration::from_secs(120),
        || {
            held = (0..4)
                .map(|i| {
                    let (_, body) = request(
                        "GET",
                        &format!("{}/cluster?points=true", cluster.url(i)),
                        None,
                    );
                    serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["local"]["points_held"].as_u64())
                        .unwrap_or(0)
                })
                .collect();
            held.iter().sum::<u64>() == expected
        },
    );
    assert!(held[3] > 0, "the new node holds points: {held:?}");
}
