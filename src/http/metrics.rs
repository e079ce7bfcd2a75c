//! `GET /metrics`: the node's counters in Prometheus text format
//! (`prometheus-client`): writes and queries served, points stored, and the
//! hinted handoff queues.

use std::sync::atomic::AtomicU64;

use actix_web::{web, HttpResponse};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::ApiState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Target {
    node: String,
}

/// Counters the handlers bump, and gauges filled at each scrape.
pub struct Metrics {
    registry: Registry,
    pub write_requests: Counter,
    pub write_failures: Counter,
    pub points_written: Counter,
    pub query_requests: Counter,
    points_stored: Gauge,
    blocks_compacted: Gauge,
    leaves_rehashed: Gauge,
    hints_replayed: Gauge,
    hints_dropped: Gauge,
    pushdowns_served: Gauge,
    hint_entries: Family<Target, Gauge>,
    hint_bytes: Family<Target, Gauge>,
    hint_oldest_age: Family<Target, Gauge<f64, AtomicU64>>,
    members_live: Gauge,
    ae_rounds: Gauge,
    ae_partitions_repaired: Gauge,
    ae_rows: Family<Direction, Gauge>,
    ae_bytes: Family<Direction, Gauge>,
    ae_last_round_seconds: Gauge<f64, AtomicU64>,
    ae_last_round_finished: Gauge,
    read_repair_reads: Gauge,
    read_repair_points: Gauge,
    points_cleaned: Gauge,
    auto_removals: Gauge,
    members_moving: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    direction: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dynaflux");
        let metrics = Metrics {
            registry: Registry::default(),
            write_requests: Counter::default(),
            write_failures: Counter::default(),
            points_written: Counter::default(),
            query_requests: Counter::default(),
            points_stored: Gauge::default(),
            blocks_compacted: Gauge::default(),
            leaves_rehashed: Gauge::default(),
            hints_replayed: Gauge::default(),
            hints_dropped: Gauge::default(),
            pushdowns_served: Gauge::default(),
            hint_entries: Family::default(),
            hint_bytes: Family::default(),
            hint_oldest_age: Family::default(),
            members_live: Gauge::default(),
            ae_rounds: Gauge::default(),
            ae_partitions_repaired: Gauge::default(),
            ae_rows: Family::default(),
            ae_bytes: Family::default(),
            ae_last_round_seconds: Gauge::default(),
            ae_last_round_finished: Gauge::default(),
            read_repair_reads: Gauge::default(),
            read_repair_points: Gauge::default(),
            points_cleaned: Gauge::default(),
            auto_removals: Gauge::default(),
            members_moving: Gauge::default(),
        };
        registry.register(
            "write_requests",
            "/write requests",
            metrics.write_requests.clone(),
        );
        registry.register(
            "write_failures",
            "/write requests answered with an error",
            metrics.write_failures.clone(),
        );
        registry.register(
            "points_written",
            "Points accepted through this node's /write",
            metrics.points_written.clone(),
        );
        registry.register(
            "query_requests",
            "/query requests",
            metrics.query_requests.clone(),
        );
        registry.register(
            "points_stored",
            "Points this node stored since it started (its replicas' share)",
            metrics.points_stored.clone(),
        );
        registry.register(
            "blocks_compacted",
            "Blocks merged away by background compaction since start",
            metrics.blocks_compacted.clone(),
        );
        registry.register(
            "anti_entropy_leaves_rehashed",
            "Merkle leaves re-hashed from their data (overwrites, late points, restarts) since start",
            metrics.leaves_rehashed.clone(),
        );
        registry.register(
            "hints_replayed",
            "Hints delivered to their targets since start",
            metrics.hints_replayed.clone(),
        );
        registry.register(
            "hints_dropped",
            "Hints dropped (queue full or too old) since start: data at risk",
            metrics.hints_dropped.clone(),
        );
        registry.register(
            "pushdowns_served",
            "Aggregates and filters computed here for other nodes' queries",
            metrics.pushdowns_served.clone(),
        );
        registry.register(
            "hint_queue_entries",
            "Hints queued for a target node",
            metrics.hint_entries.clone(),
        );
        registry.register(
            "hint_queue_bytes",
            "Bytes of hints queued for a target node",
            metrics.hint_bytes.clone(),
        );
        registry.register(
            "hint_queue_oldest_age_seconds",
            "Age of the oldest hint queued for a target node",
            metrics.hint_oldest_age.clone(),
        );
        registry.register(
            "members_live",
            "Cluster members this node sees live (itself included)",
            metrics.members_live.clone(),
        );
        registry.register(
            "anti_entropy_rounds",
            "Anti-entropy rounds completed since start",
            metrics.ae_rounds.clone(),
        );
        registry.register(
            "anti_entropy_partitions_repaired",
            "Partitions (per shard group and peer) whose Merkle leaves differed, since start",
            metrics.ae_partitions_repaired.clone(),
        );
        registry.register(
            "anti_entropy_rows",
            "Rows streamed by anti-entropy since start, by direction",
            metrics.ae_rows.clone(),
        );
        registry.register(
            "anti_entropy_bytes",
            "Bytes streamed by anti-entropy since start, by direction",
            metrics.ae_bytes.clone(),
        );
        registry.register(
            "anti_entropy_last_round_duration_seconds",
            "How long the last anti-entropy round took",
            metrics.ae_last_round_seconds.clone(),
        );
        registry.register(
            "anti_entropy_last_round_finished_timestamp_seconds",
            "When the last anti-entropy round ended (Unix time)",
            metrics.ae_last_round_finished.clone(),
        );
        registry.register(
            "read_repair_reads",
            "Quorum reads that found replicas disagreeing, since start",
            metrics.read_repair_reads.clone(),
        );
        registry.register(
            "read_repair_points",
            "Points written back to stale replicas by read repair, since start",
            metrics.read_repair_points.clone(),
        );
        registry.register(
            "points_cleaned",
            "Points deleted by cleanup after moves (partitions this node no longer holds), since start",
            metrics.points_cleaned.clone(),
        );
        registry.register(
            "auto_removals",
            "Members removed by cluster.offline_threshold, since start",
            metrics.auto_removals.clone(),
        );
        registry.register(
            "ring_moving",
            "1 while ownership moves (a join, decommission, removal or replacement)",
            metrics.members_moving.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub async fn metrics(state: web::Data<ApiState>) -> HttpResponse {
    let metrics = &state.metrics;
    metrics
        .points_stored
        .set(int(state.storage.points_stored()));
    metrics
        .blocks_compacted
        .set(int(state.storage.blocks_compacted()));
    metrics
        .leaves_rehashed
        .set(int(state.storage.leaves_rehashed()));
    if let Some(cluster) = &state.cluster {
        let status = cluster.status(false);
        metrics.hints_replayed.set(int(status.local.hints_replayed));
        metrics.hints_dropped.set(int(status.local.hints_dropped));
        metrics
            .pushdowns_served
            .set(int(status.local.pushdowns_served));
        metrics
            .members_live
            .set(int(status.members.iter().filter(|m| m.live).count() as u64));
        let ae = &status.local.anti_entropy;
        metrics.ae_rounds.set(int(ae.rounds));
        metrics
            .ae_partitions_repaired
            .set(int(ae.partitions_repaired));
        for (direction, rows, bytes) in [
            ("in", ae.rows_received, ae.bytes_received),
            ("out", ae.rows_sent, ae.bytes_sent),
        ] {
            let label = Direction {
                direction: direction.into(),
            };
            metrics.ae_rows.get_or_create(&label).set(int(rows));
            metrics.ae_bytes.get_or_create(&label).set(int(bytes));
        }
        if let Some(round) = &ae.last_round {
            metrics
                .ae_last_round_seconds
                .set(round.duration_ms as f64 / 1000.0);
            metrics
                .ae_last_round_finished
                .set(int(round.finished_ms / 1000));
        }
        metrics
            .read_repair_reads
            .set(int(status.local.read_repair.reads_repaired));
        metrics
            .read_repair_points
            .set(int(status.local.read_repair.points_repaired));
        metrics.points_cleaned.set(int(status.local.points_cleaned));
        metrics.auto_removals.set(int(status.local.auto_removals));
        metrics.members_moving.set(i64::from(status.moving));
        metrics.hint_entries.clear();
        metrics.hint_bytes.clear();
        metrics.hint_oldest_age.clear();
        for (node, queue) in &status.local.hints {
            let target = Target { node: node.clone() };
            metrics
                .hint_entries
                .get_or_create(&target)
                .set(int(queue.entries));
            metrics
                .hint_bytes
                .get_or_create(&target)
                .set(int(queue.bytes));
            metrics
                .hint_oldest_age
                .get_or_create(&target)
                .set(queue.oldest_age_ms as f64 / 1000.0);
        }
    }
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &metrics.registry) {
        Ok(()) => HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(body),
        Err(error) => HttpResponse::InternalServerError().body(error.to_string()),
    }
}
