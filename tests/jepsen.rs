//! A Jepsen-style fault run over real processes: four clients write at
//! `consistency=quorum` for 60 s while a nemesis `kill -9`s and restarts a
//! node, pauses nodes with SIGSTOP, and cuts nodes apart both ways (gossip
//! and RPC, iptables DROP between per-node loopback addresses; needs root).
//! Then everything heals, and within 60 s every node, read alone, must hold
//! every acknowledged point and the same points as the others.
//!
//! Handoff stays on (as deployed); anti-entropy runs every 5 s.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{encode, get_query, wait_until, TestCluster};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const WRITERS: usize = 4;
const BATCH: usize = 10;
const RUN: Duration = Duration::from_secs(60);
/// Points of one writer are one series, `seq` seconds apart: read back in
/// windows of this many, under the per-series row limit.
const WINDOW: usize = 5000;

/// Write one batch; `true` only for a 204 (acknowledged).
fn write(url: &str, writer: usize, seqs: &[usize]) -> bool {
    let body: Vec<String> = seqs
        .iter()
        .map(|seq| format!("m,writer=w{writer} v={seq}i {seq}000000000"))
        .collect();
    let url = format!(
        "{url}/write?{}",
        encode(&[("db", "db"), ("consistency", "quorum")])
    );
    ureq::post(&url)
        .timeout(Duration::from_secs(4))
        .send_string(&body.join("\n"))
        .is_ok_and(|response| response.status() == 204)
}

/// Every `v` of one writer's series on one node (read `one`: local).
fn values_on(url: &str, writer: usize, highest: usize) -> Option<BTreeSet<usize>> {
    let mut out = BTreeSet::new();
    let mut start = 0;
    while start <= highest {
        let q = format!(
            "SELECT v FROM m WHERE writer = 'w{writer}' AND time >= {start}s AND time < {}s",
            start + WINDOW
        );
        let (status, body) = get_query(url, &[("db", "db"), ("q", &q)]);
        if status != 200 {
            return None;
        }
        for row in body["results"][0]["series"][0]["values"]
            .as_array()
            .into_iter()
            .flatten()
        {
            out.insert(usize::try_from(row[1].as_i64()?).ok()?);
        }
        start += WINDOW;
    }
    Some(out)
}

fn signal(cluster: &TestCluster, node: usize, signal: Signal) {
    let pid = i32::try_from(cluster.nodes[node].pid()).expect("pid");
    kill(Pid::from_raw(pid), signal).expect("signal");
}

#[test]
fn quorum_writers_under_kills_pauses_and_partitions_lose_nothing_and_converge() {
    let mut cluster = TestCluster::start_partitionable(
        3,
        3,
        &[
            ("DYNAFLUX_ANTI_ENTROPY__INTERVAL", "5s"),
            ("DYNAFLUX_CLUSTER__READ_CONSISTENCY", "one"),
            ("DYNAFLUX_CLUSTER__RPC_TIMEOUT", "2s"),
        ],
    );
    let (status, body) = common::post_query(&cluster.url(0), "CREATE DATABASE db");
    assert_eq!(status, 200, "{body}");
    let urls: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (urls, stop) = (urls.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let (mut seq, mut attempt) = (0usize, writer);
                while !stop.load(Ordering::Relaxed) {
                    let seqs: Vec<usize> = (seq..seq + BATCH).collect();
                    seq += BATCH;
                    attempt += 1;
                    if write(&urls[attempt % urls.len()], writer, &seqs) {
                        acked.extend(seqs);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                (acked, seq)
            })
        })
        .collect();
    // The nemesis: (seconds into the run, fault).
    let started = Instant::now();
    let at = |seconds: u64| {
        let due = Duration::from_secs(seconds);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        eprintln!("nemesis at {:?}", started.elapsed());
    };
    at(5);
    cluster.nodes[2].kill9();
    at(12);
    cluster.nodes[2].restart();
    at(18);
    signal(&cluster, 1, Signal::SIGSTOP);
    at(24);
    signal(&cluster, 1, Signal::SIGCONT);
    at(30);
    let cut = cluster.partition(0, 2);
    at(38);
    cut.heal();
    at(44);
    let left = cluster.partition(0, 1);
    let right = cluster.partition(1, 2);
    at(52);
    left.heal();
    right.heal();
    at(55);
    signal(&cluster, 0, Signal::SIGSTOP);
    at(58);
    signal(&cluster, 0, Signal::SIGCONT);
    at(RUN.as_secs());
    stop.store(true, Ordering::Relaxed);
    let mut acked: Vec<BTreeSet<usize>> = Vec::new();
    let mut highest = 0;
    for writer in writers {
        let (values, next) = writer.join().expect("writer");
        highest = highest.max(next);
        acked.push(values.into_iter().collect());
    }
    let total: usize = acked.iter().map(BTreeSet::len).sum();
    eprintln!("acknowledged points: {total}");
    assert!(total > 10_000, "too few writes got through: {total}");
    // Healed: every fault is over. Within 60 s, every node alone holds
    // every acknowledged point, and all hold the same.
    cluster.wait_live(3);
    let healed = Instant::now();
    let mut last_report = String::new();
    let converged = (|| {
        while healed.elapsed() < Duration::from_secs(60) {
            let mut ok = true;
            last_report.clear();
            for (writer, values) in acked.iter().enumerate() {
                let on: Vec<Option<BTreeSet<usize>>> = urls
                    .iter()
                    .map(|url| values_on(url, writer, highest))
                    .collect();
                for (node, set) in on.iter().enumerate() {
                    match set {
                        Some(set) => {
                            let lost = values.difference(set).count();
                            if lost > 0 {
                                ok = false;
                                last_report.push_str(&format!(
                                    "writer {writer}: node {} lacks {lost} acknowledged points; ",
                                    node + 1
                                ));
                            }
                        }
                        None => ok = false,
                    }
                }
                if on.windows(2).any(|pair| pair[0] != pair[1]) {
                    ok = false;
                    last_report.push_str(&format!("writer {writer}: nodes differ; "));
                }
            }
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        false
    })();
    assert!(converged, "not converged 60 s after healing: {last_report}");
    eprintln!("converged {:?} after healing", healed.elapsed());
    // And it stays so: another read finds the nodes identical.
    wait_until("a final identical read", Duration::from_secs(5), || {
        let sets: Vec<_> = urls.iter().map(|url| values_on(url, 0, highest)).collect();
        sets.windows(2).all(|pair| pair[0] == pair[1])
    });
}
