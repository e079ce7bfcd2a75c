//! The InfluxDB 1.x HTTP API on actix-web: `/write`, `/query`, `/ping`,
//! `/health`.
//!
//! Handlers are the hot path: they parse, write and scan themselves, calling
//! the storage engine through `web::block` because fjall blocks; nothing goes
//! through an actor mailbox. Status codes, headers and JSON bodies follow
//! InfluxDB 1.6.7: a client's mistake is a 4xx with InfluxDB's error text, an
//! engine failure is a 500, and every response carries a `Request-Id` and the
//! `X-Influxdb-Version` header that client libraries look for.

mod body;
mod error;
mod metrics;
mod params;
mod ping;
mod query;
mod write;

use std::sync::Arc;

use actix_web::dev::Service;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::web;

pub use error::ApiError;
pub use metrics::Metrics;

use crate::storage::Storage;

/// What InfluxDB clients see as the server version. The `1.6.7` prefix tells
/// client libraries which API dialect to speak; the suffix is ours.
pub const INFLUXDB_VERSION: &str = concat!("1.6.7-dynaflux-", env!("CARGO_PKG_VERSION"));
/// The `X-Influxdb-Build` header: InfluxDB says `OSS` or `ENT`.
pub const INFLUXDB_BUILD: &str = "OSS";

/// Shared, immutable state of the HTTP handlers.
pub struct ApiState {
    pub storage: Storage,
    /// Largest request body after decompression.
    pub max_body_size: usize,
    /// `[query]` limits.
    pub query: crate::config::QueryConfig,
    /// The cluster this node belongs to; `None` in tests of the API alone.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// What `GET /metrics` serves.
    pub metrics: metrics::Metrics,
}

/// Register the API's routes and middleware on an actix-web app.
pub fn configure(state: Arc<ApiState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::from(state))
            .service(
                web::resource("/write")
                    .route(web::post().to(write::write))
                    .route(web::method(Method::OPTIONS).to(options))
                    .default_service(web::to(|| not_allowed("POST, OPTIONS"))),
            )
            .service(
                web::resource("/query")
                    .route(web::get().to(query::query))
                    .route(web::post().to(query::query))
                    .route(web::method(Method::OPTIONS).to(options))
                    .default_service(web::to(|| not_allowed("GET, OPTIONS, POST"))),
            )
            .service(
                web::resource("/ping")
                    .route(web::get().to(ping::ping))
                    .route(web::head().to(ping::ping))
                    .default_service(web::to(|| not_allowed("GET, HEAD"))),
            )
            .route("/health", web::get().to(ping::health))
            .route("/cluster", web::get().to(cluster_status))
            .route("/cluster/repair", web::post().to(cluster_repair))
            .route(
                "/cluster/decommission",
                web::post().to(cluster_decommission),
            )
            .route("/cluster/remove", web::post().to(cluster_remove))
            .route("/cluster/add-node", web::post().to(cluster_add_node))
            .route("/metrics", web::get().to(metrics::metrics));
    }
}

/// Build the app with the standard headers middleware. Used by the node and by tests.
/// `GET /cluster`: members, liveness, addresses, ring settings and this
/// node's own counters, as JSON.
async fn cluster_status(
    state: web::Data<ApiState>,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> actix_web::HttpResponse {
    let points = query.get("points").is_some_and(|v| v == "true" || v == "1");
    match &state.cluster {
        Some(cluster) => {
            let cluster = cluster.clone();
            match web::block(move || cluster.status(points)).await {
                Ok(status) => actix_web::HttpResponse::Ok().json(status),
                Err(error) => actix_web::HttpResponse::InternalServerError()
                    .json(serde_json::json!({ "error": error.to_string() })),
            }
        }
        None => actix_web::HttpResponse::NotFound().json(serde_json::json!({
            "error": "this node runs without the cluster machinery"
        })),
    }
}

/// `POST /cluster/repair`: run an anti-entropy round with every live peer
/// now, wait for it, and answer with its report (JSON).
async fn cluster_repair(state: web::Data<ApiState>) -> actix_web::HttpResponse {
    match &state.cluster {
        Some(cluster) => match cluster.repair().await {
            Ok(report) => actix_web::HttpResponse::Ok().json(report),
            Err(error) => actix_web::HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({ "error": error })),
        },
        None => actix_web::HttpResponse::NotFound().json(serde_json::json!({
            "error": "this node runs without the cluster machinery"
        })),
    }
}

