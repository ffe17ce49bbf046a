//! `check-release` and `rootfs --from` end to end, on artifacts written by the official
//! `mender-artifact` tool, checked back with `mender-artifact read/validate`, `debugfs` and
//! `e2fsck`.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const OLD: &str = "https://old.example.com";
const NEW: &str = "https://new.example.com";

/// An e2fsprogs tool (in sbin, often outside PATH); missing in CI fails, locally a loud skip.
fn sbin(name: &str) -> Option<PathBuf> {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Some(p);
        }
    }
    test_support::require_tool("this test", name, "run .ci/install-deps (e2fsprogs)")
}

fn tools() -> bool {
    have("mender-artifact")
        && sbin("mkfs.ext4").is_some()
        && sbin("debugfs").is_some()
        && sbin("e2fsck").is_some()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// An ext4 image with a small but varied tree and the given main config.
fn image(dir: &Path, conf: &str) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc/mender")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("var/lib")).unwrap();
    std::fs::write(root.join("etc/mender/mender.conf"), conf).unwrap();
    std::fs::write(
        root.join("etc/mender/artifact_info"),
        "artifact_name=rel-1\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/hostname"), "device\n").unwrap();
    let mut blob = Vec::new();
    for i in 0..200_000u32 {
        blob.extend_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
    }
    std::fs::write(root.join("usr/bin/tool"), &blob).unwrap();
    std::os::unix::fs::symlink("/data/mender", root.join("var/lib/mender")).unwrap();
    let img = dir.join("rootfs.ext4");
    test_support::mkfs_ext4("this test", &root, &img, "4M").expect("tools() checked mkfs.ext4");
    img
}

/// `mender-artifact write rootfs-image` (the official tool) of `img`.
fn official_artifact(dir: &Path, img: &Path, extra: &[&str]) -> PathBuf {
    let art = dir.join("current.mender");
    run(
        test_support::official_rootfs_write("mender-artifact", "rel-1", "qemux86-64", img, &art)
            .args(extra),
    );
    art
}

/// The ext4 image inside an artifact (`data/0000.tar[.gz]` → the single file).
fn extract_image(art: &Path, out: &Path) {
    let file = std::fs::File::open(art).unwrap();
    let mut outer = tar::Archive::new(file);
    for entry in outer.entries().unwrap() {
        let entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("data/") {
            continue;
        }
        let inner: Box<dyn std::io::Read> = if name.ends_with(".gz") {
            Box::new(flate2::read::MultiGzDecoder::new(entry))
        } else {
            Box::new(entry)
        };
        let mut data = tar::Archive::new(inner);
        let mut f = data.entries().unwrap().next().unwrap().unwrap();
        std::io::copy(&mut f, &mut std::fs::File::create(out).unwrap()).unwrap();
        return;
    }
    panic!("{}: no data member", art.display());
}

