//! The metadata platform, wire-compatible with Sockethub's: `fetch` with actor
//! `{id: <url>, type: "website"}` fetches the page through the guarded fetcher of
//! `switchboard-http` and answers with `object: {type: "page", …}` built from Open Graph,
//! Twitter card and plain HTML metadata (parsed with `tl`).

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use switchboard_http::{FetchConfig, Fetcher};
use switchboard_platform::{Job, Platform, PlatformError, WorkerContext};
use switchboard_protocol::Manifest;
use url::Url;

const ACCEPT: &str = "text/html, application/xhtml+xml;q=0.9, */*;q=0.5";

pub struct Metadata {
    fetcher: Result<Fetcher, String>,
}

impl Platform for Metadata {
    fn manifest() -> Manifest {
        Manifest {
            name: "metadata",
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
                            "type": {"enum": ["website"]},
                            "id": {"type": "string", "format": "iri"}
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
        Metadata {
            fetcher: Fetcher::new(FetchConfig::from_settings(&ctx.settings)).map_err(|e| e.0),
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
            .ok_or_else(|| PlatformError::new("actor.id (the page URL) is required"))?;
        let fetched = fetcher
            .fetch(url, ACCEPT)
            .await
            .map_err(|e| PlatformError::new(e.0))?;
        if let Some(mime) = fetched.mime()
            && !mime.is_empty()
            && mime != "text/html"
            && mime != "application/xhtml+xml"
        {
            return Err(PlatformError::new(format!(
                "unexpected content type {mime} for a web page at {url}"
            )));
        }
        let html = decode(&fetched.body, fetched.charset().as_deref());
        let page = extract(&html, &fetched.url)?;
        let mut reply = json!({
            "type": "fetch",
            "actor": {"id": url, "type": "website"},
            "object": page,
        });
        if let Some(target) = a.get("target") {
            reply["target"] = target.clone();
        }
        Ok(Some(reply))
    }
}

/// The body as text: the `Content-Type` charset, else a `<meta charset>` near the top, else
/// UTF-8 (a byte-order mark wins over both).
pub fn decode(body: &[u8], charset: Option<&str>) -> String {
    let label = charset.map(str::to_owned).or_else(|| sniff_charset(body));
    let encoding = label
        .and_then(|l| encoding_rs::Encoding::for_label(l.as_bytes()))
        .unwrap_or(encoding_rs::UTF_8);
    encoding.decode(body).0.into_owned()
}

fn sniff_charset(body: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&body[..body.len().min(2048)]).to_ascii_lowercase();
    let at = head.find("charset=")? + "charset=".len();
    let rest = head[at..].trim_start_matches(['"', '\'']);
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(rest.len());
    (end > 0).then(|| rest[..end].to_owned())
}

/// Page metadata from HTML served at `base` (relative URLs are resolved against it).
pub fn extract(html: &str, base: &Url) -> Result<Value, PlatformError> {
    let dom = tl::parse(html, tl::ParserOptions::default())
        .map_err(|e| PlatformError::new(format!("cannot parse HTML from {base}: {e}")))?;
    let parser = dom.parser();
    // meta property/name (lower-cased) → first content seen
    let mut meta: HashMap<String, String> = HashMap::new();
    let mut title_tag: Option<String> = None;
    let mut icon: Option<String> = None;
    let mut touch_icon: Option<String> = None;
    let mut canonical: Option<String> = None;
    let mut language: Option<String> = None;
    for node in dom.nodes() {
        let Some(tag) = node.as_tag() else { continue };
        let name = tag.name().as_utf8_str().to_ascii_lowercase();
        let attrs: HashMap<String, String> = tag
            .attributes()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    v.map(|v| v.into_owned()).unwrap_or_default(),
                )
            })
            .collect();
        match name.as_str() {
            "title" if title_tag.is_none() => {
                title_tag = Some(unescape(&tag.inner_text(parser)));
            }
            "html" if language.is_none() => language = attrs.get("lang").cloned(),
            "meta" => {
                let key = attrs
                    .get("property")
                    .or_else(|| attrs.get("name"))
                    .map(|k| k.trim().to_ascii_lowercase());
                if let (Some(k), Some(v)) = (key, attrs.get("content")) {
                    meta.entry(k).or_insert_with(|| unescape(v));
                }
            }
            "link" => {
                let rel = attrs
                    .get("rel")
                    .map(|r| r.to_ascii_lowercase())
                    .unwrap_or_default();
                let href = attrs.get("href").cloned();
                let rels: Vec<&str> = rel.split_whitespace().collect();
                if rels.contains(&"icon") && icon.is_none() {
                    icon = href;
                } else if rels.contains(&"apple-touch-icon") && touch_icon.is_none() {
                    touch_icon = href;
                } else if rels.contains(&"canonical") && canonical.is_none() {
                    canonical = href;
                }
            }
            _ => {}
        }
    }
    let get = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| meta.get(*k).filter(|v| !v.trim().is_empty()))
            .map(|v| v.trim().to_owned())
    };
    let absolute = |u: Option<String>| {
        u.and_then(|u| base.join(u.trim()).ok())
            .map(|u| u.to_string())
    };
    let mut page = Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            page.insert(k.to_owned(), Value::String(v));
        }
    };
    put("type", Some("page".into()));
    put(
        "title",
        get(&["og:title", "twitter:title"]).or(title_tag
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())),
    );
    put(
        "description",
        get(&["og:description", "twitter:description", "description"]),
    );
    put(
        "image",
        absolute(get(&[
            "og:image",
            "og:image:url",
            "og:image:secure_url",
            "twitter:image",
            "twitter:image:src",
        ])),
    );
    put("imageAlt", get(&["og:image:alt", "twitter:image:alt"]));
    put("siteName", get(&["og:site_name", "application-name"]));
    put("pageType", get(&["og:type"]));
    put(
        "url",
        absolute(get(&["og:url"]).or(canonical)).or_else(|| Some(base.to_string())),
    );
    put("icon", absolute(icon.or(touch_icon)));
    put("language", get(&["og:locale"]).or(language));
    put("author", get(&["author", "article:author"]));
    put("twitterCard", get(&["twitter:card"]));
    put("twitterSite", get(&["twitter:site"]));
    put("video", absolute(get(&["og:video", "og:video:url"])));
    put("audio", absolute(get(&["og:audio", "og:audio:url"])));
    Ok(Value::Object(page))
}

