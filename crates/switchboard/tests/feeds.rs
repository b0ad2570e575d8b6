//! The feeds platform through the gateway, in its real worker process, against a local
//! HTTP server: feed-rs's fixture feeds, hostile responses, the SSRF guard, and schema
//! errors.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use serde_json::{Value, json};

/// Every item has the Sockethub post shape.
fn check_items(reply: &Value) {
    assert_eq!(reply["type"], "collection", "{reply}");
    let items = reply["items"].as_array().expect("items");
    assert_eq!(reply["totalItems"], items.len());
    assert!(!items.is_empty(), "{reply}");
    for item in items {
        assert_eq!(item["type"], "post");
        assert_eq!(item["actor"]["type"], "feed");
        assert!(item["actor"]["name"].is_string());
        assert!(item["actor"]["link"].is_string());
        let o = &item["object"];
        assert!(
            matches!(o["type"].as_str(), Some("article" | "note")),
            "{o}"
        );
        assert!(
            matches!(o["contentType"].as_str(), Some("html" | "text")),
            "{o}"
        );
        assert!(o["id"].is_string() && o["url"].is_string() && o["title"].is_string());
        assert!(o["content"].is_string() && o["datenum"].is_i64(), "{o}");
    }
}

async fn ok(s: &switchboard_gateway::Session, url: &str) -> Value {
    let reply = send(s, fetch_feed(url)).await;
    assert!(reply.get("error").is_none(), "{url}: {reply}");
    check_items(&reply);
    reply
}

