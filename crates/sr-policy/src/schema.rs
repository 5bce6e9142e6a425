//! The JSON Schema of PolicySpec v1, and structural validation against it.
//!
//! The schema is generated from the Rust model ([`crate::model`]) by `schemars`, so the types,
//! `safe-run schema` and the structural check can never drift apart: the validator checks a
//! document against exactly the schema the command prints. `jsonschema` reports every
//! violation (not just the first) with its instance path; this module turns each into a
//! [`Diagnostic`] with the policy path, the line and column, and a hint taken from the field's
//! own documentation.
//!
//! Generation settings: subschemas are inlined (no `$ref`), so a hint can be read by walking
//! the schema path; and the `null` alternative schemars adds to optional fields is removed, so
//! `memory: null` is an error rather than a silent "unset" (an omitted field is the way to
//! leave something unset).

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use schemars::generate::SchemaSettings;
use serde_json::Value;
use sr_common::{Diagnostic, ErrorCode};

use crate::model::PolicySpec;
use crate::source::{Node, PolicyPath, Seg, clip};

/// The PolicySpec v1 JSON Schema (draft 2020-12), as `safe-run schema` prints it.
pub fn policy_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let generator = SchemaSettings::draft2020_12()
            .with(|s| s.inline_subschemas = true)
            .into_generator();
        let mut value = generator.into_root_schema_for::<PolicySpec>().to_value();
        strip_null_alternatives(&mut value);
        if let Value::Object(map) = &mut value {
            map.insert(
                "$id".into(),
                Value::String("https://safe-run.invalid/schema/policy-v1.json".into()),
            );
            // Header keywords first, for a reader of `safe-run schema`.
            let mut ordered = serde_json::Map::new();
            for key in ["$schema", "$id", "title", "description"] {
                if let Some(v) = map.remove(key) {
                    ordered.insert(key.into(), v);
                }
            }
            ordered.append(map);
            *map = ordered;
        }
        value
    })
}

/// Removes `null` from `type` arrays and `{type: null}` branches from `anyOf`, collapsing a
/// one-branch `anyOf` into its branch.
fn strip_null_alternatives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(branches)) = map.get_mut("anyOf") {
                branches.retain(|b| b.get("type").is_none_or(|t| t != "null"));
                if branches.len() == 1 {
                    let only = branches.remove(0);
                    map.remove("anyOf");
                    if let Value::Object(inner) = only {
                        for (k, v) in inner {
                            map.entry(k).or_insert(v);
                        }
                    }
                }
            }
            if map.get("default").is_some_and(Value::is_null) {
                map.remove("default");
            }
            for v in map.values_mut() {
                strip_null_alternatives(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null_alternatives),
        _ => {}
    }
}

pub(crate) fn validator() -> Result<&'static Validator, String> {
    static VALIDATOR: OnceLock<Result<Validator, String>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| jsonschema::validator_for(policy_schema()).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

/// One structural problem: the diagnostic, and the path whose value is unusable (pruned
/// before typed deserialization so that semantic rules can still run on the rest).
pub(crate) struct StructuralProblem {
    pub diagnostic: Diagnostic,
    pub prune: PolicyPath,
    /// An unknown field carries no meaning, so pruning it cannot mislead other rules.
    pub unknown_field: bool,
}

/// Checks `instance` (the JSON form of `root`) against the schema.
pub(crate) fn check(instance: &Value, root: &Node) -> Vec<StructuralProblem> {
    let validator = match validator() {
        Ok(v) => v,
        Err(e) => {
            return vec![StructuralProblem {
                diagnostic: Diagnostic::new(
                    ErrorCode::PolicyBadFormat,
                    PolicyPath::root().to_string(),
                    format!("internal error: the PolicySpec schema does not compile: {e}"),
                    "report this as a bug in safe-run",
                ),
                prune: PolicyPath::root(),
                unknown_field: false,
            }];
        }
    };
    let mut out = Vec::new();
    for error in validator.iter_errors(instance) {
        map_error(&error, instance, root, &mut out);
    }
    out
}

