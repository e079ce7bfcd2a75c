//! `dynaflux local`: a cluster of real `dynaflux serve` processes on
//! loopback, for trying Dynaflux out, and `dynaflux status`, which prints a
//! node's view of the cluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where node `i` (0-based) listens.
pub struct LocalPorts {
    pub http: u16,
    pub rpc: u16,
    pub gossip: u16,
}

/// The ports of node `index` of a local cluster whose first HTTP port is `base`.
pub fn local_ports(base: u16, index: u16) -> LocalPorts {
    LocalPorts {
        http: base.saturating_add(index),
        rpc: base.saturating_add(1000).saturating_add(index),
        gossip: base.saturating_add(2000).saturating_add(index),
    }
}

/// Start `nodes` nodes (RF = min(3, nodes)) under `data_dir`, print their
/// addresses, and stop them all on Ctrl-C or SIGTERM. Blocks.
pub fn run_local(nodes: u16, data_dir: &Path, base_port: u16) -> Result<(), String> {
    if nodes == 0 {
        return Err("--nodes: at least 1".into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| format!("cannot handle Ctrl-C: {e}"))?;
    let mut children: Vec<(String, Child)> = Vec::new();
    let rf = nodes.min(3);
    for index in 0..nodes {
        let id = format!("node-{}", index + 1);
        let ports = local_ports(base_port, index);
        let seeds: Vec<String> = (0..nodes)
            .filter(|other| *other != index)
            .map(|other| format!("127.0.0.1:{}", local_ports(base_port, other).gossip))
            .collect();
        let dir: PathBuf = data_dir.join(&id);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let log = std::fs::File::create(data_dir.join(format!("{id}.log")))
            .map_err(|e| format!("log file: {e}"))?;
        let child = Command::new(&exe)
            .args(["serve", "--node-id", &id, "--data-dir"])
            .arg(&dir)
            .args(["--http-bind", &format!("127.0.0.1:{}", ports.http)])
            .env(
                "DYNAFLUX_CLUSTER__RPC_BIND",
                format!("127.0.0.1:{}", ports.rpc),
            )
            .env(
                "DYNAFLUX_CLUSTER__GOSSIP_BIND",
                format!("127.0.0.1:{}", ports.gossip),
            )
            .env("DYNAFLUX_CLUSTER__SEEDS", seeds.join(","))
            .env("DYNAFLUX_CLUSTER__REPLICATION_FACTOR", rf.to_string())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {id}: {e}"))?;
        println!(
            "{id}: http://127.0.0.1:{} (data {}, log {}/{id}.log)",
            ports.http,
            dir.display(),
            data_dir.display()
        );
        children.push((id, child));
    }
    println!("{nodes} nodes, replication factor {rf}; Ctrl-C stops them all");
    let mut failed = None;
    while !stop.load(Ordering::SeqCst) && failed.is_none() {
        for (id, child) in &mut children {
            if let Ok(Some(status)) = child.try_wait() {
                failed = Some(format!("{id} exited with {status}; see its log"));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (_, child) in &children {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for (id, child) in &mut children {
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    println!("{id}: stopped ({status})");
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    println!("{id}: killed after 30s");
                    break;
                }
            }
        }
    }
    match failed {
        Some(message) => Err(message),
        None => Ok(()),
    }
}

/// `GET {url}/cluster` printed as a table.
pub fn status(url: &str) -> Result<String, String> {
    let url = format!("{}/cluster", url.trim_end_matches('/'));
    let text = ureq::get(&url)
        .timeout(Duration::from_secs(10))
        .call()
        .map_err(|e| format!("{url}: {e}"))?
        .into_string()
        .map_err(|e| format!("{url}: {e}"))?;
    let body: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON: {e}"))?;
    let mut out = format!(
        "node {}  replication factor {}  vnodes {}  write consistency {}  read consistency {}\n",
        body["node"].as_str().unwrap_or("?"),
        body["replication_factor"],
        body["vnodes"],
        body["write_consistency"].as_str().unwrap_or("?"),
        body["read_consistency"].as_str().unwrap_or("?"),
    );
    out.push_str(&format!(
        "{:<16} {:<8} {:<6} {:<22} {:<22}\n",
        "ID", "STATE", "LIVE", "HTTP", "RPC"
    ));
    for member in body["members"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<16} {:<8} {:<6} {:<22} {:<22}\n",
            member["id"].as_str().unwrap_or("?"),
            member["state"].as_str().unwrap_or("?"),
            if member["live"] == true { "yes" } else { "no" },
            member["http_addr"].as_str().unwrap_or("?"),
            member["rpc_addr"].as_str().unwrap_or("?"),
        ));
    }
    out.push_str(&format!(
        "points stored here: {}\n",
        body["local"]["points_stored"]
    ));
    out.push_str(&format!(
        "hinted handoff: {} replayed, {} dropped since start\n",
        body["local"]["hints_replayed"], body["local"]["hints_dropped"]
    ));
    for (target, queue) in body["local"]["hints"].as_object().into_iter().flatten() {
        out.push_str(&format!(
            "  queue for {target}: {} hints, {} bytes, oldest {:.1}s\n",
            queue["entries"],
            queue["bytes"],
            queue["oldest_age_ms"].as_f64().unwrap_or(0.0) / 1000.0
        ));
    }
    let ae = &body["local"]["anti_entropy"];
    out.push_str(&format!(
        "anti-entropy: {} rounds, {} partitions repaired, {} rows in / {} rows out, {} bytes in / {} bytes out since start\n",
        ae["rounds"], ae["partitions_repaired"], ae["rows_received"], ae["rows_sent"],
        ae["bytes_received"], ae["bytes_sent"]
    ));
    if ae["last_round"].is_object() {
        out.push_str(&format!(
            "  last round: {}\n",
            round_summary(&ae["last_round"])
        ));
    }
    let rr = &body["local"]["read_repair"];
    out.push_str(&format!(
        "read repair: {} reads repaired, {} points written back, {} failures since start\n",
        rr["reads_repaired"], rr["points_repaired"], rr["failures"]
    ));
    Ok(out)
}

