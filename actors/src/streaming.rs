//! Streaming: data moves by itself when ownership does (DESIGN.md §6).
//!
//! Every ring change is a *plan* ([`crate::ownership::Layout`]): a current
//! ring (reads) and a future one, with a digest every node computes alike
//! from the gossiped member states. Writes go to both rings and meet their
//! level in each ([`crate::ownership::Placement`]). This actor, on every
//! node, drives a plan to its end:
//!
//! 1. **Announce.** Once no write routed by an older plan is in flight on
//!    this node, it gossips `plan = <digest>`.
//! 2. **Stream.** A node that gains partitions in the plan waits until
//!    every live member announced the plan (no coordinator still writes
//!    without it), then pulls each gained partition from *every* live
//!    current replica with an anti-entropy exchange over every version
//!    (so it holds whatever any of them acknowledged), throttled by
//!    `streaming.rate_limit`, and gossips `synced = <digest>`. The exchange
//!    compares Merkle leaves first, so a stream cut by a restart of either
//!    side resumes where it was: what arrived is not sent again.
//! 3. **Switch.** When every gainer of the plan has synced it, joining
//!    nodes become `normal`, leaving nodes `left` (and exit once every live
//!    member has seen it), and removed nodes are marked done. A plan that
//!    changes meanwhile (a second join) makes a new digest: syncs of the old
//!    one do not count.
//! 4. **Clean up.** When nothing moves and every live member routes by the
//!    same plan, after `cleanup_delay`, each node deletes the points of the
//!    partitions it no longer holds.
//!
//! With `offline_threshold`, the lowest-id live member removes a member
//! that has been down longer than that (only with more current members
//! than the replication factor, one at a time).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::anti_entropy::{AeTransport, Driver, PeerPlan};
use crate::hlc::Version;
use crate::membership::{Membership, NodeState, SetKeys, SetState};
use crate::ownership::{Topology, KEY_PLAN, KEY_SYNCED, PARTITIONS, REMOVED_PREFIX};
use crate::store::{PartitionSet, RangeStore};

/// A member not seen live for this long counts as down (it cannot route
/// writes, so it need not announce a plan). A node that has just started
/// sees every peer down until gossip says otherwise: without this grace it
/// would stream from, and wait for, fewer members than there are.
const DEAD_GRACE: Duration = Duration::from_secs(10);

/// Partitions per exchange: progress is reported (and a changed plan
/// noticed) between steps.
const PARTITIONS_PER_STEP: usize = 256;

/// How a node's streaming behaves.
#[derive(Debug, Clone)]
pub struct StreamingConfig {
    pub node_id: String,
    /// Wait this long with nothing moving before deleting partitions the
    /// node no longer holds.
    pub cleanup_delay: Duration,
    /// Remove a member down longer than this (`None`: never).
    pub offline_threshold: Option<Duration>,
    /// How often the actor looks at the topology.
    pub tick: Duration,
}

/// A move as the operator sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MoveStatus {
    /// Digest of the plan being streamed, hex.
    pub plan: String,
    pub partitions_total: u64,
    pub partitions_done: u64,
    pub rows_received: u64,
    pub bytes_received: u64,
    pub elapsed_ms: u64,
    /// Bytes per second so far.
    pub rate: u64,
    /// Seconds left at that rate (by partitions), if known.
    pub eta_seconds: Option<u64>,
    pub done: bool,
    pub error: Option<String>,
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct StreamingStats {
    pub partitions_streamed: AtomicU64,
    pub rows_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub points_cleaned: AtomicU64,
    pub auto_removals: AtomicU64,
    pub status: Mutex<Option<MoveStatus>>,
}

fn hex(plan: u64) -> String {
    format!("{plan:016x}")
}

