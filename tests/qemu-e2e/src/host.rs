//! Host side facts the harness depends on: workspace paths, required tools, the apt mirror the
//! machine is configured with, and whether KVM can really run a stock guest.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (this crate lives at `tests/qemu-e2e`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/qemu-e2e has a workspace root two levels up")
        .to_path_buf()
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Where built images are cached: `$QEMU_E2E_CACHE`, else `target/qemu-cache`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("QEMU_E2E_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => target_dir().join("qemu-cache"),
    }
}

/// The `cargo` that runs us (for building the module, the mock server and the artifacts).
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

const INSTALL_HINT: &str = "run tests/qemu-e2e/scripts/install-host-deps.sh as root";

/// Fails naming every missing tool and how to install them.
pub fn require_tools(tools: &[&str]) -> Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing host tools: {} ({INSTALL_HINT})",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Looks a program up on `PATH` (plus the sbin directories, which a non-login root shell may
/// lack): the same lookup the tests' skips use.
pub use test_support::which;

/// Runs a command to completion; a non-zero exit is an error carrying its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One-line apt source in deb822 form, taken from the machine's own apt configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub uri: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    pub signed_by: Option<String>,
}

/// The Debian sources for `suite` (and its `-updates`/`-security` companions) that this machine's
/// apt is configured with: `/etc/apt/sources.list` and `/etc/apt/sources.list.d/*.{list,sources}`.
/// No mirror host is ever hard-coded; the guest gets exactly what the host uses.
pub fn debian_sources(suite: &str) -> Result<Vec<AptSource>> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    let mut sources = Vec::new();
    for file in files {
        let name = file.to_string_lossy().to_string();
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if name.ends_with(".sources") {
            sources.extend(parse_deb822(&text));
        } else if name.ends_with(".list") {
            sources.extend(parse_one_line(&text));
        }
    }
    let wanted = |s: &str| s == suite || s.starts_with(&format!("{suite}-"));
    let mut picked: Vec<AptSource> = sources
        .into_iter()
        .filter_map(|mut src| {
            src.suites.retain(|s| wanted(s));
            src.components.retain(|c| c == "main");
            (!src.suites.is_empty() && !src.components.is_empty()).then_some(src)
        })
        .collect();
    picked.dedup();
    if !picked.iter().any(|s| s.suites.iter().any(|x| x == suite)) {
        bail!("no apt source for Debian `{suite}` main in /etc/apt/sources.list or /etc/apt/sources.list.d/");
    }
    Ok(picked)
}

/// Renders sources as a deb822 `.sources` file (what mmdebstrap takes as its mirror argument).
pub fn render_sources(sources: &[AptSource]) -> String {
    let mut out = String::new();
    for src in sources {
        out.push_str("Types: deb\n");
        out.push_str(&format!("URIs: {}\n", src.uri));
        out.push_str(&format!("Suites: {}\n", src.suites.join(" ")));
        out.push_str(&format!("Components: {}\n", src.components.join(" ")));
        if let Some(key) = &src.signed_by {
            out.push_str(&format!("Signed-By: {key}\n"));
        }
        out.push('\n');
    }
    out
}

fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut types = Vec::new();
        let mut src = AptSource {
            uri: String::new(),
            suites: vec![],
            components: vec![],
            signed_by: None,
        };
        let mut enabled = true;
        for line in stanza.lines() {
            let line = line.trim_end();
            if line.starts_with('#') || line.starts_with(' ') || line.starts_with('\t') {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let words = || {
                value
                    .split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "types" => types = words(),
                "uris" => src.uri = words().into_iter().next().unwrap_or_default(),
                "suites" => src.suites = words(),
                "components" => src.components = words(),
                "signed-by" => {
                    src.signed_by = Some(value.trim().to_string()).filter(|v| !v.is_empty())
                }
                "enabled" => enabled = value.trim() != "no",
                _ => {}
            }
        }
        if enabled && types.iter().any(|t| t == "deb") && !src.uri.is_empty() {
            out.push(src);
        }
    }
    out
}

fn parse_one_line(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut rest: Vec<&str> = words.collect();
        let mut signed_by = None;
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            let mut options = Vec::new();
            while let Some(w) = rest.first().copied() {
                rest.remove(0);
                options.push(w.trim_matches(['[', ']']).to_string());
                if w.ends_with(']') {
                    break;
                }
            }
            signed_by = options
                .iter()
                .find_map(|o| o.strip_prefix("signed-by=").map(str::to_string));
        }
        if rest.len() >= 3 {
            out.push(AptSource {
                uri: rest[0].to_string(),
                suites: vec![rest[1].to_string()],
                components: rest[2..].iter().map(|s| s.to_string()).collect(),
                signed_by,
            });
        }
    }
    out
}

/// The accelerator to use. KVM only when the CPU advertises vmx/svm and `/dev/kvm` is writable:
/// on some machines `/dev/kvm` is a PVM device that accepts `-accel kvm` but cannot boot a stock
/// Debian kernel, so its mere presence proves nothing.
pub fn accel_args() -> Vec<String> {
    if std::env::var("QEMU_E2E_ACCEL").as_deref() == Ok("tcg") {
        return vec!["-accel".into(), "tcg".into()];
    }
    let cpu_virt = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| {
            c.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        })
        .unwrap_or(false);
    let kvm_writable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if cpu_virt && kvm_writable {
        vec!["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()]
    } else {
        vec!["-accel".into(), "tcg".into()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_stanzas_keep_only_enabled_deb_entries() {
        let text = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main contrib\nSigned-By: /k.gpg\n\nTypes: deb-src\nURIs: http://x\nSuites: bookworm\nComponents: main\n\nTypes: deb\nEnabled: no\nURIs: http://y\nSuites: bookworm\nComponents: main\n";
        let got = parse_deb822(text);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].uri, "http://mirror.example/debian");
        assert_eq!(got[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(got[0].signed_by.as_deref(), Some("/k.gpg"));
    }

    #[test]
    fn one_line_sources_parse_options() {
        let got = parse_one_line("deb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm main\n# deb http://z bookworm main\ndeb-src http://s bookworm main\n");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].signed_by.as_deref(), Some("/k.gpg"));
        assert_eq!(got[0].components, ["main"]);
    }
}
