//! Fetching URLs on a client's behalf without becoming a proxy into the server's network.
//!
//! - **SSRF guard**: every hop's host is resolved here and every address it resolves to must
//!   pass the [`AddressPolicy`] (by default: public unicast addresses only, see
//!   [`is_public`]). The connection then goes to exactly the checked addresses: reqwest's
//!   resolver is replaced by one that only hands out addresses this module pinned, so a
//!   second DNS answer (rebinding) cannot swap them.
//! - Redirects are followed here (at most [`FetchConfig::max_redirects`]), each hop checked.
//! - Only `http` and `https`; a connect timeout and a total timeout for the whole fetch; a
//!   body size cap enforced while reading (after gzip/brotli decoding).
//! - Conditional GET: responses with an `ETag` or `Last-Modified` are kept in a small
//!   in-memory cache; the next fetch of the URL sends `If-None-Match` / `If-Modified-Since`
//!   and a `304` reuses the kept body.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use url::{Host, Url};

/// The default cap on a response body, in bytes (5 MiB).
pub const DEFAULT_MAX_BYTES: usize = 5 * 1024 * 1024;

/// A failed fetch; the text is what the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

fn err(msg: impl Into<String>) -> FetchError {
    FetchError(msg.into())
}

/// Which addresses may be connected to.
#[derive(Clone)]
pub enum AddressPolicy {
    /// Public unicast addresses only (the default).
    PublicOnly,
    /// Anything (`allow_private_network`: trusted setups and tests).
    AllowAll,
    /// A caller-supplied rule (tests: allow exactly one local server).
    Custom(Arc<dyn Fn(SocketAddr) -> bool + Send + Sync>),
}

impl AddressPolicy {
    pub fn allows(&self, addr: SocketAddr) -> bool {
        match self {
            AddressPolicy::PublicOnly => is_public(addr.ip()),
            AddressPolicy::AllowAll => true,
            AddressPolicy::Custom(f) => f(addr),
        }
    }
}

impl std::fmt::Debug for AddressPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AddressPolicy::PublicOnly => "PublicOnly",
            AddressPolicy::AllowAll => "AllowAll",
            AddressPolicy::Custom(_) => "Custom",
        })
    }
}

/// Whether an address is a public unicast one. Refused: unspecified, loopback, private
/// (RFC 1918), shared/CGNAT (100.64/10), link-local (169.254/16, fe80::/10), unique-local
/// (fc00::/7), multicast, broadcast, documentation and benchmarking ranges, the IETF
/// protocol-assignment block (192.0.0/24), reserved (240/4), the "this network" block
/// (0/8), site-local (fec0::/10), discard (100::/64), and IPv6 forms that embed an IPv4
/// address (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96) when that address is not
/// public.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", includes 0.0.0.0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || a >= 224) // multicast 224/4, reserved 240/4, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // IPv4-compatible (deprecated ::a.b.c.d) and NAT64 (64:ff9b::/96) embed an IPv4 address.
    if s[..6] == [0; 6] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        // :: and ::1 land here too (0.0.0.0 and 0.0.0.1: not public).
        return is_public_v4(v4);
    }
    !((s[0] & 0xfe00) == 0xfc00 // unique-local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
        || (s[0] & 0xff00) == 0xff00 // multicast ff00::/8
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])) // discard 100::/64
}

