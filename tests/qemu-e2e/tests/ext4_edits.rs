//! The debugfs-based editing the image builder and the scenarios rely on: files, modes, owners,
//! directories and symlinks written into an unmounted ext4 image read back exactly.

use qemu_e2e::ext4::{read_file, Edits};
use std::path::PathBuf;
use std::process::Command;

/// A scratch directory and an 8 MiB ext4 image in it (`disk.img`) holding `files` (path →
/// content); `None` when e2fsprogs is missing (after the skip notice `test` names).
fn scratch_image(test: &str, files: &[(&str, &[u8])]) -> Option<(tempfile::TempDir, PathBuf)> {
    test_support::require_tool(
        test,
        "debugfs",
        "e2fsprogs: tests/qemu-e2e/scripts/install-host-deps.sh",
    )?;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    for (path, content) in files {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }
    let image = dir.path().join("disk.img");
    test_support::mkfs_ext4(test, &root, &image, "8M")?;
    Some((dir, image))
}

#[test]
fn edits_round_trip_through_an_unmounted_image() {
    let Some((dir, image)) = scratch_image(
        "edits_round_trip_through_an_unmounted_image",
        &[(
            "etc/mender/mender.conf",
            b"{\"ServerURL\":\"http://old\"}\n",
        )],
    ) else {
        return;
    };

    let new_conf = dir.path().join("new.conf");
    std::fs::write(&new_conf, b"{\"ServerURL\":\"http://new\"}\n").unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, b"secret").unwrap();
    let mut edits = Edits::new();
    edits
        .write(&new_conf, "/etc/mender/mender.conf", 0o644)
        .unwrap();
    edits.mkdir_p("/data/mender", 0o700).unwrap();
    edits
        .write(&key, "/data/mender/mender-agent.pem", 0o600)
        .unwrap();
    edits.symlink("/var-lib-mender", "/data/mender").unwrap();
    edits.remove("/does/not/exist").unwrap();
    edits.apply(&image).unwrap();

    assert_eq!(
        read_file(&image, "/etc/mender/mender.conf")
            .unwrap()
            .unwrap(),
        b"{\"ServerURL\":\"http://new\"}\n"
    );
    assert_eq!(
        read_file(&image, "/data/mender/mender-agent.pem")
            .unwrap()
            .unwrap(),
        b"secret"
    );
    assert_eq!(read_file(&image, "/etc/mender/absent.conf").unwrap(), None);
    let stat = |path: &str| {
        let out = Command::new("debugfs")
            .arg("-R")
            .arg(format!("stat {path}"))
            .arg(&image)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        stat("/data/mender").contains("Mode:  0700"),
        "{}",
        stat("/data/mender")
    );
    assert!(stat("/data/mender/mender-agent.pem").contains("Mode:  0600"));
    assert!(stat("/data/mender/mender-agent.pem").contains("User:     0   Group:     0"));
    assert!(
        stat("/var-lib-mender").contains("Fast link dest: \"/data/mender\""),
        "{}",
        stat("/var-lib-mender")
    );
}

#[test]
fn a_failing_edit_is_an_error_not_a_silent_skip() {
    let Some((_dir, image)) = scratch_image("a_failing_edit_is_an_error_not_a_silent_skip", &[])
    else {
        return;
    };
    let mut edits = Edits::new();
    // The parent directory does not exist: debugfs cannot write the file.
    edits.write(&image, "/no/such/dir/file", 0o644).unwrap();
    let err = edits.apply(&image).unwrap_err().to_string();
    assert!(err.contains("/no/such/dir/file"), "{err}");
}
