//! `dynaflux-actors`: the cluster machinery of Dynaflux.
//!
//! This crate knows nothing of line protocol or InfluxQL. It moves opaque rows,
//! `(token, key bytes, version, value bytes)`, between replicas. The node's
//! storage engine implements the traits in [`store`] so that membership,
//! ownership, hinted handoff, anti-entropy and streaming can be built here and
//! tested without the time-series half.
//!
//! What is here today: the hybrid logical clock that stamps every write
//! ([`hlc`]), the storage traits ([`store`]) and gossip membership
//! ([`membership`]).

pub mod hlc;
pub mod membership;
pub mod store;

pub use hlc::{Hlc, Version};
pub use membership::{
    HmacTransport, Member, Membership, MembershipConfig, MembershipHandle, MembershipSnapshot,
    NodeState, SetState, Stop,
};
pub use store::{RangeStore, Row, TokenRange};
