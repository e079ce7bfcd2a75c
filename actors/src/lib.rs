//! `dynaflux-actors`: the cluster machinery of Dynaflux.
//!
//! This crate knows nothing of line protocol or InfluxQL. It moves opaque rows,
//! `(token, key bytes, version, value bytes)`, between replicas. The node's
//! storage engine implements the traits in [`store`] so that membership,
//! ownership, hinted handoff, anti-entropy and streaming can be built here and
//! tested without the time-series half.
//!
//! What is here today: the hybrid logical clock that stamps every write
//! ([`hlc`]) and the storage traits ([`store`]). The actors themselves arrive
//! with the cluster issue.

pub mod hlc;
pub mod ownership;
pub mod rpc;
pub mod store;

pub use hlc::{Hlc, Version};
pub use ownership::Ring;
pub use store::{RangeStore, Row, TokenRange};
