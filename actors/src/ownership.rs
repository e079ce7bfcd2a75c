//! Ownership: the hash ring with virtual nodes, and the table from ring
//! ranges to preference lists that the hot path reads.
//!
//! Each member places `vnodes` points on a 64-bit ring at
//! `xxh3(node id, 0, i as u32 big-endian)`; a token belongs to the first point
//! at or clockwise after it, and its preference list is the first `rf`
//! *distinct* nodes from there on. The `hashring` crate places nodes the same
//! way but cannot give N distinct nodes nor list ranges (CRATES.md), so the
//! ring is a sorted vector and every range's preference list is computed once
//! per ring change: a lookup is one binary search, no allocation.
//!
//! Ownership is per fixed partition (Dynamo's strategy 3, Riak, garage): the
//! top [`PARTITION_BITS`] bits of a token name its partition, and every
//! token of a partition has the preference list of the partition's first
//! token. A partition is one contiguous key range in every shard group
//! (the token leads the storage key), so anti-entropy keeps one Merkle
//! leaf per (shard group, partition) that never needs rebuilding when the
//! ring changes, and streaming and cleanup move whole partitions.
//!
//! The ring changes only when a node joins or is removed, never because a
//! node is merely down: that is what hinted handoff is for.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::{Actor, Addr, Context, StreamHandler};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use xxhash_rust::xxh3::xxh3_64;

use crate::membership::MembershipSnapshot;
use crate::store::{PartitionSet, TokenRange};

/// One range of the ring: tokens in `(previous end, end]`, and the nodes
/// that hold them, the primary first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RangeEntry {
    end: u64,
    replicas: Arc<[String]>,
    /// Index of `replicas` among the ring's distinct preference lists.
    set: usize,
}

/// How many top bits of a token name its partition: 4096 partitions, fixed
/// for the life of a cluster (changing it moves every point).
pub const PARTITION_BITS: u32 = 12;

/// The number of partitions.
pub const PARTITIONS: usize = 1 << PARTITION_BITS;

/// The partition of `token`.
pub fn partition_of(token: u64) -> usize {
    (token >> (64 - PARTITION_BITS)) as usize
}

/// The tokens of partition `partition`.
pub fn partition_tokens(partition: usize) -> TokenRange {
    let shift = 64 - PARTITION_BITS;
    let start = (partition as u64) << shift;
    start..=start | ((1u64 << shift) - 1)
}

/// An immutable ring: built once per membership change and shared as an
/// `Arc<Ring>` snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    members: Vec<String>,
    vnodes: u32,
    rf: usize,
    /// The vnode ranges, from which each partition takes the preference
    /// list of its first token.
    ranges: Vec<RangeEntry>,
    /// The distinct preference lists.
    sets: Vec<Arc<[String]>>,
    /// Per partition, its preference list as an index into `sets`.
    partitions: Vec<usize>,
}

/// Where a node's `index`-th virtual node sits on the ring.
pub fn vnode_position(node: &str, index: u32) -> u64 {
    let mut bytes = Vec::with_capacity(node.len() + 5);
    bytes.extend_from_slice(node.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&index.to_be_bytes());
    xxh3_64(&bytes)
}

