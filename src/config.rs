//! Layered configuration: built-in defaults, then a TOML file, then
//! `DYNAFLUX_<SECTION>__<KEY>` environment variables, then command-line flags.
//!
//! Every key is documented, with its default, in `cluster.example.toml`.
//! Unknown keys and bad values are errors that name the key: a typo in a
//! production config must stop the node, not be silently ignored. The
//! `[cluster]`, `[handoff]` and `[anti_entropy]` sections are parsed and
//! validated now, so that a cluster config file is already accepted by a
//! single node; the machinery that uses them comes with the cluster issues.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

/// A configuration error: the message names the offending key. `main` exits 2.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub http: HttpConfig,
    pub storage: StorageConfig,
    pub cluster: ClusterConfig,
    pub handoff: HandoffConfig,
    pub anti_entropy: AntiEntropyConfig,
    pub streaming: StreamingConfig,
    pub query: QueryConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Stable, unique node id; persisted in the data dir on first start.
    /// Default: none (a generated id is persisted on first start).
    pub id: Option<String>,
    /// Default: `data`.
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Default: `127.0.0.1:8086`.
    pub bind: SocketAddr,
    /// Largest /write body, after gzip decoding. Default: 25MiB.
    pub max_body_size: ByteSize,
    /// Default: false. Authentication is not implemented yet, so true is refused.
    pub auth_enabled: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// fsync the write-ahead log before a write is acknowledged. Default: true.
    pub wal_fsync: bool,
    /// Flush the in-memory write buffer to compressed blocks past this size. Default: 512MiB.
    pub buffer_max_size: ByteSize,
    /// Flush the write buffer when its oldest point is this old. Default: 10m.
    #[serde(with = "humantime_serde")]
    pub buffer_max_age: Duration,
    /// How often expired shard groups are dropped. Default: 30m.
    #[serde(with = "humantime_serde")]
    pub retention_check_interval: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Gossip from another cluster name is ignored. Default: `dynaflux`.
    pub name: String,
    /// Authenticates gossip and RPC. Default: `change-me`.
    pub secret: String,
    /// Default: `127.0.0.1:8088`.
    pub rpc_bind: SocketAddr,
    /// Default: `127.0.0.1:7946`.
    pub gossip_bind: SocketAddr,
    /// Gossip addresses of some other nodes. Default: none.
    pub seeds: Vec<String>,
    /// Default: 3.
    pub replication_factor: u32,
    /// Virtual nodes per member. Default: 128.
    pub vnodes: u32,
    /// Default: `quorum`.
    pub write_consistency: WriteConsistency,
    /// Default: `one`.
    pub read_consistency: ReadConsistency,
    /// How long a peer has to answer a request (a replica's write, a read).
    /// Default: 10s.
    #[serde(with = "humantime_serde")]
    pub rpc_timeout: Duration,
    /// Start as the replacement of this (dead) node: take its ring
    /// position and stream its ranges from the other replicas before
    /// serving reads. Only on a node that has never joined. Default: none.
    pub replace: Option<String>,
    /// Remove a member that has been down longer than this, and copy its
    /// ranges to their new owners (only while more members than the
    /// replication factor remain). Default: none (never).
    #[serde(with = "humantime_serde")]
    pub offline_threshold: Option<Duration>,
    /// A new node joins the ring by itself (true), or waits for
    /// `dynaflux cluster add-node` (false). Default: true.
    pub auto_join: bool,
    /// After a move, how long nothing must move before each node deletes
    /// the partitions it no longer holds. Default: 10m.
    #[serde(with = "humantime_serde")]
    pub cleanup_delay: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// Most bytes per second a joining (or taking-over) node streams in
    /// (0: no limit). Default: 128MiB.
    pub rate_limit: ByteSize,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            rate_limit: ByteSize::mib(128),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HandoffConfig {
    /// Keep hints for replicas that miss a write, and replay them when they
    /// return. Default: true.
    pub enabled: bool,
    /// Per target node. Default: 10GiB.
    pub max_bytes: ByteSize,
    /// Default: 168h.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Replay at most this many bytes of hints per second per target
    /// (0: as fast as the target takes them). Default: 0.
    pub rate_limit: ByteSize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AntiEntropyConfig {
    /// Compare Merkle trees with the other replicas every `interval`.
    /// Default: true. (`dynaflux repair` runs a round even when false.)
    pub enabled: bool,
    /// Default: 10m.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Most bytes per second a round streams, both ways together (0: no
    /// limit). Default: 64MiB.
    pub rate_limit: ByteSize,
    /// Scheduled rounds compare only points written at least this long ago;
    /// newer ones may still be on their way to a replica. (`dynaflux
    /// repair` compares every point.) Default: 10s.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// Read repair: a quorum read that finds a replica missing or behind
    /// writes the newest versions back to it, in the background.
    /// Default: true.
    pub read_repair: bool,
    /// How long delete tombstones (and what they removed) are kept. A
    /// replica down for longer must be wiped before it returns, or it may
    /// bring deleted points back. Default: 10 days (240h).
    #[serde(with = "humantime_serde")]
    pub tombstone_grace: Duration,
}

/// Limits that fail a query with a clear error instead of exhausting memory.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Most series one SELECT may read; 0 is no limit. Default: 0.
    pub max_select_series: u64,
    /// Most points one SELECT may read; 0 is no limit. Default: 0.
    pub max_select_point: u64,
    /// Longest a query may run; "0s" is no limit. Default: "0s".
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WriteConsistency {
    Any,
    One,
    Quorum,
    All,
}

impl WriteConsistency {
    /// The `consistency=` parameter of /write.
    pub fn from_param(value: &str) -> Option<Self> {
        match value {
            "any" => Some(Self::Any),
            "one" => Some(Self::One),
            "quorum" => Some(Self::Quorum),
            "all" => Some(Self::All),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReadConsistency {
    One,
    Quorum,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: None,
            data_dir: PathBuf::from("data"),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8086)),
            max_body_size: ByteSize::mib(25),
            auth_enabled: false,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            wal_fsync: true,
            buffer_max_size: ByteSize::mib(512),
            buffer_max_age: Duration::from_secs(600),
            retention_check_interval: Duration::from_secs(1800),
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: "dynaflux".to_string(),
            secret: "change-me".to_string(),
            rpc_bind: SocketAddr::from(([127, 0, 0, 1], 8088)),
            gossip_bind: SocketAddr::from(([127, 0, 0, 1], 7946)),
            seeds: Vec::new(),
            replication_factor: 3,
            vnodes: 128,
            write_consistency: WriteConsistency::Quorum,
            read_consistency: ReadConsistency::One,
            rpc_timeout: Duration::from_secs(10),
            replace: None,
            offline_threshold: None,
            auto_join: true,
            cleanup_delay: Duration::from_secs(600),
        }
    }
}

