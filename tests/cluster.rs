//! Multi-node tests over real processes and sockets: placement, consistency
//! levels under `kill -9`, schema statements across the cluster, and the
//! cluster secret.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{encode, get_query, request, wait_until, TestCluster};
use dynaflux::lineproto::series_key;
use dynaflux_actors::Ring;
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

fn create_database(url: &str, db: &str) {
    let (status, body) = common::post_query(url, &format!("CREATE DATABASE {db}"));
    assert_eq!(status, 200, "{body}");
}

fn query(url: &str, db: &str, q: &str) -> Value {
    let (status, body) = get_query(url, &[("db", db), ("q", q)]);
    assert_eq!(status, 200, "{q}: {body}");
    body
}

fn points_stored(node: &common::Node) -> u64 {
    node.cluster_status()["local"]["points_stored"]
        .as_u64()
        .expect("points_stored")
}

/// `hosts` series, `per_host` points each, one line per point.
fn lines(hosts: usize, per_host: usize, offset: usize) -> Vec<String> {
    let mut out = Vec::new();
    for t in 0..per_host {
        for h in 0..hosts {
            out.push(format!(
                "cpu,host=h{h:03},rack=r{} v={}.5,n={}i {}",
                h % 7,
                t + h,
                t,
                (offset + t) as i64 * 1_000_000_000
            ));
        }
    }
    out
}