impl Ring {
    /// A ring of `members` (duplicates ignored) with `vnodes` virtual nodes
    /// each and `rf` replicas per token. With fewer members than `rf`, every
    /// member holds everything.
    pub fn new<I, S>(members: I, vnodes: u32, rf: usize) -> Ring
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let members: BTreeMap<String, String> = members
            .into_iter()
            .map(|id| {
                let id = id.into();
                (id.clone(), id)
            })
            .collect();
        Ring::with_seeds(&members, vnodes, rf)
    }

    /// A ring of `members` (id to the name its vnode positions are drawn
    /// from: its own, or that of the node it replaced).
    pub fn with_seeds(members: &BTreeMap<String, String>, vnodes: u32, rf: usize) -> Ring {
        let seeds: Vec<&String> = members.values().collect();
        let members: Vec<String> = members.keys().cloned().collect();
        let vnodes = vnodes.max(1);
        let rf = rf.max(1);
        let mut points: Vec<(u64, usize)> = seeds
            .iter()
            .enumerate()
            .flat_map(|(member, seed)| (0..vnodes).map(move |i| (vnode_position(seed, i), member)))
            .collect();
        // Equal positions (astronomically unlikely) resolve by member order.
        points.sort_unstable();
        points.dedup_by_key(|(position, _)| *position);
        let wanted = rf.min(members.len());
        let mut ranges = Vec::with_capacity(points.len());
        let mut sets: Vec<Arc<[String]>> = Vec::new();
        let mut set_of: std::collections::HashMap<Vec<usize>, usize> =
            std::collections::HashMap::new();
        for start in 0..points.len() {
            let mut replicas: Vec<usize> = Vec::with_capacity(wanted);
            for step in 0..points.len() {
                let (_, member) = points[(start + step) % points.len()];
                if !replicas.contains(&member) {
                    replicas.push(member);
                    if replicas.len() == wanted {
                        break;
                    }
                }
            }
            let set = *set_of.entry(replicas.clone()).or_insert_with(|| {
                let names: Vec<String> = replicas.iter().map(|&m| members[m].clone()).collect();
                sets.push(names.into());
                sets.len() - 1
            });
            ranges.push(RangeEntry {
                end: points[start].0,
                replicas: sets[set].clone(),
                set,
            });
        }
        let mut ring = Ring {
            members,
            vnodes,
            rf,
            ranges,
            sets,
            partitions: Vec::new(),
        };
        if !ring.ranges.is_empty() {
            ring.partitions = (0..PARTITIONS)
                .map(|p| {
                    ring.vnode_entry(*partition_tokens(p).start())
                        .map_or(0, |e| e.set)
                })
                .collect();
        }
        ring
    }

    /// The members, sorted.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// The configured replication factor (a ring of fewer members holds
    /// fewer copies).
    pub fn rf(&self) -> usize {
        self.rf
    }

    /// The nodes that hold `token`, the primary first; empty only for a ring
    /// without members.
    pub fn replicas(&self, token: u64) -> &[String] {
        self.set_of(token)
            .and_then(|set| self.sets.get(set))
            .map(|set| &set[..])
            .unwrap_or(&[])
    }

    /// The preference list of `token` as an index into [`Ring::sets`]:
    /// points with the same index go to the same nodes.
    pub fn set_of(&self, token: u64) -> Option<usize> {
        self.partitions.get(partition_of(token)).copied()
    }

    /// The nodes that hold partition `partition`, the primary first.
    pub fn partition_replicas(&self, partition: usize) -> &[String] {
        self.partitions
            .get(partition)
            .and_then(|set| self.sets.get(*set))
            .map(|set| &set[..])
            .unwrap_or(&[])
    }

    /// The distinct preference lists of the ring.
    pub fn sets(&self) -> &[Arc<[String]>] {
        &self.sets
    }

    fn vnode_entry(&self, token: u64) -> Option<&RangeEntry> {
        let index = self.ranges.partition_point(|range| range.end < token);
        self.ranges.get(index).or_else(|| self.ranges.first())
    }

    /// Every range of the ring (in token order: runs of partitions with the
    /// same preference list) with its replicas.
    pub fn ranges(&self) -> Vec<(TokenRange, Arc<[String]>)> {
        let mut out: Vec<(TokenRange, Arc<[String]>)> = Vec::new();
        let mut previous_set = usize::MAX;
        for (partition, set) in self.partitions.iter().enumerate() {
            let tokens = partition_tokens(partition);
            match out.last_mut() {
                Some((range, _)) if *set == previous_set => {
                    *range = *range.start()..=*tokens.end();
                }
                _ => out.push((tokens, self.sets[*set].clone())),
            }
            previous_set = *set;
        }
        out
    }

    /// The ranges `node` holds a copy of, merged where adjacent.
    pub fn ranges_of(&self, node: &str) -> Vec<TokenRange> {
        let mut out: Vec<TokenRange> = Vec::new();
        for (range, replicas) in self.ranges() {
            if !replicas.iter().any(|r| r == node) {
                continue;
            }
            match out.last_mut() {
                Some(previous) if previous.end().checked_add(1) == Some(*range.start()) => {
                    *previous = *previous.start()..=*range.end();
                }
                _ => out.push(range),
            }
        }
        out
    }
}

// ---------------------------------------------------------------- placement

/// Gossip key: the digest of the plan (current and future rings) by which
/// this node routes writes, published once no write routed by an older
/// plan is still in flight on it.
pub const KEY_PLAN: &str = "plan";
/// Gossip key: the digest of the plan whose partitions this node gained and
/// now holds (streamed from the current replicas).
pub const KEY_SYNCED: &str = "synced";
/// Gossip key of a node started to replace another: the replaced node's id.
pub const KEY_REPLACES: &str = "replaces";
/// Gossip key of a new node started with `cluster.auto_join = false`: it
/// takes no ranges until a member announces `admit:<id>`.
pub const KEY_AWAITING: &str = "awaiting";
/// Gossip key prefix: `admit:<id>` lets a waiting node join.
pub const ADMIT_PREFIX: &str = "admit:";
/// Gossip key prefix: `removed:<id>` is `removing` (its ranges are being
/// copied to their new owners) or `removed` (done).
pub const REMOVED_PREFIX: &str = "removed:";