/// Limits and policy for a [`Fetcher`].
#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub policy: AddressPolicy,
    pub connect_timeout: Duration,
    /// For the whole fetch: every hop and the body.
    pub timeout: Duration,
    pub max_bytes: usize,
    pub max_redirects: usize,
    /// Responses kept for conditional GET.
    pub cache_entries: usize,
    pub user_agent: String,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            policy: AddressPolicy::PublicOnly,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            max_bytes: DEFAULT_MAX_BYTES,
            max_redirects: 5,
            cache_entries: 64,
            user_agent: concat!("switchboard/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

impl FetchConfig {
    /// The configuration a platform worker runs with, from the server's worker settings:
    /// `allow_private_network` (bool), `http_timeout_ms` and `http_max_bytes` (numbers).
    pub fn from_settings(settings: &serde_json::Value) -> Self {
        let mut c = FetchConfig::default();
        if settings
            .get("allow_private_network")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
        {
            c.policy = AddressPolicy::AllowAll;
        }
        if let Some(ms) = settings
            .get("http_timeout_ms")
            .and_then(serde_json::Value::as_u64)
        {
            c.timeout = Duration::from_millis(ms);
        }
        if let Some(n) = settings
            .get("http_max_bytes")
            .and_then(serde_json::Value::as_u64)
        {
            c.max_bytes = n as usize;
        }
        c
    }
}

/// A successful fetch.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The URL the body came from (after redirects).
    pub url: Url,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    pub body: Bytes,
    /// The body was reused from the cache after a `304 Not Modified`.
    pub from_cache: bool,
}

impl Fetched {
    /// The media type without parameters, lower-cased (`text/html`).
    pub fn mime(&self) -> Option<String> {
        self.content_type.as_deref().map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
    }

    /// The `charset` parameter of the content type, if any.
    pub fn charset(&self) -> Option<String> {
        let ct = self.content_type.as_deref()?;
        ct.split(';').skip(1).find_map(|p| {
            let (k, v) = p.split_once('=')?;
            (k.trim().eq_ignore_ascii_case("charset"))
                .then(|| v.trim().trim_matches('"').to_ascii_lowercase())
        })
    }
}

struct CacheEntry {
    etag: Option<HeaderValue>,
    last_modified: Option<HeaderValue>,
    content_type: Option<String>,
    body: Bytes,
    used: u64,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<String, CacheEntry>,
    clock: u64,
}

/// Addresses checked for a host name, handed to reqwest by [`PinnedResolver`].
type Pins = Arc<Mutex<HashMap<String, Vec<SocketAddr>>>>;

/// reqwest's resolver: answers only with addresses [`Fetcher`] checked for this host, never
/// asks DNS itself.
struct PinnedResolver {
    pins: Pins,
}

impl reqwest::dns::Resolve for PinnedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addrs = self
            .pins
            .lock()
            .unwrap()
            .get(&name.as_str().to_ascii_lowercase())
            .cloned();
        Box::pin(async move {
            match addrs {
                Some(a) => Ok(Box::new(a.into_iter()) as reqwest::dns::Addrs),
                None => Err(Box::new(err("host was not checked")) as _),
            }
        })
    }
}

/// An HTTP client with the guard, limits and cache. One per worker; cheap to share.
pub struct Fetcher {
    client: reqwest::Client,
    config: FetchConfig,
    pins: Pins,
    cache: Mutex<Cache>,
}

impl Fetcher {
    pub fn new(config: FetchConfig) -> Result<Fetcher, FetchError> {
        // A second install (another Fetcher in this process) is refused and harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pins: Pins = Arc::default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .user_agent(config.user_agent.clone())
            .dns_resolver(Arc::new(PinnedResolver { pins: pins.clone() }))
            .build()
            .map_err(|e| err(format!("cannot build HTTP client: {e}")))?;
        Ok(Fetcher {
            client,
            config,
            pins,
            cache: Mutex::default(),
        })
    }

    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// Fetch `url` (GET), sending `accept` as the `Accept` header.
    pub async fn fetch(&self, url: &str, accept: &str) -> Result<Fetched, FetchError> {
        match tokio::time::timeout(self.config.timeout, self.fetch_inner(url, accept)).await {
            Ok(r) => r,
            Err(_) => Err(err(format!("timed out fetching {url}"))),
        }
    }

