//! In-memory file trees (path -> bytes + mode) and the two things done with them: write them
//! without leaving half-written output, and compare them with what is on disk (freshness checks).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::GenError;

/// A file to generate. `mode` is applied on write; git only keeps the executable bit, so
/// comparisons look at that bit alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub contents: Vec<u8>,
    pub mode: u32,
}

/// Relative `/`-separated path -> entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileTree {
    pub files: BTreeMap<String, Entry>,
    /// Files copied from disk when written (large binaries are streamed, never held in memory).
    pub copies: BTreeMap<String, (PathBuf, u32)>,
}

impl FileTree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, path: impl Into<String>, contents: impl Into<Vec<u8>>, mode: u32) {
        self.files.insert(
            path.into(),
            Entry {
                contents: contents.into(),
                mode,
            },
        );
    }

    /// Add a file whose contents are copied from `source` at write time.
    pub fn add_copy(&mut self, path: impl Into<String>, source: impl Into<PathBuf>, mode: u32) {
        self.copies.insert(path.into(), (source.into(), mode));
    }

    /// Copy of this tree with every path prefixed by `dir/`.
    pub fn nested(&self, dir: &str) -> FileTree {
        FileTree {
            files: self
                .files
                .iter()
                .map(|(p, e)| (format!("{dir}/{p}"), e.clone()))
                .collect(),
            copies: self
                .copies
                .iter()
                .map(|(p, c)| (format!("{dir}/{p}"), c.clone()))
                .collect(),
        }
    }

    pub fn merge(&mut self, other: FileTree) {
        self.files.extend(other.files);
        self.copies.extend(other.copies);
    }

    /// Write every file under `root`, each through a temp file in its own directory and a rename,
    /// so no reader ever sees a half-written file.
    pub fn write_files_into(&self, root: &Path) -> Result<(), GenError> {
        for (rel, entry) in &self.files {
            write_atomic(&root.join(rel), &entry.contents, entry.mode)?;
        }
        for (rel, (source, mode)) in &self.copies {
            copy_atomic(source, &root.join(rel), *mode)?;
        }
        Ok(())
    }

    /// Brings the generated files below `root` in line with this tree: removes each file there
    /// that the tree no longer holds and `keep` does not claim (hand-written or foreign files),
    /// then writes the tree's files. Returns the removed paths, relative to `root`.
    pub fn sync_into(
        &self,
        root: &Path,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<String>, GenError> {
        let mut removed = Vec::new();
        for rel in list_files(root) {
            if !keep(&rel) && !self.files.contains_key(&rel) && !self.copies.contains_key(&rel) {
                let path = root.join(&rel);
                fs::remove_file(&path).map_err(|e| GenError::io(&path, e))?;
                removed.push(rel);
            }
        }
        self.write_files_into(root)?;
        Ok(removed)
    }

    /// Create `dest` holding exactly this tree: built in a temp dir beside `dest`, then renamed
    /// into place. An existing `dest` is an error unless `force`, then it is replaced.
    pub fn write_new_dir(&self, dest: &Path, force: bool) -> Result<(), GenError> {
        if dest.exists() && !force {
            return Err(GenError::bad_input(
                dest,
                "already exists (pass --force to replace it)",
            ));
        }
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(|e| GenError::io(parent, e))?;
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(parent)
            .map_err(|e| GenError::io(parent, e))?;
        self.write_files_into(staging.path())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o755))
                .map_err(|e| GenError::io(staging.path(), e))?;
        }
        let staged = staging.keep();
        if !dest.exists() {
            return fs::rename(&staged, dest).map_err(|e| {
                let _ = fs::remove_dir_all(&staged);
                GenError::io(dest, e)
            });
        }
        // Replace: move the old tree aside, move the new one in, then delete the old one; on
        // failure the old tree is put back.
        let aside = match tempfile::Builder::new()
            .prefix(".replaced-")
            .tempdir_in(parent)
        {
            Ok(dir) => dir.keep(),
            Err(e) => {
                let _ = fs::remove_dir_all(&staged);
                return Err(GenError::io(parent, e));
            }
        };
        let old = aside.join("old");
        if let Err(e) = fs::rename(dest, &old) {
            let _ = fs::remove_dir_all(&aside);
            let _ = fs::remove_dir_all(&staged);
            return Err(GenError::io(dest, e));
        }
        if let Err(e) = fs::rename(&staged, dest) {
            let _ = fs::rename(&old, dest);
            let _ = fs::remove_dir_all(&aside);
            let _ = fs::remove_dir_all(&staged);
            return Err(GenError::io(dest, e));
        }
        let _ = fs::remove_dir_all(&aside);
        Ok(())
    }

    /// Differences between this tree and `root` on disk, one readable line each naming the file.
    /// Files on disk that the tree does not have are reported unless `ignore(rel_path)` says so.
    pub fn compare_with_dir(&self, root: &Path, ignore: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut problems = Vec::new();
        for (rel, entry) in &self.files {
            let path = root.join(rel);
            match fs::read(&path) {
                Err(_) => problems.push(format!("{}: missing", path.display())),
                Ok(bytes) if bytes != entry.contents => {
                    problems.push(format!("{}: content is stale", path.display()))
                }
                Ok(_) => {
                    if let Some(actual) = file_mode(&path) {
                        if (actual & 0o111 != 0) != (entry.mode & 0o111 != 0) {
                            problems.push(format!(
                                "{}: executable bit is {} but should be {} (mode {:o})",
                                path.display(),
                                if actual & 0o111 != 0 { "set" } else { "clear" },
                                if entry.mode & 0o111 != 0 {
                                    "set"
                                } else {
                                    "clear"
                                },
                                entry.mode
                            ));
                        }
                    }
                }
            }
        }
        for rel in list_files(root) {
            if !self.files.contains_key(&rel) && !ignore(&rel) {
                problems.push(format!(
                    "{}: not produced by the generator (remove it)",
                    root.join(&rel).display()
                ));
            }
        }
        problems
    }
}

