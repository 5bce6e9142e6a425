//! `safe-run key ...`: the report-signing key.
//!
//! The key file is found in this order: `--key PATH`, the `SAFE_RUN_KEY` environment variable,
//! the operator config's `keyPath`. It is created (PKCS#8 PEM, 0600, directory 0700) on first
//! use; see docs/evidence.md, "Keys".

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use sr_common::{Diagnostic, ErrorCode};
use sr_evidence::{SigningKey, keys};

use crate::output::{Format, fail};

/// Subcommands of `safe-run key`.
#[derive(Subcommand)]
pub enum KeyCommand {
    /// Print the public key (base64 of the raw 32 bytes) and key id; creates the key on first use.
    Show(ShowArgs),
    /// Write the public key as PEM, for `safe-run report verify --key`.
    ExportPublic(ExportPublicArgs),
}

/// Where the key is.
#[derive(Args)]
pub struct KeyLocation {
    /// The signing key file (default: $SAFE_RUN_KEY, else the operator config's keyPath).
    #[arg(long, value_name = "PATH")]
    pub key: Option<PathBuf>,
}

/// Arguments of `safe-run key show`.
#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    location: KeyLocation,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Arguments of `safe-run key export-public`.
#[derive(Args)]
pub struct ExportPublicArgs {
    #[command(flatten)]
    location: KeyLocation,
    /// Where to write the PEM public key (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// The key path: flag, else `SAFE_RUN_KEY`, else the operator config's `keyPath` (the config
/// is only read when needed, so a broken config does not stop `--key` users).
pub fn resolve_key_path(flag: Option<&Path>) -> Result<PathBuf, Diagnostic> {
    if let Some(p) = flag {
        return Ok(p.to_owned());
    }
    if let Some(p) = std::env::var_os(keys::KEY_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    Ok(PathBuf::from(sr_policy::OperatorConfig::load()?.key_path))
}

/// Loads (creating on first use) the signing key, telling stderr when it was created.
pub fn load_signing_key(flag: Option<&Path>) -> Result<SigningKey, Diagnostic> {
    let path = resolve_key_path(flag)?;
    let (key, created) = keys::load_or_create(&path).map_err(|e| e.to_diagnostic())?;
    if created {
        eprintln!("created signing key {}", path.display());
    }
    Ok(key)
}

/// Runs the subcommand; returns the process exit code.
pub fn execute(command: KeyCommand) -> u8 {
    match command {
        KeyCommand::Show(args) => show(args),
        KeyCommand::ExportPublic(args) => export_public(args),
    }
}

fn show(args: ShowArgs) -> u8 {
    let path = match resolve_key_path(args.location.key.as_deref()) {
        Ok(p) => p,
        Err(d) => return fail(&[d], args.format),
    };
    let key = match load_signing_key(Some(&path)) {
        Ok(k) => k,
        Err(d) => return fail(&[d], args.format),
    };
    let public = key.verifying_key();
    let keyid = keys::keyid(&public);
    let b64 = keys::public_key_base64(&public);
    match args.format {
        Format::Text => {
            println!("keyid      {keyid}");
            println!("publicKey  {b64}");
            println!("algorithm  ed25519");
            println!("keyFile    {}", path.display());
        }
        Format::Json => {
            let doc = serde_json::json!({
                "keyid": keyid, "publicKey": b64, "algorithm": "ed25519",
                "keyFile": path.display().to_string(),
            });
            println!("{doc:#}");
        }
    }
    0
}

fn export_public(args: ExportPublicArgs) -> u8 {
    let key = match load_signing_key(args.location.key.as_deref()) {
        Ok(k) => k,
        Err(d) => return fail(&[d], Format::Text),
    };
    let pem = match keys::public_key_pem(&key.verifying_key()) {
        Ok(p) => p,
        Err(e) => return fail(&[e.to_diagnostic()], Format::Text),
    };
    if args.out.as_os_str() == "-" {
        print!("{pem}");
        return 0;
    }
    if let Err(e) = std::fs::write(&args.out, pem) {
        let d = Diagnostic::new(
            ErrorCode::EvidenceReport,
            "evidence.key.export",
            format!("cannot write {}: {e}", args.out.display()),
            "choose a writable --out path",
        );
        return fail(&[d], Format::Text);
    }
    eprintln!(
        "wrote public key {} (keyid {})",
        args.out.display(),
        keys::keyid(&key.verifying_key())
    );
    0
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn show_creates_the_key_0600_and_refuses_a_readable_one() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("keys/signing.key");
        let show = |format| {
            execute(KeyCommand::Show(ShowArgs {
                location: KeyLocation {
                    key: Some(path.clone()),
                },
                format,
            }))
        };
        assert_eq!(show(Format::Json), 0);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(show(Format::Text), 7);
    }

    #[test]
    fn export_public_writes_a_pem_that_verify_accepts() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("signing.key");
        let out = tmp.path().join("signing.pub");
        let code = execute(KeyCommand::ExportPublic(ExportPublicArgs {
            location: KeyLocation {
                key: Some(key.clone()),
            },
            out: out.clone(),
        }));
        assert_eq!(code, 0);
        let (signing, _) = keys::load_or_create(&key).unwrap();
        assert_eq!(
            keys::read_public_key(&out).unwrap(),
            signing.verifying_key()
        );
    }

    #[test]
    fn flag_wins_over_env_and_config() {
        let p = resolve_key_path(Some(Path::new("/x/k"))).unwrap();
        assert_eq!(p, PathBuf::from("/x/k"));
    }
}