/// The HTML character references that show up in titles and meta content.
fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest[..rest.len().min(12)].find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" | "#39" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://example.com/articles/1").unwrap()
    }

    #[test]
    fn open_graph_wins_over_twitter_and_html() {
        let html = r#"<!doctype html><html lang="en"><head>
            <title>Plain &amp; simple</title>
            <meta name="description" content="plain description">
            <meta property="og:title" content="OG &quot;Title&quot;">
            <meta property="og:description" content="og description">
            <meta property="og:image" content="/img/cover.png">
            <meta property="og:site_name" content="Example">
            <meta property="og:type" content="article">
            <meta property="og:url" content="https://example.com/a/1">
            <meta name="twitter:title" content="tw title">
            <meta name="twitter:card" content="summary_large_image">
            <link rel="shortcut icon" href="/favicon.ico">
            </head><body>x</body></html>"#;
        let page = extract(html, &base()).unwrap();
        assert_eq!(
            page,
            json!({
                "type": "page",
                "title": "OG \"Title\"",
                "description": "og description",
                "image": "https://example.com/img/cover.png",
                "siteName": "Example",
                "pageType": "article",
                "url": "https://example.com/a/1",
                "icon": "https://example.com/favicon.ico",
                "language": "en",
                "twitterCard": "summary_large_image"
            })
        );
    }

    #[test]
    fn twitter_then_plain_html_fallbacks() {
        let html = r#"<html><head><TITLE> Only a title </TITLE>
            <META NAME="Description" CONTENT="the description">
            <meta name="twitter:image" content="https://cdn.example.com/i.jpg">
            <link rel="canonical" href="/canonical">
            <link rel="apple-touch-icon" href="icon.png"></head></html>"#;
        let page = extract(html, &base()).unwrap();
        assert_eq!(page["title"], "Only a title");
        assert_eq!(page["description"], "the description");
        assert_eq!(page["image"], "https://cdn.example.com/i.jpg");
        assert_eq!(page["url"], "https://example.com/canonical");
        assert_eq!(page["icon"], "https://example.com/articles/icon.png");
        assert!(page.get("siteName").is_none());
    }

    #[test]
    fn charsets() {
        assert_eq!(decode(b"caf\xe9", Some("iso-8859-1")), "café");
        assert_eq!(
            decode(b"<meta charset=\"windows-1252\">caf\xe9", None),
            "<meta charset=\"windows-1252\">café"
        );
        assert_eq!(decode("café".as_bytes(), None), "café");
        assert_eq!(
            unescape("a &lt;b&gt; &#233; &#x41; &bogus; &"),
            "a <b> é A &bogus; &"
        );
    }
}
