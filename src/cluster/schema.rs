//! The catalog across the cluster: databases and retention policies as a
//! last-write-wins map with HLC versions and tombstones.
//!
//! A node that runs a schema statement records what changed in its local
//! catalog under a new version and pushes its whole map to every member;
//! members merge (the higher version wins per database and per retention
//! policy) and make their local catalog match. Every few seconds each node
//! also exchanges its map with one live peer, so a node that was down during
//! a statement catches up, a drop is not undone by a node that missed it,
//! and concurrent statements converge on the latest.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::storage::{RetentionPolicySpec, RetentionPolicyUpdate, Storage};

/// A retention policy's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyState {
    pub duration_ns: u64,
    pub shard_group_ns: u64,
    pub replication: u32,
    pub default: bool,
}

/// One object's latest version; not `live`: a tombstone. (An explicit flag,
/// not an `Option`: msgpack writes `Some(())` and `None` alike.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned<T> {
    pub version: u64,
    pub live: bool,
    pub value: T,
}

impl<T> Versioned<T> {
    fn get(&self) -> Option<&T> {
        self.live.then_some(&self.value)
    }
}

/// The cluster-wide schema.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaState {
    pub databases: BTreeMap<String, Versioned<()>>,
    /// Keyed by (database, policy).
    pub policies: BTreeMap<(String, String), Versioned<PolicyState>>,
}

fn newer<T: PartialEq>(candidate: &Versioned<T>, current: Option<&Versioned<T>>) -> bool {
    match current {
        None => true,
        // Equal versions from two nodes: a tombstone wins, deterministically.
        Some(current) => {
            candidate.version > current.version
                || (candidate.version == current.version && !candidate.live && current.live)
        }
    }
}

impl SchemaState {
    /// Fold `other` in; whether anything changed.
    pub fn merge(&mut self, other: &SchemaState) -> bool {
        let mut changed = false;
        for (name, entry) in &other.databases {
            if newer(entry, self.databases.get(name)) {
                self.databases.insert(name.clone(), entry.clone());
                changed = true;
            }
        }
        for (key, entry) in &other.policies {
            if newer(entry, self.policies.get(key)) {
                self.policies.insert(key.clone(), entry.clone());
                changed = true;
            }
        }
        changed
    }
}

/// What the local catalog holds now, as objects.
fn local_objects(storage: &Storage) -> (Vec<String>, BTreeMap<(String, String), PolicyState>) {
    let databases = storage.database_names();
    let mut policies = BTreeMap::new();
    for db in &databases {
        for rp in storage.retention_policies(db).unwrap_or_default() {
            policies.insert(
                (db.clone(), rp.name.clone()),
                PolicyState {
                    duration_ns: rp.duration.as_nanos() as u64,
                    shard_group_ns: rp.shard_group_duration.as_nanos() as u64,
                    replication: rp.replication,
                    default: rp.default,
                },
            );
        }
    }
    (databases, policies)
}

/// The node's copy of the schema, persisted in the data dir.
pub struct SchemaBook {
    state: Mutex<SchemaState>,
    path: PathBuf,
}

impl SchemaBook {
    pub fn open(path: PathBuf) -> SchemaBook {
        let state = std::fs::read(&path)
            .ok()
            .and_then(|bytes| rmp_serde::from_slice(&bytes).ok())
            .unwrap_or_default();
        SchemaBook {
            state: Mutex::new(state),
            path,
        }
    }

    pub fn snapshot(&self) -> SchemaState {
        self.state.lock().clone()
    }

    fn save(&self, state: &SchemaState) {
        let temporary = self.path.with_extension("tmp");
        let written = rmp_serde::to_vec(state)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temporary, bytes))
            .and_then(|()| std::fs::rename(&temporary, &self.path));
        if let Err(error) = written {
            tracing::warn!(path = %self.path.display(), %error, "could not save the schema");
        }
    }

    /// Record what differs between the local catalog and the book (a schema
    /// statement just ran here) under `version`; whether anything did.
    pub fn observe_local(&self, storage: &Storage, version: u64) -> bool {
        let (databases, policies) = local_objects(storage);
        let mut state = self.state.lock();
        let mut changed = false;
        for db in &databases {
            if !state.databases.get(db).is_some_and(|e| e.live) {
                state.databases.insert(
                    db.clone(),
                    Versioned {
                        version,
                        live: true,
                        value: (),
                    },
                );
                changed = true;
            }
        }
        for (name, entry) in state.databases.iter_mut() {
            if entry.live && !databases.contains(name) {
                *entry = Versioned {
                    version,
                    live: false,
                    value: (),
                };
                changed = true;
            }
        }
        for (key, policy) in &policies {
            if state.policies.get(key).and_then(Versioned::get) != Some(policy) {
                state.policies.insert(
                    key.clone(),
                    Versioned {
                        version,
                        live: true,
                        value: policy.clone(),
                    },
                );
                changed = true;
            }
        }
        for (key, entry) in state.policies.iter_mut() {
            if entry.live && !policies.contains_key(key) {
                entry.version = version;
                entry.live = false;
                changed = true;
            }
        }
        if changed {
            self.save(&state);
        }
        changed
    }

    /// Merge a peer's schema and make the local catalog match; whether the
    /// book changed.
    pub fn merge(&self, storage: &Storage, other: &SchemaState) -> bool {
        let merged = {
            let mut state = self.state.lock();
            if !state.merge(other) {
                return false;
            }
            self.save(&state);
            state.clone()
        };
        reconcile(storage, &merged);
        true
    }
}

