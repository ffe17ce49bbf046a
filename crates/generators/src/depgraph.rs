//! What a binary is built from: the closure of a workspace package over normal and build
//! dependencies in `cargo metadata`'s resolve (dev-dependencies are not built into it), for the
//! recipe's `LICENSE` and `LIC_FILES_CHKSUM`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Deserialize;

use crate::GenError;

/// One package of the closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphPackage {
    pub name: String,
    pub version: String,
    /// SPDX expression from the manifest.
    pub license: Option<String>,
    /// The unpacked package (its `Cargo.toml`'s directory).
    pub dir: PathBuf,
    /// From a registry (crates.io), i.e. fetched by BitBake's crate fetcher; otherwise a path
    /// package of this project.
    pub registry: bool,
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<MetaPackage>,
    workspace_members: Vec<String>,
    resolve: Option<Resolve>,
}

#[derive(Deserialize)]
struct MetaPackage {
    id: String,
    name: String,
    version: String,
    license: Option<String>,
    manifest_path: PathBuf,
    source: Option<String>,
}

#[derive(Deserialize)]
struct Resolve {
    nodes: Vec<Node>,
}

#[derive(Deserialize)]
struct Node {
    id: String,
    deps: Vec<NodeDep>,
}

#[derive(Deserialize)]
struct NodeDep {
    pkg: String,
    dep_kinds: Vec<DepKind>,
}

#[derive(Deserialize)]
struct DepKind {
    /// `null` = normal, `"build"`, `"dev"`.
    kind: Option<String>,
}

/// The packages `package` (a workspace member) is built from, itself first, then sorted by
/// name and version. Every target platform counts (a recipe does not know which one it builds
/// for), so this is a superset of what one build links.
pub fn shipped_closure(metadata_json: &[u8], package: &str) -> Result<Vec<GraphPackage>, GenError> {
    let meta: Metadata = serde_json::from_slice(metadata_json)
        .map_err(|e| GenError::Invalid(format!("cannot read `cargo metadata` output: {e}")))?;
    let resolve = meta.resolve.ok_or_else(|| {
        GenError::Invalid("`cargo metadata` output has no resolve (ran with --no-deps?)".into())
    })?;
    let packages: BTreeMap<&str, &MetaPackage> =
        meta.packages.iter().map(|p| (p.id.as_str(), p)).collect();
    let nodes: BTreeMap<&str, &Node> = resolve.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let start = meta
        .workspace_members
        .iter()
        .find(|id| packages.get(id.as_str()).is_some_and(|p| p.name == package))
        .ok_or_else(|| GenError::Invalid(format!("no workspace member named `{package}`")))?;
    let mut seen = BTreeSet::from([start.as_str()]);
    let mut queue = vec![start.as_str()];
    while let Some(id) = queue.pop() {
        let node = nodes
            .get(id)
            .ok_or_else(|| GenError::Invalid(format!("`{id}` is missing from the resolve")))?;
        for dep in &node.deps {
            let built = dep
                .dep_kinds
                .iter()
                .any(|k| k.kind.as_deref() != Some("dev"));
            if built && seen.insert(dep.pkg.as_str()) {
                queue.push(dep.pkg.as_str());
            }
        }
    }
    let mut out = Vec::new();
    for id in seen {
        let p = packages
            .get(id)
            .ok_or_else(|| GenError::Invalid(format!("`{id}` is missing from the packages")))?;
        let dir = p
            .manifest_path
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        out.push(GraphPackage {
            name: p.name.clone(),
            version: p.version.clone(),
            license: p.license.clone(),
            dir,
            registry: p.source.is_some(),
        });
    }
    out.sort_by(|a, b| {
        (a.name != package, &a.name, &a.version).cmp(&(b.name != package, &b.name, &b.version))
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_normal_and_build_edges_but_not_dev_ones() {
        let json = serde_json::json!({
            "workspace_members": ["app"],
            "packages": [
                {"id": "app", "name": "app", "version": "0.1.0", "license": "MIT", "manifest_path": "/w/app/Cargo.toml", "source": null},
                {"id": "lib", "name": "lib", "version": "1.0.0", "license": "MIT", "manifest_path": "/r/lib-1.0.0/Cargo.toml", "source": "registry+x"},
                {"id": "gen", "name": "gen", "version": "2.0.0", "license": "Zlib", "manifest_path": "/r/gen-2.0.0/Cargo.toml", "source": "registry+x"},
                {"id": "test", "name": "test", "version": "3.0.0", "license": "ISC", "manifest_path": "/r/test-3.0.0/Cargo.toml", "source": "registry+x"}
            ],
            "resolve": {"nodes": [
                {"id": "app", "deps": [
                    {"pkg": "lib", "dep_kinds": [{"kind": null}]},
                    {"pkg": "test", "dep_kinds": [{"kind": "dev"}]}
                ]},
                {"id": "lib", "deps": [{"pkg": "gen", "dep_kinds": [{"kind": "build"}]}]},
                {"id": "gen", "deps": []},
                {"id": "test", "deps": []}
            ]}
        });
        let closure = shipped_closure(json.to_string().as_bytes(), "app").unwrap();
        let names: Vec<_> = closure.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["app", "gen", "lib"]);
        assert!(!closure[0].registry && closure[1].registry);
        assert_eq!(closure[2].dir, PathBuf::from("/r/lib-1.0.0"));
        assert!(shipped_closure(json.to_string().as_bytes(), "nope").is_err());
    }
}
