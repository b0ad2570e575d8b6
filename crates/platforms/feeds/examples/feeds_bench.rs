//! Fetch + parse throughput of the feeds platform for a 25-entry Atom feed served on
//! 127.0.0.1: uncached (200 with a body that changes every time, so every fetch is
//! parsed), unchanged (200, same bytes: the parse is reused) and cached (ETag → 304, body
//! and parse reused). Runs the platform's `handle` in-process: HTTP fetch,
//! feed-rs parse, mapping to the Sockethub collection; no gateway or worker pipe.
//!
//! cargo run --release -p switchboard-platform-feeds --example feeds_bench -- [seconds] [concurrency]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use switchboard_platform::worker::test_context;
use switchboard_platform::{Job, Platform};
use switchboard_platform_feeds::Feeds;

fn atom_25() -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\
         <title>Twenty-five</title><link href=\"http://example.org/\"/><id>urn:example:25</id>\
         <updated>2026-11-01T00:00:00Z</updated><author><name>Bench</name></author>\n",
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

async fn run(feeds: Arc<Feeds>, url: String, secs: u64, concurrency: usize) -> (u64, Duration) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let feeds = feeds.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let job = Job {
                    id: "b".into(),
                    session: "s".into(),
                    activity: json!({"type": "fetch", "actor": {"id": url, "type": "feed"}}),
                    credentials: None,
                };
                let reply = feeds.handle(job).await.expect("fetch ok").expect("reply");
                assert_eq!(reply["totalItems"], 25);
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    (total, start.elapsed())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let body = atom_25();
    let size = body.len();
    let plain = body.clone();
    let same = body.clone();
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let app = Router::new()
        .route(
            // A body that differs on every request (a counter in a comment): nothing can
            // be reused, every fetch is parsed.
            "/atom",
            get(move || {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let b = format!("{plain}<!-- {n} -->\n");
                async move { ([(header::CONTENT_TYPE, "application/atom+xml")], b) }
            }),
        )
        .route(
            // The same bytes every time, no validators: full transfer, parse reused.
            "/atom-same",
            get(move || {
                let b = same.clone();
                async move { ([(header::CONTENT_TYPE, "application/atom+xml")], b) }
            }),
        )
        .route(
            "/atom-etag",
            get(move |h: HeaderMap| {
                let b = body.clone();
                async move {
                    if h.get(header::IF_NONE_MATCH).is_some_and(|v| v == "\"25\"") {
                        return StatusCode::NOT_MODIFIED.into_response();
                    }
                    (
                        [
                            (header::CONTENT_TYPE, "application/atom+xml"),
                            (header::ETAG, "\"25\""),
                        ],
                        b,
                    )
                        .into_response()
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The server gets its own thread so client and server do not share one scheduler.
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener.into_std().unwrap()).unwrap();
                axum::serve(listener, app).await.unwrap()
            })
    });
    let (ctx, _rx) = test_context(json!({"allow_private_network": true}));
    let feeds = Arc::new(Feeds::new(ctx));
    println!("25-entry Atom feed, {size} bytes; {secs} s per case, {concurrency} in flight");
    for (name, path) in [
        ("uncached (200, new body each time)", "/atom"),
        ("unchanged body (200, no validators)", "/atom-same"),
        ("cached (ETag, 304)", "/atom-etag"),
    ] {
        let url = format!("http://{addr}{path}");
        // warm-up (and, for the ETag case, fill the cache)
        run(feeds.clone(), url.clone(), 1, concurrency).await;
        let (n, took) = run(feeds.clone(), url, secs, concurrency).await;
        let per_s = n as f64 / took.as_secs_f64();
        println!(
            "{name}: {n} fetches in {:.2} s = {per_s:.0} fetch+parse/s, {:.0} µs each",
            took.as_secs_f64(),
            took.as_secs_f64() * 1e6 / n as f64 * concurrency as f64
        );
    }
}
