//! Nodes leave, die and are replaced, and every point stays answered:
//! decommission (RF 1: the leaving node's data must move or be lost),
//! `cluster remove` of a dead node, the same by `offline_threshold` with
//! no command, and a replacement for a node whose disk is gone.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{encode, get_query, post_query, request, wait_until, TestCluster};

/// 2020-01-01T00:00:00Z, in seconds.
const T0: i64 = 1_577_836_800;

fn count(url: &str) -> Result<i64, String> {
    let (status, body) = get_query(url, &[("db", "db"), ("q", "SELECT count(v) FROM m")]);
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    Ok(body["results"][0]["series"][0]["values"][0][1]
        .as_i64()
        .unwrap_or(0))
}

/// `points` points over 50 series, written at consistency `all`.
fn load(cluster: &TestCluster, points: usize) {
    assert_eq!(post_query(&cluster.url(0), "CREATE DATABASE db").0, 200);
    wait_until(
        "the database on every node",
        Duration::from_secs(30),
        || (0..cluster.nodes.len()).all(|i| count(&cluster.url(i)).is_ok()),
    );
    let mut body = String::new();
    for i in 0..points {
        body.push_str(&format!(
            "m,s=s{} v={i}i {}\n",
            i % 50,
            T0 + (i / 50) as i64
        ));
    }
    let url = format!(
        "{}/write?{}",
        cluster.url(0),
        encode(&[("db", "db"), ("precision", "s"), ("consistency", "all")])
    );
    let (status, text) = request("POST", &url, Some((body.as_bytes(), "text/plain")));
    assert_eq!(status, 204, "{text}");
}

fn dynaflux(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dynaflux"))
        .args(args)
        .output()
        .expect("run dynaflux")
}

fn assert_all_answered(cluster: &TestCluster, nodes: &[usize], points: i64, when: &str) {
    for &i in nodes {
        assert_eq!(count(&cluster.url(i)), Ok(points), "node {} {when}", i + 1);
    }
}

fn wait_removed(cluster: &TestCluster, nodes: &[usize], id: &str) {
    wait_until(
        &format!("{id} removed everywhere"),
        Duration::from_secs(120),
        || {
            nodes.iter().all(|&i| {
                cluster.nodes[i].state_of(id) == "removed"
                    && cluster.nodes[i].cluster_status()["moving"] == false
            })
        },
    );
}

/// Kill each of `remaining` in turn: the other running nodes answer every
/// point.
fn kill_each_in_turn(cluster: &mut TestCluster, remaining: &[usize], points: i64) {
    for &down in remaining {
        cluster.nodes[down].kill9();
        let others: Vec<usize> = (0..cluster.nodes.len())
            .filter(|i| *i != down && cluster.nodes[*i].is_running())
            .collect();
        assert_all_answered(
            cluster,
            &others,
            points,
            &format!("with node {} down", down + 1),
        );
        cluster.nodes[down].restart();
        cluster.wait_live(cluster.nodes.iter().filter(|n| n.is_running()).count());
    }
}

