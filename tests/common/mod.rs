//! Process harness for integration tests: starts the real `dynaflux` binary
//! on a free loopback port and a data dir, waits for it with a deadline, and
//! can stop it (SIGTERM), kill it (`kill -9`) and restart it on the same data.
//!
//! `DYNAFLUX_TEST_URL` points the tests that support it at an external server
//! instead (for example a real InfluxDB 1.6.7, to check a test itself).

#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Ports handed to test nodes come from below the kernel's ephemeral range
/// (32768-60999 here): a port picked by binding port 0 and closing it can be
/// taken, before the node binds it, by any outgoing connection of the tests
/// running beside it (CI saw "Address already in use"). Within a process a
/// counter never hands out a port twice; across processes the start point
/// depends on the PID, and every port is checked free for TCP and UDP.
const PORT_LOW: u32 = 10_000;
const PORT_HIGH: u32 = 32_000;
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

pub fn free_port_on(host: &str) -> u16 {
    let span = PORT_HIGH - PORT_LOW;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(PORT_LOW + (start + n) % span) else {
            continue;
        };
        if TcpListener::bind((host, port)).is_ok() && UdpSocket::bind((host, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {host}");
}

pub fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

pub fn free_udp_port() -> u16 {
    free_port_on("127.0.0.1")
}

pub struct Node {
    child: Option<Child>,
    env: Vec<(String, String)>,
    /// The loopback address every socket of the node binds.
    pub host: String,
    pub port: u16,
    /// Internode RPC (TCP) and gossip (UDP) ports; kept across restarts.
    pub rpc_port: u16,
    pub gossip_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Node {
    /// A node on a fresh temporary data dir.
    pub fn start() -> Node {
        let temp = tempfile::tempdir().expect("tempdir");
        let mut node = Node::start_in(temp.path());
        node._temp = Some(temp);
        node
    }

    /// A node on `data_dir` (kept after the node stops).
    pub fn start_in(data_dir: &Path) -> Node {
        Node::start_with_env(data_dir, &[])
    }

    /// A node on `data_dir` with extra environment (`DYNAFLUX_<SECTION>__<KEY>`).
    pub fn start_with_env(data_dir: &Path, env: &[(&str, &str)]) -> Node {
        let mut node = Node {
            child: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            host: "127.0.0.1".into(),
            port: free_port(),
            rpc_port: free_port(),
            gossip_port: free_udp_port(),
            data_dir: data_dir.to_path_buf(),
            log: data_dir.with_extension("log"),
            _temp: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_dynaflux"))
            .args([
                "serve",
                "--http-bind",
                &format!("{}:{}", self.host, self.port),
                "--data-dir",
                &self.data_dir.display().to_string(),
            ])
            .env("RUST_LOG", "info")
            .env(
                "DYNAFLUX_CLUSTER__RPC_BIND",
                format!("{}:{}", self.host, self.rpc_port),
            )
            .env(
                "DYNAFLUX_CLUSTER__GOSSIP_BIND",
                format!("{}:{}", self.host, self.gossip_port),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dynaflux");
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// `/health` answers 200: the node has met its peers and takes writes.
    pub fn is_healthy(&self) -> bool {
        ureq::get(&format!("{}/health", self.url()))
            .timeout(Duration::from_secs(2))
            .call()
            .is_ok()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ureq::get(&format!("{}/ping", self.url()))
                .timeout(Duration::from_secs(2))
                .call()
                .is_ok()
            {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "dynaflux exited with {status} before it was ready:\n{}",
                        self.log_text()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "dynaflux not ready in time:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// `kill -9`, and wait until the process is gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit (with a deadline).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("dynaflux did not stop after SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (with a deadline) for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            let child = self.child.as_mut().expect("running");
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "dynaflux did not exit in time:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        self.child = None;
        status
    }

    /// This node's state in its own `/cluster` view.
    pub fn state_of(&self, id: &str) -> String {
        self.cluster_status()["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["id"] == id)
            .and_then(|m| m["state"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Set (or replace) an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Start again on the same data dir and ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the node first");
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `GET /cluster` as JSON.
    pub fn cluster_status(&self) -> serde_json::Value {
        let (_, body) = request("GET", &format!("{}/cluster", self.url()), None);
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    /// Live members in this node's `/cluster`.
    pub fn live_members(&self) -> Vec<String> {
        self.cluster_status()["members"]
            .as_array()
            .map(|members| {
                members
                    .iter()
                    .filter(|m| m["live"] == true)
                    .filter_map(|m| m["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A server to test against: a node of ours, or `DYNAFLUX_TEST_URL`.
pub enum Target {
    Own(Node),
    External(String),
}

impl Target {
    pub fn from_env() -> Target {
        match std::env::var("DYNAFLUX_TEST_URL") {
            Ok(url) if !url.is_empty() => Target::External(url.trim_end_matches('/').to_string()),
            _ => Target::Own(Node::start()),
        }
    }

    pub fn url(&self) -> String {
        match self {
            Target::Own(node) => node.url(),
            Target::External(url) => url.clone(),
        }
    }
}

/// The status and body of a request; never fails on HTTP error statuses.
pub fn request(method: &str, url: &str, body: Option<(&[u8], &str)>) -> (u16, String) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    let request = agent.request(method, url);
    let result = match body {
        Some((bytes, content_type)) => request.set("Content-Type", content_type).send_bytes(bytes),
        None => request.call(),
    };
    match result {
        Ok(response) => {
            let status = response.status();
            (status, response.into_string().unwrap_or_default())
        }
        Err(ureq::Error::Status(status, response)) => {
            (status, response.into_string().unwrap_or_default())
        }
        Err(error) => (
            0,
            format!("{{\"connection_error\":{:?}}}", error.to_string()),
        ),
    }
}

pub fn encode(pairs: &[(&str, &str)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        serializer.append_pair(key, value);
    }
    serializer.finish()
}

pub fn write(url: &str, db: &str, body: &str) -> (u16, String) {
    request(
        "POST",
        &format!("{url}/write?{}", encode(&[("db", db)])),
        Some((body.as_bytes(), "text/plain; charset=utf-8")),
    )
}

pub fn post_query(url: &str, q: &str) -> (u16, serde_json::Value) {
    let form = encode(&[("q", q)]);
    let (status, body) = request(
        "POST",
        &format!("{url}/query"),
        Some((form.as_bytes(), "application/x-www-form-urlencoded")),
    );
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    )
}

pub fn get_query(url: &str, params: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let (status, body) = request("GET", &format!("{url}/query?{}", encode(params)), None);
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    )
}

/// Wait until `condition` holds, polling, or panic with `what` at the deadline.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// N real nodes on loopback, seeded with each other, with temporary data dirs.
pub struct TestCluster {
    pub nodes: Vec<Node>,
    _dirs: Vec<tempfile::TempDir>,
}

impl TestCluster {
    /// `n` nodes with replication factor `rf`, started and fully joined.
    pub fn start(n: usize, rf: u32) -> TestCluster {
        TestCluster::start_with(n, rf, &[])
    }

    pub fn start_with(n: usize, rf: u32, env: &[(&str, &str)]) -> TestCluster {
        TestCluster::start_on(&vec!["127.0.0.1".to_string(); n], rf, env)
    }

    /// Each node on its own loopback address (127.x.y.i, x and y random),
    /// so that [`TestCluster::partition`] can cut pairs of nodes apart.
    pub fn start_partitionable(n: usize, rf: u32, env: &[(&str, &str)]) -> TestCluster {
        let (x, y) = (10 + rand::random::<u8>() % 240, rand::random::<u8>());
        let hosts: Vec<String> = (1..=n).map(|i| format!("127.{x}.{y}.{i}")).collect();
        TestCluster::start_on(&hosts, rf, env)
    }

    fn start_on(hosts: &[String], rf: u32, env: &[(&str, &str)]) -> TestCluster {
        let mut cluster = TestCluster::unstarted_on(hosts, rf, env);
        cluster.spawn_all();
        cluster.wait_live(hosts.len());
        cluster
    }

    /// `n` nodes configured (ports, data dirs, seeds) but not started:
    /// [`TestCluster::spawn_all`] starts them, each waited for only until
    /// it answers `/ping`.
    pub fn unstarted(n: usize, rf: u32, env: &[(&str, &str)]) -> TestCluster {
        TestCluster::unstarted_on(&vec!["127.0.0.1".to_string(); n], rf, env)
    }

    /// Start every node that is not running, one after the other, each
    /// as soon as the one before answers `/ping`.
    pub fn spawn_all(&mut self) {
        for node in &mut self.nodes {
            if !node.is_running() {
                node.spawn();
            }
        }
    }

    fn unstarted_on(hosts: &[String], rf: u32, env: &[(&str, &str)]) -> TestCluster {
        let n = hosts.len();
        let gossip: Vec<u16> = hosts.iter().map(|h| free_port_on(h)).collect();
        let mut dirs = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..n {
            let dir = tempfile::tempdir().expect("tempdir");
            let seeds: Vec<String> = gossip
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(j, port)| format!("{}:{port}", hosts[j]))
                .collect();
            let mut node_env: Vec<(String, String)> = vec![
                ("DYNAFLUX_NODE__ID".into(), format!("node-{}", i + 1)),
                ("DYNAFLUX_CLUSTER__SEEDS".into(), seeds.join(",")),
                (
                    "DYNAFLUX_CLUSTER__REPLICATION_FACTOR".into(),
                    rf.to_string(),
                ),
                ("DYNAFLUX_CLUSTER__SECRET".into(), "test-secret".into()),
            ];
            node_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            let node = Node {
                child: None,
                env: node_env,
                host: hosts[i].clone(),
                port: free_port_on(&hosts[i]),
                rpc_port: free_port_on(&hosts[i]),
                gossip_port: gossip[i],
                data_dir: dir.path().join("data"),
                log: dir.path().join("node.log"),
                _temp: None,
            };
            nodes.push(node);
            dirs.push(dir);
        }
        TestCluster { nodes, _dirs: dirs }
    }

    /// A new node (`node-<n+1>`) seeded with every existing node, with the
    /// cluster's settings and `env` on top, started (waited for until it
    /// answers `/ping`); its index.
    pub fn add_node(&mut self, env: &[(&str, &str)]) -> usize {
        let index = self.nodes.len();
        let dir = tempfile::tempdir().expect("tempdir");
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{}:{}", n.host, n.gossip_port))
            .collect();
        let mut node_env: Vec<(String, String)> = self.nodes[0]
            .env
            .iter()
            .filter(|(k, _)| k != "DYNAFLUX_NODE__ID" && k != "DYNAFLUX_CLUSTER__SEEDS")
            .cloned()
            .collect();
        node_env.push(("DYNAFLUX_NODE__ID".into(), format!("node-{}", index + 1)));
        node_env.push(("DYNAFLUX_CLUSTER__SEEDS".into(), seeds.join(",")));
        for (k, v) in env {
            node_env.retain(|(key, _)| key != k);
            node_env.push((k.to_string(), v.to_string()));
        }
        let host = self.nodes[0].host.clone();
        let mut node = Node {
            child: None,
            env: node_env,
            port: free_port_on(&host),
            rpc_port: free_port_on(&host),
            gossip_port: free_port_on(&host),
            host,
            data_dir: dir.path().join("data"),
            log: dir.path().join("node.log"),
            _temp: None,
        };
        node.spawn();
        self.nodes.push(node);
        self._dirs.push(dir);
        index
    }

    /// Cut nodes `a` and `b` apart, both ways, gossip and RPC (iptables
    /// DROP between their addresses; needs root and
    /// [`TestCluster::start_partitionable`]). Healed when the value drops.
    pub fn partition(&self, a: usize, b: usize) -> Partition {
        let (x, y) = (self.nodes[a].host.clone(), self.nodes[b].host.clone());
        assert_ne!(x, y, "start the cluster with start_partitionable");
        let rules = vec![(x.clone(), y.clone()), (y, x)];
        for (source, destination) in &rules {
            iptables("-I", source, destination);
        }
        Partition { rules }
    }

    /// Wait until every running node sees `live` live members and is
    /// ready (`/health` 200: it has met its peers and their schema).
    pub fn wait_live(&self, live: usize) {
        wait_until(
            &format!("{live} live members on every running node"),
            Duration::from_secs(60),
            || {
                self.nodes
                    .iter()
                    .filter(|node| node.is_running())
                    .all(|node| {
                        node.live_members().len() == live
                            && node.is_healthy()
                            && node.cluster_status()["moving"] == false
                    })
            },
        );
    }

    pub fn url(&self, index: usize) -> String {
        self.nodes[index].url()
    }
}

fn iptables(action: &str, source: &str, destination: &str) {
    let status = Command::new("iptables")
        .args([
            "-w",
            action,
            "INPUT",
            "-s",
            source,
            "-d",
            destination,
            "-j",
            "DROP",
        ])
        .status()
        .expect("iptables (the partition tests need it, and root)");
    assert!(
        status.success(),
        "iptables {action} {source} -> {destination} failed"
    );
}

/// A partition between two nodes; dropping it heals it.
pub struct Partition {
    rules: Vec<(String, String)>,
}

impl Partition {
    pub fn heal(self) {}
}

impl Drop for Partition {
    fn drop(&mut self) {
        for (source, destination) in &self.rules {
            iptables("-D", source, destination);
        }
    }
}
