//! `inspect`: read an artifact with full checksum verification and report its signature state.

use anyhow::{bail, Context, Result};
use clap::Args;
use menderartifact::{read_report, SignatureStatus};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The `.mender` file.
    pub artifact: PathBuf,
    /// Public key (PEM) to verify `manifest.sig` with; an invalid or missing signature fails.
    #[arg(long, value_name = "PUB.pem")]
    pub verify_key: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &InspectArgs) -> Result<()> {
    let key = (args.verify_key.as_deref())
        .map(crate::check_release::load_verify_key)
        .transpose()?;
    let file = std::fs::File::open(&args.artifact)
        .with_context(|| format!("{}: cannot open", args.artifact.display()))?;
    let info = read_report(std::io::BufReader::new(file), key.as_ref())
        .with_context(|| format!("{}: not a valid Mender artifact", args.artifact.display()))?;
    let signature = match info.signature {
        SignatureStatus::Unsigned => "unsigned",
        SignatureStatus::Unverified => "signed (not verified: no --verify-key)",
        SignatureStatus::Valid => "valid",
        SignatureStatus::Invalid => "INVALID",
    };
    if args.json {
        let files: Vec<_> = info
            .payload_files
            .iter()
            .map(|f| serde_json::json!({"payload": f.payload, "name": f.name, "size": f.size, "sha256": f.sha256}))
            .collect();
        let value = serde_json::json!({
            "name": info.name, "group": info.group, "device_types": info.device_types,
            "payload_types": info.payload_types, "provides": info.provides, "depends": info.depends,
            "clears_provides": info.clears_provides, "files": files, "signature": signature,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{}: checksums OK", args.artifact.display());
        println!("  name:          {}", info.name);
        println!("  device types:  {}", info.device_types.join(", "));
        println!("  payload types: {}", info.payload_types.join(", "));
        for (k, v) in &info.provides {
            println!("  provides:      {k} = {v}");
        }
        for (k, v) in &info.depends {
            println!("  depends:       {k} = {v}");
        }
        for f in &info.payload_files {
            println!(
                "  file:          {} ({} bytes, sha256 {})",
                f.name, f.size, f.sha256
            );
        }
        println!("  signature:     {signature}");
    }
    match (info.signature, key.is_some()) {
        (SignatureStatus::Invalid, _) => bail!(
            "{}: signature does not verify with the given key",
            args.artifact.display()
        ),
        (SignatureStatus::Unsigned, true) => bail!(
            "{}: artifact is not signed but a --verify-key was given",
            args.artifact.display()
        ),
        _ => Ok(()),
    }
}