/// `POST /cluster/decommission`: this node hands its ranges off, leaves
/// the ring and stops.
async fn cluster_decommission(state: web::Data<ApiState>) -> actix_web::HttpResponse {
    match &state.cluster {
        Some(cluster) => match cluster.decommission() {
            Ok(()) => actix_web::HttpResponse::Accepted().json(serde_json::json!({
                "node": cluster.node_id,
                "state": "leaving",
            })),
            Err((code, error)) => error_json(code, &error),
        },
        None => error_json(404, "this node runs without the cluster machinery"),
    }
}

/// `POST /cluster/remove?node=ID`: take a dead member out of the ring.
async fn cluster_remove(
    state: web::Data<ApiState>,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> actix_web::HttpResponse {
    let Some(cluster) = &state.cluster else {
        return error_json(404, "this node runs without the cluster machinery");
    };
    let Some(node) = query.get("node").filter(|n| !n.is_empty()) else {
        return error_json(
            400,
            "missing parameter: node (the id of the member to remove)",
        );
    };
    match cluster.remove(node) {
        Ok(message) => actix_web::HttpResponse::Accepted()
            .json(serde_json::json!({ "node": node, "message": message })),
        Err((code, error)) => error_json(code, &error),
    }
}

/// `POST /cluster/add-node?addr=ADDR`: let a node started with
/// `cluster.auto_join = false` join.
async fn cluster_add_node(
    state: web::Data<ApiState>,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> actix_web::HttpResponse {
    let Some(cluster) = &state.cluster else {
        return error_json(404, "this node runs without the cluster machinery");
    };
    let Some(address) = query.get("addr").filter(|a| !a.is_empty()) else {
        return error_json(
            400,
            "missing parameter: addr (the new node's id or address)",
        );
    };
    match cluster.add_node(address) {
        Ok(id) => actix_web::HttpResponse::Accepted().json(serde_json::json!({ "node": id })),
        Err((code, error)) => error_json(code, &error),
    }
}

/// A known path asked with a method it does not take: InfluxDB's 405.
async fn not_allowed(allow: &'static str) -> actix_web::HttpResponse {
    actix_web::HttpResponse::MethodNotAllowed()
        .insert_header(("Allow", allow))
        .content_type("text/plain; charset=utf-8")
        .body("Method Not Allowed\n")
}

/// `OPTIONS /write` and `/query`: 200 with no body, as InfluxDB (CORS
/// preflight).
async fn options() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().finish()
}

fn error_json(code: u16, error: &str) -> actix_web::HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(code)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    actix_web::HttpResponse::build(status).json(serde_json::json!({ "error": error }))
}

pub fn app(
    state: Arc<ApiState>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<actix_web::body::BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    actix_web::App::new()
        .configure(configure(state))
        .default_service(web::to(error::not_found))
        .wrap_fn(|request, service| {
            let response = service.call(request);
            async move {
                let mut response = response.await?;
                let headers = response.headers_mut();
                let request_id = uuid::Uuid::new_v4().to_string();
                if let Ok(value) = HeaderValue::from_str(&request_id) {
                    headers.insert(HeaderName::from_static("request-id"), value.clone());
                    headers.insert(HeaderName::from_static("x-request-id"), value);
                }
                headers.insert(
                    HeaderName::from_static("x-influxdb-version"),
                    HeaderValue::from_static(INFLUXDB_VERSION),
                );
                headers.insert(
                    HeaderName::from_static("x-influxdb-build"),
                    HeaderValue::from_static(INFLUXDB_BUILD),
                );
                Ok(response)
            }
        })
}