/// Where the points of one partition are written while ownership moves:
/// every `target`, and the write's level is met in **each** group (the
/// current and the future preference list; Garage's write sets). When
/// nothing moves there is one group, the preference list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementSet {
    pub targets: Arc<[String]>,
    pub groups: Vec<Arc<[String]>>,
}

/// The write side of a plan: per partition, its [`PlacementSet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    partitions: Vec<usize>,
    sets: Vec<PlacementSet>,
    members: Vec<String>,
}

impl Placement {
    /// Writes go to the union of `current` and `future`, and must meet
    /// their level in both.
    pub fn new(current: &Ring, future: &Ring) -> Placement {
        let mut keyed: HashMap<(Option<usize>, Option<usize>), usize> = HashMap::new();
        let mut sets: Vec<PlacementSet> = Vec::new();
        let mut partitions = Vec::with_capacity(PARTITIONS);
        for p in 0..PARTITIONS {
            let key = (
                current.partitions.get(p).copied(),
                future.partitions.get(p).copied(),
            );
            let next = sets.len();
            let index = *keyed.entry(key).or_insert_with(|| {
                let c = key.0.and_then(|i| current.sets.get(i)).cloned();
                let f = key.1.and_then(|i| future.sets.get(i)).cloned();
                let mut targets: Vec<String> = c.iter().flat_map(|s| s.iter().cloned()).collect();
                for id in f.iter().flat_map(|s| s.iter()) {
                    if !targets.contains(id) {
                        targets.push(id.clone());
                    }
                }
                let mut groups: Vec<Arc<[String]>> = Vec::new();
                for group in [c, f].into_iter().flatten() {
                    let same = |g: &Arc<[String]>| {
                        let mut a: Vec<&String> = g.iter().collect();
                        let mut b: Vec<&String> = group.iter().collect();
                        a.sort();
                        b.sort();
                        a == b
                    };
                    if !group.is_empty() && !groups.iter().any(same) {
                        groups.push(group);
                    }
                }
                sets.push(PlacementSet {
                    targets: targets.into(),
                    groups,
                });
                next
            });
            partitions.push(index);
        }
        let members: BTreeSet<String> = current
            .members()
            .iter()
            .chain(future.members())
            .cloned()
            .collect();
        Placement {
            partitions,
            sets,
            members: members.into_iter().collect(),
        }
    }

    /// The placement of `token`, as an index into [`Placement::sets`].
    pub fn set_of(&self, token: u64) -> Option<usize> {
        self.partitions.get(partition_of(token)).copied()
    }

    pub fn sets(&self) -> &[PlacementSet] {
        &self.sets
    }

    /// Every node a write may go to, sorted.
    pub fn members(&self) -> &[String] {
        &self.members
    }
}

/// The rings of a plan, computed from the members' states and keys alone,
/// so that every node that has seen the same gossip computes the same.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Members that serve reads: `normal` and `leaving` ones, and those
    /// being removed until their ranges have been copied.
    pub current: Ring,
    /// Members that will hold data once the moves are done: `normal` and
    /// `joining` ones, less those being removed.
    pub future: Ring,
    /// Digest of both.
    pub plan: u64,
    pub removing: BTreeSet<String>,
    pub removed: BTreeSet<String>,
}

/// Compute the layout of `members`.
pub fn layout(members: &BTreeMap<String, MemberView>, vnodes: u32, rf: usize) -> Layout {
    use crate::membership::NodeState;
    let mut removal: BTreeMap<String, bool> = BTreeMap::new();
    for (id, member) in members {
        for (key, value) in &member.keys {
            if let Some(target) = key.strip_prefix(REMOVED_PREFIX) {
                *removal.entry(target.to_string()).or_default() |= value == "removed";
            }
        }
        if let Some(target) = member.keys.get(KEY_REPLACES) {
            if member.state != NodeState::Left && target != id {
                removal.entry(target.clone()).or_default();
            }
        }
    }
    let admitted: BTreeSet<&str> = members
        .values()
        .flat_map(|m| m.keys.keys())
        .filter_map(|key| key.strip_prefix(ADMIT_PREFIX))
        .collect();
    let waiting = |id: &String, member: &MemberView| {
        member.state == NodeState::Joining
            && member.keys.contains_key(KEY_AWAITING)
            && !admitted.contains(id.as_str())
    };
    let removed: BTreeSet<String> = removal
        .iter()
        .filter(|(_, done)| **done)
        .map(|(id, _)| id.clone())
        .collect();
    let removing: BTreeSet<String> = removal
        .iter()
        .filter(|(_, done)| !**done)
        .map(|(id, _)| id.clone())
        .collect();
    let seed = |id: &String, member: &MemberView| {
        member
            .keys
            .get(KEY_REPLACES)
            .cloned()
            .unwrap_or_else(|| id.clone())
    };
    let current: BTreeMap<String, String> = members
        .iter()
        .filter(|(id, m)| {
            matches!(m.state, NodeState::Normal | NodeState::Leaving) && !removed.contains(*id)
        })
        .map(|(id, m)| (id.clone(), seed(id, m)))
        .collect();
    let future: BTreeMap<String, String> = members
        .iter()
        .filter(|(id, m)| {
            matches!(m.state, NodeState::Normal | NodeState::Joining)
                && !removed.contains(*id)
                && !removing.contains(*id)
                && !waiting(id, m)
        })
        .map(|(id, m)| (id.clone(), seed(id, m)))
        .collect();
    let plan = xxh3_64(format!("{current:?}|{future:?}|{rf}|{vnodes}").as_bytes());
    Layout {
        current: Ring::with_seeds(&current, vnodes, rf),
        future: Ring::with_seeds(&future, vnodes, rf),
        plan,
        removing,
        removed,
    }
}

