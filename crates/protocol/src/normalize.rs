//! First look at a raw activity: the checks that come before any schema, and the
//! shorthands clients may use.
//!
//! - Sockethub 3/4 clients send `context: "<platform>"` instead of the `@context` array; a
//!   registered platform name is promoted to the canonical array so old clients keep
//!   working. An unknown name falls through to the usual "@context array" error.
//! - `actor: "id"` and `target: "id"` become `{id}` (or the full object the session
//!   declared earlier with an `activity-object` event); `object: "text"` becomes
//!   `{content: "text"}`.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::ProtocolError;
use crate::context;

/// Normalise `input` into an activity object, or say why it is not one. `is_platform`
/// answers whether a name is a registered platform; `objects` are the activity objects the
/// session declared, by id.
pub fn normalize(
    input: &Value,
    is_platform: impl Fn(&str) -> bool,
    objects: &HashMap<String, Value>,
) -> Result<Value, ProtocolError> {
    let Value::Object(map) = input else {
        return Err(ProtocolError::NotAnObject);
    };
    let mut map = map.clone();
    promote_legacy_context(&mut map, &is_platform);

    match map.get("@context") {
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
        _ => return Err(ProtocolError::NoContext),
    }
    if !map.get("type").is_some_and(Value::is_string) {
        return Err(ProtocolError::NoType);
    }
    for key in ["actor", "target"] {
        if let Some(v) = map.get_mut(key) {
            expand_ref(v, objects);
        }
    }
    if let Some(Value::String(text)) = map.get("object") {
        let content = text.clone();
        map.insert("object".into(), json!({ "content": content }));
    }
    if map.get("actor").is_none_or(Value::is_null) {
        return Err(ProtocolError::NoActor);
    }
    Ok(Value::Object(map))
}

fn promote_legacy_context(map: &mut Map<String, Value>, is_platform: &impl Fn(&str) -> bool) {
    if map.get("@context").is_some_and(Value::is_array) {
        return;
    }
    let name = match map.get("context") {
        Some(Value::String(name)) if is_platform(name) => name.clone(),
        _ => return,
    };
    map.remove("context");
    map.insert("@context".into(), context::canonical(&name));
}

/// `"id"` → the declared object with that id, or `{id}`; arrays element-wise.
fn expand_ref(v: &mut Value, objects: &HashMap<String, Value>) {
    match v {
        Value::String(id) => {
            *v = objects
                .get(id.as_str())
                .cloned()
                .unwrap_or_else(|| json!({ "id": id }));
        }
        Value::Array(items) => items.iter_mut().for_each(|i| expand_ref(i, objects)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(v: Value) -> Result<Value, ProtocolError> {
        normalize(&v, |p| p == "dummy", &HashMap::new())
    }

    #[test]
    fn rejects_in_sockethub_order() {
        assert_eq!(norm(json!("hi")), Err(ProtocolError::NotAnObject));
        assert_eq!(norm(json!([1])), Err(ProtocolError::NotAnObject));
        assert_eq!(norm(json!({"type": "echo"})), Err(ProtocolError::NoContext));
        assert_eq!(
            norm(json!({"@context": "x", "type": "echo"})),
            Err(ProtocolError::NoContext)
        );
        assert_eq!(
            norm(json!({"@context": [1], "type": "echo"})),
            Err(ProtocolError::NoContext)
        );
        assert_eq!(norm(json!({"@context": []})), Err(ProtocolError::NoType));
        assert_eq!(
            norm(json!({"@context": [], "type": "echo"})),
            Err(ProtocolError::NoActor)
        );
    }

    #[test]
    fn expands_shorthands() {
        let out = norm(
            json!({"@context": [], "type": "echo", "actor": "me", "target": ["a"], "object": "hi"}),
        )
        .unwrap();
        assert_eq!(out["actor"], json!({"id": "me"}));
        assert_eq!(out["target"], json!([{"id": "a"}]));
        assert_eq!(out["object"], json!({"content": "hi"}));
    }

    #[test]
    fn expands_declared_objects() {
        let mut objects = HashMap::new();
        objects.insert(
            "me".to_owned(),
            json!({"id": "me", "type": "person", "name": "Me"}),
        );
        let out = normalize(
            &json!({"@context": [], "type": "echo", "actor": "me"}),
            |_| true,
            &objects,
        )
        .unwrap();
        assert_eq!(out["actor"]["name"], "Me");
    }

    #[test]
    fn promotes_legacy_context_for_known_platforms_only() {
        let out = norm(
            json!({"context": "dummy", "type": "echo", "actor": {"id": "a", "type": "person"}}),
        )
        .unwrap();
        assert_eq!(out["@context"], context::canonical("dummy"));
        assert!(out.get("context").is_none());
        assert_eq!(
            norm(json!({"context": "nope", "type": "echo", "actor": "a"})),
            Err(ProtocolError::NoContext)
        );
    }
}