/// Every file of an image (via `debugfs rdump`): path → content or symlink target.
fn tree(img: &Path, dest: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::create_dir_all(dest).unwrap();
    run(Command::new(sbin("debugfs").unwrap())
        .arg("-R")
        .arg(format!("rdump / {}", dest.display()))
        .arg(img));
    let mut out = BTreeMap::new();
    let mut stack = vec![dest.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dest).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(rel, t.to_string_lossy().as_bytes().to_vec());
            } else if meta.is_dir() {
                out.insert(rel, b"<dir>".to_vec());
                stack.push(p);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn debugfs_cat(img: &Path, path: &str) -> String {
    let out = run(Command::new(sbin("debugfs").unwrap())
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(img));
    text(&out.stdout)
}

/// The main config of the image `img` (via `debugfs cat`), parsed.
fn image_config(img: &Path) -> serde_json::Value {
    serde_json::from_str(&debugfs_cat(img, "/etc/mender/mender.conf")).unwrap()
}

/// `mender-artifact validate [-k public] art`, unchecked.
fn validate(art: &Path, public: Option<&Path>) -> Output {
    let mut cmd = Command::new("mender-artifact");
    cmd.arg("validate");
    if let Some(public) = public {
        cmd.arg("-k").arg(public);
    }
    cmd.arg(art).output().unwrap()
}

/// `mender-migrate HEAD... --stage STAGE --old-server OLD --new-server NEW TAIL...`.
fn staged_cli(head: &[&str], stage: &str, tail: &[&str]) -> Output {
    let mut args = head.to_vec();
    args.extend_from_slice(&["--stage", stage, "--old-server", OLD, "--new-server", NEW]);
    args.extend_from_slice(tail);
    cli(&args)
}

fn rootfs(from: &Path, out: &Path, stage: &str, extra: &[&str]) -> Output {
    let mut tail = vec!["--out", out.to_str().unwrap()];
    tail.extend_from_slice(extra);
    staged_cli(&["rootfs", "--from", from.to_str().unwrap()], stage, &tail)
}

fn check_release(art: &Path, stage: &str) -> Output {
    staged_cli(
        &["check-release", art.to_str().unwrap()],
        stage,
        &["--json"],
    )
}

/// `check-release --json ART --stage STAGE`, which must exit 0 when `passes`, else 1.
fn gate(art: &Path, stage: &str, passes: bool) -> Output {
    let o = check_release(art, stage);
    assert_eq!(
        o.status.code(),
        Some(if passes { 0 } else { 1 }),
        "check-release {} --stage {stage}: {}{}",
        art.display(),
        text(&o.stdout),
        text(&o.stderr)
    );
    o
}

/// `rootfs --from FROM --stage STAGE EXTRA` into `out_dir`, which must succeed; the path of
/// the artifact `file` it wrote there.
fn stage_release(from: &Path, out_dir: &Path, stage: &str, extra: &[&str], file: &str) -> PathBuf {
    let o = rootfs(from, out_dir, stage, extra);
    assert!(o.status.success(), "{}", text(&o.stderr));
    out_dir.join(file)
}

/// The main config of the image inside `art`, extracted to `img` (kept for further checks).
fn artifact_config(art: &Path, img: &Path) -> serde_json::Value {
    extract_image(art, img);
    image_config(img)
}

/// A scratch dir with the release `rel-1` in it: the image holding `conf` as its main config
/// and the official tool's artifact of it (`extra`: more `write` flags). `None` when a tool is
/// missing (after the notice; the test returns).
fn release(conf: &str, extra: &[&str]) -> Option<(tempfile::TempDir, PathBuf, PathBuf)> {
    if !tools() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), conf);
    let current = official_artifact(dir.path(), &img, extra);
    Some((dir, img, current))
}

/// `Name:`, the payload file `name:` and `size:` lines of `mender-artifact read`.
fn read_summary(art: &Path) -> (String, Vec<String>) {
    let out = run(Command::new("mender-artifact").arg("read").arg(art));
    let s = text(&out.stdout);
    let name = s
        .lines()
        .find_map(|l| l.trim().strip_prefix("Name: "))
        .unwrap_or_default()
        .to_string();
    let files = s
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("name:") || l.starts_with("size:"))
        .map(str::to_string)
        .collect();
    (name, files)
}

#[test]
fn rootfs_from_an_official_artifact_changes_only_the_config() {
    let conf = format!(
        "{{\n  \"ServerURL\": \"{OLD}\",\n  \"TenantToken\": \"tenant-secret-9876\",\n  \"RootfsPartA\": \"/dev/sda2\",\n  \"InventoryPollIntervalSeconds\": 30\n}}\n"
    );
    let Some((dir, img, current)) = release(&conf, &[]) else {
        return;
    };
    let d = dir.path();
    // The gate refuses the current release for a fleet at stage 1.
    gate(&current, "dual", false);

    let out_dir = d.join("out");
    let o = rootfs(&current, &out_dir, "dual", &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(
        !stdout.contains("tenant-secret-9876"),
        "token printed: {stdout}"
    );
    assert!(stdout.contains("********9876"), "{stdout}");
    let staged = out_dir.join("rel-1-stage1-dual.mender");
    assert!(staged.is_file(), "{stdout}");
    let names: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "leftovers in the output dir: {names:?}");

    test_support::assert_success("mender-artifact validate", &validate(&staged, None));
    let (old_name, old_files) = read_summary(&current);
    let (new_name, new_files) = read_summary(&staged);
    assert_eq!(old_name, "rel-1");
    assert_eq!(new_name, "rel-1-stage1-dual");
    assert_eq!(
        old_files, new_files,
        "the payload file (name, size) must stay the same"
    );

    let new_img = d.join("new.ext4");
    let cfg = artifact_config(&staged, &new_img);
    run(Command::new(sbin("e2fsck").unwrap())
        .arg("-fn")
        .arg(&new_img));
    assert_eq!(cfg["Servers"][0]["ServerURL"], OLD);
    assert_eq!(cfg["Servers"][1]["ServerURL"], NEW);
    assert!(cfg.get("ServerURL").is_none());
    assert_eq!(cfg["TenantToken"], "tenant-secret-9876");
    assert_eq!(cfg["InventoryPollIntervalSeconds"], 30);

    let mut before = tree(&img, &d.join("t-old"));
    let mut after = tree(&new_img, &d.join("t-new"));
    let conf_key = "etc/mender/mender.conf".to_string();
    assert_ne!(before.remove(&conf_key), after.remove(&conf_key));
    assert_eq!(
        before, after,
        "every file but mender.conf must be unchanged"
    );
    assert!(before.contains_key("usr/bin/tool") && before.contains_key("var/lib/mender"));

    // The result passes the gate at stage 1; `inspect` shows the new name and checksum.
    let passed = gate(&staged, "dual", true);
    let v: serde_json::Value = serde_json::from_slice(&passed.stdout).unwrap();
    assert_eq!(v["pass"], true);
    let insp = cli(&["inspect", staged.to_str().unwrap(), "--json"]);
    assert!(insp.status.success(), "{}", text(&insp.stderr));
    let insp: serde_json::Value = serde_json::from_slice(&insp.stdout).unwrap();
    assert_eq!(insp["name"], "rel-1-stage1-dual");
    assert_eq!(
        insp["provides"]["rootfs-image.version"],
        "rel-1-stage1-dual"
    );
    assert_eq!(
        insp["provides"]["rootfs-image.checksum"],
        insp["files"][0]["sha256"]
    );

    // Stage 2 from the stage-1 artifact; an existing output needs --force.
    let s2_args = ["--name", "rel-1-s2"];
    let s2 = stage_release(&staged, &out_dir, "new-only", &s2_args, "rel-1-s2.mender");
    let o = rootfs(&staged, &out_dir, "new-only", &s2_args);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("--force"), "{}", text(&o.stderr));
    gate(&s2, "new-only", true);
    gate(&s2, "dual", false);
}

