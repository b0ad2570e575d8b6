//! Schema validation of normalised activities.
//!
//! Order, as Sockethub does it: resolve the one platform named by `@context`; then the
//! envelope schema; then the platform's `messages` (or `credentials`) schema; then the verb
//! must be one the platform lists. Each step is its own method so the gateway's pipeline can
//! run them as separate stages.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::context::{self, AS, SOCKETHUB};
use crate::{Manifest, ProtocolError, envelope, error_text};

struct Compiled {
    manifest: Arc<Manifest>,
    messages: jsonschema::Validator,
    credentials: jsonschema::Validator,
}

/// Compiled schemas for the envelope and every registered platform.
pub struct Validator {
    envelope: jsonschema::Validator,
    platforms: HashMap<&'static str, Compiled>,
}

/// An activity that passed validation, and the platform it belongs to.
#[derive(Debug, Clone)]
pub struct Validated {
    pub platform: &'static str,
    pub activity: Value,
}

fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| e.to_string())
}

impl Validator {
    /// Compile the envelope and each platform's schemas; fails on an invalid schema (a bug
    /// in a platform crate, caught at start-up).
    pub fn new(manifests: &[Manifest]) -> Result<Self, String> {
        let mut platforms = HashMap::new();
        for m in manifests {
            let messages =
                compile(&m.messages).map_err(|e| format!("{} messages schema: {e}", m.name))?;
            let credentials = compile(&m.credentials)
                .map_err(|e| format!("{} credentials schema: {e}", m.name))?;
            platforms.insert(
                m.name,
                Compiled {
                    manifest: Arc::new(m.clone()),
                    messages,
                    credentials,
                },
            );
        }
        Ok(Validator {
            envelope: compile(&envelope::schema())?,
            platforms,
        })
    }

    pub fn is_platform(&self, name: &str) -> bool {
        self.platforms.contains_key(name)
    }

    /// A platform's manifest, shared: callers keep it per job without copying its schemas.
    pub fn manifest(&self, name: &str) -> Option<&Arc<Manifest>> {
        self.platforms.get(name).map(|c| &c.manifest)
    }

    /// The one registered platform named by the activity's `@context`.
    pub fn resolve(&self, activity: &Value) -> Result<&'static str, ProtocolError> {
        let urls: Vec<&str> = activity
            .get("@context")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut registered = urls.iter().filter_map(|u| {
            context::platform_of(u).and_then(|name| self.platforms.get_key_value(name))
        });
        match (registered.next(), registered.next()) {
            (Some((name, _)), None) => Ok(name),
            _ => {
                let candidates: Vec<String> = urls
                    .iter()
                    .filter(|u| **u != AS && **u != SOCKETHUB)
                    .map(|u| (*u).to_owned())
                    .collect();
                Err(match candidates.len() {
                    0 => ProtocolError::NoPlatformContext,
                    1 => ProtocolError::UnregisteredContext(candidates[0].clone()),
                    _ => ProtocolError::MultiplePlatformContexts(candidates),
                })
            }
        }
    }

    fn compiled(&self, platform: &str) -> &Compiled {
        // `platform` always comes from `resolve`, which only returns registered names.
        &self.platforms[platform]
    }

    /// The envelope schema.
    pub fn check_envelope(&self, platform: &str, activity: &Value) -> Result<(), ProtocolError> {
        check(&self.envelope, platform, activity)
    }

    /// The platform's `messages` schema, then the verb list.
    pub fn check_message(&self, platform: &str, activity: &Value) -> Result<(), ProtocolError> {
        let c = self.compiled(platform);
        check(&c.messages, platform, activity)?;
        let verb = activity.get("type").and_then(Value::as_str).unwrap_or("");
        if !c.manifest.verbs.contains(&verb) {
            return Err(ProtocolError::UnsupportedType {
                verb: verb.to_owned(),
                platform: platform.to_owned(),
                types: c.manifest.types().iter().map(|t| (*t).to_owned()).collect(),
            });
        }
        Ok(())
    }

    /// A `credentials` event must carry a `credentials` activity. Sockethub checks this
    /// before the envelope, so it is a step of its own.
    pub fn check_credentials_type(activity: &Value) -> Result<(), ProtocolError> {
        if activity.get("type").and_then(Value::as_str) != Some("credentials") {
            return Err(ProtocolError::CredentialsType);
        }
        Ok(())
    }

    /// The platform's credentials schema.
    pub fn check_credentials(&self, platform: &str, activity: &Value) -> Result<(), ProtocolError> {
        check(&self.compiled(platform).credentials, platform, activity)
    }

    /// All message checks in order (for callers that do not need separate stages).
    pub fn message(&self, activity: Value) -> Result<Validated, ProtocolError> {
        let platform = self.resolve(&activity)?;
        self.check_envelope(platform, &activity)?;
        self.check_message(platform, &activity)?;
        Ok(Validated { platform, activity })
    }

    /// All credentials checks in order.
    pub fn credentials(&self, activity: Value) -> Result<Validated, ProtocolError> {
        let platform = self.resolve(&activity)?;
        Self::check_credentials_type(&activity)?;
        self.check_envelope(platform, &activity)?;
        self.check_credentials(platform, &activity)?;
        Ok(Validated { platform, activity })
    }
}

