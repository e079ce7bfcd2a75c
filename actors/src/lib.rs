//! `dynaflux-actors`: the cluster machinery of Dynaflux.
//!
//! This crate knows nothing of line protocol or InfluxQL. It moves opaque rows,
//! `(token, key bytes, version, value bytes)`, between replicas. The node's
//! storage engine implements the traits in [`store`] so that membership,
//! ownership, hinted handoff, anti-entropy and streaming can be built here and
//! tested without the time-series half.
//!
//! What is here: the hybrid logical clock that stamps every write
//! ([`hlc`]), the storage traits ([`store`]), gossip membership
//! ([`membership`]), the hash ring ([`ownership`]), internode RPC
//! ([`rpc`]) and Merkle anti-entropy ([`anti_entropy`]).

pub mod anti_entropy;
pub mod hlc;
pub mod membership;
pub mod ownership;
pub mod rpc;
pub mod store;
pub mod streaming;

pub use hlc::{Hlc, Version};
pub use membership::{
    HmacTransport, Member, Membership, MembershipConfig, MembershipHandle, MembershipSnapshot,
    NodeState, SetState, Stop,
};
pub use ownership::Ring;
pub use store::{Leaf, PartitionSet, RangeStore, Row, TokenRange};
