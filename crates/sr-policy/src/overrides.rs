//! Policy overrides: values a caller gives for policy fields outside the policy file, for one
//! run (`safe-run run --backend microvm`). This module owns which fields may be overridden, how
//! an override is applied to the typed policy, and how a problem the override causes is told
//! apart from one the file has on its own.
//!
//! An override replaces a field of the typed [`PolicySpec`] after the schema has checked the
//! file as written and before the semantic rules run ([`crate::validate_with_overrides`]), so
//! every rule, backend-specific ones included, judges the policy exactly as if the file said
//! it. A value that comes in typed (a [`Backend`]) cannot fail the schema, so nothing the
//! schema checks is skipped. The policy's canonical form, and so its digest, stays the file's
//! as written: the overrides travel beside it (the validated policy, the bundle's
//! `policyOverrides`, the report's `policy.overrides`), so a verifier holding the file sees
//! both what it says and what the run changed.
//!
//! A rule that fails only because of an override names it: its message says which value came
//! from where, and one more problem at the overridden field's own path sums up what the
//! override broke. Nothing is ever silently downgraded: a policy that does not hold for the
//! overriding value is invalid for that run.

use sr_common::{Diagnostic, ErrorCode};

use crate::model::{Backend, PolicySpec};
use crate::source::{Node, PolicyPath};

/// The policy path `--backend` overrides, as diagnostics, bundles and reports name it.
pub const BACKEND_PATH: &str = "runtime.backend";

/// A caller's value for one policy field, and where the caller took it from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Override<T> {
    /// The value the field gets for this run.
    pub value: T,
    /// Where it came from, as the caller's user spells it (`--backend`): messages cite it.
    pub origin: &'static str,
}

/// Every override of one run. Empty means the policy runs as written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyOverrides {
    /// Replaces `runtime.backend`.
    pub backend: Option<Override<Backend>>,
}

impl PolicyOverrides {
    /// No override: the policy as written.
    pub fn none() -> Self {
        PolicyOverrides::default()
    }

    /// An override of `runtime.backend` with `value`, taken from `origin` (`--backend`).
    pub fn backend(value: Backend, origin: &'static str) -> Self {
        PolicyOverrides {
            backend: Some(Override { value, origin }),
        }
    }

    /// Whether there is no override.
    pub fn is_empty(&self) -> bool {
        self.backend.is_none()
    }

    /// `spec` with every override applied.
    pub fn applied_to(&self, mut spec: PolicySpec) -> PolicySpec {
        if let Some(backend) = self.backend {
            spec.runtime.backend = backend.value;
        }
        spec
    }

    /// Whether applying the overrides changes `written` (an override equal to what the file
    /// says changes nothing, so it cannot be the cause of a problem).
    pub fn change(&self, written: &PolicySpec) -> bool {
        self.backend
            .is_some_and(|b| b.value != written.runtime.backend)
    }