#[derive(Message)]
#[rtype(result = "()")]
struct SyncDone {
    plan: u64,
    result: Result<(), String>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct CleanupDone {
    plan: u64,
    result: Result<u64, String>,
}

/// The streaming actor (see the module documentation).
pub struct Streaming<S, T> {
    config: StreamingConfig,
    topology: watch::Receiver<Arc<Topology>>,
    membership: Addr<Membership>,
    driver: Arc<Driver<S, T>>,
    store: Arc<S>,
    runtime: tokio::runtime::Handle,
    pub stats: Arc<StreamingStats>,
    on_left: Option<Box<dyn FnOnce() + Send>>,
    /// Whether the node can serve reads once it holds its partitions (it
    /// has what else it needs, such as the series index).
    can_serve: Box<dyn Fn() -> bool + Send>,
    last: Option<Arc<Topology>>,
    /// Superseded topologies whose writes may still be in flight.
    older: Vec<Arc<Topology>>,
    announced: Option<u64>,
    syncing: Option<u64>,
    synced: Option<u64>,
    stable_since: Option<(u64, Instant)>,
    cleaned: Option<u64>,
    cleaning: bool,
    down_since: HashMap<String, Instant>,
    left_at: Option<Instant>,
    marked_done: BTreeSet<String>,
    warned_fenced: bool,
}

impl<S: RangeStore, T: AeTransport> Streaming<S, T> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: StreamingConfig,
        topology: watch::Receiver<Arc<Topology>>,
        membership: Addr<Membership>,
        driver: Arc<Driver<S, T>>,
        store: Arc<S>,
        runtime: tokio::runtime::Handle,
        on_left: Box<dyn FnOnce() + Send>,
        can_serve: Box<dyn Fn() -> bool + Send>,
    ) -> Streaming<S, T> {
        Streaming {
            config,
            topology,
            membership,
            driver,
            store,
            runtime,
            stats: Arc::new(StreamingStats::default()),
            on_left: Some(on_left),
            can_serve,
            last: None,
            older: Vec::new(),
            announced: None,
            syncing: None,
            synced: None,
            stable_since: None,
            cleaned: None,
            cleaning: false,
            down_since: HashMap::new(),
            left_at: None,
            marked_done: BTreeSet::new(),
            warned_fenced: false,
        }
    }

    fn set_keys(&self, keys: Vec<(String, Option<String>)>) {
        self.membership.do_send(SetKeys(keys));
    }

    /// Whether `id` has been down for at least [`DEAD_GRACE`].
    fn settled_down(&self, topology: &Topology, id: &str) -> bool {
        !topology.members.get(id).is_some_and(|m| m.live)
            && self
                .down_since
                .get(id)
                .is_some_and(|since| since.elapsed() >= DEAD_GRACE)
    }

    /// Whether every member that may route writes (not left, not removed,
    /// not down for good) announced `plan`.
    fn all_announced(&self, topology: &Topology, plan: u64) -> bool {
        let plan = hex(plan);
        topology.members.iter().all(|(id, member)| {
            if *id == self.config.node_id {
                return self.announced.map(hex).as_deref() == Some(plan.as_str());
            }
            member.state == NodeState::Left
                || topology.removed.contains(id)
                || topology.removing.contains(id)
                || member.keys.get(KEY_PLAN) == Some(&plan)
                || self.settled_down(topology, id)
        })
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let topology = self.topology.borrow().clone();
        if let Some(last) = self.last.replace(topology.clone()) {
            if !Arc::ptr_eq(&last, &topology) {
                self.older.push(last);
            }
        }
        self.older
            .retain(|old| old.inflight.load(Ordering::Acquire) > 0);
        if self.older.is_empty() && self.announced != Some(topology.plan) {
            self.announced = Some(topology.plan);
            self.set_keys(vec![(KEY_PLAN.to_string(), Some(hex(topology.plan)))]);
        }
        let now = Instant::now();
        for (id, member) in &topology.members {
            if member.live {
                self.down_since.remove(id);
            } else {
                self.down_since.entry(id.clone()).or_insert(now);
            }
        }
        if !topology.ready {
            return;
        }
        let me = self.config.node_id.clone();
        let Some(state) = topology.members.get(&me).map(|m| m.state) else {
            return;
        };
        if topology.removed.contains(&me) || topology.removing.contains(&me) {
            if !self.warned_fenced {
                self.warned_fenced = true;
                tracing::error!(
                    node = %me,
                    "this node has been removed from the cluster: it takes no data; wipe its data directory to join again"
                );
            }
            return;
        }
        if state == NodeState::Left {
            self.after_left(&topology);
            return;
        }
        if topology.moving() {
            self.stable_since = None;
            self.drive_move(&topology, state, ctx);
        } else {
            self.when_stable(&topology, ctx);
        }
    }

    fn drive_move(&mut self, topology: &Arc<Topology>, state: NodeState, ctx: &mut Context<Self>) {
        let me = self.config.node_id.clone();
        let plan = topology.plan;
        let barrier = self.all_announced(topology, plan);
        let gains = topology.gains(&me);
        if !gains.is_empty()
            && self.synced != Some(plan)
            && self.syncing.is_none()
            && barrier
            && (self.can_serve)()
            // A cleanup planned under the previous plan may delete what
            // this plan brings in: it finishes first.
            && !self.cleaning
        {
            self.start_sync(topology.clone(), gains, ctx);
        }
        if !barrier {
            return;
        }
        let plan_hex = hex(plan);
        let complete = topology.gainers().iter().all(|id| {
            if *id == me {
                self.synced == Some(plan)
            } else {
                topology.key(id, KEY_SYNCED) == Some(plan_hex.as_str())
            }
        });
        if !complete {
            return;
        }
        self.mark_removals_done(topology);
        match state {
            NodeState::Joining if topology.future.members().contains(&me) => {
                tracing::info!(plan = %plan_hex, "every new range is in: normal");
                self.membership.do_send(SetState(NodeState::Normal));
            }
            NodeState::Leaving => {
                tracing::info!(plan = %plan_hex, "every range handed off: left");
                self.membership.do_send(SetState(NodeState::Left));
            }
            _ => {}
        }
    }

    /// Announce every removal under way done (the plan's moves are).
    fn mark_removals_done(&mut self, topology: &Topology) {
        let mut keys = Vec::new();
        for removed in &topology.removing {
            if self.marked_done.insert(removed.clone()) {
                tracing::warn!(node = %removed, "removal done: its ranges have their copies again");
                keys.push((
                    format!("{REMOVED_PREFIX}{removed}"),
                    Some("removed".to_string()),
                ));
            }
        }
        if !keys.is_empty() {
            self.set_keys(keys);
        }
    }

    fn start_sync(
        &mut self,
        topology: Arc<Topology>,
        gains: PartitionSet,
        ctx: &mut Context<Self>,
    ) {
        let plan = topology.plan;
        let me = self.config.node_id.clone();
        // Per live current replica, the gained partitions it holds. Every
        // current replica (but those being removed) is a source: one down
        // only lately is waited for, and a partition whose every replica is
        // down waits for one of them to return.
        let mut sources: BTreeMap<String, PartitionSet> = BTreeMap::new();
        let mut waiting = 0usize;
        let mut lost = 0usize;
        for partition in gains.iter() {
            let replicas: Vec<&String> = topology
                .ring
                .partition_replicas(partition)
                .iter()
                .filter(|id| **id != me)
                .collect();
            let holders: Vec<&String> = replicas
                .iter()
                .copied()
                .filter(|id| !topology.removing.contains(id.as_str()))
                .collect();
            if holders.is_empty() {
                if !replicas.is_empty() {
                    // Only replicas being removed held it: it is gone.
                    lost += 1;
                }
                continue;
            }
            let mut live = 0;
            for id in holders {
                if topology.members.get(id).is_some_and(|m| m.live) {
                    sources.entry(id.clone()).or_default().insert(partition);
                    live += 1;
                } else if !self.settled_down(&topology, id) {
                    waiting += 1;
                }
            }
            if live == 0 {
                waiting += 1;
            }
        }
        if waiting > 0 {
            tracing::debug!(
                partitions = waiting,
                "waiting for the current replicas of gained partitions to be live"
            );
            return;
        }
        if lost > 0 {
            tracing::error!(
                partitions = lost,
                "gained partitions whose only replicas are being removed: their points are lost"
            );
        }
        self.syncing = Some(plan);
        let total: u64 = sources.values().map(|p| p.len() as u64).sum();
        tracing::info!(plan = %hex(plan), partitions = gains.len(), sources = sources.len(), "streaming gained partitions");
        let driver = self.driver.clone();
        let stats = self.stats.clone();
        let watch = self.topology.clone();
        let work = self.runtime.spawn(async move {
            let started = Instant::now();
            let mut status = MoveStatus {
                plan: hex(plan),
                partitions_total: total,
                ..MoveStatus::default()
            };
            *stats.status.lock() = Some(status.clone());
            for (peer, partitions) in sources {
                let all: Vec<usize> = partitions.iter().collect();
                for step in all.chunks(PARTITIONS_PER_STEP) {
                    if watch.borrow().plan != plan {
                        return Err("the plan changed".to_string());
                    }
                    let mut set = PartitionSet::default();
                    step.iter().for_each(|p| set.insert(*p));
                    let report = driver
                        .round_with(
                            vec![PeerPlan {
                                id: peer.clone(),
                                partitions: set,
                            }],
                            Version::MAX,
                        )
                        .await;
                    if let Some(error) = report.errors.first() {
                        status.error = Some(error.clone());
                        *stats.status.lock() = Some(status.clone());
                        return Err(error.clone());
                    }
                    status.partitions_done += step.len() as u64;
                    status.rows_received += report.rows_received;
                    status.bytes_received += report.bytes_received;
                    status.elapsed_ms = started.elapsed().as_millis() as u64;
                    let seconds = started.elapsed().as_secs_f64().max(0.001);
                    status.rate = (status.bytes_received as f64 / seconds) as u64;
                    let left = status.partitions_total - status.partitions_done;
                    status.eta_seconds = (status.partitions_done > 0).then(|| {
                        (seconds * left as f64 / status.partitions_done as f64).ceil() as u64
                    });
                    stats
                        .partitions_streamed
                        .fetch_add(step.len() as u64, Ordering::Relaxed);
                    stats
                        .rows_received
                        .fetch_add(report.rows_received, Ordering::Relaxed);
                    stats
                        .bytes_received
                        .fetch_add(report.bytes_received, Ordering::Relaxed);
                    *stats.status.lock() = Some(status.clone());
                }
            }
            status.done = true;
            status.elapsed_ms = started.elapsed().as_millis() as u64;
            status.error = None;
            *stats.status.lock() = Some(status);
            Ok(())
        });
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(work).map(move |result, _actor, ctx| {
                let result =
                    result.unwrap_or_else(|error| Err(format!("stream task failed: {error}")));
                ctx.notify(SyncDone { plan, result });
            }),
        );
    }

    fn after_left(&mut self, topology: &Topology) {
        let left_at = *self.left_at.get_or_insert_with(Instant::now);
        // Exit once every live member routes without this node (or after
        // a minute: a peer that never says is down).
        let seen = self.all_announced(topology, topology.plan) && !topology.moving();
        if seen || left_at.elapsed() > Duration::from_secs(60) {
            if let Some(exit) = self.on_left.take() {
                tracing::info!("left the cluster: stopping");
                exit();
            }
        }
    }

    fn when_stable(&mut self, topology: &Arc<Topology>, ctx: &mut Context<Self>) {
        let plan = topology.plan;
        // A member removed while it held nothing (a joiner that died before
        // it was normal) needs no copies: its removal is done.
        self.mark_removals_done(topology);
        let now = Instant::now();
        let since = match self.stable_since {
            Some((p, since)) if p == plan => since,
            _ => {
                self.stable_since = Some((plan, now));
                now
            }
        };
        if self.cleaned != Some(plan)
            && !self.cleaning
            && now.duration_since(since) >= self.config.cleanup_delay
            && self.all_announced(topology, plan)
        {
            self.cleanup(topology.clone(), ctx);
        }
        self.offline_check(topology);
    }

    fn cleanup(&mut self, topology: Arc<Topology>, ctx: &mut Context<Self>) {
        self.cleaning = true;
        let plan = topology.plan;
        let me = self.config.node_id.clone();
        let mut foreign = PartitionSet::default();
        for partition in 0..PARTITIONS {
            if !topology.ring.partition_replicas(partition).contains(&me) {
                foreign.insert(partition);
            }
        }
        let store = self.store.clone();
        let watch = self.topology.clone();
        let work = self.runtime.spawn_blocking(move || {
            let mut dropped = 0;
            if foreign.is_empty() {
                return Ok(0);
            }
            for group in store.shard_groups().map_err(|e| e.to_string())? {
                // A move started meanwhile: what it brings in stays (its
                // stream waits for this cleanup to end).
                if watch.borrow().plan != plan {
                    return Err("the plan changed".to_string());
                }
                let held = store
                    .leaves(&group, &foreign, Version::MAX)
                    .map_err(|e| e.to_string())?;
                if held.is_empty() {
                    continue;
                }
                let mut set = PartitionSet::default();
                held.iter()
                    .for_each(|leaf| set.insert(leaf.partition as usize));
                dropped += store
                    .drop_partitions(&group, &set)
                    .map_err(|e| e.to_string())?;
            }
            Ok(dropped)
        });
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(work).map(move |result, _actor, ctx| {
                let result =
                    result.unwrap_or_else(|error| Err(format!("cleanup task failed: {error}")));
                ctx.notify(CleanupDone { plan, result });
            }),
        );
    }

    fn offline_check(&mut self, topology: &Topology) {
        let now = Instant::now();
        let Some(threshold) = self.config.offline_threshold else {
            return;
        };
        if !topology.removing.is_empty() || topology.ring.members().len() <= topology.ring.rf() {
            return;
        }
        let lowest_live = topology
            .ring
            .members()
            .iter()
            .find(|id| topology.members.get(*id).is_some_and(|m| m.live));
        if lowest_live != Some(&self.config.node_id) {
            return;
        }
        let overdue = topology.ring.members().iter().find(|id| {
            self.down_since
                .get(*id)
                .is_some_and(|since| now.duration_since(*since) >= threshold)
        });
        if let Some(dead) = overdue {
            tracing::error!(
                node = %dead,
                threshold_s = threshold.as_secs(),
                "a member has been down longer than cluster.offline_threshold: removing it and copying its ranges to their new owners"
            );
            self.stats.auto_removals.fetch_add(1, Ordering::Relaxed);
            self.down_since.remove(dead);
            self.set_keys(vec![(
                format!("{REMOVED_PREFIX}{dead}"),
                Some("removing".to_string()),
            )]);
        }
    }
}