/// One line for an anti-entropy round report.
fn round_summary(round: &serde_json::Value) -> String {
    let finished_ms = round["finished_ms"].as_u64().unwrap_or(0);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut line = format!(
        "{:.1}s ago, took {} ms, {} peers ({} failed), shard groups {} in sync / {} repaired, {} partitions repaired, {} rows in / {} out, {} bytes in / {} out",
        now_ms.saturating_sub(finished_ms) as f64 / 1000.0,
        round["duration_ms"],
        round["peers"],
        round["peers_failed"],
        round["shard_groups_in_sync"],
        round["shard_groups_repaired"],
        round["partitions_repaired"],
        round["rows_received"],
        round["rows_sent"],
        round["bytes_received"],
        round["bytes_sent"],
    );
    for error in round["errors"].as_array().into_iter().flatten() {
        line.push_str(&format!("\n  error: {}", error.as_str().unwrap_or("?")));
    }
    line
}

/// `POST /cluster/repair` on the node at `url`: a round now, waited for.
pub fn repair(url: &str) -> Result<String, String> {
    let url = format!("{}/cluster/repair", url.trim_end_matches('/'));
    let response = ureq::post(&url)
        .timeout(Duration::from_secs(24 * 3600))
        .call();
    let text = match response {
        Ok(response) => response.into_string().map_err(|e| format!("{url}: {e}"))?,
        Err(ureq::Error::Status(code, response)) => {
            let body = response.into_string().unwrap_or_default();
            return Err(format!("{url}: {code} {body}"));
        }
        Err(error) => return Err(format!("{url}: {error}")),
    };
    let round: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON: {e}"))?;
    let errors = round["errors"].as_array().map_or(0, Vec::len);
    let summary = format!("repair round: {}\n", round_summary(&round));
    if errors > 0 {
        return Err(summary);
    }
    Ok(summary)
}
