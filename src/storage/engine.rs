//! The engine behind [`super::Storage`]: fjall keyspaces, the WAL with group
//! commit, the write buffer, flushes to compressed blocks, reads, retention.
//!
//! The write-ahead log is a directory of segment files (see [`super::wal`]);
//! each entry is one accepted write batch (rmp-serde [`WalBatch`]).
//!
//! Keyspaces of the one fjall `Database`:
//! - `meta`: the catalog, one rmp-serde value under `catalog`;
//! - `series`: `db id u32 | series id u64` -> rmp-serde `(measurement, tags)`;
//! - `s.<db id>.<rp id>.<shard start>`: one per shard group; blocks under
//!   `token u64 | series id u64 | field id u32 | block start (sign-flipped) u64 | block seq u64`.
//!
//! All integers in keys are big-endian, so one field of one series is one
//! time-ordered range and a ring range is one contiguous scan.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dynaflux_actors::Hlc;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use parking_lot::{Condvar, Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::block::{self, Column};
use super::catalog::{CatalogState, RpMeta};
use super::wal::{self, Wal};
use super::{
    FieldType, Hint, RetentionPolicyInfo, RetentionPolicySpec, RetentionPolicyUpdate, SeriesFilter,
    SeriesInfo, StorageError, StorageOptions, Take, Value, WriteOptions, WriteOutcome,
};
use crate::lineproto::{self, FieldValue, Point};

#[path = "compact.rs"]
mod compact;
#[path = "deletes.rs"]
mod deletes;
#[path = "rows.rs"]
mod rows;
pub use deletes::with_delete_version;
pub use rows::repair_row;
use rows::LeafBook;

/// What a column read gives: values, or values with their versions.
enum Read {
    Plain(Vec<(i64, Value)>),
    Versioned(Vec<(i64, u64, Value)>),
}

/// FxHash: the keys are small integers and short strings of our own.
type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;
type HashSet<K> = rustc_hash::FxHashSet<K>;

const CATALOG_KEY: &[u8] = b"catalog";

/// The write buffer may hold this many times `buffer_max_bytes` while a
/// flush runs; past it writes wait (see [`Engine::wait_for_room`]).
const BUFFER_HARD_LIMIT: u64 = 4;

fn engine_error(error: impl std::fmt::Display) -> StorageError {
    StorageError::Engine(error.to_string())
}

/// A series created by a batch: `(id, measurement, tags)`.
type NewSeries = (u64, String, Vec<(String, String)>);

/// Encoded blocks of one shard group: `(key, block)`.
type ShardBlocks = Vec<(Vec<u8>, Vec<u8>)>;

/// One accepted write batch, as logged in the WAL.
#[derive(Debug, Serialize, Deserialize)]
struct WalBatch {
    db: u32,
    rp: u32,
    version: u64,
    /// Series this batch created: `(id, measurement, tags)`. The WAL carries
    /// them so that a replay needs nothing that was not fsynced with it.
    new_series: Vec<NewSeries>,
    points: Vec<WalPoint>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WalPoint {
    series: u64,
    time: i64,
    fields: Vec<(u32, Value)>,
    /// This point's own version (a repair carries each point's original
    /// version); 0: the batch's.
    #[serde(default)]
    version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ShardId {
    db: u32,
    rp: u32,
    start: i64,
}

impl ShardId {
    fn keyspace_name(self) -> String {
        format!("s.{}.{}.{}", self.db, self.rp, self.start)
    }

    fn parse(name: &str) -> Option<ShardId> {
        let mut parts = name.strip_prefix("s.")?.splitn(3, '.');
        Some(ShardId {
            db: parts.next()?.parse().ok()?,
            rp: parts.next()?.parse().ok()?,
            start: parts.next()?.parse().ok()?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ColumnKey {
    db: u32,
    rp: u32,
    series: u64,
    field: u32,
}

struct BufferedColumn {
    token: u64,
    column: Column,
}

#[derive(Default)]
struct Buffer {
    columns: HashMap<ColumnKey, BufferedColumn>,
    bytes: usize,
    since: Option<Instant>,
}

struct SeriesEntry {
    info: SeriesInfo,
    token: u64,
}

/// The series index of one database, with the inverted index.
#[derive(Default)]
struct SeriesIndex {
    by_key: HashMap<String, u64>,
    series: HashMap<u64, SeriesEntry>,
    by_measurement: BTreeMap<String, BTreeSet<u64>>,
    /// measurement -> tag key -> tag value -> series ids.
    postings: HashMap<String, BTreeMap<String, BTreeMap<String, BTreeSet<u64>>>>,
    next_id: u64,
}

impl SeriesIndex {
    fn insert(&mut self, db_name: &str, id: u64, measurement: String, tags: Vec<(String, String)>) {
        let key = lineproto::series_key(&measurement, &tags);
        let token = series_token(db_name, &key);
        let postings = self.postings.entry(measurement.clone()).or_default();
        for (tag_key, tag_value) in &tags {
            postings
                .entry(tag_key.clone())
                .or_default()
                .entry(tag_value.clone())
                .or_default()
                .insert(id);
        }
        self.by_measurement
            .entry(measurement.clone())
            .or_default()
            .insert(id);
        self.by_key.insert(key.clone(), id);
        self.series.insert(
            id,
            SeriesEntry {
                info: SeriesInfo {
                    id,
                    measurement,
                    tags,
                    key,
                },
                token,
            },
        );
        self.next_id = self.next_id.max(id + 1);
    }

    /// Remove one series; returns its token.
    fn remove_series(&mut self, id: u64) -> Option<u64> {
        let entry = self.series.remove(&id)?;
        self.by_key.remove(&entry.info.key);
        let measurement = &entry.info.measurement;
        if let Some(keys) = self.postings.get_mut(measurement) {
            for (key, value) in &entry.info.tags {
                if let Some(values) = keys.get_mut(key) {
                    if let Some(ids) = values.get_mut(value) {
                        ids.remove(&id);
                        if ids.is_empty() {
                            values.remove(value);
                        }
                    }
                    if values.is_empty() {
                        keys.remove(key);
                    }
                }
            }
        }
        if let Some(ids) = self.by_measurement.get_mut(measurement) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_measurement.remove(measurement);
                self.postings.remove(measurement);
            }
        }
        Some(entry.token)
    }
}

/// The ring token of a series: xxh3 of `db \0 series key`. Every retention
/// policy of a series lives on the same replicas.
pub fn series_token(db: &str, series_key: &str) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(db.as_bytes());
    hasher.update(&[0]);
    hasher.update(series_key.as_bytes());
    hasher.digest()
}

fn series_record_key(db: u32, id: u64) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&db.to_be_bytes());
    key[4..].copy_from_slice(&id.to_be_bytes());
    key
}

fn flip(time: i64) -> u64 {
    (time as u64) ^ (1 << 63)
}

fn block_prefix(token: u64, series: u64, field: u32) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..8].copy_from_slice(&token.to_be_bytes());
    key[8..16].copy_from_slice(&series.to_be_bytes());
    key[16..20].copy_from_slice(&field.to_be_bytes());
    key
}

fn shard_start(time: i64, shard_duration: u64) -> i64 {
    let duration = i64::try_from(shard_duration.max(1)).unwrap_or(i64::MAX);
    time.div_euclid(duration).saturating_mul(duration)
}

