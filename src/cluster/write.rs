//! The write coordinator (DESIGN.md §4): any node takes a write, stamps it
//! with one version, sends each point to its replicas in parallel and
//! answers once the consistency level is met for every point.
//!
//! Levels count over a point's preference list (RF nodes, fewer in a
//! smaller cluster): `one` (and `any`, until hinted handoff) needs one
//! replica, `quorum` a majority, `all` every one. The coordinator's own copy
//! counts when it is a replica. Replicas that answer after the level is met
//! still store the points; replicas that did write when the level is not
//! met keep what they wrote (the client retries; versions make the retry
//! harmless).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures_util::stream::{FuturesUnordered, StreamExt};

use std::sync::Arc;

use super::{Cluster, Request, Response, Topology};
use crate::config::WriteConsistency;
use crate::lineproto::{self, Point, Precision};
use crate::storage::engine::series_token;
use crate::storage::{StorageError, WriteOptions, WriteOutcome};

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteFailure {
    /// The level was not met; the text names it and each failed replica.
    #[error("{0}")]
    Consistency(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn required(level: WriteConsistency, replicas: usize) -> usize {
    match level {
        WriteConsistency::Any | WriteConsistency::One => 1,
        WriteConsistency::Quorum => replicas / 2 + 1,
        WriteConsistency::All => replicas,
    }
    .min(replicas)
}

fn level_name(level: WriteConsistency) -> &'static str {
    match level {
        WriteConsistency::Any => "any",
        WriteConsistency::One => "one",
        WriteConsistency::Quorum => "quorum",
        WriteConsistency::All => "all",
    }
}

/// What a replica said.
type Reply = Result<WriteOutcome, String>;

impl Cluster {
    /// Write `points` across the cluster; blocks (run it on a blocking thread).
    ///
    /// Replicas get the lines of their points as the client sent them (with
    /// the request's `precision` and `now`), so they parse instead of
    /// decoding a copy: the cheapest encoding there is.
    pub fn write(
        &self,
        db: &str,
        rp: Option<&str>,
        points: &[Point<'_>],
        (precision, now): (Precision, i64),
        level: WriteConsistency,
    ) -> Result<WriteOutcome, WriteFailure> {
        // Counted until the write is answered: a new plan is announced
        // only once no write routed by an older one is in flight. A
        // topology replaced between reading and counting is read again.
        let (topology, _inflight) = loop {
            let topology = self.topology();
            let inflight = Inflight::new(&topology);
            if Arc::ptr_eq(&topology, &self.topology.borrow()) {
                break (topology, inflight);
            }
        };
        let ring = &topology.placement;
        if ring.members().len() <= 1 {
            // A cluster of one is a node.
            return Ok(self.storage.write(db, rp, points)?);
        }
        let keys: Vec<String> = points
            .iter()
            .map(|p| lineproto::series_key(&p.measurement, &p.tags))
            .collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let known = self.storage.series_ids(db, &key_refs)?;
        let sets: Vec<usize> = keys
            .iter()
            .map(|key| ring.set_of(series_token(db, key)).unwrap_or(0))
            .collect();
        // Per node: the points it stores, and new series it only registers.
        let mut work: BTreeMap<&str, (Vec<&Point<'_>>, Vec<&Point<'_>>)> = BTreeMap::new();
        for member in ring.members() {
            work.insert(member.as_str(), (Vec::new(), Vec::new()));
        }
        for (index, point) in points.iter().enumerate() {
            let Some(replicas) = ring.sets().get(sets[index]).map(|set| &set.targets) else {
                continue;
            };
            for (member, (values, index_only)) in work.iter_mut() {
                if replicas.iter().any(|r| r == member) {
                    values.push(point);
                } else if known[index].is_none() {
                    index_only.push(point);
                }
            }
        }
        let version = self.storage.next_version();
        let mut calls = FuturesUnordered::new();
        let mut hints: HashMap<String, Request> = HashMap::new();
        for (member, (values, index_only)) in &work {
            if *member == self.node_id || (values.is_empty() && index_only.is_empty()) {
                continue;
            }
            let encode = |points: &Vec<&Point<'_>>| -> Vec<u8> {
                let size = points.iter().map(|p| p.text.len() + 1).sum();
                let mut lines = Vec::with_capacity(size);
                for point in points {
                    lines.extend_from_slice(point.text.as_bytes());
                    lines.push(b'\n');
                }
                lines
            };
            let request = Request::Write {
                db: db.to_string(),
                rp: rp.map(str::to_string),
                version,
                precision,
                now,
                lines: encode(values),
                index_only: encode(index_only),
            };
            let id = member.to_string();
            // Kept until the replica answers: a hint if it does not.
            if self.handoff {
                hints.insert(id.clone(), request.clone());
            }
            let Some(address) = topology.members.get(*member).map(|m| m.rpc_addr) else {
                let failed: Reply = Err("unknown address".into());
                calls.push(self.rpc.spawn(async move { (id, failed) }));
                continue;
            };
            let client = self.client.clone();
            calls.push(self.rpc.spawn(async move {
                let reply = match client.call(address, request).await {
                    Ok(Response::Written {
                        written,
                        dropped,
                        conflict,
                    }) => Ok(WriteOutcome {
                        written: written as usize,
                        dropped: dropped as usize,
                        conflict,
                    }),
                    Ok(_) => Err("unexpected answer".to_string()),
                    Err(error) => Err(error.to_string()),
                };
                (id, reply)
            }));
        }
        // The local copy, while the remote ones are under way.
        let mut replies: HashMap<String, Reply> = HashMap::new();
        if let Some((values, index_only)) = work.get(self.node_id.as_str()) {
            if !index_only.is_empty() {
                let owned: Vec<Point<'_>> = index_only.iter().map(|p| (*p).clone()).collect();
                let options = WriteOptions {
                    version: Some(version),
                    values: false,
                };
                self.storage.write_with(db, rp, &owned, options)?;
            }
            if !values.is_empty() {
                let options = WriteOptions {
                    version: Some(version),
                    values: true,
                };
                // This node usually stores every point (RF >= members):
                // write the batch as it is instead of a copy.
                let written = if values.len() == points.len() {
                    self.storage.write_with(db, rp, points, options)
                } else {
                    let owned: Vec<Point<'_>> = values.iter().map(|p| (*p).clone()).collect();
                    self.storage.write_with(db, rp, &owned, options)
                };
                let reply = match written {
                    Ok(outcome) => Ok(outcome),
                    Err(error @ StorageError::DatabaseNotFound(_))
                    | Err(error @ StorageError::RetentionPolicyNotFound(_)) => {
                        return Err(error.into())
                    }
                    Err(error) => Err(error.to_string()),
                };
                replies.insert(self.node_id.clone(), reply);
            }
        }
        let used: BTreeSet<usize> = sets.iter().copied().collect();
        let storing: BTreeSet<&str> = work
            .iter()
            .filter(|(_, (values, _))| !values.is_empty())
            .map(|(member, _)| *member)
            .collect();
        let decide = |replies: &HashMap<String, Reply>| -> Option<Result<(), String>> {
            let mut waiting = false;
            let groups = used
                .iter()
                .filter_map(|set| ring.sets().get(*set))
                .flat_map(|set| set.groups.iter());
            for replicas in groups {
                let need = required(level, replicas.len());
                let acked = replicas
                    .iter()
                    .filter(|r| matches!(replies.get(r.as_str()), Some(Ok(_))))
                    .count();
                if acked >= need {
                    continue;
                }
                let failed: Vec<String> = replicas
                    .iter()
                    .filter_map(|r| match replies.get(r.as_str()) {
                        Some(Err(why)) => Some(format!("{r}: {why}")),
                        _ => None,
                    })
                    .collect();
                if replicas.len() - failed.len() < need {
                    return Some(Err(format!(
                        "write failed: consistency {} not met: {acked} of {need} required ({})",
                        level_name(level),
                        failed.join(", ")
                    )));
                }
                waiting = true;
            }
            (!waiting).then_some(Ok(()))
        };
        // `any` waits for every replica (a hint stands in for each that
        // fails); the other levels answer as soon as they are met.
        let wait_all = level == WriteConsistency::Any && self.handoff;
        if !self.handoff {
            hints.clear();
        }
        let mut failed: Vec<String> = Vec::new();
        let decision = self.rpc.block_on(async {
            loop {
                if !wait_all {
                    if let Some(decision) = decide(&replies) {
                        return decision;
                    }
                }
                match calls.next().await {
                    Some(Ok((id, reply))) => {
                        if reply.is_err() {
                            failed.push(id.clone());
                        } else {
                            hints.remove(&id);
                        }
                        if storing.contains(id.as_str()) {
                            replies.insert(id, reply);
                        } else if let Err(error) = reply {
                            tracing::debug!(node = %id, %error, "series registration failed");
                        }
                    }
                    Some(Err(error)) => tracing::warn!(%error, "replica call panicked"),
                    None => {
                        return decide(&replies)
                            .unwrap_or_else(|| Err("write failed: replicas did not answer".into()))
                    }
                }
            }
        });
        // Replicas that failed get a hint, durable before the answer.
        let mut hinted: BTreeSet<String> = BTreeSet::new();
        let mut unhinted = Vec::new();
        for id in failed {
            if let Some(request) = hints.remove(&id) {
                match self.keep_hint(&id, &request) {
                    Ok(true) => {
                        hinted.insert(id);
                    }
                    Ok(false) => unhinted.push(format!("{id}: hint queue full")),
                    Err(error) if wait_all => return Err(error),
                    Err(_) => unhinted.push(format!("{id}: hint not kept")),
                }
            }
        }
        if wait_all {
            // `any`: every point needs a replica that took it or a hint for one.
            let covered = used.iter().all(|set| {
                ring.sets().get(*set).is_none_or(|set| {
                    set.targets.iter().any(|r| {
                        hinted.contains(r) || matches!(replies.get(r.as_str()), Some(Ok(_)))
                    })
                })
            });
            if !covered {
                return Err(WriteFailure::Consistency(format!(
                    "write failed: consistency any not met: 0 of 1 required ({})",
                    unhinted.join(", ")
                )));
            }
        }
        // Calls still in flight finish in the background, and a hint is
        // kept for each that fails.
        if !hints.is_empty() {
            let storage = self.storage.clone();
            let book = self.hint_book.clone();
            self.rpc.spawn(async move {
                while let Some(done) = calls.next().await {
                    let Ok((id, reply)) = done else {
                        continue;
                    };
                    let request = hints.remove(&id);
                    if let (Err(_), Some(request)) = (reply, request) {
                        let (storage, book) = (storage.clone(), book.clone());
                        let _ = tokio::task::spawn_blocking(move || {
                            if let Err(error) = book.keep(&storage, &id, &request) {
                                tracing::error!(node = %id, %error, "could not keep a hint");
                            }
                        })
                        .await;
                    }
                }
            });
        }
        if !wait_all {
            decision.map_err(WriteFailure::Consistency)?;
        }
        let mut outcome = WriteOutcome::default();
        for reply in replies.values().flatten() {
            outcome.written = outcome.written.max(reply.written);
            outcome.dropped = outcome.dropped.max(reply.dropped);
            if outcome.conflict.is_none() {
                outcome.conflict.clone_from(&reply.conflict);
            }
        }
        Ok(outcome)
    }
}

/// Counts a write in flight on its topology for as long as it lives.
struct Inflight(Option<Arc<Topology>>);

impl Inflight {
    fn new(topology: &Arc<Topology>) -> Inflight {
        topology
            .inflight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Inflight(Some(topology.clone()))
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        if let Some(topology) = self.0.take() {
            topology
                .inflight
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

impl Cluster {
    /// Keep a hint for `target`; `Ok(false)`: its queue was full.
    pub(super) fn keep_hint(&self, target: &str, request: &Request) -> Result<bool, WriteFailure> {
        let kept = self.hint_book.keep(&self.storage, target, request);
        if let Err(error) = &kept {
            tracing::error!(node = %target, %error, "could not keep a hint");
        }
        Ok(kept?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_count_over_the_preference_list() {
        assert_eq!(required(WriteConsistency::Quorum, 3), 2);
        assert_eq!(required(WriteConsistency::Quorum, 2), 2);
        assert_eq!(required(WriteConsistency::Quorum, 1), 1);
        assert_eq!(required(WriteConsistency::All, 3), 3);
        assert_eq!(required(WriteConsistency::One, 3), 1);
        assert_eq!(required(WriteConsistency::Any, 3), 1);
    }
}
