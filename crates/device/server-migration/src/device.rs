//! The device's file system as seen through an optional root prefix, with symlinks resolved inside that root.
//!
//! Production runs with root `/`. Tests set `SERVER_MIGRATION_ROOT` (or `--root`) to a temp dir;
//! every absolute device path (config files, state dir, unit files) is then looked up below it,
//! and absolute symlink targets (Debian's `/var/lib/mender -> /data/mender`) are re-rooted too.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Env var holding the root prefix (tests); `/` when unset.
pub const ROOT_ENV: &str = "SERVER_MIGRATION_ROOT";
/// Where the journal and backups live (persistent data; not the module's FILE_TREE, which the client deletes).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mender/server-migration";

const MAX_SYMLINKS: usize = 40;

#[derive(Debug, Clone)]
pub struct DeviceRoot {
    root: PathBuf,
}

impl DeviceRoot {
    pub fn new(root: impl Into<PathBuf>) -> DeviceRoot {
        DeviceRoot { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Host path of a device-absolute path, without resolving symlinks.
    pub fn host_path(&self, device_path: &Path) -> PathBuf {
        let rel: PathBuf = device_path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        self.root.join(rel)
    }

    /// Resolves every symlink on `device_path` (directories and the file itself) inside the root and
    /// returns the real device-absolute path. Missing components are kept as they are, so the result
    /// also names where a not-yet-existing file will be created.
    pub fn resolve(&self, device_path: &Path) -> io::Result<PathBuf> {
        let mut pending: Vec<OsString> = components_reversed(device_path);
        let mut resolved: Vec<OsString> = Vec::new();
        let mut links = 0usize;
        while let Some(part) = pending.pop() {
            if part == ".." {
                resolved.pop();
                continue;
            }
            resolved.push(part);
            let device_now: PathBuf = std::iter::once(OsString::from("/"))
                .chain(resolved.iter().cloned())
                .collect();
            let host = self.host_path(&device_now);
            let is_link = match fs::symlink_metadata(&host) {
                Ok(m) => m.file_type().is_symlink(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(crate::atomic::annotate(e, "inspect", &host)),
            };
            if !is_link {
                continue;
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("too many symlinks resolving {}", device_path.display()),
                ));
            }
            let target =
                fs::read_link(&host).map_err(|e| crate::atomic::annotate(e, "read link", &host))?;
            resolved.pop();
            if target.is_absolute() {
                resolved.clear();
            }
            pending.extend(components_reversed(&target));
        }
        Ok(std::iter::once(OsString::from("/"))
            .chain(resolved)
            .collect())
    }

    /// Host path of the real (symlink-free) location of `device_path`.
    pub fn resolve_host(&self, device_path: &Path) -> io::Result<PathBuf> {
        Ok(self.host_path(&self.resolve(device_path)?))
    }
}

/// Normal and `..` components of `p`, last first (a stack to pop from).
fn components_reversed(p: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    v.reverse();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A device root holding the directories `dirs` and the symlinks `(target, link)`.
    fn device(dirs: &[&str], links: &[(&str, &str)]) -> (tempfile::TempDir, DeviceRoot) {
        let d = tempfile::tempdir().unwrap();
        for dir in dirs {
            fs::create_dir_all(d.path().join(dir)).unwrap();
        }
        for (target, link) in links {
            symlink(target, d.path().join(link)).unwrap();
        }
        let root = DeviceRoot::new(d.path());
        (d, root)
    }

    /// Asserts that `root` resolves the device path `from` to `to`.
    fn assert_resolves(root: &DeviceRoot, from: &str, to: &str) {
        assert_eq!(
            root.resolve(Path::new(from)).unwrap(),
            PathBuf::from(to),
            "{from}"
        );
    }

    #[test]
    fn resolves_absolute_dir_symlink_inside_root() {
        let (d, r) = device(
            &["data/mender", "var/lib"],
            &[("/data/mender", "var/lib/mender")],
        );
        assert_resolves(
            &r,
            "/var/lib/mender/mender.conf",
            "/data/mender/mender.conf",
        );
        assert_eq!(
            r.resolve_host(Path::new("/var/lib/mender/server-migration"))
                .unwrap(),
            d.path().join("data/mender/server-migration")
        );
    }

    #[test]
    fn resolves_relative_file_symlink_and_missing_parts() {
        let (_d, r) = device(
            &["etc/mender", "etc/real"],
            &[("../real/m.conf", "etc/mender/mender.conf")],
        );
        assert_resolves(&r, "/etc/mender/mender.conf", "/etc/real/m.conf");
        assert_resolves(&r, "/nope/x", "/nope/x");
    }

    #[test]
    fn symlink_loop_is_an_error() {
        let (_d, r) = device(&[], &[("/b", "a"), ("/a", "b")]);
        assert!(r.resolve(Path::new("/a/x")).is_err());
    }
}
