//! The fast path of structural validation: deciding, without the JSON Schema validator, that a
//! document certainly passes it.
//!
//! Why it exists: building the `jsonschema` validator (which first checks our schema against
//! the draft 2020-12 meta-schema, and cannot be told not to) and generating the schema cost
//! about seven of the eight million instructions `safe-run validate` spends on a small policy,
//! although nearly every policy that is run is plainly valid. This module owns that test;
//! [`crate::validate_with`] skips [`crate::schema::check`] when it passes, and otherwise takes
//! the full path, so every diagnostic comes from the schema exactly as before.
//!
//! It is conservative: it may turn away a document the schema accepts (which then merely
//! takes the full path), never accept one the schema rejects. A document is plainly valid
//! when:
//!
//! 1. serde deserializes it into [`PolicySpec`]: every struct denies unknown fields, and every
//!    Rust type is at least as narrow as its schema (`u32` for `format: uint32, minimum: 0`,
//!    `i64` for `int64`, the enums for their `oneOf` of `const`s, fields without a serde
//!    default for `required`; [`DurationSpec`](sr_common::DurationSpec) and
//!    [`ByteSize`](sr_common::ByteSize) accept exactly their schema's `pattern` and
//!    `maximum`);
//! 2. the typed spec, serialized back, contains the document: every key of every mapping is
//!    there with an equal value, lists element by element. This catches what serde is more
//!    lenient about than the schema: `null` taken as "unset", an enum written as a mapping.
//!    The few fields whose spelling serialization does not keep (sizes, durations, a whole
//!    number of cpus, lists and maps left out when empty) are compared by meaning, at paths
//!    named below;
//! 3. the lists are no longer than their `maxItems` (the model's `MAX_*` constants).
//!
//! The tests walk the generated schema and fail on any keyword, or keyword value, that this
//! list does not cover, so a change to the model cannot silently make the fast path accept
//! what the schema refuses.

use serde::Deserialize;
use serde_json::Value;
use sr_common::{ByteSize, DurationSpec};

use crate::model::{MAX_EGRESS_RULES, MAX_MOUNTS, MAX_PORTS_PER_RULE, PolicySpec};

/// Byte sizes: written `"256Mi"` or as an integer, serialized as an integer.
const BYTE_SIZES: [&str; 3] = [
    "runtime.output.maxBytes",
    "resources.memory",
    "resources.tmpfsSize",
];
/// Durations: serialized in their largest whole unit (`"60s"` comes back as `"1m"`).
const DURATIONS: [&str; 1] = ["runtime.timeout"];
/// Floating-point numbers: an integer (`cpus: 2`) comes back as a float (`2.0`).
const FLOATS: [&str; 1] = ["resources.cpus"];
/// Lists and maps left out of the serialized spec when empty (`skip_serializing_if`).
const SKIPPED_WHEN_EMPTY: [&str; 3] = ["runtime.env", "network.egress", "network.egress[*].ports"];

/// The typed policy when `instance` (a document's JSON form) certainly passes the schema;
/// `None` when it may not (it then needs [`crate::schema::check`]).
pub(crate) fn plainly_valid(instance: &Value) -> Option<PolicySpec> {
    let spec = PolicySpec::deserialize(instance).ok()?;
    if !within_max_items(&spec) {
        return None;
    }
    let typed = serde_json::to_value(&spec).ok()?;
    covers(instance, &typed, &mut String::new()).then_some(spec)
}

/// The schema's `maxItems`. The typed lists have the document's lengths (`covers` compares
/// them element by element).
fn within_max_items(spec: &PolicySpec) -> bool {
    spec.mounts.len() <= MAX_MOUNTS
        && spec.network.as_ref().is_none_or(|n| {
            n.egress.len() <= MAX_EGRESS_RULES
                && n.egress.iter().all(|r| r.ports.len() <= MAX_PORTS_PER_RULE)
        })
}

