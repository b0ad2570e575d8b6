//! The guard against a real local server: with a policy that allows exactly that server,
//! a redirect from it into a private range or to another local port is refused before any
//! connection is made. (With the per-hop check removed, these fetches would fail with a
//! connection error or succeed instead, and the assertions on the error text would fail.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use switchboard_http::{AddressPolicy, FetchConfig, Fetcher};

async fn serve(other: SocketAddr, hits: Arc<AtomicUsize>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/ok", get(|| async { "fine" }))
        .route(
            "/to-private",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "http://10.0.0.1/x")]) }),
        )
        .route(
            "/to-metadata",
            get(|| async {
                (
                    StatusCode::MOVED_PERMANENTLY,
                    [(header::LOCATION, "http://169.254.169.254/latest/meta-data/")],
                )
            }),
        )
        .route(
            "/to-other-port",
            get(move || async move {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(
                        header::LOCATION,
                        format!("http://127.0.0.1:{}/", other.port()),
                    )],
                )
            }),
        )
        .route(
            "/to-ok",
            get(|| async { (StatusCode::SEE_OTHER, [(header::LOCATION, "/ok")]) }),
        )
        .route(
            "/loop",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/loop")]) }),
        )
        .route(
            "/etag",
            get(move |h: HeaderMap| {
                let hits = hits.clone();
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    if h.get(header::IF_NONE_MATCH).is_some_and(|v| v == "\"v1\"") {
                        StatusCode::NOT_MODIFIED.into_response()
                    } else {
                        ([(header::ETAG, "\"v1\"")], "versioned body").into_response()
                    }
                }
            }),
        )
        .route("/big", get(|| async { vec![b'x'; 2048] }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A fetcher allowed to reach exactly `addr`.
fn only(addr: SocketAddr) -> Fetcher {
    let mut c = FetchConfig {
        policy: AddressPolicy::Custom(Arc::new(move |a| a == addr)),
        ..FetchConfig::default()
    };
    c.max_bytes = 1024;
    c.timeout = Duration::from_millis(500);
    Fetcher::new(c).unwrap()
}

async fn setup() -> (SocketAddr, SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let other = serve("127.0.0.1:1".parse().unwrap(), hits.clone()).await;
    let main = serve(other, hits.clone()).await;
    (main, other, hits)
}

#[tokio::test]
async fn allowed_server_works_and_redirects_within_it() {
    let (addr, _, _) = setup().await;
    let f = only(addr);
    let got = f
        .fetch(&format!("http://{addr}/to-ok"), "*/*")
        .await
        .unwrap();
    assert_eq!(&got.body[..], b"fine");
    assert_eq!(got.url.path(), "/ok");
}

#[tokio::test]
async fn redirect_into_private_ranges_is_refused() {
    let (addr, other, _) = setup().await;
    let f = only(addr);
    let e = f
        .fetch(&format!("http://{addr}/to-private"), "*/*")
        .await
        .unwrap_err();
    assert_eq!(
        e.0,
        "refusing to fetch http://10.0.0.1/x: address 10.0.0.1 is not public"
    );
    let e = f
        .fetch(&format!("http://{addr}/to-metadata"), "*/*")
        .await
        .unwrap_err();
    assert!(e.0.contains("address 169.254.169.254 is not public"), "{e}");
    // The other local server is up and would answer: only the check stops it.
    let e = f
        .fetch(&format!("http://{addr}/to-other-port"), "*/*")
        .await
        .unwrap_err();
    assert_eq!(
        e.0,
        format!(
            "refusing to fetch http://127.0.0.1:{}/: address 127.0.0.1 is not public",
            other.port()
        )
    );
}

#[tokio::test]
async fn redirect_loops_size_and_time_are_capped() {
    let (addr, _, _) = setup().await;
    let f = only(addr);
    let e = f
        .fetch(&format!("http://{addr}/loop"), "*/*")
        .await
        .unwrap_err();
    assert!(e.0.starts_with("too many redirects"), "{e}");
    let e = f
        .fetch(&format!("http://{addr}/big"), "*/*")
        .await
        .unwrap_err();
    assert_eq!(e.0, "response too large (over 1024 bytes)");
    let url = format!("http://{addr}/slow");
    let e = f.fetch(&url, "*/*").await.unwrap_err();
    assert_eq!(e.0, format!("timed out fetching {url}"));
}

#[tokio::test]
async fn conditional_get_reuses_the_cached_body() {
    let (addr, _, hits) = setup().await;
    let f = only(addr);
    let url = format!("http://{addr}/etag");
    let first = f.fetch(&url, "*/*").await.unwrap();
    assert!(!first.from_cache);
    let second = f.fetch(&url, "*/*").await.unwrap();
    assert!(second.from_cache);
    assert_eq!(&second.body[..], b"versioned body");
    assert_eq!(hits.load(Ordering::SeqCst), 2, "both went to the server");
}

#[tokio::test]
async fn https_goes_through_rustls() {
    // A plain-HTTP server spoken to over https: the TLS stack (ring provider, platform
    // verifier) runs and the handshake fails cleanly rather than panicking.
    let (addr, _, _) = setup().await;
    let f = only(addr);
    let url = format!("https://{addr}/ok");
    let e = f.fetch(&url, "*/*").await.unwrap_err();
    assert!(e.0.starts_with(&format!("error fetching {url}: ")), "{e}");
}
