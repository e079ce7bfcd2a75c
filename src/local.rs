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
        "ring plan {}{}\n",
        body["plan"].as_str().unwrap_or("?"),
        if body["moving"] == true {
            format!(
                ": moving; current {}, future {}, streaming to {}",
                names(&body["current"]),
                names(&body["future"]),
                names(&body["gainers"])
            )
        } else {
            ": stable".to_string()
        }
    ));
    if let Some(line) = move_summary(&body["streaming"]) {
        out.push_str(&format!("  this node's last stream: {line}\n"));
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

fn names(list: &serde_json::Value) -> String {
    let names: Vec<&str> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// One line for a node's stream (`/cluster` `streaming`), if any.
fn move_summary(stream: &serde_json::Value) -> Option<String> {
    if !stream.is_object() {
        return None;
    }
    let mut line = format!(
        "plan {}: {} of {} partitions, {} rows, {:.1} MB in {:.1}s ({:.1} MB/s)",
        stream["plan"].as_str().unwrap_or("?"),
        stream["partitions_done"],
        stream["partitions_total"],
        stream["rows_received"],
        stream["bytes_received"].as_f64().unwrap_or(0.0) / 1e6,
        stream["elapsed_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        stream["rate"].as_f64().unwrap_or(0.0) / 1e6,
    );
    if stream["done"] == true {
        line.push_str(", done");
    } else if let Some(eta) = stream["eta_seconds"].as_u64() {
        line.push_str(&format!(", about {eta}s left"));
    }
    if let Some(error) = stream["error"].as_str() {
        line.push_str(&format!(", last error: {error}"));
    }
    Some(line)
}

fn get_cluster(url: &str) -> Result<serde_json::Value, String> {
    let url = format!("{}/cluster", url.trim_end_matches('/'));
    let text = ureq::get(&url)
        .timeout(Duration::from_secs(10))
        .call()
        .map_err(|e| format!("{url}: {e}"))?
        .into_string()
        .map_err(|e| format!("{url}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON: {e}"))
}

fn post(url: &str) -> Result<serde_json::Value, String> {
    let response = ureq::post(url).timeout(Duration::from_secs(30)).call();
    let text = match response {
        Ok(response) => response.into_string().map_err(|e| format!("{url}: {e}"))?,
        Err(ureq::Error::Status(_, response)) => {
            let body = response.into_string().unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(body);
            return Err(message);
        }
        Err(error) => return Err(format!("{url}: {error}")),
    };
    serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON: {e}"))
}

/// Progress of a move as every gainer streams it, from `body` (`/cluster`).
fn progress_line(body: &serde_json::Value) -> String {
    let members = body["members"].as_array().cloned().unwrap_or_default();
    let states: Vec<String> = members
        .iter()
        .map(|m| {
            format!(
                "{} {}{}",
                m["id"].as_str().unwrap_or("?"),
                m["state"].as_str().unwrap_or("?"),
                if m["live"] == true { "" } else { " (down)" }
            )
        })
        .collect();
    format!(
        "{}; streaming to {}",
        states.join(", "),
        names(&body["gainers"])
    )
}

/// `dynaflux cluster decommission`: the node at `url` hands its ranges off
/// and stops; prints progress until it has left.
pub fn decommission(url: &str) -> Result<String, String> {
    let base = url.trim_end_matches('/');
    let node = get_cluster(base)?["node"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    post(&format!("{base}/cluster/decommission"))?;
    println!("{node}: leaving; its ranges stream to their new owners");
    let started = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        match get_cluster(base) {
            Ok(body) => {
                let mine = body["streaming"].clone();
                println!(
                    "[{:>4}s] {}{}",
                    started.elapsed().as_secs(),
                    progress_line(&body),
                    move_summary(&mine)
                        .map(|line| format!("\n        {line}"))
                        .unwrap_or_default()
                );
            }
            // The node stops once it has left.
            Err(_) => return Ok(format!("{node} has left the cluster and stopped\n")),
        }
    }
}

/// `dynaflux cluster remove`: take the dead member `id` out of the ring
/// (asking the node at `url`); prints progress until its ranges have their
/// copies again.
pub fn remove(url: &str, id: &str) -> Result<String, String> {
    let base = url.trim_end_matches('/');
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    serializer.append_pair("node", id);
    post(&format!("{base}/cluster/remove?{}", serializer.finish()))?;
    println!("{id}: being removed; its ranges are copied to their new owners");
    let started = std::time::Instant::now();
    loop {
        let body = get_cluster(base)?;
        let state = body["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["id"] == id)
            .and_then(|m| m["state"].as_str().map(str::to_string))
            .unwrap_or_default();
        if state == "removed" && body["moving"] == false {
            return Ok(format!(
                "{id} is removed; every range it held has its copies again ({}s)\n",
                started.elapsed().as_secs()
            ));
        }
        println!(
            "[{:>4}s] {}",
            started.elapsed().as_secs(),
            progress_line(&body)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `dynaflux cluster add-node`: let the node at `address` (started with
/// `cluster.auto_join = false`) join, asking the node at `url`; prints
/// progress until it is normal.
pub fn add_node(url: &str, address: &str) -> Result<String, String> {
    let base = url.trim_end_matches('/');
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    serializer.append_pair("addr", address);
    let answer = post(&format!("{base}/cluster/add-node?{}", serializer.finish()))?;
    let id = answer["node"].as_str().unwrap_or("?").to_string();
    println!("{id}: admitted; it streams its ranges in");
    let started = std::time::Instant::now();
    loop {
        let body = get_cluster(base)?;
        let state = body["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["id"] == id.as_str())
            .and_then(|m| m["state"].as_str().map(str::to_string))
            .unwrap_or_default();
        if state == "normal" && body["moving"] == false {
            return Ok(format!(
                "{id} is normal: it serves its ranges ({}s)\n",
                started.elapsed().as_secs()
            ));
        }
        println!(
            "[{:>4}s] {}",
            started.elapsed().as_secs(),
            progress_line(&body)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}
