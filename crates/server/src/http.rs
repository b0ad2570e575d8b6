//! Plain HTTP endpoints.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
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

/// Give a request its own copies of its URI and headers.
///
/// hyper parses them as slices of its connection read buffer (16 KiB): a handler that kept
/// a request head for a connection's lifetime (socketioxide did) would pin that whole
/// buffer per idle WebSocket (measured: ~16 KB per connection). The copy makes that
/// impossible for any route.
pub(crate) async fn own_request_head(mut req: Request) -> Request {
    if let Ok(uri) = Uri::try_from(req.uri().to_string()) {
        *req.uri_mut() = uri;
    }
    let shared = std::mem::take(req.headers_mut());
    let mut owned = HeaderMap::with_capacity(shared.len());
    for (name, value) in &shared {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) else {
            continue; // cannot happen: both were valid a moment ago
        };
        owned.append(name, value);
    }
    *req.headers_mut() = owned;
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[tokio::test]
    async fn request_head_is_copied_unchanged() {
        let req = Request::builder()
            .uri("/sockethub/?EIO=4&transport=websocket")
            .header("x-custom", "value")
            .header("origin", "http://127.0.0.1")
            .header("x-custom", "second")
            .body(Body::empty())
            .unwrap();
        let before_uri = req.uri().clone();
        let before_headers = req.headers().clone();
        let after = own_request_head(req).await;
        assert_eq!(after.uri(), &before_uri);
        assert_eq!(after.headers(), &before_headers);
        let customs: Vec<_> = after.headers().get_all("x-custom").iter().collect();
        assert_eq!(
            customs,
            ["value", "second"],
            "repeated headers keep their order"
        );
    }
}