// ---------------------------------------------------------------- the actor

fn normal() -> crate::membership::NodeState {
    crate::membership::NodeState::Normal
}

/// A member as the hot path sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub rpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    #[serde(skip)]
    pub live: bool,
    /// Its last known state (remembered across restarts).
    #[serde(default = "normal")]
    pub state: crate::membership::NodeState,
    /// Its last known gossip keys (plan digests, removals it announced).
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
}

/// Members (by id) and the rings over them: the snapshot the hot path reads.
#[derive(Debug)]
pub struct Topology {
    /// The current ring: reads, read repair and anti-entropy use it.
    pub ring: Arc<Ring>,
    /// The ring once the moves under way are done (the current one when
    /// nothing moves).
    pub future: Arc<Ring>,
    /// Where writes go: both rings.
    pub placement: Arc<Placement>,
    /// Digest of the plan (both rings).
    pub plan: u64,
    pub removing: BTreeSet<String>,
    pub removed: BTreeSet<String>,
    pub members: BTreeMap<String, MemberView>,
    /// Whether this node knows its peers: it had none to wait for (no
    /// seeds, no remembered members), or it has exchanged gossip with at
    /// least one of them. Until then its ring may be a ring of one, and it
    /// must not acknowledge writes.
    pub ready: bool,
    /// Writes routed by this topology and not yet answered: a node
    /// announces a new plan only once none routed by an older one is left.
    pub inflight: std::sync::atomic::AtomicUsize,
}

impl Topology {
    /// Whether ownership is moving (the rings differ).
    pub fn moving(&self) -> bool {
        self.ring != self.future
    }

    /// The partitions `node` holds in the future ring and not in the
    /// current one: what it must stream in before the move is done.
    pub fn gains(&self, node: &str) -> PartitionSet {
        let mut gains = PartitionSet::default();
        for partition in 0..PARTITIONS {
            let future = self.future.partition_replicas(partition);
            if future.iter().any(|r| r == node)
                && !self
                    .ring
                    .partition_replicas(partition)
                    .iter()
                    .any(|r| r == node)
            {
                gains.insert(partition);
            }
        }
        gains
    }

    /// The nodes that gain partitions in this plan.
    pub fn gainers(&self) -> Vec<String> {
        self.future
            .members()
            .iter()
            .filter(|id| !self.gains(id).is_empty())
            .cloned()
            .collect()
    }

    /// A member's gossiped key.
    pub fn key(&self, id: &str, key: &str) -> Option<&str> {
        self.members
            .get(id)
            .and_then(|m| m.keys.get(key))
            .map(String::as_str)
    }
}

/// What the ownership actor needs to know of its node.
#[derive(Debug, Clone)]
pub struct OwnershipConfig {
    pub node_id: String,
    pub rpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub rf: usize,
    pub vnodes: u32,
    /// Where every member ever seen is remembered, so that a restarted node
    /// knows the ring before gossip has caught up.
    pub members_file: PathBuf,
    /// Whether the configuration names seeds other than this node: then the
    /// node is not ready before gossip has shown it a peer.
    pub has_seeds: bool,
    /// This node's state at start.
    pub state: crate::membership::NodeState,
}

