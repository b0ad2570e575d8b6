//! `GET /api/openapi.json`.

use axum::Json;
use serde_json::{Value, json};

pub(crate) async fn document() -> Json<Value> {
    Json(
        json!({ "openapi": "3.1.0", "info": { "title": "Switchboard chat", "version": env!("CARGO_PKG_VERSION") }, "paths": {} }),
    )
}