/// Whether `typed` (the serialized spec) contains `doc` (the document). `pattern` is the
/// path walked so far with indices written `[*]` (`network.egress[*].ports`); it names a
/// struct field wherever the tables above look, since serde refused unknown fields and no
/// table path lies under a user-keyed map (`runtime.env`).
fn covers(doc: &Value, typed: &Value, pattern: &mut String) -> bool {
    match (doc, typed) {
        (Value::Object(doc), Value::Object(typed)) => doc.iter().all(|(key, value)| {
            let len = pattern.len();
            if !pattern.is_empty() {
                pattern.push('.');
            }
            pattern.push_str(key);
            let ok = match typed.get(key) {
                Some(t) => covers(value, t, pattern),
                // serde refused unknown keys, so the key was left out when serialized: an
                // empty list or map (fine, no `minItems` anywhere), or `null` (refused).
                None => {
                    SKIPPED_WHEN_EMPTY.contains(&pattern.as_str())
                        && match value {
                            Value::Array(a) => a.is_empty(),
                            Value::Object(m) => m.is_empty(),
                            _ => false,
                        }
                }
            };
            pattern.truncate(len);
            ok
        }),
        (Value::Array(doc), Value::Array(typed)) => {
            if doc.len() != typed.len() {
                return false;
            }
            let len = pattern.len();
            pattern.push_str("[*]");
            let ok = doc.iter().zip(typed).all(|(d, t)| covers(d, t, pattern));
            pattern.truncate(len);
            ok
        }
        (Value::Object(_) | Value::Array(_), _) => false,
        _ => doc == typed || same_meaning(doc, typed, pattern),
    }
}

