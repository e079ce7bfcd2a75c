//! Anti-entropy: replicas compare Merkle trees and stream what differs.
//!
//! The tree of a shard group has one leaf per partition ([`Leaf`]: a
//! multiset hash of the partition's resolved points, kept up to date by the
//! engine) and a root per peer pair: the hash of the leaves of the
//! partitions both nodes hold. A round, for every live peer that shares
//! partitions with this node:
//!
//! 1. `Digests`: both sides' roots of every shard group either holds. Equal
//!    roots end the exchange for that group: an idle round reads no data,
//!    only the leaves the engine keeps.
//! 2. `Leaves`: for a group whose roots differ, the peer's leaves; the
//!    partitions whose leaves differ are repaired.
//! 3. `Rows` and `Apply`: per batch of differing partitions, this node reads
//!    its rows, pulls the peer's (in pages of at most [`PAGE_BYTES`]) and
//!    applies them, then pushes its own; both sides end with the union, the
//!    higher version winning per point. A side whose leaf is empty neither
//!    sends nor is asked for rows.
//!
//! Bytes moved in either direction are paced by `rate_limit` (bytes/s), so a
//! repair does not take the disk and network from live traffic. The
//! [`Driver`] holds the logic and knows nothing of actix; the
//! [`AntiEntropy`] actor schedules rounds every `interval` and answers
//! [`RepairNow`] once a round that started after the request has finished.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, ResponseFuture};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::hlc::{self, Version};
use crate::store::{Leaf, PartitionSet, RangeStore, Row};

/// The most row bytes one `Rows` answer carries (a partition is never split,
/// so an answer can exceed it by one partition).
pub const PAGE_BYTES: usize = 8 << 20;

/// How many differing partitions are repaired per step (bounds memory).
const PARTITIONS_PER_STEP: usize = 64;

/// The anti-entropy messages between nodes (carried inside the node's own
/// RPC protocol).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AeRequest {
    /// The root of every shard group the peer holds, over `partitions`
    /// and the points with versions below `horizon`.
    Digests {
        partitions: PartitionSet,
        horizon: Version,
    },
    /// The non-empty leaves of one shard group among `partitions`.
    Leaves {
        shard_group: String,
        partitions: PartitionSet,
        horizon: Version,
    },
    /// The rows of `partitions` (in order) of one shard group, as many
    /// whole partitions as fit in `max_bytes` (at least one).
    Rows {
        shard_group: String,
        partitions: Vec<u32>,
        max_bytes: u64,
    },
    /// Apply rows to one shard group.
    Apply { shard_group: String, rows: Vec<Row> },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AeResponse {
    /// `(shard group, root, points)`, for groups with points in the set.
    Digests(Vec<(String, u128, u64)>),
    Leaves(Vec<Leaf>),
    /// The rows, and how many of the asked partitions they cover.
    Rows {
        rows: Vec<Row>,
        partitions: u32,
    },
    Applied,
}

/// The root of a set of leaves (in partition order).
pub fn root(leaves: &[Leaf]) -> (u128, u64) {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut count = 0u64;
    for leaf in leaves {
        hasher.update(&leaf.partition.to_be_bytes());
        hasher.update(&leaf.hash.to_be_bytes());
        hasher.update(&leaf.count.to_be_bytes());
        count += leaf.count;
    }
    (hasher.digest128(), count)
}

