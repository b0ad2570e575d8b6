//! Plain HTTP endpoints.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;
use switchboard_gateway::Gateway;

pub(crate) fn routes(gateway: Gateway) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(gateway)
}

/// Liveness and a few gauges (sessions, platform instances).
async fn health(State(gateway): State<Gateway>) -> Json<Value> {
    let mut body = gateway.health();
    body["version"] = Value::String(env!("CARGO_PKG_VERSION").to_owned());
    Json(body)
}
