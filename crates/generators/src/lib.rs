//! Generators for everything that packages the migration for a build system: cargo-bitbake style
//! BitBake recipes, the `meta-migration` Yocto layer (plain or with captured configs baked in) and
//! mender-convert rootfs overlays for Debian-family images.
//!
//! The crate renders file trees in memory ([`tree::FileTree`]) and writes or compares them; it
//! never prints. Config contents always come from `menderconf`, never from local rules.

pub mod depgraph;
pub mod error;
pub mod layer;
pub mod license;
pub mod lockfile;
pub mod overlay;
pub mod project;
pub mod recipe;
pub mod tree;

pub use error::GenError;
