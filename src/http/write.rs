//! `POST /write`: line protocol in, 204 out.
//!
//! Bad lines are reported with InfluxDB's partial-write semantics: the good
//! lines are stored and the answer is 400 `partial write: … dropped=N`.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{web, HttpRequest, HttpResponse};

use super::body::read_body;
use super::params::Params;
use super::{ApiError, ApiState};
use crate::config::WriteConsistency;
use crate::lineproto::{self, Precision};

pub async fn write(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    state.metrics.write_requests.inc();
    let result = write_inner(request, payload, state.clone()).await;
    if result.is_err() {
        state.metrics.write_failures.inc();
    }
    result
}

async fn write_inner(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let params = Params::from_query_string(request.query_string());
    let database = params
        .non_empty("db")
        .ok_or_else(|| ApiError::BadRequest("database is required".into()))?
        .to_string();
    let consistency = match params.non_empty("consistency") {
        Some(level) => WriteConsistency::from_param(level)
            // InfluxDB's text, without the level.
            .ok_or_else(|| ApiError::BadRequest("invalid consistency level".into()))?,
        None => state
            .cluster
            .as_ref()
            .map_or(WriteConsistency::One, |cluster| {
                cluster.default_write_consistency()
            }),
    };
    let cluster = state.cluster.clone();
    let storage = state.storage.clone();
    if let Some(Err(why)) = cluster.as_ref().map(|cluster| cluster.readiness()) {
        return Err(ApiError::Unavailable(why.into()));
    }
    if !storage.database_exists(&database) {
        return Err(ApiError::NotFound(format!(
            "database not found: {database:?}"
        )));
    }
    let retention_policy = params.non_empty("rp").map(str::to_string);
    // InfluxDB ignores a precision it does not know and reads nanoseconds.
    let precision = params
        .get("precision")
        .and_then(Precision::from_param)
        .unwrap_or_default();
    let body = read_body(&request, payload, state.max_body_size).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(HttpResponse::NoContent().finish());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let points_written = state.metrics.points_written.clone();
    web::block(move || {
        let batch = lineproto::parse(&body, precision, now);
        let parse_errors = batch
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        if batch.points.is_empty() {
            if parse_errors.is_empty() {
                return Ok(());
            }
            return Err(ApiError::BadRequest(parse_errors));
        }
        let outcome = match &cluster {
            Some(cluster) => cluster.write(
                &database,
                retention_policy.as_deref(),
                &batch.points,
                (precision, now),
                consistency,
            )?,
            None => storage.write(&database, retention_policy.as_deref(), &batch.points)?,
        };
        points_written.inc_by(outcome.written as u64);
        if outcome.dropped > 0 {
            let reason = outcome.conflict.unwrap_or_else(|| "points dropped".into());
            return Err(ApiError::BadRequest(format!(
                "partial write: {reason} dropped={}",
                outcome.dropped
            )));
        }
        if !parse_errors.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "partial write: {parse_errors} dropped=0"
            )));
        }
        Ok(())
    })
    .await??;
    Ok(HttpResponse::NoContent().finish())
}