#[test]
fn lzma_releases_are_gated_and_staged_like_gzip_ones() {
    // `mender-artifact --compression lzma` (Yocto's ARTIFACTIMG_COMPRESSION = "lzma"):
    // check-release reads it; rootfs --from writes the stage artifact with gzip.
    let conf = format!("{{\n  \"ServerURL\": \"{OLD}\",\n  \"RootfsPartA\": \"/dev/sda2\"\n}}\n");
    let Some((dir, _, current)) = release(&conf, &["--compression", "lzma"]) else {
        return;
    };
    let d = dir.path();
    let refused = gate(&current, "dual", false);
    let v: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(v["pass"], false);

    let out_dir = d.join("out");
    let staged = stage_release(&current, &out_dir, "dual", &[], "rel-1-stage1-dual.mender");
    test_support::assert_success("mender-artifact validate", &validate(&staged, None));
    let listing = run(Command::new("tar").arg("tf").arg(&staged));
    assert!(
        text(&listing.stdout).contains("data/0000.tar.gz"),
        "{}",
        text(&listing.stdout)
    );
    let img1 = d.join("stage1.ext4");
    let cfg = artifact_config(&staged, &img1);
    assert_eq!(cfg["Servers"][0]["ServerURL"], OLD);
    assert_eq!(cfg["Servers"][1]["ServerURL"], NEW);
    gate(&staged, "dual", true);

    // A stage-1 release written with lzma passes, like a gzip one.
    let art1 = d.join("s1-lzma.mender");
    run(test_support::official_rootfs_write(
        "mender-artifact",
        "rel-2",
        "qemux86-64",
        &img1,
        &art1,
    )
    .args(["--compression", "lzma"]));
    gate(&art1, "dual", true);

    // A corrupt xz member is an error naming the artifact and the problem (the payload's
    // checksum, or the xz check when the damage hits the stream's framing), exit 1.
    let mut bytes = std::fs::read(&current).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    let bad = d.join("corrupt.mender");
    std::fs::write(&bad, bytes).unwrap();
    let refused = gate(&bad, "dual", false);
    let all = format!("{}{}", text(&refused.stdout), text(&refused.stderr));
    assert!(all.contains("corrupt.mender"), "{all}");
    assert!(
        all.contains("data/0000.tar.xz") || all.contains("checksum mismatch"),
        "{all}"
    );
}

