//! Bad payloads and bad device configs: ArtifactInstall refuses with a clear message and leaves the device files byte-identical.

mod common;
use common::*;
use menderconf::{Restart, Stage};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Runs the 3.4 failure path and returns ArtifactInstall's stderr; asserts nothing changed.
fn refused(name: &str, dev: &Device, tree: &Path) -> String {
    let before = dev.configs();
    let (code, out, err) = dev.state("ArtifactInstall", tree);
    assert_eq!(code, 1, "{name}: ArtifactInstall must fail; stderr: {err}");
    assert_eq!(out, "", "{name}");
    assert!(
        err.starts_with("server-migration: error: "),
        "{name}: {err}"
    );
    assert_eq!(
        dev.configs(),
        before,
        "{name}: device files changed after a refused install"
    );
    let answers = dev.client(tree, &[ROLLBACK_34, FAILURE], &[]);
    assert_eq!(
        answers[1].1, "No\n",
        "{name}: nothing changed, so no reboot"
    );
    assert_eq!(
        dev.configs(),
        before,
        "{name}: device files changed by the rollback path"
    );
    err
}

/// One refused install: a device, the FILE_TREE the client hands the module, and what the error
/// message must contain.
struct Refusal {
    /// Names the case in every failure message (each was once a test of its own).
    name: &'static str,
    device: fn() -> Device,
    tree: fn(&Device) -> PathBuf,
    message: &'static [&'static str],
}

/// A patch-mode stage 1 FILE_TREE.
fn stage1(dev: &Device) -> PathBuf {
    dev.stage1(Restart::Reboot)
}

/// A replace-mode stage 1 whose plan maps the main file to `name`, with no payload files.
fn replace_main_with(dev: &Device, name: &str) -> PathBuf {
    dev.replace_tree("replace", "dual", &[(MAIN, Some(name))], &[])
}

const REFUSALS: &[Refusal] = &[
    Refusal {
        name: "missing plan",
        device: Device::debian,
        tree: |dev| dev.tree("no-plan", None),
        message: &["plan.json", "missing"],
    },
    Refusal {
        name: "invalid JSON plan",
        device: Device::debian,
        tree: |dev| dev.tree("bad-json", Some(b"{\"format\": 1, \"mode\": ")),
        message: &["files/plan.json", "invalid plan"],
    },
    Refusal {
        name: "unknown plan format",
        device: Device::debian,
        tree: |dev| {
            let plan = String::from_utf8(plan(Stage::Dual, Restart::Reboot))
                .unwrap()
                .replace("\"format\": 1", "\"format\": 7");
            assert!(plan.contains("\"format\": 7"));
            dev.tree("format7", Some(plan.as_bytes()))
        },
        message: &["format 7"],
    },
    Refusal {
        // Replace mode whose rendered main file has Servers while the fallback keeps its
        // ServerURL: the 3.4 client would exit 1 on this combination.
        name: "plan result with Servers and ServerURL",
        device: Device::debian,
        tree: |dev| {
            let main = servers_config(&[OLD, NEW]);
            let files = [(MAIN, Some("main.conf"))];
            dev.replace_tree("conflict", "dual", &files, &[("main.conf", &main)])
        },
        message: &["ServerURL", "Servers"],
    },
    Refusal {
        name: "empty Servers",
        device: Device::debian,
        tree: |dev| {
            let files = [(MAIN, Some("main.conf")), (FALLBACK, Some("fb.conf"))];
            let payload = [
                ("main.conf", "{\"Servers\": []}\n"),
                ("fb.conf", "{\"TenantToken\": \"tok-1234\"}\n"),
            ];
            dev.replace_tree("empty-servers", "dual", &files, &payload)
        },
        message: &["\"Servers\": []"],
    },
    Refusal {
        name: "invalid JSON on the device",
        device: || {
            let dev = Device::debian();
            dev.write(MAIN, "{\"ServerURL\": ", 0o644);
            dev
        },
        tree: stage1,
        message: &["/etc/mender/mender.conf", "invalid JSON"],
    },
    Refusal {
        name: "a directory where the fallback file should be",
        device: || {
            let dev = Device::debian();
            fs::remove_file(dev.path(FALLBACK_REAL)).unwrap();
            fs::create_dir(dev.path(FALLBACK_REAL)).unwrap();
            dev
        },
        tree: stage1,
        message: &["/var/lib/mender/mender.conf"],
    },
    Refusal {
        // Device talking to a third server: stage 1 built for another fleet.
        name: "wrong device for the stage",
        device: || {
            let dev = Device::empty();
            let other = "{\"ServerURL\": \"https://other.example.com\"}\n";
            dev.write(FALLBACK_REAL, other, 0o600);
            dev
        },
        tree: stage1,
        message: &["https://other.example.com"],
    },
    Refusal {
        name: "replace payload naming a missing file",
        device: Device::debian,
        tree: |dev| replace_main_with(dev, "nope.conf"),
        message: &["nope.conf", "/etc/mender/mender.conf"],
    },
    Refusal {
        name: "replace payload naming a foreign path",
        device: Device::debian,
        tree: |dev| dev.replace_tree("foreign-path", "dual", &[("/etc/passwd", None)], &[]),
        message: &["/etc/passwd"],
    },
    Refusal {
        name: "replace payload file escaping files/",
        device: Device::debian,
        tree: |dev| replace_main_with(dev, "../header/artifact_name"),
        message: &["not a plain file name"],
    },
];

#[test]
fn bad_payloads_and_device_configs_are_refused_with_nothing_changed() {
    for case in REFUSALS {
        let dev = (case.device)();
        let tree = (case.tree)(&dev);
        let err = refused(case.name, &dev, &tree);
        for part in case.message {
            assert!(err.contains(part), "{}: no {part:?} in: {err}", case.name);
        }
    }
}

#[test]
fn unreadable_device_config_is_refused() {
    // Unreadable (permissions); root reads anything, so only meaningful as non-root.
    let dev = Device::debian();
    fs::set_permissions(dev.path(MAIN), fs::Permissions::from_mode(0o000)).unwrap();
    if fs::read(dev.path(MAIN)).is_err() {
        let err = refused("unreadable", &dev, &stage1(&dev));
        assert!(
            err.contains("cannot read device config /etc/mender/mender.conf"),
            "{err}"
        );
    }
    fs::set_permissions(dev.path(MAIN), fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn corrupt_journal_stops_the_module_with_a_clear_error() {
    let dev = Device::debian();
    let before = dev.configs();
    fs::create_dir_all(dev.path("data/mender/server-migration")).unwrap();
    fs::write(
        dev.path("data/mender/server-migration/journal.cbor"),
        b"garbage",
    )
    .unwrap();
    let tree = stage1(&dev);
    let (code, _, err) = dev.state("ArtifactInstall", &tree);
    assert_eq!(code, 1);
    assert!(err.contains("journal") && err.contains("corrupt"), "{err}");
    assert_eq!(dev.configs(), before);
}
