//! The tools' logic and catalogue without a sandbox (no root): arguments, errors and their
//! SR codes, output caps and cursors, file parts, the listed schemas and annotations.

use serde_json::{Value, json};

use super::catalog;
use super::tools::{self, OUTPUT_CAP};
use crate::sandboxes::Daemon;
use crate::streams::Sent;

fn daemon() -> Daemon {
    Daemon::new(crate::Host {
        config: sr_policy::OperatorConfig::default(),
        layout: sr_runner::cgroup::Layout::V2 {
            root: "/nonexistent".into(),
        },
        init_exe: "/nonexistent".into(),
        signer: None,
    })
}

fn err(d: &Daemon, tool: &str, args: Value) -> super::shapes::ToolError {
    match tools::call(d, tool, args) {
        Some(Err(e)) => e,
        other => panic!("{tool}: expected a tool error, got {other:?}"),
    }
}

#[test]
fn the_catalogue_lists_nine_tools_with_object_schemas_and_annotations() {
    let tools = catalog::tools();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, catalog::NAMES);
    for t in &tools {
        assert_eq!(
            t.input_schema.get("type"),
            Some(&json!("object")),
            "{}",
            t.name
        );
        let out = t
            .output_schema
            .as_ref()
            .unwrap_or_else(|| panic!("{}", t.name));
        assert_eq!(out.get("type"), Some(&json!("object")), "{}", t.name);
        let a = t
            .annotations
            .as_ref()
            .unwrap_or_else(|| panic!("{}", t.name));
        assert!(
            a.read_only_hint.is_some() && a.title.is_some(),
            "{}",
            t.name
        );
    }
    let hint = |name: &str| {
        let a = tools
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.annotations.clone());
        a.map(|a| (a.read_only_hint, a.destructive_hint))
    };
    for read in [
        "sandbox_exec_output",
        "sandbox_read_file",
        "sandbox_list_files",
        "sandbox_report",
    ] {
        assert_eq!(hint(read), Some((Some(true), Some(false))), "{read}");
    }
    for destroys in ["sandbox_kill", "sandbox_write_file", "sandbox_exec"] {
        assert_eq!(
            hint(destroys),
            Some((Some(false), Some(true))),
            "{destroys}"
        );
    }
    // The input schema says what is required: an exec needs argv, a kill its id.
    let exec = tools
        .iter()
        .find(|t| t.name == "sandbox_exec")
        .map(|t| t.input_schema.clone());
    let required = exec.as_ref().and_then(|s| s.get("required")).cloned();
    assert_eq!(required, Some(json!(["argv"])));
}

#[test]
fn unknown_tools_are_none_and_unknown_sandboxes_a_tool_error_with_an_sr_code() {
    let d = daemon();
    assert!(tools::call(&d, "sandbox_nope", json!({})).is_none());
    for (tool, args) in [
        ("sandbox_exec", json!({"id": "nope", "argv": ["/bin/true"]})),
        (
            "sandbox_exec_start",
            json!({"id": "nope", "argv": ["/bin/true"]}),
        ),
        ("sandbox_exec_output", json!({"id": "nope", "execId": 1})),
        ("sandbox_read_file", json!({"id": "nope", "path": "/tmp/x"})),
        (
            "sandbox_write_file",
            json!({"id": "nope", "path": "/tmp/x", "text": ""}),
        ),
        ("sandbox_list_files", json!({"id": "nope", "path": "/tmp"})),
        ("sandbox_kill", json!({"id": "nope"})),
        ("sandbox_report", json!({"id": "nope"})),
    ] {
        let e = err(&d, tool, args);
        assert_eq!(
            (e.code.as_str(), e.path.as_str()),
            ("SR-SRV-003", "id"),
            "{tool}: {e:?}"
        );
        assert!(e.message.contains("nope") && !e.hint.is_empty(), "{e:?}");
    }
}

#[test]
fn bad_arguments_are_illegal_requests_and_bad_policies_keep_their_codes() {
    let d = daemon();
    for (tool, args) in [
        ("sandbox_exec", json!({"id": "x"})),
        ("sandbox_kill", json!({"id": "x", "extra": 1})),
        ("sandbox_kill", json!({"id": 7})),
        ("sandbox_create", json!({})),
        ("sandbox_create", json!({"policy": "a", "template": "b"})),
        ("sandbox_exec", json!({"argv": ["/bin/true"]})),
        (
            "sandbox_exec",
            json!({"id": "x", "argv": ["/bin/true"], "policy": "p"}),
        ),
        ("sandbox_write_file", json!({"id": "x", "path": "/p"})),
        (
            "sandbox_write_file",
            json!({"id": "x", "path": "/p", "base64": "!!"}),
        ),
        (
            "sandbox_write_file",
            json!({"id": "x", "path": "/p", "text": "", "mode": "9"}),
        ),
    ] {
        let e = err(&d, tool, args.clone());
        assert_eq!(e.code, "SR-CMP-002", "{tool} {args}: {e:?}");
    }
    // With no id, no policy, no template: the hint says what to give.
    let e = err(&d, "sandbox_exec", json!({"argv": ["/bin/true"]}));
    assert!(e.message.contains("\"default\""), "{e:?}");
    let e = err(&d, "sandbox_create", json!({"policy": "version: 1"}));
    assert!(e.code.starts_with("SR-POL-"), "{e:?}");
    let e = err(
        &d,
        "sandbox_exec",
        json!({"argv": ["/bin/true"], "template": "nope"}),
    );
    assert_eq!(e.code, "SR-POL-004", "{e:?}");
}

