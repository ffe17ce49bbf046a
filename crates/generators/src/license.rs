//! License handling for recipes: SPDX expressions parsed and translated to BitBake's `LICENSE`
//! syntax, combined over a dependency graph, and the license files with their md5 for
//! `LIC_FILES_CHKSUM`.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use md5::{Digest, Md5};

use crate::GenError;

/// One `LIC_FILES_CHKSUM` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseFile {
    /// As BitBake reads it: relative to `S` (the project's own files) or under
    /// `${CARGO_VENDORING_DIRECTORY}` (a crate's).
    pub path: String,
    /// Only these lines (1-based, inclusive) are checksummed: a crate that ships no license
    /// file is covered by the `license = ...` line of its `Cargo.toml`.
    pub lines: Option<(usize, usize)>,
    pub md5: String,
}

impl LicenseFile {
    /// The `file://...;md5=...` entry.
    pub fn entry(&self) -> String {
        match self.lines {
            Some((begin, end)) => format!(
                "file://{};beginline={begin};endline={end};md5={}",
                self.path, self.md5
            ),
            None => format!("file://{};md5={}", self.path, self.md5),
        }
    }
}

/// A recipe's license, translated for BitBake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeLicense {
    /// OE syntax: `MIT | Apache-2.0` (`|` = choice, `&` = both, parentheses group).
    pub expression: String,
    pub files: Vec<LicenseFile>,
}

/// A parsed license expression. `WITH` exceptions are folded into the id the way OE names such
/// licenses (`Apache-2.0 WITH LLVM-exception` -> `Apache-2.0-with-LLVM-exception`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum License {
    Id(String),
    /// Every one applies.
    All(Vec<License>),
    /// The user may pick one.
    Any(Vec<License>),
}

impl License {
    /// Parses an SPDX expression (`AND`, `OR`, `WITH`, parentheses; also the legacy `A/B`
    /// form crates.io still carries, read as `A OR B`). Precedence: `WITH` > `AND` > `OR`.
    pub fn parse(spdx: &str) -> Result<License, GenError> {
        let spaced = spdx
            .replace('(', " ( ")
            .replace(')', " ) ")
            .replace('/', " OR ");
        let tokens: Vec<&str> = spaced.split_whitespace().collect();
        let mut parser = Parser { tokens, pos: 0 };
        let bad = |why: &str| GenError::Invalid(format!("license `{spdx}`: {why}"));
        let expr = parser.or().map_err(|why| bad(&why))?;
        if parser.pos != parser.tokens.len() {
            return Err(bad(&format!("unexpected `{}`", parser.tokens[parser.pos])));
        }
        Ok(expr.normalized())
    }

    /// Every license of all of `parts` applies (how a program's license follows from the
    /// licenses of what it is built from).
    pub fn all_of(parts: impl IntoIterator<Item = License>) -> License {
        License::All(parts.into_iter().collect()).normalized()
    }

    /// Flattened (`A & (B & C)` = `A & B & C`), operands sorted (plain ids before groups) and
    /// deduplicated (both operators are commutative and idempotent), single-operand groups
    /// unwrapped.
    fn normalized(self) -> License {
        fn collect(items: Vec<License>, all: bool) -> Vec<License> {
            let mut out = Vec::new();
            for item in items.into_iter().map(License::normalized) {
                match item {
                    License::All(inner) if all => out.extend(inner),
                    License::Any(inner) if !all => out.extend(inner),
                    other => out.push(other),
                }
            }
            out.sort();
            out.dedup();
            out
        }
        let (mut items, all) = match self {
            License::Id(_) => return self,
            License::All(items) => (collect(items, true), true),
            License::Any(items) => (collect(items, false), false),
        };
        match items.len() {
            1 => items.remove(0),
            _ if all => License::All(items),
            _ => License::Any(items),
        }
    }

    /// Every license id named, sorted, once each.
    pub fn ids(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_ids(&mut out);
        out.sort();
        out.dedup();
        out
    }

    fn collect_ids<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            License::Id(id) => out.push(id),
            License::All(items) | License::Any(items) => {
                items.iter().for_each(|i| i.collect_ids(out))
            }
        }
    }
}

/// BitBake's syntax: `&`, `|`, parentheses around a nested group.
impl fmt::Display for License {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (items, op) = match self {
            License::Id(id) => return f.write_str(id),
            License::All(items) => (items, " & "),
            License::Any(items) => (items, " | "),
        };
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                f.write_str(op)?;
            }
            match item {
                License::Id(_) => write!(f, "{item}")?,
                _ => write!(f, "({item})")?,
            }
        }
        Ok(())
    }
}

