//! The storage engine: a columnar time-series store over fjall.
//!
//! - the catalog ([`catalog`]): databases, retention policies, field types;
//! - the series index (series key <-> id) and the inverted index
//!   (measurement -> tag key -> tag value -> series), in memory, persisted;
//! - one fjall keyspace per shard group (db, rp, time window), so retention
//!   drops whole keyspaces;
//! - the write path: one WAL entry per request batch, fsynced with group
//!   commit before the write is acknowledged; then the in-memory write buffer
//!   per (series, field), which reads see too;
//! - flushes that turn the buffer into compressed column blocks ([`block`])
//!   and delete the WAL entries they cover in the same atomic fjall batch.
//!
//! See `engine.rs` for the key layout.
//!
//! The public API below is the contract the HTTP layer and the InfluxQL
//! executor build on. Every call blocks (fjall blocks): async callers go
//! through `spawn_blocking` / `web::block`.

mod block;
mod catalog;
pub(crate) mod engine;

pub use engine::{series_token, with_delete_version};
#[cfg(test)]
mod tests;
mod wal;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use engine::Engine;

use crate::lineproto::Point;

/// A test of a series' tags (sorted by key).
pub type TagTest<'a> = dyn Fn(&[(String, String)]) -> bool + 'a;

/// Which series of a measurement to select.
pub struct SeriesFilter<'a> {
    /// Tag values every selected series has (`key = 'value'` conjuncts of
    /// the condition): answered from the inverted index.
    pub equal: Vec<(&'a str, &'a str)>,
    /// The whole test, run on each candidate's tags.
    pub keep: &'a TagTest<'a>,
}

impl SeriesFilter<'_> {
    /// Whether a series with these tags is selected.
    pub fn admits(&self, tags: &[(String, String)]) -> bool {
        self.equal
            .iter()
            .all(|(key, value)| tags.iter().any(|(k, v)| k == key && v == value))
            && (self.keep)(tags)
    }

    pub fn all() -> SeriesFilter<'static> {
        SeriesFilter {
            equal: Vec::new(),
            keep: &|_| true,
        }
    }
}

/// A kept hint: (its key in the queue, the hint).
pub type Hint = (Vec<u8>, Vec<u8>);

/// When a hint was written (wall-clock ms), from its key.
pub fn hint_written_ms(key: &[u8]) -> Option<u64> {
    let split = key.iter().position(|b| *b == 0)?;
    let seq: [u8; 8] = key.get(split + 1..split + 9)?.try_into().ok()?;
    Some(dynaflux_actors::Hlc::physical_ms(u64::from_be_bytes(seq)))
}

/// How a write is applied.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// The write's version; `None`: a new one from this node's clock.
    pub version: Option<u64>,
    /// Store the points (`false`: only their series and field types).
    pub values: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            version: None,
            values: true,
        }
    }
}

/// Only the first or the last `n` distinct timestamps of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Take {
    First(usize),
    Last(usize),
}

impl Take {
    /// Keep only the wanted points of `points`, which are in time order
    /// with distinct timestamps.
    pub fn apply<T>(take: Option<Take>, points: &mut Vec<T>) {
        match take {
            Some(Take::First(n)) => points.truncate(n),
            Some(Take::Last(n)) => {
                let excess = points.len().saturating_sub(n);
                points.drain(..excess);
            }
            None => {}
        }
    }

    /// The n-th wanted timestamp among the points read so far, if there are
    /// n: a block entirely beyond it cannot change the answer.
    fn cut_off(self, a: &[(i64, u64, Value)], b: &[(i64, u64, Value)]) -> Option<i64> {
        let mut times: Vec<i64> = a.iter().chain(b).map(|(time, _, _)| *time).collect();
        times.sort_unstable();
        times.dedup();
        match self {
            Take::First(n) => times.get(n.checked_sub(1)?).copied(),
            Take::Last(n) => times
                .len()
                .checked_sub(n)
                .and_then(|i| times.get(i))
                .copied(),
        }
    }
}

/// The retention policy every new database gets.
pub const DEFAULT_RP_NAME: &str = "autogen";

/// A field's type, as InfluxDB names it in `SHOW FIELD KEYS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FieldType {
    Float,
    Integer,
    Unsigned,
    String,
    Boolean,
}

impl FieldType {
    /// `float`, `integer`, `unsigned`, `string`, `boolean`.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Float => "float",
            FieldType::Integer => "integer",
            FieldType::Unsigned => "unsigned",
            FieldType::String => "string",
            FieldType::Boolean => "boolean",
        }
    }
}

