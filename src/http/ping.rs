//! `/ping` and `/health`.

use actix_web::{HttpRequest, HttpResponse};

use super::params::Params;
use super::INFLUXDB_VERSION;

/// 204, or 200 with the version when `verbose=true`.
pub async fn ping(request: HttpRequest) -> HttpResponse {
    let params = Params::from_query_string(request.query_string());
    if params.flag("verbose") {
        HttpResponse::Ok().json(serde_json::json!({ "version": INFLUXDB_VERSION }))
    } else {
        HttpResponse::NoContent().finish()
    }
}

/// InfluxDB 1.8's health answer, which monitoring tools expect.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "name": "dynaflux",
        "message": "ready for queries and writes",
        "status": "pass",
        "checks": [],
        "version": INFLUXDB_VERSION,
    }))
}
