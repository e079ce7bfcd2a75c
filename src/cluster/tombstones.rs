//! Replicated deletes: `DELETE`, `DROP SERIES` and `DROP MEASUREMENT` as
//! versioned tombstones that reach every member.
//!
//! The node that runs the statement records a [`Tombstone`] (the statement,
//! the `now()` it ran with and an HLC version) and sends it to every member;
//! a member that is down gets it as a hint, and every anti-entropy exchange
//! starts by swapping tombstone lists, so a member that missed one applies
//! it before any row is compared. Applying runs the statement at the
//! tombstone's version: the storage engine then keeps what it removed, and
//! refuses a later copy (a replica write, a hint, a repair row) of a point
//! the delete covers with an older version (see `storage/deletes.rs`).
//!
//! Tombstones and those records are purged after `anti_entropy.
//! tombstone_grace`: a replica down for longer than that must be wiped
//! before it returns, or it may bring deleted points back (Cassandra's
//! `gc_grace_seconds` rule).

use std::collections::BTreeMap;
use std::path::PathBuf;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::influxql::{self, QueryContext, QueryLimits};
use crate::storage::{self, Storage};

/// One replicated delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub id: String,
    pub db: Option<String>,
    pub rp: Option<String>,
    /// The statement, as InfluxQL.
    pub text: String,
    /// `now()` of the statement, nanoseconds.
    pub now: i64,
    pub version: u64,
}

/// The tombstones this node knows, persisted in the data dir.
pub struct TombstoneBook {
    known: Mutex<BTreeMap<String, Tombstone>>,
    path: PathBuf,
}

impl TombstoneBook {
    pub fn open(path: PathBuf) -> TombstoneBook {
        let known = std::fs::read(&path)
            .ok()
            .and_then(|bytes| rmp_serde::from_slice(&bytes).ok())
            .unwrap_or_default();
        TombstoneBook {
            known: Mutex::new(known),
            path,
        }
    }

    pub fn list(&self) -> Vec<Tombstone> {
        self.known.lock().values().cloned().collect()
    }

    fn save(&self, known: &BTreeMap<String, Tombstone>) {
        let temporary = self.path.with_extension("tmp");
        let written = rmp_serde::to_vec(known)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temporary, bytes))
            .and_then(|()| std::fs::rename(&temporary, &self.path));
        if let Err(error) = written {
            tracing::warn!(path = %self.path.display(), %error, "could not save the tombstones");
        }
    }

    /// Apply the tombstones of `list` this node does not know yet, then
    /// remember them (blocking: runs the deletes). How many were new.
    pub fn apply_new(&self, storage: &Storage, list: Vec<Tombstone>) -> usize {
        let mut applied = 0;
        for tombstone in list {
            if self.known.lock().contains_key(&tombstone.id) {
                continue;
            }
            apply(storage, &tombstone);
            let mut known = self.known.lock();
            known.insert(tombstone.id.clone(), tombstone);
            self.save(&known);
            applied += 1;
        }
        applied
    }

    /// Remember a tombstone of a statement that already ran here.
    pub fn record(&self, tombstone: Tombstone) {
        let mut known = self.known.lock();
        known.insert(tombstone.id.clone(), tombstone);
        self.save(&known);
    }

    /// Forget tombstones older than `version`; how many went.
    pub fn purge(&self, version: u64) -> usize {
        let mut known = self.known.lock();
        let before = known.len();
        known.retain(|_, tombstone| tombstone.version >= version);
        let purged = before - known.len();
        if purged > 0 {
            self.save(&known);
        }
        purged
    }
}

/// Run a tombstone's statement here, at its version.
fn apply(storage: &Storage, tombstone: &Tombstone) {
    let query = match influxql::parse(&tombstone.text) {
        Ok(query) => query,
        Err(error) => {
            tracing::error!(%error, statement = %tombstone.text, "unreadable tombstone");
            return;
        }
    };
    let context = QueryContext {
        database: tombstone.db.clone(),
        retention_policy: tombstone.rp.clone(),
        now: tombstone.now,
        limits: QueryLimits::default(),
        cluster: None,
    };
    let results = storage::with_delete_version(tombstone.version, || {
        influxql::execute(&query, &context, storage)
    });
    for result in results {
        if let Some(error) = result.error {
            // "not found" is the same outcome on a member that had nothing.
            tracing::debug!(%error, statement = %tombstone.text, "tombstone");
        }
    }
    tracing::info!(statement = %tombstone.text, "applied a replicated delete");
}
