//! The node's side of the cluster: the write coordinator, remote reads, the
//! RPC handler, schema statements sent to every member, and the topology
//! snapshot (members and ring) that the hot path reads.
//!
//! The cluster machinery itself (gossip, ring, RPC transport) lives in the
//! `dynaflux-actors` crate, which knows nothing of line protocol: here is
//! where points meet it.
//!
//! Placement: a series' token is `xxh3(db \0 series key)`; its points are
//! stored on the token's preference list (RF nodes). Every node knows every
//! series and field type (a write registers new series on the nodes that
//! do not store them, "index only"), so SHOW statements and tag conditions
//! run on any node, and only the points of a series are read from its
//! replicas.

mod handoff;
pub mod protocol;
mod repair;
pub mod schema;
pub mod tombstones;
mod write;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use dynaflux_actors::anti_entropy::{self, AeStats, AntiEntropy, RepairNow, RoundReport};
use dynaflux_actors::membership::{self, MembershipConfig, NodeState};
use dynaflux_actors::ownership::{Ownership, OwnershipConfig, KEY_REPLACES, REMOVED_PREFIX};
use dynaflux_actors::rpc::{self, Client, ServerStats};
use dynaflux_actors::streaming::{MoveStatus, Streaming, StreamingConfig, StreamingStats};
use serde::Serialize;
use tokio::sync::watch;

use crate::config::{Config, ReadConsistency, WriteConsistency};
use crate::influxql::{self, QueryContext, QueryLimits};
use crate::lineproto;
use crate::storage::{self, SeriesInfo, Storage, Take, Value, WriteOptions};

pub use dynaflux_actors::ownership::{MemberView, Topology};
pub use protocol::{PartialsRequest, Request, Response, RowsRequest};
pub use write::WriteFailure;

/// Gossip round period.
const GOSSIP_INTERVAL: Duration = Duration::from_millis(200);

/// A running cluster node: what the HTTP handlers use.
pub struct Cluster {
    pub node_id: String,
    storage: Storage,
    /// The runtime of internode work (RPC server and client, topology).
    rpc: tokio::runtime::Handle,
    client: Arc<Client<Request, Response>>,
    topology: watch::Receiver<Arc<Topology>>,
    write_consistency: WriteConsistency,
    read_consistency: ReadConsistency,
    pub rpc_addr: SocketAddr,
    pub gossip_addr: SocketAddr,
    pub rpc_stats: Arc<ServerStats>,
    pub gossip_rejected: Arc<AtomicU64>,
    membership: actix::Addr<membership::Membership>,
    schema: Arc<schema::SchemaBook>,
    /// Push-down requests (aggregates, filters) this node answered.
    partials_served: Arc<AtomicU64>,
    /// Hints delivered to their targets since start.
    hints_replayed: AtomicU64,
    /// `handoff.enabled`.
    handoff: bool,
    /// `handoff.rate_limit`, bytes per second (0: none).
    replay_rate: u64,
    hint_book: Arc<handoff::HintBook>,
    /// Set once a schema exchange with a peer succeeded (or there is no
    /// peer to wait for): until then this node may not know a database
    /// that the cluster has.
    schema_synced: std::sync::atomic::AtomicBool,
    anti_entropy: actix::Addr<AntiEntropy<Storage, repair::RpcTransport>>,
    ae_stats: Arc<AeStats>,
    read_repair: Arc<repair::Repairer>,
    /// `anti_entropy.read_repair`.
    read_repair_enabled: bool,
    tombstones: Arc<tombstones::TombstoneBook>,
    /// `anti_entropy.tombstone_grace`.
    tombstone_grace: Duration,
    streaming: Arc<StreamingStats>,
    /// Becomes true when this node has left the cluster (decommissioned):
    /// the process then stops.
    left: watch::Receiver<bool>,
    /// A joining node copies the series index from a peer before it
    /// serves: until then it could not plan a query.
    catalog_needed: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("rpc_addr", &self.rpc_addr)
            .finish()
    }
}

/// What `/cluster` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    pub node: String,
    pub replication_factor: usize,
    pub vnodes: u32,
    pub write_consistency: String,
    pub read_consistency: String,
    pub members: Vec<MemberStatus>,
    /// Digest of the ring plan this node routes by (the same on every node
    /// once gossip has settled).
    pub plan: String,
    /// Whether ownership is moving (a join, decommission, removal or
    /// replacement under way).
    pub moving: bool,
    /// Members that serve reads.
    pub current: Vec<String>,
    /// Members that will hold data once the moves are done.
    pub future: Vec<String>,
    /// Members that stream partitions in for the move under way.
    pub gainers: Vec<String>,
    /// This node's latest stream (partitions and bytes done and left,
    /// rate, estimated time).
    pub streaming: Option<MoveStatus>,
    pub local: LocalStats,
}

#[derive(Debug, Serialize)]
pub struct MemberStatus {
    pub id: String,
    pub state: String,
    pub live: bool,
    pub http_addr: SocketAddr,
    pub rpc_addr: SocketAddr,
    /// The plan whose new partitions this member holds.
    pub synced: Option<String>,
}

/// This node's own counters.
#[derive(Debug, Serialize)]
pub struct LocalStats {
    pub points_stored: u64,
    /// The points this node holds now (resolved; with `?points=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points_held: Option<u64>,
    /// Points deleted by cleanup after moves, since start.
    pub points_cleaned: u64,
    /// Members removed by `cluster.offline_threshold`, since start.
    pub auto_removals: u64,
    /// Aggregates and filters computed here for other nodes' queries.
    pub pushdowns_served: u64,
    /// Hinted handoff queues held here, by target node.
    pub hints: std::collections::BTreeMap<String, HintQueue>,
    /// Hints delivered since start.
    pub hints_replayed: u64,
    /// Hints dropped since start (queue full or too old): data at risk.
    pub hints_dropped: u64,
    pub rpc_connections_rejected: u64,
    pub gossip_datagrams_rejected: u64,
    pub anti_entropy: AntiEntropyStatus,
    pub read_repair: ReadRepairStatus,
}

/// Anti-entropy since start, and the last completed round.
#[derive(Debug, Serialize)]
pub struct AntiEntropyStatus {
    pub rounds: u64,
    pub partitions_repaired: u64,
    pub rows_received: u64,
    pub rows_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub last_round: Option<RoundReport>,
}

#[derive(Debug, Serialize)]
pub struct ReadRepairStatus {
    /// Quorum reads that found replicas disagreeing.
    pub reads_repaired: u64,
    /// Points written back to stale replicas.
    pub points_repaired: u64,
    pub failures: u64,
}

