//! Load generator: TSBS-like `cpu` points (1,000 hosts, 10 tags with `host` first, 10 float
//! fields as clamped random walks, 10 s apart) written as line protocol in
//! batches over several keep-alive connections, against Dynaflux or InfluxDB.
//!
//! The bodies are generated before the clock starts, so only the server is
//! measured.
//!
//! ```sh
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8086 --points 5000000
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Parser, Debug)]
#[command(about = "Write TSBS-like cpu points to an InfluxDB 1.x compatible server")]
struct Args {
    /// Server base URL; several, comma-separated, spread the connections over them.
    #[arg(long, default_value = "http://127.0.0.1:8086")]
    url: String,
    /// Database (created if missing).
    #[arg(long, default_value = "benchmark")]
    db: String,
    /// Points to write in all.
    #[arg(long, default_value_t = 5_000_000)]
    points: u64,
    /// Lines per request.
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// Do not send CREATE DATABASE first (servers without it, such as
    /// VictoriaMetrics, which takes line protocol on /write).
    #[arg(long)]
    no_create: bool,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Number of hosts (series).
    #[arg(long, default_value_t = 1_000)]
    hosts: usize,
    /// First timestamp, seconds since the epoch (2016-01-01T00:00:00Z).
    #[arg(long, default_value_t = 1_451_606_400)]
    start: i64,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

const REGIONS: &[&str] = &[
    "us-east-1",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "sa-east-1",
];
const FIELDS: &[&str] = &[
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_irq",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
];

struct Host {
    tags: String,
    values: [f64; 10],
}

fn hosts(count: usize, rng: &mut StdRng) -> Vec<Host> {
    (0..count)
        .map(|index| {
            let region = REGIONS[rng.gen_range(0..REGIONS.len())];
            let tags = format!(
                "host=host_{index},region={region},datacenter={region}{},rack={},os={},arch={},team={},service={},service_version={},service_environment={}",
                ["a", "b", "c"][rng.gen_range(0..3)],
                rng.gen_range(0..100),
                ["Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"][rng.gen_range(0..3)],
                ["x64", "x86"][rng.gen_range(0..2)],
                ["SF", "NYC", "LON", "CHI"][rng.gen_range(0..4)],
                rng.gen_range(0..20),
                rng.gen_range(0..2),
                ["production", "staging", "test"][rng.gen_range(0..3)],
            );
            let mut values = [0.0; 10];
            for value in &mut values {
                *value = rng.gen_range(0.0..100.0);
            }
            Host { tags, values }
        })
        .collect()
}

/// The request bodies of one connection: its share of hosts, time-major.
fn bodies(args: &Args, connection: usize, points: u64) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(args.seed + connection as u64);
    let mut all = hosts(args.hosts, &mut rng);
    let mine: Vec<usize> = (0..args.hosts)
        .filter(|h| h % args.connections == connection)
        .collect();
    let mut out = Vec::new();
    let mut body = Vec::with_capacity(args.batch * 330);
    let mut lines = 0usize;
    let mut written = 0u64;
    let mut step: i64 = 0;
    'outer: loop {
        let timestamp = (args.start + step * 10) * 1_000_000_000;
        for &index in &mine {
            if written >= points {
                break 'outer;
            }
            let host = &mut all[index];
            use std::io::Write;
            let _ = write!(body, "cpu,{} ", host.tags);
            for (field_index, value) in host.values.iter_mut().enumerate() {
                *value = (*value + rng.gen_range(-1.0..1.0)).clamp(0.0, 100.0);
                if field_index > 0 {
                    body.push(b',');
                }
                let _ = write!(body, "{}={}", FIELDS[field_index], value);
            }
            let _ = writeln!(body, " {timestamp}");
            lines += 1;
            written += 1;
            if lines == args.batch {
                out.push(std::mem::replace(
                    &mut body,
                    Vec::with_capacity(args.batch * 330),
                ));
                lines = 0;
            }
        }
        step += 1;
    }
    if lines > 0 {
        out.push(body);
    }
    out
}

fn main() {
    let args = Args::parse();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(300))
        .build();
    let urls: Vec<String> = args
        .url
        .split(',')
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
        .collect();
    let Some(first_url) = urls.first() else {
        eprintln!("--url: at least one URL");
        std::process::exit(2);
    };
    let created = if args.no_create {
        Ok(())
    } else {
        agent
            .post(&format!("{first_url}/query"))
            .send_form(&[("q", &format!("CREATE DATABASE \"{}\"", args.db))])
            .map(|_| ())
    };
    if let Err(error) = created {
        eprintln!("CREATE DATABASE failed: {error}");
        std::process::exit(1);
    }
    let per_connection = args.points / args.connections as u64;
    let remainder = args.points % args.connections as u64;
    eprintln!("generating {} points...", args.points);
    let generated: Vec<Vec<Vec<u8>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.connections)
            .map(|c| {
                let args = &args;
                let points = per_connection + u64::from((c as u64) < remainder);
                scope.spawn(move || bodies(args, c, points))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let bytes: usize = generated.iter().flatten().map(Vec::len).sum();
    eprintln!(
        "writing {} points ({} MB of line protocol) over {} connections",
        args.points,
        bytes >> 20,
        args.connections
    );
    let started = Instant::now();
    let failures: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = generated
            .into_iter()
            .enumerate()
            .map(|(c, batches)| {
                // Connections spread over the nodes.
                let url = format!("{}/write?db={}&precision=ns", urls[c % urls.len()], args.db);
                scope.spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(300))
                        .build();
                    let mut failures = 0;
                    for body in batches {
                        match agent.post(&url).send_bytes(&body) {
                            Ok(response) if response.status() == 204 => {}
                            Ok(response) => {
                                eprintln!("unexpected status {}", response.status());
                                failures += 1;
                            }
                            Err(error) => {
                                eprintln!("write failed: {error}");
                                failures += 1;
                            }
                        }
                    }
                    failures
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(1)).sum()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let rate = args.points as f64 / elapsed;
    println!(
        "points={} seconds={elapsed:.2} points_per_sec={rate:.0} field_values_per_sec={:.0}",
        args.points,
        rate * FIELDS.len() as f64
    );
    if failures > 0 {
        eprintln!("{failures} requests failed");
        std::process::exit(1);
    }
}