impl Default for HandoffConfig {
    fn default() -> Self {
        HandoffConfig {
            enabled: true,
            rate_limit: ByteSize::b(0),
            max_bytes: ByteSize::gib(10),
            max_age: Duration::from_secs(168 * 3600),
        }
    }
}

impl Default for AntiEntropyConfig {
    fn default() -> Self {
        AntiEntropyConfig {
            enabled: true,
            interval: Duration::from_secs(600),
            rate_limit: ByteSize::mib(64),
            settle: Duration::from_secs(10),
            read_repair: true,
            tombstone_grace: Duration::from_secs(240 * 3600),
        }
    }
}

/// Command-line overrides, applied last.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub http_bind: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub node_id: Option<String>,
}

const ENV_PREFIX: &str = "DYNAFLUX";

impl Config {
    /// Load the layers. `env` is the process environment in production and a
    /// fixed map in tests.
    pub fn load(
        file: Option<&Path>,
        env: Option<HashMap<String, String>>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        // Only `DYNAFLUX_<SECTION>__<KEY>` variables configure a node; other
        // `DYNAFLUX_*` variables (a test harness's, say) are not ours to refuse.
        let section_prefix = format!("{ENV_PREFIX}_");
        let env: HashMap<String, String> = env
            .unwrap_or_else(|| std::env::vars().collect())
            .into_iter()
            .filter(|(key, _)| {
                key.strip_prefix(&section_prefix)
                    .is_some_and(|rest| rest.contains("__"))
            })
            .collect();
        let env = Some(env);
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("cluster.seeds")
            .source(env);
        builder = builder.add_source(environment);
        let layered = builder
            .build()
            .map_err(|error| ConfigError(error.to_string()))?;
        let mut config: Config = layered
            .try_deserialize()
            .map_err(|error| ConfigError(error.to_string()))?;
        if let Some(bind) = overrides.http_bind {
            config.http.bind = bind;
        }
        if let Some(dir) = &overrides.data_dir {
            config.node.data_dir = dir.clone();
        }
        if let Some(id) = &overrides.node_id {
            config.node.id = Some(id.clone());
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.http.auth_enabled {
            return Err(ConfigError(
                "http.auth_enabled: authentication is not supported yet; set it to false".into(),
            ));
        }
        if self.http.max_body_size.as_u64() == 0 {
            return Err(ConfigError(
                "http.max_body_size: must be greater than 0".into(),
            ));
        }
        if let Some(id) = &self.node.id {
            let valid = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
            if !valid {
                return Err(ConfigError(format!(
                    "node.id: {id:?} must be 1 to 64 characters of [A-Za-z0-9._-]"
                )));
            }
        }
        if self.cluster.replication_factor == 0 {
            return Err(ConfigError(
                "cluster.replication_factor: must be at least 1".into(),
            ));
        }
        if self.cluster.rpc_timeout.is_zero() {
            return Err(ConfigError(
                "cluster.rpc_timeout: must be more than 0".into(),
            ));
        }
        if self.cluster.secret.is_empty() {
            return Err(ConfigError("cluster.secret: must not be empty".into()));
        }
        if self.cluster.offline_threshold.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError(
                "cluster.offline_threshold: must be more than 0 (leave it out to never remove nodes)"
                    .into(),
            ));
        }
        if let Some(id) = &self.cluster.replace {
            if id.is_empty() || self.node.id.as_deref() == Some(id.as_str()) {
                return Err(ConfigError(format!(
                    "cluster.replace: {id:?} must name another node (the dead one this node replaces)"
                )));
            }
        }
        if self.cluster.vnodes == 0 {
            return Err(ConfigError("cluster.vnodes: must be at least 1".into()));
        }
        if self.storage.buffer_max_size.as_u64() < 1 << 20 {
            return Err(ConfigError(
                "storage.buffer_max_size: must be at least 1MiB".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn other_dynaflux_variables_are_ignored() {
        let config = Config::load(
            None,
            env(&[
                ("DYNAFLUX_TEST_URL", "x"),
                ("DYNAFLUX_HTTP__BIND", "127.0.0.1:9999"),
            ]),
            &Overrides::default(),
        )
        .expect("load");
        assert_eq!(config.http.bind.port(), 9999);
    }

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn defaults_serve_one_node_on_8086() {
        let config = Config::load(None, env(&[]), &Overrides::default()).expect("defaults");
        assert_eq!(config, Config::default());
        assert_eq!(config.http.bind.to_string(), "127.0.0.1:8086");
        assert_eq!(config.node.data_dir, PathBuf::from("data"));
    }

    #[test]
    fn layers_apply_in_order() {
        let f = file(
            "[http]\nbind = \"127.0.0.1:9000\"\nmax_body_size = \"1MiB\"\n[node]\ndata_dir = \"/tmp/x\"\n[cluster]\nseeds = [\"a:1\"]\n[handoff]\nmax_age = \"2h\"\n",
        );
        let config = Config::load(
            Some(f.path()),
            env(&[
                ("DYNAFLUX_HTTP__BIND", "127.0.0.1:9001"),
                ("DYNAFLUX_CLUSTER__REPLICATION_FACTOR", "5"),
                ("DYNAFLUX_CLUSTER__SEEDS", "b:2,c:3"),
            ]),
            &Overrides {
                data_dir: Some(PathBuf::from("/tmp/y")),
                ..Overrides::default()
            },
        )
        .expect("load");
        assert_eq!(config.http.bind.to_string(), "127.0.0.1:9001");
        assert_eq!(config.http.max_body_size, ByteSize::mib(1));
        assert_eq!(config.node.data_dir, PathBuf::from("/tmp/y"));
        assert_eq!(config.cluster.replication_factor, 5);
        assert_eq!(config.cluster.seeds, vec!["b:2", "c:3"]);
        assert_eq!(config.handoff.max_age, Duration::from_secs(7200));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[http]\nbindd = \"x\"\n", "bindd"),
            ("[http]\nbind = \"not an address\"\n", "http.bind"),
            (
                "[storage]\nbuffer_max_age = \"ten\"\n",
                "storage.buffer_max_age",
            ),
            (
                "[cluster]\nwrite_consistency = \"most\"\n",
                "cluster.write_consistency",
            ),
            ("[nosuch]\nx = 1\n", "nosuch"),
            (
                "[cluster]\nreplication_factor = 0\n",
                "cluster.replication_factor",
            ),
            ("[http\n", "expected"),
        ];
        for (text, key) in cases {
            let f = file(text);
            let error = Config::load(Some(f.path()), env(&[]), &Overrides::default())
                .expect_err(text)
                .to_string();
            assert!(error.contains(key), "{text:?}: {error}");
        }
        let error = Config::load(
            None,
            env(&[("DYNAFLUX_HTTP__BIND", "nope")]),
            &Overrides::default(),
        )
        .expect_err("bad env")
        .to_string();
        assert!(error.contains("http.bind"), "{error}");
    }
}

#[cfg(test)]
mod example_file_tests {
    use super::*;

    #[test]
    fn the_example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.example.toml");
        let config = Config::load(Some(&path), Some(HashMap::new()), &Overrides::default())
            .expect("cluster.example.toml loads");
        assert_eq!(config.node.id.as_deref(), Some("node-1"));
        assert_eq!(config.cluster.seeds.len(), 2);
    }
}