/// A stored field value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Float(f64),
    Integer(i64),
    Unsigned(u64),
    String(String),
    Boolean(bool),
}

impl Value {
    pub fn field_type(&self) -> FieldType {
        match self {
            Value::Float(_) => FieldType::Float,
            Value::Integer(_) => FieldType::Integer,
            Value::Unsigned(_) => FieldType::Unsigned,
            Value::String(_) => FieldType::String,
            Value::Boolean(_) => FieldType::Boolean,
        }
    }
}

/// A retention policy as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicyInfo {
    pub name: String,
    /// `Duration::ZERO` means infinite.
    pub duration: Duration,
    pub shard_group_duration: Duration,
    pub replication: u32,
    pub default: bool,
}

/// What CREATE DATABASE … WITH / CREATE RETENTION POLICY ask for.
/// `None` means the default (infinite duration, replication 1, and a shard
/// group duration derived from the duration as InfluxDB does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicySpec {
    pub name: String,
    pub duration: Option<Duration>,
    pub shard_group_duration: Option<Duration>,
    pub replication: Option<u32>,
}

/// Changes asked by ALTER RETENTION POLICY; `None` leaves a setting alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicyUpdate {
    pub duration: Option<Duration>,
    pub shard_group_duration: Option<Duration>,
    pub replication: Option<u32>,
    pub make_default: bool,
}

/// A series of a measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesInfo {
    pub id: u64,
    pub measurement: String,
    /// Sorted by key.
    pub tags: Vec<(String, String)>,
    /// The canonical, escaped series key: `measurement,k1=v1,k2=v2`.
    pub key: String,
}

/// One series of a database's catalog with its measurement's fields.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CatalogSeries {
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, FieldType)>,
}

/// The outcome of a write that was (at least partly) accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    pub written: usize,
    /// Points refused because of a field type conflict.
    pub dropped: usize,
    /// InfluxDB's text for the first conflict, e.g.
    /// `field type conflict: input field "f" on measurement "m" is type integer, already exists as type float`.
    pub conflict: Option<String>,
}

/// Storage errors. The variant says what the caller does with it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The client named a database that does not exist (404 on /write).
    #[error("database not found: {0}")]
    DatabaseNotFound(String),
    /// The client named a retention policy that does not exist.
    #[error("retention policy not found: {0}")]
    RetentionPolicyNotFound(String),
    /// A client mistake in DDL, with InfluxDB's text (e.g. `retention policy conflicts with an existing policy`).
    #[error("{0}")]
    Invalid(String),
    /// A whole batch refused (e.g. a field type conflict inside one batch), InfluxDB's text.
    #[error("{0}")]
    WriteRejected(String),
    /// Flushes fall behind: the write buffer is full. Retry later (503).
    #[error("write buffer full: flushes are behind, retry later")]
    Overloaded,
    /// The engine failed: the caller answers 500 and the data may be at risk.
    #[error("storage engine: {0}")]
    Engine(String),
}

/// How to open the engine.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    pub data_dir: PathBuf,
    /// fsync the WAL before acknowledging (group commit); only tests turn it off.
    pub wal_fsync: bool,
    /// Flush the write buffer to blocks when it holds this many bytes.
    pub buffer_max_bytes: u64,
    /// Flush the write buffer when its oldest entry is this old.
    pub buffer_max_age: Duration,
    /// How often expired shard groups are looked for.
    pub retention_check_interval: Duration,
    /// Compact blocks in the background (see `compact.rs`); only tests
    /// turn it off, to compact when they choose.
    pub background_compaction: bool,
    /// How long a write waits for room in a full write buffer before it is
    /// refused (503). Default: 10 s.
    pub backpressure_wait: Duration,
}

impl StorageOptions {
    pub fn for_test(data_dir: PathBuf) -> Self {
        StorageOptions {
            data_dir,
            wal_fsync: false,
            buffer_max_bytes: 64 << 20,
            buffer_max_age: Duration::from_secs(60),
            retention_check_interval: Duration::from_secs(1800),
            background_compaction: true,
            backpressure_wait: Duration::from_secs(10),
        }
    }
}

/// The engine. Cheap to clone; every clone shares one store.
#[derive(Clone)]
pub struct Storage {
    engine: Arc<Engine>,
}

impl Storage {
    pub fn open(options: StorageOptions) -> Result<Storage, StorageError> {
        Ok(Storage {
            engine: Engine::open(options)?,
        })
    }

