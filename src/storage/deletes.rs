//! What deletes removed, kept so that nothing brings it back.
//!
//! A `DELETE` or `DROP SERIES` records, per series it touched, the time
//! range and the delete's version; a `DROP MEASUREMENT` records the
//! measurement and its version. A versioned write (a replica's copy, a
//! replayed hint, an anti-entropy or read-repair row) of a point that such a
//! record covers with a newer version is not stored: a point written before
//! the delete, arriving after it, stays deleted. A client's own new write has
//! a newer version than every delete before it, and is stored.
//!
//! The records are persisted (one rmp-serde value in the `meta` keyspace)
//! and purged once older than the tombstone grace (see the cluster's
//! tombstones): a replica that returns after that may bring deleted points
//! back, as in Cassandra after `gc_grace_seconds`.

use std::cell::Cell;

use serde::{Deserialize, Serialize};

use super::{engine_error, Engine, HashMap, StorageError};

const DELETES_KEY: &[u8] = b"deletes";

thread_local! {
    /// The version deletes run at on this thread (a peer's tombstone);
    /// `None`: a new version from the node's clock.
    static DELETE_VERSION: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Run `work` with its deletes recorded at `version`.
pub fn with_delete_version<T>(version: u64, work: impl FnOnce() -> T) -> T {
    let previous = DELETE_VERSION.with(|cell| cell.replace(Some(version)));
    let result = work();
    DELETE_VERSION.with(|cell| cell.set(previous));
    result
}

/// A deleted time range and the delete's version: `(min, max, version)`.
type DeletedRange = (i64, i64, u64);

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(super) struct DeleteBook {
    /// (db, series key) -> (min time, max time, version)
    series: HashMap<(String, String), Vec<DeletedRange>>,
    /// (db, measurement) -> version of its drop
    measurements: HashMap<(String, String), u64>,
}

impl DeleteBook {
    pub(super) fn is_empty(&self) -> bool {
        self.series.is_empty() && self.measurements.is_empty()
    }

    /// Whether a point of `series_key` in `measurement` at `time`, written
    /// at `version`, was deleted after it was written.
    pub(super) fn covers(
        &self,
        db: &str,
        measurement: &str,
        series_key: &str,
        time: i64,
        version: u64,
    ) -> bool {
        let key = (db.to_string(), measurement.to_string());
        if self.measurements.get(&key).is_some_and(|v| *v > version) {
            return true;
        }
        self.series
            .get(&(db.to_string(), series_key.to_string()))
            .is_some_and(|ranges| {
                ranges
                    .iter()
                    .any(|(min, max, v)| *v > version && (*min..=*max).contains(&time))
            })
    }
}

impl Engine {
    /// The version a delete running now records.
    pub(super) fn delete_version(&self) -> u64 {
        DELETE_VERSION
            .with(Cell::get)
            .unwrap_or_else(|| self.hlc.now())
    }

    pub(super) fn load_deletes(meta: &fjall::Keyspace) -> Result<DeleteBook, StorageError> {
        match meta.get(DELETES_KEY).map_err(engine_error)? {
            Some(bytes) => rmp_serde::from_slice(&bytes).map_err(engine_error),
            None => Ok(DeleteBook::default()),
        }
    }

    fn save_deletes(&self, book: &DeleteBook) -> Result<(), StorageError> {
        let bytes = rmp_serde::to_vec(book).map_err(engine_error)?;
        self.meta.insert(DELETES_KEY, bytes).map_err(engine_error)
    }

    pub(super) fn record_series_deletes(
        &self,
        db: &str,
        keys: Vec<String>,
        (min, max): (i64, i64),
        version: u64,
    ) -> Result<(), StorageError> {
        let mut book = self.deletes.write();
        for key in keys {
            book.series
                .entry((db.to_string(), key))
                .or_default()
                .push((min, max, version));
        }
        self.save_deletes(&book)
    }

    pub(super) fn record_measurement_drop(
        &self,
        db: &str,
        measurement: &str,
        version: u64,
    ) -> Result<(), StorageError> {
        let mut book = self.deletes.write();
        let entry = book
            .measurements
            .entry((db.to_string(), measurement.to_string()))
            .or_insert(0);
        *entry = (*entry).max(version);
        self.save_deletes(&book)
    }

    /// Forget deletes older than `version` (the tombstone grace has passed).
    pub fn purge_deletes(&self, version: u64) -> Result<usize, StorageError> {
        let mut book = self.deletes.write();
        let before = book.series.values().map(Vec::len).sum::<usize>() + book.measurements.len();
        for ranges in book.series.values_mut() {
            ranges.retain(|(_, _, v)| *v >= version);
        }
        book.series.retain(|_, ranges| !ranges.is_empty());
        book.measurements.retain(|_, v| *v >= version);
        let after = book.series.values().map(Vec::len).sum::<usize>() + book.measurements.len();
        if after != before {
            self.save_deletes(&book)?;
        }
        Ok(before - after)
    }
}
