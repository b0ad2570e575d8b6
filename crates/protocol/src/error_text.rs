//! Turning JSON-Schema failures into one line of text, the way Sockethub (ajv with
//! `allErrors`) phrases and picks them, so `[irc] /object: must have required property
//! 'nick'` reads the same from Switchboard.
//!
//! Picking: all failures are collected, including those inside `oneOf` branches. If some
//! failure sits under `actor`, `target` or `object` *and* comes from the schema branch for
//! the type that part actually has (e.g. the `person` branch for a person actor), the
//! deepest such failure wins: it is the one that tells the user what to fix. Otherwise the
//! last failure is reported.

use jsonschema::ValidationError;
use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;

use crate::envelope::{ACTOR_TYPES, TARGET_TYPES};

struct Failure {
    /// JSON pointer into the instance ("" for the root).
    path: String,
    /// Where in the schema the failing keyword is (absolute fragment when known).
    keyword: String,
    message: String,
    /// The offending property name (additionalProperties) or allowed values (enum).
    detail: Option<String>,
    one_of: bool,
}

fn message(kind: &ValidationErrorKind) -> (String, Option<String>) {
    use ValidationErrorKind as K;
    match kind {
        K::Required { property } => (
            format!(
                "must have required property '{}'",
                property.as_str().unwrap_or_default()
            ),
            None,
        ),
        K::Type { kind } => {
            let names = match kind {
                TypeKind::Single(t) => t.to_string(),
                TypeKind::Multiple(ts) => ts
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            };
            (format!("must be {names}"), None)
        }
        K::Enum { options } => {
            let allowed = options.as_array().map(|a| {
                a.iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            ("must be equal to one of the allowed values".into(), allowed)
        }
        K::Constant { .. } => ("must be equal to constant".into(), None),
        K::AdditionalProperties { unexpected } | K::UnevaluatedProperties { unexpected } => (
            "must NOT have additional properties".into(),
            unexpected.first().cloned(),
        ),
        K::MinItems { limit } => (format!("must NOT have fewer than {limit} items"), None),
        K::MaxItems { limit } => (format!("must NOT have more than {limit} items"), None),
        K::MinLength { limit } => (format!("must NOT have fewer than {limit} characters"), None),
        K::MaxLength { limit } => (format!("must NOT have more than {limit} characters"), None),
        K::MinProperties { limit } => {
            (format!("must NOT have fewer than {limit} properties"), None)
        }
        K::MaxProperties { limit } => (format!("must NOT have more than {limit} properties"), None),
        K::Minimum { limit } => (format!("must be >= {limit}"), None),
        K::Maximum { limit } => (format!("must be <= {limit}"), None),
        K::ExclusiveMinimum { limit } => (format!("must be > {limit}"), None),
        K::ExclusiveMaximum { limit } => (format!("must be < {limit}"), None),
        K::Format { format } => (format!("must match format \"{format}\""), None),
        K::Pattern { pattern } => (format!("must match pattern \"{pattern}\""), None),
        K::OneOfNotValid { .. } | K::OneOfMultipleValid { .. } => {
            ("must match exactly one schema in oneOf".into(), None)
        }
        K::AnyOf { .. } => ("must match a schema in anyOf".into(), None),
        K::Contains => ("must contain at least 1 valid item(s)".into(), None),
        K::Not { .. } => ("must NOT be valid".into(), None),
        K::UniqueItems => ("must NOT have duplicate items".into(), None),
        K::FalseSchema => ("boolean schema is false".into(), None),
        K::MultipleOf { multiple_of } => (format!("must be multiple of {multiple_of}"), None),
        other => (other.keyword().to_owned() + " is not valid", None),
    }
}

fn flatten(err: &ValidationError<'_>, out: &mut Vec<Failure>) {
    use ValidationErrorKind as K;
    let kind = err.kind();
    if let K::OneOfNotValid { context } | K::AnyOf { context } = kind {
        for branch in context {
            for inner in branch {
                flatten(inner, out);
            }
        }
    }
    let keyword = err
        .absolute_keyword_location()
        .and_then(|uri| uri.fragment().map(|f| f.as_str().to_owned()))
        .unwrap_or_else(|| err.schema_path().as_str().to_owned());
    let (message, detail) = message(kind);
    out.push(Failure {
        path: err.instance_path().as_str().to_owned(),
        keyword,
        message,
        detail,
        one_of: matches!(kind, K::OneOfNotValid { .. } | K::OneOfMultipleValid { .. }),
    });
}

/// The `type` values present in one top-level part of the activity.
fn part_types<'a>(activity: &'a Value, part: &str) -> Vec<&'a str> {
    match activity.get(part) {
        Some(Value::Object(o)) => o.get("type").and_then(Value::as_str).into_iter().collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.get("type").and_then(Value::as_str))
            .collect(),
        _ => Vec::new(),
    }
}

/// One line describing why `activity` failed, or `None` when `errors` is empty.
pub fn describe<'a>(
    activity: &Value,
    errors: impl Iterator<Item = ValidationError<'a>>,
) -> Option<String> {
    let mut all = Vec::new();
    for e in errors {
        flatten(&e, &mut all);
    }

    let mut best: Option<(&Failure, usize)> = None;
    for f in &all {
        let mut segments = f.path.split('/').skip(1);
        let Some(part) = segments.next() else {
            continue;
        };
        if !matches!(part, "actor" | "target" | "object") {
            continue;
        }
        let from_matching_branch = part_types(activity, part)
            .iter()
            .any(|t| f.keyword.contains(&format!("/type/{t}/")));
        if !from_matching_branch {
            continue;
        }
        let depth = f.path.split('/').count();
        if best.is_none_or(|(_, d)| depth > d) {
            best = Some((f, depth));
        }
    }

    if let Some((f, _)) = best {
        let mut text = format!("{}: {}", where_(&f.path), f.message);
        if let Some(detail) = &f.detail {
            text.push_str(": ");
            text.push_str(detail);
        }
        return Some(text);
    }

    let last = all.last()?;
    let mut text = format!("{}: {}", where_(&last.path), last.message);
    if last.one_of {
        let list = if last.path.starts_with("/actor") {
            ACTOR_TYPES.join(", ")
        } else {
            TARGET_TYPES.join(", ")
        };
        text.push_str(": ");
        text.push_str(&list);
    } else if last.message.starts_with("must NOT have additional")
        && let Some(detail) = &last.detail
    {
        text.push_str(": ");
        text.push_str(detail);
    }
    Some(text)
}

fn where_(path: &str) -> &str {
    if path.is_empty() {
        "activity stream"
    } else {
        path
    }
}