#[tokio::test]
async fn fixture_feeds_of_every_format() {
    let (addr, _) = serve().await;
    let gw = gateway(json!({"allow_private_network": true}));
    let s = open(&gw).await;
    let base = format!("http://{addr}/fixtures");

    // Atom (reddit)
    let url = format!("{base}/atom_example_reddit.xml");
    let r = ok(&s, &url).await;
    assert_eq!(r["summary"], "The Rust Programming Language");
    assert_eq!(
        r["actor"],
        json!({"id": url, "type": "feed", "name": "The Rust Programming Language"})
    );
    let o = &r["items"][0]["object"];
    assert_eq!(
        o["title"],
        "Hey Rustaceans! Got an easy question? Ask here (21/2020)!"
    );
    assert_eq!(o["contentType"], "html");
    assert_eq!(o["author"], "/u/llogiq");
    assert_eq!(o["datenum"], 1589780687000i64);
    assert_eq!(r["items"][0]["actor"]["categories"], json!(["r/rust"]));

    // Atom with Media RSS (YouTube)
    let r = ok(&s, &format!("{base}/atom_mediarss_youtube_1.xml")).await;
    let o = &r["items"][0]["object"];
    assert_eq!(
        o["media"][0]["url"],
        "https://www.youtube.com/v/0A1ouV7iD8o?version=3"
    );
    assert_eq!(
        o["media"][0]["thumbnail"],
        "https://i1.ytimg.com/vi/0A1ouV7iD8o/hqdefault.jpg"
    );
    assert!(
        o["content"]
            .as_str()
            .unwrap()
            .starts_with("Check Out Weathered"),
        "{o}"
    );

    // RSS 2.0 podcasts with enclosures
    let r = ok(&s, &format!("{base}/rss_2.0_bbc.xml")).await;
    assert_eq!(r["summary"], "In Our Time");
    let item = &r["items"][0];
    assert_eq!(item["actor"]["language"], "en");
    assert_eq!(item["object"]["title"], "Marcus Aurelius");
    assert_eq!(item["object"]["media"][0]["mediaType"], "audio/mpeg");
    assert_eq!(item["object"]["published"], "2021-02-25T10:15:00+00:00");
    let r = ok(&s, &format!("{base}/rss_2.0_anchorfm.xml")).await;
    assert_eq!(r["summary"], "It’s Not Always Special");

    // RSS 1.0, including one in ISO-8859-1
    let r = ok(&s, &format!("{base}/rss_1.0_debian.xml")).await;
    assert_eq!(
        r["items"][0]["object"]["title"],
        "Updated Debian 11: 11.6 released"
    );
    assert_eq!(
        r["items"][0]["actor"]["link"],
        "https://www.debian.org/News/"
    );
    let r = ok(&s, &format!("{base}/rss_1.0_iso8859.xml")).await;
    assert_eq!(
        r["items"][0]["object"]["title"],
        "Digitalministerium: Neue Glasfaserförderung mit Schnellkasse"
    );

    // RSS 0.91
    let r = ok(&s, &format!("{base}/rss_0.91_spec_1.xml")).await;
    assert_eq!(r["summary"], "WriteTheWeb");

    // JSON Feed
    let r = ok(&s, &format!("{base}/jsonfeed_example_1.json")).await;
    assert_eq!(r["summary"], "Daring Fireball");
    assert_eq!(
        r["items"][0]["object"]["title"],
        "How Jeff Bezos’s iPhone X Was Hacked"
    );
    assert_eq!(r["items"][0]["object"]["datenum"], 1579909617000i64);

    s.close().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn since_limit_redirects_gzip_and_conditional_get() {
    let (addr, hits) = serve().await;
    let gw = gateway(json!({"allow_private_network": true}));
    let s = open(&gw).await;

    let mut req = fetch_feed(&format!("http://{addr}/atom25"));
    let all = ok(&s, &format!("http://{addr}/atom25")).await;
    assert_eq!(all["totalItems"], 25);
    req["object"] = json!({"since": "2026-11-20T00:00:00Z", "limit": 3});
    let r = send(&s, req.clone()).await;
    check_items(&r);
    assert_eq!(r["totalItems"], 3);
    assert_eq!(r["items"][0]["object"]["title"], "Entry 20");
    req["object"] = json!({"since": "2026-11-24T00:00:00Z"});
    let r = send(&s, req).await;
    assert_eq!(r["totalItems"], 2, "entries 24 and 25");

    // A host name goes through the fetcher's pinned resolver (checked addresses only).
    let r = ok(&s, &format!("http://localhost:{}/atom25", addr.port())).await;
    assert_eq!(r["totalItems"], 25);

    // redirect within the allowed server
    let r = ok(&s, &format!("http://{addr}/redirect")).await;
    assert_eq!(r["summary"], "In Our Time");

    // gzip-encoded body
    let r = ok(&s, &format!("http://{addr}/gzip")).await;
    assert_eq!(r["summary"], "The Rust Programming Language");

    // conditional GET: the second fetch sends If-None-Match, gets 304, same reply
    let url = format!("http://{addr}/etag");
    let first = ok(&s, &url).await;
    let second = ok(&s, &url).await;
    assert_eq!(first, second);
    assert_eq!(hits.etag_requests.load(Ordering::SeqCst), 2);
    assert_eq!(hits.not_modified.load(Ordering::SeqCst), 1);

    s.close().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn hostile_and_broken_responses_fail_clearly() {
    let (addr, _) = serve().await;
    let gw = gateway(json!({"allow_private_network": true, "http_timeout_ms": 500}));
    let s = open(&gw).await;
    let u = |p: &str| format!("http://{addr}{p}");

    assert!(gzip_bomb().len() < 64 * 1024);
    let too_large = "response too large (over 5242880 bytes)";
    assert_eq!(error(&s, fetch_feed(&u("/huge"))).await, too_large);
    assert_eq!(error(&s, fetch_feed(&u("/huge-chunked"))).await, too_large);
    assert_eq!(error(&s, fetch_feed(&u("/huge-gzip"))).await, too_large);

    let started = std::time::Instant::now();
    assert_eq!(
        error(&s, fetch_feed(&u("/slow"))).await,
        format!("timed out fetching {}", u("/slow"))
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    let e = error(&s, fetch_feed(&u("/html"))).await;
    assert!(
        e.starts_with(&format!("{} is not a valid feed: ", u("/html"))),
        "{e}"
    );
    assert!(
        e.contains("unexpected content type text/html for a feed"),
        "{e}"
    );

    let e = error(&s, fetch_feed(&u("/malformed"))).await;
    assert!(
        e.starts_with(&format!("{} is not a valid feed: ", u("/malformed"))),
        "{e}"
    );

    assert_eq!(
        error(&s, fetch_feed(&u("/empty"))).await,
        format!("{} is not a valid feed: empty response", u("/empty"))
    );
    assert_eq!(
        error(&s, fetch_feed(&u("/missing"))).await,
        format!("HTTP 404 Not Found fetching {}", u("/missing"))
    );

    // The worker survived all of that.
    ok(&s, &u("/fixtures/rss_1.0_debian.xml")).await;
    s.close().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn private_addresses_are_refused_without_the_opt_in() {
    let (addr, hits) = serve().await;
    let port = addr.port();
    let gw = gateway(json!({}));
    let s = open(&gw).await;
    for (url, ip) in [
        (format!("http://127.0.0.1:{port}/etag"), "127.0.0.1"),
        ("http://127.0.0.1/".to_owned(), "127.0.0.1"),
        (format!("http://[::1]:{port}/etag"), "::1"),
        ("http://10.0.0.1/".to_owned(), "10.0.0.1"),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "169.254.169.254",
        ),
        ("http://192.168.1.1/feed".to_owned(), "192.168.1.1"),
        ("http://100.64.0.1/feed".to_owned(), "100.64.0.1"),
        ("http://[fd00::1]/feed".to_owned(), "fd00::1"),
        ("http://[::ffff:7f00:1]/feed".to_owned(), "::ffff:127.0.0.1"),
    ] {
        let e = error(&s, fetch_feed(&url)).await;
        assert_eq!(
            e,
            format!("refusing to fetch {url}: address {ip} is not public"),
            "{url}"
        );
    }
    // A host name that resolves to loopback.
    let url = format!("http://localhost:{port}/etag");
    let e = error(&s, fetch_feed(&url)).await;
    assert!(
        e.starts_with(&format!("refusing to fetch {url}: address ")),
        "{e}"
    );
    assert!(e.ends_with(" is not public"), "{e}");
    // Other schemes.
    let e = error(&s, fetch_feed("ftp://example.com/feed.xml")).await;
    assert_eq!(
        e,
        "refusing to fetch ftp://example.com/feed.xml: scheme ftp is not http or https"
    );
    assert_eq!(
        hits.etag_requests.load(Ordering::SeqCst),
        0,
        "nothing reached the server"
    );
    // (A redirect from an allowed address into a private range is refused per hop: see
    // crates/platforms/http/tests/guard.rs, which can allow exactly one local server.)
    s.close().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn requests_are_validated_against_the_schema() {
    let gw = gateway(json!({}));
    let s = open(&gw).await;
    let good = fetch_feed("https://example.com/feed.xml");

    let mut a = good.clone();
    a["actor"] = json!({"id": "https://example.com/feed.xml"});
    assert_eq!(
        error(&s, a).await,
        "[feeds] /actor: must match exactly one schema in oneOf: person, room, service, feed, website, platform"
    );

    let mut a = good.clone();
    a["actor"]["id"] = json!("not a url");
    assert_eq!(
        error(&s, a).await,
        "[feeds] /actor/id: must match format \"iri\""
    );

    let mut a = good.clone();
    a["object"] = json!({"limit": 0});
    assert_eq!(error(&s, a).await, "[feeds] /object/limit: must be >= 1");

    let mut a = good.clone();
    a["object"] = json!({"limit": 2, "colour": "red"});
    assert_eq!(
        error(&s, a).await,
        "[feeds] /object: must NOT have additional properties: colour"
    );

    let mut a = good.clone();
    a["object"] = json!({"since": "yesterday"});
    assert_eq!(
        error(&s, a).await,
        "[feeds] /object/since: must match format \"date-time\""
    );

    let mut a = good.clone();
    a["actor"]["type"] = json!("person");
    assert_eq!(
        error(&s, a).await,
        "[feeds] /actor/type: must be equal to one of the allowed values"
    );

    let mut a = good;
    a["type"] = json!("post");
    assert_eq!(
        error(&s, a).await,
        "[feeds] /type: must be equal to one of the allowed values"
    );
    s.close().await;
    gw.shutdown().await;
}