#[test]
fn five_nodes_rf3_store_every_point_exactly_three_times() {
    let cluster = TestCluster::start(5, 3);
    create_database(&cluster.url(0), "db");
    let all = lines(60, 20, 0);
    // Writes spread over every node.
    for (i, chunk) in all.chunks(100).enumerate() {
        let url = cluster.url(i % 5);
        let (status, body) = write_at(&url, "db", "all", &chunk.join("\n"));
        assert_eq!(status, 204, "{body}");
    }
    // What each node must hold, from the ring every node computes.
    let members: Vec<String> = (1..=5).map(|i| format!("node-{i}")).collect();
    let ring = Ring::new(members.clone(), 128, 3);
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for h in 0..60 {
        let tags = [
            ("host".to_string(), format!("h{h:03}")),
            ("rack".to_string(), format!("r{}", h % 7)),
        ];
        let key = series_key("cpu", &tags);
        let token = dynaflux::storage::series_token("db", &key);
        for replica in ring.replicas(token) {
            *expected.entry(replica.clone()).or_default() += 20;
        }
    }
    let stored: BTreeMap<String, u64> = cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| (format!("node-{}", i + 1), points_stored(node)))
        .collect();
    assert_eq!(
        stored.values().sum::<u64>(),
        3 * all.len() as u64,
        "{stored:?}"
    );
    assert_eq!(stored, expected);
    // Every node answers every query the same, and right.
    let queries = [
        "SELECT count(v), sum(n) FROM cpu",
        "SELECT sum(v) FROM cpu GROUP BY host",
        "SELECT * FROM cpu WHERE host = 'h042' ORDER BY time DESC LIMIT 3",
        "SHOW SERIES",
        "SHOW TAG VALUES WITH KEY = rack",
        "SELECT mean(v), max(v), first(v), last(n), spread(v) FROM cpu GROUP BY time(5s)",
        "SELECT min(v), count(n) FROM cpu WHERE rack = 'r3' GROUP BY time(7s), rack fill(none)",
        "SELECT v, n FROM cpu WHERE n > 15 AND host = 'h010'",
        "SELECT count(v) FROM cpu WHERE v > 30.0 OR rack = 'r1' GROUP BY rack",
        "SELECT * FROM cpu WHERE v < 5 ORDER BY time DESC LIMIT 4",
        // Zoned windows (+05:30 moves 7s windows) computed on the replicas.
        "SELECT mean(v), max(v), first(v), count(n) FROM cpu WHERE time < 20s GROUP BY time(7s) tz('Asia/Kolkata')",
        "SELECT count(v), last(n) FROM cpu WHERE time < 20s GROUP BY time(7s), rack ORDER BY time DESC tz('Asia/Kolkata')",
        // Transformations of zoned windows, one window early.
        "SELECT derivative(mean(v)), difference(count(n)), max(v) FROM cpu WHERE time >= 5s AND time < 20s GROUP BY time(7s) tz('Asia/Kolkata')",
    ];
    for q in queries {
        let first = query(&cluster.url(0), "db", q);
        for i in 1..5 {
            assert_eq!(
                query(&cluster.url(i), "db", q),
                first,
                "{q} on node-{}",
                i + 1
            );
        }
    }
    let zoned = query(
        &cluster.url(2),
        "db",
        "SELECT count(v) FROM cpu WHERE time < 20s GROUP BY time(7s) tz('Asia/Kolkata')",
    );
    // As InfluxDB 1.6.7 answers for these points: windows start at
    // multiples of 7s of local time (+05:30), so at -4s, 3s, 10s and 17s.
    assert_eq!(
        zoned["results"][0]["series"][0]["values"],
        serde_json::json!([
            ["1970-01-01T05:29:56+05:30", 180],
            ["1970-01-01T05:30:03+05:30", 420],
            ["1970-01-01T05:30:10+05:30", 420],
            ["1970-01-01T05:30:17+05:30", 180]
        ]),
        "{zoned}"
    );
    let count = query(&cluster.url(3), "db", "SELECT count(v) FROM cpu");
    assert_eq!(count["results"][0]["series"][0]["values"][0][1], 1200);
    // Aggregates and filters of series held elsewhere ran on their replicas.
    let served: u64 = cluster
        .nodes
        .iter()
        .map(|node| {
            node.cluster_status()["local"]["pushdowns_served"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert!(served > 0, "nothing was pushed down");
    let filtered = query(
        &cluster.url(4),
        "db",
        "SELECT v, n FROM cpu WHERE n > 15 AND host = 'h010'",
    );
    assert_eq!(
        filtered["results"][0]["series"][0]["values"]
            .as_array()
            .map(Vec::len),
        Some(4),
        "{filtered}"
    );
}

#[test]
fn quorum_survives_one_kill9_and_fails_clearly_with_two() {
    let mut cluster = TestCluster::start(3, 3);
    create_database(&cluster.url(0), "db");
    let (status, body) = write_at(&cluster.url(0), "db", "quorum", &lines(10, 5, 0).join("\n"));
    assert_eq!(status, 204, "{body}");
    cluster.nodes[2].kill9();
    // Quorum writes through both survivors, and reads, keep working.
    for (i, url) in [cluster.url(0), cluster.url(1)].iter().enumerate() {
        let (status, body) = write_at(url, "db", "quorum", &lines(10, 5, 10 * (i + 1)).join("\n"));
        assert_eq!(status, 204, "{body}");
    }
    for url in [cluster.url(0), cluster.url(1)] {
        let answer = query(&url, "db", "SELECT count(v) FROM cpu");
        assert_eq!(
            answer["results"][0]["series"][0]["values"][0][1], 150,
            "{answer}"
        );
    }
    cluster.nodes[1].kill9();
    let (status, body) = write_at(
        &cluster.url(0),
        "db",
        "quorum",
        &lines(10, 1, 100).join("\n"),
    );
    assert_eq!(status, 503, "{body}");
    let error: Value = serde_json::from_str(&body).expect("json error");
    let text = error["error"].as_str().expect("error text");
    assert!(
        text.starts_with("write failed: consistency quorum not met: 1 of 2 required ("),
        "{text}"
    );
    assert!(
        text.contains("node-2: ") && text.contains("node-3: "),
        "{text}"
    );
    let (status, body) = write_at(&cluster.url(0), "db", "one", &lines(10, 1, 100).join("\n"));
    assert_eq!(status, 204, "{body}");
    let answer = query(&cluster.url(0), "db", "SELECT count(v) FROM cpu");
    assert_eq!(
        answer["results"][0]["series"][0]["values"][0][1], 160,
        "{answer}"
    );
    // An unknown level is the client's mistake.
    let (status, _) = write_at(&cluster.url(0), "db", "most", "cpu v=1");
    assert_eq!(status, 400);
}

#[test]
fn schema_statements_reach_every_node_and_outlive_their_issuer() {
    let mut cluster = TestCluster::start(3, 3);
    create_database(&cluster.url(0), "metrics");
    let (status, body) = common::post_query(
        &cluster.url(0),
        "CREATE RETENTION POLICY week ON metrics DURATION 7d REPLICATION 1",
    );
    assert_eq!(status, 200, "{body}");
    cluster.nodes[0].kill9();
    for index in [1, 2] {
        let url = cluster.url(index);
        let databases = query(&url, "", "SHOW DATABASES");
        assert!(databases.to_string().contains("\"metrics\""), "{databases}");
        let policies = query(&url, "metrics", "SHOW RETENTION POLICIES ON metrics");
        assert!(policies.to_string().contains("\"week\""), "{policies}");
        let (status, body) = write_at(&url, "metrics", "quorum", "m v=1 1");
        assert_eq!(status, 204, "{body}");
    }
    let answer = query(&cluster.url(2), "metrics", "SELECT count(v) FROM m");
    assert_eq!(
        answer["results"][0]["series"][0]["values"][0][1], 1,
        "{answer}"
    );
}

#[test]
fn a_node_with_the_wrong_secret_is_kept_out() {
    let cluster = TestCluster::start(2, 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = format!("127.0.0.1:{}", cluster.nodes[0].gossip_port);
    let intruder = common::Node::start_with_env(
        dir.path(),
        &[
            ("DYNAFLUX_NODE__ID", "intruder"),
            ("DYNAFLUX_CLUSTER__SEEDS", seed.as_str()),
            ("DYNAFLUX_CLUSTER__SECRET", "wrong"),
        ],
    );
    // Its gossip is dropped: the node counts rejected datagrams...
    wait_until("rejected gossip", Duration::from_secs(20), || {
        cluster.nodes[0].cluster_status()["local"]["gossip_datagrams_rejected"]
            .as_u64()
            .is_some_and(|n| n > 0)
    });
    // ...and never lists it.
    for node in &cluster.nodes {
        assert!(!node.cluster_status().to_string().contains("intruder"));
    }
    assert_eq!(intruder.live_members(), vec!["intruder".to_string()]);
    // An RPC connection with the wrong secret is refused too.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client: dynaflux_actors::rpc::Client<
        dynaflux::cluster::Request,
        dynaflux::cluster::Response,
    > = dynaflux_actors::rpc::Client::new(
        "intruder".into(),
        b"wrong".as_slice().into(),
        Duration::from_secs(5),
    );
    let address = format!("127.0.0.1:{}", cluster.nodes[0].rpc_port)
        .parse()
        .expect("address");
    let answer = runtime.block_on(client.call(
        address,
        dynaflux::cluster::Request::Statement {
            db: None,
            rp: None,
            text: "DROP DATABASE x".into(),
        },
    ));
    assert_eq!(answer.err(), Some(dynaflux_actors::rpc::RpcError::Auth));
    wait_until("a rejected RPC connection", Duration::from_secs(10), || {
        cluster.nodes[0].cluster_status()["local"]["rpc_connections_rejected"]
            .as_u64()
            .is_some_and(|n| n > 0)
    });
}

#[test]
fn status_prints_the_members_as_a_table() {
    let cluster = TestCluster::start(3, 3);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dynaflux"))
        .args(["status", "--url", &cluster.url(1)])
        .output()
        .expect("dynaflux status");
    assert!(output.status.success());
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("node node-2  replication factor 3"),
        "{table}"
    );
    for id in ["node-1", "node-2", "node-3"] {
        let row = table
            .lines()
            .find(|line| line.starts_with(id))
            .unwrap_or_else(|| panic!("no row for {id}:\n{table}"));
        assert!(row.contains(" normal ") && row.contains(" yes "), "{row}");
    }
    let unreachable = std::process::Command::new(env!("CARGO_BIN_EXE_dynaflux"))
        .args(["status", "--url", "http://127.0.0.1:1"])
        .output()
        .expect("dynaflux status");
    assert!(!unreachable.status.success());
}

/// A base port whose node ports (HTTP base+i, RPC base+1000+i, gossip
/// base+2000+i) are all free now; below 10000, so neither the kernel's
/// ephemeral ports nor the harness's own (common::free_port_on) meet them.
fn free_local_base(nodes: u16) -> u16 {
    for _ in 0..200 {
        let base = 2_000 + (rand::random::<u16>() % 5_000);
        let free = (0..nodes).all(|i| {
            std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", base + 1000 + i)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", base + 2000 + i)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free ports for a local cluster");
}

#[test]
fn local_starts_a_working_cluster_and_stops_it_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_local_base(3);
    let mut local = std::process::Command::new(env!("CARGO_BIN_EXE_dynaflux"))
        .args([
            "local",
            "--nodes",
            "3",
            "--port",
            &base.to_string(),
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("dynaflux local");
    // A failing assertion must not leave the cluster running: SIGINT on drop.
    struct StopOnDrop(u32);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            if let Ok(pid) = i32::try_from(self.0) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
        }
    }
    let _guard = StopOnDrop(local.id());
    let url = |i: u16| format!("http://127.0.0.1:{}", base + i);
    wait_until("three live members", Duration::from_secs(30), || {
        let (_, body) = request("GET", &format!("{}/cluster", url(0)), None);
        body.matches("\"live\":true").count() == 3
    });
    // Ready (met the peers and their schema): /health 200 on every node.
    wait_until("every node ready", Duration::from_secs(30), || {
        (0..3).all(|i| request("GET", &format!("{}/health", url(i)), None).0 == 200)
    });
    create_database(&url(0), "db");
    let (status, body) = write_at(&url(1), "db", "all", "m v=1 1\nm v=2 2");
    assert_eq!(status, 204, "{body}");
    let answer = query(&url(2), "db", "SELECT sum(v) FROM m");
    assert_eq!(
        answer["results"][0]["series"][0]["values"][0][1], 3,
        "{answer}"
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(local.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let status = local.wait().expect("wait");
    assert!(status.success(), "{status}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut local.stdout.take().expect("stdout"), &mut out)
        .expect("read");
    for i in 1..=3 {
        assert!(
            out.contains(&format!("node-{i}: http://127.0.0.1:{}", base + i - 1)),
            "{out}"
        );
        assert!(
            out.contains(&format!("node-{i}: stopped (exit status: 0)")),
            "{out}"
        );
    }
    assert!(dir.path().join("node-1").join("node_id").exists());
}

fn database_names(url: &str) -> Vec<String> {
    let answer = query(url, "", "SHOW DATABASES");
    let mut names: Vec<String> = answer["results"][0]["series"][0]["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| row[0].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

#[test]
fn a_node_that_missed_schema_statements_catches_up_and_drops_stay_dropped() {
    let mut cluster = TestCluster::start(3, 3);
    create_database(&cluster.url(0), "keep");
    create_database(&cluster.url(0), "gone");
    cluster.nodes[2].kill9();
    let (status, body) = common::post_query(&cluster.url(0), "DROP DATABASE gone");
    assert_eq!(status, 200, "{body}");
    create_database(&cluster.url(1), "new");
    let (status, body) = common::post_query(
        &cluster.url(1),
        "CREATE RETENTION POLICY short ON keep DURATION 1h REPLICATION 1 DEFAULT",
    );
    assert_eq!(status, 200, "{body}");
    cluster.nodes[2].restart();
    cluster.wait_live(3);
    let wanted = vec!["keep".to_string(), "new".to_string()];
    wait_until("node 3 to catch up", Duration::from_secs(30), || {
        database_names(&cluster.url(2)) == wanted
    });
    // The node that missed the drop did not bring "gone" back anywhere.
    for index in 0..3 {
        assert_eq!(
            database_names(&cluster.url(index)),
            wanted,
            "node-{}",
            index + 1
        );
    }
    let policies = query(&cluster.url(2), "keep", "SHOW RETENTION POLICIES ON keep");
    assert!(
        policies
            .to_string()
            .contains("[\"short\",\"1h0m0s\",\"1h0m0s\",1,true]"),
        "{policies}"
    );
    let (status, body) = write_at(&cluster.url(2), "new", "all", "m v=1 1");
    assert_eq!(status, 204, "{body}");
}

/// Node 3 is down while points of existing series are written at quorum;
/// it comes back without them (hinted handoff off). Asked through node
/// 3, a read at `one` misses them; at `quorum` it merges node 3's copy
/// with another replica's and sees every acknowledged point.
fn count_through_a_replica_that_missed_writes(read_consistency: &str) -> u64 {
    // Without hinted handoff, so that node 3 stays behind.
    let mut cluster = TestCluster::start_with(
        3,
        3,
        &[
            ("DYNAFLUX_CLUSTER__READ_CONSISTENCY", read_consistency),
            ("DYNAFLUX_HANDOFF__ENABLED", "false"),
        ],
    );
    create_database(&cluster.url(0), "db");
    let (status, body) = write_at(&cluster.url(0), "db", "all", &lines(10, 5, 0).join("\n"));
    assert_eq!(status, 204, "{body}");
    cluster.nodes[2].kill9();
    let (status, body) = write_at(&cluster.url(0), "db", "quorum", &lines(10, 5, 5).join("\n"));
    assert_eq!(status, 204, "{body}");
    cluster.nodes[2].restart();
    cluster.wait_live(3);
    let answer = query(&cluster.url(2), "db", "SELECT count(v) FROM cpu");
    answer["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .expect("a count")
}

#[test]
fn quorum_reads_see_what_a_returning_replica_missed() {
    assert_eq!(count_through_a_replica_that_missed_writes("quorum"), 100);
    // The same through `one`: the stale copy, which is why the test above
    // proves something.
    assert_eq!(count_through_a_replica_that_missed_writes("one"), 50);
}

/// Node 3 cut off from nodes 1 and 2 (gossip and RPC, both ways): the
/// majority side keeps writing at quorum, the minority side refuses with
/// the consistency error, and once healed node 3 is a member again.
#[test]
fn a_partitioned_node_cannot_meet_quorum_and_rejoins_when_healed() {
    let cluster =
        TestCluster::start_partitionable(3, 3, &[("DYNAFLUX_CLUSTER__RPC_TIMEOUT", "5s")]);
    create_database(&cluster.url(0), "db");
    let (status, body) = write_at(&cluster.url(0), "db", "all", &lines(10, 5, 0).join("\n"));
    assert_eq!(status, 204, "{body}");
    let cut = [cluster.partition(0, 2), cluster.partition(1, 2)];
    wait_until(
        "node 3 to see itself alone",
        Duration::from_secs(30),
        || cluster.nodes[2].live_members() == vec!["node-3".to_string()],
    );
    wait_until(
        "nodes 1 and 2 to see node 3 down",
        Duration::from_secs(30),
        || cluster.nodes[0].live_members().len() == 2 && cluster.nodes[1].live_members().len() == 2,
    );
    let (status, body) = write_at(&cluster.url(1), "db", "quorum", &lines(10, 5, 5).join("\n"));
    assert_eq!(status, 204, "majority side: {body}");
    let (status, body) = write_at(
        &cluster.url(2),
        "db",
        "quorum",
        &lines(10, 1, 50).join("\n"),
    );
    assert_eq!(status, 503, "minority side: {body}");
    assert!(
        body.contains("write failed: consistency quorum not met: 1 of 2 required (")
            && body.contains("node-1: ")
            && body.contains("node-2: "),
        "{body}"
    );
    drop(cut);
    cluster.wait_live(3);
    let (status, body) = write_at(
        &cluster.url(2),
        "db",
        "quorum",
        &lines(10, 1, 60).join("\n"),
    );
    assert_eq!(status, 204, "healed: {body}");
    // The refused write is not undone: node 3 stored it and kept hints for
    // nodes 1 and 2, which it delivers once healed.
    wait_until("node 3's hints to drain", Duration::from_secs(30), || {
        hint_entries(&cluster.nodes[2]) == 0
    });
    let answer = query(&cluster.url(0), "db", "SELECT count(v) FROM cpu");
    // 50 + 50 on the majority side, 10 refused then delivered, 10 after healing.
    let count = answer["results"][0]["series"][0]["values"][0][1].as_u64();
    assert_eq!(count, Some(120), "{answer}");
}

/// Hints this node holds, over every target.
fn hint_entries(node: &common::Node) -> u64 {
    node.cluster_status()["local"]["hints"]
        .as_object()
        .map(|queues| {
            queues
                .values()
                .map(|queue| queue["entries"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(u64::MAX)
}

/// Every point of `lines(hosts, per_host, 0)` is on node 3 alone, once.
fn assert_node3_alone_has(cluster: &mut TestCluster, hosts: usize, per_host: usize) {
    cluster.nodes[0].kill9();
    cluster.nodes[1].kill9();
    let url = cluster.url(2);
    let total = query(&url, "db", "SELECT count(v), sum(n) FROM cpu");
    let row = &total["results"][0]["series"][0]["values"][0];
    assert_eq!(row[1].as_u64(), Some((hosts * per_host) as u64), "{total}");
    // n = t for t in 0..per_host, on every host.
    let sum_n = (hosts * per_host * (per_host - 1) / 2) as u64;
    assert_eq!(row[2].as_u64(), Some(sum_n), "{total}");
    let per_series = query(&url, "db", "SELECT count(v) FROM cpu GROUP BY host");
    let series = per_series["results"][0]["series"]
        .as_array()
        .expect("series");
    assert_eq!(series.len(), hosts);
    for one in series {
        assert_eq!(one["values"][0][1].as_u64(), Some(per_host as u64), "{one}");
    }
}

#[test]
fn hinted_handoff_gives_a_returning_replica_every_write_it_missed() {
    let mut cluster = TestCluster::start(3, 3);
    create_database(&cluster.url(0), "db");
    assert!(cluster.nodes[2].terminate().success());
    let all = lines(100, 500, 0);
    for (i, chunk) in all.chunks(5000).enumerate() {
        let (status, body) = write_at(&cluster.url(i % 2), "db", "quorum", &chunk.join("\n"));
        assert_eq!(status, 204, "{body}");
    }
    assert!(hint_entries(&cluster.nodes[0]) + hint_entries(&cluster.nodes[1]) > 0);
    cluster.nodes[2].restart();
    cluster.wait_live(3);
    wait_until("the hint queues to drain", Duration::from_secs(60), || {
        hint_entries(&cluster.nodes[0]) == 0 && hint_entries(&cluster.nodes[1]) == 0
    });
    assert_node3_alone_has(&mut cluster, 100, 500);
}

#[test]
fn hints_survive_a_kill9_of_their_coordinator_and_any_needs_only_a_hint() {
    let mut cluster = TestCluster::start(3, 3);
    create_database(&cluster.url(0), "db");
    cluster.nodes[1].kill9();
    cluster.nodes[2].kill9();
    // Two of three replicas down: `any` is acknowledged once hints for
    // both are durable here; `quorum` is not.
    let all = lines(20, 50, 0);
    for chunk in all.chunks(250) {
        let (status, body) = write_at(&cluster.url(0), "db", "any", &chunk.join("\n"));
        assert_eq!(status, 204, "{body}");
    }
    // (A refused write is not undone: its hints are kept and delivered too,
    // which is why it goes to another measurement here.)
    let (status, _) = write_at(&cluster.url(0), "db", "quorum", "refused v=1 1");
    assert_eq!(status, 503);
    // The coordinator dies with its hints, and comes back.
    cluster.nodes[0].kill9();
    cluster.nodes[0].restart();
    assert!(
        hint_entries(&cluster.nodes[0]) > 0,
        "hints lost in the kill"
    );
    cluster.nodes[1].restart();
    cluster.nodes[2].restart();
    cluster.wait_live(3);
    wait_until("the hint queues to drain", Duration::from_secs(60), || {
        hint_entries(&cluster.nodes[0]) == 0
    });
    assert_node3_alone_has(&mut cluster, 20, 50);
    // Node 2 got them too: alone, it answers them all.
    cluster.nodes[2].kill9();
    cluster.nodes[1].restart();
    let answer = query(&cluster.url(1), "db", "SELECT count(v) FROM cpu");
    assert_eq!(
        answer["results"][0]["series"][0]["values"][0][1], 1000,
        "{answer}"
    );
}

#[test]
fn a_full_hint_queue_drops_loudly_and_the_node_keeps_serving() {
    let mut cluster = TestCluster::start_with(3, 3, &[("DYNAFLUX_HANDOFF__MAX_BYTES", "4KiB")]);
    create_database(&cluster.url(0), "db");
    cluster.nodes[2].kill9();
    // A small first write fits in the queue; the larger ones overflow it.
    let (status, body) = write_at(&cluster.url(0), "db", "quorum", "cpu,host=a v=1 1");
    assert_eq!(status, 204, "{body}");
    for chunk in lines(50, 20, 0).chunks(250) {
        let (status, body) = write_at(&cluster.url(0), "db", "quorum", &chunk.join("\n"));
        assert_eq!(status, 204, "{body}");
    }
    let status = cluster.nodes[0].cluster_status();
    assert_eq!(status["local"]["hints"]["node-3"]["entries"], 1, "{status}");
    assert!(
        status["local"]["hints_dropped"].as_u64() > Some(0),
        "{status}"
    );
    assert!(
        cluster.nodes[0]
            .log_text()
            .contains("hint dropped: the queue for this node is full"),
        "no warning in the log"
    );
    // The node keeps serving.
    let answer = query(&cluster.url(0), "db", "SELECT count(v) FROM cpu");
    assert!(answer["results"][0]["series"][0]["values"][0][1].as_u64() >= Some(1001));
}

#[test]
fn metrics_are_served_in_prometheus_text_format() {
    let mut cluster = TestCluster::start(3, 3);
    create_database(&cluster.url(0), "db");
    cluster.nodes[2].kill9();
    wait_until("node 3 seen down", Duration::from_secs(30), || {
        cluster.nodes[0].live_members().len() == 2
    });
    let (status, body) = write_at(
        &cluster.url(0),
        "db",
        "quorum",
        "cpu,host=a v=1 1\ncpu,host=b v=2 2",
    );
    assert_eq!(status, 204, "{body}");
    query(&cluster.url(0), "db", "SELECT count(v) FROM cpu");
    let (status, text) = request("GET", &format!("{}/metrics", cluster.url(0)), None);
    assert_eq!(status, 200);
    for line in [
        "dynaflux_write_requests_total 1",
        "dynaflux_points_written_total 2",
        "dynaflux_points_stored 2",
        "dynaflux_hint_queue_entries{node=\"node-3\"} 1",
        "dynaflux_members_live 2",
        "# EOF",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    assert!(text.contains("dynaflux_query_requests_total "), "{text}");
    assert!(
        text.contains("dynaflux_hint_queue_oldest_age_seconds{node=\"node-3\"} "),
        "{text}"
    );
}
