//! Hinted handoff: the actor that replays hint queues, and the queues'
//! bookkeeping (what each target's queue holds, and the limits past which
//! hints are dropped — loudly, because a dropped hint is data at risk on
//! that replica until anti-entropy repairs it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};

use actix::{Actor, ActorContext, AsyncContext, Context};

use super::{Cluster, Request};
use crate::storage::{Storage, StorageError};

/// Queue sizes and limits, shared by writers and the replay loop.
pub struct HintBook {
    /// Bytes queued per target.
    bytes: Mutex<HashMap<String, u64>>,
    max_bytes: u64,
    pub max_age: Duration,
    /// Hints dropped (full queue or too old) since start.
    pub dropped: AtomicU64,
}

impl HintBook {
    pub fn open(storage: &Storage, max_bytes: u64, max_age: Duration) -> HintBook {
        let bytes = storage
            .hint_queues()
            .unwrap_or_default()
            .into_iter()
            .map(|(target, (_, bytes, _))| (target, bytes))
            .collect();
        HintBook {
            bytes: Mutex::new(bytes),
            max_bytes,
            max_age,
            dropped: AtomicU64::new(0),
        }
    }

    /// Keep `request` for `target`, durably; `false` when its queue is full
    /// and the hint was dropped (with a warning and the counter).
    pub fn keep(
        &self,
        storage: &Storage,
        target: &str,
        request: &Request,
    ) -> Result<bool, StorageError> {
        let encoded =
            rmp_serde::to_vec_named(request).map_err(|e| StorageError::Engine(e.to_string()))?;
        let size = encoded.len() as u64;
        {
            let mut bytes = self.bytes.lock();
            let queued = bytes.entry(target.to_string()).or_insert(0);
            if *queued + size > self.max_bytes {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    node = %target,
                    queued_bytes = *queued,
                    hint_bytes = size,
                    max_bytes = self.max_bytes,
                    dropped_total = dropped,
                    "hint dropped: the queue for this node is full (handoff.max_bytes); \
                     its copy of these points is missing until anti-entropy repairs it"
                );
                return Ok(false);
            }
            *queued += size;
        }
        if let Err(error) = storage.hint_push(target, &encoded) {
            self.forget(target, size);
            return Err(error);
        }
        Ok(true)
    }

    /// Whether any queue holds a hint (saves the replay a scan of the
    /// keyspace when none does).
    pub fn any_queued(&self) -> bool {
        self.bytes.lock().values().any(|bytes| *bytes > 0)
    }

    /// Hints of `bytes` left the queue of `target`.
    pub fn forget(&self, target: &str, bytes: u64) {
        if let Some(queued) = self.bytes.lock().get_mut(target) {
            *queued = queued.saturating_sub(bytes);
        }
    }

    /// A hint older than `handoff.max_age` was dropped.
    pub fn dropped_old(&self, target: &str, count: u64, bytes: u64) {
        self.forget(target, bytes);
        let dropped = self.dropped.fetch_add(count, Ordering::Relaxed) + count;
        tracing::warn!(
            node = %target,
            hints = count,
            max_age = ?self.max_age,
            dropped_total = dropped,
            "hints dropped: older than handoff.max_age; \
             this node's copy of their points is missing until anti-entropy repairs it"
        );
    }
}

/// When each target may be tried again, and the delay that led there.
pub type Backoff = HashMap<String, (tokio::time::Instant, Duration)>;

/// The handoff actor: every 200 ms it starts a replay round (unless one is
/// still running) on the RPC runtime, where the internode I/O lives; it
/// owns the rounds' schedule and the per-target backoff. It stops with its
/// cluster.
pub struct Handoff {
    cluster: Weak<Cluster>,
    running: Arc<AtomicBool>,
    backoff: Arc<tokio::sync::Mutex<Backoff>>,
}

impl Handoff {
    /// Start the actor (inside the actix system).
    pub fn start_for(cluster: &Arc<Cluster>) -> actix::Addr<Handoff> {
        Handoff {
            cluster: Arc::downgrade(cluster),
            running: Arc::new(AtomicBool::new(false)),
            backoff: Arc::new(tokio::sync::Mutex::new(HashMap::new())),
        }
        .start()
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let Some(cluster) = self.cluster.upgrade() else {
            ctx.stop();
            return;
        };
        // One round at a time.
        if !cluster.handoff || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let (running, backoff) = (self.running.clone(), self.backoff.clone());
        let runtime = cluster.rpc.clone();
        runtime.spawn(async move {
            let mut backoff = backoff.lock().await;
            super::replay_round(&cluster, &mut backoff).await;
            running.store(false, Ordering::Release);
        });
    }
}

impl Actor for Handoff {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_millis(200), |actor, ctx| actor.tick(ctx));
    }
}