#[test]
fn errors_become_tool_error_results_with_the_code_in_text_and_structure() {
    let d = daemon();
    let r = super::result(tools::call(&d, "sandbox_kill", json!({"id": "gone"})).unwrap());
    assert_eq!(r.is_error, Some(true));
    let s = r.structured_content.unwrap();
    assert_eq!(s["error"]["code"], "SR-SRV-003", "{s}");
    let text = r.content[0]
        .as_text()
        .map(|t| t.text.clone())
        .unwrap_or_default();
    assert!(text.starts_with("SR-SRV-003 at id: no sandbox"), "{text}");
    let ok = super::result(Ok(json!({"a": 1})));
    assert_eq!(
        (ok.is_error, ok.structured_content),
        (Some(false), Some(json!({"a": 1})))
    );
}

fn out(text: &str) -> Sent {
    Sent::Stdout {
        bytes: text.as_bytes().to_vec(),
    }
}

#[test]
fn output_by_cursor_resumes_after_it_caps_each_answer_and_ends_with_the_exit() {
    let exit = Sent::Exit {
        status: "exited",
        exit_code: Some(3),
        signal: None,
        error: None,
        duration_ms: 5,
    };
    let a = tools::collect(
        None,
        vec![
            (3, out("hi\n")),
            (
                5,
                Sent::Stderr {
                    bytes: b"e\n".to_vec(),
                },
            ),
        ],
    );
    assert_eq!(
        (a.stdout.as_str(), a.stderr.as_str(), a.cursor),
        ("hi\n", "e\n", 5)
    );
    assert!(!a.exited && !a.more && !a.truncated && a.status.is_none());
    let b = tools::collect(
        Some(5),
        vec![(5, Sent::Cut { stream: "stdout" }), (5, exit)],
    );
    assert!(b.exited && b.truncated, "{b:?}");
    assert_eq!(
        (b.exit_code, b.status.as_deref(), b.cursor),
        (Some(3), Some("exited"), 5)
    );
    // No news: the cursor stays.
    assert_eq!(tools::collect(Some(9), vec![]).cursor, 9);

    // More than one answer holds: the rest waits for the next call.
    let big = "x".repeat(OUTPUT_CAP - 10);
    let c = tools::collect(
        None,
        vec![
            (100, out(&big)),
            (200, out(&"y".repeat(20))),
            (210, out("z")),
        ],
    );
    assert!(c.more && !c.truncated, "{}", c.cursor);
    assert_eq!((c.stdout.len(), c.cursor), (big.len(), 100));
    // One chunk larger than an answer: its head, flagged, and the cursor past it.
    let huge = "é".repeat(OUTPUT_CAP);
    let d = tools::collect(Some(1), vec![(7, out(&huge)), (8, out("next"))]);
    assert!(d.truncated && d.more && d.stdout.len() <= OUTPUT_CAP && d.cursor == 7);
}

#[test]
fn caps_cut_on_character_boundaries() {
    assert_eq!(tools::cap("abc".into(), 3), ("abc".into(), false));
    assert_eq!(tools::cap("aé".into(), 2), ("a".into(), true));
}

#[test]
fn file_parts_are_text_or_base64_and_say_where_they_end() {
    let p =
        |bytes: &[u8], off, len| tools::file_part("/f".into(), bytes, off, len, "sha256:x".into());
    let whole = p(b"hello", 0, 64);
    assert_eq!(
        (whole.text.as_deref(), whole.truncated, whole.size),
        (Some("hello"), false, 5)
    );
    let part = p(b"hello", 1, 2);
    assert_eq!(
        (part.text.as_deref(), part.offset, part.truncated),
        (Some("el"), 1, true)
    );
    // A character cut by the part's end goes to the next part.
    let cut = p("aé".as_bytes(), 0, 2);
    assert_eq!((cut.text.as_deref(), cut.truncated), (Some("a"), true));
    let bin = p(b"\x00\xff", 0, 64);
    assert_eq!((bin.text, bin.base64.as_deref()), (None, Some("AP8=")));
    let past = p(b"abc", 10, 64);
    assert_eq!(
        (past.text.as_deref(), past.offset, past.truncated),
        (Some(""), 3, false)
    );
}

#[test]
fn modes_are_octal() {
    assert_eq!(tools::parse_mode(None).ok(), Some(0o644));
    assert_eq!(tools::parse_mode(Some("0755")).ok(), Some(0o755));
    assert_eq!(tools::parse_mode(Some("0o600")).ok(), Some(0o600));
    assert!(tools::parse_mode(Some("8")).is_err());
    assert!(tools::parse_mode(Some("17777")).is_err());
}