/// All regular files under `root` as relative `/` paths (empty when `root` does not exist).
pub fn list_files(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            match entry.file_type() {
                Ok(t) if t.is_dir() => walk(&entry.path(), &rel, out),
                Ok(_) => out.push(rel),
                Err(_) => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(root, "", &mut out);
    out.sort();
    out
}

fn file_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).ok().map(|m| m.permissions().mode())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Stream `source` to `dest` via a temp file beside `dest` and a rename.
pub fn copy_atomic(source: &Path, dest: &Path, mode: u32) -> Result<(), GenError> {
    let mut input = fs::File::open(source).map_err(|e| GenError::io(source, e))?;
    replace_atomic(dest, mode, |tmp| std::io::copy(&mut input, tmp).map(|_| ()))
}

/// Write `path` via a temp file in the same directory and a rename; sets `mode` before the rename.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), GenError> {
    replace_atomic(path, mode, |tmp| tmp.write_all(contents))
}

/// Replaces `path` with what `fill` writes: a temp file in the same directory, synced, given
/// `mode`, then renamed over `path` (a reader never sees a half-written file).
fn replace_atomic(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut fs::File) -> std::io::Result<()>,
) -> Result<(), GenError> {
    let dir: PathBuf = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    fs::create_dir_all(&dir).map_err(|e| GenError::io(&dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(&dir)
        .map_err(|e| GenError::io(&dir, e))?;
    fill(tmp.as_file_mut()).map_err(|e| GenError::io(path, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| GenError::io(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))
            .map_err(|e| GenError::io(path, e))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.persist(path).map_err(|e| GenError::io(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_compare_is_clean_and_detects_changes() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let mut tree = FileTree::new();
        tree.add("a/b.txt", "hello\n", 0o644);
        tree.add("run", "#!/bin/sh\n", 0o755);
        tree.write_new_dir(&dest, false).unwrap();
        assert!(tree.compare_with_dir(&dest, &|_| false).is_empty());
        assert!(
            tree.write_new_dir(&dest, false).is_err(),
            "refuses to overwrite"
        );

        fs::write(dest.join("a/b.txt"), "changed\n").unwrap();
        fs::write(dest.join("extra"), "x").unwrap();
        let problems = tree.compare_with_dir(&dest, &|_| false);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("b.txt: content is stale"));
        assert!(problems[1].contains("extra: not produced"));
        assert_eq!(tree.compare_with_dir(&dest, &|p| p == "extra").len(), 1);

        tree.write_new_dir(&dest, true).unwrap();
        assert!(tree.compare_with_dir(&dest, &|_| false).is_empty());
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no staging dir left behind");
    }

    #[test]
    fn copies_are_streamed_into_nested_trees() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("module.bin");
        fs::write(&source, vec![7u8; 300_000]).unwrap();
        let mut inner = FileTree::new();
        inner.add_copy("usr/module", &source, 0o755);
        let mut tree = FileTree::new();
        tree.merge(inner.nested("stage1"));
        let dest = dir.path().join("out");
        tree.write_new_dir(&dest, false).unwrap();
        assert_eq!(
            fs::read(dest.join("stage1/usr/module")).unwrap(),
            vec![7u8; 300_000]
        );

        let mut broken = FileTree::new();
        broken.add_copy("x", dir.path().join("missing"), 0o755);
        let err = broken
            .write_new_dir(&dir.path().join("out2"), false)
            .unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(!dir.path().join("out2").exists(), "nothing half-written");
    }

    #[cfg(unix)]
    #[test]
    fn modes_are_applied_and_exec_bit_compared() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut tree = FileTree::new();
        tree.add("conf", "{}\n", 0o600);
        tree.write_files_into(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join("conf"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::set_permissions(dir.path().join("conf"), fs::Permissions::from_mode(0o755)).unwrap();
        let problems = tree.compare_with_dir(dir.path(), &|_| false);
        assert!(problems[0].contains("executable bit"), "{problems:?}");
    }
}
