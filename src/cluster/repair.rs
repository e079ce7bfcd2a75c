//! Replicas that converge: the node's side of anti-entropy (the transport
//! the `anti_entropy` actor of the actors crate drives, over this node's RPC
//! and ring) and read repair.
//!
//! Read repair: a quorum read already holds every asked replica's points
//! with their versions; a replica that lacks a winning (time, version) gets
//! the winners written back, as rows with their original versions, in the
//! background on the RPC runtime: the query does not wait for it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dynaflux_actors::anti_entropy::{AeRequest, AeResponse, AeTransport, PeerPlan};
use dynaflux_actors::ownership::PARTITIONS;
use dynaflux_actors::rpc::Client;
use dynaflux_actors::PartitionSet;
use tokio::sync::watch;

use super::{Request, Response, Topology};
use crate::storage::{SeriesInfo, Storage, Value};

/// Anti-entropy over this node's RPC client and topology snapshot.
pub struct RpcTransport {
    pub node_id: String,
    pub client: Arc<Client<Request, Response>>,
    pub topology: watch::Receiver<Arc<Topology>>,
    pub storage: Storage,
    pub tombstones: Arc<super::tombstones::TombstoneBook>,
}

impl RpcTransport {
    fn address(&self, peer: &str) -> Result<std::net::SocketAddr, String> {
        self.topology
            .borrow()
            .members
            .get(peer)
            .map(|member| member.rpc_addr)
            .ok_or_else(|| format!("unknown member {peer}"))
    }
}

#[async_trait::async_trait]
impl AeTransport for RpcTransport {
    fn plan(&self) -> Vec<PeerPlan> {
        let topology = self.topology.borrow().clone();
        if !topology.ready {
            return Vec::new();
        }
        let mut shared: BTreeMap<&String, PartitionSet> = BTreeMap::new();
        for partition in 0..PARTITIONS {
            let replicas = topology.ring.partition_replicas(partition);
            if !replicas.contains(&self.node_id) {
                continue;
            }
            for peer in replicas.iter().filter(|id| **id != self.node_id) {
                if topology.members.get(peer).is_some_and(|member| member.live) {
                    shared.entry(peer).or_default().insert(partition);
                }
            }
        }
        shared
            .into_iter()
            .map(|(id, partitions)| PeerPlan {
                id: id.clone(),
                partitions,
            })
            .collect()
    }

    async fn call(&self, peer: &str, request: AeRequest) -> Result<AeResponse, String> {
        let address = self.address(peer)?;
        match self
            .client
            .call(address, Request::AntiEntropy(request))
            .await
            .map_err(|error| error.to_string())?
        {
            Response::AntiEntropy(answer) => Ok(answer),
            _ => Err("unexpected answer to an anti-entropy request".into()),
        }
    }

    /// Swap tombstones with the peer and apply the ones it had and we did
    /// not (it applies ours on its side).
    async fn before_exchange(&self, peer: &str) -> Result<(), String> {
        let address = self.address(peer)?;
        let mine = self.tombstones.list();
        let theirs = match self
            .client
            .call(address, Request::Tombstones(mine))
            .await
            .map_err(|error| error.to_string())?
        {
            Response::Tombstones(theirs) => theirs,
            _ => return Err("unexpected answer to a tombstone exchange".into()),
        };
        let (storage, book) = (self.storage.clone(), self.tombstones.clone());
        tokio::task::spawn_blocking(move || book.apply_new(&storage, theirs))
            .await
            .map_err(|error| format!("applying tombstones failed: {error}"))?;
        Ok(())
    }
}

/// Read repair counters.
#[derive(Debug, Default)]
pub struct ReadRepairStats {
    /// Quorum reads that found replicas disagreeing.
    pub reads_repaired: AtomicU64,
    /// Points written back to stale replicas.
    pub points_repaired: AtomicU64,
    pub failures: AtomicU64,
}

/// What each replica answered to one quorum read: `(replica, points)`.
pub type Answers = Vec<(String, Vec<(i64, u64, Value)>)>;