/// One hinted handoff queue.
#[derive(Debug, Serialize)]
pub struct HintQueue {
    pub entries: u64,
    pub bytes: u64,
    pub oldest_age_ms: u64,
}

/// Refuse to start a node that has left the cluster (decommissioned): it
/// must come back as a new member, on an empty data directory.
pub fn check_not_left(config: &Config, node_id: &str) -> Result<(), String> {
    let members = dynaflux_actors::ownership::load_members(
        &config.node.data_dir.join("cluster_members.json"),
    );
    match members.get(node_id) {
        Some(me) if me.state == NodeState::Left => Err(format!(
            "node {node_id} has left the cluster (decommissioned); to start it again as a new member, wipe its data directory ({})",
            config.node.data_dir.display()
        )),
        _ => Ok(()),
    }
}

/// The RPC runtime and listener, made before the actix system starts.
pub struct Prepared {
    runtime: tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    rpc_addr: SocketAddr,
}

/// Bind the internode RPC port on a runtime of its own, so that a busy HTTP
/// worker never delays a peer (nor gossip).
pub fn prepare(config: &Config) -> std::io::Result<Prepared> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rpc")
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(config.cluster.rpc_bind))?;
    let rpc_addr = listener.local_addr()?;
    Ok(Prepared {
        runtime,
        listener,
        rpc_addr,
    })
}

impl Prepared {
    /// Start serving peers and join the gossip; must run inside the actix
    /// system (the membership actor lives there). The returned runtime runs
    /// the internode work and must outlive the cluster.
    pub async fn start(
        self,
        config: &Config,
        node_id: &str,
        storage: Storage,
    ) -> anyhow::Result<(Arc<Cluster>, tokio::runtime::Runtime)> {
        let Prepared {
            runtime,
            listener,
            rpc_addr,
        } = self;
        let secret: Arc<[u8]> = config.cluster.secret.as_bytes().into();
        let rpc_stats = Arc::new(ServerStats::default());
        let partials_served = Arc::new(AtomicU64::new(0));
        let schema = Arc::new(schema::SchemaBook::open(
            config.node.data_dir.join("cluster_schema.msgpack"),
        ));
        // A catalog from before this node kept a schema book joins it now.
        schema.observe_local(&storage, storage.next_version());
        let tombstones = Arc::new(tombstones::TombstoneBook::open(
            config.node.data_dir.join("cluster_tombstones.msgpack"),
        ));
        runtime.spawn(rpc::serve::<Request, Response, Handler>(
            listener,
            node_id.to_string(),
            secret.clone(),
            Arc::new(Handler {
                storage: storage.clone(),
                schema: schema.clone(),
                partials_served: partials_served.clone(),
                tombstones: tombstones.clone(),
            }),
            rpc_stats.clone(),
        ));
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let members_file = config.node.data_dir.join("cluster_members.json");
        let has_seeds = has_other_seeds(&config.cluster.seeds, config.cluster.gossip_bind);
        let remembered = dynaflux_actors::ownership::load_members(&members_file);
        let (state, mut keys) = match remembered.get(node_id) {
            Some(me) => (me.state, me.keys.clone()),
            // A new node with peers joins them: it takes no reads before
            // its ranges are in.
            None if has_seeds || !remembered.is_empty() => {
                (NodeState::Joining, std::collections::BTreeMap::new())
            }
            None => (NodeState::Normal, std::collections::BTreeMap::new()),
        };
        if !config.cluster.auto_join && !remembered.contains_key(node_id) && has_seeds {
            keys.insert(
                dynaflux_actors::ownership::KEY_AWAITING.to_string(),
                "add-node".to_string(),
            );
        }
        match (&config.cluster.replace, remembered.get(node_id)) {
            (Some(target), None) => {
                keys.insert(KEY_REPLACES.to_string(), target.clone());
            }
            (Some(target), Some(_)) if keys.get(KEY_REPLACES) != Some(target) => {
                tracing::warn!(%target, "cluster.replace ignored: this node has joined the cluster already");
            }
            _ => {}
        }
        let catalog_needed = Arc::new(std::sync::atomic::AtomicBool::new(
            state == NodeState::Joining,
        ));
        let membership = membership::start(MembershipConfig {
            node_id: node_id.to_string(),
            generation,
            gossip_bind: config.cluster.gossip_bind,
            gossip_advertise: config.cluster.gossip_bind,
            seeds: config.cluster.seeds.clone(),
            cluster_name: config.cluster.name.clone(),
            secret: config.cluster.secret.clone(),
            gossip_interval: GOSSIP_INTERVAL,
            rpc_addr,
            http_addr: config.http.bind,
            state,
            keys,
        })
        .await?;
        let rf = usize::try_from(config.cluster.replication_factor).unwrap_or(3);
        let (_ownership, topology) = Ownership::start(
            OwnershipConfig {
                node_id: node_id.to_string(),
                rpc_addr,
                http_addr: config.http.bind,
                rf,
                vnodes: config.cluster.vnodes,
                members_file,
                has_seeds,
                state,
            },
            membership.snapshots.clone(),
        );
        let storage_for_hints = storage.clone();
        let client = Arc::new(
            Client::new(node_id.to_string(), secret, config.cluster.rpc_timeout)
                .with_local_ip(rpc_addr.ip()),
        );
        let transport = || {
            Arc::new(repair::RpcTransport {
                node_id: node_id.to_string(),
                client: client.clone(),
                topology: topology.clone(),
                storage: storage.clone(),
                tombstones: tombstones.clone(),
            })
        };
        let driver = Arc::new(
            anti_entropy::Driver::new(
                Arc::new(storage.clone()),
                transport(),
                config.anti_entropy.rate_limit.as_u64(),
            )
            .with_settle(config.anti_entropy.settle),
        );
        let (left_sender, left) = watch::channel(false);
        let streaming = Streaming::new(
            StreamingConfig {
                node_id: node_id.to_string(),
                cleanup_delay: config.cluster.cleanup_delay,
                offline_threshold: config.cluster.offline_threshold,
                tick: Duration::from_millis(250),
            },
            topology.clone(),
            membership.addr.clone(),
            Arc::new(anti_entropy::Driver::new(
                Arc::new(storage.clone()),
                transport(),
                config.streaming.rate_limit.as_u64(),
            )),
            Arc::new(storage.clone()),
            runtime.handle().clone(),
            Box::new(move || {
                let _ = left_sender.send(true);
            }),
            {
                let needed = catalog_needed.clone();
                Box::new(move || !needed.load(std::sync::atomic::Ordering::Acquire))
            },
        );
        let streaming_stats = streaming.stats.clone();
        actix::Actor::start(streaming);
        let ae_stats = driver.stats.clone();
        let ae_actor = actix::Actor::start(AntiEntropy::new(
            driver,
            runtime.handle().clone(),
            config
                .anti_entropy
                .enabled
                .then_some(config.anti_entropy.interval),
        ));
        let read_repair = Arc::new(repair::Repairer {
            node_id: node_id.to_string(),
            client: client.clone(),
            storage: storage.clone(),
            stats: repair::ReadRepairStats::default(),
        });
        let cluster = Cluster {
            node_id: node_id.to_string(),
            storage,
            rpc: runtime.handle().clone(),
            client,
            topology,
            write_consistency: config.cluster.write_consistency,
            read_consistency: config.cluster.read_consistency,
            rpc_addr,
            gossip_addr: config.cluster.gossip_bind,
            rpc_stats,
            gossip_rejected: membership.rejected.clone(),
            membership: membership.addr,
            schema,
            partials_served,
            hints_replayed: AtomicU64::new(0),
            handoff: config.handoff.enabled,
            replay_rate: config.handoff.rate_limit.as_u64(),
            hint_book: Arc::new(handoff::HintBook::open(
                &storage_for_hints,
                config.handoff.max_bytes.as_u64(),
                config.handoff.max_age,
            )),
            schema_synced: std::sync::atomic::AtomicBool::new(false),
            anti_entropy: ae_actor,
            ae_stats,
            read_repair,
            read_repair_enabled: config.anti_entropy.read_repair,
            tombstones,
            tombstone_grace: config.anti_entropy.tombstone_grace,
            streaming: streaming_stats,
            left,
            catalog_needed,
        };
        let cluster = Arc::new(cluster);
        runtime.spawn(schema_exchange(Arc::downgrade(&cluster)));
        handoff::Handoff::start_for(&cluster);
        Ok((cluster, runtime))
    }
}

