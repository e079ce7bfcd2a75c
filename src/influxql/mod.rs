//! InfluxQL: lexer → AST → plan → execute → encode.
//!
//! - [`lexer`]: tokens with byte positions (for `at line L, char C`);
//! - [`ast`]: the syntax tree of all of InfluxQL's SELECT (expressions, calls,
//!   GROUP BY, fill, limits, subqueries) and the statements that exist today;
//!   `Display` prints a statement back as InfluxQL;
//! - [`parser`]: recursive descent, InfluxDB's error texts;
//! - [`exec`]: plans a statement (time range, series filter, columns) and runs
//!   it against the storage engine;
//! - [`encode`]: JSON (plain, pretty, chunked) and CSV, byte for byte as
//!   InfluxDB 1.6.7 writes them.
//!
//! Contract with the HTTP layer:
//! - [`parse`] turns the `q` text into a [`Query`] (statements separated by `;`)
//!   or a [`ParseError`] whose `Display` is InfluxDB's text
//!   (`error parsing query: …`), answered with 400.
//! - [`execute`] runs the statements against the storage engine and returns one
//!   [`StatementResult`] per statement, with InfluxDB's "not executed" rule.
//! - `encode_*` produce the bytes of the response (JSON, CSV, chunked JSON).

pub mod ast;
pub mod encode;
mod exec;
pub mod lexer;
pub(crate) mod parser;
#[cfg(test)]
mod tests;
pub mod zone;
#[cfg(test)]
mod zone_tests;

pub use encode::{encode_csv, encode_json, encode_json_chunks};
pub(crate) use exec::{series_partials, series_rows};

use crate::storage::Storage;

/// A parsed query: one or more statements.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub statements: Vec<ast::Statement>,
}

impl Query {
    /// The statements that change data or schema, printed as InfluxDB prints
    /// them (for the GET deprecation warning: `deprecated use of 'CREATE DATABASE x' in a read only context, please use a POST request instead`).
    /// Each item is `(statement index, printed statement)`.
    pub fn write_statements(&self) -> Vec<(usize, String)> {
        self.statements
            .iter()
            .enumerate()
            .filter(|(_, statement)| statement.is_write())
            .map(|(index, statement)| (index, statement.to_string()))
            .collect()
    }
}

/// A query that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("error parsing query: {message}")]
pub struct ParseError {
    pub message: String,
}

pub fn parse(text: &str) -> Result<Query, ParseError> {
    let statements = parser::Parser::new(text).parse_query()?;
    Ok(Query { statements })
}

/// Limits of one query (`[query]` in the configuration); 0 / `None` is none.
#[derive(Debug, Clone, Default)]
pub struct QueryLimits {
    pub max_series: u64,
    pub max_points: u64,
    pub deadline: Option<std::time::Instant>,
}

/// What a query runs with.
#[derive(Debug, Clone)]
pub struct QueryContext {
    /// `db=`.
    pub database: Option<String>,
    /// `rp=`.
    pub retention_policy: Option<String>,
    /// The query's `now()`, nanoseconds.
    pub now: i64,
    pub limits: QueryLimits,
    /// Reads points of series this node does not hold from their replicas.
    pub cluster: Option<std::sync::Arc<crate::cluster::Cluster>>,
}

/// A cell of a result row. Times stay integers until encoding (`epoch=`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Cell {
    Null,
    Time(i64),
    Float(f64),
    Integer(i64),
    Unsigned(u64),
    String(String),
    Boolean(bool),
}

/// One series of a statement's result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResultSeries {
    pub name: Option<String>,
    /// `None` when the statement has no GROUP BY tags.
    pub tags: Option<Vec<(String, String)>>,
    pub columns: Vec<String>,
    pub values: Vec<Vec<Cell>>,
    pub partial: bool,
}

/// A message attached to a statement's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub level: String,
    pub text: String,
}

/// The result of one statement.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatementResult {
    pub statement_id: usize,
    pub series: Vec<ResultSeries>,
    pub messages: Vec<Message>,
    pub error: Option<String>,
    pub partial: bool,
    /// `tz()` of a SELECT other than UTC: RFC3339 times are written with
    /// its offset.
    pub zone: Option<zone::Zone>,
}

/// Run every statement; after a failing statement the rest are "not executed".
pub fn execute(query: &Query, context: &QueryContext, storage: &Storage) -> Vec<StatementResult> {
    let mut results = Vec::with_capacity(query.statements.len());
    for (index, statement) in query.statements.iter().enumerate() {
        match exec::execute_statement(statement, context, storage) {
            Ok(mut result) => {
                result.statement_id = index;
                results.push(result);
            }
            Err(error) => {
                // InfluxDB reports a failure after the first statement as "not
                // executed" and returns nothing after it.
                let error = if index == 0 {
                    error
                } else {
                    "not executed".to_string()
                };
                results.push(StatementResult {
                    statement_id: index,
                    error: Some(error),
                    ..Default::default()
                });
                break;
            }
        }
    }
    results
}

/// Time format of a response: RFC3339 (no `epoch=`) or an integer epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epoch {
    Rfc3339,
    /// Divide nanoseconds by this.
    Units(i64),
}

impl Epoch {
    /// `epoch=` parameter: `h`, `m`, `s`, `ms`, `u`/`us`, `ns`; anything else gives nanoseconds.
    pub fn from_param(value: Option<&str>) -> Epoch {
        match value {
            None => Epoch::Rfc3339,
            Some("h") => Epoch::Units(3_600_000_000_000),
            Some("m") => Epoch::Units(60_000_000_000),
            Some("s") => Epoch::Units(1_000_000_000),
            Some("ms") => Epoch::Units(1_000_000),
            Some("u") | Some("us") | Some("µ") => Epoch::Units(1_000),
            Some(_) => Epoch::Units(1),
        }
    }
}
