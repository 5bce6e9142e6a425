//! `log consistency OLD NEW`: the log only grew between two checkpoints, or the inconsistency.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use sr_common::{Diagnostic, ErrorCode};
use sr_evidence::verify::Status;

use super::{
    ArchiveLocation, Format, fail, print_out, read_checkpoint, read_json, read_key, render_checks,
};
use crate::ArchiveError;
use crate::proof::ConsistencyProof;

/// Arguments of `log consistency`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  safe-run log consistency old.checkpoint.json new.checkpoint.json
  safe-run log consistency old.json new.json --out consistency.json     # for a witness
  safe-run-verify log consistency old.json new.json --proof consistency.json --key signing.pub

Proves that the log of NEW contains the log of OLD unchanged (RFC 6962 consistency proof,
verified per RFC 9162 section 2.1.4.2). The proof is computed from the archive, or read from
--proof on a host without it. Names the inconsistency otherwise: a smaller NEW, equal sizes with
different roots, another key, or roots the proof cannot reconcile. Exit 9 (SR-ARC-004) on any.")]
pub struct ConsistencyArgs {
    /// The older checkpoint (from `safe-run log checkpoint`).
    #[arg(value_name = "OLD")]
    pub old: PathBuf,
    /// The newer checkpoint.
    #[arg(value_name = "NEW")]
    pub new: PathBuf,
    /// A consistency proof file (instead of computing it from the archive).
    #[arg(long, value_name = "FILE")]
    pub proof: Option<PathBuf>,
    /// Write the consistency proof here (for a witness).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The trusted public key of the log (PEM or base64).
    #[arg(long, value_name = "PUBKEY")]
    pub key: Option<PathBuf>,
    #[command(flatten)]
    /// The archive (when no --proof is given).
    pub location: ArchiveLocation,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `log consistency OLD NEW`.
pub fn consistency(args: ConsistencyArgs) -> u8 {
    let key = match read_key(args.key.as_deref()) {
        Ok(k) => k,
        Err(d) => return fail(&[d], args.format),
    };
    let loaded = read_checkpoint(&args.old).and_then(|o| Ok((o, read_checkpoint(&args.new)?)));
    let (old, new) = match loaded {
        Ok(c) => c,
        Err(e) => return fail(&[e.to_diagnostic()], args.format),
    };
    let proof = match &args.proof {
        Some(p) => read_json::<ConsistencyProof>(p, "consistency proof"),
        None if new.tree_size < old.tree_size => Ok(ConsistencyProof {
            // Nothing to compute: the check below names the shrink.
            format: crate::proof::CONSISTENCY_FORMAT.into(),
            old_size: old.tree_size,
            new_size: new.tree_size,
            old_root: old.root_hash.clone(),
            new_root: new.root_hash.clone(),
            path: vec![],
        }),
        None => args
            .location
            .open_read_only()
            .and_then(|db| crate::prove_consistency(&db, old.tree_size, new.tree_size)),
    };
    let proof = match proof {
        Ok(p) => p,
        Err(e) => return fail(&[e.to_diagnostic()], args.format),
    };
    let checks = crate::proof::check_consistency(&old, &new, &proof, key.as_ref());
    let ok = checks.iter().all(|c| c.status != Status::Fail);
    if ok && let Some(out) = &args.out {
        let text = serde_json::to_string_pretty(&proof).unwrap_or_default() + "\n";
        if let Err(e) = std::fs::write(out, text) {
            let d = ArchiveError::Proof {
                what: format!("consistency proof {}", out.display()),
                reason: format!("cannot write: {e}"),
            };
            return fail(&[d.to_diagnostic()], args.format);
        }
    }
    let diagnostic = (!ok).then(|| {
        let failed: Vec<&str> = checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.name.as_str())
            .collect();
        Diagnostic::new(
            ErrorCode::ArchiveProof,
            "log.consistency",
            format!(
                "{} and {} are not consistent: {}",
                args.old.display(),
                args.new.display(),
                failed.join(", ")
            ),
            "the log was rewritten or truncated between the two checkpoints, or they come from different logs or keys; see the FAIL lines",
        )
    });
    match args.format {
        Format::Text => {
            print_out(&render_checks(&checks));
            match diagnostic {
                None => {
                    print_out(&format!(
                        "consistent: the log of size {} extends the log of size {}\n",
                        new.tree_size, old.tree_size
                    ));
                    0
                }
                Some(d) => fail(&[d], Format::Text),
            }
        }
        Format::Json => {
            let errors: Vec<&Diagnostic> = diagnostic.iter().collect();
            let doc = json!({"ok": ok, "checks": checks, "proof": proof, "errors": errors});
            print_out(&format!("{doc:#}\n"));
            diagnostic.map_or(0, |d| u8::try_from(d.code.exit_code()).unwrap_or(1))
        }
    }
}
