//! Durability through the real binary: writers record every acknowledged
//! point, the node is `kill -9`ed mid-stream and restarted on the same data
//! dir, and a checker counts lost and duplicated acknowledged points: both
//! must be zero. A clean SIGTERM stop exits 0 and keeps the data.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const WRITERS: usize = 4;

/// Timestamps of every point of `series` (`SELECT * FROM dur WHERE writer = …`).
fn stored(url: &str, writer: usize) -> Vec<i64> {
    let (status, body) = common::get_query(
        url,
        &[
            ("db", "durable"),
            ("epoch", "ns"),
            (
                "q",
                &format!("SELECT v FROM dur WHERE writer = 'w{writer}'"),
            ),
        ],
    );
    assert_eq!(status, 200, "{body}");
    body.pointer("/results/0/series/0/values")
        .and_then(Value::as_array)
        .map(|rows| {
            rows.iter()
                .filter_map(|row| row.get(0).and_then(Value::as_i64))
                .collect()
        })
        .unwrap_or_default()
}

/// Write from `WRITERS` threads until `stop`; returns the acknowledged timestamps per writer.
fn write_until(url: String, stop: Arc<AtomicBool>, first: i64) -> Vec<BTreeSet<i64>> {
    let acked: Arc<Mutex<Vec<BTreeSet<i64>>>> =
        Arc::new(Mutex::new(vec![BTreeSet::new(); WRITERS]));
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let (url, stop, acked) = (url.clone(), stop.clone(), acked.clone());
            scope.spawn(move || {
                let mut next = first;
                while !stop.load(Ordering::Relaxed) {
                    let batch: Vec<i64> = (next..next + 50).collect();
                    next += 50;
                    let body: String = batch
                        .iter()
                        .map(|t| format!("dur,writer=w{writer} v={t}i {t}\n"))
                        .collect();
                    let (status, _) = common::write(&url, "durable", &body);
                    if status == 204 {
                        acked.lock().expect("lock")[writer].extend(batch);
                    } else if status == 0 {
                        // connection refused or cut: the node is down
                        return;
                    }
                }
            });
        }
    });
    Arc::try_unwrap(acked)
        .map(|m| m.into_inner().unwrap_or_default())
        .unwrap_or_default()
}

fn check(url: &str, acked: &[BTreeSet<i64>]) {
    let mut lost = 0;
    let mut duplicated = 0;
    for (writer, expected) in acked.iter().enumerate() {
        let got = stored(url, writer);
        let unique: BTreeSet<i64> = got.iter().copied().collect();
        duplicated += got.len() - unique.len();
        lost += expected.difference(&unique).count();
    }
    let total: usize = acked.iter().map(BTreeSet::len).sum();
    println!("acknowledged {total} points, lost {lost}, duplicated {duplicated}");
    assert!(total > 0, "nothing was acknowledged");
    assert_eq!(lost, 0, "acknowledged points lost");
    assert_eq!(duplicated, 0, "points duplicated");
}

#[test]
fn kill_9_mid_stream_loses_no_acknowledged_write() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut node = common::Node::start_in(&data.path().join("node"));
    let (status, body) = common::post_query(&node.url(), "CREATE DATABASE durable");
    assert_eq!(status, 200, "{body}");
    let mut all: Vec<BTreeSet<i64>> = vec![BTreeSet::new(); WRITERS];
    for round in 0..3i64 {
        let stop = Arc::new(AtomicBool::new(false));
        let url = node.url();
        let writers = {
            let stop = stop.clone();
            std::thread::spawn(move || write_until(url, stop, 1 + round * 1_000_000_000))
        };
        // Let some writes be acknowledged, then kill the node mid-stream.
        let baseline = stored(&node.url(), 0).len();
        let deadline = Instant::now() + Duration::from_secs(30);
        while stored(&node.url(), 0).len() < baseline + 2_000 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        node.kill9();
        stop.store(true, Ordering::Relaxed);
        let acked = writers.join().expect("writers");
        for (total, new) in all.iter_mut().zip(acked) {
            total.extend(new);
        }
        node.restart();
        check(&node.url(), &all);
    }
    // A clean stop keeps everything too.
    let status = node.terminate();
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        node.log_text()
    );
    node.restart();
    check(&node.url(), &all);
}
