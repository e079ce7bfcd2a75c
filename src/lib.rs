//! Dynaflux: a leaderless, Dynamo-style time-series database cluster that
//! speaks InfluxDB 1.x.
//!
//! This crate is the node: line protocol, InfluxQL, the storage engine and the
//! HTTP API. The cluster machinery lives in `dynaflux-actors`.

pub mod cluster;
pub mod config;
pub mod http;
pub mod influxql;
pub mod lineproto;
pub mod local;
pub mod node;
pub mod storage;
