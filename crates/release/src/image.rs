//! The ext4 root filesystem image inside a rootfs artifact: read `/etc/mender/mender.conf`
//! with the pure-Rust `ext4-view` reader, and replace it with e2fsprogs' `debugfs`, the tool
//! `mender-artifact cp/modify` drive too (no well-kept pure-Rust ext4 *writer* exists).

use ext4_view::{Ext4, Ext4Error};
use std::io::Write as _;
use std::path::Path;
use std::process::Command;

/// What the image holds at `/etc/mender/mender.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MainConfig {
    Absent,
    File {
        bytes: Vec<u8>,
        mode: u16,
        uid: u32,
        gid: u32,
    },
    /// The path (or `/etc/mender`) is a symlink: the real file is elsewhere, usually on the data
    /// partition, which a rootfs update does not replace.
    Symlink {
        link: String,
        target: String,
    },
    /// Something other than a regular file (a directory, a device...).
    NotAFile(String),
}

fn image_err(e: Ext4Error) -> String {
    format!("cannot read it as ext2/3/4 ({e})")
}

/// Reads the main config out of the image file at `image`.
pub(crate) fn read_main_config(image: &Path) -> Result<MainConfig, String> {
    let fs = Ext4::load_from_path(image).map_err(image_err)?;
    for link in ["/etc", "/etc/mender", menderconf::MAIN_CONFIG_PATH] {
        match fs.symlink_metadata(link) {
            Ok(meta) if meta.is_symlink() => {
                let target = fs
                    .read_link(link)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|e| format!("<unreadable: {e}>"));
                return Ok(MainConfig::Symlink {
                    link: link.to_string(),
                    target,
                });
            }
            Ok(_) => {}
            Err(Ext4Error::NotFound) => return Ok(MainConfig::Absent),
            Err(e) => return Err(format!("{link}: {e}")),
        }
    }
    let meta = fs
        .symlink_metadata(menderconf::MAIN_CONFIG_PATH)
        .map_err(|e| format!("{}: {e}", menderconf::MAIN_CONFIG_PATH))?;
    if meta.is_dir() || meta.file_type() != ext4_view::FileType::Regular {
        return Ok(MainConfig::NotAFile(format!("{:?}", meta.file_type())));
    }
    if meta.len() > 1 << 20 {
        return Err(format!(
            "{} is {} bytes: not a mender.conf",
            menderconf::MAIN_CONFIG_PATH,
            meta.len()
        ));
    }
    let bytes = fs
        .read(menderconf::MAIN_CONFIG_PATH)
        .map_err(|e| format!("{}: {e}", menderconf::MAIN_CONFIG_PATH))?;
    Ok(MainConfig::File {
        bytes,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// Replaces (or creates) `/etc/mender/mender.conf` in the image with `content`, owned by
/// `uid:gid` with permission bits `mode`. The result is read back and compared.
pub(crate) fn write_main_config(
    image: &Path,
    content: &[u8],
    mode: u16,
    uid: u32,
    gid: u32,
) -> Result<(), String> {
    let dir = image.parent().unwrap_or(Path::new("."));
    let mut src = tempfile::Builder::new()
        .prefix(".mender-conf-")
        .tempfile_in(dir)
        .map_err(|e| format!("temp file in {}: {e}", dir.display()))?;
    src.write_all(content)
        .and_then(|()| src.flush())
        .map_err(|e| format!("writing the new config to a temp file: {e}"))?;
    let src_path = src.path().to_str().ok_or("temp path is not UTF-8")?;
    if src_path.contains(char::is_whitespace) || src_path.contains('"') {
        return Err(format!(
            "temp path '{src_path}' cannot be passed to debugfs"
        ));
    }
    let existed = matches!(read_main_config(image)?, MainConfig::File { .. });
    let mut script = String::from("cd /etc/mender\n");
    if existed {
        script.push_str("rm mender.conf\n");
    }
    script.push_str(&format!("write {src_path} mender.conf\n"));
    script.push_str(&format!(
        "sif mender.conf mode 0{:o}\n",
        0o100000 | (mode & 0o7777)
    ));
    script.push_str(&format!(
        "sif mender.conf uid {uid}\nsif mender.conf gid {gid}\n"
    ));
    let mut script_file = tempfile::Builder::new()
        .prefix(".debugfs-")
        .tempfile_in(dir)
        .map_err(|e| format!("temp file in {}: {e}", dir.display()))?;
    script_file
        .write_all(script.as_bytes())
        .and_then(|()| script_file.flush())
        .map_err(|e| format!("writing the debugfs script: {e}"))?;
    let out = Command::new(debugfs())
        .arg("-w")
        .arg("-f")
        .arg(script_file.path())
        .arg(image)
        .output()
        .map_err(|e| {
            format!("cannot run debugfs ({e}): install e2fsprogs (it provides debugfs, as for mender-artifact)")
        })?;
    // debugfs exits 0 even when a command fails; its errors go to stderr.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .collect();
    if !out.status.success() || !errors.is_empty() {
        return Err(format!(
            "debugfs could not replace {}: {}",
            menderconf::MAIN_CONFIG_PATH,
            errors.join("; ")
        ));
    }
    match read_main_config(image)? {
        MainConfig::File { bytes, .. } if bytes == content => Ok(()),
        other => Err(format!(
            "after debugfs, {} does not hold the new config ({})",
            menderconf::MAIN_CONFIG_PATH,
            match other {
                MainConfig::File { bytes, .. } => format!("{} different bytes", bytes.len()),
                o => format!("{o:?}"),
            }
        )),
    }
}

/// `debugfs` lives in /sbin or /usr/sbin, often outside a user's PATH.
fn debugfs() -> String {
    for p in ["/usr/sbin/debugfs", "/sbin/debugfs"] {
        if Path::new(p).exists() {
            return p.to_string();
        }
    }
    "debugfs".to_string()
}
