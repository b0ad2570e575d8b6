//! A local HTTP server with real feeds and hostile responses, and a gateway running the
//! feeds and metadata platforms in real worker processes.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use switchboard_engine::Engine;
use switchboard_gateway::{Gateway, GatewayConfig, Session, WorkerCommand};
use switchboard_platform::Platform;
use switchboard_platform_feeds::Feeds;
use switchboard_platform_metadata::Metadata;
use switchboard_protocol::context;

pub const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(Default)]
pub struct Hits {
    pub etag_requests: AtomicUsize,
    pub not_modified: AtomicUsize,
}

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/feeds")
}

/// A 25-entry Atom feed (also used by the benchmark).
pub fn atom_25() -> String {
    let mut s = String::from(
        r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Twenty-five</title>
<link href="http://example.org/"/><id>urn:example:25</id><updated>2026-11-01T00:00:00Z</updated>
<author><name>Bench</name></author>
"#,
    );
    for i in 1..=25 {
        s.push_str(&format!(
            "<entry><title>Entry {i}</title><link href=\"http://example.org/{i}\"/>\
             <id>urn:example:25:{i}</id><published>2026-11-{i:02}T12:00:00Z</published>\
             <summary>Summary {i}</summary><content type=\"html\">&lt;p&gt;Body of entry {i}, \
             with some text to parse.&lt;/p&gt;</content></entry>\n"
        ));
    }
    s.push_str("</feed>\n");
    s
}

const PAGE: &str = r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Plain title</title>
<meta name="description" content="A page about things">
<meta property="og:title" content="The Page">
<meta property="og:type" content="website">
<meta property="og:image" content="/cover.png">
<meta property="og:site_name" content="Local Site">
<meta name="twitter:card" content="summary">
<link rel="icon" href="/favicon.png">
</head><body><p>hello</p></body></html>"#;