impl Cluster {
    /// The current members and ring.
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.borrow().clone()
    }

    /// Whether this node knows its peers and their schema: before that it
    /// answers `/write` with 503 (its ring may be a ring of one, and a
    /// write acknowledged then could live on this disk alone).
    pub fn ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// Why this node does not take writes yet, if it does not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        use std::sync::atomic::Ordering::Acquire;
        let topology = self.topology();
        if !topology.ready {
            return Err("cluster not ready: waiting for peers");
        }
        if topology.removed.contains(&self.node_id) || topology.removing.contains(&self.node_id) {
            return Err("this node has been removed from the cluster");
        }
        if topology.members.len() == 1 {
            return Ok(());
        }
        if topology.ring.members().is_empty() {
            return Err("cluster not ready: no member has finished joining");
        }
        if !self.schema_synced.load(Acquire) || self.catalog_needed.load(Acquire) {
            return Err("cluster not ready: copying the schema from a peer");
        }
        Ok(())
    }

    /// Whether this node indexes every series of the cluster (a joining
    /// node does once it has copied the index from a peer).
    pub fn knows_every_series(&self) -> bool {
        !self
            .catalog_needed
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// This node's state, as gossiped.
    pub fn state(&self) -> NodeState {
        self.topology()
            .members
            .get(&self.node_id)
            .map_or(NodeState::Normal, |m| m.state)
    }

    /// Becomes true once this node has left the cluster.
    pub fn left_signal(&self) -> watch::Receiver<bool> {
        self.left.clone()
    }

    /// Start handing this node's ranges off: it becomes `leaving`, then
    /// `left` once every range is held by its new owners, and stops.
    pub fn decommission(&self) -> Result<(), (u16, String)> {
        let topology = self.topology();
        match self.state() {
            NodeState::Leaving | NodeState::Left => return Ok(()),
            NodeState::Joining => {
                return Err((
                    409,
                    "this node is still joining; wait until it is normal".into(),
                ))
            }
            NodeState::Normal => {}
        }
        let others = topology
            .future
            .members()
            .iter()
            .filter(|id| **id != self.node_id)
            .count();
        if others == 0 {
            return Err((
                409,
                "this is the only member: there is nobody to hand its data to".into(),
            ));
        }
        tracing::warn!(node = %self.node_id, "decommission: leaving the cluster, handing every range off");
        self.membership
            .do_send(membership::SetState(NodeState::Leaving));
        Ok(())
    }

    /// Take the dead member `id` out of the ring; the other replicas of its
    /// ranges copy them to their new owners.
    pub fn remove(&self, id: &str) -> Result<String, (u16, String)> {
        let topology = self.topology();
        let Some(member) = topology.members.get(id) else {
            return Err((404, format!("no member {id:?} in this cluster")));
        };
        if id == self.node_id {
            return Err((
                409,
                format!("{id} is the node you asked; to take it out, decommission it"),
            ));
        }
        if topology.removed.contains(id) {
            return Ok(format!("{id} was removed already"));
        }
        if topology.removing.contains(id) {
            return Ok(format!("{id} is being removed"));
        }
        if member.state == NodeState::Left {
            return Ok(format!("{id} has left the cluster already"));
        }
        if member.live {
            return Err((
                409,
                format!("{id} is live: decommission it instead (dynaflux cluster decommission --url http://{})", member.http_addr),
            ));
        }
        tracing::warn!(node = %id, "remove: taking a dead member out of the ring; its ranges are copied to their new owners");
        self.membership.do_send(membership::SetKeys(vec![(
            format!("{REMOVED_PREFIX}{id}"),
            Some("removing".to_string()),
        )]));
        Ok(format!("{id} is being removed"))
    }

    /// Let the waiting node at `address` (its id, or its HTTP, RPC or
    /// gossip address) join: it was started with `cluster.auto_join =
    /// false`. Answers its id.
    pub fn add_node(&self, address: &str) -> Result<String, (u16, String)> {
        let topology = self.topology();
        let found = topology.members.iter().find(|(id, member)| {
            id.as_str() == address
                || member.http_addr.to_string() == address
                || member.rpc_addr.to_string() == address
                || format!("http://{}", member.http_addr) == address.trim_end_matches('/')
        });
        let Some((id, member)) = found else {
            return Err((
                404,
                format!("no node at {address:?} has gossiped with this cluster: start it with cluster.seeds naming a member"),
            ));
        };
        if !member
            .keys
            .contains_key(dynaflux_actors::ownership::KEY_AWAITING)
            || topology.future.members().contains(id)
            || member.state != NodeState::Joining
        {
            return Ok(id.clone());
        }
        tracing::warn!(node = %id, "add-node: admitting a new node; it streams its ranges in");
        self.membership.do_send(membership::SetKeys(vec![(
            format!("{}{id}", dynaflux_actors::ownership::ADMIT_PREFIX),
            Some("1".to_string()),
        )]));
        Ok(id.clone())
    }

    /// The current move as this node streams it, if any.
    pub fn move_status(&self) -> Option<MoveStatus> {
        self.streaming.status.lock().clone()
    }

    /// Run an anti-entropy round with every live peer now (after the one
    /// running, if any) and answer with what it did.
    pub async fn repair(&self) -> Result<RoundReport, String> {
        self.anti_entropy
            .send(RepairNow)
            .await
            .map_err(|error| format!("anti-entropy unavailable: {error}"))?
    }

    fn anti_entropy_status(&self) -> AntiEntropyStatus {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &self.ae_stats;
        AntiEntropyStatus {
            rounds: stats.rounds.load(Relaxed),
            partitions_repaired: stats.partitions_repaired.load(Relaxed),
            rows_received: stats.rows_received.load(Relaxed),
            rows_sent: stats.rows_sent.load(Relaxed),
            bytes_received: stats.bytes_received.load(Relaxed),
            bytes_sent: stats.bytes_sent.load(Relaxed),
            last_round: stats.last_round.lock().clone(),
        }
    }

    pub fn default_write_consistency(&self) -> WriteConsistency {
        self.write_consistency
    }

    /// Announce leaving and stop gossiping.
    pub fn leave(&self) {
        self.membership.do_send(membership::Stop);
    }

    fn hint_queues(&self) -> std::collections::BTreeMap<String, HintQueue> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.storage
            .hint_queues()
            .unwrap_or_default()
            .into_iter()
            .map(|(target, (entries, bytes, oldest))| {
                (
                    target,
                    HintQueue {
                        entries,
                        bytes,
                        oldest_age_ms: now_ms.saturating_sub(oldest),
                    },
                )
            })
            .collect()
    }

    /// What `/cluster` shows; `points`: also count the points held here
    /// (reads every Merkle leaf).
    pub fn status(&self, points: bool) -> Status {
        let topology = self.topology();
        Status {
            node: self.node_id.clone(),
            replication_factor: topology.ring.rf(),
            vnodes: topology.ring.vnodes(),
            write_consistency: format!("{:?}", self.write_consistency).to_lowercase(),
            read_consistency: format!("{:?}", self.read_consistency).to_lowercase(),
            members: topology
                .members
                .iter()
                .map(|(id, member)| MemberStatus {
                    id: id.clone(),
                    state: if topology.removed.contains(id) {
                        "removed".to_string()
                    } else if topology.removing.contains(id) {
                        "removing".to_string()
                    } else {
                        member.state.to_string()
                    },
                    live: member.live,
                    http_addr: member.http_addr,
                    rpc_addr: member.rpc_addr,
                    synced: member
                        .keys
                        .get(dynaflux_actors::ownership::KEY_SYNCED)
                        .cloned(),
                })
                .collect(),
            plan: format!("{:016x}", topology.plan),
            moving: topology.moving(),
            current: topology.ring.members().to_vec(),
            future: topology.future.members().to_vec(),
            gainers: if topology.moving() {
                topology.gainers()
            } else {
                Vec::new()
            },
            streaming: self.move_status(),
            local: LocalStats {
                points_stored: self.storage.points_stored(),
                points_held: points.then(|| self.storage.points_held().unwrap_or(0)),
                points_cleaned: self
                    .streaming
                    .points_cleaned
                    .load(std::sync::atomic::Ordering::Relaxed),
                auto_removals: self
                    .streaming
                    .auto_removals
                    .load(std::sync::atomic::Ordering::Relaxed),
                pushdowns_served: self
                    .partials_served
                    .load(std::sync::atomic::Ordering::Relaxed),
                hints: self.hint_queues(),
                hints_replayed: self
                    .hints_replayed
                    .load(std::sync::atomic::Ordering::Relaxed),
                hints_dropped: self
                    .hint_book
                    .dropped
                    .load(std::sync::atomic::Ordering::Relaxed),
                rpc_connections_rejected: self
                    .rpc_stats
                    .rejected
                    .load(std::sync::atomic::Ordering::Relaxed),
                gossip_datagrams_rejected: self
                    .gossip_rejected
                    .load(std::sync::atomic::Ordering::Relaxed),
                anti_entropy: self.anti_entropy_status(),
                read_repair: ReadRepairStatus {
                    reads_repaired: self
                        .read_repair
                        .stats
                        .reads_repaired
                        .load(std::sync::atomic::Ordering::Relaxed),
                    points_repaired: self
                        .read_repair
                        .stats
                        .points_repaired
                        .load(std::sync::atomic::Ordering::Relaxed),
                    failures: self
                        .read_repair
                        .stats
                        .failures
                        .load(std::sync::atomic::Ordering::Relaxed),
                },
            },
        }
    }

    /// After a statement that changes the schema or data ran here: push the
    /// schema to every member if it changed, else run the statement on
    /// every member (data deletes: best effort, a member that is down
    /// misses them).
    pub async fn after_statement(&self, db: Option<String>, rp: Option<String>, text: String) {
        let storage = self.storage.clone();
        let book = self.schema.clone();
        let changed = tokio::task::spawn_blocking(move || {
            book.observe_local(&storage, storage.next_version())
        })
        .await
        .unwrap_or(false);
        if changed {
            let topology = self.topology();
            let peers: Vec<SocketAddr> = topology
                .members
                .iter()
                .filter(|(id, _)| **id != self.node_id)
                .map(|(_, member)| member.rpc_addr)
                .collect();
            let mut calls = Vec::new();
            for address in peers {
                calls.push(self.rpc.spawn(exchange_schema(
                    self.client.clone(),
                    address,
                    self.storage.clone(),
                    self.schema.clone(),
                )));
            }
            for call in calls {
                let _ = call.await;
            }
        } else if !is_schema_statement(&text) {
            self.issue_tombstone(db, rp, text).await;
        }
    }

    /// A data delete that ran here becomes a tombstone for every member:
    /// sent now, kept as a hint for a member that does not take it, and
    /// swapped at every anti-entropy exchange.
    async fn issue_tombstone(&self, db: Option<String>, rp: Option<String>, text: String) {
        let tombstone = tombstones::Tombstone {
            id: uuid::Uuid::new_v4().to_string(),
            db,
            rp,
            text,
            now: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0),
            version: self.storage.next_version(),
        };
        self.tombstones.record(tombstone.clone());
        let topology = self.topology();
        let mut calls = Vec::new();
        for (id, member) in &topology.members {
            if *id == self.node_id {
                continue;
            }
            let client = self.client.clone();
            let request = Request::Tombstone(tombstone.clone());
            let address = member.rpc_addr;
            let id = id.clone();
            calls.push(self.rpc.spawn(async move {
                let answer = client.call(address, request.clone()).await;
                match answer {
                    Ok(Response::Done) => None,
                    Ok(_) => Some((id, request, "unexpected answer".to_string())),
                    Err(error) => Some((id, request, error.to_string())),
                }
            }));
        }
        for call in calls {
            let Ok(Some((id, request, error))) = call.await else {
                continue;
            };
            tracing::warn!(node = %id, %error, "delete not applied on a member yet: kept as a hint");
            if self.handoff {
                let _ = self.keep_hint(&id, &request);
            }
        }
    }

    /// Forget tombstones (and what their deletes removed) older than
    /// `anti_entropy.tombstone_grace`.
    fn purge_tombstones(&self) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let cutoff_ms = now_ms.saturating_sub(self.tombstone_grace.as_millis() as u64);
        let version = cutoff_ms << 16;
        let purged = self.tombstones.purge(version);
        match self.storage.purge_deletes(version) {
            Ok(records) if purged + records > 0 => {
                tracing::info!(
                    tombstones = purged,
                    records,
                    "purged deletes past their grace"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "purging deletes failed"),
        }
    }

    /// Points of one series. At read consistency `one`: from this node when
    /// it holds them, else from the first of its replicas that answers. At
    /// `quorum`: from a majority of its replicas (this node first), merged
    /// by version, so that with quorum writes a read sees every
    /// acknowledged write even from a replica that missed some. `None`:
    /// read locally. Runs on a blocking thread.
    pub fn read_field(
        &self,
        db: &str,
        rp: &str,
        series: &SeriesInfo,
        field: &str,
        range: (i64, i64),
        take: Option<Take>,
    ) -> Result<Option<Vec<(i64, Value)>>, String> {
        let topology = self.topology();
        let token = storage::series_token(db, &series.key);
        let replicas = topology.ring.replicas(token);
        let local = replicas.contains(&self.node_id);
        let quorum = self.read_consistency == ReadConsistency::Quorum && replicas.len() > 1;
        if replicas.is_empty() || (local && !quorum) {
            return Ok(None);
        }
        let need = if quorum { replicas.len() / 2 + 1 } else { 1 };
        let mut answers: repair::Answers = Vec::new();
        let mut failures = Vec::new();
        if local {
            match self
                .storage
                .read_field_versioned(db, rp, series.id, field, range, take)
            {
                Ok(points) => answers.push((self.node_id.clone(), points)),
                Err(error) => failures.push(format!("{}: {error}", self.node_id)),
            }
        }
        // The others, live ones first, in preference order. At `one` they
        // are asked in turn until one answers; at `quorum` all at once: the
        // read returns as soon as a majority answered, and once the rest
        // have answered (or failed) the stale ones are repaired.
        let order: Vec<String> =
            live_first(&topology, replicas.iter().filter(|r| **r != self.node_id))
                .into_iter()
                .cloned()
                .collect();
        let request_for = |take| Request::ReadField {
            db: db.to_string(),
            rp: rp.to_string(),
            series_key: series.key.clone(),
            field: field.to_string(),
            min: range.0,
            max: range.1,
            take,
            versions: true,
        };
        if !quorum {
            for id in &order {
                if !answers.is_empty() {
                    break;
                }
                let Some(member) = topology.members.get(id) else {
                    failures.push(format!("{id}: unknown address"));
                    continue;
                };
                let client = self.client.clone();
                let address = member.rpc_addr;
                let request = request_for(take);
                match self
                    .rpc
                    .block_on(async move { client.call(address, request).await })
                {
                    Ok(Response::Versioned(points)) => answers.push((id.clone(), points)),
                    Ok(_) => failures.push(format!("{id}: unexpected answer")),
                    Err(error) => failures.push(format!("{id}: {error}")),
                }
            }
        } else {
            let (sender, receiver) = std::sync::mpsc::channel();
            let calls = futures_util::stream::FuturesUnordered::new();
            for id in order {
                let Some(member) = topology.members.get(&id) else {
                    failures.push(format!("{id}: unknown address"));
                    continue;
                };
                let client = self.client.clone();
                let address = member.rpc_addr;
                let request = request_for(take);
                calls.push(async move { (id, client.call(address, request).await) });
            }
            let repairer = self.read_repair_enabled.then(|| self.read_repair.clone());
            let names = (db.to_string(), rp.to_string(), field.to_string());
            let series_info = series.clone();
            let topology_for_repair = topology.clone();
            let gathered = std::mem::take(&mut answers);
            let failed = std::mem::take(&mut failures);
            self.rpc.spawn(gather_quorum(
                calls,
                need,
                (gathered, failed),
                sender,
                move |all: &repair::Answers| {
                    if let Some(repairer) = repairer {
                        let (db, rp, field) = &names;
                        repairer.repair(&topology_for_repair, (db, rp), &series_info, field, all);
                    }
                },
            ));
            match receiver.recv() {
                Ok((got, why)) => {
                    answers = got;
                    failures = why;
                }
                Err(_) => failures.push("the read task ended without an answer".into()),
            }
        }
        if answers.len() < need {
            return Err(format!(
                "read failed: consistency {} not met: {} of {need} replicas of series {} answered ({})",
                if quorum { "quorum" } else { "one" },
                answers.len(),
                series.key,
                failures.join(", ")
            ));
        }
        Ok(Some(merge_versions(
            answers.into_iter().map(|(_, points)| points).collect(),
            take,
        )))
    }
}

