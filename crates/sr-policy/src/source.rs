//! Reading a policy (or operator config) document into a tree of located values.
//!
//! This module owns the first, format-level step of validation: bytes in, a [`Node`] tree out,
//! where every value and every mapping key remembers its line and column. Later steps
//! (structure, semantics) report problems by policy path; the tree turns a path back into a
//! location.
//!
//! Why an event parser and not `serde_yaml`-style deserialization: deserializing stops at the
//! first problem and forgets where values came from. Walking the YAML event stream of
//! `saphyr-parser` lets us keep positions, report every duplicate key (serde maps silently keep
//! the last one), and refuse what a policy never needs and an attacker could abuse:
//!
//! * inputs over [`MAX_INPUT_BYTES`] and nesting deeper than [`MAX_DEPTH`];
//! * anchors and aliases (no alias bombs: each value is written out once);
//! * tags (`!!binary`, custom tags) and multiple documents.
//!
//! JSON is a subset of YAML 1.2, so a `.json` file goes through the same event parser after
//! `serde_json` has confirmed it is strict JSON (so that YAML-only syntax in a `.json` file is
//! reported, with serde_json's line and column).
//!
//! Plain scalars are typed with the YAML 1.2 core schema (`true`, `null`, `12`, `0x1f`, `1.5`);
//! YAML 1.1 spellings such as `yes`/`on` stay strings, so a schema type error points them out.

use std::borrow::Cow;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};
use serde_json::{Map, Number, Value};
use sr_common::{Diagnostic, ErrorCode, Location};

/// Largest accepted document, in bytes (1 MiB). Real policies are a few KiB.
pub const MAX_INPUT_BYTES: usize = 1 << 20;
/// Deepest accepted nesting of mappings and sequences. PolicySpec v1 needs 5.
pub const MAX_DEPTH: usize = 64;

/// The syntax a document is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// YAML 1.2 (also accepts JSON, which is a subset).
    Yaml,
    /// Strict JSON.
    Json,
}

impl SourceFormat {
    /// `Json` for a `.json` file name, else `Yaml`.
    pub fn from_path(path: &std::path::Path) -> SourceFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => SourceFormat::Json,
            _ => SourceFormat::Yaml,
        }
    }
}

/// One step of a policy path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A path into the document, rendered as `network.egress[1].ports[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyPath(pub Vec<Seg>);

/// How the whole document is named in diagnostics (the path of the root).
pub const ROOT_PATH: &str = "$";

impl PolicyPath {
    /// The root.
    pub fn root() -> Self {
        PolicyPath(Vec::new())
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        PolicyPath(segs)
    }

    /// This path extended by an index.
    pub fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        PolicyPath(segs)
    }

    /// The parent path (the root is its own parent).
    pub fn parent(&self) -> Self {
        let mut segs = self.0.clone();
        segs.pop();
        PolicyPath(segs)
    }

    /// Whether `self` equals `other` or lies beneath it.
    pub fn starts_with(&self, other: &PolicyPath) -> bool {
        self.0.starts_with(&other.0)
    }
}

impl fmt::Display for PolicyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(ROOT_PATH);
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) if is_plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                // Keys that would make the path ambiguous (env names with dots, empty keys)
                // are written as quoted subscripts.
                Seg::Key(k) => write!(f, "[{}]", Value::String(k.clone()))?,
            }
        }
        Ok(())
    }
}

fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A value with the location it was written at.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the value starts.
    pub loc: Location,
    /// The value.
    pub kind: NodeKind,
}

/// The value of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// `null`, `~` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer (negative numbers included, so that "must be positive" errors are precise).
    Int(i128),
    /// A finite float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping with string keys, in document order, without duplicates.
    Map(Mapping),
}

/// The entries of a mapping, with an index by key (lookups stay cheap even for a mapping with
/// many thousands of keys, which a hostile document may have).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mapping {
    entries: Vec<Entry>,
    index: std::collections::HashMap<String, usize>,
}