/// Whether a scalar the serialization spells differently means the same.
fn same_meaning(doc: &Value, typed: &Value, pattern: &str) -> bool {
    match (doc, typed) {
        // `ByteSize::parse` accepts exactly the schema's strings (sr-common), and
        // deserialization went through it.
        (Value::String(text), Value::Number(bytes)) if BYTE_SIZES.contains(&pattern) => {
            ByteSize::parse(text).is_ok_and(|b| Some(b.bytes()) == bytes.as_u64())
        }
        // Likewise `DurationSpec::parse`.
        (Value::String(text), Value::String(shown)) if DURATIONS.contains(&pattern) => {
            DurationSpec::parse(text).is_ok_and(|d| DurationSpec::parse(shown) == Ok(d))
        }
        // The schema says `type: number`: any number.
        (Value::Number(n), Value::Number(f)) if FLOATS.contains(&pattern) => {
            n.as_f64() == f.as_f64()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};
    use std::sync::LazyLock;

    use jsonschema::Validator;
    use proptest::prelude::*;
    use schemars::{JsonSchema, SchemaGenerator};
    use serde_json::json;

    use super::*;
    use crate::source::{self, SourceFormat};

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    fn case_files(dir: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
            })
            .collect();
        files.sort();
        files
    }

    fn schema_accepts(instance: &Value) -> bool {
        crate::schema::validator().unwrap().is_valid(instance)
    }

    /// A document using every field of the model (structurally valid; semantically it mixes
    /// backends, which the fast path does not judge).
    fn everything() -> Value {
        json!({
            "version": 1,
            "name": "everything",
            "runtime": {
                "backend": "sandbox",
                "command": "/bin/sh",
                "args": ["-c", "true"],
                "env": {"LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"},
                "cwd": "/work",
                "timeout": "90s",
                "user": {"uid": 1000, "gid": 1000},
                "output": {"maxBytes": "16Mi", "onLimit": "kill"}
            },
            "rootfs": {"source": "host"},
            "mounts": [
                {"source": "/srv/in", "target": "/in", "readOnly": true},
                {"source": "/srv/out", "target": "/out"}
            ],
            "network": {
                "mode": "allowlist",
                "egress": [
                    {"host": "pypi.org", "protocol": "tcp", "ports": [443, 80]},
                    {"cidr": "203.0.113.0/24", "protocol": "icmp", "ports": []}
                ]
            },
            "resources": {
                "cpus": 2,
                "memory": 268_435_456,
                "pids": 64,
                "openFiles": 256,
                "tmpfsSize": "32Mi"
            },
            "evidence": {"events": ["process.exited"], "sign": false},
            "artifacts": {
                "kernel": {"path": "/srv/vmlinux", "sha256": "ab"},
                "initramfs": {"path": "/srv/initramfs", "sha256": "cd"},
                "rootfs": {"path": "/srv/rootfs.ext4", "sha256": "ef"}
            }
        })
    }

    #[test]
    fn everything_takes_the_fast_path() {
        let doc = everything();
        assert!(schema_accepts(&doc));
        assert!(plainly_valid(&doc).is_some());
    }

    /// Every committed case: whatever the fast path accepts, the schema accepts; and every
    /// case the schema accepts takes the fast path (so the speed-up cannot silently vanish).
    #[test]
    fn committed_cases() {
        let mut fast = 0;
        for dir in [
            "tests/policy_valid_cases",
            "tests/policy_invalid_cases",
            "examples",
        ] {
            for file in case_files(dir) {
                if file.ends_with("examples/agent/mcp.json") {
                    continue;
                }
                let text = std::fs::read_to_string(&file).unwrap();
                let parsed = source::parse(&text, SourceFormat::from_path(&file));
                let Some(root) = parsed.root else { continue };
                let instance = root.to_json();
                let accepted = plainly_valid(&instance).is_some();
                let problems = crate::schema::check(&instance, &root);
                if accepted {
                    fast += 1;
                    assert!(
                        problems.is_empty(),
                        "{} took the fast path but the schema rejects it: {:?}",
                        file.display(),
                        problems
                            .iter()
                            .map(|p| &p.diagnostic.message)
                            .collect::<Vec<_>>()
                    );
                } else {
                    assert!(
                        !problems.is_empty(),
                        "{} passes the schema but missed the fast path",
                        file.display()
                    );
                }
                if !dir.ends_with("invalid_cases") {
                    assert!(accepted, "{} missed the fast path", file.display());
                }
            }
        }
        assert!(fast >= 15, "only {fast} committed cases took the fast path");
    }

    #[test]
    fn spellings_serialization_does_not_keep() {
        let mut doc = everything();
        doc["runtime"]["timeout"] = json!("120s");
        doc["resources"]["cpus"] = json!(1);
        doc["resources"]["memory"] = json!("0256Mi");
        doc["runtime"]["env"] = json!({});
        doc["network"]["egress"] = json!([]);
        assert!(schema_accepts(&doc));
        assert!(plainly_valid(&doc).is_some());
    }

    #[test]
    fn refuses_what_serde_alone_would_take() {
        for (pointer, value) in [
            ("/resources/memory", Value::Null),
            ("/runtime/cwd", Value::Null),
            ("/evidence/events", Value::Null),
            ("/runtime/backend", json!({"sandbox": null})),
            ("/runtime/timeout", json!("1234567890123456ms")),
            ("/resources/memory", json!("12345678901234567")),
            ("/version", json!(1.0)),
            ("/runtime/args", json!({})),
        ] {
            let mut doc = everything();
            *doc.pointer_mut(pointer).unwrap() = value.clone();
            assert!(
                plainly_valid(&doc).is_none(),
                "{pointer} = {value} took the fast path"
            );
        }
        let mut doc = everything();
        doc["network"]["egress"][0]["ports"] = json!(vec![443; MAX_PORTS_PER_RULE + 1]);
        assert!(!schema_accepts(&doc));
        assert!(plainly_valid(&doc).is_none());
        doc["network"]["egress"][0]["ports"] = json!(vec![443; MAX_PORTS_PER_RULE]);
        assert!(schema_accepts(&doc));
        assert!(plainly_valid(&doc).is_some());
    }

    // ---- The schema audit: every keyword that constrains values is covered. ----

    fn without_description(mut v: Value) -> Value {
        if let Value::Object(m) = &mut v {
            m.remove("description");
        }
        v
    }

    fn type_schema<T: JsonSchema>() -> Value {
        without_description(T::json_schema(&mut SchemaGenerator::default()).to_value())
    }

    fn join(path: &str, key: &str) -> String {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    }

    /// What the walk of the schema found.
    #[derive(Default)]
    struct Audit {
        problems: Vec<String>,
        /// Every path with a schema (`{*}` for a map's values).
        paths: BTreeSet<String>,
        /// Object path -> its required keys.
        required: BTreeMap<String, Vec<String>>,
        /// Path -> the `const`s of its `oneOf`.
        enums: BTreeMap<String, Vec<String>>,
    }

    fn audit(node: &Value, path: &str, out: &mut Audit) {
        out.paths.insert(path.to_owned());
        let Some(map) = node.as_object() else {
            out.problems.push(format!("{path}: not a schema object"));
            return;
        };
        // Whole subschemas whose type's own tests (below) prove serde as strict.
        if BYTE_SIZES.contains(&path) {
            if without_description(node.clone()) != type_schema::<ByteSize>() {
                out.problems.push(format!("{path}: not ByteSize's schema"));
            }
            return;
        }
        if DURATIONS.contains(&path) {
            if without_description(node.clone()) != type_schema::<DurationSpec>() {
                out.problems
                    .push(format!("{path}: not DurationSpec's schema"));
            }
            return;
        }
        let ty = map.get("type").and_then(Value::as_str);
        for (key, value) in map {
            match key.as_str() {
                // Annotations.
                "$schema" | "$id" | "title" | "description" | "default" => {}
                // serde and the round trip: the values are equal, so of the same JSON type;
                // except at FLOATS, where any number is fine for `type: number`.
                "type" => {
                    if FLOATS.contains(&path) && ty != Some("number") {
                        out.problems.push(format!("{path}: expected type number"));
                    }
                }
                "properties" => {
                    for (name, sub) in value.as_object().into_iter().flatten() {
                        audit(sub, &join(path, name), out);
                    }
                }
                "items" => audit(value, &format!("{path}[*]"), out),
                // `false`: serde denies unknown fields; a schema: a map (`runtime.env`).
                "additionalProperties" => match value {
                    Value::Bool(false) => {}
                    Value::Object(_) => audit(value, &join(path, "{*}"), out),
                    _ => out
                        .problems
                        .push(format!("{path}: additionalProperties {value}")),
                },
                // Checked against serde by `schema_required_fields_are_required_by_serde`.
                "required" => {
                    let keys = value
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|k| k.as_str().map(str::to_owned))
                        .collect();
                    out.required.insert(path.to_owned(), keys);
                }
                // An enum; its names are checked against serde's by `enums_match_serde`.
                "oneOf" => {
                    let consts: Option<Vec<String>> = value.as_array().and_then(|branches| {
                        branches
                            .iter()
                            .map(|b| {
                                let b = without_description(b.clone());
                                let c = b.get("const")?.as_str()?.to_owned();
                                (b == json!({"type": "string", "const": c})).then_some(c)
                            })
                            .collect()
                    });
                    match consts {
                        Some(c) => {
                            out.enums.insert(path.to_owned(), c);
                        }
                        None => out.problems.push(format!("{path}: oneOf not of consts")),
                    }
                }
                // Formats schemars derives from Rust integer and float types: serde's range
                // for the type is within the schema's.
                "format" => {
                    let known = match (value.as_str(), ty) {
                        (Some("uint32"), Some("integer")) => {
                            map.get("minimum") == Some(&json!(0)) && !map.contains_key("maximum")
                        }
                        (Some("int64"), Some("integer")) | (Some("double"), Some("number")) => {
                            !map.contains_key("minimum") && !map.contains_key("maximum")
                        }
                        _ => false,
                    };
                    if !known {
                        out.problems.push(format!("{path}: format {value}"));
                    }
                }
                // Only with `format: uint32` (checked there): `u32` is never negative.
                "minimum" => {
                    if map.get("format") != Some(&json!("uint32")) {
                        out.problems.push(format!("{path}: minimum {value}"));
                    }
                }
                "maxItems" => {
                    let max = match path {
                        "mounts" => MAX_MOUNTS,
                        "network.egress" => MAX_EGRESS_RULES,
                        "network.egress[*].ports" => MAX_PORTS_PER_RULE,
                        _ => 0,
                    };
                    if max == 0 || value != &json!(max) {
                        out.problems.push(format!("{path}: maxItems {value}"));
                    }
                }
                other => out.problems.push(format!(
                    "{path}: keyword `{other}` is not covered by the fast path; teach \
                     fast_path.rs to enforce it (or fall back) before using it"
                )),
            }
        }
        if SKIPPED_WHEN_EMPTY.contains(&path) {
            // An empty one is left out of the serialized spec; the schema must accept it.
            let map_schema = map
                .get("additionalProperties")
                .is_some_and(Value::is_object);
            if !(ty == Some("array") || (ty == Some("object") && map_schema)) {
                out.problems
                    .push(format!("{path}: not a list or map, yet skipped when empty"));
            }
        }
    }

    fn schema_audit() -> Audit {
        let mut out = Audit::default();
        audit(crate::schema::policy_schema(), "", &mut out);
        out
    }

    #[test]
    fn every_schema_keyword_is_covered() {
        let audit = schema_audit();
        assert!(audit.problems.is_empty(), "{:#?}", audit.problems);
        for path in BYTE_SIZES
            .iter()
            .chain(&DURATIONS)
            .chain(&FLOATS)
            .chain(&SKIPPED_WHEN_EMPTY)
        {
            assert!(audit.paths.contains(*path), "{path} is not in the schema");
        }
        assert_eq!(
            audit.required.keys().cloned().collect::<Vec<_>>(),
            [
                "",
                "artifacts",
                "artifacts.initramfs",
                "artifacts.kernel",
                "artifacts.rootfs",
                "mounts[*]",
                "network.egress[*]",
                "rootfs",
                "runtime",
                "runtime.user",
            ]
        );
    }

    /// Every path of `doc` (indices as `[*]`) with its JSON pointer.
    fn paths_of(doc: &Value, path: &str, pointer: &str, out: &mut Vec<(String, String)>) {
        out.push((path.to_owned(), pointer.to_owned()));
        match doc {
            Value::Object(m) => {
                for (k, v) in m {
                    let token = k.replace('~', "~0").replace('/', "~1");
                    paths_of(v, &join(path, k), &format!("{pointer}/{token}"), out);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    paths_of(v, &format!("{path}[*]"), &format!("{pointer}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    /// `everything()` uses every field, so the mutations below reach all of them.
    #[test]
    fn everything_uses_every_field() {
        let mut found = Vec::new();
        paths_of(&everything(), "", "", &mut found);
        let found: BTreeSet<String> = found
            .into_iter()
            .map(|(p, _)| p.replace("runtime.env.LANG", "runtime.env.{*}"))
            .collect();
        for path in schema_audit().paths {
            assert!(found.contains(&path), "everything() lacks {path}");
        }
    }

    #[test]
    fn schema_required_fields_are_required_by_serde() {
        let doc = everything();
        let mut nodes = Vec::new();
        paths_of(&doc, "", "", &mut nodes);
        for (object, keys) in schema_audit().required {
            let instances: Vec<&String> = nodes
                .iter()
                .filter(|(p, _)| *p == object)
                .map(|(_, ptr)| ptr)
                .collect();
            assert!(!instances.is_empty(), "everything() has no {object}");
            for pointer in instances {
                for key in &keys {
                    let mut cut = doc.clone();
                    let target = cut.pointer_mut(pointer).unwrap().as_object_mut().unwrap();
                    assert!(target.remove(key).is_some(), "{pointer}/{key}");
                    assert!(!schema_accepts(&cut));
                    assert!(
                        plainly_valid(&cut).is_none(),
                        "{pointer} without {key} took the fast path"
                    );
                }
            }
        }
    }

    /// The names serde accepts for each enum are the schema's `const`s. (serde lists them in
    /// its "unknown variant" error.)
    #[test]
    fn enums_match_serde() {
        let doc = everything();
        let mut nodes = Vec::new();
        paths_of(&doc, "", "", &mut nodes);
        let enums = schema_audit().enums;
        assert_eq!(enums.len(), 4, "{enums:?}");
        for (path, consts) in enums {
            let (_, pointer) = nodes.iter().find(|(p, _)| *p == path).unwrap();
            let mut bad = doc.clone();
            *bad.pointer_mut(pointer).unwrap() = json!("no-such-variant");
            let message = PolicySpec::deserialize(&bad).unwrap_err().to_string();
            let (_, expected) = message.split_once("expected").unwrap();
            let serde_names: BTreeSet<&str> = expected.split('`').skip(1).step_by(2).collect();
            let consts: BTreeSet<&str> = consts.iter().map(String::as_str).collect();
            assert_eq!(serde_names, consts, "{path}: {message}");
        }
    }

    // ---- The unit types: deserialization accepts only what their schema does. ----

    fn compiled<T: JsonSchema>() -> Validator {
        jsonschema::validator_for(&type_schema::<T>()).unwrap()
    }

    static BYTE_SIZE: LazyLock<Validator> = LazyLock::new(compiled::<ByteSize>);
    static DURATION: LazyLock<Validator> = LazyLock::new(compiled::<DurationSpec>);

    fn unit_values() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[0-9]{0,18}(ms|s|m|h|Ki|Mi|Gi|Ti|K|M|G|T|x|)".prop_map(Value::String),
            // Around the digit limits, where the schema's pattern bites.
            "0{0,3}[0-9]{13,16}(ms|s|Ki|)".prop_map(Value::String),
            "0{0,4}[1-9]{1,3}(s|Mi)?\n?".prop_map(Value::String),
            "\\PC{0,20}".prop_map(Value::String),
            any::<i64>().prop_map(|i| json!(i)),
            any::<u64>().prop_map(|i| json!(i)),
            (0u64..(1 << 54)).prop_map(|i| json!(i)),
            any::<f64>().prop_map(|f| json!(f)),
        ]
    }

    proptest! {
        #[test]
        fn unit_types_are_as_strict_as_their_schema(v in unit_values()) {
            if ByteSize::deserialize(&v).is_ok() {
                prop_assert!(BYTE_SIZE.is_valid(&v), "ByteSize took {v}");
            }
            if DurationSpec::deserialize(&v).is_ok() {
                prop_assert!(DURATION.is_valid(&v), "DurationSpec took {v}");
            }
        }
    }

    // ---- Mutations of valid documents: fast-accept implies schema-accept. ----

    #[derive(Debug, Clone)]
    enum Mutation {
        /// Replace the node by a value.
        Replace(prop::sample::Index, Value),
        /// Add a key to a mapping (or replace the node by a one-key mapping).
        AddKey(prop::sample::Index, String, Value),
        /// Remove the node from its mapping or list.
        Remove(prop::sample::Index),
        /// Make a list `n` long by repeating its first element (or `value`); it picks among
        /// the lists only, so that `maxItems` is reached often.
        Lengthen(prop::sample::Index, usize, Value),
    }

    /// Values the schema and serde could judge differently: `null` (serde's "unset"), out of
    /// range or fractional numbers, too many digits, enums written otherwise.
    fn odd_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => prop::sample::select(vec![
                Value::Null,
                json!(-1),
                json!(u64::MAX),
                json!(u64::from(u32::MAX) + 1),
                json!(9_007_199_254_740_992u64),
                json!(1.5),
                json!(2.0),
                json!("1234567890123456ms"),
                json!("0000000000000001s"),
                json!("00000000000000001"),
                json!("00000000000000001Mi"),
                json!("sandbx"),
                json!({"sandbox": null}),
                json!({}),
                json!([]),
            ]),
            2 => prop::sample::select(vec![
                json!(0),
                json!(1),
                json!(65536),
                json!(u32::MAX),
                json!(i64::MIN),
                json!(i64::MAX),
                json!(9_007_199_254_740_991u64),
                json!(-0.5),
                json!(1e300),
                json!(true),
                json!(""),
                json!("30"),
                json!("60s"),
                json!("1.5s"),
                json!("123456789012345ms"),
                json!("256Mi"),
                json!("9007199254740991"),
                json!("0000000000000001Ki"),
                json!("sandbox"),
                json!("firecracker"),
                json!("allowlist"),
                json!("none"),
                json!("tcp"),
                json!("icmp"),
                json!("kill"),
                json!(["x"]),
                json!([1]),
                json!({"a": "b"}),
                json!({"path": "/x"}),
                json!({"source": "/a", "target": "/b"}),
                json!({"protocol": "tcp", "ports": [1]}),
            ]),
            1 => "[a-z0-9]{0,6}".prop_map(Value::String),
            1 => any::<i64>().prop_map(|i| json!(i)),
            1 => any::<f64>().prop_map(|f| json!(f)),
        ]
    }

    fn key_name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "version", "name", "runtime", "mounts", "command", "args", "env", "timeout",
                "user", "uid", "output", "maxBytes", "source", "target", "readOnly", "mode",
                "egress", "host", "ports", "memory", "cpus", "sign", "path", "sha256", "readonly",
                "$ref",
            ])
            .prop_map(str::to_owned),
            "[a-zA-Z]{1,8}",
        ]
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let index = any::<prop::sample::Index>;
        prop_oneof![
            4 => (index(), odd_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
            2 => (index(), key_name(), odd_value()).prop_map(|(i, k, v)| Mutation::AddKey(i, k, v)),
            2 => index().prop_map(Mutation::Remove),
            2 => (
                index(),
                prop::sample::select(vec![0usize, 255, 256, 257, 1023, 1024, 1025]),
                odd_value()
            )
                .prop_map(|(i, n, v)| Mutation::Lengthen(i, n, v)),
        ]
    }

    fn apply(doc: &mut Value, mutation: &Mutation) {
        let mut nodes = Vec::new();
        paths_of(doc, "", "", &mut nodes);
        let pick = |i: &prop::sample::Index| nodes[i.index(nodes.len())].1.clone();
        match mutation {
            Mutation::Replace(i, v) => {
                if let Some(node) = doc.pointer_mut(&pick(i)) {
                    *node = v.clone();
                }
            }
            Mutation::AddKey(i, k, v) => {
                if let Some(node) = doc.pointer_mut(&pick(i)) {
                    match node {
                        Value::Object(m) => {
                            m.insert(k.clone(), v.clone());
                        }
                        other => {
                            let mut m = serde_json::Map::new();
                            m.insert(k.clone(), v.clone());
                            *other = Value::Object(m);
                        }
                    }
                }
            }
            Mutation::Remove(i) => {
                let pointer = pick(i);
                if let Some((parent, last)) = pointer.rsplit_once('/')
                    && let Some(node) = doc.pointer_mut(parent)
                {
                    match node {
                        Value::Object(m) => {
                            m.remove(last);
                        }
                        Value::Array(a) => {
                            if let Ok(i) = last.parse::<usize>() {
                                a.remove(i);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Mutation::Lengthen(i, n, v) => {
                let lists: Vec<String> = nodes
                    .iter()
                    .filter(|(_, ptr)| doc.pointer(ptr).is_some_and(Value::is_array))
                    .map(|(_, ptr)| ptr.clone())
                    .collect();
                if lists.is_empty() {
                    return;
                }
                let pointer = lists[i.index(lists.len())].clone();
                if let Some(Value::Array(a)) = doc.pointer_mut(&pointer) {
                    let item = a.first().cloned().unwrap_or_else(|| v.clone());
                    *a = vec![item; *n];
                }
            }
        }
    }

    fn base() -> impl Strategy<Value = Value> {
        let mut everything_but_enums = everything();
        everything_but_enums["runtime"]["backend"] = json!("microvm");
        everything_but_enums["network"]["mode"] = json!("none");
        prop::sample::select(vec![
            everything(),
            everything_but_enums,
            json!({
                "version": 1,
                "name": "minimal",
                "runtime": {"command": "/bin/true", "args": []},
                "mounts": []
            }),
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn fast_accept_implies_schema_accept(
            mut doc in base(),
            mutations in prop::collection::vec(mutation(), 1..4),
        ) {
            for m in &mutations {
                apply(&mut doc, m);
            }
            if plainly_valid(&doc).is_some() {
                prop_assert!(schema_accepts(&doc), "fast path took {doc}");
            }
        }
    }
}