impl Cluster {
    /// Aggregate push-down: at read consistency `one`, the partial states of
    /// a series this node does not hold, from the first replica that
    /// answers. `None`: compute here (a local series, or quorum reads,
    /// which merge points by version).
    pub fn partials(&self, request: PartialsRequest) -> Result<Option<(u64, Vec<u8>)>, String> {
        let (db, key) = (request.db.clone(), request.series_key.clone());
        let zoned_request = request.tz.is_some();
        match self.pushdown(&db, &key, Request::Partials(request))? {
            None => Ok(None),
            // A replica that did not apply the zone: fold its points here.
            Some(Response::Partials { zoned: false, .. }) if zoned_request => Ok(None),
            Some(Response::Partials { points, states, .. }) => Ok(Some((points, states))),
            Some(_) => Err("unexpected answer to a partials request".into()),
        }
    }

    /// Filter push-down, as [`Cluster::partials`]: the rows of a series this
    /// node does not hold that satisfy a condition.
    pub fn rows(&self, request: RowsRequest) -> Result<Option<Vec<u8>>, String> {
        let (db, key) = (request.db.clone(), request.series_key.clone());
        match self.pushdown(&db, &key, Request::Rows(request))? {
            None => Ok(None),
            Some(Response::Rows(rows)) => Ok(Some(rows)),
            Some(_) => Err("unexpected answer to a rows request".into()),
        }
    }