#[test]
fn signed_input_is_re_signed_with_sign_key() {
    if !tools() || !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let openssl = test_support::which("openssl").expect("checked above");
    let (key, public) = test_support::gen_key(&openssl, d, test_support::KeyKind::P256Sec1);
    let key_s = key.to_str().unwrap();
    let img = image(d, &format!("{{\"ServerURL\": \"{OLD}\"}}"));
    let current = official_artifact(d, &img, &["-k", key_s, "--compression", "none"]);
    test_support::assert_success(
        "mender-artifact validate -k",
        &validate(&current, Some(&public)),
    );

    let out_dir = d.join("out");
    let sign = ["--sign-key", key_s];
    let staged = stage_release(
        &current,
        &out_dir,
        "new-only",
        &sign,
        "rel-1-stage2-new-only.mender",
    );
    test_support::assert_success(
        "mender-artifact validate -k",
        &validate(&staged, Some(&public)),
    );
    let cfg = artifact_config(&staged, &d.join("new.ext4"));
    assert_eq!(cfg, serde_json::json!({ "ServerURL": NEW }));

    // Without --sign-key the result is unsigned (editing drops the old signature).
    let unsigned = stage_release(&current, &out_dir, "dual", &[], "rel-1-stage1-dual.mender");
    let v = validate(&unsigned, Some(&public));
    assert!(
        !v.status.success(),
        "an unsigned result must not validate with -k"
    );
}

#[test]
fn rootfs_refuses_when_the_server_setting_is_on_the_data_partition() {
    let Some((dir, _, current)) = release(
        "{\"RootfsPartA\": \"/dev/sda2\"}",
        &["--compression", "none"],
    ) else {
        return;
    };
    let d = dir.path();
    let out_dir = d.join("out");
    let o = rootfs(&current, &out_dir, "dual", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    let err = text(&o.stderr);
    assert!(
        err.contains("/var/lib/mender/mender.conf on the data partition"),
        "{err}"
    );
    assert!(err.contains("mender-migrate artifacts"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert!(left.is_empty(), "nothing may be left behind: {left:?}");

    // With --config the refusal stands: the device's fallback would still hold its servers.
    let conf = d.join("given.conf");
    std::fs::write(&conf, format!("{{\"ServerURL\": \"{OLD}\"}}")).unwrap();
    let o = rootfs(
        &current,
        &out_dir,
        "dual",
        &["--config", conf.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));

    // A gate on the same release passes, on the condition stated for the fallback file.
    let passed = gate(&current, "dual", true);
    let v: serde_json::Value = serde_json::from_slice(&passed.stdout).unwrap();
    assert!(v["conditions"][0]
        .as_str()
        .unwrap()
        .contains("/var/lib/mender/mender.conf"));
}

#[test]
fn module_image_passes_the_gate_without_config_change() {
    if !have("mender-artifact") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = d.join("app.bin");
    std::fs::write(&f, "payload").unwrap();
    let art = d.join("app.mender");
    run(Command::new("mender-artifact")
        .args([
            "write",
            "module-image",
            "-T",
            "app-update",
            "-n",
            "app-1",
            "-t",
            "qemux86-64",
            "-f",
        ])
        .arg(&f)
        .arg("-o")
        .arg(&art));
    let o = check_release(&art, "new-only");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["payload_type"], "app-update");
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .contains("no config change"),
        "{v}"
    );
}

#[test]
fn usage_errors_exit_2() {
    // (arguments, exit code): a missing flag is a usage error; a missing file is a refusal.
    let cases: [(&[&str], i32); 3] = [
        (
            &[
                "check-release",
                "x.mender",
                "--old-server",
                OLD,
                "--new-server",
                NEW,
            ],
            2,
        ),
        (
            &[
                "rootfs",
                "--from",
                "x.mender",
                "--stage",
                "dual",
                "--old-server",
                OLD,
            ],
            2,
        ),
        (
            &[
                "check-release",
                "missing.mender",
                "--stage",
                "dual",
                "--old-server",
                OLD,
                "--new-server",
                NEW,
            ],
            1,
        ),
    ];
    for (args, code) in cases {
        let o = cli(args);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", text(&o.stderr));
        if code == 1 {
            assert!(
                text(&o.stderr).contains("missing.mender"),
                "{args:?}: {}",
                text(&o.stderr)
            );
        }
    }
}

#[test]
fn plan_prints_the_release_gate() {
    let out = plan(EXAMPLE, EXAMPLE_NEW, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("Release gate"), "{s}");
    assert!(s.contains("MIGRATION_STAGE = \"dual\""), "{s}");
    assert!(s.contains("--overlay stage1-dual"), "{s}");
    assert!(
        s.contains("mender-migrate check-release IMAGE.mender"),
        "{s}"
    );
}