struct Parser<'a> {
    tokens: Vec<&'a str>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.tokens.get(self.pos).copied()
    }

    fn or(&mut self) -> Result<License, String> {
        self.joined("OR", Self::and).map(License::Any)
    }

    fn and(&mut self) -> Result<License, String> {
        self.joined("AND", Self::term).map(License::All)
    }

    /// One or more `operand`s joined by `operator`.
    fn joined(
        &mut self,
        operator: &str,
        operand: fn(&mut Self) -> Result<License, String>,
    ) -> Result<Vec<License>, String> {
        let mut items = vec![operand(self)?];
        while self.peek() == Some(operator) {
            self.pos += 1;
            items.push(operand(self)?);
        }
        Ok(items)
    }

    fn term(&mut self) -> Result<License, String> {
        match self.peek() {
            None => Err("ends where a license id was expected".into()),
            Some("(") => {
                self.pos += 1;
                let inner = self.or()?;
                if self.peek() != Some(")") {
                    return Err("`(` without `)`".into());
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(t @ (")" | "AND" | "OR" | "WITH")) => {
                Err(format!("`{t}` where a license id was expected"))
            }
            Some(id) => {
                if !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '+'))
                {
                    return Err(format!("`{id}` is not a license id"));
                }
                self.pos += 1;
                let id = id.to_string();
                if self.peek() == Some("WITH") {
                    self.pos += 1;
                    match self.peek() {
                        Some(exception)
                            if exception
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.')) =>
                        {
                            self.pos += 1;
                            return Ok(License::Id(format!("{id}-with-{exception}")));
                        }
                        _ => return Err("`WITH` needs an exception id".into()),
                    }
                }
                if matches!(self.peek(), Some(t) if !matches!(t, ")" | "AND" | "OR")) {
                    return Err("two license ids without OR/AND between them".into());
                }
                Ok(License::Id(id))
            }
        }
    }
}

/// Translate the project's own SPDX expression into OE syntax and find each license's file
/// under `root` (paths relative to `root`, which is the recipe's `S`).
pub fn resolve(spdx: &str, root: &Path) -> Result<RecipeLicense, GenError> {
    let license = License::parse(spdx)?;
    let ids = license.ids();
    let single = ids.len() == 1;
    let mut files = Vec::new();
    for id in ids {
        let name = license_file_name(id, root, single).ok_or_else(|| {
            GenError::Invalid(format!(
                "license {id}: no license file found in {} (looked for `{id}`, `LICENSE-{id}`, `LICENSE-{}`{})",
                root.display(),
                short_name(id),
                if single { ", `LICENSE`" } else { "" }
            ))
        })?;
        files.push(LicenseFile {
            md5: md5_file(&root.join(&name))?,
            path: name,
            lines: None,
        });
    }
    Ok(RecipeLicense {
        expression: license.to_string(),
        files,
    })
}

/// The usual short file suffix: `Apache-2.0` -> `APACHE`, `BSD-3-Clause` -> `BSD`, `MIT` -> `MIT`.
fn short_name(id: &str) -> String {
    id.split('-').next().unwrap_or(id).to_ascii_uppercase()
}

/// Lookup order: file named like the id, `LICENSE-<id>` (cargo-bitbake's two rules), then the
/// Rust-ecosystem `LICENSE-<SHORT>` naming, then `LICENSE` for a single license.
fn license_file_name(id: &str, root: &Path, single: bool) -> Option<String> {
    let mut candidates = vec![
        id.to_string(),
        format!("LICENSE-{id}"),
        format!("LICENSE-{}", short_name(id)),
    ];
    if single {
        candidates.push("LICENSE".to_string());
    }
    candidates.into_iter().find(|c| root.join(c).is_file())
}

/// Whether a file at a crate's root holds license text, by the names crates use
/// (`LICENSE`, `LICENSE-MIT`, `license-apache-2.0`, `LICENCE`, `COPYING`, `UNLICENSE`,
/// `COPYRIGHT`, ...).
pub fn is_license_file_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["LICENSE", "LICENCE", "COPYING", "UNLICENSE", "COPYRIGHT"]
        .iter()
        .any(|p| upper.starts_with(p))
}

