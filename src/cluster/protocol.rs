//! The internode messages (version [`dynaflux_actors::rpc::PROTOCOL_VERSION`]).
//!
//! Named msgpack: a field added later with `#[serde(default)]` is read by
//! old and new nodes alike during a rolling upgrade.

use serde::{Deserialize, Serialize};

use super::schema::SchemaState;
use crate::lineproto::Precision;
use crate::storage::{Take, Value};

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Store the points of `lines` (line protocol, as the client sent it,
    /// read with `precision` and `now` for lines without a timestamp) at
    /// `version`, and register the series of `index_only` without storing
    /// their points.
    Write {
        db: String,
        rp: Option<String>,
        version: u64,
        precision: Precision,
        now: i64,
        #[serde(with = "serde_bytes")]
        lines: Vec<u8>,
        #[serde(with = "serde_bytes")]
        index_only: Vec<u8>,
    },
    /// One field of one series (by series key) in `[min, max]`.
    ReadField {
        db: String,
        rp: String,
        series_key: String,
        field: String,
        min: i64,
        max: i64,
        take: Option<Take>,
        /// Answer with versions ([`Response::Versioned`]), for quorum reads.
        #[serde(default)]
        versions: bool,
    },
    /// The sender's schema: merge it, answer with the merged one.
    Schema(SchemaState),
    /// Run a statement that changes data, not the schema (DROP MEASUREMENT,
    /// DROP SERIES, DELETE), that a peer executed, on this node only.
    Statement {
        db: Option<String>,
        rp: Option<String>,
        text: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Written {
        written: u64,
        dropped: u64,
        conflict: Option<String>,
    },
    Field(Vec<(i64, Value)>),
    Versioned(Vec<(i64, u64, Value)>),
    Schema(SchemaState),
    Done,
}