impl Mapping {
    /// The entry for `key`.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.index.get(key).and_then(|i| self.entries.get(*i))
    }

    /// The entries in document order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Adds an entry unless the key exists; returns the existing entry's key location then.
    fn insert(&mut self, entry: Entry) -> Result<(), Location> {
        if let Some(existing) = self.get(&entry.key) {
            return Err(existing.key_loc);
        }
        self.index.insert(entry.key.clone(), self.entries.len());
        self.entries.push(entry);
        Ok(())
    }

    fn contains(&self, key: &str) -> Option<Location> {
        self.get(key).map(|e| e.key_loc)
    }
}

/// One mapping entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// Where the key is written.
    pub key_loc: Location,
    /// The value.
    pub value: Node,
}

impl Node {
    /// The node at `path`, if any.
    pub fn get(&self, path: &PolicyPath) -> Option<&Node> {
        let mut node = self;
        for seg in &path.0 {
            node = match (seg, &node.kind) {
                (Seg::Key(k), NodeKind::Map(map)) => &map.get(k)?.value,
                (Seg::Index(i), NodeKind::Seq(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The location of the value at `path`, or of its nearest existing ancestor (a missing
    /// field is reported where its parent is).
    pub fn locate(&self, path: &PolicyPath) -> Location {
        let mut p = path.clone();
        loop {
            if let Some(node) = self.get(&p) {
                return node.loc;
            }
            if p.0.is_empty() {
                return self.loc;
            }
            p.0.pop();
        }
    }

    /// The location of the key that ends `path` (for "unknown field" errors), falling back to
    /// [`Node::locate`].
    pub fn locate_key(&self, path: &PolicyPath) -> Location {
        if let Some(Seg::Key(k)) = path.0.last()
            && let Some(Node {
                kind: NodeKind::Map(map),
                ..
            }) = self.get(&path.parent())
            && let Some(e) = map.get(k)
        {
            return e.key_loc;
        }
        self.locate(path)
    }

    /// Converts to a JSON value (the form the schema and serde see).
    pub fn to_json(&self) -> Value {
        match &self.kind {
            NodeKind::Null => Value::Null,
            NodeKind::Bool(b) => Value::Bool(*b),
            NodeKind::Int(i) => {
                if let Ok(v) = i64::try_from(*i) {
                    Value::Number(v.into())
                } else if let Ok(v) = u64::try_from(*i) {
                    Value::Number(v.into())
                } else {
                    // Out of range for every integer type the model uses; keep it a number
                    // so the schema reports a range error rather than a type error.
                    Number::from_f64(*i as f64).map_or(Value::Null, Value::Number)
                }
            }
            NodeKind::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            NodeKind::Str(s) => Value::String(s.clone()),
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(mapping) => {
                let mut map = Map::new();
                for e in mapping.entries() {
                    map.insert(e.key.clone(), e.value.to_json());
                }
                Value::Object(map)
            }
        }
    }
}

/// The result of reading a document: the tree (when the syntax allowed one) and every problem
/// found on the way.
#[derive(Debug)]
pub struct Parsed {
    /// The document's root, when one could be built.
    pub root: Option<Node>,
    /// Format-level problems (syntax, duplicate keys, limits), all SR-POL-002.
    pub diagnostics: Vec<Diagnostic>,
}

fn loc_of(span: &Span) -> Location {
    marker_loc(span.start.line(), span.start.col())
}

fn marker_loc(line: usize, col: usize) -> Location {
    Location {
        line: u32::try_from(line.max(1)).unwrap_or(u32::MAX),
        column: u32::try_from(col.saturating_add(1)).unwrap_or(u32::MAX),
    }
}

fn bad(
    path: &PolicyPath,
    loc: Location,
    message: impl Into<String>,
    hint: impl Into<String>,
) -> Diagnostic {
    Diagnostic::new(ErrorCode::PolicyBadFormat, path.to_string(), message, hint).at(Some(loc))
}

/// Reads `text` as `format`. Never panics; every problem becomes an SR-POL-002 diagnostic.
pub fn parse(text: &str, format: SourceFormat) -> Parsed {
    let root_loc = Location { line: 1, column: 1 };
    if text.len() > MAX_INPUT_BYTES {
        return Parsed {
            root: None,
            diagnostics: vec![bad(
                &PolicyPath::root(),
                root_loc,
                format!(
                    "document is {} bytes; the limit is {MAX_INPUT_BYTES} bytes (1 MiB)",
                    text.len()
                ),
                "a policy is a few KiB: remove generated or embedded data",
            )],
        };
    }
    if format == SourceFormat::Json
        && let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text)
    {
        let loc = marker_loc(e.line(), e.column().saturating_sub(1));
        let msg = e.to_string();
        // serde_json appends " at line X column Y"; the location carries that already.
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
        let hint = if e.is_eof() {
            "the document ends early: close every { and ["
        } else {
            "a .json policy must be strict JSON (double-quoted keys, no comments, no trailing commas); rename it to .yaml for YAML syntax"
        };
        return Parsed {
            root: None,
            diagnostics: vec![bad(
                &PolicyPath::root(),
                loc,
                format!("invalid JSON: {msg}"),
                hint,
            )],
        };
    }
    let mut builder = Builder {
        diagnostics: Vec::new(),
        stack: Vec::new(),
        root: None,
        docs: 0,
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        match next {
            Ok((event, span)) => match builder.on_event(event, span) {
                Flow::Continue => {}
                Flow::Stop => break,
            },
            Err(e) => {
                builder.syntax_error(&e);
                break;
            }
        }
    }
    let mut diagnostics = builder.diagnostics;
    let root = builder.root;
    if root.is_none() && diagnostics.is_empty() {
        diagnostics.push(bad(
            &PolicyPath::root(),
            root_loc,
            "the document is empty",
            "start from tests/policy_valid_cases/minimal.yaml or see docs/policy.md",
        ));
    }
    Parsed { root, diagnostics }
}

enum Flow {
    Continue,
    Stop,
}

/// A mapping or sequence under construction.
enum Frame {
    Seq {
        loc: Location,
        items: Vec<Node>,
        path: PolicyPath,
    },
    Map {
        loc: Location,
        entries: Mapping,
        path: PolicyPath,
        pending_key: Option<(String, Location)>,
        skip_value: bool,
    },
}

struct Builder {
    diagnostics: Vec<Diagnostic>,
    stack: Vec<Frame>,
    root: Option<Node>,
    docs: usize,
}

impl Builder {
    fn syntax_error(&mut self, e: &ScanError) {
        let loc = marker_loc(e.marker().line(), e.marker().col());
        self.diagnostics.push(bad(
            &self.current_path(),
            loc,
            format!("invalid YAML: {}", e.info()),
            "check indentation (spaces only), quoting and that every [ and { is closed",
        ));
    }

    /// Path of the value about to be added.
    fn current_path(&self) -> PolicyPath {
        match self.stack.last() {
            None => PolicyPath::root(),
            Some(Frame::Seq { items, path, .. }) => path.index(items.len()),
            Some(Frame::Map {
                path,
                pending_key: Some((k, _)),
                ..
            }) => path.key(k),
            Some(Frame::Map { path, .. }) => path.clone(),
        }
    }

    fn on_event(&mut self, event: Event<'_>, span: Span) -> Flow {
        let loc = loc_of(&span);
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {
                Flow::Continue
            }
            Event::DocumentStart(_) => {
                self.docs += 1;
                if self.docs > 1 {
                    self.diagnostics.push(bad(
                        &PolicyPath::root(),
                        loc,
                        "the file holds more than one YAML document",
                        "keep one policy per file; remove the second `---` document",
                    ));
                    return Flow::Stop;
                }
                Flow::Continue
            }
            Event::Alias(_) => {
                self.diagnostics.push(bad(
                    &self.current_path(),
                    loc,
                    "YAML aliases (*name) are not allowed in a policy",
                    "write the value out in full; anchors and aliases are refused so that a policy means what it shows",
                ));
                Flow::Stop
            }
            Event::Scalar(value, style, anchor, tag) => {
                if let Some(flow) =
                    self.refuse_anchor_or_tag(anchor, tag.as_deref().map(|t| t.to_string()), loc)
                {
                    return flow;
                }
                let kind = scalar_kind(&value, style);
                self.add_scalar(value, kind, loc)
            }
            Event::SequenceStart(anchor, tag) => {
                if let Some(flow) =
                    self.refuse_anchor_or_tag(anchor, tag.as_deref().map(|t| t.to_string()), loc)
                {
                    return flow;
                }
                self.open(loc, false)
            }
            Event::MappingStart(anchor, tag) => {
                if let Some(flow) =
                    self.refuse_anchor_or_tag(anchor, tag.as_deref().map(|t| t.to_string()), loc)
                {
                    return flow;
                }
                self.open(loc, true)
            }
            Event::SequenceEnd | Event::MappingEnd => self.close(),
        }
    }

    fn refuse_anchor_or_tag(
        &mut self,
        anchor: usize,
        tag: Option<String>,
        loc: Location,
    ) -> Option<Flow> {
        if anchor != 0 {
            self.diagnostics.push(bad(
                &self.current_path(),
                loc,
                "YAML anchors (&name) are not allowed in a policy",
                "write the value out in full and remove the anchor",
            ));
            return Some(Flow::Stop);
        }
        if let Some(tag) = tag {
            self.diagnostics.push(bad(
                &self.current_path(),
                loc,
                format!("YAML tag `{}` is not allowed in a policy", clip(&tag)),
                "remove the tag; quote the value if it must be a string",
            ));
            return Some(Flow::Stop);
        }
        None
    }

    fn open(&mut self, loc: Location, map: bool) -> Flow {
        let path = self.current_path();
        if self.key_expected() {
            self.diagnostics.push(bad(
                &path,
                loc,
                "a mapping key must be a plain string",
                "use a simple `name: value` key",
            ));
            return Flow::Stop;
        }
        if self.stack.len() >= MAX_DEPTH {
            self.diagnostics.push(bad(
                &path,
                loc,
                format!("nesting is deeper than {MAX_DEPTH} levels"),
                "a policy nests at most a few levels; flatten the document",
            ));
            return Flow::Stop;
        }
        self.stack.push(if map {
            Frame::Map {
                loc,
                entries: Mapping::default(),
                path,
                pending_key: None,
                skip_value: false,
            }
        } else {
            Frame::Seq {
                loc,
                items: Vec::new(),
                path,
            }
        });
        Flow::Continue
    }

    fn key_expected(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame::Map {
                pending_key: None,
                skip_value: false,
                ..
            })
        )
    }

    fn close(&mut self) -> Flow {
        let Some(frame) = self.stack.pop() else {
            return Flow::Continue;
        };
        let node = match frame {
            Frame::Seq { loc, items, .. } => Node {
                loc,
                kind: NodeKind::Seq(items),
            },
            Frame::Map { loc, entries, .. } => Node {
                loc,
                kind: NodeKind::Map(entries),
            },
        };
        self.add_node(node)
    }

    fn add_scalar(&mut self, raw: Cow<'_, str>, kind: NodeKind, loc: Location) -> Flow {
        if let Some(Frame::Map {
            pending_key,
            skip_value: false,
            entries,
            path,
            ..
        }) = self.stack.last_mut()
            && pending_key.is_none()
        {
            // This scalar is a key.
            let key = raw.into_owned();
            if let Some(first) = entries.contains(&key) {
                let first_line = first.line;
                let dup_path = path.key(&key);
                self.diagnostics.push(bad(
                    &dup_path,
                    loc,
                    format!(
                        "duplicate key `{}` (first written on line {first_line})",
                        clip(&key)
                    ),
                    "write each key once; YAML and JSON readers disagree on which copy wins",
                ));
                if let Some(Frame::Map { skip_value, .. }) = self.stack.last_mut() {
                    *skip_value = true;
                }
                return Flow::Continue;
            }
            if let Some(Frame::Map { pending_key, .. }) = self.stack.last_mut() {
                *pending_key = Some((key, loc));
            }
            return Flow::Continue;
        }
        if let NodeKind::Float(f) = kind
            && !f.is_finite()
        {
            self.diagnostics.push(bad(
                &self.current_path(),
                loc,
                "infinite and NaN numbers are not allowed",
                "write a finite number",
            ));
            return self.add_node(Node {
                loc,
                kind: NodeKind::Null,
            });
        }
        self.add_node(Node { loc, kind })
    }

    fn add_node(&mut self, node: Node) -> Flow {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Flow::Continue
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Flow::Continue
            }
            Some(Frame::Map { skip_value, .. }) if *skip_value => {
                // The value of a duplicate key: dropped, the key was reported.
                *skip_value = false;
                Flow::Continue
            }
            Some(Frame::Map {
                pending_key,
                entries,
                ..
            }) => {
                if let Some((key, key_loc)) = pending_key.take() {
                    // Duplicates were refused when the key was read, so this cannot fail.
                    let _ = entries.insert(Entry {
                        key,
                        key_loc,
                        value: node,
                    });
                    Flow::Continue
                } else {
                    // A collection used as a key is caught in `open`; unreachable otherwise.
                    Flow::Stop
                }
            }
        }
    }
}