/// Converts a JSON pointer into a policy path, using the instance to tell keys from indices.
fn pointer_to_path(pointer: &str, instance: &Value) -> PolicyPath {
    let mut path = PolicyPath::root();
    let mut current = Some(instance);
    for raw in pointer.split('/').skip(1) {
        let token = raw.replace("~1", "/").replace("~0", "~");
        match current {
            Some(Value::Array(items)) => {
                let idx = token.parse::<usize>().unwrap_or(usize::MAX);
                current = items.get(idx);
                path.0.push(Seg::Index(idx));
            }
            Some(Value::Object(map)) => {
                current = map.get(&token);
                path.0.push(Seg::Key(token));
            }
            _ => {
                current = None;
                path.0.push(Seg::Key(token));
            }
        }
    }
    path
}

/// The schema object at a schema-path pointer.
fn schema_at(pointer: &str) -> Option<&'static Value> {
    policy_schema().pointer(pointer)
}

/// The description of the schema that holds the failing keyword (schema path minus its last
/// step), for use as a hint.
fn description_for(schema_path: &str) -> Option<String> {
    let parent = schema_path.rsplit_once('/').map_or("", |(p, _)| p);
    schema_at(parent)
        .and_then(|s| s.get("description"))
        .and_then(Value::as_str)
        .map(|d| d.replace('\n', " "))
}

/// The hint for a field: its documentation, plus how its format is written.
fn field_hint(schema_path: &str) -> String {
    let parent = schema_path.rsplit_once('/').map_or("", |(p, _)| p);
    let node = schema_at(parent);
    let mut hint = match description_for(schema_path) {
        Some(d) => format!("expected: {d}"),
        None => "see docs/policy.md for this field".to_owned(),
    };
    let text = node.map(Value::to_string).unwrap_or_default();
    if let Some(choices) = node.and_then(const_choices) {
        hint.push_str(&format!(" Write one of: {}.", choices.join(", ")));
    } else if text.contains("Ki|Mi") {
        hint.push_str(
            " Format: a whole number of bytes, or digits with Ki, Mi, Gi, Ti (powers of 1024) \
             or K, M, G, T (powers of 1000), e.g. 256Mi.",
        );
    } else if text.contains("(ms|s|m|h)") {
        hint.push_str(" Format: digits followed by a unit (ms, s, m or h), e.g. 30s.");
    }
    hint
}

/// The allowed values of an enum-like schema (`oneOf`/`anyOf` of `const`s, or `enum`).
fn const_choices(node: &Value) -> Option<Vec<String>> {
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        return Some(
            values
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect(),
        );
    }
    let branches = node
        .get("oneOf")
        .or_else(|| node.get("anyOf"))?
        .as_array()?;
    branches
        .iter()
        .map(|b| {
            b.get("const")
                .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_owned))
        })
        .collect()
}