    /// Flush the write buffer and stop background work (clean shutdown).
    pub fn close(&self) -> Result<(), StorageError> {
        self.engine.close()
    }

    /// Turn the write buffer into compressed blocks now.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.engine.flush()
    }

    /// Drop the shard groups that expired at `now` (nanoseconds); returns how many.
    pub fn enforce_retention(&self, now: i64) -> Result<usize, StorageError> {
        self.engine.enforce_retention(now)
    }

    /// Bytes on disk (fjall's account, journals included).
    pub fn disk_space(&self) -> u64 {
        self.engine.disk_space()
    }

    /// The ring token of a series (see [`engine::series_token`]).
    pub fn series_token(&self, db: &str, series_id: u64) -> Option<u64> {
        self.engine.series_token(db, series_id)
    }

    // ---- catalog

    /// Idempotent when the database exists with the same default RP; an RP spec
    /// that conflicts gives InfluxDB's error.
    pub fn create_database(
        &self,
        name: &str,
        rp: Option<RetentionPolicySpec>,
    ) -> Result<(), StorageError> {
        self.engine.create_database(name, rp)
    }
    /// Dropping a database that does not exist succeeds (as in InfluxDB).
    pub fn drop_database(&self, name: &str) -> Result<(), StorageError> {
        self.engine.drop_database(name)
    }
    /// In creation order.
    pub fn database_names(&self) -> Vec<String> {
        self.engine
            .with_catalog(|catalog| catalog.databases.iter().map(|db| db.name.clone()).collect())
    }
    pub fn database_exists(&self, name: &str) -> bool {
        self.engine
            .with_catalog(|catalog| catalog.database(name).is_some())
    }
    pub fn create_retention_policy(
        &self,
        db: &str,
        spec: RetentionPolicySpec,
        make_default: bool,
    ) -> Result<(), StorageError> {
        self.engine.create_retention_policy(db, spec, make_default)
    }
    pub fn alter_retention_policy(
        &self,
        db: &str,
        name: &str,
        update: RetentionPolicyUpdate,
    ) -> Result<(), StorageError> {
        self.engine.alter_retention_policy(db, name, update)
    }
    /// Dropping a policy that does not exist succeeds.
    pub fn drop_retention_policy(&self, db: &str, name: &str) -> Result<(), StorageError> {
        self.engine.drop_retention_policy(db, name)
    }
    /// In creation order.
    pub fn retention_policies(&self, db: &str) -> Result<Vec<RetentionPolicyInfo>, StorageError> {
        self.engine.retention_policies(db)
    }
    pub fn default_retention_policy(&self, db: &str) -> Result<String, StorageError> {
        self.engine.with_catalog(|catalog| {
            catalog
                .database(db)
                .map(|database| database.default_rp.clone())
                .ok_or_else(|| StorageError::DatabaseNotFound(db.to_string()))
        })
    }

    // ---- writes

    /// Store points; durable (fsynced, group commit) when this returns.
    /// `rp` `None` is the database's default retention policy.
    pub fn write(
        &self,
        db: &str,
        rp: Option<&str>,
        points: &[Point<'_>],
    ) -> Result<WriteOutcome, StorageError> {
        self.engine.write(db, rp, points, WriteOptions::default())
    }

    /// A write with a version chosen by its coordinator, or one that only
    /// registers its series and field types (a node that is not a replica
    /// of the points still knows every series: SHOW and WHERE on tags run
    /// on any node).
    pub fn write_with(
        &self,
        db: &str,
        rp: Option<&str>,
        points: &[Point<'_>],
        options: WriteOptions,
    ) -> Result<WriteOutcome, StorageError> {
        self.engine.write(db, rp, points, options)
    }

    /// [`Storage::read_field`] with each value's version.
    pub fn read_field_versioned(
        &self,
        db: &str,
        rp: &str,
        series_id: u64,
        field: &str,
        range: (i64, i64),
        take: Option<Take>,
    ) -> Result<Vec<(i64, u64, Value)>, StorageError> {
        self.engine
            .read_field_versioned(db, rp, series_id, field, range, take)
    }

    /// Apply rows of a shard group (from anti-entropy or read repair),
    /// each point keeping its version.
    pub fn apply_rows(
        &self,
        shard_group: &str,
        rows: Vec<dynaflux_actors::Row>,
    ) -> Result<(), StorageError> {
        self.engine.ae_apply_rows(shard_group, rows)
    }

    /// Forget what deletes older than `version` removed (their grace is
    /// over); how many records went.
    pub fn purge_deletes(&self, version: u64) -> Result<usize, StorageError> {
        self.engine.purge_deletes(version)
    }

    /// A row of `points` (time, version, value) of one field of one series,
    /// for read repair.
    pub fn repair_row(
        db: &str,
        series: &SeriesInfo,
        field: &str,
        points: &[(i64, u64, Value)],
    ) -> Result<dynaflux_actors::Row, StorageError> {
        engine::repair_row(db, series, field, points)
    }

    /// The shard group name of `db`/`rp` that holds `time` (for rows that
    /// only need the database and retention policy).
    pub fn shard_group_name(db: &str, rp: &str, start: i64) -> String {
        format!("{db}\u{1f}{rp}\u{1f}{start}")
    }

    /// A new version from this node's clock (a coordinator stamps a write
    /// once, and every replica stores that version).
    pub fn next_version(&self) -> u64 {
        self.engine.next_version()
    }

    /// The local id of each series key, if this node knows the series.
    pub fn series_ids(&self, db: &str, keys: &[&str]) -> Result<Vec<Option<u64>>, StorageError> {
        self.engine.series_ids(db, keys)
    }

    /// Hinted handoff: keep `hint` for `target`, fsynced before returning.
    pub fn hint_push(&self, target: &str, hint: &[u8]) -> Result<(), StorageError> {
        self.engine.hint_push(target, hint)
    }

    /// The oldest `limit` hints for `target`, as (key, hint).
    pub fn hint_batch(&self, target: &str, limit: usize) -> Result<Vec<Hint>, StorageError> {
        self.engine.hint_batch(target, limit)
    }

    /// Forget delivered hints.
    pub fn hint_remove(&self, keys: &[Vec<u8>]) -> Result<(), StorageError> {
        self.engine.hint_remove(keys)
    }

    /// Per target node: (hints, bytes, oldest hint's wall-clock ms).
    pub fn hint_queues(
        &self,
    ) -> Result<std::collections::BTreeMap<String, (u64, u64, u64)>, StorageError> {
        self.engine.hint_queues()
    }

    /// Points this node has stored since it started.
    /// Every series of `db` with its measurement's fields: what a node that
    /// joins copies so that it plans queries over series it holds no
    /// points of (every node indexes every series).
    pub fn catalog_series(&self, db: &str) -> Result<Vec<CatalogSeries>, StorageError> {
        let mut out = Vec::new();
        for measurement in self.measurements(db)? {
            let fields: Vec<(String, FieldType)> =
                self.field_types(db, &measurement)?.into_iter().collect();
            if fields.is_empty() {
                continue;
            }
            for series in self.series(db, &measurement)? {
                out.push(CatalogSeries {
                    measurement: measurement.clone(),
                    tags: series.tags,
                    fields: fields.clone(),
                });
            }
        }
        Ok(out)
    }

    /// Register `series` (from a peer's [`Storage::catalog_series`]) in
    /// the index, without points.
    pub fn register_series(&self, db: &str, series: &[CatalogSeries]) -> Result<(), StorageError> {
        use std::borrow::Cow;
        let points: Vec<crate::lineproto::Point<'_>> = series
            .iter()
            .enumerate()
            .map(|(line, entry)| crate::lineproto::Point {
                measurement: Cow::Borrowed(entry.measurement.as_str()),
                tags: entry
                    .tags
                    .iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
                    .collect(),
                fields: entry
                    .fields
                    .iter()
                    .map(|(name, kind)| {
                        let value = match kind {
                            FieldType::Float => crate::lineproto::FieldValue::Float(0.0),
                            FieldType::Integer => crate::lineproto::FieldValue::Integer(0),
                            FieldType::Unsigned => crate::lineproto::FieldValue::Unsigned(0),
                            FieldType::String => {
                                crate::lineproto::FieldValue::String(Cow::Borrowed(""))
                            }
                            FieldType::Boolean => crate::lineproto::FieldValue::Boolean(false),
                        };
                        (Cow::Borrowed(name.as_str()), value)
                    })
                    .collect(),
                timestamp: 0,
                line: line + 1,
                text: "",
            })
            .collect();
        for chunk in points.chunks(10_000) {
            self.write_with(
                db,
                None,
                chunk,
                WriteOptions {
                    version: Some(self.next_version()),
                    values: false,
                },
            )?;
        }
        Ok(())
    }

    /// The points this node holds now (every shard group, resolved).
    pub fn points_held(&self) -> Result<u64, StorageError> {
        self.engine.points_held()
    }

    pub fn points_stored(&self) -> u64 {
        self.engine.points_stored()
    }

    /// Blocks merged away by background compaction since start.
    pub fn blocks_compacted(&self) -> u64 {
        self.engine.blocks_compacted()
    }

    /// Merkle leaves hashed from their data since start.
    pub fn leaves_rehashed(&self) -> u64 {
        self.engine.leaves_rehashed()
    }

    // ---- schema reads (the series index is per database)

    /// Measurements that have series, sorted.
    pub fn measurements(&self, db: &str) -> Result<Vec<String>, StorageError> {
        self.engine.measurements(db)
    }
    /// Sorted by field name.
    pub fn field_types(
        &self,
        db: &str,
        measurement: &str,
    ) -> Result<Vec<(String, FieldType)>, StorageError> {
        self.engine.field_types(db, measurement)
    }
    /// Sorted.
    pub fn tag_keys(&self, db: &str, measurement: &str) -> Result<Vec<String>, StorageError> {
        self.engine.tag_keys(db, measurement)
    }
    /// Sorted.
    pub fn tag_values(
        &self,
        db: &str,
        measurement: &str,
        tag_key: &str,
    ) -> Result<Vec<String>, StorageError> {
        self.engine.tag_values(db, measurement, tag_key)
    }
    /// Every series of a measurement, sorted by series key.
    pub fn series(&self, db: &str, measurement: &str) -> Result<Vec<SeriesInfo>, StorageError> {
        self.engine.series(db, measurement)
    }
    /// The series of a measurement whose tags satisfy `keep`, sorted by series key.
    pub fn series_where(
        &self,
        db: &str,
        measurement: &str,
        keep: &SeriesFilter<'_>,
    ) -> Result<Vec<SeriesInfo>, StorageError> {
        self.engine.series_where(db, measurement, keep)
    }
    /// Series ids of a measurement with `tag_key = tag_value` (inverted index), sorted.
    pub fn series_with_tag(
        &self,
        db: &str,
        measurement: &str,
        tag_key: &str,
        tag_value: &str,
    ) -> Result<Vec<u64>, StorageError> {
        self.engine
            .series_with_tag(db, measurement, tag_key, tag_value)
    }
    pub fn drop_measurement(&self, db: &str, measurement: &str) -> Result<(), StorageError> {
        self.engine.drop_measurement(db, measurement)
    }
    /// Delete the points of some series with `min_time <= time <= max_time`,
    /// in every retention policy; a series left without points is dropped.
    pub fn delete_points(
        &self,
        db: &str,
        series_ids: &[u64],
        min_time: i64,
        max_time: i64,
    ) -> Result<(), StorageError> {
        self.engine
            .delete_points(db, series_ids, min_time, max_time)
    }

    // ---- data reads

    /// The values of one field of one series with `min_time <= time <= max_time`,
    /// ascending by time, one value per timestamp (the highest version wins).
    pub fn read_field(
        &self,
        db: &str,
        rp: &str,
        series_id: u64,
        field: &str,
        (min_time, max_time): (i64, i64),
        take: Option<Take>,
    ) -> Result<Vec<(i64, Value)>, StorageError> {
        self.engine
            .read_field(db, rp, series_id, field, (min_time, max_time), take)
    }
}

/// The node's engine as anti-entropy sees it: shard groups of versioned
/// rows, compared per partition.
impl dynaflux_actors::RangeStore for Storage {
    type Error = StorageError;

    fn shard_groups(&self) -> Result<Vec<String>, StorageError> {
        Ok(self.engine.ae_shard_groups())
    }

    fn leaves(
        &self,
        shard_group: &str,
        partitions: &dynaflux_actors::PartitionSet,
        horizon: dynaflux_actors::Version,
    ) -> Result<Vec<dynaflux_actors::Leaf>, StorageError> {
        self.engine.ae_leaves(shard_group, partitions, horizon)
    }

    fn scan_partition(
        &self,
        shard_group: &str,
        partition: u32,
    ) -> Result<Vec<dynaflux_actors::Row>, StorageError> {
        self.engine.ae_scan_partition(shard_group, partition)
    }

    fn apply_rows(
        &self,
        shard_group: &str,
        rows: Vec<dynaflux_actors::Row>,
    ) -> Result<(), StorageError> {
        self.engine.ae_apply_rows(shard_group, rows)
    }

    fn drop_partitions(
        &self,
        shard_group: &str,
        partitions: &dynaflux_actors::PartitionSet,
    ) -> Result<u64, StorageError> {
        self.engine.ae_drop_partitions(shard_group, partitions)
    }
}
