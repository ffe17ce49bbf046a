//! Editing and reading an ext4 disk image without mounting it, through `debugfs` (e2fsprogs).
//! Mounting needs privileges and loop devices CI may not have; `debugfs -w -f` needs neither.

use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// A batch of edits applied in one `debugfs -w` run. Everything created is owned by root.
#[derive(Default)]
pub struct Edits {
    script: String,
    /// Error lines debugfs may print for a command that did nothing harmful (`rm` of an absent
    /// file, `mkdir` of an existing directory). Because the same message can also mean a failed
    /// `cd`, every edit is verified by reading the image back afterwards.
    tolerated: Vec<&'static str>,
    checks: Vec<Check>,
}

/// What must be true after the batch ran.
enum Check {
    File {
        path: String,
        source: std::path::PathBuf,
        mode: u32,
    },
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    Absent {
        path: String,
    },
}

fn split(path: &str) -> (&str, &str) {
    let path = path.trim_end_matches('/');
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    }
}

fn check_guest_path(path: &str) -> Result<()> {
    if !path.starts_with('/') || path.contains(char::is_whitespace) || path.contains('"') {
        bail!("guest path `{path}` must be absolute without whitespace or quotes (debugfs syntax)");
    }
    Ok(())
}

impl Edits {
    pub fn new() -> Self {
        Edits {
            script: String::new(),
            tolerated: vec![
                "Ext2 directory already exists",
                "File not found by ext2_lookup",
            ],
            checks: Vec::new(),
        }
    }