/// Per stale replica, the winning points it lacks (or holds older).
pub fn stale_replicas(answers: &Answers) -> Answers {
    if answers.len() < 2 {
        return Vec::new();
    }
    let mut winners: BTreeMap<i64, (u64, &Value)> = BTreeMap::new();
    for (_, points) in answers {
        for (time, version, value) in points {
            match winners.get(time) {
                Some((best, _)) if *best >= *version => {}
                _ => {
                    winners.insert(*time, (*version, value));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (replica, points) in answers {
        let has: BTreeMap<i64, u64> = points.iter().map(|(t, v, _)| (*t, *v)).collect();
        let lacking: Vec<(i64, u64, Value)> = winners
            .iter()
            .filter(|(time, (version, _))| has.get(time).is_none_or(|v| v < version))
            .map(|(time, (version, value))| (*time, *version, (*value).clone()))
            .collect();
        if !lacking.is_empty() {
            out.push((replica.clone(), lacking));
        }
    }
    out
}

/// What read repair needs of the node, to run on the RPC runtime.
pub struct Repairer {
    pub node_id: String,
    pub client: Arc<Client<Request, Response>>,
    pub storage: Storage,
    pub stats: ReadRepairStats,
}

impl Repairer {
    /// Write the winners back to the replicas of `answers` that lack them,
    /// each write a task of its own on the current (RPC) runtime: through
    /// RPC, or locally for this node.
    pub fn repair(
        self: &Arc<Self>,
        topology: &Topology,
        (db, rp): (&str, &str),
        series: &SeriesInfo,
        field: &str,
        answers: &Answers,
    ) {
        let stale = stale_replicas(answers);
        if stale.is_empty() {
            return;
        }
        self.stats.reads_repaired.fetch_add(1, Ordering::Relaxed);
        let shard_group = Storage::shard_group_name(db, rp, 0);
        for (replica, points) in stale {
            let count = points.len() as u64;
            let row = match Storage::repair_row(db, series, field, &points) {
                Ok(row) => row,
                Err(error) => {
                    tracing::warn!(%error, "read repair: could not encode a row");
                    continue;
                }
            };
            let group = shard_group.clone();
            let this = self.clone();
            if replica == self.node_id {
                tokio::spawn(async move {
                    let storage = this.storage.clone();
                    let applied =
                        tokio::task::spawn_blocking(move || storage.apply_rows(&group, vec![row]))
                            .await;
                    this.count(count, matches!(applied, Ok(Ok(()))));
                });
                continue;
            }
            let Some(address) = topology.members.get(&replica).map(|m| m.rpc_addr) else {
                continue;
            };
            tokio::spawn(async move {
                let request = Request::AntiEntropy(AeRequest::Apply {
                    shard_group: group,
                    rows: vec![row],
                });
                let answer = this.client.call(address, request).await;
                let ok = matches!(answer, Ok(Response::AntiEntropy(AeResponse::Applied)));
                if !ok {
                    tracing::debug!(node = %replica, "read repair write failed");
                }
                this.count(count, ok);
            });
        }
    }

    fn count(&self, points: u64, ok: bool) {
        count_outcome(&self.stats, points, ok);
    }
}

fn count_outcome(stats: &ReadRepairStats, points: u64, ok: bool) {
    if ok {
        stats.points_repaired.fetch_add(points, Ordering::Relaxed);
    } else {
        stats.failures.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_missing_a_point_or_holding_an_older_version_is_stale() {
        let answers: Answers = vec![
            (
                "a".into(),
                vec![(1, 5, Value::Integer(1)), (2, 5, Value::Integer(2))],
            ),
            ("b".into(), vec![(1, 5, Value::Integer(1))]),
            (
                "c".into(),
                vec![(1, 9, Value::Integer(10)), (2, 5, Value::Integer(2))],
            ),
        ];
        let stale = stale_replicas(&answers);
        assert_eq!(
            stale,
            vec![
                ("a".to_string(), vec![(1, 9, Value::Integer(10))]),
                (
                    "b".to_string(),
                    vec![(1, 9, Value::Integer(10)), (2, 5, Value::Integer(2))]
                ),
            ]
        );
        let agreeing: Answers = vec![
            ("a".into(), vec![(1, 5, Value::Integer(1))]),
            ("b".into(), vec![(1, 5, Value::Integer(1))]),
        ];
        assert!(stale_replicas(&agreeing).is_empty());
    }
}