async fn fixture(Path(name): Path<String>) -> Response {
    if name.contains('/') || name.contains("..") {
        return StatusCode::NOT_FOUND.into_response();
    }
    match std::fs::read(data_dir().join(&name)) {
        Ok(bytes) => {
            let ct = if name.ends_with(".json") {
                "application/feed+json"
            } else if name.starts_with("atom") {
                "application/atom+xml"
            } else {
                "application/rss+xml"
            };
            ([(header::CONTENT_TYPE, ct)], bytes).into_response()
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// 8 MiB of spaces, gzipped (~8 KiB), built once.
pub fn gzip_bomb() -> &'static [u8] {
    static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BOMB.get_or_init(|| gzip(&vec![b' '; 8 * 1024 * 1024]))
}

/// Start the server on 127.0.0.1:0.
pub async fn serve() -> (SocketAddr, Arc<Hits>) {
    let hits = Arc::new(Hits::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/fixtures/{name}", get(fixture))
        .route(
            "/atom25",
            get(|| async { ([(header::CONTENT_TYPE, "application/atom+xml")], atom_25()) }),
        )
        .route(
            "/atom25-etag",
            get(|h: HeaderMap| async move {
                if h.get(header::IF_NONE_MATCH).is_some_and(|v| v == "\"25\"") {
                    return StatusCode::NOT_MODIFIED.into_response();
                }
                (
                    [
                        (header::CONTENT_TYPE, "application/atom+xml"),
                        (header::ETAG, "\"25\""),
                    ],
                    atom_25(),
                )
                    .into_response()
            }),
        )
        .route(
            "/etag",
            get(|State(hits): State<Arc<Hits>>, h: HeaderMap| async move {
                hits.etag_requests.fetch_add(1, Ordering::SeqCst);
                if h.get(header::IF_NONE_MATCH).is_some_and(|v| v == "\"abc\"") {
                    hits.not_modified.fetch_add(1, Ordering::SeqCst);
                    return StatusCode::NOT_MODIFIED.into_response();
                }
                let body = std::fs::read(data_dir().join("rss_2.0_bbc.xml")).unwrap();
                (
                    [
                        (header::CONTENT_TYPE, "application/rss+xml"),
                        (header::ETAG, "\"abc\""),
                    ],
                    body,
                )
                    .into_response()
            }),
        )
        .route(
            "/gzip",
            get(|| async {
                let body = std::fs::read(data_dir().join("atom_example_reddit.xml")).unwrap();
                (
                    [
                        (header::CONTENT_TYPE, "application/atom+xml"),
                        (header::CONTENT_ENCODING, "gzip"),
                    ],
                    gzip(&body),
                )
            }),
        )
        .route(
            "/huge",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/rss+xml")],
                    vec![b' '; 6 * 1024 * 1024],
                )
            }),
        )
        .route(
            "/huge-chunked",
            get(|| async {
                // No Content-Length: the cap must hold while streaming.
                let chunks = (0..96).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024]));
                let body = Body::from_stream(futures_util::stream::iter(chunks));
                ([(header::CONTENT_TYPE, "application/rss+xml")], body)
            }),
        )
        .route(
            "/huge-gzip",
            get(|| async {
                // A gzip bomb: small on the wire, over the cap once decoded.
                (
                    [
                        (header::CONTENT_TYPE, "application/rss+xml"),
                        (header::CONTENT_ENCODING, "gzip"),
                    ],
                    gzip_bomb().to_vec(),
                )
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "too late"
            }),
        )
        .route(
            "/html",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }),
        )
        .route(
            "/page-latin1",
            get(|| async {
                let mut body = b"<html><head><title>Caf".to_vec();
                body.push(0xe9);
                body.extend_from_slice(b"</title></head></html>");
                ([(header::CONTENT_TYPE, "text/html; charset=iso-8859-1")], body)
            }),
        )
        .route(
            "/malformed",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/rss+xml")],
                    "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Broken</title><item><title>x</item></channel>",
                )
            }),
        )
        .route(
            "/empty",
            get(|| async { [(header::CONTENT_TYPE, "application/rss+xml")] }),
        )
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .route(
            "/redirect",
            get(|| async {
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, "/fixtures/rss_2.0_bbc.xml")],
                )
            }),
        )
        .with_state(hits.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

/// PIDs of worker (`… platform <name>`) processes whose parent is this test process.
pub fn worker_pids() -> Vec<u32> {
    let me = std::process::id();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state ppid …
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let ppid: u32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == me && cmdline.split(|b| *b == 0).any(|a| a == b"platform") {
            pids.push(pid);
        }
    }
    pids
}

/// The executable worker `pid` runs (`/proc/<pid>/exe`) and its arguments; `None` once it
/// has exited.
pub fn worker_exe(pid: u32) -> Option<(PathBuf, Vec<String>)> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args = cmdline
        .split(|b| *b == 0)
        .skip(1)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some((exe, args))
}

pub fn config(worker_settings: Value) -> GatewayConfig {
    let mut c = GatewayConfig::new(WorkerCommand {
        program: env!("CARGO_BIN_EXE_switchboard-worker").into(),
        args: vec![],
    });
    c.request_timeout = Duration::from_secs(20);
    c.worker_settings = worker_settings;
    c
}

pub fn gateway(worker_settings: Value) -> Gateway {
    Gateway::new(
        config(worker_settings),
        Engine::embedded(),
        vec![Feeds::manifest(), Metadata::manifest()],
        "test",
    )
    .unwrap()
}

pub async fn open(gw: &Gateway) -> Session {
    gw.open_session(LOCAL, Arc::new(|_| {})).await.unwrap()
}

pub async fn send(s: &Session, activity: Value) -> Value {
    s.message(s.ticket(), activity).await
}

pub fn fetch_feed(url: &str) -> Value {
    json!({
        "type": "fetch",
        "@context": context::canonical("feeds"),
        "actor": {"id": url, "type": "feed"}
    })
}

pub fn fetch_page(url: &str) -> Value {
    json!({
        "type": "fetch",
        "@context": context::canonical("metadata"),
        "actor": {"id": url, "type": "website"}
    })
}

/// The `error` of a reply that must be a failure.
pub async fn error(s: &Session, activity: Value) -> String {
    let reply = send(s, activity).await;
    reply["error"]
        .as_str()
        .unwrap_or_else(|| panic!("an error reply: {reply}"))
        .to_owned()
}