/// The ownership actor: follows membership snapshots, keeps every member
/// ever seen (a node that is merely down stays in the ring: its replicas
/// keep their place and writes count it as a failed replica), rebuilds the
/// rings when states or removals change, and publishes a [`Topology`]
/// snapshot on every change.
pub struct Ownership {
    config: OwnershipConfig,
    known: BTreeMap<String, MemberView>,
    layout: Layout,
    current: Arc<Ring>,
    future: Arc<Ring>,
    placement: Arc<Placement>,
    snapshots: Option<watch::Receiver<Arc<MembershipSnapshot>>>,
    sender: watch::Sender<Arc<Topology>>,
    /// Latched: once a peer has been seen live, the node stays ready.
    ready: bool,
}

/// The members remembered in `path` (empty if none or unreadable).
pub fn load_members(path: &Path) -> BTreeMap<String, MemberView> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            tracing::warn!(path = %path.display(), %error, "ignoring an unreadable members file");
            BTreeMap::new()
        }),
        Err(_) => BTreeMap::new(),
    }
}

fn save_members(path: &Path, members: &BTreeMap<String, MemberView>) {
    let temporary = path.with_extension("tmp");
    let written = serde_json::to_vec_pretty(members)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&temporary, bytes))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "could not save the members file");
    }
}

impl Ownership {
    /// Start the actor (inside an actix system) on `snapshots`; the
    /// receiver gives the latest topology at any time, without a mailbox
    /// round trip.
    pub fn start(
        config: OwnershipConfig,
        snapshots: watch::Receiver<Arc<MembershipSnapshot>>,
    ) -> (Addr<Ownership>, watch::Receiver<Arc<Topology>>) {
        let mut known = load_members(&config.members_file);
        for member in known.values_mut() {
            member.live = false;
        }
        let keys = known
            .get(&config.node_id)
            .map(|m| m.keys.clone())
            .unwrap_or_default();
        known.insert(
            config.node_id.clone(),
            MemberView {
                rpc_addr: config.rpc_addr,
                http_addr: config.http_addr,
                live: true,
                state: config.state,
                keys,
            },
        );
        save_members(&config.members_file, &known);
        // A node with seeds or remembered peers is part of a cluster it has
        // not met yet: it waits for gossip rather than act as a ring of one.
        let ready = !config.has_seeds && known.len() == 1;
        let layout = layout(&known, config.vnodes, config.rf);
        let current = Arc::new(layout.current.clone());
        let future = Arc::new(layout.future.clone());
        let placement = Arc::new(Placement::new(&current, &future));
        let (sender, receiver) = watch::channel(Arc::new(Topology {
            ring: current.clone(),
            future: future.clone(),
            placement: placement.clone(),
            plan: layout.plan,
            removing: layout.removing.clone(),
            removed: layout.removed.clone(),
            members: known.clone(),
            ready,
            inflight: Default::default(),
        }));
        let actor = Ownership {
            config,
            known,
            layout,
            current,
            future,
            placement,
            snapshots: Some(snapshots),
            sender,
            ready,
        };
        (actor.start(), receiver)
    }

    fn apply(&mut self, snapshot: &MembershipSnapshot) {
        let mut changed = false;
        for member in &snapshot.members {
            let previous = self.known.get(&member.id);
            // A member known from the file, not yet gossiped with its keys,
            // keeps the remembered ones.
            let view = MemberView {
                rpc_addr: member.rpc_addr,
                http_addr: member.http_addr,
                live: member.live || member.id == self.config.node_id,
                state: member.state,
                keys: member.keys.clone(),
            };
            changed |= previous.is_none_or(|p| {
                p.rpc_addr != view.rpc_addr
                    || p.http_addr != view.http_addr
                    || p.state != view.state
                    || p.keys != view.keys
            });
            self.known.insert(member.id.clone(), view);
        }
        // Members known only from the file are not live until gossip says so.
        for (id, member) in self.known.iter_mut() {
            if *id != self.config.node_id && snapshot.get(id).is_none() {
                member.live = false;
            }
        }
        if changed {
            save_members(&self.config.members_file, &self.known);
            let layout = layout(&self.known, self.config.vnodes, self.config.rf);
            if layout.plan != self.layout.plan
                || layout.removed != self.layout.removed
                || layout.removing != self.layout.removing
            {
                self.current = Arc::new(layout.current.clone());
                self.future = Arc::new(layout.future.clone());
                self.placement = Arc::new(Placement::new(&self.current, &self.future));
                tracing::info!(
                    current = ?self.current.members(),
                    future = ?self.future.members(),
                    removing = ?layout.removing,
                    plan = %format!("{:016x}", layout.plan),
                    "ring changed"
                );
                self.layout = layout;
            }
        }
        if !self.ready
            && snapshot
                .members
                .iter()
                .any(|member| member.live && member.id != self.config.node_id)
        {
            self.ready = true;
            tracing::info!(members = ?self.known.keys().collect::<Vec<_>>(), "met a peer: ready");
        }
        let topology = Topology {
            ring: self.current.clone(),
            future: self.future.clone(),
            placement: self.placement.clone(),
            plan: self.layout.plan,
            removing: self.layout.removing.clone(),
            removed: self.layout.removed.clone(),
            members: self.known.clone(),
            ready: self.ready,
            inflight: Default::default(),
        };
        let _ = self.sender.send(Arc::new(topology));
    }
}

