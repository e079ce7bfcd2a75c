//! The engine's side of anti-entropy: shard groups as Merkle leaves and
//! versioned rows ([`dynaflux_actors::RangeStore`]).
//!
//! A leaf is one partition (the top bits of the token: see
//! [`dynaflux_actors::ownership::partition_of`]) of one shard group; its
//! hash is the wrapping sum of `xxh3_128(series key, field, time, version,
//! value)` over the partition's resolved points (one per series, field and
//! time: the highest version), so replicas with the same data have the same
//! leaf whatever order it arrived in and however it was flushed. Series and
//! field ids are local to a node; the hash and the rows use names.
//!
//! A write updates its leaves under the log lock, the step that makes it
//! durable and readable, without reading anything: the hashes of its
//! points (computed before the lock) are added to their leaves when each
//! point is an append, later than every point of its column (the book
//! knows each column's newest time since the leaf was last hashed), so it
//! shadows nothing; otherwise (an overwrite, a late point) the leaf goes
//! dirty and [`Engine::ae_leaves`] re-hashes it from its data (the
//! partition's blocks, one contiguous key range, and its buffered points).
//! A leaf's sum is kept per second of versions for the last
//! [`KEEP_BUCKETS`] seconds, so a round's horizon (points written before
//! it) is answered from the book; older seconds are folded into one sum.
//! The book lives in memory: after a restart each shard group is hashed
//! once, on the first exchange that asks for it. Deletes mark the shard
//! groups of their database for re-hashing.
//!
//! A row is one field of one series in one partition: key `rmp(measurement,
//! tags, field)`, value the encoded column (times, versions, values), so
//! rows stream compressed and keep every point's version.

use std::collections::{BTreeMap, BTreeSet};

use dynaflux_actors::ownership::{partition_of, partition_tokens, PARTITIONS};
use dynaflux_actors::{Leaf, PartitionSet, Row};

use super::{
    block, engine_error, now_nanos, shard_start, Column, ColumnKey, Engine, HashMap, HashSet,
    ShardId, StorageError, Value, WalBatch,
};
use crate::lineproto::{FieldValue, Point};

/// Shard groups that end within this margin of their retention are not
/// compared: they are about to be dropped on every replica.
const RETENTION_MARGIN_NANOS: i64 = 3_600_000_000_000;

/// How many partitions one pass over the write buffer hashes at most.
const PARTITIONS_PER_PASS: usize = 256;

/// HLC versions per bucket of a leaf's recent sums: one second.
const BUCKET: u64 = 1000 << 16;

/// Seconds of recent sums a leaf keeps apart from its base: a horizon up
/// to this far back is answered without reading data.
const KEEP_BUCKETS: u64 = 60;

/// The version below which a leaf folds its sums into its base now.
fn fold_point(now: u64) -> u64 {
    (now / BUCKET).saturating_sub(KEEP_BUCKETS) * BUCKET
}

/// What a node knows of one leaf: the sum of its points' hashes, split by
/// version so that a horizon can be answered, and the newest time of each
/// column in it, so that a write can be told to be an append.
#[derive(Debug, Clone, Default)]
struct LeafState {
    /// The points with versions below `base_upto`: (hash sum, count).
    base: (u128, u64),
    base_upto: u64,
    /// The points with newer versions, per [`BUCKET`] of versions.
    recent: BTreeMap<u64, (u128, u64)>,
    /// (series id, field id) -> newest time, for every column with points.
    columns: HashMap<(u64, u32), i64>,
}

impl LeafState {
    fn new(base_upto: u64) -> LeafState {
        LeafState {
            base_upto,
            ..LeafState::default()
        }
    }

    fn add(&mut self, version: u64, hash: u128) {
        let sum = if version < self.base_upto {
            &mut self.base
        } else {
            self.recent.entry(version / BUCKET).or_default()
        };
        sum.0 = sum.0.wrapping_add(hash);
        sum.1 += 1;
    }

    /// Add a point of a column if it is an append (later than every point
    /// of the column); false if it is not (the leaf must be re-hashed).
    fn append(&mut self, series: u64, field: u32, time: i64, version: u64, hash: u128) -> bool {
        match self.columns.get_mut(&(series, field)) {
            Some(newest) if time <= *newest => return false,
            Some(newest) => *newest = time,
            None => {
                self.columns.insert((series, field), time);
            }
        }
        self.add(version, hash);
        true
    }

