//! The JSON-LD `@context` URLs of Sockethub activities.
//!
//! Every activity carries exactly `[AS, SOCKETHUB, <platform url>]`; the third names the
//! platform that handles it. Replies are re-stamped with the canonical triple.

use serde_json::{Value, json};

pub const AS: &str = "https://www.w3.org/ns/activitystreams";
pub const SOCKETHUB: &str = "https://sockethub.org/ns/context/v1.jsonld";

/// The context URL that names platform `name`.
pub fn platform_url(name: &str) -> String {
    format!("https://sockethub.org/ns/context/platform/{name}/v1.jsonld")
}

/// The canonical `@context` array for platform `name`.
pub fn canonical(name: &str) -> Value {
    json!([AS, SOCKETHUB, platform_url(name)])
}

/// Set `@context` of an outgoing activity to the canonical triple for `platform`, dropping
/// the legacy `context` key if a platform left one.
pub fn stamp(activity: &mut Value, platform: &str) {
    if let Value::Object(map) = activity {
        map.remove("context");
        map.insert("@context".into(), canonical(platform));
    }
}

/// The platform-name part of a platform context URL, if `url` is one.
pub fn platform_of(url: &str) -> Option<&str> {
    url.strip_prefix("https://sockethub.org/ns/context/platform/")?
        .strip_suffix("/v1.jsonld")
}