    /// The diagnostics of the rules run over the overridden policy (`overridden`), with those
    /// the written policy does not have (`as_written`) marked as the override's: each names
    /// the overriding value and its origin, and one more problem at the overridden path sums
    /// them up. Called only when [`PolicyOverrides::change`] holds.
    pub(crate) fn attribute(
        &self,
        written: &PolicySpec,
        overridden: Vec<Diagnostic>,
        as_written: &[Diagnostic],
        root: &Node,
    ) -> Vec<Diagnostic> {
        let Some(backend) = self.backend else {
            return overridden;
        };
        let given = format!("{} {}", backend.origin, backend.value.name());
        let mut caused_at: Vec<String> = Vec::new();
        let mut out: Vec<Diagnostic> = overridden
            .into_iter()
            .map(|mut d| {
                if !as_written.contains(&d) {
                    if !caused_at.contains(&d.path) {
                        caused_at.push(d.path.clone());
                    }
                    d.message = format!(
                        "{} ({BACKEND_PATH} is {} from `{given}`)",
                        d.message,
                        backend.value.name()
                    );
                    d.hint = format!("{}; or run without `{given}`", d.hint);
                }
                d
            })
            .collect();
        if caused_at.is_empty() {
            return out;
        }
        caused_at.sort();
        let written_name = written.runtime.backend.name();
        let path = PolicyPath::root().key("runtime").key("backend");
        let as_written_note = if root.get(&path).is_some() {
            format!("the policy says {written_name}")
        } else {
            format!("the policy leaves it at its default, {written_name}")
        };
        let hint = if as_written.is_empty() {
            format!(
                "the policy holds for its own backend ({written_name}): run without `{given}`, or change {} to suit {}",
                caused_at.join(", "),
                backend.value.name()
            )
        } else {
            format!(
                "give another backend, or change {} to suit {}",
                caused_at.join(", "),
                backend.value.name()
            )
        };
        out.push(
            Diagnostic::new(
                ErrorCode::PolicySemanticConflict,
                BACKEND_PATH,
                format!(
                    "`{given}` replaces {BACKEND_PATH} ({as_written_note}), and the policy does not hold for {}: see {}",
                    backend.value.name(),
                    caused_at.join(", ")
                ),
                hint,
            )
            .at(Some(root.locate(&path))),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SourceFormat;

    const SANDBOX_WITH_MOUNT: &str = "\
version: 1
name: t
runtime: { command: /bin/true, args: [] }
mounts: [{ source: /srv, target: /data }]
";

    fn spec(text: &str) -> PolicySpec {
        let parsed = crate::source::parse(text, SourceFormat::Yaml);
        serde_json::from_value(parsed.root.unwrap().to_json()).unwrap()
    }

    #[test]
    fn an_override_replaces_the_field_and_nothing_else() {
        let written = spec(SANDBOX_WITH_MOUNT);
        let o = PolicyOverrides::backend(Backend::Microvm, "--backend");
        let effective = o.applied_to(written.clone());
        assert_eq!(effective.runtime.backend, Backend::Microvm);
        let mut back = effective.clone();
        back.runtime.backend = written.runtime.backend;
        assert_eq!(back, written);
        assert!(o.change(&written));
        assert!(!PolicyOverrides::backend(Backend::Sandbox, "--backend").change(&written));
        assert!(!PolicyOverrides::none().change(&written));
        assert_eq!(PolicyOverrides::none().applied_to(written.clone()), written);
    }

    #[test]
    fn only_problems_the_written_policy_lacks_are_the_overrides() {
        let text = SANDBOX_WITH_MOUNT;
        let root = crate::source::parse(text, SourceFormat::Yaml).root.unwrap();
        let o = PolicyOverrides::backend(Backend::Firecracker, "--backend");
        let shared = Diagnostic::new(ErrorCode::PolicyBadFormat, "name", "shared", "fix it");
        let caused = Diagnostic::new(ErrorCode::PolicySemanticConflict, "mounts", "C8", "no");
        let out = o.attribute(
            &spec(text),
            vec![shared.clone(), caused],
            std::slice::from_ref(&shared),
            &root,
        );
        assert_eq!(out[0], shared, "a problem of the file itself is left alone");
        assert_eq!(
            out[1].message,
            "C8 (runtime.backend is firecracker from `--backend firecracker`)"
        );
        assert!(
            out[1]
                .hint
                .ends_with("or run without `--backend firecracker`")
        );
        let summary = &out[2];
        assert_eq!(summary.path, BACKEND_PATH);
        assert_eq!(summary.code, ErrorCode::PolicySemanticConflict);
        assert!(
            summary
                .message
                .contains("the policy leaves it at its default, sandbox"),
            "{summary}"
        );
        assert!(summary.message.ends_with("see mounts"), "{summary}");
        // The file writes no runtime.backend: the summary points at `runtime`.
        assert_eq!(summary.location.map(|l| l.line), Some(3));
        assert!(
            summary.hint.starts_with("give another backend"),
            "{summary}"
        );
    }

    #[test]
    fn nothing_is_marked_when_the_override_breaks_nothing() {
        let text = SANDBOX_WITH_MOUNT;
        let root = crate::source::parse(text, SourceFormat::Yaml).root.unwrap();
        let o = PolicyOverrides::backend(Backend::Microvm, "--backend");
        let shared = Diagnostic::new(ErrorCode::PolicyBadFormat, "name", "shared", "fix it");
        let out = o.attribute(
            &spec(text),
            vec![shared.clone()],
            std::slice::from_ref(&shared),
            &root,
        );
        assert_eq!(out, vec![shared]);
    }
}
