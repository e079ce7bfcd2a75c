//! `GET|POST /query`: InfluxQL in, InfluxDB's JSON (or CSV) out.
//!
//! A query that does not parse is a 400; a statement that fails is reported
//! inside a 200, as InfluxDB does.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use super::body::read_body;
use super::params::Params;
use super::{ApiError, ApiState};
use crate::influxql::{self, Epoch, Message, QueryContext, QueryLimits};

/// InfluxDB's default `chunk_size`.
const DEFAULT_CHUNK_SIZE: usize = 10_000;

pub async fn query(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    state.metrics.query_requests.inc();
    let mut params = Params::from_query_string(request.query_string());
    let is_form = request
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if request.method() == Method::POST && is_form {
        let body = read_body(&request, payload, state.max_body_size).await?;
        params.extend(&body);
    }
    let text = params
        .non_empty("q")
        .ok_or_else(|| ApiError::BadRequest("missing required parameter \"q\"".into()))?;
    let parsed = influxql::parse(text).map_err(|error| ApiError::BadRequest(error.to_string()))?;
    if state
        .cluster
        .as_ref()
        .is_some_and(|cluster| !cluster.knows_every_series())
    {
        return Err(ApiError::Unavailable(
            "cluster not ready: this node is joining and still copying the series index".into(),
        ));
    }
    let context = QueryContext {
        database: params.non_empty("db").map(str::to_string),
        retention_policy: params.non_empty("rp").map(str::to_string),
        now: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0),
        limits: QueryLimits {
            max_series: state.query.max_select_series,
            max_points: state.query.max_select_point,
            deadline: (!state.query.timeout.is_zero())
                .then(|| std::time::Instant::now() + state.query.timeout),
        },
        cluster: state.cluster.clone(),
    };
    let epoch = Epoch::from_param(params.get("epoch"));
    let pretty = params.flag("pretty");
    let chunk_size = if params.flag("chunked") {
        Some(
            params
                .get("chunk_size")
                .and_then(|size| size.parse::<usize>().ok())
                .filter(|&size| size > 0)
                .unwrap_or(DEFAULT_CHUNK_SIZE),
        )
    } else {
        None
    };
    let csv = request
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("application/csv") || value.contains("text/csv"));
    let read_only = request.method() == Method::GET;
    let storage = state.storage.clone();
    let (database, retention_policy) = (context.database.clone(), context.retention_policy.clone());
    let (body, applied) = web::block(move || {
        let mut results = influxql::execute(&parsed, &context, &storage);
        // Schema statements that worked here are applied on every member.
        let applied: Vec<String> = parsed
            .write_statements()
            .into_iter()
            .filter(|(index, _)| results.get(*index).is_some_and(|r| r.error.is_none()))
            .map(|(_, text)| text)
            .collect();
        if read_only {
            for (index, statement) in parsed.write_statements() {
                if let Some(result) = results.get_mut(index) {
                    result.messages.push(Message {
                        level: "warning".into(),
                        text: format!(
                            "deprecated use of '{statement}' in a read only context, please use a POST request instead"
                        ),
                    });
                }
            }
        }
        let body = if csv {
            influxql::encode_csv(&results, epoch)
        } else if let Some(chunk_size) = chunk_size {
            influxql::encode_json_chunks(&results, epoch, pretty, chunk_size)
        } else {
            influxql::encode_json(&results, epoch, pretty)
        };
        (body, applied)
    })
    .await?;
    if let Some(cluster) = &state.cluster {
        for text in applied {
            cluster
                .after_statement(database.clone(), retention_policy.clone(), text)
                .await;
        }
    }
    let content_type = if csv { "text/csv" } else { "application/json" };
    Ok(HttpResponse::Ok().content_type(content_type).body(body))
}