    /// The leaf over the points with versions below `horizon`, if this
    /// state can tell (`u64::MAX`: every point).
    fn at(&self, horizon: u64) -> Option<(u128, u64)> {
        let recent: Box<dyn Iterator<Item = &(u128, u64)>> = if horizon == u64::MAX {
            Box::new(self.recent.values())
        } else if horizon >= self.base_upto && horizon.is_multiple_of(BUCKET) {
            Box::new(self.recent.range(..horizon / BUCKET).map(|(_, sum)| sum))
        } else {
            return None;
        };
        Some(recent.fold(self.base, |(hash, count), (h, c)| {
            (hash.wrapping_add(*h), count + c)
        }))
    }

    /// Fold the sums of versions below `upto` (a bucket boundary) into the base.
    fn fold(&mut self, upto: u64) {
        if upto <= self.base_upto {
            return;
        }
        let keep = self.recent.split_off(&(upto / BUCKET));
        for (hash, count) in std::mem::replace(&mut self.recent, keep).into_values() {
            self.base.0 = self.base.0.wrapping_add(hash);
            self.base.1 += count;
        }
        self.base_upto = upto;
    }
}

/// A point-field written to a leaf while it was being hashed, after its
/// scan: (series, field, time, version, hash).
type Pending = (u64, u32, i64, u64, u128);

/// The Merkle leaves this node keeps up to date.
///
/// A write to a leaf whose state is known adds its points' hashes to it
/// when each is an append (later than every point of its column: it
/// shadows nothing), and marks the leaf dirty otherwise (an overwrite or
/// a late point), to be re-hashed from its data when next compared.
#[derive(Default)]
pub(super) struct LeafBook {
    /// States of leaves, valid unless the leaf is in `dirty` or
    /// `hashing`, or its shard group is not in `known`. Empty leaves are
    /// absent.
    clean: HashMap<(ShardId, u32), LeafState>,
    dirty: HashSet<(ShardId, u32)>,
    /// Leaves being re-hashed. Until their scan has read the write buffer
    /// (`None`) a write to one is in the scan; after it, its points are
    /// kept to be added to the new state (or to mark it dirty).
    hashing: HashMap<(ShardId, u32), Option<Vec<Pending>>>,
    /// Shard groups whose every leaf has been hashed since start.
    known: HashSet<ShardId>,
    /// Shard groups written since start (they may have no keyspace yet).
    seen: BTreeSet<ShardId>,
    /// Leaves hashed from their data since start.
    rehashed: u64,
}

impl LeafBook {
    /// Account for a batch that has just become durable and readable.
    /// `hashes`: the hash of each field of each point, in order (see
    /// [`point_hash`]); `None` marks every leaf written dirty.
    pub(super) fn mark_written(
        &mut self,
        batch: &WalBatch,
        tokens: &[Option<u64>],
        shard_duration: u64,
        hashes: Option<&[u128]>,
    ) {
        let fold_upto = fold_point(super::now_version());
        let mut next_hash = 0usize;
        for (point, token) in batch.points.iter().zip(tokens) {
            let first_hash = next_hash;
            next_hash += point.fields.len();
            let Some(token) = token else { continue };
            let shard = ShardId {
                db: batch.db,
                rp: batch.rp,
                start: shard_start(point.time, shard_duration),
            };
            let leaf = (shard, partition_of(*token) as u32);
            let Some(hashes) = hashes.and_then(|h| h.get(first_hash..next_hash)) else {
                if self.dirty.insert(leaf) {
                    self.seen.insert(shard);
                }
                continue;
            };
            let version = if point.version == 0 {
                batch.version
            } else {
                point.version
            };
            if let Some(hashing) = self.hashing.get_mut(&leaf) {
                // Before the scan read the buffer: the scan has it.
                if let Some(pending) = hashing {
                    for ((field, _), hash) in point.fields.iter().zip(hashes) {
                        pending.push((point.series, *field, point.time, version, *hash));
                    }
                }
                continue;
            }
            if self.dirty.contains(&leaf) || !self.known.contains(&shard) {
                if self.dirty.insert(leaf) {
                    self.seen.insert(shard);
                }
                continue;
            }
            let state = self
                .clean
                .entry(leaf)
                .or_insert_with(|| LeafState::new(fold_upto));
            let appended =
                point
                    .fields
                    .iter()
                    .zip(hashes)
                    .fold(true, |appended, ((field, _), hash)| {
                        state.append(point.series, *field, point.time, version, *hash) && appended
                    });
            if !appended {
                self.dirty.insert(leaf);
            }
        }
    }