    /// Send `request` about series `key` to the first of its replicas that
    /// answers, live ones first; `None` when this node holds the series or
    /// reads at quorum (which merges points by version).
    fn pushdown(&self, db: &str, key: &str, request: Request) -> Result<Option<Response>, String> {
        if self.read_consistency == ReadConsistency::Quorum {
            return Ok(None);
        }
        let topology = self.topology();
        let replicas = topology.ring.replicas(storage::series_token(db, key));
        if replicas.is_empty() || replicas.contains(&self.node_id) {
            return Ok(None);
        }
        let order = live_first(&topology, replicas.iter());
        let mut failures = Vec::new();
        let mut request = Some(request);
        for (attempt, id) in order.iter().enumerate() {
            let Some(member) = topology.members.get(*id) else {
                failures.push(format!("{id}: unknown address"));
                continue;
            };
            // The request moves into the last attempt; earlier ones copy it.
            let call = if attempt + 1 == order.len() {
                request.take()
            } else {
                request.clone()
            };
            let Some(call) = call else {
                break;
            };
            let client = self.client.clone();
            let address = member.rpc_addr;
            match self
                .rpc
                .block_on(async move { client.call(address, call).await })
            {
                Ok(response) => return Ok(Some(response)),
                Err(error) => failures.push(format!("{id}: {error}")),
            }
        }
        Err(format!(
            "no replica of series {key} answered ({})",
            failures.join(", ")
        ))
    }
}