/// The license files of one unpacked crate (`dir`), as `LIC_FILES_CHKSUM` entries under
/// `bitbake_dir` (where BitBake unpacks that crate). A crate without any is covered by the
/// `license = ...` line of its `Cargo.toml`, the only license statement it carries.
pub fn crate_license_files(dir: &Path, bitbake_dir: &str) -> Result<Vec<LicenseFile>, GenError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| GenError::io(dir, e))? {
        let entry = entry.map_err(|e| GenError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_license_file_name(&name) && entry.path().is_file() {
            names.push(name);
        }
    }
    names.sort();
    let mut files = Vec::new();
    for name in names {
        files.push(LicenseFile {
            md5: md5_file(&dir.join(&name))?,
            path: format!("{bitbake_dir}/{name}"),
            lines: None,
        });
    }
    if files.is_empty() {
        let manifest = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).map_err(|e| GenError::io(&manifest, e))?;
        let (index, line) = text
            .split_inclusive('\n')
            .enumerate()
            .find(|(_, l)| l.trim_start().starts_with("license ="))
            .ok_or_else(|| {
                GenError::bad_input(
                    &manifest,
                    "the crate has neither a license file nor a `license = ...` line",
                )
            })?;
        files.push(LicenseFile {
            md5: format!("{:x}", Md5::digest(line.as_bytes())),
            path: format!("{bitbake_dir}/Cargo.toml"),
            lines: Some((index + 1, index + 1)),
        });
    }
    Ok(files)
}

/// md5 of a file, read in chunks.
pub fn md5_file(path: &Path) -> Result<String, GenError> {
    let mut file = File::open(path).map_err(|e| GenError::io(path, e))?;
    let mut hasher = Md5::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|e| GenError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oe(spdx: &str) -> String {
        License::parse(spdx).unwrap().to_string()
    }

    #[test]
    fn spdx_or_becomes_oe_choice_with_rust_style_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("LICENSE-MIT"), "mit text\n").unwrap();
        std::fs::write(dir.path().join("LICENSE-APACHE"), "apache text\n").unwrap();
        let lic = resolve("MIT OR Apache-2.0", dir.path()).unwrap();
        assert_eq!(lic.expression, "Apache-2.0 | MIT");
        assert_eq!(lic.files[0].path, "LICENSE-APACHE");
        assert_eq!(lic.files[1].path, "LICENSE-MIT");
        assert_eq!(
            lic.files[1].md5,
            format!("{:x}", Md5::digest(b"mit text\n"))
        );
        assert_eq!(
            resolve("MIT/Apache-2.0", dir.path()).unwrap().expression,
            "Apache-2.0 | MIT"
        );
    }

    #[test]
    fn expressions_are_parsed_with_precedence_and_normalized() {
        assert_eq!(
            oe("(MIT OR Apache-2.0) AND Unicode-3.0"),
            "Unicode-3.0 & (Apache-2.0 | MIT)"
        );
        assert_eq!(
            oe("MIT AND BSD-3-Clause OR ISC"),
            "ISC | (BSD-3-Clause & MIT)"
        );
        assert_eq!(
            oe("Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT"),
            "Apache-2.0 | Apache-2.0-with-LLVM-exception | MIT"
        );
        assert_eq!(oe("MIT OR MIT"), "MIT");
        let all = License::all_of(
            [
                "MIT OR Apache-2.0",
                "Apache-2.0 OR MIT",
                "MIT",
                "(MIT OR Apache-2.0) AND Unicode-3.0",
            ]
            .map(|s| License::parse(s).unwrap()),
        );
        assert_eq!(all.to_string(), "MIT & Unicode-3.0 & (Apache-2.0 | MIT)");
        assert_eq!(all.ids(), ["Apache-2.0", "MIT", "Unicode-3.0"]);
    }

    #[test]
    fn missing_file_and_odd_expressions_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("LICENSE-MIT"), "x").unwrap();
        let err = resolve("MIT AND GPL-2.0-only", dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("GPL-2.0-only"), "{err}");
        for bad in [
            "(MIT OR Apache-2.0",
            "MIT Apache-2.0",
            "MIT OR",
            "",
            "MIT WITH",
            "AND MIT",
            "MIT)",
        ] {
            assert!(License::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn crate_files_by_name_or_the_manifest_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("LICENSE-MIT"), "m").unwrap();
        std::fs::write(dir.path().join("license-apache-2.0"), "a").unwrap();
        std::fs::write(dir.path().join("README.md"), "r").unwrap();
        std::fs::create_dir(dir.path().join("LICENSES")).unwrap();
        let files = crate_license_files(dir.path(), "${V}/c-1.0.0").unwrap();
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "${V}/c-1.0.0/LICENSE-MIT",
                "${V}/c-1.0.0/license-apache-2.0"
            ]
        );

        let bare = tempfile::tempdir().unwrap();
        std::fs::write(
            bare.path().join("Cargo.toml"),
            "[package]\nname = \"c\"\nlicense = \"MIT\"\n",
        )
        .unwrap();
        let files = crate_license_files(bare.path(), "${V}/c-1.0.0").unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].lines, Some((3, 3)));
        assert_eq!(
            files[0].md5,
            format!("{:x}", Md5::digest(b"license = \"MIT\"\n"))
        );
        assert!(files[0]
            .entry()
            .starts_with("file://${V}/c-1.0.0/Cargo.toml;beginline=3;endline=3;md5="));
    }
}
