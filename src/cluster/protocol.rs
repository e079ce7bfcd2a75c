//! The internode messages (version [`dynaflux_actors::rpc::PROTOCOL_VERSION`]).
//!
//! Named msgpack: a field added later with `#[serde(default)]` is read by
//! old and new nodes alike during a rolling upgrade.

use dynaflux_actors::anti_entropy::{AeRequest, AeResponse};
use serde::{Deserialize, Serialize};

use super::schema::SchemaState;
use super::tombstones::Tombstone;
use crate::lineproto::Precision;
use crate::storage::{CatalogSeries, Take, Value};

#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Aggregate push-down: the partial states of one field of one series.
    Partials(PartialsRequest),
    /// Filter push-down: the rows of one series that satisfy a condition.
    Rows(RowsRequest),
    /// The sender's schema: merge it, answer with the merged one.
    Schema(SchemaState),
    /// Run a statement that changes data, not the schema (DROP MEASUREMENT,
    /// DROP SERIES, DELETE), that a peer executed, on this node only.
    Statement {
        db: Option<String>,
        rp: Option<String>,
        text: String,
    },
    /// Anti-entropy and read repair (the actors crate's messages).
    AntiEntropy(AeRequest),
    /// A replicated delete: apply it if new.
    Tombstone(Tombstone),
    /// The sender's tombstones: apply the new ones, answer with ours.
    Tombstones(Vec<Tombstone>),
    /// Every series of every database, with their measurements' fields:
    /// what a joining node copies to index every series.
    Catalog,
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
    /// Filtered rows (msgpack, the executor's own form).
    Rows(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Partial states (msgpack, the executor's own form) and the number of
    /// points they cover.
    Partials {
        points: u64,
        #[serde(with = "serde_bytes")]
        states: Vec<u8>,
        /// The windows follow the request's `tz` (an older replica ignores
        /// it: its states are then not used).
        #[serde(default)]
        zoned: bool,
    },
    Schema(SchemaState),
    Done,
    AntiEntropy(AeResponse),
    Tombstones(Vec<Tombstone>),
    /// Per database, its series.
    Catalog(Vec<(String, Vec<CatalogSeries>)>),
}

/// What a coordinator asks a replica to aggregate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartialsRequest {
    pub db: String,
    pub rp: String,
    pub series_key: String,
    pub field: String,
    /// The query's aggregate calls, by name; `indexes` read this field.
    pub calls: Vec<String>,
    pub indexes: Vec<u64>,
    /// GROUP BY time (length, offset).
    pub interval: Option<(i64, i64)>,
    /// `tz()` of the query (not UTC): windows follow its local time. A
    /// replica that knows it answers `zoned`.
    #[serde(default)]
    pub tz: Option<String>,
    /// ORDER BY time DESC: with `tz`, windows are found from the last point.
    #[serde(default)]
    pub descending: bool,
    pub min: i64,
    pub max: i64,
    /// Where windows start without GROUP BY time.
    pub origin: i64,
    /// The series' place in its group (for ties between series).
    pub member: u64,
}

/// What a coordinator asks a replica to filter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowsRequest {
    pub db: String,
    pub rp: String,
    pub series_key: String,
    /// The series' tags, for conditions on tags.
    pub tags: Vec<(String, String)>,
    pub fields: Vec<String>,
    pub min: i64,
    pub max: i64,
    /// The condition, as InfluxQL.
    pub condition: String,
    /// The measurement's fields (a name in the condition that is one of
    /// them is a field, else a tag).
    pub field_names: Vec<String>,
}
