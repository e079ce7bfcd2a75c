//! The storage boundary between the cluster machinery and the node's engine.
//!
//! Replication, hinted handoff, anti-entropy and streaming all move [`Row`]s:
//! opaque bytes placed by a 64-bit token. The engine guarantees that applying
//! a row is idempotent and order-independent (the higher version wins), which
//! is what lets hints replay in any order and repairs run any number of times.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::hlc::Version;

/// An inclusive range of ring tokens.
pub type TokenRange = RangeInclusive<u64>;

/// One unit of replicated data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Where the row lives on the ring: the hash of its series key.
    pub token: u64,
    /// The engine's key for the row; opaque to this crate.
    pub key: Vec<u8>,
    /// The write's version; the higher version wins.
    pub version: Version,
    /// The engine's value for the row; opaque to this crate.
    pub value: Vec<u8>,
}

/// What the cluster machinery needs from a node's storage engine.
pub trait RangeStore: Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;

    /// The shard groups (opaque ids) the node holds.
    fn shard_groups(&self) -> Result<Vec<String>, Self::Error>;

    /// Every row of a shard group whose token falls in `range`, in token order.
    fn scan_range(&self, shard_group: &str, range: TokenRange) -> Result<Vec<Row>, Self::Error>;

    /// Apply rows to a shard group; a row older than what is stored changes nothing.
    fn apply_rows(&self, shard_group: &str, rows: Vec<Row>) -> Result<(), Self::Error>;
}
