//! The feeds platform, wire-compatible with Sockethub's: `fetch` with actor
//! `{id: <feed url>, type: "feed"}` and an optional object `{since, limit}` fetches the feed
//! (RSS 0.9x/1.0/2.0, Atom, JSON Feed, parsed by feed-rs) through the guarded fetcher of
//! `switchboard-http` and answers with a `collection` of `post` activities.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use feed_rs::model::{Entry, Feed, Text};
use serde_json::{Map, Value, json};
use switchboard_http::{FetchConfig, Fetcher};
use switchboard_platform::{Job, Platform, PlatformError, WorkerContext};
use switchboard_protocol::Manifest;

const ACCEPT: &str = "application/atom+xml, application/rss+xml, application/feed+json, \
                      application/json;q=0.9, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5";

pub struct Feeds {
    fetcher: Result<Fetcher, String>,
    /// The last parse of each recently fetched feed, reused while the body is unchanged
    /// (a `304` from the fetcher's cache, or the same bytes again).
    parsed: Mutex<HashMap<String, (Bytes, Arc<Feed>)>>,
}

/// Parsed feeds kept at most.
const PARSED_ENTRIES: usize = 64;

impl Platform for Feeds {
    fn manifest() -> Manifest {
        Manifest {
            name: "feeds",
            version: env!("CARGO_PKG_VERSION"),
            verbs: vec!["fetch"],
            messages: json!({
                "required": ["type", "actor"],
                "properties": {
                    "type": {"enum": ["fetch"]},
                    "actor": {
                        "type": "object",
                        "required": ["id", "type"],
                        "properties": {
                            "type": {"enum": ["feed"]},
                            "id": {"type": "string", "format": "iri"}
                        }
                    },
                    "object": {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "since": {"type": "string", "format": "date-time"},
                            "limit": {"type": "integer", "minimum": 1}
                        }
                    }
                }
            }),
            credentials: json!({}),
            require_credentials: vec![],
            persist: false,
            concurrency: 32,
        }
    }

    fn new(ctx: WorkerContext) -> Self {
        Feeds {
            fetcher: Fetcher::new(FetchConfig::from_settings(&ctx.settings)).map_err(|e| e.0),
            parsed: Mutex::default(),
        }
    }

    async fn handle(&self, job: Job) -> Result<Option<Value>, PlatformError> {
        if job.verb() != "fetch" {
            return Err(PlatformError::new(format!(
                "platform method {} not available",
                job.verb()
            )));
        }
        let fetcher = self.fetcher.as_ref().map_err(PlatformError::new)?;
        let a = &job.activity;
        let url = a
            .pointer("/actor/id")
            .and_then(Value::as_str)
            .ok_or_else(|| PlatformError::new("actor.id (the feed URL) is required"))?;
        let options = Options::from_object(a.get("object"))?;
        let fetched = fetcher
            .fetch(url, ACCEPT)
            .await
            .map_err(|e| PlatformError::new(e.0))?;
        let known = self
            .parsed
            .lock()
            .unwrap()
            .get(url)
            .filter(|(body, _)| *body == fetched.body)
            .map(|(_, feed)| feed.clone());
        let feed = match known {
            Some(feed) => feed,
            None => {
                let feed = Arc::new(parse(url, &fetched.body, fetched.mime().as_deref())?);
                let mut parsed = self.parsed.lock().unwrap();
                if parsed.len() >= PARSED_ENTRIES && !parsed.contains_key(url) {
                    // Crude but bounded: start over rather than track recency.
                    parsed.clear();
                }
                parsed.insert(url.to_owned(), (fetched.body.clone(), feed.clone()));
                feed
            }
        };
        Ok(Some(to_collection(url, &feed, &options)))
    }
}

/// The request's `object`: `since` (only newer items) and `limit` (at most this many).
#[derive(Debug, Default, Clone)]
pub struct Options {
    pub since: Option<DateTime<Utc>>,
    pub limit: Option<usize>,
}

impl Options {
    fn from_object(object: Option<&Value>) -> Result<Options, PlatformError> {
        let mut o = Options::default();
        let Some(object) = object else {
            return Ok(o);
        };
        if let Some(s) = object.get("since").and_then(Value::as_str) {
            o.since = Some(
                DateTime::parse_from_rfc3339(s)
                    .map_err(|e| PlatformError::new(format!("invalid since {s:?}: {e}")))?
                    .with_timezone(&Utc),
            );
        }
        if let Some(n) = object.get("limit").and_then(Value::as_u64) {
            o.limit = Some(n as usize);
        }
        Ok(o)
    }
}