fn short(value: &Value) -> String {
    clip(&value.to_string())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number with a fraction",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn map_error(
    error: &ValidationError<'_>,
    instance: &Value,
    root: &Node,
    out: &mut Vec<StructuralProblem>,
) {
    let path = pointer_to_path(error.instance_path().as_str(), instance);
    let schema_path = error.schema_path().as_str().to_owned();
    let value = error.instance();
    let hint_from_schema = || field_hint(&schema_path);
    let push = |out: &mut Vec<StructuralProblem>,
                code,
                path: PolicyPath,
                loc,
                message: String,
                hint: String| {
        out.push(StructuralProblem {
            diagnostic: Diagnostic::new(code, path.to_string(), message, hint).at(Some(loc)),
            prune: path,
            unknown_field: false,
        });
    };
    match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default().to_owned();
            let field_path = path.key(&name);
            let parent_schema = schema_path.rsplit_once('/').map_or("", |(p, _)| p);
            let field_doc = schema_at(&format!("{parent_schema}/properties/{name}/description"))
                .and_then(Value::as_str)
                .map(|d| d.replace('\n', " "));
            let where_ = if path.0.is_empty() {
                "the policy".to_owned()
            } else {
                format!("`{path}`")
            };
            let hint = match field_doc {
                Some(doc) => format!("add `{name}` to {where_}: {doc}"),
                None => format!("add `{name}` to {where_}"),
            };
            push(
                out,
                ErrorCode::PolicyMissingField,
                field_path,
                root.locate(&path),
                format!("required field `{name}` is missing"),
                hint,
            );
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let parent_schema = schema_path.rsplit_once('/').map_or("", |(p, _)| p);
            let known: Vec<String> = schema_at(&format!("{parent_schema}/properties"))
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for key in unexpected {
                let field_path = path.key(key);
                let suggestion = closest(key, &known)
                    .map(|k| format!("did you mean `{k}`? "))
                    .unwrap_or_default();
                out.push(StructuralProblem {
                    diagnostic: Diagnostic::new(
                        ErrorCode::PolicyBadFormat,
                        field_path.to_string(),
                        format!(
                            "unknown field `{}`",
                            short(&Value::String(key.clone())).trim_matches('"')
                        ),
                        format!("{suggestion}fields allowed here: {}", known.join(", ")),
                    )
                    .at(Some(root.locate_key(&field_path))),
                    prune: field_path,
                    unknown_field: true,
                });
            }
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => t.to_string(),
                TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            push(
                out,
                ErrorCode::PolicyBadFormat,
                path.clone(),
                root.locate(&path),
                if value.is_null() {
                    format!("expected {expected}, found an empty value")
                } else {
                    format!(
                        "expected {expected}, found {} ({})",
                        json_type(value),
                        short(value)
                    )
                },
                hint_from_schema(),
            );
        }
        ValidationErrorKind::Enum { options } => {
            let choices = options
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            push(
                out,
                ErrorCode::PolicyBadFormat,
                path.clone(),
                root.locate(&path),
                format!("{} is not one of the allowed values", short(value)),
                format!("write one of: {choices}"),
            );
        }
        ValidationErrorKind::OneOfNotValid { .. }
        | ValidationErrorKind::OneOfMultipleValid { .. }
        | ValidationErrorKind::AnyOf { .. }
        | ValidationErrorKind::Pattern { .. } => {
            let parent = schema_path.rsplit_once('/').map_or("", |(p, _)| p);
            let message = match schema_at(parent).and_then(const_choices) {
                Some(choices) => format!("{} is not one of: {}", short(value), choices.join(", ")),
                None if value.as_i64().is_some_and(|n| n < 0) => {
                    format!("{} is negative", short(value))
                }
                None => format!("{} is not in the expected format", short(value)),
            };
            push(
                out,
                ErrorCode::PolicyBadFormat,
                path.clone(),
                root.locate(&path),
                message,
                hint_from_schema(),
            );
        }
        _ => {
            push(
                out,
                ErrorCode::PolicyBadFormat,
                path.clone(),
                root.locate(&path),
                error.to_string(),
                hint_from_schema(),
            );
        }
    }
}

/// The known name closest to `key` (edit distance at most 2, or a case-insensitive match).
fn closest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| {
            (
                edit_distance(&key.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                k,
            )
        })
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_has_no_refs_and_no_null_types() {
        let text = policy_schema().to_string();
        assert!(!text.contains("\"$ref\""), "{text}");
        assert!(!text.contains("\"null\""), "{text}");
        assert!(validator().is_ok());
    }

    #[test]
    fn suggests_close_names() {
        let known = vec![
            "readOnly".to_owned(),
            "source".to_owned(),
            "target".to_owned(),
        ];
        assert_eq!(closest("readonly", &known), Some("readOnly"));
        assert_eq!(closest("taget", &known), Some("target"));
        assert_eq!(closest("banana", &known), None);
    }
}