    /// `mkdir -p` with `mode` (e.g. 0o755) on the last component only.
    pub fn mkdir_p(&mut self, path: &str, mode: u32) -> Result<&mut Self> {
        check_guest_path(path)?;
        let mut so_far = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            so_far.push('/');
            so_far.push_str(part);
            let _ = writeln!(self.script, "mkdir {so_far}");
        }
        let _ = writeln!(self.script, "sif {path} mode 0{:o}", 0o40000 | mode);
        let _ = writeln!(self.script, "sif {path} uid 0\nsif {path} gid 0");
        self.checks.push(Check::Dir {
            path: path.to_string(),
            mode,
        });
        Ok(self)
    }

    /// Writes (replacing) the guest file `path` from the host file `source`.
    pub fn write(&mut self, source: &Path, path: &str, mode: u32) -> Result<&mut Self> {
        check_guest_path(path)?;
        let source = source.to_str().context("host path is not UTF-8")?;
        if source.contains(char::is_whitespace) || source.contains('"') {
            bail!("host path `{source}` must not contain whitespace or quotes (debugfs syntax)");
        }
        let (dir, name) = split(path);
        let _ = writeln!(self.script, "cd {dir}\nrm {name}\nwrite {source} {name}");
        let _ = writeln!(self.script, "sif {name} mode 0{:o}", 0o100000 | mode);
        let _ = writeln!(self.script, "sif {name} uid 0\nsif {name} gid 0\ncd /");
        self.checks.push(Check::File {
            path: path.to_string(),
            source: source.into(),
            mode,
        });
        Ok(self)
    }

    /// Creates (replacing) the symlink `path` -> `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        check_guest_path(path)?;
        let (dir, name) = split(path);
        let _ = writeln!(
            self.script,
            "cd {dir}\nrm {name}\nsymlink {name} {target}\ncd /"
        );
        self.checks.push(Check::Symlink {
            path: path.to_string(),
            target: target.to_string(),
        });
        Ok(self)
    }

    /// Removes a guest file if present.
    pub fn remove(&mut self, path: &str) -> Result<&mut Self> {
        check_guest_path(path)?;
        let _ = writeln!(self.script, "rm {path}");
        self.checks.push(Check::Absent {
            path: path.to_string(),
        });
        Ok(self)
    }

    pub fn is_empty(&self) -> bool {
        self.script.is_empty()
    }

    /// Runs the batch; any debugfs error line other than the tolerated ones fails the call.
    pub fn apply(&self, image: &Path) -> Result<()> {
        if self.script.is_empty() {
            return Ok(());
        }
        let script_file = image.with_extension("debugfs-cmds");
        std::fs::write(&script_file, &self.script)
            .with_context(|| format!("cannot write {}", script_file.display()))?;
        let out = Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&script_file)
            .arg(image)
            .output()
            .context("cannot run debugfs (install e2fsprogs)")?;
        let _ = std::fs::remove_file(&script_file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
            .filter(|l| !self.tolerated.iter().any(|t| l.contains(t)))
            .collect();
        if !out.status.success() || !errors.is_empty() {
            bail!(
                "debugfs edits of {} failed: {}",
                image.display(),
                errors.join("; ")
            );
        }
        self.verify(image)
    }

    fn verify(&self, image: &Path) -> Result<()> {
        let fail = |what: String| {
            anyhow::anyhow!(
                "debugfs edit of {} did not take effect: {what}",
                image.display()
            )
        };
        for check in &self.checks {
            match check {
                Check::File { path, source, mode } => {
                    let (kind, got_mode, _) =
                        stat(image, path)?.ok_or_else(|| fail(format!("{path} missing")))?;
                    let want = std::fs::read(source)?;
                    if kind != "regular"
                        || got_mode != *mode
                        || read_file(image, path)?.as_deref() != Some(want.as_slice())
                    {
                        return Err(fail(format!(
                            "{path} is not a {mode:o} copy of {}",
                            source.display()
                        )));
                    }
                }
                Check::Dir { path, mode } => match stat(image, path)? {
                    Some((kind, got_mode, _)) if kind == "directory" && got_mode == *mode => {}
                    other => {
                        return Err(fail(format!(
                            "{path} is {:?}, not a {mode:o} directory",
                            other.map(|o| (o.0, o.1))
                        )))
                    }
                },
                Check::Symlink { path, target } => match stat(image, path)? {
                    Some((kind, _, stat_text))
                        if kind == "symlink" && stat_text.contains(&format!("\"{target}\"")) => {}
                    _ => return Err(fail(format!("{path} is not a symlink to {target}"))),
                },
                // A later edit may re-create a removed path on purpose.
                Check::Absent { path } => {
                    let recreated = self.checks.iter().any(|c| match c {
                        Check::File { path: p, .. }
                        | Check::Dir { path: p, .. }
                        | Check::Symlink { path: p, .. } => p == path,
                        Check::Absent { .. } => false,
                    });
                    if !recreated && stat(image, path)?.is_some() {
                        return Err(fail(format!("{path} still exists")));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Runs one read-only debugfs request (`stat PATH`, `cat PATH`, ...) on `image`.
fn debugfs_request(image: &Path, request: &str) -> Result<std::process::Output> {
    Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(image)
        .output()
        .context("cannot run debugfs (install e2fsprogs)")
}

/// `(type, permission bits, raw stat text)` of a guest path; `None` when absent.
fn stat(image: &Path, path: &str) -> Result<Option<(String, u32, String)>> {
    let out = debugfs_request(image, &format!("stat {path}"))?;
    if String::from_utf8_lossy(&out.stderr).contains("not found") {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let kind = text
        .split("Type: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("")
        .to_string();
    let mode = text
        .split("Mode:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .unwrap_or(0);
    Ok(Some((kind, mode & 0o7777, text)))
}

/// Reads a guest file; `None` when it does not exist. Symlinks are not followed (read the target).
pub fn read_file(image: &Path, path: &str) -> Result<Option<Vec<u8>>> {
    check_guest_path(path)?;
    if stat(image, path)?.is_none() {
        return Ok(None);
    }
    let out = debugfs_request(image, &format!("cat {path}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(err) = stderr
        .lines()
        .find(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
    {
        bail!("debugfs cat {path} on {}: {err}", image.display());
    }
    Ok(Some(out.stdout))
}

/// Copies a guest directory tree out of the image (`rdump`), e.g. the persistent journal.
pub fn dump_dir(image: &Path, path: &str, into: &Path) -> Result<()> {
    check_guest_path(path)?;
    std::fs::create_dir_all(into)?;
    let out = debugfs_request(image, &format!("rdump {path} {}", into.display()))?;
    if !out.status.success() {
        bail!(
            "debugfs rdump {path} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_root_parent() {
        assert_eq!(split("/etc"), ("/", "etc"));
        assert_eq!(
            split("/etc/mender/mender.conf"),
            ("/etc/mender", "mender.conf")
        );
    }

    #[test]
    fn relative_or_spaced_paths_are_refused() {
        let mut e = Edits::new();
        assert!(e.mkdir_p("etc", 0o755).is_err());
        assert!(e.remove("/a b").is_err());
    }
}