/// Parse a fetched body as a feed; `mime` is the response's media type, for the error text.
pub fn parse(url: &str, body: &[u8], mime: Option<&str>) -> Result<Feed, PlatformError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(PlatformError::new(format!(
            "{url} is not a valid feed: empty response"
        )));
    }
    feed_rs::parser::Builder::new()
        .base_uri(Some(url))
        .build()
        .parse(body)
        .map_err(|e| {
            let why = match mime {
                Some(m) if m.contains("html") => {
                    format!("unexpected content type {m} for a feed ({e})")
                }
                _ => e.to_string(),
            };
            PlatformError::new(format!("{url} is not a valid feed: {why}"))
        })
}

fn text(t: &Option<Text>) -> Option<String> {
    t.as_ref()
        .map(|t| t.content.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn is_html(media_type: &str) -> bool {
    media_type.contains("html")
}

fn put(map: &mut Map<String, Value>, key: &str, value: Option<impl Into<Value>>) {
    if let Some(v) = value {
        map.insert(key.to_owned(), v.into());
    }
}

/// The feed's own link: the `alternate` (or first non-self) link, else the feed URL.
fn feed_link(url: &str, feed: &Feed) -> String {
    feed.links
        .iter()
        .find(|l| l.rel.as_deref() == Some("alternate"))
        .or_else(|| feed.links.iter().find(|l| l.rel.as_deref() != Some("self")))
        .map(|l| l.href.clone())
        .unwrap_or_else(|| url.to_owned())
}

/// The actor every item carries: the feed itself.
fn feed_actor(url: &str, feed: &Feed) -> Value {
    let mut actor = Map::new();
    actor.insert("id".into(), url.into());
    actor.insert("type".into(), "feed".into());
    actor.insert(
        "name".into(),
        text(&feed.title).unwrap_or_else(|| url.to_owned()).into(),
    );
    actor.insert("link".into(), feed_link(url, feed).into());
    put(&mut actor, "description", text(&feed.description));
    put(
        &mut actor,
        "image",
        feed.logo
            .as_ref()
            .or(feed.icon.as_ref())
            .map(|i| i.uri.clone()),
    );
    if !feed.categories.is_empty() {
        let cats: Vec<Value> = feed
            .categories
            .iter()
            .map(|c| c.label.clone().unwrap_or_else(|| c.term.clone()).into())
            .collect();
        actor.insert("categories".into(), cats.into());
    }
    put(&mut actor, "language", feed.language.clone());
    put(&mut actor, "author", author(&feed.authors));
    Value::Object(actor)
}

fn author(people: &[feed_rs::model::Person]) -> Option<String> {
    let names: Vec<&str> = people
        .iter()
        .filter_map(|p| p.name.as_deref().or(p.email.as_deref()))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
}

/// The entry's date: published, else updated.
fn entry_date(e: &Entry) -> Option<DateTime<Utc>> {
    e.published.or(e.updated)
}

fn entry_url(e: &Entry) -> Option<String> {
    e.links
        .iter()
        .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
        .or_else(|| e.links.first())
        .map(|l| l.href.clone())
}

fn media(e: &Entry) -> Vec<Value> {
    let mut out = Vec::new();
    for m in &e.media {
        for c in &m.content {
            let Some(url) = &c.url else { continue };
            let mut v = Map::new();
            v.insert("url".into(), url.as_str().into());
            put(
                &mut v,
                "mediaType",
                c.content_type.as_ref().map(|t| t.to_string()),
            );
            put(&mut v, "width", c.width);
            put(&mut v, "height", c.height);
            put(&mut v, "size", c.size);
            put(&mut v, "duration", c.duration.map(|d| d.as_secs()));
            put(&mut v, "title", text(&m.title));
            put(&mut v, "description", text(&m.description));
            put(
                &mut v,
                "thumbnail",
                m.thumbnails.first().map(|t| t.image.uri.clone()),
            );
            out.push(Value::Object(v));
        }
        if m.content.is_empty()
            && let Some(t) = m.thumbnails.first()
        {
            let mut v = Map::new();
            v.insert("url".into(), t.image.uri.clone().into());
            v.insert("thumbnail".into(), t.image.uri.clone().into());
            put(&mut v, "title", text(&m.title));
            put(&mut v, "description", text(&m.description));
            out.push(Value::Object(v));
        }
    }
    // RSS enclosures surface as links with rel="enclosure".
    for l in e
        .links
        .iter()
        .filter(|l| l.rel.as_deref() == Some("enclosure"))
    {
        let mut v = Map::new();
        v.insert("url".into(), l.href.clone().into());
        put(&mut v, "mediaType", l.media_type.clone());
        put(&mut v, "size", l.length);
        out.push(Value::Object(v));
    }
    out
}

/// One entry as a Sockethub `post` activity.
fn to_post(actor: &Value, e: &Entry) -> Value {
    let title = text(&e.title);
    let summary = e.summary.as_ref().filter(|s| !s.content.trim().is_empty());
    let body = e
        .content
        .as_ref()
        .and_then(|c| c.body.as_ref().map(|b| (b, c.content_type.to_string())))
        .filter(|(b, _)| !b.trim().is_empty());
    let has_body = body.is_some();
    let (content, html) = match (body, summary) {
        (Some((b, t)), _) => (b.clone(), is_html(&t)),
        (None, Some(s)) => (s.content.clone(), is_html(s.content_type.as_ref())),
        // Media RSS entries (YouTube) carry their text in media:description.
        (None, None) => match e.media.iter().find_map(|m| m.description.as_ref()) {
            Some(d) => (d.content.clone(), is_html(d.content_type.as_ref())),
            None => (String::new(), false),
        },
    };
    let mut object = Map::new();
    object.insert(
        "type".into(),
        if title.is_some() { "article" } else { "note" }.into(),
    );
    object.insert("title".into(), title.unwrap_or_default().into());
    object.insert("id".into(), e.id.clone().into());
    if has_body && let Some(s) = summary {
        object.insert("brief".into(), s.content.trim().into());
    }
    object.insert("content".into(), content.into());
    object.insert(
        "contentType".into(),
        if html { "html" } else { "text" }.into(),
    );
    object.insert(
        "url".into(),
        entry_url(e).unwrap_or_else(|| e.id.clone()).into(),
    );
    put(
        &mut object,
        "published",
        e.published.map(|d| d.to_rfc3339()),
    );
    put(&mut object, "updated", e.updated.map(|d| d.to_rfc3339()));
    object.insert(
        "datenum".into(),
        entry_date(e).map_or(0, |d| d.timestamp_millis()).into(),
    );
    put(&mut object, "author", author(&e.authors));
    if !e.categories.is_empty() {
        let tags: Vec<Value> = e
            .categories
            .iter()
            .map(|c| c.label.clone().unwrap_or_else(|| c.term.clone()).into())
            .collect();
        object.insert("tags".into(), tags.into());
    }
    let media = media(e);
    if !media.is_empty() {
        object.insert("media".into(), media.into());
    }
    json!({"type": "post", "actor": actor, "object": object})
}

/// The reply: a `collection` of posts, filtered by `since` (entries with a date at or
/// before it are left out; undated entries are kept) and cut to `limit`, in feed order.
pub fn to_collection(url: &str, feed: &Feed, options: &Options) -> Value {
    let actor = feed_actor(url, feed);
    let items: Vec<Value> = feed
        .entries
        .iter()
        .filter(|e| match (options.since, entry_date(e)) {
            (Some(since), Some(d)) => d > since,
            _ => true,
        })
        .take(options.limit.unwrap_or(usize::MAX))
        .map(|e| to_post(&actor, e))
        .collect();
    json!({
        "type": "collection",
        "actor": {"id": url, "type": "feed", "name": actor["name"]},
        "summary": actor["name"],
        "totalItems": items.len(),
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATOM: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en">
  <title>Example Feed</title>
  <subtitle>All about examples</subtitle>
  <link href="http://example.org/"/>
  <link rel="self" href="http://example.org/feed.atom"/>
  <updated>2003-12-13T18:30:02Z</updated>
  <author><name>John Doe</name></author>
  <id>urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6</id>
  <entry>
    <title>Newer</title>
    <link href="http://example.org/2003/12/13/newer"/>
    <id>urn:uuid:2</id>
    <published>2003-12-13T18:30:02Z</published>
    <summary>Short</summary>
    <content type="html">&lt;p&gt;Long&lt;/p&gt;</content>
  </entry>
  <entry>
    <link href="http://example.org/2003/12/01/older"/>
    <id>urn:uuid:1</id>
    <updated>2003-12-01T00:00:00Z</updated>
    <summary>Just text</summary>
  </entry>
</feed>"#;

    fn feed() -> Feed {
        parse("http://example.org/feed.atom", ATOM.as_bytes(), None).unwrap()
    }

    #[test]
    fn maps_a_feed_to_a_collection_of_posts() {
        let c = to_collection("http://example.org/feed.atom", &feed(), &Options::default());
        assert_eq!(c["type"], "collection");
        assert_eq!(c["summary"], "Example Feed");
        assert_eq!(c["totalItems"], 2);
        let first = &c["items"][0];
        assert_eq!(first["type"], "post");
        assert_eq!(
            first["actor"],
            json!({
                "id": "http://example.org/feed.atom", "type": "feed", "name": "Example Feed",
                "link": "http://example.org/", "description": "All about examples",
                "language": "en", "author": "John Doe"
            })
        );
        let o = &first["object"];
        assert_eq!(o["type"], "article");
        assert_eq!(o["title"], "Newer");
        assert_eq!(o["id"], "urn:uuid:2");
        assert_eq!(o["brief"], "Short");
        assert_eq!(o["content"], "<p>Long</p>");
        assert_eq!(o["contentType"], "html");
        assert_eq!(o["url"], "http://example.org/2003/12/13/newer");
        assert_eq!(o["published"], "2003-12-13T18:30:02+00:00");
        assert_eq!(o["datenum"], 1071340202000i64);
        let second = &c["items"][1]["object"];
        assert_eq!(second["type"], "note", "no title: a note");
        assert_eq!(second["content"], "Just text");
        assert_eq!(second["contentType"], "text");
        assert!(second.get("brief").is_none());
        assert_eq!(
            second["datenum"], 1070236800000i64,
            "updated when unpublished"
        );
    }

    #[test]
    fn since_and_limit() {
        let f = feed();
        let since = Options {
            since: Some("2003-12-05T00:00:00Z".parse().unwrap()),
            limit: None,
        };
        let c = to_collection("u", &f, &since);
        assert_eq!(c["totalItems"], 1);
        assert_eq!(c["items"][0]["object"]["id"], "urn:uuid:2");
        let limit = Options {
            since: None,
            limit: Some(1),
        };
        assert_eq!(to_collection("u", &f, &limit)["totalItems"], 1);
        let o = Options::from_object(Some(&json!({"since": "2003-12-05T00:00:00Z", "limit": 3})))
            .unwrap();
        assert_eq!(o.limit, Some(3));
        assert!(o.since.is_some());
    }

    #[test]
    fn html_empty_and_malformed_bodies_fail_clearly() {
        let e = parse(
            "http://x/",
            b"<!doctype html><html><body>hi</body></html>",
            Some("text/html"),
        )
        .unwrap_err();
        assert!(e.0.starts_with("http://x/ is not a valid feed"), "{e}");
        assert!(
            e.0.contains("unexpected content type text/html for a feed"),
            "{e}"
        );
        let e = parse("http://x/", b"  \n", None).unwrap_err();
        assert_eq!(e.0, "http://x/ is not a valid feed: empty response");
        let e = parse("http://x/", b"<rss><channel><title>x</titl", None).unwrap_err();
        assert!(e.0.starts_with("http://x/ is not a valid feed: "), "{e}");
    }

    #[test]
    fn json_feed_items_without_title_are_notes() {
        let body = br#"{"version": "https://jsonfeed.org/version/1.1", "title": "J",
            "home_page_url": "https://j.example/",
            "items": [{"id": "1", "content_text": "hello", "url": "https://j.example/1",
                       "date_published": "2020-01-01T00:00:00Z"}]}"#;
        let f = parse("https://j.example/feed.json", body, None).unwrap();
        let c = to_collection("https://j.example/feed.json", &f, &Options::default());
        let o = &c["items"][0]["object"];
        assert_eq!(o["type"], "note");
        assert_eq!(o["content"], "hello");
        assert_eq!(o["contentType"], "text");
        assert_eq!(o["datenum"], 1577836800000i64);
        assert_eq!(c["items"][0]["actor"]["link"], "https://j.example/");
    }

    #[test]
    fn manifest_schema_compiles() {
        let m = Feeds::manifest();
        assert_eq!(m.verbs, vec!["fetch"]);
        assert!(!m.persist);
    }
}