/// `s` cut to 64 characters (with an ellipsis), so a hostile value cannot flood a message.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

/// Types a scalar with the YAML 1.2 core schema. Quoted and block scalars are strings.
fn scalar_kind(value: &str, style: ScalarStyle) -> NodeKind {
    if style != ScalarStyle::Plain {
        return NodeKind::Str(value.to_owned());
    }
    match value {
        "" | "~" | "null" | "Null" | "NULL" => return NodeKind::Null,
        "true" | "True" | "TRUE" => return NodeKind::Bool(true),
        "false" | "False" | "FALSE" => return NodeKind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return NodeKind::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return NodeKind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return NodeKind::Float(f64::NAN),
        _ => {}
    }
    if let Some(i) = parse_int(value) {
        return NodeKind::Int(i);
    }
    if is_core_float(value)
        && let Ok(f) = value.parse::<f64>()
    {
        return NodeKind::Float(f);
    }
    NodeKind::Str(value.to_owned())
}

fn parse_int(value: &str) -> Option<i128> {
    let (neg, digits) = match value.as_bytes().first()? {
        b'-' => (true, &value[1..]),
        b'+' => (false, &value[1..]),
        _ => (false, value),
    };
    let parsed = if let Some(hex) = digits.strip_prefix("0x") {
        if neg || value.starts_with('+') || hex.is_empty() {
            return None;
        }
        i128::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        if neg || value.starts_with('+') || oct.is_empty() {
            return None;
        }
        i128::from_str_radix(oct, 8).ok()?
    } else {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // More digits than i128 holds: saturate; the range check rejects it later.
        digits.parse::<i128>().unwrap_or(i128::MAX)
    };
    Some(if neg { -parsed } else { parsed })
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, the core schema's float.
fn is_core_float(v: &str) -> bool {
    let b = v.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'-' | b'+')) {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = i - s;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        let p = parse(text, SourceFormat::Yaml);
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        p.root.unwrap()
    }

    #[test]
    fn types_scalars_with_the_core_schema() {
        let n = root("a: 1\nb: -2\nc: 1.5\nd: true\ne: yes\nf: '1'\ng: ~\nh: 0x10\n");
        let j = n.to_json();
        assert_eq!(
            j,
            serde_json::json!({"a":1,"b":-2,"c":1.5,"d":true,"e":"yes","f":"1","g":null,"h":16})
        );
    }

    #[test]
    fn locates_values_and_keys() {
        let n = root("a:\n  b: [1, 2]\n");
        let p = PolicyPath::root().key("a").key("b").index(1);
        assert_eq!(
            n.locate(&p),
            Location {
                line: 2,
                column: 10
            }
        );
        assert_eq!(
            n.locate_key(&PolicyPath::root().key("a").key("b")),
            Location { line: 2, column: 3 }
        );
        assert_eq!(p.to_string(), "a.b[1]");
        assert_eq!(
            PolicyPath::root().key("env").key("A.B").to_string(),
            "env[\"A.B\"]"
        );
    }

    #[test]
    fn reports_every_duplicate_key() {
        let p = parse("a: 1\na: 2\nb: {c: 1, c: 2}\n", SourceFormat::Yaml);
        let paths: Vec<_> = p.diagnostics.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["a", "b.c"]);
        assert_eq!(
            p.diagnostics[0].location,
            Some(Location { line: 2, column: 1 })
        );
    }

    #[test]
    fn json_duplicate_keys_are_reported() {
        let p = parse("{\"a\": 1, \"a\": 2}", SourceFormat::Json);
        assert_eq!(p.diagnostics.len(), 1);
        assert_eq!(p.diagnostics[0].path, "a");
    }

    #[test]
    fn refuses_aliases_tags_depth_and_size() {
        for text in [
            "a: &x 1\nb: *x\n",
            "a: !!binary aGk=\n",
            "---\na: 1\n---\nb: 2\n",
        ] {
            assert_eq!(
                parse(text, SourceFormat::Yaml).diagnostics.len(),
                1,
                "{text}"
            );
        }
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(
            parse(&deep, SourceFormat::Yaml).diagnostics[0]
                .message
                .contains("deeper")
        );
        let big = "a".repeat(MAX_INPUT_BYTES + 1);
        assert!(
            parse(&big, SourceFormat::Yaml).diagnostics[0]
                .message
                .contains("limit")
        );
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| Value::Number(i.into())),
            (-1.0e12f64..1.0e12)
                .prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
            proptest::collection::vec(any::<char>(), 0..12)
                .prop_map(|c| Value::String(c.into_iter().collect())),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map(
                    proptest::collection::vec(any::<char>(), 0..8).prop_map(String::from_iter),
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// JSON read through the YAML event parser gives back exactly what serde_json wrote,
        /// compact or pretty.
        #[test]
        fn json_documents_round_trip(value in json_value()) {
            for text in [value.to_string(), serde_json::to_string_pretty(&value).unwrap()] {
                let parsed = parse(&text, SourceFormat::Json);
                proptest::prop_assert!(parsed.diagnostics.is_empty(), "{text}: {:?}", parsed.diagnostics);
                let back = parsed.root.unwrap().to_json();
                // Floats may print as integers (1.0 -> 1); compare numerically.
                proptest::prop_assert!(same(&back, &value), "{text}\n{back}");
            }
        }
    }

    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            _ => a == b,
        }
    }

    #[test]
    fn json_strings_with_unusual_characters() {
        for s in [
            "x\u{85}y",
            "\u{feff}a",
            "a\u{2028}b",
            "tab\there",
            "cr\rlf",
            "nul\u{0}",
            "é",
            "\\",
        ] {
            let value = Value::String(s.to_owned());
            let text = serde_json::json!({ "k": value }).to_string();
            let parsed = parse(&text, SourceFormat::Json);
            assert!(
                parsed.diagnostics.is_empty(),
                "{text:?}: {:?}",
                parsed.diagnostics
            );
            assert_eq!(parsed.root.unwrap().to_json()["k"], value, "{text:?}");
        }
    }
}