fn check(
    schema: &jsonschema::Validator,
    platform: &str,
    activity: &Value,
) -> Result<(), ProtocolError> {
    if schema.is_valid(activity) {
        return Ok(());
    }
    let text = error_text::describe(activity, schema.iter_errors(activity))
        .unwrap_or_else(|| "activity stream: failed validation".to_owned());
    Err(ProtocolError::Schema(format!("[{platform}] {text}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dummy() -> Manifest {
        Manifest {
            name: "dummy",
            version: "1.0.0",
            verbs: vec!["echo", "greet"],
            messages: json!({"required": ["type"], "properties": {"type": {"enum": ["echo", "greet"]}}}),
            credentials: json!({}),
            require_credentials: vec![],
            persist: false,
            concurrency: 8,
        }
    }

    fn irc() -> Manifest {
        Manifest {
            name: "irc",
            version: "1.0.0",
            verbs: vec!["connect", "send"],
            messages: json!({"required": ["type"], "properties": {"type": {"enum": ["connect", "send"]}}}),
            credentials: json!({
                "required": ["object"],
                "properties": {"object": {
                    "type": "object",
                    "required": ["nick", "server"],
                    "additionalProperties": false,
                    "properties": {"type": {"enum": ["credentials"]}, "nick": {"type": "string"}, "server": {"type": "string"}, "port": {"type": "number"}}
                }}
            }),
            require_credentials: vec!["connect"],
            persist: true,
            concurrency: 1,
        }
    }

    fn validator() -> Validator {
        Validator::new(&[dummy(), irc()]).unwrap()
    }

    fn activity(platform: &str, verb: &str) -> Value {
        json!({
            "type": verb,
            "@context": context::canonical(platform),
            "actor": {"id": "test", "type": "person"},
            "object": {"type": "message", "content": "Hello!"}
        })
    }

    fn err(v: &Validator, a: Value) -> String {
        v.message(a).unwrap_err().to_string()
    }

    #[test]
    fn accepts_a_valid_echo() {
        let v = validator();
        let ok = v.message(activity("dummy", "echo")).unwrap();
        assert_eq!(ok.platform, "dummy");
    }

    #[test]
    fn unknown_verb_reads_like_sockethub() {
        assert_eq!(
            err(&validator(), activity("dummy", "dance")),
            "[dummy] /type: must be equal to one of the allowed values"
        );
    }

    #[test]
    fn unregistered_contexts_are_named() {
        let v = validator();
        let mut a = activity("dummy", "echo");
        a["@context"] = json!([
            AS,
            SOCKETHUB,
            "https://sockethub.org/ns/context/platform/nope/v1.jsonld"
        ]);
        assert_eq!(
            err(&v, a.clone()),
            "platform context URL not registered with this Sockethub instance. Unregistered platform @context value: https://sockethub.org/ns/context/platform/nope/v1.jsonld"
        );
        a["@context"] = json!([AS, SOCKETHUB]);
        assert_eq!(
            err(&v, a.clone()),
            "platform context URL not registered with this Sockethub instance. No platform @context values were provided."
        );
        a["@context"] = json!([AS, SOCKETHUB, "x", "y"]);
        assert_eq!(
            err(&v, a),
            "platform context URL not registered with this Sockethub instance. Multiple platform @context values were provided: x, y."
        );
    }

    #[test]
    fn envelope_failures() {
        let v = validator();
        let mut a = activity("dummy", "echo");
        a["actor"] = json!({"type": "person"});
        assert_eq!(
            err(&v, a),
            "[dummy] /actor: must have required property 'id'"
        );

        let mut a = activity("dummy", "echo");
        a["actor"] = json!(42);
        assert_eq!(
            err(&v, a),
            "[dummy] /actor: must match exactly one schema in oneOf: person, room, service, feed, website, platform"
        );

        let mut a = activity("dummy", "echo");
        a["target"] = json!({"id": "x", "type": "spaceship"});
        assert_eq!(
            err(&v, a),
            "[dummy] /target: must match exactly one schema in oneOf: person, room, service, feed, website, platform, address, calendar"
        );

        let mut a = activity("dummy", "echo");
        a["surprise"] = json!(1);
        assert_eq!(
            err(&v, a),
            "[dummy] activity stream: must NOT have additional properties: surprise"
        );

        let mut a = activity("dummy", "echo");
        a["published"] = json!("yesterday");
        assert_eq!(
            err(&v, a),
            "[dummy] /published: must match format \"date-time\""
        );

        let mut a = activity("dummy", "echo");
        a["@context"] = json!([AS, context::platform_url("dummy")]);
        assert_eq!(
            err(&v, a),
            "[dummy] /@context: must contain at least 1 valid item(s)"
        );
    }

    #[test]
    fn credentials_checks() {
        let v = validator();
        let mut c = activity("irc", "credentials");
        c["object"] = json!({"type": "credentials", "server": "irc.example"});
        assert_eq!(
            v.credentials(c.clone()).unwrap_err().to_string(),
            "[irc] /object: must have required property 'nick'"
        );
        c["object"]["nick"] = json!("alice");
        assert!(v.credentials(c.clone()).is_ok());
        c["type"] = json!("connect");
        assert_eq!(
            v.credentials(c).unwrap_err().to_string(),
            "credential activity streams must have credentials set as type"
        );
    }

    #[test]
    fn verbs_outside_the_manifest_list_are_refused() {
        // A platform whose schema is looser than its verb list.
        let mut m = dummy();
        m.messages = json!({});
        let v = Validator::new(&[m]).unwrap();
        assert_eq!(
            err(&v, activity("dummy", "dance")),
            "platform type dance not supported by dummy platform. (types: credentials, echo, greet)"
        );
    }
}
