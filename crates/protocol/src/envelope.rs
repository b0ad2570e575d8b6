//! The envelope schema every activity must satisfy, whatever its platform (Sockethub's
//! `activity-stream` schema): exactly the three contexts, a `type`, a typed `actor`, and
//! no top-level keys beyond `id`, `target`, `object`, `published`.

use serde_json::{Value, json};

use crate::context::{AS, SOCKETHUB};

/// Actor types, in the order error texts list them.
pub const ACTOR_TYPES: &[&str] = &["person", "room", "service", "feed", "website", "platform"];
/// Target types: the actor types plus addressable things.
pub const TARGET_TYPES: &[&str] = &[
    "person", "room", "service", "feed", "website", "platform", "address", "calendar",
];

/// `$id` of the envelope schema: error locations inside it are reported against this.
pub const SCHEMA_ID: &str = "https://sockethub.org/schemas/v0/activity-stream";

fn type_definitions() -> Value {
    let named = |t: &str| {
        json!({
            "type": "object",
            "required": ["id", "type"],
            "properties": {
                "id": {"type": "string", "minLength": 1},
                "type": {"enum": [t]},
                "name": {"type": "string"}
            }
        })
    };
    let iri = |t: &str| {
        json!({
            "type": "object",
            "required": ["id", "type"],
            "properties": {
                "id": {"type": "string", "format": "iri"},
                "type": {"enum": [t]},
                "name": {"type": "string"}
            }
        })
    };
    json!({
        "person": named("person"),
        "room": named("room"),
        "service": named("service"),
        "platform": named("platform"),
        "feed": iri("feed"),
        "website": iri("website"),
        "calendar": iri("calendar"),
        "address": {
            "type": "object",
            "required": ["type"],
            "additionalProperties": false,
            "properties": {"type": {"enum": ["address"]}, "id": {"type": "string"}, "name": {"type": "string"}}
        }
    })
}

fn one_of(types: &[&str]) -> Value {
    let refs: Vec<Value> = types
        .iter()
        .map(|t| json!({"$ref": format!("#/definitions/type/{t}")}))
        .collect();
    json!({"type": "object", "oneOf": refs})
}

/// The envelope schema as JSON.
pub fn schema() -> Value {
    json!({
        "$id": SCHEMA_ID,
        "type": "object",
        "required": ["@context", "type", "actor"],
        "additionalProperties": false,
        "properties": {
            "@context": {
                "type": "array",
                "minItems": 3,
                "maxItems": 3,
                "items": {"type": "string"},
                "allOf": [{"contains": {"const": AS}}, {"contains": {"const": SOCKETHUB}}]
            },
            "id": {"type": "string"},
            "type": {"type": "string"},
            "published": {"type": "string", "format": "date-time"},
            "actor": one_of(ACTOR_TYPES),
            "target": one_of(TARGET_TYPES),
            "object": {"type": "object"}
        },
        "definitions": {"type": type_definitions()}
    })
}
