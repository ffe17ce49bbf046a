//! Durable file operations: atomic replace (temp + fsync + rename + dir fsync), durable removal, checksums.
//!
//! Every durable action is one [`Faults::step`] so crash tests can stop between any two of them.

use crate::faults::Faults;
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode and owner a written file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    /// Permission bits (e.g. 0o600).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Ownership {
    /// For a file that did not exist before: 0600, owned by whoever runs the module (root on a device).
    pub fn new_file() -> Ownership {
        let (uid, gid) = current_ids();
        Ownership {
            mode: 0o600,
            uid,
            gid,
        }
    }

    pub fn of(meta: &fs::Metadata) -> Ownership {
        Ownership {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        }
    }
}

/// uid/gid of this process, read from a freshly created file's owner would need a write; use /proc instead.
fn current_ids() -> (u32, u32) {
    // std has no getuid(); the owner of /proc/self is the process's effective uid/gid.
    match fs::metadata("/proc/self") {
        Ok(m) => (m.uid(), m.gid()),
        Err(_) => (0, 0),
    }
}

/// Temp file used when replacing `path`: same directory, so the final rename is atomic.
pub fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.server-migration.tmp"))
}

/// fsync a directory so a rename/unlink inside it is durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replace `path` with `contents` atomically and durably, giving it `owner`.
///
/// Steps: write+close temp, set mode/owner, fsync temp, rename over `path`, fsync the directory.
pub fn write_atomic(
    faults: &Faults,
    path: &Path,
    contents: &[u8],
    owner: Ownership,
) -> io::Result<()> {
    let dir = parent_of(path);
    let tmp = temp_path_for(path);
    faults.step(&format!("write temp {}", tmp.display()));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| annotate(e, "create", &tmp))?;
        f.write_all(contents)
            .map_err(|e| annotate(e, "write", &tmp))?;
        let meta = f.metadata().map_err(|e| annotate(e, "stat", &tmp))?;
        if meta.uid() != owner.uid || meta.gid() != owner.gid {
            std::os::unix::fs::fchown(&f, Some(owner.uid), Some(owner.gid))
                .map_err(|e| annotate(e, "chown", &tmp))?;
        }
        f.set_permissions(fs::Permissions::from_mode(owner.mode))
            .map_err(|e| annotate(e, "chmod", &tmp))?;
        faults.step(&format!("fsync {}", tmp.display()));
        f.sync_all().map_err(|e| annotate(e, "fsync", &tmp))?;
    }
    faults.step(&format!("rename {} -> {}", tmp.display(), path.display()));
    fs::rename(&tmp, path).map_err(|e| annotate(e, "rename temp file onto", path))?;
    faults.step(&format!("fsync dir {}", dir.display()));
    fsync_dir(dir).map_err(|e| annotate(e, "fsync directory", dir))
}

/// Remove `path` durably; a file that is already gone is fine.
pub fn remove_durable(faults: &Faults, path: &Path) -> io::Result<()> {
    let dir = parent_of(path);
    faults.step(&format!("remove {}", path.display()));
    match fs::remove_file(path) {
        Ok(()) => {}
        // Already gone, maybe by a run that died before its directory fsync: still sync below.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !dir.is_dir() {
                return Ok(());
            }
        }
        Err(e) => return Err(annotate(e, "remove", path)),
    }
    faults.step(&format!("fsync dir {}", dir.display()));
    fsync_dir(dir).map_err(|e| annotate(e, "fsync directory", dir))
}

/// Makes the directory entry of an already-correct `path` durable: a run that died between its
/// rename and its directory fsync leaves a file that looks right but could vanish on power loss.
pub fn sync_entry(faults: &Faults, path: &Path) -> io::Result<()> {
    let dir = parent_of(path);
    if !dir.is_dir() {
        return Ok(());
    }
    faults.step(&format!("fsync dir {}", dir.display()));
    fsync_dir(dir).map_err(|e| annotate(e, "fsync directory", dir))
}

/// Remove a temp file a crashed run may have left next to `path`.
pub fn remove_stale_temp(faults: &Faults, path: &Path) -> io::Result<()> {
    let tmp = temp_path_for(path);
    if fs::symlink_metadata(&tmp).is_ok() {
        remove_durable(faults, &tmp)?;
    }
    Ok(())
}

/// Create `dir` and missing parents with mode 0755 (0700 for `private`), fsyncing each new entry's parent.
pub fn create_dir_all_durable(faults: &Faults, dir: &Path, private: bool) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = parent_of(dir);
    if parent != dir {
        create_dir_all_durable(faults, parent, false)?;
    }
    faults.step(&format!("mkdir {}", dir.display()));
    let mut b = fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut b, if private { 0o700 } else { 0o755 });
    match b.create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(annotate(e, "create directory", dir)),
    }
    fsync_dir(parent).map_err(|e| annotate(e, "fsync directory", parent))
}

/// A file's SHA-256, streamed; `None` if the file does not exist.
pub fn sha256_file(path: &Path) -> io::Result<Option<[u8; 32]>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(annotate(e, "open", path)),
    };
    let mut h = Sha256::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = f.read(&mut buf).map_err(|e| annotate(e, "read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Some(h.finalize().into()))
}

pub fn sha256_bytes(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lower-case hex of `bytes`: how checksums appear in the journal and in `status`.
///
/// The device side's one hex encoder (with [`sha256_from_hex`] its inverse). The host crates
/// print digests with sha2's `{:x}`; this stays a small function here because the device
/// workspace depends on no host crate and its checksums are plain `[u8; 32]` arrays.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parses a SHA-256 written by [`hex`] (either case); `None` unless it is 64 hex digits.
pub fn sha256_from_hex(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *byte = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Adds the action and path to an I/O error so messages name the file.
pub fn annotate(e: io::Error, action: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("cannot {action} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path named `name` in a fresh temp dir (kept alive by the returned guard).
    fn temp_path(name: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        (dir, path)
    }

    #[test]
    fn write_atomic_replaces_and_keeps_owner_mode() {
        let (_dir, p) = temp_path("f.conf");
        fs::write(&p, b"old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let own = Ownership::of(&fs::metadata(&p).unwrap());
        let faults = Faults::none();
        write_atomic(&faults, &p, b"new", own).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
        assert!(!temp_path_for(&p).exists());
        assert_eq!(faults.steps_taken(), 4);
    }

    #[test]
    fn remove_durable_tolerates_missing() {
        let (_dir, p) = temp_path("gone");
        remove_durable(&Faults::none(), &p).unwrap();
        fs::write(&p, b"x").unwrap();
        remove_durable(&Faults::none(), &p).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn sha_of_missing_is_none_and_hex_is_lowercase_and_parses_back() {
        let (_dir, p) = temp_path("x");
        assert_eq!(sha256_file(&p).unwrap(), None);
        fs::write(&p, b"abc").unwrap();
        let h = sha256_file(&p).unwrap().unwrap();
        let text = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(hex(&h), text);
        assert_eq!(sha256_from_hex(text), Some(h));
        assert_eq!(sha256_from_hex(&text.to_uppercase()), Some(h));
        for bad in [
            &text[..62],
            &format!("{text}00"),
            &text.replacen('b', "g", 1),
        ] {
            assert_eq!(sha256_from_hex(bad), None, "{bad}");
        }
    }
}
