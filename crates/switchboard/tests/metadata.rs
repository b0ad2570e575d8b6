//! The metadata platform through the gateway, in its real worker process, against a local
//! HTTP server: Open Graph / Twitter / HTML extraction, charsets, limits, the SSRF guard.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn page_metadata_from_open_graph_twitter_and_html() {
    let (addr, _) = serve().await;
    let gw = gateway(json!({"allow_private_network": true, "http_timeout_ms": 500}));
    let s = open(&gw).await;
    let url = format!("http://{addr}/html");
    let reply = send(&s, fetch_page(&url)).await;
    assert!(reply.get("error").is_none(), "{reply}");
    assert_eq!(reply["type"], "fetch");
    assert_eq!(reply["actor"], json!({"id": url, "type": "website"}));
    assert_eq!(
        reply["object"],
        json!({
            "type": "page",
            "title": "The Page",
            "description": "A page about things",
            "image": format!("http://{addr}/cover.png"),
            "siteName": "Local Site",
            "pageType": "website",
            "url": url,
            "icon": format!("http://{addr}/favicon.png"),
            "language": "en",
            "twitterCard": "summary"
        })
    );

    let reply = send(&s, fetch_page(&format!("http://{addr}/page-latin1"))).await;
    assert_eq!(reply["object"]["title"], "Café", "{reply}");

    let u = |p: &str| format!("http://{addr}{p}");
    assert_eq!(
        error(&s, fetch_page(&u("/fixtures/rss_2.0_bbc.xml"))).await,
        format!(
            "unexpected content type application/rss+xml for a web page at {}",
            u("/fixtures/rss_2.0_bbc.xml")
        )
    );
    assert_eq!(
        error(&s, fetch_page(&u("/huge-chunked"))).await,
        "response too large (over 5242880 bytes)"
    );
    assert_eq!(
        error(&s, fetch_page(&u("/slow"))).await,
        format!("timed out fetching {}", u("/slow"))
    );
    s.close().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn private_addresses_are_refused_without_the_opt_in() {
    let (addr, _) = serve().await;
    let gw = gateway(json!({"allow_private_network": false}));
    let s = open(&gw).await;
    for (url, ip) in [
        (
            format!("http://127.0.0.1:{}/html", addr.port()),
            "127.0.0.1",
        ),
        ("http://[::1]/".to_owned(), "::1"),
        ("http://10.0.0.1/".to_owned(), "10.0.0.1"),
        ("http://169.254.169.254/".to_owned(), "169.254.169.254"),
    ] {
        assert_eq!(
            error(&s, fetch_page(&url)).await,
            format!("refusing to fetch {url}: address {ip} is not public")
        );
    }
    let url = format!("http://localhost:{}/html", addr.port());
    let e = error(&s, fetch_page(&url)).await;
    assert!(
        e.starts_with(&format!("refusing to fetch {url}: address ")),
        "{e}"
    );

    let mut bad = fetch_page("https://example.com/");
    bad["actor"]["id"] = json!("example dot com");
    assert_eq!(
        error(&s, bad).await,
        "[metadata] /actor/id: must match format \"iri\""
    );
    s.close().await;
    gw.shutdown().await;
}
