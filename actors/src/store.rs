//! The storage boundary between the cluster machinery and the node's engine.
//!
//! Replication, hinted handoff, anti-entropy and streaming all move [`Row`]s:
//! opaque bytes placed by a 64-bit token. The engine guarantees that applying
//! a row is idempotent and order-independent (the higher version wins), which
//! is what lets hints replay in any order and repairs run any number of times.
//!
//! Data is compared per Merkle [`Leaf`]: the content of one partition (the
//! top bits of the token, see [`crate::ownership::partition_of`]) of one
//! shard group, as an order-independent hash of its resolved contents. The
//! engine keeps leaves up to date itself: a write marks its leaves dirty in
//! the same step that makes it durable, and [`RangeStore::leaves`] re-hashes
//! only the dirty ones, so comparing replicas that agree reads no data.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::hlc::Version;
use crate::ownership::PARTITIONS;

/// An inclusive range of ring tokens.
pub type TokenRange = RangeInclusive<u64>;

/// One unit of replicated data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Where the row lives on the ring: the hash of its series key.
    pub token: u64,
    /// The engine's key for the row; opaque to this crate.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The newest version in the row; the higher version wins.
    pub version: Version,
    /// The engine's value for the row; opaque to this crate.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

impl Row {
    /// Bytes on the wire, roughly: what rate limits count.
    pub fn size(&self) -> usize {
        self.key.len() + self.value.len() + 16
    }
}

/// The content hash of one partition of one shard group: the wrapping sum
/// of the hashes of its resolved points (a multiset hash: independent of
/// arrival order and of how blocks were flushed), and how many points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Leaf {
    pub partition: u32,
    pub hash: u128,
    pub count: u64,
}

/// A set of partitions, as a bitmap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSet {
    words: Vec<u64>,
}

impl Default for PartitionSet {
    fn default() -> Self {
        PartitionSet {
            words: vec![0; PARTITIONS / 64],
        }
    }
}

impl PartitionSet {
    pub fn all() -> PartitionSet {
        PartitionSet {
            words: vec![u64::MAX; PARTITIONS / 64],
        }
    }

    pub fn insert(&mut self, partition: usize) {
        if let Some(word) = self.words.get_mut(partition / 64) {
            *word |= 1 << (partition % 64);
        }
    }

    pub fn contains(&self, partition: usize) -> bool {
        self.words
            .get(partition / 64)
            .is_some_and(|word| word & (1 << (partition % 64)) != 0)
    }

    pub fn len(&self) -> usize {
        self.words
            .iter()
            .map(|word| word.count_ones() as usize)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.words.len() * 64).filter(|partition| self.contains(*partition))
    }
}

/// What the cluster machinery needs from a node's storage engine. Every
/// call may block (disk): async callers use `spawn_blocking`.
pub trait RangeStore: Send + Sync + 'static {
    type Error: std::fmt::Display + Send + Sync + 'static;

    /// The shard groups (opaque ids, the same on every node) the node holds
    /// and that anti-entropy should compare (not those about to expire).
    fn shard_groups(&self) -> Result<Vec<String>, Self::Error>;

    /// The non-empty leaves of a shard group among `partitions`, each up to
    /// date (dirty leaves are re-hashed first), in partition order, over the
    /// points with versions below `horizon` (newer ones are still settling:
    /// in flight to their replicas; `Version::MAX` for every point). Both
    /// sides of an exchange use the same horizon.
    fn leaves(
        &self,
        shard_group: &str,
        partitions: &PartitionSet,
        horizon: Version,
    ) -> Result<Vec<Leaf>, Self::Error>;

    /// Every row of one partition of a shard group.
    fn scan_partition(&self, shard_group: &str, partition: u32) -> Result<Vec<Row>, Self::Error>;

    /// Apply rows to a shard group; what is older than what is stored
    /// changes nothing, and what a delete covers is not brought back.
    fn apply_rows(&self, shard_group: &str, rows: Vec<Row>) -> Result<(), Self::Error>;

    /// Delete every point of `partitions` of a shard group (the node no
    /// longer holds them: cleanup after a move); answers how many points
    /// went.
    fn drop_partitions(
        &self,
        shard_group: &str,
        partitions: &PartitionSet,
    ) -> Result<u64, Self::Error>;
}