    /// Resolve the URL's host and check every address against the policy; pin the result
    /// for reqwest's resolver.
    async fn check(&self, url: &Url) -> Result<(), FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err(format!(
                "refusing to fetch {url}: scheme {} is not http or https",
                url.scheme()
            )));
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| err(format!("no port for {url}")))?;
        let (addrs, name) = match url.host() {
            Some(Host::Ipv4(ip)) => (vec![SocketAddr::new(ip.into(), port)], None),
            Some(Host::Ipv6(ip)) => (vec![SocketAddr::new(ip.into(), port)], None),
            Some(Host::Domain(d)) => {
                let found: Vec<SocketAddr> = tokio::net::lookup_host((d, port))
                    .await
                    .map_err(|e| err(format!("cannot resolve {d}: {e}")))?
                    .collect();
                (found, Some(d.to_ascii_lowercase()))
            }
            None => return Err(err(format!("no host in {url}"))),
        };
        if addrs.is_empty() {
            return Err(err(format!("cannot resolve {url}: no addresses")));
        }
        if let Some(bad) = addrs.iter().find(|a| !self.config.policy.allows(**a)) {
            return Err(err(format!(
                "refusing to fetch {url}: address {} is not public",
                bad.ip()
            )));
        }
        if let Some(name) = name {
            let mut pins = self.pins.lock().unwrap();
            if pins.len() > 4096 {
                pins.clear();
            }
            pins.insert(name, addrs);
        }
        Ok(())
    }

    async fn fetch_inner(&self, start: &str, accept: &str) -> Result<Fetched, FetchError> {
        let mut url = Url::parse(start).map_err(|e| err(format!("invalid URL {start}: {e}")))?;
        let mut hops = 0;
        loop {
            self.check(&url).await?;
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(accept) {
                headers.insert(header::ACCEPT, v);
            }
            {
                let cache = self.cache.lock().unwrap();
                if let Some(e) = cache.entries.get(url.as_str()) {
                    if let Some(v) = &e.etag {
                        headers.insert(header::IF_NONE_MATCH, v.clone());
                    }
                    if let Some(v) = &e.last_modified {
                        headers.insert(header::IF_MODIFIED_SINCE, v.clone());
                    }
                }
            }
            let mut resp = self
                .client
                .get(url.clone())
                .headers(headers)
                .send()
                .await
                .map_err(|e| err(format!("error fetching {url}: {}", describe(&e))))?;
            let status = resp.status();
            if status.is_redirection() && status != reqwest::StatusCode::NOT_MODIFIED {
                let location = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| err(format!("redirect without Location from {url}")))?;
                let next = url
                    .join(location)
                    .map_err(|e| err(format!("bad redirect from {url} to {location}: {e}")))?;
                hops += 1;
                if hops > self.config.max_redirects {
                    return Err(err(format!(
                        "too many redirects fetching {start} (more than {})",
                        self.config.max_redirects
                    )));
                }
                url = next;
                continue;
            }
            if status == reqwest::StatusCode::NOT_MODIFIED {
                let mut cache = self.cache.lock().unwrap();
                cache.clock += 1;
                let clock = cache.clock;
                if let Some(e) = cache.entries.get_mut(url.as_str()) {
                    e.used = clock;
                    return Ok(Fetched {
                        url,
                        content_type: e.content_type.clone(),
                        body: e.body.clone(),
                        from_cache: true,
                    });
                }
                return Err(err(format!("unexpected 304 Not Modified from {url}")));
            }
            if !status.is_success() {
                return Err(err(format!("HTTP {status} fetching {url}")));
            }
            let max = self.config.max_bytes;
            if resp.content_length().is_some_and(|n| n > max as u64) {
                return Err(err(format!("response too large (over {max} bytes)")));
            }
            let content_type = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let etag = resp.headers().get(header::ETAG).cloned();
            let last_modified = resp.headers().get(header::LAST_MODIFIED).cloned();
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| err(format!("error reading {url}: {}", describe(&e))))?
            {
                if body.len() + chunk.len() > max {
                    return Err(err(format!("response too large (over {max} bytes)")));
                }
                body.extend_from_slice(&chunk);
            }
            let body = Bytes::from(body);
            if etag.is_some() || last_modified.is_some() {
                self.remember(
                    &url,
                    etag,
                    last_modified,
                    content_type.clone(),
                    body.clone(),
                );
            }
            return Ok(Fetched {
                url,
                content_type,
                body,
                from_cache: false,
            });
        }
    }

    fn remember(
        &self,
        url: &Url,
        etag: Option<HeaderValue>,
        last_modified: Option<HeaderValue>,
        content_type: Option<String>,
        body: Bytes,
    ) {
        if self.config.cache_entries == 0 {
            return;
        }
        let mut cache = self.cache.lock().unwrap();
        cache.clock += 1;
        let used = cache.clock;
        if !cache.entries.contains_key(url.as_str())
            && cache.entries.len() >= self.config.cache_entries
        {
            // Evict the least recently used entry.
            if let Some(oldest) = cache
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            {
                cache.entries.remove(&oldest);
            }
        }
        cache.entries.insert(
            url.as_str().to_owned(),
            CacheEntry {
                etag,
                last_modified,
                content_type,
                body,
                used,
            },
        );
    }
}

