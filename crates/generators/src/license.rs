//! License handling for recipes: SPDX expression -> OE `LICENSE`, and the license files with
//! their md5 for `LIC_FILES_CHKSUM`.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use md5::{Digest, Md5};

use crate::GenError;

/// One `LIC_FILES_CHKSUM` entry: path relative to the source root, md5 of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseFile {
    pub path: String,
    pub md5: String,
}

/// A crate's license, translated for BitBake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeLicense {
    /// OE syntax: `MIT | Apache-2.0` (`|` = choice, `&` = both).
    pub expression: String,
    pub files: Vec<LicenseFile>,
}

/// Translate an SPDX expression (`A OR B`, `A AND B`, legacy `A/B`) into OE syntax and find each
/// license's file under `root`. OE reads `A OR B` as three licenses, so passing SPDX through (as
/// cargo-bitbake does) would be wrong. Parentheses and `WITH` are refused rather than guessed.
pub fn resolve(spdx: &str, root: &Path) -> Result<RecipeLicense, GenError> {
    let mut ids = Vec::new();
    let mut expression = String::new();
    for token in spdx.replace('/', " OR ").split_whitespace() {
        match token {
            "OR" => expression.push_str(" | "),
            "AND" => expression.push_str(" & "),
            t if t.contains(['(', ')']) || t == "WITH" => {
                return Err(GenError::Invalid(format!(
                "license `{spdx}`: parentheses and WITH are not supported; use a plain OR/AND list"
            )))
            }
            id => {
                if expression.ends_with(|c: char| c.is_alphanumeric() || c == '.' || c == '+') {
                    return Err(GenError::Invalid(format!(
                        "license `{spdx}`: two license ids without OR/AND between them"
                    )));
                }
                expression.push_str(id);
                ids.push(id.to_string());
            }
        }
    }
    if ids.is_empty() || expression.ends_with(' ') {
        return Err(GenError::Invalid(format!(
            "license `{spdx}` is not a usable SPDX expression"
        )));
    }
    let single = ids.len() == 1;
    let mut files = Vec::new();
    for id in &ids {
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
        });
    }
    Ok(RecipeLicense { expression, files })
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

    #[test]
    fn spdx_or_becomes_oe_choice_with_rust_style_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("LICENSE-MIT"), "mit text\n").unwrap();
        std::fs::write(dir.path().join("LICENSE-APACHE"), "apache text\n").unwrap();
        let lic = resolve("MIT OR Apache-2.0", dir.path()).unwrap();
        assert_eq!(lic.expression, "MIT | Apache-2.0");
        assert_eq!(lic.files[0].path, "LICENSE-MIT");
        assert_eq!(lic.files[1].path, "LICENSE-APACHE");
        // md5("mit text\n")
        assert_eq!(
            lic.files[0].md5,
            format!("{:x}", Md5::digest(b"mit text\n"))
        );
        assert_eq!(
            resolve("MIT/Apache-2.0", dir.path()).unwrap().expression,
            "MIT | Apache-2.0"
        );
    }

    #[test]
    fn missing_file_and_odd_expressions_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("LICENSE-MIT"), "x").unwrap();
        let err = resolve("MIT AND GPL-2.0-only", dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("GPL-2.0-only"), "{err}");
        assert!(resolve("(MIT OR Apache-2.0)", dir.path()).is_err());
        assert!(resolve("MIT Apache-2.0", dir.path()).is_err());
        assert!(resolve("MIT OR", dir.path()).is_err());
    }
}