/// Answer a peer's request from the local store (blocking).
pub fn serve<S: RangeStore>(store: &S, request: AeRequest) -> Result<AeResponse, String> {
    let error = |e: S::Error| e.to_string();
    match request {
        AeRequest::Digests {
            partitions,
            horizon,
        } => {
            let mut out = Vec::new();
            for shard_group in store.shard_groups().map_err(error)? {
                let leaves = store
                    .leaves(&shard_group, &partitions, horizon)
                    .map_err(error)?;
                if leaves.is_empty() {
                    continue;
                }
                let (hash, count) = root(&leaves);
                out.push((shard_group, hash, count));
            }
            Ok(AeResponse::Digests(out))
        }
        AeRequest::Leaves {
            shard_group,
            partitions,
            horizon,
        } => Ok(AeResponse::Leaves(
            store
                .leaves(&shard_group, &partitions, horizon)
                .map_err(error)?,
        )),
        AeRequest::Rows {
            shard_group,
            partitions,
            max_bytes,
        } => {
            let mut rows = Vec::new();
            let mut bytes = 0u64;
            let mut done = 0u32;
            for partition in partitions {
                if done > 0 && bytes >= max_bytes {
                    break;
                }
                let more = store
                    .scan_partition(&shard_group, partition)
                    .map_err(error)?;
                bytes += more.iter().map(|row| row.size() as u64).sum::<u64>();
                rows.extend(more);
                done += 1;
            }
            Ok(AeResponse::Rows {
                rows,
                partitions: done,
            })
        }
        AeRequest::Apply { shard_group, rows } => {
            store.apply_rows(&shard_group, rows).map_err(error)?;
            Ok(AeResponse::Applied)
        }
    }
}

/// A peer to exchange with and the partitions both nodes hold.
#[derive(Debug, Clone)]
pub struct PeerPlan {
    pub id: String,
    pub partitions: PartitionSet,
}

/// How the driver reaches peers: the node's RPC, and its view of the ring.
#[async_trait::async_trait]
pub trait AeTransport: Send + Sync + 'static {
    /// The live peers that share partitions with this node (empty while the
    /// node is not ready).
    fn plan(&self) -> Vec<PeerPlan>;

    async fn call(&self, peer: &str, request: AeRequest) -> Result<AeResponse, String>;

    /// Runs before rows are compared with `peer`: where the node swaps
    /// what must precede data, such as delete tombstones (so that a replica
    /// that missed a delete applies it before it sends what it deleted).
    async fn before_exchange(&self, _peer: &str) -> Result<(), String> {
        Ok(())
    }
}

/// What a round did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoundReport {
    /// Wall clock (ms since the epoch) when the round ended.
    pub finished_ms: u64,
    pub duration_ms: u64,
    pub peers: u64,
    pub peers_failed: u64,
    /// (peer, shard group) pairs compared whose roots were equal.
    pub shard_groups_in_sync: u64,
    /// (peer, shard group) pairs whose roots differed.
    pub shard_groups_repaired: u64,
    /// Partitions (of a shard group, with one peer) whose leaves differed.
    pub partitions_repaired: u64,
    pub rows_received: u64,
    pub rows_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub errors: Vec<String>,
}

impl RoundReport {
    /// Whether every peer answered and nothing differed.
    pub fn in_sync(&self) -> bool {
        self.errors.is_empty() && self.partitions_repaired == 0
    }
}

/// Totals since the node started, and the last completed round.
#[derive(Debug, Default)]
pub struct AeStats {
    pub rounds: AtomicU64,
    pub partitions_repaired: AtomicU64,
    pub rows_received: AtomicU64,
    pub rows_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub last_round: Mutex<Option<RoundReport>>,
}

impl AeStats {
    fn record(&self, report: &RoundReport) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.partitions_repaired
            .fetch_add(report.partitions_repaired, Ordering::Relaxed);
        self.rows_received
            .fetch_add(report.rows_received, Ordering::Relaxed);
        self.rows_sent
            .fetch_add(report.rows_sent, Ordering::Relaxed);
        self.bytes_received
            .fetch_add(report.bytes_received, Ordering::Relaxed);
        self.bytes_sent
            .fetch_add(report.bytes_sent, Ordering::Relaxed);
        *self.last_round.lock() = Some(report.clone());
    }
}

/// Paces bytes to `rate` per second (0: no limit).
struct Pace {
    rate: u64,
    started: Instant,
    bytes: u64,
}