/// A reqwest error with its causes, for the client's error string.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap())
    }

    #[test]
    fn refuses_non_public_v4() {
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!public(a), "{a} must be refused");
        }
    }

    #[test]
    fn allows_public_v4_near_the_edges() {
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "169.253.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert!(public(a), "{a} must be allowed");
        }
    }

    #[test]
    fn refuses_non_public_v6() {
        for a in [
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "100::1",
            // IPv4-mapped and -compatible forms of refused IPv4 addresses
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:192.168.0.1",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
        ] {
            assert!(!public(a), "{a} must be refused");
        }
    }

    #[test]
    fn allows_public_v6() {
        for a in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "fbff::1",
            "fe00::1",
        ] {
            assert!(public(a), "{a} must be allowed");
        }
    }

    #[test]
    fn content_type_parts() {
        let f = Fetched {
            url: Url::parse("http://example.com/").unwrap(),
            content_type: Some("Text/HTML; Charset=\"ISO-8859-1\"".into()),
            body: Bytes::new(),
            from_cache: false,
        };
        assert_eq!(f.mime().as_deref(), Some("text/html"));
        assert_eq!(f.charset().as_deref(), Some("iso-8859-1"));
    }

    #[tokio::test]
    async fn refuses_private_targets_and_schemes_without_connecting() {
        let f = Fetcher::new(FetchConfig::default()).unwrap();
        for (url, ip) in [
            ("http://127.0.0.1/", "127.0.0.1"),
            ("http://[::1]/", "::1"),
            ("http://10.0.0.1/", "10.0.0.1"),
            (
                "http://169.254.169.254/latest/meta-data/",
                "169.254.169.254",
            ),
            ("http://[::ffff:127.0.0.1]:8080/", "::ffff:127.0.0.1"),
            ("http://localhost:9/", ""),
            // Other spellings of loopback, normalised by the URL parser before the check.
            ("http://2130706433/", "127.0.0.1"),
            ("http://0x7f.1/", "127.0.0.1"),
            ("http://0/", "0.0.0.0"),
        ] {
            let e = f.fetch(url, "*/*").await.unwrap_err().0;
            assert!(e.starts_with("refusing to fetch "), "{url}: {e}");
            assert!(e.contains(&format!("address {ip}")), "{url}: {e}");
        }
        let e = f.fetch("file:///etc/passwd", "*/*").await.unwrap_err().0;
        assert!(e.contains("scheme file is not http or https"), "{e}");
        let e = f.fetch("ftp://example.com/", "*/*").await.unwrap_err().0;
        assert!(e.contains("scheme ftp"), "{e}");
    }
}