    /// Forget what is known of the shard groups `which` selects: they are
    /// hashed again from scratch when next asked for.
    pub(super) fn forget(&mut self, which: impl Fn(&ShardId) -> bool) {
        self.known.retain(|shard| !which(shard));
        self.clean.retain(|(shard, _), _| !which(shard));
        self.dirty.retain(|(shard, _)| !which(shard));
    }

    /// Forget the shard groups `which` selects entirely (dropped).
    pub(super) fn drop_shards(&mut self, which: impl Fn(&ShardId) -> bool) {
        self.forget(&which);
        self.seen.retain(|shard| !which(shard));
    }
}

/// The seed of a column's point hashes: its series key and field name.
pub(super) fn column_seed(series_key: &str, field: &str) -> u64 {
    let mut seed = xxhash_rust::xxh3::Xxh3::new();
    seed.update(series_key.as_bytes());
    seed.update(&[0]);
    seed.update(field.as_bytes());
    seed.digest()
}

/// The hash of one point of a column: what a leaf sums.
pub(super) fn point_hash(
    seed: u64,
    time: i64,
    version: u64,
    value: &Value,
    bytes: &mut Vec<u8>,
) -> u128 {
    bytes.clear();
    bytes.extend_from_slice(&seed.to_be_bytes());
    bytes.extend_from_slice(&time.to_be_bytes());
    bytes.extend_from_slice(&version.to_be_bytes());
    value_hash_bytes(value, bytes);
    xxhash_rust::xxh3::xxh3_128(bytes)
}

/// One field of one series, resolved: sorted by time, one point per time.
struct FieldPoints {
    token: u64,
    series: u64,
    field: u32,
    points: Vec<(i64, u64, Value)>,
}

/// A series' key, measurement and tags.
type SeriesNames = (String, String, Vec<(String, String)>);

/// Points with versions, of one field of one series.
type VersionedPoints = Vec<(i64, u64, Value)>;

/// Names for the local ids of one database's series and fields.
struct Names {
    /// series id -> (series key, measurement, tags)
    series: HashMap<u64, SeriesNames>,
    /// (measurement, field id) -> field name
    fields: HashMap<(String, u32), String>,
}

fn value_hash_bytes(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Float(v) => {
            out.push(0);
            out.extend_from_slice(&v.to_bits().to_be_bytes());
        }
        Value::Integer(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_be_bytes());
        }
        Value::Unsigned(v) => {
            out.push(2);
            out.extend_from_slice(&v.to_be_bytes());
        }
        Value::String(v) => {
            out.push(3);
            out.extend_from_slice(v.as_bytes());
        }
        Value::Boolean(v) => {
            out.push(4);
            out.push(u8::from(*v));
        }
    }
}

impl Engine {
    /// The name of a shard group on every node: db, rp, start, by name.
    fn shard_group_name(&self, shard: ShardId) -> Option<String> {
        let catalog = self.catalog.read();
        let database = catalog.database_by_id(shard.db)?;
        let rp = database.rps.iter().find(|rp| rp.id == shard.rp)?;
        Some(format!(
            "{}\u{1f}{}\u{1f}{}",
            database.name, rp.name, shard.start
        ))
    }

    /// `(db name, rp name, shard)` of a shard group name, if this node has
    /// the database and retention policy.
    fn shard_of_name(&self, name: &str) -> Option<(String, String, ShardId)> {
        let mut parts = name.split('\u{1f}');
        let (db, rp, start) = (parts.next()?, parts.next()?, parts.next()?);
        let start: i64 = start.parse().ok()?;
        let catalog = self.catalog.read();
        let database = catalog.database(db)?;
        let rp_meta = database.rp(rp)?;
        Some((
            db.to_string(),
            rp.to_string(),
            ShardId {
                db: database.id,
                rp: rp_meta.id,
                start,
            },
        ))
    }