impl<S: RangeStore, T: AeTransport> Actor for Streaming<S, T> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.tick, |actor, ctx| actor.tick(ctx));
    }
}

impl<S: RangeStore, T: AeTransport> Handler<SyncDone> for Streaming<S, T> {
    type Result = ();

    fn handle(&mut self, SyncDone { plan, result }: SyncDone, _: &mut Context<Self>) {
        self.syncing = None;
        match result {
            Ok(()) => {
                tracing::info!(plan = %hex(plan), "gained partitions streamed in");
                self.synced = Some(plan);
                self.set_keys(vec![(KEY_SYNCED.to_string(), Some(hex(plan)))]);
            }
            Err(error) => {
                tracing::warn!(plan = %hex(plan), %error, "streaming stopped; it resumes on the next tick");
            }
        }
    }
}

impl<S: RangeStore, T: AeTransport> Handler<CleanupDone> for Streaming<S, T> {
    type Result = ();

    fn handle(&mut self, CleanupDone { plan, result }: CleanupDone, _: &mut Context<Self>) {
        self.cleaning = false;
        match result {
            Ok(points) => {
                self.cleaned = Some(plan);
                if points > 0 {
                    tracing::info!(
                        points,
                        "cleanup: deleted the points of partitions this node no longer holds"
                    );
                }
                self.stats
                    .points_cleaned
                    .fetch_add(points, Ordering::Relaxed);
            }
            Err(error) => tracing::warn!(%error, "cleanup failed; it runs again"),
        }
    }
}
