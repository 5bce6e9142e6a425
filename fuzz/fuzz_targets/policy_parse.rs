//! Fuzz target: arbitrary bytes through the whole policy pipeline (read, schema, rules, and,
//! when a policy validates, compile). Malformed input must produce diagnostics, never a panic,
//! a hang or unbounded memory.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sr_policy::{OperatorConfig, SourceFormat, validate_str};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = OperatorConfig::default();
    for format in [SourceFormat::Yaml, SourceFormat::Json] {
        match validate_str(text, format, Path::new("/tmp"), &config) {
            Ok(policy) => {
                // A valid policy must compile, or fail with a diagnostic.
                if let Ok(bundle) = sr_compiler::compile(&policy, &config) {
                    let _ = sr_compiler::to_canonical_json(&bundle);
                }
            }
            Err(report) => assert!(
                !report.diagnostics.is_empty(),
                "invalid without a diagnostic"
            ),
        }
    }
    // The operator config goes through the same reader.
    let _ = OperatorConfig::from_text(text, SourceFormat::Yaml);
});