    /// The shard groups to compare: those with blocks or written since
    /// start, except those about to expire.
    pub fn ae_shard_groups(&self) -> Vec<String> {
        let mut shards: BTreeSet<ShardId> = self.shards.read().keys().copied().collect();
        shards.extend(self.leaves.lock().seen.iter().copied());
        let now = now_nanos();
        let live: Vec<ShardId> = {
            let catalog = self.catalog.read();
            shards
                .into_iter()
                .filter(|shard| {
                    let Some(rp) = catalog
                        .database_by_id(shard.db)
                        .and_then(|database| database.rps.iter().find(|rp| rp.id == shard.rp))
                    else {
                        return false;
                    };
                    if rp.duration == 0 {
                        return true;
                    }
                    let end = shard
                        .start
                        .saturating_add(i64::try_from(rp.shard_duration).unwrap_or(i64::MAX));
                    let cutoff = now
                        .saturating_sub(i64::try_from(rp.duration).unwrap_or(i64::MAX))
                        .saturating_add(RETENTION_MARGIN_NANOS);
                    end >= cutoff
                })
                .collect()
        };
        live.into_iter()
            .filter_map(|shard| self.shard_group_name(shard))
            .collect()
    }

    /// The up-to-date, non-empty leaves of a shard group among
    /// `partitions`, over the points with versions below `horizon`.
    pub fn ae_leaves(
        &self,
        name: &str,
        partitions: &PartitionSet,
        horizon: u64,
    ) -> Result<Vec<Leaf>, StorageError> {
        let Some((_, _, shard)) = self.shard_of_name(name) else {
            return Ok(Vec::new());
        };
        let fold_upto = fold_point(super::now_version());
        // Take the work out of the book first: a write that lands while we
        // hash marks its leaf dirty again, and the next call re-hashes it.
        let rehash: Vec<u32> = {
            let mut book = self.leaves.lock();
            let mut todo: Vec<u32> = if book.known.insert(shard) {
                book.clean.retain(|(s, _), _| *s != shard);
                book.dirty.retain(|(s, _)| *s != shard);
                (0..PARTITIONS as u32).collect()
            } else {
                partitions
                    .iter()
                    .map(|p| p as u32)
                    .filter(|p| book.dirty.remove(&(shard, *p)))
                    .collect()
            };
            todo.sort_unstable();
            for p in &todo {
                book.hashing.insert((shard, *p), None);
            }
            book.rehashed += todo.len() as u64;
            todo
        };
        let mut answers: HashMap<u32, (u128, u64)> = HashMap::default();
        // Leaves whose state cannot answer this horizon (one from before
        // the state's base): hashed from their data at exactly it.
        let mut exact: Vec<u32> = Vec::new();
        for pass in rehash.chunks(PARTITIONS_PER_PASS) {
            // From the moment the scan has read the buffer, writes to these
            // leaves are kept aside and added after.
            let cutoff = || {
                let mut book = self.leaves.lock();
                for p in pass {
                    if let Some(hashing) = book.hashing.get_mut(&(shard, *p)) {
                        hashing.get_or_insert_with(Vec::new);
                    }
                }
            };
            let hashed = self.hash_partitions(shard, pass, fold_upto, Some(&cutoff));
            let mut book = self.leaves.lock();
            let mut hashed = match hashed {
                Ok(hashed) => hashed,
                Err(error) => {
                    // Not hashed: leave them dirty for the next call.
                    for p in &rehash {
                        book.hashing.remove(&(shard, *p));
                        book.dirty.insert((shard, *p));
                    }
                    return Err(error);
                }
            };
            for p in pass {
                let pending = book.hashing.remove(&(shard, *p)).flatten();
                let mut state = hashed.remove(p);
                if let Some(pending) = pending.filter(|pending| !pending.is_empty()) {
                    let state = state.get_or_insert_with(|| LeafState::new(fold_upto));
                    let appended = pending.into_iter().fold(
                        true,
                        |appended, (series, field, time, version, hash)| {
                            state.append(series, field, time, version, hash) && appended
                        },
                    );
                    if !appended {
                        book.dirty.insert((shard, *p));
                    }
                }
                if partitions.contains(*p as usize) {
                    match state.as_ref().map(|state| state.at(horizon)) {
                        Some(Some(leaf)) => {
                            answers.insert(*p, leaf);
                        }
                        Some(None) => exact.push(*p),
                        None => {}
                    }
                }
                match state {
                    Some(state) if !book.dirty.contains(&(shard, *p)) => {
                        book.clean.insert((shard, *p), state);
                    }
                    _ => {
                        book.clean.remove(&(shard, *p));
                    }
                }
            }
        }
        {
            let mut book = self.leaves.lock();
            for p in partitions.iter().map(|p| p as u32) {
                if answers.contains_key(&p) || exact.contains(&p) {
                    continue;
                }
                if let Some(state) = book.clean.get_mut(&(shard, p)) {
                    match state.at(horizon) {
                        Some(leaf) => {
                            answers.insert(p, leaf);
                        }
                        None => exact.push(p),
                    }
                    state.fold(fold_upto);
                }
            }
        }
        if !exact.is_empty() && horizon != u64::MAX {
            exact.sort_unstable();
            for pass in exact.chunks(PARTITIONS_PER_PASS) {
                for (p, state) in self.hash_partitions(shard, pass, horizon, None)? {
                    answers.insert(p, state.base);
                }
            }
        }
        let mut out: Vec<Leaf> = answers
            .into_iter()
            .filter(|(_, (_, count))| *count > 0)
            .map(|(partition, (hash, count))| Leaf {
                partition,
                hash,
                count,
            })
            .collect();
        out.sort_by_key(|leaf| leaf.partition);
        Ok(out)
    }