#[test]
fn decommission_hands_every_range_off_and_exits() {
    const POINTS: i64 = 30_000;
    let env = [("DYNAFLUX_CLUSTER__CLEANUP_DELAY", "1s")];
    let mut cluster = TestCluster::start_with(3, 1, &env);
    load(&cluster, POINTS as usize);
    assert_all_answered(&cluster, &[0, 1, 2], POINTS, "before");
    // RF 1: node 3's points exist nowhere else until they are streamed.
    let out = dynaflux(&["cluster", "decommission", "--url", &cluster.url(2)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("has left"));
    let status = cluster.nodes[2].wait_exit(Duration::from_secs(60));
    assert!(status.success(), "a decommissioned node exits 0: {status}");
    wait_until("node-3 left everywhere", Duration::from_secs(30), || {
        (0..2).all(|i| cluster.nodes[i].state_of("node-3") == "left")
    });
    assert_all_answered(&cluster, &[0, 1], POINTS, "after node 3 left");
    // A left node does not come back as itself.
    let restarted = Command::new(env!("CARGO_BIN_EXE_dynaflux"))
        .args([
            "serve",
            "--data-dir",
            &cluster.nodes[2].data_dir.display().to_string(),
        ])
        .env("DYNAFLUX_NODE__ID", "node-3")
        .output()
        .expect("run");
    assert!(!restarted.status.success());
    assert!(
        String::from_utf8_lossy(&restarted.stderr).contains("has left the cluster"),
        "{}",
        String::from_utf8_lossy(&restarted.stderr)
    );
    // A new node joins, then node 1 leaves the same way.
    let joined = cluster.add_node(&[]);
    wait_until("node-4 normal", Duration::from_secs(120), || {
        [0, 1, joined]
            .iter()
            .all(|&i| cluster.nodes[i].state_of("node-4") == "normal")
    });
    cluster.wait_live(3);
    let out = dynaflux(&["cluster", "decommission", "--url", &cluster.url(0)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cluster.nodes[0]
        .wait_exit(Duration::from_secs(60))
        .success());
    wait_until("node-1 left everywhere", Duration::from_secs(30), || {
        [1, joined]
            .iter()
            .all(|&i| cluster.nodes[i].state_of("node-1") == "left")
    });
    if count(&cluster.url(1)) != Ok(POINTS) {
        for i in [0, 1, joined] {
            let held = request(
                "GET",
                &format!("{}/cluster?points=true", cluster.url(i)),
                None,
            )
            .1;
            eprintln!("node {}: {:?} {held}", i + 1, count(&cluster.url(i)));
            for line in cluster.nodes[i].log_text().lines().filter(|l| {
                l.contains("stream")
                    || l.contains("clean")
                    || l.contains("ring changed")
                    || l.contains("normal")
                    || l.contains("left")
            }) {
                eprintln!("  {line}");
            }
        }
    }
    assert_all_answered(&cluster, &[1, joined], POINTS, "after node 1 left");
    // The only member left cannot leave: nobody would hold its data.
    let (status, body) = request(
        "POST",
        &format!("{}/cluster/decommission", cluster.url(1)),
        None,
    );
    assert_eq!(status, 202, "{body}");
    wait_until(
        "node-2 leaving as node 4 sees it",
        Duration::from_secs(30),
        || {
            let state = cluster.nodes[joined].state_of("node-2");
            state == "leaving" || state == "left"
        },
    );
    let (status, body) = request(
        "POST",
        &format!("{}/cluster/decommission", cluster.url(joined)),
        None,
    );
    assert_eq!(status, 409, "{body}");
}

#[test]
fn a_dead_node_is_removed_and_its_ranges_get_their_copies_back() {
    const POINTS: i64 = 40_000;
    let mut cluster = TestCluster::start(4, 2);
    load(&cluster, POINTS as usize);
    // Refused while the node is live, and for a node nobody knows.
    let out = dynaflux(&["cluster", "remove", "--url", &cluster.url(0), "node-4"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is live"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _) = request(
        "POST",
        &format!("{}/cluster/remove?node=nobody", cluster.url(0)),
        None,
    );
    assert_eq!(status, 404);
    cluster.nodes[3].kill9();
    wait_until("node-4 down", Duration::from_secs(30), || {
        cluster.nodes[0].live_members().len() == 3
    });
    let out = dynaflux(&["cluster", "remove", "--url", &cluster.url(0), "node-4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_removed(&cluster, &[0, 1, 2], "node-4");
    kill_each_in_turn(&mut cluster, &[0, 1, 2], POINTS);
}

#[test]
fn offline_threshold_removes_a_dead_node_with_no_command() {
    const POINTS: i64 = 40_000;
    let env = [("DYNAFLUX_CLUSTER__OFFLINE_THRESHOLD", "10s")];
    let mut cluster = TestCluster::start_with(4, 2, &env);
    load(&cluster, POINTS as usize);
    cluster.nodes[3].kill9();
    wait_removed(&cluster, &[0, 1, 2], "node-4");
    let removals: u64 = (0..3)
        .map(|i| {
            cluster.nodes[i].cluster_status()["local"]["auto_removals"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(removals, 1, "one node decided, once");
    kill_each_in_turn(&mut cluster, &[0, 1, 2], POINTS);
}

#[test]
fn a_replacement_takes_over_a_node_whose_disk_is_gone() {
    const POINTS: i64 = 30_000;
    let mut cluster = TestCluster::start(3, 3);
    load(&cluster, POINTS as usize);
    cluster.nodes[2].kill9();
    std::fs::remove_dir_all(&cluster.nodes[2].data_dir).expect("wipe node 3");
    let new = cluster.add_node(&[("DYNAFLUX_CLUSTER__REPLACE", "node-3")]);
    wait_until(
        "node-4 normal and node-3 removed",
        Duration::from_secs(120),
        || {
            [0, 1, new].iter().all(|&i| {
                cluster.nodes[i].state_of("node-4") == "normal"
                    && cluster.nodes[i].state_of("node-3") == "removed"
                    && cluster.nodes[i].cluster_status()["moving"] == false
            })
        },
    );
    // The other replicas of its ranges gone: the new node alone has it all.
    cluster.nodes[0].kill9();
    cluster.nodes[1].kill9();
    assert_eq!(
        count(&cluster.url(new)),
        Ok(POINTS),
        "{}",
        cluster.nodes[new].log_text()
    );
}

#[test]
fn a_joiner_killed_mid_stream_resumes_after_a_restart() {
    const POINTS: i64 = 300_000;
    let mut cluster = TestCluster::start(3, 2);
    load(&cluster, POINTS as usize);
    // Slow enough to be caught mid-stream (the points compress to a few KB).
    let joiner = cluster.add_node(&[("DYNAFLUX_STREAMING__RATE_LIMIT", "1KiB")]);
    let caught = std::time::Instant::now() + Duration::from_secs(60);
    let before = loop {
        let stream = cluster.nodes[joiner].cluster_status()["streaming"].clone();
        if stream["rows_received"].as_u64().unwrap_or(0) > 0 && stream["done"] == false {
            break stream;
        }
        assert!(
            std::time::Instant::now() < caught,
            "node 4 not caught streaming: {stream}\n{}",
            cluster.nodes[joiner].log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    cluster.nodes[joiner].kill9();
    cluster.nodes[joiner].set_env("DYNAFLUX_STREAMING__RATE_LIMIT", "0");
    cluster.nodes[joiner].restart();
    wait_until("node-4 normal everywhere", Duration::from_secs(120), || {
        (0..4).all(|i| cluster.nodes[i].state_of("node-4") == "normal")
    });
    cluster.wait_live(4);
    let after = cluster.nodes[joiner].cluster_status()["streaming"].clone();
    eprintln!("before the kill: {before}\nafter the restart: {after}");
    assert_eq!(after["done"], true, "{after}");
    kill_each_in_turn(&mut cluster, &[0, 1, 2], POINTS);
}

#[test]
fn with_auto_join_off_a_new_node_waits_for_add_node() {
    const POINTS: i64 = 20_000;
    let mut cluster = TestCluster::start(3, 2);
    load(&cluster, POINTS as usize);
    let waiting = cluster.add_node(&[("DYNAFLUX_CLUSTER__AUTO_JOIN", "false")]);
    wait_until("node-4 seen joining", Duration::from_secs(30), || {
        cluster.nodes[0].state_of("node-4") == "joining"
    });
    // It takes no ranges by itself.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(cluster.nodes[0].cluster_status()["moving"], false);
    assert_eq!(cluster.nodes[0].state_of("node-4"), "joining");
    let out = dynaflux(&["cluster", "add-node", "--url", &cluster.url(0), "node-9"]);
    assert!(!out.status.success(), "an unknown node is refused");
    let address = format!("127.0.0.1:{}", cluster.nodes[waiting].port);
    let out = dynaflux(&["cluster", "add-node", "--url", &cluster.url(0), &address]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("node-4 is normal"));
    cluster.wait_live(4);
    kill_each_in_turn(&mut cluster, &[0, 1, 2], POINTS);
}