impl Pace {
    async fn take(&mut self, bytes: u64) {
        if self.rate == 0 {
            return;
        }
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// The logic of a round, without actix.
pub struct Driver<S, T> {
    store: Arc<S>,
    transport: Arc<T>,
    rate_limit: u64,
    /// Scheduled rounds leave out points written less than this ago.
    settle: Duration,
    pub stats: Arc<AeStats>,
}

impl<S: RangeStore, T: AeTransport> Driver<S, T> {
    pub fn new(store: Arc<S>, transport: Arc<T>, rate_limit: u64) -> Driver<S, T> {
        Driver {
            store,
            transport,
            rate_limit,
            settle: Duration::ZERO,
            stats: Arc::new(AeStats::default()),
        }
    }

    /// Scheduled rounds ([`Driver::round`]) compare only points written
    /// at least `settle` ago: newer ones may still be on their way to a
    /// replica (a write in flight, a hint), and comparing them would stream
    /// what replication is about to deliver anyway.
    pub fn with_settle(mut self, settle: Duration) -> Driver<S, T> {
        self.settle = settle;
        self
    }

    /// A scheduled round: every point written before `settle` ago, the
    /// horizon rounded down to a multiple of `settle` (in whole seconds),
    /// so that the rounds of several nodes within one `settle` share it and
    /// engines can answer it from per-second sums.
    pub async fn round(&self) -> RoundReport {
        let settle_ms = (self.settle.as_millis() as u64 / 1000).max(1) * 1000;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let at = now_ms.saturating_sub(self.settle.as_millis() as u64);
        let at = at - at % settle_ms;
        self.round_upto(hlc::version_at(UNIX_EPOCH + Duration::from_millis(at)))
            .await
    }

    /// A round over every point, however recent (an operator's repair).
    pub async fn round_all(&self) -> RoundReport {
        self.round_upto(Version::MAX).await
    }

    async fn blocking<R: Send + 'static>(
        &self,
        work: impl FnOnce(&S) -> Result<R, S::Error> + Send + 'static,
    ) -> Result<R, String> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(&store).map_err(|e| e.to_string()))
            .await
            .map_err(|e| format!("storage task failed: {e}"))?
    }

    /// One round with every peer in the plan, over the points with
    /// versions below `horizon`.
    async fn round_upto(&self, horizon: Version) -> RoundReport {
        self.round_with(self.transport.plan(), horizon).await
    }

    /// One round with the peers of `plans` (each over its partitions),
    /// over the points with versions below `horizon`: what streaming uses
    /// to pull a node's new partitions from their current replicas.
    pub async fn round_with(&self, plans: Vec<PeerPlan>, horizon: Version) -> RoundReport {
        let started = Instant::now();
        let mut report = RoundReport::default();
        let mut pace = Pace {
            rate: self.rate_limit,
            started,
            bytes: 0,
        };
        for peer in plans {
            report.peers += 1;
            if let Err(error) = self.exchange(&peer, horizon, &mut report, &mut pace).await {
                report.peers_failed += 1;
                tracing::debug!(peer = %peer.id, %error, "anti-entropy exchange failed");
                report.errors.push(format!("{}: {error}", peer.id));
            }
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        report.finished_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.stats.record(&report);
        if report.partitions_repaired > 0 || !report.errors.is_empty() {
            tracing::info!(
                partitions = report.partitions_repaired,
                rows_in = report.rows_received,
                rows_out = report.rows_sent,
                failed = report.peers_failed,
                ms = report.duration_ms,
                "anti-entropy round repaired replicas"
            );
        }
        report
    }

    async fn exchange(
        &self,
        peer: &PeerPlan,
        horizon: Version,
        report: &mut RoundReport,
        pace: &mut Pace,
    ) -> Result<(), String> {
        self.transport.before_exchange(&peer.id).await?;
        let partitions = peer.partitions.clone();
        let mine: BTreeMap<String, Vec<Leaf>> = self
            .blocking(move |store| {
                let mut out = BTreeMap::new();
                for shard_group in store.shard_groups()? {
                    let leaves = store.leaves(&shard_group, &partitions, horizon)?;
                    if !leaves.is_empty() {
                        out.insert(shard_group, leaves);
                    }
                }
                Ok(out)
            })
            .await?;
        let theirs = match self
            .transport
            .call(
                &peer.id,
                AeRequest::Digests {
                    partitions: peer.partitions.clone(),
                    horizon,
                },
            )
            .await?
        {
            AeResponse::Digests(digests) => digests,
            other => return Err(format!("unexpected answer {other:?}")),
        };
        let their_roots: BTreeMap<String, (u128, u64)> = theirs
            .into_iter()
            .map(|(group, hash, count)| (group, (hash, count)))
            .collect();
        let groups: BTreeSet<&String> = mine.keys().chain(their_roots.keys()).collect();
        for group in groups {
            let my_leaves = mine.get(group).map(Vec::as_slice).unwrap_or(&[]);
            let my_root = (!my_leaves.is_empty()).then(|| root(my_leaves));
            if my_root.is_some() && my_root == their_roots.get(group).copied() {
                report.shard_groups_in_sync += 1;
                continue;
            }
            report.shard_groups_repaired += 1;
            let their_leaves = if their_roots.contains_key(group) {
                match self
                    .transport
                    .call(
                        &peer.id,
                        AeRequest::Leaves {
                            shard_group: group.clone(),
                            partitions: peer.partitions.clone(),
                            horizon,
                        },
                    )
                    .await?
                {
                    AeResponse::Leaves(leaves) => leaves,
                    other => return Err(format!("unexpected answer {other:?}")),
                }
            } else {
                Vec::new()
            };
            self.repair_group(peer, group, my_leaves, &their_leaves, report, pace)
                .await?;
        }
        Ok(())
    }

    /// Stream the partitions whose leaves differ, both ways.
    async fn repair_group(
        &self,
        peer: &PeerPlan,
        group: &str,
        mine: &[Leaf],
        theirs: &[Leaf],
        report: &mut RoundReport,
        pace: &mut Pace,
    ) -> Result<(), String> {
        let mine: BTreeMap<u32, Leaf> = mine.iter().map(|l| (l.partition, *l)).collect();
        let theirs: BTreeMap<u32, Leaf> = theirs.iter().map(|l| (l.partition, *l)).collect();
        let differing: Vec<u32> = mine
            .keys()
            .chain(theirs.keys())
            .copied()
            .collect::<BTreeSet<u32>>()
            .into_iter()
            .filter(|p| mine.get(p) != theirs.get(p))
            .collect();
        report.partitions_repaired += differing.len() as u64;
        for step in differing.chunks(PARTITIONS_PER_STEP) {
            // Ours first, before theirs are applied: what we push is only
            // what we had.
            let push: Vec<u32> = step
                .iter()
                .copied()
                .filter(|p| mine.contains_key(p))
                .collect();
            let group_name = group.to_string();
            let ours: Vec<Row> = self
                .blocking(move |store| {
                    let mut rows = Vec::new();
                    for partition in push {
                        rows.extend(store.scan_partition(&group_name, partition)?);
                    }
                    Ok(rows)
                })
                .await?;
            let mut pull: Vec<u32> = step
                .iter()
                .copied()
                .filter(|p| theirs.contains_key(p))
                .collect();
            while !pull.is_empty() {
                let answer = self
                    .transport
                    .call(
                        &peer.id,
                        AeRequest::Rows {
                            shard_group: group.to_string(),
                            partitions: pull.clone(),
                            max_bytes: PAGE_BYTES as u64,
                        },
                    )
                    .await?;
                let AeResponse::Rows { rows, partitions } = answer else {
                    return Err("unexpected answer to a rows request".into());
                };
                let done = (partitions as usize).clamp(1, pull.len());
                pull.drain(..done);
                let bytes: u64 = rows.iter().map(|row| row.size() as u64).sum();
                report.rows_received += rows.len() as u64;
                report.bytes_received += bytes;
                let group_name = group.to_string();
                self.blocking(move |store| store.apply_rows(&group_name, rows))
                    .await?;
                pace.take(bytes).await;
            }
            // Push in pages too, so no frame grows past the RPC limit.
            let mut page: Vec<Row> = Vec::new();
            let mut page_bytes = 0usize;
            let mut pages: Vec<(Vec<Row>, usize)> = Vec::new();
            for row in ours {
                page_bytes += row.size();
                page.push(row);
                if page_bytes >= PAGE_BYTES {
                    pages.push((std::mem::take(&mut page), page_bytes));
                    page_bytes = 0;
                }
            }
            if !page.is_empty() {
                pages.push((page, page_bytes));
            }
            for (rows, bytes) in pages {
                report.rows_sent += rows.len() as u64;
                report.bytes_sent += bytes as u64;
                match self
                    .transport
                    .call(
                        &peer.id,
                        AeRequest::Apply {
                            shard_group: group.to_string(),
                            rows,
                        },
                    )
                    .await?
                {
                    AeResponse::Applied => {}
                    other => return Err(format!("unexpected answer {other:?}")),
                }
                pace.take(bytes as u64).await;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- the actor

/// Start a round now (or after the one running) and answer with its report.
#[derive(Message)]
#[rtype(result = "Result<RoundReport, String>")]
pub struct RepairNow;

#[derive(Message)]
#[rtype(result = "()")]
struct RoundDone(RoundReport);

/// Schedules rounds of a [`Driver`] on a tokio runtime (the node's RPC
/// runtime: rounds never run on the actix thread).
pub struct AntiEntropy<S, T> {
    driver: Arc<Driver<S, T>>,
    runtime: tokio::runtime::Handle,
    /// `None`: no periodic rounds (only [`RepairNow`]).
    interval: Option<Duration>,
    running: bool,
    /// Waiting for the round that is running.
    current: Vec<oneshot::Sender<RoundReport>>,
    /// Waiting for a round that starts after the running one.
    next: Vec<oneshot::Sender<RoundReport>>,
}

impl<S: RangeStore, T: AeTransport> AntiEntropy<S, T> {
    pub fn new(
        driver: Arc<Driver<S, T>>,
        runtime: tokio::runtime::Handle,
        interval: Option<Duration>,
    ) -> AntiEntropy<S, T> {
        AntiEntropy {
            driver,
            runtime,
            interval,
            running: false,
            current: Vec::new(),
            next: Vec::new(),
        }
    }

    fn start_round(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            return;
        }
        self.running = true;
        // A round someone asked for covers every point; a scheduled one
        // leaves the settling ones to replication.
        let asked = !self.next.is_empty();
        self.current.append(&mut self.next);
        let driver = self.driver.clone();
        let round = self.runtime.spawn(async move {
            if asked {
                driver.round_all().await
            } else {
                driver.round().await
            }
        });
        let done = actix::fut::wrap_future::<_, Self>(round).map(|result, _actor, ctx| {
            let report = result.unwrap_or_else(|error| RoundReport {
                errors: vec![format!("round failed: {error}")],
                ..RoundReport::default()
            });
            ctx.notify(RoundDone(report));
        });
        ctx.spawn(done);
    }
}

impl<S: RangeStore, T: AeTransport> Actor for AntiEntropy<S, T> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(interval) = self.interval {
            ctx.run_interval(interval, |actor, ctx| actor.start_round(ctx));
        }
    }
}

impl<S: RangeStore, T: AeTransport> Handler<RepairNow> for AntiEntropy<S, T> {
    type Result = ResponseFuture<Result<RoundReport, String>>;

    fn handle(&mut self, _: RepairNow, ctx: &mut Context<Self>) -> Self::Result {
        let (sender, receiver) = oneshot::channel();
        self.next.push(sender);
        self.start_round(ctx);
        Box::pin(async move {
            receiver
                .await
                .map_err(|_| "anti-entropy stopped".to_string())
        })
    }
}

impl<S: RangeStore, T: AeTransport> Handler<RoundDone> for AntiEntropy<S, T> {
    type Result = ();

    fn handle(&mut self, RoundDone(report): RoundDone, ctx: &mut Context<Self>) {
        self.running = false;
        for waiter in self.current.drain(..) {
            let _ = waiter.send(report.clone());
        }
        if !self.next.is_empty() {
            self.start_round(ctx);
        }
    }
}

#[cfg(test)]
mod tests;
