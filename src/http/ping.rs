//! `/ping` and `/health`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::params::Params;
use super::{ApiState, INFLUXDB_VERSION};

/// 204, or 200 with the version when `verbose=true`.
pub async fn ping(request: HttpRequest) -> HttpResponse {
    let params = Params::from_query_string(request.query_string());
    if params.flag("verbose") {
        HttpResponse::Ok().json(serde_json::json!({ "version": INFLUXDB_VERSION }))
    } else {
        HttpResponse::NoContent().finish()
    }
}

/// InfluxDB 1.8's health answer, which monitoring tools expect; 503 with
/// `status: fail` while the node waits for its peers (it refuses writes
/// then), so that a load balancer sends it nothing yet.
pub async fn health(state: web::Data<ApiState>) -> HttpResponse {
    let not_ready = state.cluster.as_ref().and_then(|cluster| {
        cluster.readiness().err().or_else(|| {
            (cluster.state() == dynaflux_actors::NodeState::Joining)
                .then_some("joining: streaming its ranges in before it serves reads for them")
        })
    });
    if let Some(message) = not_ready {
        return HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "name": "dynaflux",
            "message": message,
            "status": "fail",
            "checks": [],
            "version": INFLUXDB_VERSION,
        }));
    }
    HttpResponse::Ok().json(serde_json::json!({
        "name": "dynaflux",
        "message": "ready for queries and writes",
        "status": "pass",
        "checks": [],
        "version": INFLUXDB_VERSION,
    }))
}