    /// The hash of each field of each point of a batch about to be
    /// written (`points` and `keys`, the series keys, in the batch's
    /// order), for [`LeafBook::mark_written`].
    pub(super) fn point_hashes(
        &self,
        db: &str,
        points: &[&Point<'_>],
        keys: &[String],
        batch: &WalBatch,
    ) -> Vec<u128> {
        let mut out = Vec::with_capacity(batch.points.len());
        let catalog = self.catalog.read();
        let Some(database) = catalog.database(db) else {
            return out;
        };
        let mut bytes = Vec::with_capacity(64);
        let mut last: Option<(&str, &super::super::catalog::MeasurementMeta)> = None;
        for ((wal_point, point), key) in batch.points.iter().zip(points).zip(keys) {
            let measurement = point.measurement.as_ref();
            let meta = match last {
                Some((name, meta)) if name == measurement => Some(meta),
                _ => database.measurements.get(measurement),
            };
            if let Some(meta) = meta {
                last = Some((measurement, meta));
            }
            let version = if wal_point.version == 0 {
                batch.version
            } else {
                wal_point.version
            };
            for (field, value) in &wal_point.fields {
                // A field the catalog cannot name: no hashes, and the
                // leaves written go dirty instead.
                let Some((name, _)) = meta.and_then(|meta| meta.fields.get(*field as usize)) else {
                    return Vec::new();
                };
                let seed = column_seed(key, name);
                out.push(point_hash(seed, wal_point.time, version, value, &mut bytes));
            }
        }
        out
    }

    /// Forget every leaf, as after a restart (tests).
    #[cfg(test)]
    pub fn forget_leaves(&self) {
        self.leaves.lock().forget(|_| true);
    }

    /// Leaves hashed from their data since start (the rest of the time
    /// they are answered from the book).
    pub fn leaves_rehashed(&self) -> u64 {
        self.leaves.lock().rehashed
    }

    fn names(&self, db: u32) -> Result<Names, StorageError> {
        let index =
            self.indexes.read().get(&db).cloned().ok_or_else(|| {
                StorageError::Engine(format!("no series index for database {db}"))
            })?;
        let series = index
            .read()
            .series
            .iter()
            .map(|(id, entry)| {
                (
                    *id,
                    (
                        entry.info.key.clone(),
                        entry.info.measurement.clone(),
                        entry.info.tags.clone(),
                    ),
                )
            })
            .collect();
        let catalog = self.catalog.read();
        let fields = catalog
            .database_by_id(db)
            .map(|database| {
                database
                    .measurements
                    .iter()
                    .flat_map(|(measurement, meta)| {
                        meta.fields.iter().filter_map(move |(name, _)| {
                            meta.field(name)
                                .map(|(id, _)| ((measurement.clone(), id), name.clone()))
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Names { series, fields })
    }

    /// The resolved points of `partitions` (sorted) of a shard group: its
    /// blocks and what is buffered.
    /// `cutoff` runs under the write buffer's lock, when the buffer has
    /// been read: the writes before it are in the answer.
    fn partition_points(
        &self,
        shard: ShardId,
        partitions: &[u32],
        cutoff: Option<&dyn Fn()>,
    ) -> Result<Vec<FieldPoints>, StorageError> {
        let end = {
            let catalog = self.catalog.read();
            let duration = catalog
                .database_by_id(shard.db)
                .and_then(|database| database.rps.iter().find(|rp| rp.id == shard.rp))
                .map_or(u64::MAX, |rp| rp.shard_duration);
            shard
                .start
                .saturating_add(i64::try_from(duration).unwrap_or(i64::MAX))
        };
        // Newest first (the write buffer, then buffers being flushed, then
        // blocks): a flush adds data to the next stage before it removes it
        // from the one before, so nothing is missed, at worst seen twice.
        let wanted: HashSet<u32> = partitions.iter().copied().collect();
        let collect =
            |columns: &HashMap<ColumnKey, super::BufferedColumn>,
             into: &mut BTreeMap<(u64, u64, u32), VersionedPoints>| {
                for (key, buffered) in columns {
                    if key.db != shard.db
                        || key.rp != shard.rp
                        || !wanted.contains(&(partition_of(buffered.token) as u32))
                    {
                        continue;
                    }
                    buffered.column.collect_into(
                        shard.start,
                        end.saturating_sub(1),
                        into.entry((buffered.token, key.series, key.field))
                            .or_default(),
                    );
                }
            };
        let mut active: BTreeMap<(u64, u64, u32), VersionedPoints> = BTreeMap::new();
        {
            let buffer = self.buffer.lock();
            collect(&buffer.columns, &mut active);
            if let Some(cutoff) = cutoff {
                cutoff();
            }
        }
        let mut flushing: BTreeMap<(u64, u64, u32), VersionedPoints> = BTreeMap::new();
        for frozen in self.frozen.read().iter() {
            collect(&frozen.columns, &mut flushing);
        }
        let mut raw: BTreeMap<(u64, u64, u32), VersionedPoints> = BTreeMap::new();
        let keyspace = self.shards.read().get(&shard).cloned();
        if let Some(keyspace) = keyspace {
            for partition in partitions {
                let tokens = partition_tokens(*partition as usize);
                let from = tokens.start().to_be_bytes();
                let items = if *tokens.end() == u64::MAX {
                    keyspace.range(from.to_vec()..)
                } else {
                    let to = (tokens.end() + 1).to_be_bytes();
                    keyspace.range(from.to_vec()..to.to_vec())
                };
                for item in items {
                    let (key, value) = item.into_inner().map_err(engine_error)?;
                    if key.len() < 20 {
                        continue;
                    }
                    let token = u64::from_be_bytes(key[0..8].try_into().map_err(engine_error)?);
                    let series = u64::from_be_bytes(key[8..16].try_into().map_err(engine_error)?);
                    let field = u32::from_be_bytes(key[16..20].try_into().map_err(engine_error)?);
                    let column = block::decode(&value)?;
                    column.collect_into(
                        i64::MIN,
                        i64::MAX,
                        raw.entry((token, series, field)).or_default(),
                    );
                }
            }
        }
        // Sources in age order: on equal (time, version) the later wins.
        for source in [flushing, active] {
            for (key, mut points) in source {
                raw.entry(key).or_default().append(&mut points);
            }
        }
        let mut out = Vec::with_capacity(raw.len());
        for ((token, series, field), points) in raw {
            let resolved = super::resolve(points);
            if !resolved.is_empty() {
                out.push(FieldPoints {
                    token,
                    series,
                    field,
                    points: resolved,
                });
            }
        }
        Ok(out)
    }

    /// The states of the leaves of `partitions` of a shard group, with the
    /// points of versions below `base_upto` in their base; a partition
    /// with no points is absent.
    fn hash_partitions(
        &self,
        shard: ShardId,
        partitions: &[u32],
        base_upto: u64,
        cutoff: Option<&dyn Fn()>,
    ) -> Result<HashMap<u32, LeafState>, StorageError> {
        let fields = self.partition_points(shard, partitions, cutoff)?;
        if fields.is_empty() {
            return Ok(HashMap::default());
        }
        let names = self.names(shard.db)?;
        let mut out: HashMap<u32, LeafState> = HashMap::default();
        let mut bytes = Vec::with_capacity(64);
        for field_points in fields {
            let Some((key, measurement, _)) = names.series.get(&field_points.series) else {
                continue;
            };
            let Some(field) = names.fields.get(&(measurement.clone(), field_points.field)) else {
                continue;
            };
            let seed = column_seed(key, field);
            let state = out
                .entry(partition_of(field_points.token) as u32)
                .or_insert_with(|| LeafState::new(base_upto));
            if let Some((time, _, _)) = field_points.points.last() {
                state
                    .columns
                    .insert((field_points.series, field_points.field), *time);
            }
            for (time, version, value) in &field_points.points {
                state.add(
                    *version,
                    point_hash(seed, *time, *version, value, &mut bytes),
                );
            }
        }
        Ok(out)
    }

    /// Every row of one partition of a shard group.
    pub fn ae_scan_partition(&self, name: &str, partition: u32) -> Result<Vec<Row>, StorageError> {
        let Some((_, _, shard)) = self.shard_of_name(name) else {
            return Ok(Vec::new());
        };
        let fields = self.partition_points(shard, &[partition], None)?;
        if fields.is_empty() {
            return Ok(Vec::new());
        }
        let names = self.names(shard.db)?;
        let mut rows = Vec::with_capacity(fields.len());
        for field_points in fields {
            let Some((_, measurement, tags)) = names.series.get(&field_points.series) else {
                continue;
            };
            let Some(field) = names.fields.get(&(measurement.clone(), field_points.field)) else {
                continue;
            };
            rows.push(field_row(
                field_points.token,
                (measurement, tags, field),
                &field_points.points,
            )?);
        }
        Ok(rows)
    }

    /// Cleanup after a move: delete every point of `partitions` of a shard
    /// group (this node no longer holds them). The series stay in the
    /// index: every node indexes every series. Answers the points deleted.
    pub fn ae_drop_partitions(
        &self,
        name: &str,
        partitions: &PartitionSet,
    ) -> Result<u64, StorageError> {
        let Some((_, _, shard)) = self.shard_of_name(name) else {
            return Ok(0);
        };
        self.flush()?;
        let _flush = self.flush_lock.lock();
        let Some(keyspace) = self.shards.read().get(&shard).cloned() else {
            return Ok(0);
        };
        let mut dropped = 0u64;
        let mut batch = self.db.batch();
        for partition in partitions.iter() {
            let tokens = partition_tokens(partition);
            let from = tokens.start().to_be_bytes();
            let items = if *tokens.end() == u64::MAX {
                keyspace.range(from.to_vec()..)
            } else {
                let to = (tokens.end() + 1).to_be_bytes();
                keyspace.range(from.to_vec()..to.to_vec())
            };
            for item in items {
                let (key, value) = item.into_inner().map_err(engine_error)?;
                dropped += block::decode(&value).map_or(0, |column| column.len() as u64);
                batch.remove(&keyspace, key);
            }
        }
        batch.commit().map_err(engine_error)?;
        self.leaves.lock().forget(|s| *s == shard);
        self.db
            .persist(fjall::PersistMode::SyncAll)
            .map_err(engine_error)?;
        Ok(dropped)
    }

    /// The points this node holds (resolved, every shard group): the sum
    /// of its Merkle leaves' counts.
    pub fn points_held(&self) -> Result<u64, StorageError> {
        let mut total = 0;
        for name in self.ae_shard_groups() {
            total += self
                .ae_leaves(&name, &PartitionSet::all(), u64::MAX)?
                .iter()
                .map(|leaf| leaf.count)
                .sum::<u64>();
        }
        Ok(total)
    }

    /// Apply rows (from a peer's [`Engine::ae_scan_partition`]) through the
    /// write path, each point with its own version.
    pub fn ae_apply_rows(&self, name: &str, rows: Vec<Row>) -> Result<(), StorageError> {
        let mut parts = name.split('\u{1f}');
        let (Some(db), Some(rp)) = (parts.next(), parts.next()) else {
            return Err(StorageError::Invalid(format!(
                "not a shard group name: {name:?}"
            )));
        };
        struct Decoded {
            measurement: String,
            tags: Vec<(String, String)>,
            field: String,
            column: Column,
        }
        let mut decoded = Vec::with_capacity(rows.len());
        for row in &rows {
            let (measurement, tags, field): (String, Vec<(String, String)>, String) =
                rmp_serde::from_slice(&row.key).map_err(engine_error)?;
            decoded.push(Decoded {
                measurement,
                tags,
                field,
                column: block::decode(&row.value)?,
            });
        }
        // One point per (series, time, version), with its fields.
        let mut grouped: BTreeMap<(usize, i64, u64), Vec<(usize, usize)>> = BTreeMap::new();
        type SeriesRef<'r> = (&'r str, &'r [(String, String)]);
        let mut series_of: HashMap<SeriesRef<'_>, usize> = HashMap::default();
        for (row_index, row) in decoded.iter().enumerate() {
            let next = series_of.len();
            let series = *series_of
                .entry((row.measurement.as_str(), row.tags.as_slice()))
                .or_insert(next);
            for index in 0..row.column.len() {
                grouped
                    .entry((series, row.column.times[index], row.column.versions[index]))
                    .or_default()
                    .push((row_index, index));
            }
        }
        let values: Vec<Vec<Option<Value>>> = decoded
            .iter()
            .map(|row| {
                (0..row.column.len())
                    .map(|i| row.column.values.get(i))
                    .collect()
            })
            .collect();
        let mut points = Vec::with_capacity(grouped.len());
        let mut versions = Vec::with_capacity(grouped.len());
        for ((_, time, version), members) in &grouped {
            let Some(&(first_row, _)) = members.first() else {
                continue;
            };
            let row = &decoded[first_row];
            let fields: Vec<_> = members
                .iter()
                .filter_map(|(row_index, index)| {
                    let value = values.get(*row_index)?.get(*index)?.as_ref()?;
                    Some((
                        std::borrow::Cow::Borrowed(decoded[*row_index].field.as_str()),
                        field_value(value),
                    ))
                })
                .collect();
            points.push(Point {
                measurement: std::borrow::Cow::Borrowed(row.measurement.as_str()),
                tags: row
                    .tags
                    .iter()
                    .map(|(k, v)| {
                        (
                            std::borrow::Cow::Borrowed(k.as_str()),
                            std::borrow::Cow::Borrowed(v.as_str()),
                        )
                    })
                    .collect(),
                fields,
                timestamp: *time,
                // The index of the point's version (see `write_points`).
                line: versions.len(),
                text: "",
            });
            versions.push(*version);
        }
        if points.is_empty() {
            return Ok(());
        }
        let newest = versions.iter().copied().max().unwrap_or(0);
        self.write_points(
            db,
            Some(rp),
            &points,
            super::WriteOptions {
                version: Some(newest),
                values: true,
            },
            Some(&versions),
        )
        .map(|_| ())
    }
}

fn field_value(value: &Value) -> FieldValue<'_> {
    match value {
        Value::Float(v) => FieldValue::Float(*v),
        Value::Integer(v) => FieldValue::Integer(*v),
        Value::Unsigned(v) => FieldValue::Unsigned(*v),
        Value::String(v) => FieldValue::String(std::borrow::Cow::Borrowed(v.as_str())),
        Value::Boolean(v) => FieldValue::Boolean(*v),
    }
}

/// One row of one field of one series from `points` (time, version,
/// value): what read repair writes back to a stale replica.
pub fn repair_row(
    db: &str,
    series: &super::SeriesInfo,
    field: &str,
    points: &[(i64, u64, Value)],
) -> Result<Row, StorageError> {
    field_row(
        super::series_token(db, &series.key),
        (&series.measurement, &series.tags, field),
        points,
    )
}

/// The row of one field of one series: key `rmp(measurement, tags,
/// field)`, value the encoded column of `points` (sorted by time, one per
/// time), version the newest of them.
fn field_row(
    token: u64,
    (measurement, tags, field): (&str, &[(String, String)], &str),
    points: &[(i64, u64, Value)],
) -> Result<Row, StorageError> {
    let first = points
        .first()
        .ok_or_else(|| StorageError::Engine("a row needs points".into()))?;
    let mut column = Column::new(first.2.field_type());
    let mut version = 0;
    for (time, point_version, value) in points {
        if column.values.push(value) {
            column.times.push(*time);
            column.versions.push(*point_version);
            version = version.max(*point_version);
        }
    }
    Ok(Row {
        token,
        key: rmp_serde::to_vec(&(measurement, tags, field)).map_err(engine_error)?,
        version,
        value: column.normalized().encode()?,
    })
}