/// The smallest HLC version of the current wall time.
fn now_version() -> u64 {
    dynaflux_actors::hlc::version_at(SystemTime::now())
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

struct Log {
    wal: Wal,
    last_seq: u64,
}

struct SyncState {
    durable: u64,
    syncing: bool,
}

pub struct Engine {
    options: StorageOptions,
    db: Database,
    meta: Keyspace,
    series_ks: Keyspace,
    /// Hinted handoff: `target node \0 seq` -> an opaque hint.
    hints_ks: Keyspace,
    catalog: RwLock<CatalogState>,
    indexes: RwLock<HashMap<u32, Arc<RwLock<SeriesIndex>>>>,
    shards: RwLock<BTreeMap<ShardId, Keyspace>>,
    buffer: Mutex<Buffer>,
    /// Buffers being flushed: still read by queries until their blocks are in.
    frozen: RwLock<Vec<Arc<Buffer>>>,
    hlc: Hlc,
    /// Points stored by this node since it started (not index-only writes).
    points_stored: AtomicU64,
    /// The WAL and the sequence number of its last entry. Appending and
    /// buffering happen under this lock, so a flush that rotates the WAL and
    /// takes the buffer under it sees exactly the entries of the old segments.
    log: Mutex<Log>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    flush_lock: Mutex<()>,
    block_seq: AtomicU64,
    signal: Arc<Signal>,
    background: Mutex<Option<JoinHandle<()>>>,
    /// Merkle leaves per (shard group, partition), for anti-entropy.
    leaves: Mutex<LeafBook>,
    /// What deletes removed, so that late copies do not bring it back.
    deletes: RwLock<deletes::DeleteBook>,
    /// Bumped (under the log lock) when deletes take series out of the
    /// index: a write that resolved its series before resolves them again.
    series_epoch: AtomicU64,
    /// Fields written by flushes, for compaction to look at.
    compaction: Mutex<compact::CompactionQueue>,
    blocks_compacted: AtomicU64,
}

impl Engine {
    pub fn open(options: StorageOptions) -> Result<Arc<Engine>, StorageError> {
        std::fs::create_dir_all(&options.data_dir).map_err(engine_error)?;
        let db = Database::builder(options.data_dir.join("fjall"))
            .max_journaling_size(128 << 20)
            .open()
            .map_err(engine_error)?;
        let meta = db
            .keyspace("meta", KeyspaceCreateOptions::default)
            .map_err(engine_error)?;
        let series_ks = db
            .keyspace("series", KeyspaceCreateOptions::default)
            .map_err(engine_error)?;
        let hints_ks = db
            .keyspace("hints", KeyspaceCreateOptions::default)
            .map_err(engine_error)?;
        let catalog: CatalogState = match meta.get(CATALOG_KEY).map_err(engine_error)? {
            Some(bytes) => rmp_serde::from_slice(&bytes).map_err(engine_error)?,
            None => CatalogState::default(),
        };
        let mut indexes: HashMap<u32, SeriesIndex> = HashMap::default();
        for database in &catalog.databases {
            indexes.insert(database.id, SeriesIndex::default());
        }
        for item in series_ks.iter() {
            let (key, value) = item.into_inner().map_err(engine_error)?;
            if key.len() != 12 {
                continue;
            }
            let db_id = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
            let mut id = [0u8; 8];
            id.copy_from_slice(&key[4..]);
            let (Some(index), Some(database)) =
                (indexes.get_mut(&db_id), catalog.database_by_id(db_id))
            else {
                continue;
            };
            let (measurement, tags): (String, Vec<(String, String)>) =
                rmp_serde::from_slice(&value).map_err(engine_error)?;
            index.insert(&database.name, u64::from_be_bytes(id), measurement, tags);
        }
        let mut shards = BTreeMap::new();
        for name in db.list_keyspace_names() {
            if let Some(shard) = ShardId::parse(&name) {
                let keyspace = db
                    .keyspace(&name, KeyspaceCreateOptions::default)
                    .map_err(engine_error)?;
                shards.insert(shard, keyspace);
            }
        }
        let wal_dir = options.data_dir.join("wal");
        let deletes_book = Engine::load_deletes(&meta)?;
        let engine = Arc::new(Engine {
            options,
            db,
            meta,
            series_ks,
            hints_ks,
            catalog: RwLock::new(catalog),
            indexes: RwLock::new(
                indexes
                    .into_iter()
                    .map(|(id, index)| (id, Arc::new(RwLock::new(index))))
                    .collect(),
            ),
            shards: RwLock::new(shards),
            buffer: Mutex::new(Buffer::default()),
            frozen: RwLock::new(Vec::new()),
            hlc: Hlc::new(),
            points_stored: AtomicU64::new(0),
            log: Mutex::new(Log {
                wal: Wal::open(&wal_dir)?,
                last_seq: 0,
            }),
            sync: Mutex::new(SyncState {
                durable: 0,
                syncing: false,
            }),
            synced: Condvar::new(),
            flush_lock: Mutex::new(()),
            block_seq: AtomicU64::new(now_nanos() as u64),
            signal: Arc::new(Signal::default()),
            background: Mutex::new(None),
            leaves: Mutex::new(LeafBook::default()),
            deletes: RwLock::new(deletes_book),
            series_epoch: AtomicU64::new(0),
            compaction: Mutex::new(compact::CompactionQueue::default()),
            blocks_compacted: AtomicU64::new(0),
        });
        engine.replay_wal(&wal_dir)?;
        let weak = Arc::downgrade(&engine);
        let signal = engine.signal.clone();
        let handle = std::thread::Builder::new()
            .name("storage-background".into())
            .spawn(move || background_loop(weak, signal))
            .map_err(engine_error)?;
        *engine.background.lock() = Some(handle);
        Ok(engine)
    }

    fn replay_wal(&self, dir: &std::path::Path) -> Result<(), StorageError> {
        let mut replayed = 0usize;
        let mut entries = 0u64;
        wal::replay(dir, |_, payload| {
            let batch: WalBatch = rmp_serde::from_slice(payload).map_err(engine_error)?;
            entries += 1;
            self.hlc.observe(batch.version);
            let Some(db_name) = self
                .catalog
                .read()
                .database_by_id(batch.db)
                .map(|database| database.name.clone())
            else {
                return Ok(());
            };
            if !batch.new_series.is_empty() {
                let index = self
                    .indexes
                    .read()
                    .get(&batch.db)
                    .cloned()
                    .unwrap_or_default();
                let mut index = index.write();
                let mut records = self.db.batch();
                for (id, measurement, tags) in &batch.new_series {
                    if !index.series.contains_key(id) {
                        let record =
                            rmp_serde::to_vec(&(measurement, tags)).map_err(engine_error)?;
                        records.insert(&self.series_ks, series_record_key(batch.db, *id), record);
                        index.insert(&db_name, *id, measurement.clone(), tags.clone());
                    }
                }
                records.commit().map_err(engine_error)?;
            }
            let tokens = self.tokens_of(batch.db, &batch.points);
            if let Some(tokens) = tokens {
                Self::buffer_batch(&mut self.buffer.lock(), &batch, &tokens);
                let shard_duration = self
                    .catalog
                    .read()
                    .database_by_id(batch.db)
                    .and_then(|database| database.rps.iter().find(|rp| rp.id == batch.rp))
                    .map(|rp| rp.shard_duration);
                if let Some(shard_duration) = shard_duration {
                    self.leaves
                        .lock()
                        .mark_written(&batch, &tokens, shard_duration, None);
                }
                replayed += batch.points.len();
            }
            Ok(())
        })?;
        self.log.lock().last_seq = entries;
        self.sync.lock().durable = entries;
        if replayed > 0 {
            tracing::info!(points = replayed, "replayed the write-ahead log");
        }
        Ok(())
    }

    /// The token of every point's series; `None` if the database is gone.
    /// A series that was dropped since gets token 0 and is skipped at flush.
    fn tokens_of(&self, db: u32, points: &[WalPoint]) -> Option<Vec<Option<u64>>> {
        let index = self.indexes.read().get(&db)?.clone();
        let index = index.read();
        Some(
            points
                .iter()
                .map(|point| index.series.get(&point.series).map(|entry| entry.token))
                .collect(),
        )
    }

    fn buffer_batch(buffer: &mut Buffer, batch: &WalBatch, tokens: &[Option<u64>]) {
        for (point, token) in batch.points.iter().zip(tokens) {
            let Some(token) = *token else { continue };
            for (field, value) in &point.fields {
                let key = ColumnKey {
                    db: batch.db,
                    rp: batch.rp,
                    series: point.series,
                    field: *field,
                };
                let entry = buffer.columns.entry(key).or_insert_with(|| BufferedColumn {
                    token,
                    column: Column::new(value.field_type()),
                });
                if entry.column.values.push(value) {
                    entry.column.times.push(point.time);
                    entry.column.versions.push(if point.version == 0 {
                        batch.version
                    } else {
                        point.version
                    });
                    buffer.bytes += 16 + block::Values::value_size(value);
                }
            }
        }
        if buffer.since.is_none() {
            buffer.since = Some(Instant::now());
        }
    }

    // ------------------------------------------------------------ catalog

    fn persist_catalog(&self, catalog: &CatalogState) -> Result<(), StorageError> {
        let bytes = rmp_serde::to_vec(catalog).map_err(engine_error)?;
        self.meta.insert(CATALOG_KEY, bytes).map_err(engine_error)?;
        self.db.persist(PersistMode::SyncAll).map_err(engine_error)
    }

    pub fn with_catalog<T>(&self, f: impl FnOnce(&CatalogState) -> T) -> T {
        f(&self.catalog.read())
    }

    /// Change the catalog and persist it; `f` returns whether it changed.
    pub fn update_catalog<T>(
        &self,
        f: impl FnOnce(&mut CatalogState) -> Result<(T, bool), StorageError>,
    ) -> Result<T, StorageError> {
        let mut catalog = self.catalog.write();
        let mut copy = catalog.clone();
        let (result, changed) = f(&mut copy)?;
        if changed {
            self.persist_catalog(&copy)?;
            let mut indexes = self.indexes.write();
            for database in &copy.databases {
                indexes.entry(database.id).or_default();
            }
            *catalog = copy;
        }
        Ok(result)
    }

    pub fn create_database(
        &self,
        name: &str,
        spec: Option<RetentionPolicySpec>,
    ) -> Result<(), StorageError> {
        self.update_catalog(|catalog| Ok(((), catalog.create_database(name, spec)?)))
    }

    pub fn create_retention_policy(
        &self,
        db: &str,
        spec: RetentionPolicySpec,
        make_default: bool,
    ) -> Result<(), StorageError> {
        self.update_catalog(|catalog| {
            Ok(((), catalog.create_retention_policy(db, spec, make_default)?))
        })
    }

    pub fn alter_retention_policy(
        &self,
        db: &str,
        name: &str,
        update: RetentionPolicyUpdate,
    ) -> Result<(), StorageError> {
        self.update_catalog(|catalog| {
            catalog
                .alter_retention_policy(db, name, update)
                .map(|()| ((), true))
        })
    }

    pub fn retention_policies(&self, db: &str) -> Result<Vec<RetentionPolicyInfo>, StorageError> {
        let catalog = self.catalog.read();
        let database = catalog
            .database(db)
            .ok_or_else(|| StorageError::DatabaseNotFound(db.to_string()))?;
        Ok(database
            .rps
            .iter()
            .map(|rp| rp.info(rp.name == database.default_rp))
            .collect())
    }

    pub fn drop_database(&self, name: &str) -> Result<(), StorageError> {
        self.flush()?;
        let _flush = self.flush_lock.lock();
        let dropped = self.update_catalog(|catalog| {
            let dropped = catalog.drop_database(name);
            let changed = dropped.is_some();
            Ok((dropped, changed))
        })?;
        let Some(dropped) = dropped else {
            return Ok(());
        };
        self.indexes.write().remove(&dropped.id);
        self.buffer
            .lock()
            .columns
            .retain(|key, _| key.db != dropped.id);
        self.drop_shards(|shard| shard.db == dropped.id)?;
        let mut batch = self.db.batch();
        for item in self.series_ks.prefix(dropped.id.to_be_bytes()) {
            batch.remove(&self.series_ks, item.key().map_err(engine_error)?);
        }
        batch.commit().map_err(engine_error)?;
        self.db.persist(PersistMode::SyncAll).map_err(engine_error)
    }

    pub fn drop_retention_policy(&self, db: &str, name: &str) -> Result<(), StorageError> {
        self.flush()?;
        let _flush = self.flush_lock.lock();
        let db_id = self.catalog.read().database(db).map(|database| database.id);
        let dropped = self.update_catalog(|catalog| {
            let dropped = catalog.drop_retention_policy(db, name)?;
            let changed = dropped.is_some();
            Ok((dropped, changed))
        })?;
        if let (Some(rp), Some(db_id)) = (dropped, db_id) {
            self.buffer
                .lock()
                .columns
                .retain(|key, _| !(key.db == db_id && key.rp == rp.id));
            self.drop_shards(|shard| shard.db == db_id && shard.rp == rp.id)?;
        }
        Ok(())
    }

    fn drop_shards(&self, which: impl Fn(&ShardId) -> bool) -> Result<(), StorageError> {
        let doomed: Vec<(ShardId, Keyspace)> = {
            let mut shards = self.shards.write();
            let ids: Vec<ShardId> = shards
                .keys()
                .filter(|shard| which(shard))
                .copied()
                .collect();
            ids.into_iter()
                .filter_map(|id| shards.remove(&id).map(|keyspace| (id, keyspace)))
                .collect()
        };
        self.leaves.lock().drop_shards(&which);
        for (id, keyspace) in doomed {
            tracing::info!(shard = %id.keyspace_name(), "dropping shard group");
            self.db.delete_keyspace(keyspace).map_err(engine_error)?;
        }
        Ok(())
    }

    // ------------------------------------------------------------ writes

    pub fn write(
        &self,
        db_name: &str,
        rp: Option<&str>,
        points: &[Point<'_>],
        options: WriteOptions,
    ) -> Result<WriteOutcome, StorageError> {
        self.write_points(db_name, rp, points, options, None)
    }

    /// Write with `point_versions[point.line]` as each point's version (a
    /// repair keeps the versions the points were written with).
    fn write_points(
        &self,
        db_name: &str,
        rp: Option<&str>,
        points: &[Point<'_>],
        options: WriteOptions,
        point_versions: Option<&[u64]>,
    ) -> Result<WriteOutcome, StorageError> {
        let mut outcome = WriteOutcome::default();
        // Validate against the catalog; a new field takes the write lock.
        let mut validated = validate(&self.catalog.read(), db_name, rp, points)?;
        if let Validated::NewFields(fields) = &validated {
            let mut catalog = self.catalog.write();
            let mut copy = catalog.clone();
            let database = copy.database_mut(db_name)?;
            for (measurement, field, field_type) in fields {
                let meta = database
                    .measurements
                    .entry(measurement.clone())
                    .or_default();
                if meta.field(field).is_none() {
                    meta.fields.push((field.clone(), *field_type));
                }
            }
            self.persist_catalog(&copy)?;
            *catalog = copy;
            validated = validate(&catalog, db_name, rp, points)?;
        }
        let Validated::Done {
            db_id,
            rp: rp_meta,
            points: accepted,
            dropped,
            reason,
        } = validated
        else {
            return Err(StorageError::Engine(
                "field catalog update did not take".into(),
            ));
        };
        outcome.dropped = dropped;
        outcome.conflict = reason;
        let mut accepted = accepted;
        if let Some(batch_version) = options.version {
            // A copy that arrives after a delete covering it stays deleted.
            let deletes = self.deletes.read();
            if !deletes.is_empty() {
                accepted.retain(|(point, _)| {
                    let version = point_versions
                        .and_then(|versions| versions.get(point.line).copied())
                        .unwrap_or(batch_version);
                    let key = lineproto::series_key(&point.measurement, &point.tags);
                    !deletes.covers(db_name, &point.measurement, &key, point.timestamp, version)
                });
            }
        }
        if accepted.is_empty() {
            return Ok(outcome);
        }
        let (accepted, mut accepted_fields): (Vec<_>, Vec<_>) = accepted.into_iter().unzip();
        let (batch, seq, flush_needed) = loop {
            let epoch = self.series_epoch.load(Ordering::SeqCst);
            // Resolve series ids, creating the new ones.
            let index = self
                .indexes
                .read()
                .get(&db_id)
                .cloned()
                .ok_or_else(|| StorageError::DatabaseNotFound(db_name.to_string()))?;
            let mut wal_points = Vec::with_capacity(accepted.len());
            let mut tokens = Vec::with_capacity(accepted.len());
            let mut missing = Vec::new();
            let mut keys = Vec::with_capacity(accepted.len());
            {
                let index = index.read();
                let fields = std::mem::take(&mut accepted_fields);
                for (position, (point, fields)) in accepted.iter().zip(fields).enumerate() {
                    let key = lineproto::series_key(&point.measurement, &point.tags);
                    let id = index.by_key.get(&key).copied();
                    match id.and_then(|id| index.series.get(&id)) {
                        Some(entry) => tokens.push(Some(entry.token)),
                        None => {
                            tokens.push(None);
                            missing.push((position, key.clone()));
                        }
                    }
                    keys.push(key);
                    wal_points.push(WalPoint {
                        series: id.unwrap_or(0),
                        time: point.timestamp,
                        fields,
                        version: point_versions
                            .and_then(|versions| versions.get(point.line).copied())
                            .unwrap_or(0),
                    });
                }
            }
            let mut new_series = Vec::new();
            if !missing.is_empty() {
                let mut index = index.write();
                let mut batch = self.db.batch();
                for (position, key) in missing {
                    let point = accepted[position];
                    let id = match index.by_key.get(&key) {
                        Some(&id) => id,
                        None => {
                            let id = index.next_id.max(1);
                            let tags: Vec<(String, String)> = point
                                .tags
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect();
                            let record = rmp_serde::to_vec(&(point.measurement.as_ref(), &tags))
                                .map_err(engine_error)?;
                            batch.insert(&self.series_ks, series_record_key(db_id, id), record);
                            new_series.push((id, point.measurement.to_string(), tags.clone()));
                            index.insert(db_name, id, point.measurement.to_string(), tags);
                            id
                        }
                    };
                    wal_points[position].series = id;
                    tokens[position] = index.series.get(&id).map(|entry| entry.token);
                }
                batch.commit().map_err(engine_error)?;
            }
            if !options.values {
                // Index only: the series (and field types, above) without points.
                if new_series.is_empty() {
                    return Ok(outcome);
                }
                wal_points.clear();
            }
            let version = match options.version {
                Some(version) => {
                    self.hlc.observe(version);
                    version
                }
                None => self.hlc.now(),
            };
            let batch = WalBatch {
                db: db_id,
                rp: rp_meta.id,
                version,
                new_series,
                points: wal_points,
            };
            let encoded = rmp_serde::to_vec(&batch).map_err(engine_error)?;
            let hashes = self.point_hashes(db_name, &accepted, &keys, &batch);
            self.wait_for_room()?;
            let (seq, flush_needed) = {
                let mut log = self.log.lock();
                if self.series_epoch.load(Ordering::SeqCst) != epoch {
                    // A delete took series out of the index meanwhile:
                    // resolve again (the fields come back from the batch).
                    drop(log);
                    accepted_fields = batch.points.into_iter().map(|p| p.fields).collect();
                    accepted_fields.resize_with(accepted.len(), Vec::new);
                    continue;
                }
                log.wal.append(&encoded)?;
                log.last_seq += 1;
                let mut buffer = self.buffer.lock();
                Self::buffer_batch(&mut buffer, &batch, &tokens);
                // The leaves go dirty in the step that makes the points
                // readable and durable: under the log lock, before the answer.
                self.leaves.lock().mark_written(
                    &batch,
                    &tokens,
                    rp_meta.shard_duration,
                    Some(&hashes),
                );
                (
                    log.last_seq,
                    buffer.bytes as u64 >= self.options.buffer_max_bytes,
                )
            };
            break (batch, seq, flush_needed);
        };
        if flush_needed {
            self.signal.wake.notify_all();
        }
        self.sync_to(seq)?;
        outcome.written = batch.points.len();
        self.points_stored
            .fetch_add(batch.points.len() as u64, Ordering::Relaxed);
        Ok(outcome)
    }

    /// Back-pressure: while the write buffer holds more than
    /// [`BUFFER_HARD_LIMIT`] times `buffer_max_bytes` (flushes are behind),
    /// a write waits for a flush, and after `backpressure_wait` is refused
    /// (503 to the client) rather than grow memory without bound.
    /// Hold off flushes while the guard lives (tests of back-pressure).
    #[cfg(test)]
    pub fn hold_flushes(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.flush_lock.lock()
    }

    fn wait_for_room(&self) -> Result<(), StorageError> {
        let limit = self
            .options
            .buffer_max_bytes
            .saturating_mul(BUFFER_HARD_LIMIT);
        let full = || self.buffer.lock().bytes as u64 >= limit;
        if !full() {
            return Ok(());
        }
        let deadline = Instant::now() + self.options.backpressure_wait;
        self.signal.wake.notify_all();
        while full() {
            if Instant::now() >= deadline {
                tracing::warn!(limit, "write refused: the write buffer is full");
                return Err(StorageError::Overloaded);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Group commit: wait until the WAL is fsynced up to `seq`. One waiter
    /// fsyncs for everyone appended before it started.
    fn sync_to(&self, seq: u64) -> Result<(), StorageError> {
        if !self.options.wal_fsync {
            return Ok(());
        }
        let mut state = self.sync.lock();
        loop {
            if state.durable >= seq {
                return Ok(());
            }
            if state.syncing {
                self.synced.wait(&mut state);
                continue;
            }
            state.syncing = true;
            let (target, file) = {
                let log = self.log.lock();
                (log.last_seq, log.wal.current())
            };
            drop(state);
            let result = file.sync_data();
            state = self.sync.lock();
            state.syncing = false;
            if result.is_ok() {
                state.durable = state.durable.max(target);
            }
            self.synced.notify_all();
            result.map_err(|error| StorageError::Engine(format!("wal fsync: {error}")))?;
        }
    }

    // ------------------------------------------------------------ flush

    /// Turn the write buffer into blocks and delete the WAL entries it covers,
    /// in one atomic fjall batch.
    pub fn flush(&self) -> Result<(), StorageError> {
        let _flush = self.flush_lock.lock();
        let (frozen, closed_segment) = {
            let mut log = self.log.lock();
            let mut buffer = self.buffer.lock();
            if buffer.columns.is_empty() {
                return Ok(());
            }
            let closed = log.wal.rotate()?;
            let frozen = Arc::new(std::mem::take(&mut *buffer));
            // Readable as frozen before it stops being the buffer: a read
            // (buffer first, then frozen, then blocks) never misses it.
            self.frozen.write().push(frozen.clone());
            (frozen, closed)
        };
        let result = self.write_blocks(&frozen);
        if let Err(error) = result {
            // The WAL still holds this data; keep it readable and flushable.
            self.frozen
                .write()
                .retain(|buffer| !Arc::ptr_eq(buffer, &frozen));
            let frozen = Arc::try_unwrap(frozen).unwrap_or_default();
            let mut buffer = self.buffer.lock();
            let newer = std::mem::replace(&mut *buffer, frozen);
            for (key, column) in newer.columns {
                match buffer.columns.get_mut(&key) {
                    Some(existing) => {
                        existing.column.times.extend(&column.column.times);
                        existing.column.versions.extend(&column.column.versions);
                        for index in 0..column.column.len() {
                            if let Some(value) = column.column.values.get(index) {
                                existing.column.values.push(&value);
                            }
                        }
                    }
                    None => {
                        buffer.columns.insert(key, column);
                    }
                }
            }
            buffer.bytes += newer.bytes;
            return Err(error);
        }
        self.frozen
            .write()
            .retain(|buffer| !Arc::ptr_eq(buffer, &frozen));
        self.log.lock().wal.delete_through(closed_segment)
    }

    /// Encode the frozen buffer into blocks and ingest them (sorted, straight
    /// into SSTs: blocks never pass through fjall's journal), then make the
    /// series and catalog records durable too.
    fn write_blocks(&self, frozen: &Buffer) -> Result<(), StorageError> {
        let started = Instant::now();
        let now = now_nanos();
        let catalog = self.catalog.read().clone();
        let mut per_shard: BTreeMap<ShardId, ShardBlocks> = BTreeMap::new();
        let mut written = Vec::new();
        let mut blocks = 0usize;
        let mut values = 0usize;
        for (key, buffered) in &frozen.columns {
            let Some(database) = catalog.database_by_id(key.db) else {
                continue;
            };
            let Some(rp) = database.rps.iter().find(|rp| rp.id == key.rp) else {
                continue;
            };
            let column = buffered.column.normalized();
            let mut start_index = 0;
            while start_index < column.len() {
                let shard_start = shard_start(column.times[start_index], rp.shard_duration);
                let shard_end = shard_start
                    .saturating_add(i64::try_from(rp.shard_duration).unwrap_or(i64::MAX));
                let mut end_index = start_index;
                while end_index < column.len() && column.times[end_index] < shard_end {
                    end_index += 1;
                }
                let expired = rp.duration != 0
                    && shard_end
                        < now.saturating_sub(i64::try_from(rp.duration).unwrap_or(i64::MAX));
                if !expired {
                    let segment = slice_column(&column, start_index, end_index);
                    let mut block_key = Vec::with_capacity(36);
                    block_key.extend_from_slice(&block_prefix(
                        buffered.token,
                        key.series,
                        key.field,
                    ));
                    block_key.extend_from_slice(&flip(segment.times[0]).to_be_bytes());
                    block_key.extend_from_slice(
                        &self.block_seq.fetch_add(1, Ordering::Relaxed).to_be_bytes(),
                    );
                    let shard = ShardId {
                        db: key.db,
                        rp: key.rp,
                        start: shard_start,
                    };
                    per_shard
                        .entry(shard)
                        .or_default()
                        .push((block_key, segment.encode()?));
                    written.push((shard, buffered.token, key.series, key.field));
                    blocks += 1;
                    values += segment.len();
                }
                start_index = end_index;
            }
        }
        for (shard, mut entries) in per_shard {
            let keyspace = self.shard_keyspace(shard)?;
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut ingestion = keyspace.start_ingestion().map_err(engine_error)?;
            for (key, value) in entries {
                ingestion.write(key, value).map_err(engine_error)?;
            }
            ingestion.finish().map_err(engine_error)?;
        }
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(engine_error)?;
        {
            let mut queue = self.compaction.lock();
            for (shard, token, series, field) in written {
                queue.push(shard, token, series, field);
            }
        }
        tracing::debug!(blocks, values, elapsed = ?started.elapsed(), "flushed write buffer");
        Ok(())
    }

    fn shard_keyspace(&self, id: ShardId) -> Result<Keyspace, StorageError> {
        if let Some(keyspace) = self.shards.read().get(&id) {
            return Ok(keyspace.clone());
        }
        let mut shards = self.shards.write();
        if let Some(keyspace) = shards.get(&id) {
            return Ok(keyspace.clone());
        }
        let keyspace = self
            .db
            .keyspace(&id.keyspace_name(), KeyspaceCreateOptions::default)
            .map_err(engine_error)?;
        shards.insert(id, keyspace.clone());
        Ok(keyspace)
    }

    // ------------------------------------------------------------ reads

    fn index(&self, db: &str) -> Result<(u32, Arc<RwLock<SeriesIndex>>), StorageError> {
        let id = self
            .catalog
            .read()
            .database(db)
            .map(|database| database.id)
            .ok_or_else(|| StorageError::DatabaseNotFound(db.to_string()))?;
        let index = self.indexes.read().get(&id).cloned().unwrap_or_default();
        Ok((id, index))
    }

    pub fn measurements(&self, db: &str) -> Result<Vec<String>, StorageError> {
        let (_, index) = self.index(db)?;
        let index = index.read();
        Ok(index.by_measurement.keys().cloned().collect())
    }

    pub fn field_types(
        &self,
        db: &str,
        measurement: &str,
    ) -> Result<Vec<(String, FieldType)>, StorageError> {
        let catalog = self.catalog.read();
        let database = catalog
            .database(db)
            .ok_or_else(|| StorageError::DatabaseNotFound(db.to_string()))?;
        let mut fields = database
            .measurements
            .get(measurement)
            .map(|meta| meta.fields.clone())
            .unwrap_or_default();
        fields.sort();
        Ok(fields)
    }

    pub fn tag_keys(&self, db: &str, measurement: &str) -> Result<Vec<String>, StorageError> {
        let (_, index) = self.index(db)?;
        let index = index.read();
        Ok(index
            .postings
            .get(measurement)
            .map(|keys| keys.keys().cloned().collect())
            .unwrap_or_default())
    }

    pub fn tag_values(
        &self,
        db: &str,
        measurement: &str,
        tag_key: &str,
    ) -> Result<Vec<String>, StorageError> {
        let (_, index) = self.index(db)?;
        let index = index.read();
        Ok(index
            .postings
            .get(measurement)
            .and_then(|keys| keys.get(tag_key))
            .map(|values| values.keys().cloned().collect())
            .unwrap_or_default())
    }

    pub fn series(&self, db: &str, measurement: &str) -> Result<Vec<SeriesInfo>, StorageError> {
        self.series_where(db, measurement, &SeriesFilter::all())
    }

    /// The series of a measurement whose tags satisfy `keep`, sorted by key;
    /// only those are copied out of the index.
    pub fn series_where(
        &self,
        db: &str,
        measurement: &str,
        keep: &SeriesFilter<'_>,
    ) -> Result<Vec<SeriesInfo>, StorageError> {
        let (_, index) = self.index(db)?;
        let index = index.read();
        let Some(all) = index.by_measurement.get(measurement) else {
            return Ok(Vec::new());
        };
        // Candidates from the inverted index: the smallest posting list of
        // the required tag values (each must hold anyway), else every series.
        let mut lists: Vec<&BTreeSet<u64>> = Vec::with_capacity(keep.equal.len());
        for (key, value) in &keep.equal {
            match index
                .postings
                .get(measurement)
                .and_then(|keys| keys.get(*key))
                .and_then(|values| values.get(*value))
            {
                Some(ids) => lists.push(ids),
                None => return Ok(Vec::new()),
            }
        }
        let candidates = lists
            .iter()
            .min_by_key(|ids| ids.len())
            .copied()
            .unwrap_or(all);
        let mut series: Vec<SeriesInfo> = candidates
            .iter()
            .filter(|id| lists.iter().all(|ids| ids.contains(id)))
            .filter_map(|id| index.series.get(id))
            .filter(|entry| (keep.keep)(&entry.info.tags))
            .map(|entry| entry.info.clone())
            .collect();
        series.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(series)
    }

    pub fn series_with_tag(
        &self,
        db: &str,
        measurement: &str,
        tag_key: &str,
        tag_value: &str,
    ) -> Result<Vec<u64>, StorageError> {
        let (_, index) = self.index(db)?;
        let index = index.read();
        Ok(index
            .postings
            .get(measurement)
            .and_then(|keys| keys.get(tag_key))
            .and_then(|values| values.get(tag_value))
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default())
    }

    pub fn series_token(&self, db: &str, series_id: u64) -> Option<u64> {
        let (_, index) = self.index(db).ok()?;
        let index = index.read();
        index.series.get(&series_id).map(|entry| entry.token)
    }

    /// Drop a measurement: every point of its series with an older version
    /// than the drop. Points written after it (a newer version: the drop
    /// reached this replica late) stay, with their series; the measurement
    /// leaves the catalog once no series of it is left.
    pub fn drop_measurement(&self, db: &str, measurement: &str) -> Result<(), StorageError> {
        let version = self.delete_version();
        self.record_measurement_drop(db, measurement, version)?;
        self.flush()?;
        let _flush = self.flush_lock.lock();
        let (db_id, index) = self.index(db)?;
        let targets: Vec<(u64, u64)> = {
            let index = index.read();
            index
                .by_measurement
                .get(measurement)
                .into_iter()
                .flatten()
                .filter_map(|id| index.series.get(id).map(|entry| (*id, entry.token)))
                .collect()
        };
        self.remove_points(db_id, &index, &targets, (i64::MIN, i64::MAX), version)?;
        if !index.read().by_measurement.contains_key(measurement) {
            self.update_catalog(|catalog| {
                let database = catalog.database_mut(db)?;
                let changed = database.measurements.remove(measurement).is_some();
                Ok(((), changed))
            })?;
        }
        self.db.persist(PersistMode::SyncAll).map_err(engine_error)
    }

    /// Delete the points of `series_ids` with `min <= time <= max` (every
    /// retention policy); a series left without points leaves the index.
    pub fn delete_points(
        &self,
        db: &str,
        series_ids: &[u64],
        min: i64,
        max: i64,
    ) -> Result<(), StorageError> {
        let (db_id, index) = self.index(db)?;
        let (targets, keys): (Vec<(u64, u64)>, Vec<String>) = {
            let index = index.read();
            series_ids
                .iter()
                .filter_map(|id| {
                    index
                        .series
                        .get(id)
                        .map(|entry| ((*id, entry.token), entry.info.key.clone()))
                })
                .unzip()
        };
        // Recorded first: a copy that arrives from now on is not stored.
        let version = self.delete_version();
        self.record_series_deletes(db, keys, (min, max), version)?;
        self.flush()?;
        let _flush = self.flush_lock.lock();
        self.remove_points(db_id, &index, &targets, (min, max), version)?;
        self.db.persist(PersistMode::SyncAll).map_err(engine_error)
    }

    /// Remove the points of `targets` (series id, token) with `min <= time
    /// <= max` and a version up to `version` from blocks and the write
    /// buffer; a point written after the delete (a newer version) stays.
    /// Series left without points leave the index. Runs under the flush
    /// lock, after a flush (no frozen buffer).
    fn remove_points(
        &self,
        db_id: u32,
        index: &RwLock<SeriesIndex>,
        targets: &[(u64, u64)],
        (min, max): (i64, i64),
        version: u64,
    ) -> Result<(), StorageError> {
        let shards: Vec<Keyspace> = self
            .shards
            .read()
            .iter()
            .filter(|(shard, _)| shard.db == db_id)
            .map(|(_, keyspace)| keyspace.clone())
            .collect();
        let deleted =
            |time: i64, point_version: u64| time >= min && time <= max && point_version <= version;
        let mut batch = self.db.batch();
        let mut candidates = Vec::new();
        for (id, token) in targets {
            let mut prefix = [0u8; 16];
            prefix[..8].copy_from_slice(&token.to_be_bytes());
            prefix[8..].copy_from_slice(&id.to_be_bytes());
            let mut remaining = false;
            for keyspace in &shards {
                for item in keyspace.prefix(prefix) {
                    let (key, value) = item.into_inner().map_err(engine_error)?;
                    let (first, last) = block::block_span(&value)?;
                    if last < min || first > max {
                        remaining = true;
                        continue;
                    }
                    let column = block::decode(&value)?;
                    let kept = column.retain(|time, v| !deleted(time, v));
                    if kept.len() == column.len() {
                        remaining = true;
                    } else if kept.len() == 0 {
                        batch.remove(keyspace, key);
                    } else {
                        batch.insert(keyspace, key, kept.encode()?);
                        remaining = true;
                    }
                }
            }
            if !remaining {
                candidates.push(*id);
            }
        }
        batch.commit().map_err(engine_error)?;
        let ids: HashSet<u64> = targets.iter().map(|(id, _)| *id).collect();
        {
            // A write that checked the delete book before the delete was
            // recorded may have buffered since the flush.
            let mut buffer = self.buffer.lock();
            let mut removed_bytes = 0usize;
            buffer.columns.retain(|key, buffered| {
                if key.db != db_id || !ids.contains(&key.series) {
                    return true;
                }
                let kept = buffered.column.retain(|time, v| !deleted(time, v));
                removed_bytes += (buffered.column.len() - kept.len()) * 16;
                buffered.column = kept;
                buffered.column.len() > 0
            });
            buffer.bytes = buffer.bytes.saturating_sub(removed_bytes);
        }
        self.leaves.lock().forget(|shard| shard.db == db_id);
        if candidates.is_empty() {
            return Ok(());
        }
        // Under the log lock, so that a write that resolved one of these
        // series before it left the index either is in the buffer now (the
        // series stays) or sees the new epoch and resolves again.
        let _log = self.log.lock();
        let buffered: HashSet<u64> = self
            .buffer
            .lock()
            .columns
            .keys()
            .filter(|key| key.db == db_id)
            .map(|key| key.series)
            .collect();
        let emptied: Vec<u64> = candidates
            .into_iter()
            .filter(|id| !buffered.contains(id))
            .collect();
        if emptied.is_empty() {
            return Ok(());
        }
        let mut batch = self.db.batch();
        for id in &emptied {
            batch.remove(&self.series_ks, series_record_key(db_id, *id));
        }
        batch.commit().map_err(engine_error)?;
        let mut index = index.write();
        for id in emptied {
            index.remove_series(id);
        }
        self.series_epoch.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    pub fn read_field(
        &self,
        db: &str,
        rp: &str,
        series_id: u64,
        field: &str,
        range: (i64, i64),
        take: Option<Take>,
    ) -> Result<Vec<(i64, Value)>, StorageError> {
        Ok(
            match self.read_column(db, rp, series_id, field, range, take, false)? {
                Read::Plain(points) => points,
                Read::Versioned(points) => points
                    .into_iter()
                    .map(|(time, _, value)| (time, value))
                    .collect(),
            },
        )
    }

    /// As [`Engine::read_field`], with each value's version (for replicas
    /// whose answers are merged by version).
    pub fn read_field_versioned(
        &self,
        db: &str,
        rp: &str,
        series_id: u64,
        field: &str,
        range: (i64, i64),
        take: Option<Take>,
    ) -> Result<Vec<(i64, u64, Value)>, StorageError> {
        Ok(
            match self.read_column(db, rp, series_id, field, range, take, true)? {
                Read::Versioned(points) => points,
                Read::Plain(points) => points
                    .into_iter()
                    .map(|(time, value)| (time, 0, value))
                    .collect(),
            },
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn read_column(
        &self,
        db: &str,
        rp: &str,
        series_id: u64,
        field: &str,
        (min_time, max_time): (i64, i64),
        take: Option<Take>,
        versions: bool,
    ) -> Result<Read, StorageError> {
        let (db_id, rp_id, field_id, token) = {
            let catalog = self.catalog.read();
            let database = catalog
                .database(db)
                .ok_or_else(|| StorageError::DatabaseNotFound(db.to_string()))?;
            let rp_meta = database
                .rp(rp)
                .ok_or_else(|| StorageError::RetentionPolicyNotFound(rp.to_string()))?;
            let index = self
                .indexes
                .read()
                .get(&database.id)
                .cloned()
                .unwrap_or_default();
            let index = index.read();
            let Some(entry) = index.series.get(&series_id) else {
                return Ok(Read::Plain(Vec::new()));
            };
            let Some((field_id, _)) = database
                .measurements
                .get(&entry.info.measurement)
                .and_then(|meta| meta.field(field))
            else {
                return Ok(Read::Plain(Vec::new()));
            };
            (database.id, rp_meta.id, field_id, entry.token)
        };
        let mut points: Vec<(i64, u64, Value)> = Vec::new();
        let key = ColumnKey {
            db: db_id,
            rp: rp_id,
            series: series_id,
            field: field_id,
        };
        // Newest first (the write buffer, then buffers being flushed, then
        // blocks): a flush adds data to the next stage before it removes it
        // from the one before, so a read misses nothing (at worst it sees a
        // point twice, and resolves it once).
        let mut active_points: Vec<(i64, u64, Value)> = Vec::new();
        if let Some(buffered) = self.buffer.lock().columns.get(&key) {
            buffered
                .column
                .collect_into(min_time, max_time, &mut active_points);
        }
        let mut buffered_points: Vec<(i64, u64, Value)> = Vec::new();
        for frozen in self.frozen.read().iter() {
            if let Some(buffered) = frozen.columns.get(&key) {
                buffered
                    .column
                    .collect_into(min_time, max_time, &mut buffered_points);
            }
        }
        buffered_points.append(&mut active_points);
        // Listed after the buffers were read: a flush since may have
        // created a shard group's keyspace.
        let keyspaces: Vec<Keyspace> = self
            .shards
            .read()
            .range(
                ShardId {
                    db: db_id,
                    rp: rp_id,
                    start: i64::MIN,
                }..=ShardId {
                    db: db_id,
                    rp: rp_id,
                    start: max_time,
                },
            )
            .map(|(_, keyspace)| keyspace.clone())
            .collect();
        let prefix = block_prefix(token, series_id, field_id);
        let mut blocks: Vec<(i64, i64, fjall::Slice)> = Vec::new();
        for keyspace in keyspaces {
            for item in keyspace.prefix(prefix) {
                let (_, value) = item.into_inner().map_err(engine_error)?;
                let (first, last) = block::block_span(&value)?;
                if last < min_time || first > max_time {
                    continue;
                }
                blocks.push((first, last, value));
            }
        }
        // The common case: blocks that do not overlap in time, and buffered
        // points (if any) all later than the blocks. Each block is sorted
        // with one value per timestamp, so they just follow one another,
        // and only the buffered points need the version merge.
        if take.is_none() && !versions {
            blocks.sort_by_key(|(first, _, _)| *first);
            let last_block = blocks.last().map_or(i64::MIN, |(_, last, _)| *last);
            if blocks.windows(2).all(|pair| pair[0].1 < pair[1].0)
                && buffered_points
                    .iter()
                    .all(|(time, _, _)| *time > last_block)
            {
                let mut out: Vec<(i64, Value)> = Vec::new();
                for (_, _, value) in &blocks {
                    block::decode(value)?.values_into(min_time, max_time, &mut out);
                }
                // Stable: on equal (time, version) the later source wins.
                buffered_points.sort_by_key(|(time, version, _)| (*time, *version));
                for (time, _, value) in buffered_points {
                    match out.last_mut() {
                        Some(last) if last.0 == time => last.1 = value,
                        _ => out.push((time, value)),
                    }
                }
                return Ok(Read::Plain(out));
            }
        }
        // With `take`, blocks are decoded from the wanted end of the range
        // until the next one cannot hold any of the n wanted timestamps.
        match take {
            None => {}
            Some(Take::First(_)) => blocks.sort_by_key(|(first, _, _)| *first),
            Some(Take::Last(_)) => blocks.sort_by_key(|(_, last, _)| std::cmp::Reverse(*last)),
        }
        for (first, last, value) in blocks {
            if let Some(take) = take {
                if let Some(cut) = take.cut_off(&points, &buffered_points) {
                    let beyond = match take {
                        Take::First(_) => first > cut,
                        Take::Last(_) => last < cut,
                    };
                    if beyond {
                        break;
                    }
                }
            }
            block::decode(&value)?.collect_into(min_time, max_time, &mut points);
        }
        // Blocks before buffers, so that on equal versions the buffer wins.
        points.append(&mut buffered_points);
        let mut out = resolve(points);
        Take::apply(take, &mut out);
        Ok(if versions {
            Read::Versioned(out)
        } else {
            Read::Plain(
                out.into_iter()
                    .map(|(time, _, value)| (time, value))
                    .collect(),
            )
        })
    }

    // ------------------------------------------------------------ retention and lifecycle

    pub fn enforce_retention(&self, now: i64) -> Result<usize, StorageError> {
        let expired: Vec<(u32, u32, i64)> = {
            let catalog = self.catalog.read();
            catalog
                .databases
                .iter()
                .flat_map(|database| {
                    database
                        .rps
                        .iter()
                        .filter(|rp| rp.duration != 0)
                        .map(move |rp| (database.id, rp.id, rp))
                })
                .map(|(db, rp_id, rp)| {
                    let cutoff = now.saturating_sub(i64::try_from(rp.duration).unwrap_or(i64::MAX));
                    (
                        db,
                        rp_id,
                        cutoff.saturating_sub(i64::try_from(rp.shard_duration).unwrap_or(i64::MAX)),
                    )
                })
                .collect()
        };
        let mut count = 0;
        for (db, rp, last_expired_start) in expired {
            let before = self.shards.read().len();
            self.drop_shards(|shard| {
                shard.db == db && shard.rp == rp && shard.start <= last_expired_start
            })?;
            count += before - self.shards.read().len();
        }
        Ok(count)
    }

    /// Keep `hint` for `target`, durably (fsynced) before returning.
    pub fn hint_push(&self, target: &str, hint: &[u8]) -> Result<(), StorageError> {
        let mut key = Vec::with_capacity(target.len() + 9);
        key.extend_from_slice(target.as_bytes());
        key.push(0);
        key.extend_from_slice(&self.hlc.now().to_be_bytes());
        self.hints_ks.insert(key, hint).map_err(engine_error)?;
        self.db.persist(PersistMode::SyncAll).map_err(engine_error)
    }

    /// The oldest `limit` hints for `target`: (key, hint).
    pub fn hint_batch(&self, target: &str, limit: usize) -> Result<Vec<Hint>, StorageError> {
        let mut prefix = target.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.hints_ks.prefix(&prefix).take(limit) {
            let (key, value) = item.into_inner().map_err(engine_error)?;
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    /// Forget delivered hints.
    pub fn hint_remove(&self, keys: &[Vec<u8>]) -> Result<(), StorageError> {
        let mut batch = self.db.batch();
        for key in keys {
            batch.remove(&self.hints_ks, key.as_slice());
        }
        batch.commit().map_err(engine_error)?;
        self.db.persist(PersistMode::SyncAll).map_err(engine_error)
    }

    /// Per target: (hints, bytes, oldest hint's wall-clock milliseconds).
    pub fn hint_queues(&self) -> Result<BTreeMap<String, (u64, u64, u64)>, StorageError> {
        let mut out: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        for item in self.hints_ks.iter() {
            let (key, value) = item.into_inner().map_err(engine_error)?;
            let Some(split) = key.iter().position(|b| *b == 0) else {
                continue;
            };
            let target = String::from_utf8_lossy(&key[..split]).into_owned();
            let mut seq = [0u8; 8];
            if let Some(tail) = key.get(split + 1..split + 9) {
                seq.copy_from_slice(tail);
            }
            let millis = Hlc::physical_ms(u64::from_be_bytes(seq));
            let entry = out.entry(target).or_insert((0, 0, millis));
            entry.0 += 1;
            entry.1 += value.len() as u64;
            entry.2 = entry.2.min(millis);
        }
        Ok(out)
    }

    /// A new version from this node's clock.
    pub fn next_version(&self) -> u64 {
        self.hlc.now()
    }

    /// The local id of each series key, if this node knows the series.
    pub fn series_ids(&self, db: &str, keys: &[&str]) -> Result<Vec<Option<u64>>, StorageError> {
        let (_, index) = self.index(db)?;
        let index = index.read();
        Ok(keys
            .iter()
            .map(|key| index.by_key.get(*key).copied())
            .collect())
    }

    pub fn points_stored(&self) -> u64 {
        self.points_stored.load(Ordering::Relaxed)
    }

    pub fn disk_space(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }

    fn buffer_due(&self) -> bool {
        let buffer = self.buffer.lock();
        buffer.bytes as u64 >= self.options.buffer_max_bytes
            || buffer
                .since
                .is_some_and(|since| since.elapsed() >= self.options.buffer_max_age)
    }

    pub fn close(&self) -> Result<(), StorageError> {
        *self.signal.stop.lock() = true;
        self.signal.wake.notify_all();
        if let Some(handle) = self.background.lock().take() {
            let _ = handle.join();
        }
        self.flush()?;
        self.db.persist(PersistMode::SyncAll).map_err(engine_error)
    }
}

/// Points of one field of one series from several sources (in age order)
/// resolved as a read sees them: sorted by time, one per time, the highest
/// version winning and, on equal versions, the later source (a stable sort).
fn resolve(mut points: Vec<(i64, u64, Value)>) -> Vec<(i64, u64, Value)> {
    points.sort_by_key(|(time, version, _)| (*time, *version));
    let mut out: Vec<(i64, u64, Value)> = Vec::with_capacity(points.len());
    for point in points {
        match out.last_mut() {
            Some(last) if last.0 == point.0 => *last = point,
            _ => out.push(point),
        }
    }
    out
}

fn slice_column(column: &Column, start: usize, end: usize) -> Column {
    let mut out = Column::new(column.field_type());
    out.times.extend_from_slice(&column.times[start..end]);
    out.versions.extend_from_slice(&column.versions[start..end]);
    for index in start..end {
        if let Some(value) = column.values.get(index) {
            out.values.push(&value);
        }
    }
    out
}

/// Wakes the background thread (flush due, shutdown) without it holding the engine.
#[derive(Default)]
struct Signal {
    stop: Mutex<bool>,
    wake: Condvar,
}

fn background_loop(engine: Weak<Engine>, signal: Arc<Signal>) {
    let mut last_retention = Instant::now();
    // Compaction gave way to a due flush: flush now, without waiting.
    let mut flush_now = false;
    loop {
        if !flush_now {
            let mut stop = signal.stop.lock();
            if *stop {
                return;
            }
            signal.wake.wait_for(&mut stop, Duration::from_millis(500));
            if *stop {
                return;
            }
        }
        let Some(strong) = engine.upgrade() else {
            return;
        };
        if strong.buffer_due() {
            if let Err(error) = strong.flush() {
                tracing::error!(%error, "flushing the write buffer failed; will retry");
            }
        }
        // Compaction, a step at a time, until a flush is due or we stop.
        while strong.options.background_compaction
            && strong.compaction_pending()
            && !strong.buffer_due()
            && !*signal.stop.lock()
        {
            if let Err(error) = strong.compact_step() {
                tracing::error!(%error, "compaction failed");
                break;
            }
        }
        flush_now = strong.buffer_due();
        if last_retention.elapsed() >= strong.options.retention_check_interval {
            last_retention = Instant::now();
            match strong.enforce_retention(now_nanos()) {
                Ok(0) => {}
                Ok(dropped) => tracing::info!(dropped, "retention dropped expired shard groups"),
                Err(error) => tracing::error!(%error, "retention enforcement failed"),
            }
        }
    }
}

enum Validated<'p, 'a> {
    Done {
        db_id: u32,
        rp: RpMeta,
        points: Vec<(&'p Point<'a>, Vec<(u32, Value)>)>,
        dropped: usize,
        reason: Option<String>,
    },
    /// Fields the catalog does not know yet: (measurement, field, type).
    NewFields(Vec<(String, String, FieldType)>),
}

fn value_of(value: &FieldValue<'_>) -> Value {
    match value {
        FieldValue::Float(v) => Value::Float(*v),
        FieldValue::Integer(v) => Value::Integer(*v),
        FieldValue::Unsigned(v) => Value::Unsigned(*v),
        FieldValue::String(v) => Value::String(v.to_string()),
        FieldValue::Boolean(v) => Value::Boolean(*v),
    }
}

fn field_type_of(value: &FieldValue<'_>) -> FieldType {
    match value {
        FieldValue::Float(_) => FieldType::Float,
        FieldValue::Integer(_) => FieldType::Integer,
        FieldValue::Unsigned(_) => FieldType::Unsigned,
        FieldValue::String(_) => FieldType::String,
        FieldValue::Boolean(_) => FieldType::Boolean,
    }
}

fn conflict_text(field: &str, measurement: &str, input: FieldType, stored: FieldType) -> String {
    format!(
        "field type conflict: input field \"{field}\" on measurement \"{measurement}\" is type {}, already exists as type {}",
        input.name(),
        stored.name()
    )
}

/// Check points against the catalog as InfluxDB 1.6.7 does: `time` as a tag
/// key or as the only field drops the point (a `time` field beside others is
/// ignored); a type conflict with a stored field drops the point; a conflict
/// between points of one batch refuses the batch.
fn validate<'p, 'a>(
    catalog: &CatalogState,
    db: &str,
    rp: Option<&str>,
    points: &'p [Point<'a>],
) -> Result<Validated<'p, 'a>, StorageError> {
    let database = catalog
        .database(db)
        .ok_or_else(|| StorageError::DatabaseNotFound(db.to_string()))?;
    let rp_name = rp.unwrap_or(&database.default_rp);
    let rp_meta = database
        .rp(rp_name)
        .cloned()
        .ok_or_else(|| StorageError::RetentionPolicyNotFound(rp_name.to_string()))?;
    let mut accepted = Vec::with_capacity(points.len());
    let mut dropped = 0;
    let mut reason: Option<String> = None;
    let mut new_fields: HashMap<(&str, &str), FieldType> = HashMap::default();
    let oldest = match rp_meta.duration {
        0 => i64::MIN,
        duration => now_nanos().saturating_sub(i64::try_from(duration).unwrap_or(i64::MAX)),
    };
    for point in points {
        let measurement = point.measurement.as_ref();
        if point.timestamp < oldest {
            dropped += 1;
            reason.get_or_insert_with(|| "points beyond retention policy".to_string());
            continue;
        }
        if point.tags.iter().any(|(key, _)| key == "time") {
            dropped += 1;
            reason.get_or_insert_with(|| format!("invalid tag key: input tag \"time\" on measurement \"{measurement}\" is invalid"));
            continue;
        }
        if point.fields.iter().all(|(name, _)| name == "time") {
            dropped += 1;
            reason.get_or_insert_with(|| format!("invalid field name: input field \"time\" on measurement \"{measurement}\" is invalid"));
            continue;
        }
        let meta = database.measurements.get(measurement);
        let mut resolved = Vec::with_capacity(point.fields.len());
        let mut conflict = None;
        for (name, value) in point.fields.iter().filter(|(name, _)| name != "time") {
            let field_type = field_type_of(value);
            match meta.and_then(|meta| meta.field(name)) {
                Some((id, stored)) if stored == field_type => resolved.push((id, value_of(value))),
                Some((_, stored)) => {
                    conflict = Some(conflict_text(name, measurement, field_type, stored));
                    break;
                }
                None => match new_fields.get(&(measurement, name.as_ref())) {
                    Some(&first) if first != field_type => {
                        return Err(StorageError::WriteRejected(conflict_text(
                            name,
                            measurement,
                            field_type,
                            first,
                        )));
                    }
                    Some(_) => {}
                    None => {
                        new_fields.insert((measurement, name.as_ref()), field_type);
                    }
                },
            }
        }
        if let Some(conflict) = conflict {
            dropped += 1;
            reason.get_or_insert(conflict);
            continue;
        }
        accepted.push((point, resolved));
    }
    if !new_fields.is_empty() {
        let mut list: Vec<(String, String, FieldType)> = new_fields
            .into_iter()
            .map(|((measurement, field), field_type)| {
                (measurement.to_string(), field.to_string(), field_type)
            })
            .collect();
        list.sort();
        return Ok(Validated::NewFields(list));
    }
    Ok(Validated::Done {
        db_id: database.id,
        rp: rp_meta,
        points: accepted,
        dropped,
        reason,
    })
}