impl Actor for Ownership {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(snapshots) = self.snapshots.take() {
            <Self as StreamHandler<Arc<MembershipSnapshot>>>::add_stream(
                WatchStream::new(snapshots),
                ctx,
            );
        }
    }
}

impl StreamHandler<Arc<MembershipSnapshot>> for Ownership {
    fn handle(&mut self, snapshot: Arc<MembershipSnapshot>, _ctx: &mut Context<Self>) {
        self.apply(&snapshot);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn nodes(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn preference_lists_hold_rf_distinct_nodes() {
        let ring = Ring::new(nodes(5), 64, 3);
        for token in (0..10_000u64).map(|i| xxh3_64(&i.to_be_bytes())) {
            let replicas = ring.replicas(token);
            assert_eq!(replicas.len(), 3);
            let distinct: BTreeSet<&String> = replicas.iter().collect();
            assert_eq!(distinct.len(), 3, "{replicas:?}");
        }
    }

    #[test]
    fn fewer_members_than_rf_hold_everything() {
        let ring = Ring::new(nodes(2), 16, 3);
        assert_eq!(ring.replicas(42).len(), 2);
        let lone = Ring::new(nodes(1), 16, 3);
        assert_eq!(lone.replicas(u64::MAX), ["node-1".to_string()]);
        assert!(Ring::new(Vec::<String>::new(), 16, 3)
            .replicas(1)
            .is_empty());
    }

    #[test]
    fn load_is_balanced_with_virtual_nodes() {
        let ring = Ring::new(nodes(5), 128, 3);
        let mut primaries: HashMap<&str, u64> = HashMap::new();
        let samples = 50_000u64;
        for i in 0..samples {
            let token = xxh3_64(&i.to_le_bytes());
            *primaries
                .entry(ring.replicas(token)[0].as_str())
                .or_default() += 1;
        }
        for (node, count) in primaries {
            let share = count as f64 / samples as f64;
            assert!((0.12..0.28).contains(&share), "{node}: {share}");
        }
    }

    #[test]
    fn a_join_moves_only_what_the_new_node_takes() {
        let before = Ring::new(nodes(4), 64, 3);
        let after = Ring::new(nodes(5), 64, 3);
        for i in 0..5_000u64 {
            let token = xxh3_64(&i.to_be_bytes());
            let old: BTreeSet<&String> = before.replicas(token).iter().collect();
            let new: BTreeSet<&String> = after.replicas(token).iter().collect();
            // Whatever changed, changed in favour of the new node.
            for gone in old.difference(&new) {
                assert!(
                    new.contains(&"node-5".to_string()),
                    "{gone} left without node-5"
                );
            }
        }
    }

    #[test]
    fn ranges_cover_the_ring_once_and_agree_with_lookups() {
        let ring = Ring::new(nodes(3), 8, 2);
        let ranges = ring.ranges();
        assert_eq!(*ranges[0].0.start(), 0);
        assert_eq!(ranges.last().map(|(r, _)| *r.end()), Some(u64::MAX));
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].0.end() + 1, *pair[1].0.start());
        }
        for (range, replicas) in &ranges {
            let set = ring.set_of(*range.start()).expect("set");
            assert_eq!(ring.sets()[set], *replicas);
            assert_eq!(ring.replicas(*range.start()), &replicas[..]);
            assert_eq!(ring.replicas(*range.end()), &replicas[..]);
        }
        let held: u128 = ring
            .ranges_of("node-1")
            .iter()
            .map(|r| u128::from(r.end() - r.start()) + 1)
            .sum();
        // RF 2 of 3: node-1 holds about two thirds of the ring.
        let share = held as f64 / 2f64.powi(64);
        assert!((0.4..0.95).contains(&share), "{share}");
    }

    #[test]
    fn every_token_of_a_partition_has_the_partition_preference_list() {
        let ring = Ring::new(nodes(5), 128, 3);
        for partition in [0, 1, 17, PARTITIONS / 2, PARTITIONS - 1] {
            let tokens = partition_tokens(partition);
            let expected = ring.partition_replicas(partition).to_vec();
            assert_eq!(expected.len(), 3);
            for token in [*tokens.start(), *tokens.start() + 12345, *tokens.end()] {
                assert_eq!(partition_of(token), partition);
                assert_eq!(ring.replicas(token), &expected[..]);
            }
        }
        for (range, _) in ring.ranges() {
            assert_eq!(*range.start() & ((1 << (64 - PARTITION_BITS)) - 1), 0);
        }
    }

    fn member(id: &str, port: u16, live: bool) -> crate::membership::Member {
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        crate::membership::Member {
            id: id.into(),
            generation: 1,
            rpc_addr: address,
            http_addr: address,
            gossip_addr: address,
            state: crate::membership::NodeState::Normal,
            live,
            keys: BTreeMap::new(),
        }
    }

    async fn next(receiver: &mut watch::Receiver<Arc<Topology>>) -> Arc<Topology> {
        tokio::time::timeout(std::time::Duration::from_secs(5), receiver.changed())
            .await
            .expect("a topology in time")
            .expect("open");
        receiver.borrow_and_update().clone()
    }

    #[actix::test]
    async fn the_actor_keeps_down_members_in_the_ring_and_remembers_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = OwnershipConfig {
            node_id: "a".into(),
            rpc_addr: "127.0.0.1:1".parse().expect("address"),
            http_addr: "127.0.0.1:1".parse().expect("address"),
            rf: 3,
            vnodes: 16,
            members_file: dir.path().join("members.json"),
            has_seeds: true,
            state: crate::membership::NodeState::Normal,
        };
        let (membership, snapshots) = watch::channel(Arc::new(MembershipSnapshot {
            members: vec![
                member("a", 1, true),
                member("b", 2, true),
                member("c", 3, true),
            ],
        }));
        let (_actor, mut topology) = Ownership::start(config.clone(), snapshots);
        let joined = next(&mut topology).await;
        assert_eq!(joined.ring.members(), ["a", "b", "c"]);
        assert!(joined.members.values().all(|m| m.live));
        assert!(joined.ready, "a node that has seen its peers live is ready");
        // c goes down: still in the ring, not live.
        membership
            .send(Arc::new(MembershipSnapshot {
                members: vec![
                    member("a", 1, true),
                    member("b", 2, true),
                    member("c", 3, false),
                ],
            }))
            .expect("send");
        let down = next(&mut topology).await;
        assert_eq!(down.ring.members(), ["a", "b", "c"]);
        assert!(!down.members["c"].live);
        // A restart knows b and c from the file before gossip says anything.
        let (_quiet, nothing) = watch::channel(Arc::new(MembershipSnapshot::default()));
        let (_again, restarted) = Ownership::start(config, nothing);
        let known = restarted.borrow().clone();
        assert_eq!(known.ring.members(), ["a", "b", "c"]);
        assert_eq!(known.members["c"].rpc_addr.port(), 3);
        assert!(!known.members["b"].live && known.members["a"].live);
        assert!(
            !known.ready,
            "a restart with remembered peers waits for gossip"
        );
    }

    #[actix::test]
    async fn a_node_without_seeds_or_peers_is_ready_at_once_and_one_with_seeds_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = OwnershipConfig {
            node_id: "a".into(),
            rpc_addr: "127.0.0.1:1".parse().expect("address"),
            http_addr: "127.0.0.1:1".parse().expect("address"),
            rf: 3,
            vnodes: 16,
            members_file: dir.path().join("members.json"),
            has_seeds: false,
            state: crate::membership::NodeState::Normal,
        };
        let (_quiet, nothing) = watch::channel(Arc::new(MembershipSnapshot::default()));
        let (_single, single) = Ownership::start(config.clone(), nothing);
        assert!(single.borrow().ready);
        let seeded = OwnershipConfig {
            members_file: dir.path().join("other.json"),
            has_seeds: true,
            ..config
        };
        let (membership, snapshots) = watch::channel(Arc::new(MembershipSnapshot {
            members: vec![member("a", 1, true)],
        }));
        let (_seeded, mut topology) = Ownership::start(seeded, snapshots);
        assert!(!topology.borrow().ready);
        let alone = next(&mut topology).await;
        assert!(!alone.ready, "seeing only itself is not meeting a peer");
        membership
            .send(Arc::new(MembershipSnapshot {
                members: vec![member("a", 1, true), member("b", 2, true)],
            }))
            .expect("send");
        assert!(next(&mut topology).await.ready);
        membership
            .send(Arc::new(MembershipSnapshot {
                members: vec![member("a", 1, true), member("b", 2, false)],
            }))
            .expect("send");
        assert!(next(&mut topology).await.ready, "readiness is latched");
    }

    fn view(state: crate::membership::NodeState, keys: &[(&str, &str)]) -> MemberView {
        MemberView {
            rpc_addr: "127.0.0.1:1".parse().expect("address"),
            http_addr: "127.0.0.1:1".parse().expect("address"),
            live: true,
            state,
            keys: keys
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_joining_node_is_written_to_but_not_read_and_gains_only_its_share() {
        use crate::membership::NodeState::{Joining, Normal};
        let mut members: BTreeMap<String, MemberView> = (1..=3)
            .map(|i| (format!("node-{i}"), view(Normal, &[])))
            .collect();
        let stable = layout(&members, 64, 2);
        assert_eq!(stable.current, stable.future);
        members.insert("node-4".into(), view(Joining, &[]));
        let moving = layout(&members, 64, 2);
        assert_ne!(moving.plan, stable.plan);
        assert_eq!(moving.current.members(), ["node-1", "node-2", "node-3"]);
        assert_eq!(moving.future, Ring::new(nodes(4), 64, 2));
        let placement = Placement::new(&moving.current, &moving.future);
        let mut moved = 0;
        for partition in 0..PARTITIONS {
            let token = *partition_tokens(partition).start();
            let set = &placement.sets()[placement.set_of(token).expect("set")];
            let current = moving.current.partition_replicas(partition);
            let future = moving.future.partition_replicas(partition);
            // Every current and future replica is written to.
            for id in current.iter().chain(future) {
                assert!(set.targets.contains(id));
            }
            if future.iter().any(|r| r == "node-4") {
                moved += 1;
                assert_eq!(set.groups.len(), 2, "both lists must meet the level");
                // Only node-4 gains: the others only lose.
                for id in future.iter().filter(|id| *id != "node-4") {
                    assert!(current.contains(id));
                }
            } else {
                assert_eq!(set.groups.len(), 1);
                assert_eq!(current, future);
            }
        }
        // About RF / N of the partitions move (2/4 here).
        assert!(
            moved > PARTITIONS / 3 && moved < PARTITIONS * 2 / 3,
            "{moved}"
        );
        members.insert("node-4".into(), view(Normal, &[]));
        assert_eq!(layout(&members, 64, 2).current, Ring::new(nodes(4), 64, 2));
    }

    #[test]
    fn removal_and_replacement_come_from_keys_any_member_gossips() {
        use crate::membership::NodeState::{Joining, Leaving, Normal};
        let mut members: BTreeMap<String, MemberView> = (1..=4)
            .map(|i| (format!("node-{i}"), view(Normal, &[])))
            .collect();
        members.insert(
            "node-1".into(),
            view(Normal, &[("removed:node-4", "removing")]),
        );
        let removing = layout(&members, 64, 2);
        assert!(removing.removing.contains("node-4"));
        assert_eq!(
            removing.current.members().len(),
            4,
            "still read until copied"
        );
        assert_eq!(removing.future.members(), ["node-1", "node-2", "node-3"]);
        // Another node saying "removed" wins over "removing".
        members.insert(
            "node-2".into(),
            view(Normal, &[("removed:node-4", "removed")]),
        );
        let removed = layout(&members, 64, 2);
        assert!(removed.removed.contains("node-4") && removed.removing.is_empty());
        assert_eq!(removed.current, removed.future);
        // A replacement takes the dead node's positions: the same partitions.
        let mut members: BTreeMap<String, MemberView> = (1..=3)
            .map(|i| (format!("node-{i}"), view(Normal, &[])))
            .collect();
        members.insert("node-5".into(), view(Joining, &[("replaces", "node-3")]));
        let replacing = layout(&members, 64, 2);
        assert!(replacing.removing.contains("node-3"));
        for partition in 0..PARTITIONS {
            let before: Vec<String> = replacing
                .current
                .partition_replicas(partition)
                .iter()
                .map(|r| {
                    if r == "node-3" {
                        "node-5".to_string()
                    } else {
                        r.clone()
                    }
                })
                .collect();
            let mut after = replacing.future.partition_replicas(partition).to_vec();
            let mut before_sorted = before.clone();
            before_sorted.sort();
            after.sort();
            assert_eq!(before_sorted, after, "partition {partition}");
        }
        // A leaving node is read, not written to in the future ring.
        members.insert("node-2".into(), view(Leaving, &[]));
        let leaving = layout(&members, 64, 2);
        assert!(leaving.current.members().contains(&"node-2".to_string()));
        assert!(!leaving.future.members().contains(&"node-2".to_string()));
    }

    proptest! {
        /// Every node computes the same ring from the same members, in any order.
        #[test]
        fn the_ring_depends_only_on_the_member_set(mut members in proptest::collection::vec("[a-z]{1,8}", 1..6), token in any::<u64>()) {
            let a = Ring::new(members.clone(), 16, 3);
            members.reverse();
            let b = Ring::new(members, 16, 3);
            prop_assert_eq!(a.replicas(token), b.replicas(token));
        }
    }
}
