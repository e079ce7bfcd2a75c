//! Process harness for integration tests: starts the real `dynaflux` binary
//! on a free loopback port and a data dir, waits for it with a deadline, and
//! can stop it (SIGTERM), kill it (`kill -9`) and restart it on the same data.
//!
//! `DYNAFLUX_TEST_URL` points the tests that support it at an external server
//! instead (for example a real InfluxDB 1.6.7, to check a test itself).

#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

pub struct Node {
    child: Option<Child>,
    env: Vec<(String, String)>,
    pub port: u16,
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
            port: free_port(),
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
                &format!("127.0.0.1:{}", self.port),
                "--data-dir",
                &self.data_dir.display().to_string(),
            ])
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dynaflux");
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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

    /// Start again on the same data dir (a new port).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the node first");
        self.port = free_port();
        self.spawn();
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