/// Make the local catalog hold exactly what `state` says exists.
pub fn reconcile(storage: &Storage, state: &SchemaState) {
    let (databases, policies) = local_objects(storage);
    for (name, entry) in &state.databases {
        let exists = databases.contains(name);
        let result = match (entry.live, exists) {
            (true, false) => storage.create_database(name, None),
            (false, true) => storage.drop_database(name),
            _ => Ok(()),
        };
        if let Err(error) = result {
            tracing::warn!(database = %name, %error, "schema: could not apply");
        }
    }
    let (databases, _) = local_objects(storage);
    for ((db, rp), entry) in &state.policies {
        if !databases.contains(db) {
            continue;
        }
        let local = policies.get(&(db.clone(), rp.clone()));
        let exists_now = storage
            .retention_policies(db)
            .map(|rps| rps.iter().any(|p| p.name == *rp))
            .unwrap_or(false);
        let result = match entry.get() {
            Some(wanted) if !exists_now => storage.create_retention_policy(
                db,
                RetentionPolicySpec {
                    name: rp.clone(),
                    duration: Some(Duration::from_nanos(wanted.duration_ns)),
                    shard_group_duration: Some(Duration::from_nanos(wanted.shard_group_ns)),
                    replication: Some(wanted.replication),
                },
                wanted.default,
            ),
            Some(wanted) if local != Some(wanted) => storage.alter_retention_policy(
                db,
                rp,
                RetentionPolicyUpdate {
                    duration: Some(Duration::from_nanos(wanted.duration_ns)),
                    shard_group_duration: Some(Duration::from_nanos(wanted.shard_group_ns)),
                    replication: Some(wanted.replication),
                    make_default: wanted.default,
                },
            ),
            None if exists_now => storage.drop_retention_policy(db, rp),
            _ => Ok(()),
        };
        if let Err(error) = result {
            tracing::warn!(database = %db, policy = %rp, %error, "schema: could not apply");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageOptions;

    fn open(dir: &std::path::Path) -> (Storage, SchemaBook) {
        let storage = Storage::open(StorageOptions::for_test(dir.join("data"))).expect("storage");
        (storage, SchemaBook::open(dir.join("schema")))
    }

    #[test]
    fn the_latest_statement_wins_and_drops_are_not_undone() {
        let (a_dir, b_dir) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        let (a, book_a) = open(a_dir.path());
        let (b, book_b) = open(b_dir.path());
        // Both know db "x" (version 10).
        a.create_database("x", None).expect("create");
        assert!(book_a.observe_local(&a, 10));
        assert!(book_b.merge(&b, &book_a.snapshot()));
        assert!(b.database_exists("x"));
        assert_eq!(b.retention_policies("x").expect("rps").len(), 1);
        // a drops it (20) while b, unaware, adds a policy at 15.
        a.drop_database("x").expect("drop");
        assert!(book_a.observe_local(&a, 20));
        b.create_retention_policy(
            "x",
            RetentionPolicySpec {
                name: "week".into(),
                duration: Some(Duration::from_secs(7 * 86_400)),
                ..Default::default()
            },
            false,
        )
        .expect("rp");
        assert!(book_b.observe_local(&b, 15));
        // Exchange both ways: the drop (newer) wins everywhere.
        book_b.merge(&b, &book_a.snapshot());
        book_a.merge(&a, &book_b.snapshot());
        assert!(!a.database_exists("x") && !b.database_exists("x"));
        assert_eq!(book_a.snapshot(), book_b.snapshot());
        // A newer create (30) brings it back, with its default policy.
        b.create_database("x", None).expect("recreate");
        assert!(book_b.observe_local(&b, 30));
        book_a.merge(&a, &book_b.snapshot());
        assert!(a.database_exists("x"));
        assert_eq!(a.default_retention_policy("x").expect("default"), "autogen");
        // It crosses the wire intact (tombstones included).
        let state = book_b.snapshot();
        let bytes = rmp_serde::to_vec_named(&state).expect("encode");
        assert_eq!(
            rmp_serde::from_slice::<SchemaState>(&bytes).expect("decode"),
            state
        );
        // The book survives a restart.
        drop(book_a);
        let reopened = SchemaBook::open(a_dir.path().join("schema"));
        assert_eq!(reopened.snapshot(), book_b.snapshot());
    }
}