/// Several replicas' points of one field, one per timestamp: the highest
/// version wins.
fn merge_versions(answers: Vec<Vec<(i64, u64, Value)>>, take: Option<Take>) -> Vec<(i64, Value)> {
    let mut points: Vec<(i64, u64, Value)> = answers.into_iter().flatten().collect();
    points.sort_by_key(|(time, version, _)| (*time, *version));
    let mut out: Vec<(i64, Value)> = Vec::with_capacity(points.len());
    for (time, _, value) in points {
        match out.last_mut() {
            Some(last) if last.0 == time => last.1 = value,
            _ => out.push((time, value)),
        }
    }
    Take::apply(take, &mut out);
    out
}

/// Serves peers' requests on the RPC runtime; storage work runs on its
/// blocking threads.
struct Handler {
    storage: Storage,
    schema: Arc<schema::SchemaBook>,
    partials_served: Arc<AtomicU64>,
    tombstones: Arc<tombstones::TombstoneBook>,
}

#[async_trait::async_trait]
impl rpc::Handler<Request, Response> for Handler {
    async fn handle(&self, _peer: &str, request: Request) -> Result<Response, String> {
        if matches!(request, Request::Partials(_) | Request::Rows(_)) {
            self.partials_served
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let storage = self.storage.clone();
        let book = self.schema.clone();
        let tombstones = self.tombstones.clone();
        tokio::task::spawn_blocking(move || handle_blocking(&storage, &book, &tombstones, request))
            .await
            .map_err(|error| format!("request failed: {error}"))?
    }
}

fn handle_blocking(
    storage: &Storage,
    book: &schema::SchemaBook,
    tombstones: &tombstones::TombstoneBook,
    request: Request,
) -> Result<Response, String> {
    match request {
        Request::Tombstone(tombstone) => {
            tombstones.apply_new(storage, vec![tombstone]);
            Ok(Response::Done)
        }
        Request::Tombstones(theirs) => {
            let mine = tombstones.list();
            tombstones.apply_new(storage, theirs);
            Ok(Response::Tombstones(mine))
        }
        Request::Partials(request) => {
            let ids = storage
                .series_ids(&request.db, &[request.series_key.as_str()])
                .map_err(|e| e.to_string())?;
            let Some(Some(id)) = ids.first() else {
                return Ok(Response::Partials {
                    points: 0,
                    states: rmp_serde::to_vec(&Vec::<()>::new()).map_err(|e| e.to_string())?,
                    zoned: true,
                });
            };
            let indexes: Vec<usize> = request
                .indexes
                .iter()
                .filter_map(|&i| usize::try_from(i).ok())
                .collect();
            let (points, states) = influxql::series_partials(
                storage,
                (&request.db, &request.rp),
                *id,
                &request.field,
                &request.calls,
                &indexes,
                (request.interval, request.tz.as_deref(), request.descending),
                (request.min, request.max, request.origin),
                usize::try_from(request.member).unwrap_or(usize::MAX),
            )?;
            Ok(Response::Partials {
                points,
                states,
                zoned: true,
            })
        }
        Request::Rows(request) => {
            let ids = storage
                .series_ids(&request.db, &[request.series_key.as_str()])
                .map_err(|e| e.to_string())?;
            influxql::series_rows(
                storage,
                (&request.db, &request.rp),
                ids.first().copied().flatten(),
                &request.tags,
                &request.fields,
                (request.min, request.max),
                &request.condition,
                &request.field_names,
            )
            .map(Response::Rows)
        }
        Request::Catalog => {
            let mut out = Vec::new();
            for db in storage.database_names() {
                out.push((
                    db.clone(),
                    storage.catalog_series(&db).map_err(|e| e.to_string())?,
                ));
            }
            Ok(Response::Catalog(out))
        }
        Request::Schema(theirs) => {
            book.merge(storage, &theirs);
            Ok(Response::Schema(book.snapshot()))
        }
        Request::Write {
            db,
            rp,
            version,
            precision,
            now,
            lines,
            index_only,
        } => {
            let mut outcome = storage::WriteOutcome::default();
            if !index_only.is_empty() {
                let batch = lineproto::parse(&index_only, precision, now);
                let options = WriteOptions {
                    version: Some(version),
                    values: false,
                };
                storage
                    .write_with(&db, rp.as_deref(), &batch.points, options)
                    .map_err(|e| e.to_string())?;
            }
            if !lines.is_empty() {
                let batch = lineproto::parse(&lines, precision, now);
                let options = WriteOptions {
                    version: Some(version),
                    values: true,
                };
                outcome = storage
                    .write_with(&db, rp.as_deref(), &batch.points, options)
                    .map_err(|e| e.to_string())?;
            }
            Ok(Response::Written {
                written: outcome.written as u64,
                dropped: outcome.dropped as u64,
                conflict: outcome.conflict,
            })
        }
        Request::ReadField {
            db,
            rp,
            series_key,
            field,
            min,
            max,
            take,
            versions,
        } => {
            let ids = storage
                .series_ids(&db, &[series_key.as_str()])
                .map_err(|e| e.to_string())?;
            let Some(Some(id)) = ids.first() else {
                return Ok(Response::Field(Vec::new()));
            };
            if versions {
                storage
                    .read_field_versioned(&db, &rp, *id, &field, (min, max), take)
                    .map(Response::Versioned)
                    .map_err(|e| e.to_string())
            } else {
                storage
                    .read_field(&db, &rp, *id, &field, (min, max), take)
                    .map(Response::Field)
                    .map_err(|e| e.to_string())
            }
        }
        Request::AntiEntropy(request) => {
            anti_entropy::serve(storage, request).map(Response::AntiEntropy)
        }
        Request::Statement { db, rp, text } => {
            let query = influxql::parse(&text).map_err(|e| e.to_string())?;
            let context = QueryContext {
                database: db,
                retention_policy: rp,
                now: 0,
                limits: QueryLimits::default(),
                cluster: None,
            };
            for result in influxql::execute(&query, &context, storage) {
                if let Some(error) = result.error {
                    // "already exists" and "not found" are the same outcome
                    // on a member that had it first.
                    tracing::debug!(%error, statement = %text, "peer statement");
                }
            }
            Ok(Response::Done)
        }
    }
}

/// Push our schema to the member at `address` and merge its answer.
async fn exchange_schema(
    client: Arc<Client<Request, Response>>,
    address: SocketAddr,
    storage: Storage,
    book: Arc<schema::SchemaBook>,
) -> bool {
    match client.call(address, Request::Schema(book.snapshot())).await {
        Ok(Response::Schema(theirs)) => {
            tokio::task::spawn_blocking(move || book.merge(&storage, &theirs))
                .await
                .is_ok()
        }
        Ok(_) => {
            tracing::warn!(%address, "schema exchange: unexpected answer");
            false
        }
        Err(error) => {
            tracing::debug!(%address, %error, "schema exchange failed");
            false
        }
    }
}

/// Copy every series of every database from the member at `address` into
/// this node's index (a joining node plans queries over every series).
async fn copy_catalog(cluster: &Arc<Cluster>, address: SocketAddr) -> bool {
    match cluster.client.call(address, Request::Catalog).await {
        Ok(Response::Catalog(databases)) => {
            let storage = cluster.storage.clone();
            let count: usize = databases.iter().map(|(_, series)| series.len()).sum();
            let registered = tokio::task::spawn_blocking(move || {
                for (db, series) in databases {
                    if !storage.database_exists(&db) {
                        continue;
                    }
                    storage.register_series(&db, &series)?;
                }
                Ok::<_, storage::StorageError>(())
            })
            .await;
            match registered {
                Ok(Ok(())) => {
                    tracing::info!(%address, series = count, "copied the series index from a peer");
                    true
                }
                Ok(Err(error)) => {
                    tracing::warn!(%address, %error, "copying the series index failed");
                    false
                }
                Err(error) => {
                    tracing::warn!(%address, %error, "copying the series index failed");
                    false
                }
            }
        }
        Ok(_) => false,
        Err(error) => {
            tracing::debug!(%address, %error, "catalog copy failed");
            false
        }
    }
}

/// Every few seconds, exchange schemas with the next live member in turn:
/// how a node that missed a statement catches up. Until the first exchange
/// succeeded (the node is not ready before), it tries every 50 ms.
async fn schema_exchange(cluster: std::sync::Weak<Cluster>) {
    let mut turn = 0usize;
    let mut recopy = false;
    let mut last = tokio::time::Instant::now();
    let mut last_purge = last;
    loop {
        let synced = match cluster.upgrade() {
            Some(cluster) => cluster
                .schema_synced
                .load(std::sync::atomic::Ordering::Acquire),
            None => return,
        };
        let copying = cluster
            .upgrade()
            .is_some_and(|c| c.catalog_needed.load(std::sync::atomic::Ordering::Acquire));
        let pause = if synced && !copying {
            Duration::from_secs(2).saturating_sub(last.elapsed())
        } else {
            Duration::from_millis(50)
        };
        tokio::time::sleep(pause).await;
        last = tokio::time::Instant::now();
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        if last.duration_since(last_purge) >= Duration::from_secs(60) {
            last_purge = last;
            let purging = cluster.clone();
            let _ = tokio::task::spawn_blocking(move || purging.purge_tombstones()).await;
        }
        let topology = cluster.topology();
        let peers: Vec<SocketAddr> = topology
            .members
            .iter()
            .filter(|(id, member)| **id != cluster.node_id && member.live)
            .map(|(_, member)| member.rpc_addr)
            .collect();
        if peers.is_empty() {
            continue;
        }
        turn = turn.wrapping_add(1);
        let address = peers[turn % peers.len()];
        // Once joined, copy the index once more: a series a peer created
        // before it routed writes here too was not registered here.
        match cluster.state() {
            NodeState::Joining => recopy = true,
            NodeState::Normal if recopy && copy_catalog(&cluster, address).await => recopy = false,
            _ => {}
        }
        if cluster
            .catalog_needed
            .load(std::sync::atomic::Ordering::Acquire)
            && cluster
                .schema_synced
                .load(std::sync::atomic::Ordering::Acquire)
        {
            if copy_catalog(&cluster, address).await {
                cluster
                    .catalog_needed
                    .store(false, std::sync::atomic::Ordering::Release);
            }
            continue;
        }
        if exchange_schema(
            cluster.client.clone(),
            address,
            cluster.storage.clone(),
            cluster.schema.clone(),
        )
        .await
        {
            cluster
                .schema_synced
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

/// Whether `seeds` name a node other than the one gossiping on `own`
/// (nodes are often all given the same seed list, themselves included).
fn has_other_seeds(seeds: &[String], own: SocketAddr) -> bool {
    use std::net::ToSocketAddrs;
    seeds.iter().any(|seed| {
        let seed = seed.trim();
        if seed.is_empty() {
            return false;
        }
        match seed.to_socket_addrs() {
            Ok(mut addresses) => !addresses.any(|address| {
                address == own
                    || (address.port() == own.port()
                        && own.ip().is_unspecified()
                        && (address.ip().is_loopback() || address.ip().is_unspecified()))
            }),
            // Unresolvable now: still a peer to wait for.
            Err(_) => true,
        }
    })
}

/// Statements whose effect the schema book carries (so they are never sent
/// as statements).
fn is_schema_statement(text: &str) -> bool {
    let upper = text.trim_start().to_ascii_uppercase();
    [
        "CREATE DATABASE",
        "DROP DATABASE",
        "CREATE RETENTION POLICY",
        "ALTER RETENTION POLICY",
        "DROP RETENTION POLICY",
    ]
    .iter()
    .any(|prefix| upper.starts_with(prefix))
}

/// Hinted handoff: deliver the hints kept for each live target, oldest
/// first, in batches; a hint is forgotten only once its target acknowledged
/// it (delivering one twice is harmless: versions). A target that fails is
/// retried with exponential backoff (0.2 s doubling to 10 s).
pub(crate) async fn replay_round(cluster: &Arc<Cluster>, backoff: &mut handoff::Backoff) {
    const BATCH: usize = 32;
    if !cluster.hint_book.any_queued() {
        return;
    }
    {
        let storage = cluster.storage.clone();
        let Ok(Ok(queues)) = tokio::task::spawn_blocking(move || storage.hint_queues()).await
        else {
            return;
        };
        let topology = cluster.topology();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let max_age_ms = cluster.hint_book.max_age.as_millis() as u64;
        for (target, (_, _, oldest_ms)) in &queues {
            if now_ms.saturating_sub(*oldest_ms) > max_age_ms {
                drop_old_hints(cluster, target, now_ms.saturating_sub(max_age_ms)).await;
            }
            let Some(member) = topology.members.get(target) else {
                continue;
            };
            let waiting = backoff
                .get(target)
                .is_some_and(|(until, _)| tokio::time::Instant::now() < *until);
            if !member.live || waiting {
                continue;
            }
            let storage = cluster.storage.clone();
            let name = target.clone();
            let Ok(Ok(batch)) =
                tokio::task::spawn_blocking(move || storage.hint_batch(&name, BATCH)).await
            else {
                continue;
            };
            let mut delivered = Vec::new();
            let mut delivered_bytes = 0u64;
            let mut failure = None;
            for (key, bytes) in batch {
                delivered_bytes += bytes.len() as u64;
                let request: Request = match rmp_serde::from_slice(&bytes) {
                    Ok(request) => request,
                    Err(error) => {
                        tracing::error!(node = %target, %error, "dropping an unreadable hint");
                        delivered.push(key);
                        continue;
                    }
                };
                match cluster.client.call(member.rpc_addr, request).await {
                    Ok(Response::Written { .. } | Response::Done) => {
                        delivered.push(key);
                        if cluster.replay_rate > 0 {
                            let pause = bytes.len() as f64 / cluster.replay_rate as f64;
                            tokio::time::sleep(Duration::from_secs_f64(pause)).await;
                        }
                    }
                    Ok(_) => {
                        failure = Some("unexpected answer".to_string());
                        break;
                    }
                    Err(error) => {
                        failure = Some(error.to_string());
                        break;
                    }
                }
            }
            let count = delivered.len() as u64;
            if !delivered.is_empty() {
                let storage = cluster.storage.clone();
                if let Ok(Err(error)) =
                    tokio::task::spawn_blocking(move || storage.hint_remove(&delivered)).await
                {
                    tracing::warn!(node = %target, %error, "could not forget delivered hints");
                }
                cluster
                    .hints_replayed
                    .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                cluster.hint_book.forget(target, delivered_bytes);
            }
            match failure {
                Some(error) => {
                    let delay = backoff
                        .get(target)
                        .map_or(Duration::from_millis(200), |(_, d)| {
                            (*d * 2).min(Duration::from_secs(10))
                        });
                    tracing::debug!(node = %target, %error, ?delay, "hint delivery failed");
                    backoff.insert(target.clone(), (tokio::time::Instant::now() + delay, delay));
                }
                None => {
                    backoff.remove(target);
                }
            }
        }
    }
}

/// Drop the hints for `target` written before `cutoff_ms` (wall clock).
async fn drop_old_hints(cluster: &Arc<Cluster>, target: &str, cutoff_ms: u64) {
    let storage = cluster.storage.clone();
    let name = target.to_string();
    let Ok(Ok(batch)) = tokio::task::spawn_blocking(move || storage.hint_batch(&name, 1024)).await
    else {
        return;
    };
    let old: Vec<(Vec<u8>, u64)> = batch
        .into_iter()
        .filter(|(key, _)| storage::hint_written_ms(key).is_some_and(|ms| ms < cutoff_ms))
        .map(|(key, hint)| (key, hint.len() as u64))
        .collect();
    if old.is_empty() {
        return;
    }
    let bytes: u64 = old.iter().map(|(_, size)| size).sum();
    let count = old.len() as u64;
    let keys: Vec<Vec<u8>> = old.into_iter().map(|(key, _)| key).collect();
    let storage = cluster.storage.clone();
    if let Ok(Ok(())) = tokio::task::spawn_blocking(move || storage.hint_remove(&keys)).await {
        cluster.hint_book.dropped_old(target, count, bytes);
    }
}

/// Replicas in preference order, the live ones first.
fn live_first<'a>(
    topology: &Topology,
    replicas: impl Iterator<Item = &'a String>,
) -> Vec<&'a String> {
    let mut order: Vec<&String> = replicas.collect();
    order.sort_by_key(|id| !topology.members.get(*id).is_some_and(|m| m.live));
    order
}

/// Answers so far and why the others failed.
type Gathered = (repair::Answers, Vec<String>);

/// Wait for the replicas' answers to a quorum read: hand the first `need`
/// (or all, if fewer came) to `sender` at once, then, once every replica
/// answered or failed, give all answers to `then` (read repair).
async fn gather_quorum<F>(
    mut calls: futures_util::stream::FuturesUnordered<F>,
    need: usize,
    (mut answers, mut failures): Gathered,
    sender: std::sync::mpsc::Sender<Gathered>,
    then: impl FnOnce(&repair::Answers),
) where
    F: std::future::Future<Output = (String, Result<Response, rpc::RpcError>)>,
{
    use futures_util::StreamExt;
    let mut sent = answers.len() >= need;
    if sent {
        let _ = sender.send((answers.clone(), failures.clone()));
    }
    while let Some((id, answer)) = calls.next().await {
        match answer {
            Ok(Response::Versioned(points)) => answers.push((id, points)),
            Ok(_) => failures.push(format!("{id}: unexpected answer")),
            Err(error) => failures.push(format!("{id}: {error}")),
        }
        if !sent && answers.len() >= need {
            sent = true;
            let _ = sender.send((answers.clone(), failures.clone()));
        }
    }
    if !sent {
        let _ = sender.send((answers.clone(), failures.clone()));
    }
    then(&answers);
}
