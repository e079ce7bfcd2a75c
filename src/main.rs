//! The `dynaflux` command line: `serve` a node, run a `local` cluster,
//! print a node's cluster `status`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dynaflux::config::{Config, Overrides};

/// mimalloc instead of glibc's malloc: small queries allocate and free many
/// short strings and cells, and glibc's free/consolidate took ~40% of the
/// CPU of `SHOW TAG VALUES` (perf, 1000 values); see README, Performance.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "dynaflux",
    version,
    about = "A leaderless time-series database cluster that speaks InfluxDB 1.x"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a node: the InfluxDB 1.x HTTP API over the local store.
    Serve {
        /// TOML configuration file (see cluster.example.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides `http.bind`.
        #[arg(long)]
        http_bind: Option<SocketAddr>,
        /// Overrides `node.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Overrides `node.id`.
        #[arg(long)]
        node_id: Option<String>,
    },
    /// Start a local cluster of real processes on 127.0.0.1 (RF 3, or fewer
    /// nodes); Ctrl-C stops them all.
    Local {
        /// How many nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u16,
        /// Node i keeps its data under DATA_DIR/node-i.
        #[arg(long, default_value = "data/local")]
        data_dir: PathBuf,
        /// HTTP port of node 1; node i uses PORT+i-1, RPC PORT+1000+i-1,
        /// gossip PORT+2000+i-1.
        #[arg(long, default_value_t = 8086)]
        port: u16,
    },
    /// Print a node's view of the cluster (GET /cluster) as a table.
    Status {
        /// The node's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8086")]
        url: String,
    },
    /// Run an anti-entropy round on a node now (with every live replica it
    /// shares data with), wait for it, and print what it repaired.
    Repair {
        /// The node's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8086")]
        url: String,
    },
    /// Grow and shrink the cluster: decommission a node, remove a dead one.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
}

/// Exit code for a configuration error, as operators' scripts expect.
#[derive(Subcommand)]
enum ClusterAction {
    /// Make the node at URL hand every range it holds to the nodes that
    /// take it over, leave the ring and stop; prints progress until done.
    Decommission {
        /// The HTTP address of the node to decommission.
        #[arg(long)]
        url: String,
    },
    /// Let a node started with `cluster.auto_join = false` join (as
    /// `influxd-ctl add-data`); prints progress until it is normal.
    AddNode {
        /// The HTTP address of any live member.
        #[arg(long, default_value = "http://127.0.0.1:8086")]
        url: String,
        /// The new node's id, or its HTTP or RPC address (host:port).
        addr: String,
    },
    /// Take a dead node out of the ring: the other replicas of its ranges
    /// copy them to their new owners. Refused while the node is live.
    Remove {
        /// The HTTP address of any live node.
        #[arg(long, default_value = "http://127.0.0.1:8086")]
        url: String,
        /// The id of the dead node.
        node_id: String,
    },
}

const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Local {
            nodes,
            data_dir,
            port,
        } => match dynaflux::local::run_local(nodes, &data_dir, port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("dynaflux local: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Status { url } => match dynaflux::local::status(&url) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("dynaflux status: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Repair { url } => match dynaflux::local::repair(&url) {
            Ok(summary) => {
                print!("{summary}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("dynaflux repair: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Cluster { action } => {
            let (name, result) = match action {
                ClusterAction::Decommission { url } => {
                    ("decommission", dynaflux::local::decommission(&url))
                }
                ClusterAction::AddNode { url, addr } => {
                    ("add-node", dynaflux::local::add_node(&url, &addr))
                }
                ClusterAction::Remove { url, node_id } => {
                    ("remove", dynaflux::local::remove(&url, &node_id))
                }
            };
            match result {
                Ok(summary) => {
                    print!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("dynaflux cluster {name}: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve {
            config,
            http_bind,
            data_dir,
            node_id,
        } => {
            let overrides = Overrides {
                http_bind,
                data_dir,
                node_id,
            };
            let config = match Config::load(config.as_deref(), None, &overrides) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("dynaflux: {error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match dynaflux::node::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(dynaflux::node::NodeError::Config(message)) => {
                    eprintln!("dynaflux: configuration error: {message}");
                    ExitCode::from(EXIT_CONFIG)
                }
                Err(error) => {
                    eprintln!("dynaflux: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
