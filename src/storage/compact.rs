//! Background compaction of blocks.
//!
//! A flush writes one block per field of a series per shard group, so a
//! series gathers many small blocks, and late writes, replayed hints and
//! anti-entropy or read-repair rows make blocks that overlap in time (which
//! a read has to merge point by point). After each flush the engine looks
//! at the fields it wrote: one whose blocks overlap, or that has
//! [`SMALL_BLOCKS`] blocks of under half [`MAX_BLOCK_POINTS`], is rewritten
//! as sorted, non-overlapping blocks of at most [`MAX_BLOCK_POINTS`], the
//! newest version of each point kept (exactly what a read resolves, so
//! reads and Merkle leaves do not change). The new blocks and the removal
//! of the old ones are one atomic batch.
//!
//! Compaction takes the flush lock per step of [`PREFIXES_PER_STEP`]
//! fields, so it never runs beside a delete (which rewrites blocks) and
//! delays a flush by one step at most.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use super::{
    block, block_prefix, engine_error, flip, resolve, Column, Engine, ShardId, StorageError,
};

/// Most points in a block that compaction writes.
pub(super) const MAX_BLOCK_POINTS: usize = 16_384;

/// A field with this many small blocks is compacted even if none overlap.
const SMALL_BLOCKS: usize = 8;

/// Fields looked at per step (under the flush lock).
const PREFIXES_PER_STEP: usize = 64;

/// The fields written by flushes since compaction last looked at them:
/// (shard group, `token | series | field` key prefix).
#[derive(Default)]
pub(super) struct CompactionQueue {
    pending: BTreeSet<(ShardId, [u8; 20])>,
}

impl CompactionQueue {
    pub(super) fn push(&mut self, shard: ShardId, token: u64, series: u64, field: u32) {
        self.pending
            .insert((shard, block_prefix(token, series, field)));
    }

    fn take(&mut self, n: usize) -> Vec<(ShardId, [u8; 20])> {
        let mut out = Vec::with_capacity(n.min(self.pending.len()));
        while out.len() < n {
            match self.pending.pop_first() {
                Some(item) => out.push(item),
                None => break,
            }
        }
        out
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

impl Engine {
    /// One step of compaction; returns how many fields it looked at (0:
    /// nothing pending).
    pub(super) fn compact_step(&self) -> Result<usize, StorageError> {
        let work = self.compaction.lock().take(PREFIXES_PER_STEP);
        if work.is_empty() {
            return Ok(0);
        }
        let _flush = self.flush_lock.lock();
        let mut batch = self.db.batch();
        let mut merged = 0u64;
        let mut touched: Vec<ShardId> = Vec::new();
        for (shard, prefix) in &work {
            let Some(keyspace) = self.shards.read().get(shard).cloned() else {
                continue;
            };
            let mut blocks = Vec::new();
            for item in keyspace.prefix(prefix) {
                let (key, value) = item.into_inner().map_err(engine_error)?;
                let (first, last) = block::block_span(&value)?;
                let len = block::block_len(&value)?;
                blocks.push((key, value, first, last, len));
            }
            if blocks.len() < 2 {
                continue;
            }
            let mut spans: Vec<(i64, i64)> = blocks.iter().map(|b| (b.2, b.3)).collect();
            spans.sort_unstable();
            let overlap = spans.windows(2).any(|pair| pair[0].1 >= pair[1].0);
            let small = blocks.iter().filter(|b| b.4 < MAX_BLOCK_POINTS / 2).count();
            if !overlap && small < SMALL_BLOCKS {
                continue;
            }
            // In key order, then a stable sort: on equal (time, version) the
            // later block wins, as in a read.
            let mut points = Vec::new();
            let mut field_type = None;
            for (_, value, _, _, _) in &blocks {
                let column = block::decode(value)?;
                field_type.get_or_insert(column.field_type());
                column.collect_into(i64::MIN, i64::MAX, &mut points);
            }
            let Some(field_type) = field_type else {
                continue;
            };
            let resolved = resolve(points);
            for (key, _, _, _, _) in &blocks {
                batch.remove(&keyspace, key.clone());
            }
            for chunk in resolved.chunks(MAX_BLOCK_POINTS) {
                let mut column = Column::new(field_type);
                for (time, version, value) in chunk {
                    if column.values.push(value) {
                        column.times.push(*time);
                        column.versions.push(*version);
                    }
                }
                let Some(&first) = column.times.first() else {
                    continue;
                };
                let mut key = Vec::with_capacity(36);
                key.extend_from_slice(prefix);
                key.extend_from_slice(&flip(first).to_be_bytes());
                key.extend_from_slice(
                    &self.block_seq.fetch_add(1, Ordering::Relaxed).to_be_bytes(),
                );
                batch.insert(&keyspace, key, column.encode()?);
            }
            merged += blocks.len() as u64;
            touched.push(*shard);
        }
        if merged > 0 {
            // Under the shards lock: a shard group dropped meanwhile (retention)
            // is not written to again.
            let shards = self.shards.read();
            if touched.iter().all(|shard| shards.contains_key(shard)) {
                batch.commit().map_err(engine_error)?;
                self.blocks_compacted.fetch_add(merged, Ordering::Relaxed);
            }
        }
        Ok(work.len())
    }

    /// Compact everything pending now (the background loop does it step
    /// by step).
    #[cfg(test)]
    pub fn compact_pending(&self) -> Result<(), StorageError> {
        while self.compact_step()? > 0 {}
        Ok(())
    }

    /// Blocks merged away by compaction since start.
    pub fn blocks_compacted(&self) -> u64 {
        self.blocks_compacted.load(Ordering::Relaxed)
    }

    pub(super) fn compaction_pending(&self) -> bool {
        !self.compaction.lock().is_empty()
    }

    /// How many blocks each field of each series has (tests).
    #[cfg(test)]
    pub fn block_counts(&self) -> Vec<usize> {
        let mut counts: std::collections::BTreeMap<Vec<u8>, usize> = Default::default();
        for keyspace in self.shards.read().values() {
            for item in keyspace.iter() {
                if let Ok(key) = item.key() {
                    *counts.entry(key[..20].to_vec()).or_default() += 1;
                }
            }
        }
        counts.into_values().collect()
    }
}
