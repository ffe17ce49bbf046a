//! The module on 3.x and 4.x/5.x devices: it finds the client generation in the device root,
//! applies that generation's rules (a byte order mark, wrong value types), refuses a plan made
//! for the other generation, restarts that client's units, and writes whole diagnostic lines.

mod common;

use common::*;
use menderconf::{ClientGeneration, ConfigFile, Restart, Stage, StagePlan};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A Debian device; with the 4.x/5.x client's program (where its packages put it) if `cpp`.
fn device(cpp: bool) -> Device {
    let dev = Device::debian();
    if cpp {
        dev.write("usr/bin/mender-update", "#!/bin/sh\n", 0o755);
    }
    dev
}

/// A stage-1 FILE_TREE whose plan was built with `--client client`.
fn stage1(dev: &Device, restart: Restart, client: ClientGeneration) -> PathBuf {
    let mut p = StagePlan::from_json(&plan(Stage::Dual, restart)).unwrap();
    p.client = client;
    dev.tree("stage1", Some(&p.to_json()))
}

/// ArtifactInstall of a stage 1 built for `client`: (exit code, stderr).
fn install(dev: &Device, client: ClientGeneration) -> (i32, String) {
    let tree = stage1(dev, Restart::Reboot, client);
    let (code, _, err) = dev.state("ArtifactInstall", &tree);
    (code, err)
}

fn write_main_with_bom(dev: &Device) {
    let mut bytes = BOM.to_vec();
    bytes.extend(std::fs::read(dev.path(MAIN)).unwrap());
    std::fs::write(dev.path(MAIN), bytes).unwrap();
}

#[test]
fn a_bom_config_on_a_4_5_device_is_migrated_and_written_without_the_bom() {
    for client in [
        ClientGeneration::Any,
        ClientGeneration::V4,
        ClientGeneration::V5,
    ] {
        let dev = device(true);
        write_main_with_bom(&dev);
        let (code, err) = install(&dev, client);
        assert_eq!(code, 0, "{client}: {err}");
        assert!(err.contains("client 4.x/5.x"), "{err}");
        let main = dev.configs().0.unwrap();
        assert!(
            main.starts_with(b"{"),
            "{client}: {}",
            String::from_utf8_lossy(&main)
        );
        let file = ConfigFile::parse_for("main", &main, ClientGeneration::V3).unwrap();
        assert!(file.get("Servers").is_some(), "{client}");
    }
}

/// Devices the module must refuse, nothing changed: (4.x/5.x device?, main config or the
/// Debian one, --client, what the error says).
#[test]
fn refusals_per_generation_change_nothing() {
    let typed =
        "{\"ServerURL\": \"https://old.example.com\", \"UpdatePollIntervalSeconds\": \"5\"}\n";
    let cases = [
        (
            false,
            Some("bom"),
            ClientGeneration::Any,
            "/etc/mender/mender.conf: starts with a UTF-8 byte order mark",
        ),
        (
            false,
            Some(typed),
            ClientGeneration::Any,
            "`UpdatePollIntervalSeconds` must be an integer",
        ),
        (
            true,
            None,
            ClientGeneration::V3,
            "built for client 3.x (--client 3) but this device runs client 4.x/5.x",
        ),
        (
            false,
            None,
            ClientGeneration::V5,
            "built for client 5.x (--client 5) but this device runs client 3.x",
        ),
    ];
    for (cpp, main, client, says) in cases {
        let dev = device(cpp);
        match main {
            Some("bom") => write_main_with_bom(&dev),
            Some(text) => dev.write(MAIN, text, 0o644),
            None => {}
        }
        let before = dev.configs();
        let (code, err) = install(&dev, client);
        assert_eq!(code, 1, "{client}: {err}");
        assert!(err.contains(says), "{client}: {err}");
        assert_eq!(dev.configs(), before, "{client}: {err}");
    }
}

#[test]
fn a_wrong_value_type_is_kept_on_a_4_5_device_with_a_warning() {
    let dev = device(true);
    let main =
        "{\"ServerURL\": \"https://old.example.com\", \"UpdatePollIntervalSeconds\": \"5\"}\n";
    dev.write(MAIN, main, 0o644);
    let (code, err) = install(&dev, ClientGeneration::Any);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning") && err.contains("UpdatePollIntervalSeconds"),
        "{err}"
    );
    let file = ConfigFile::parse_for("m", &dev.configs().0.unwrap(), ClientGeneration::V5).unwrap();
    assert_eq!(file.get("UpdatePollIntervalSeconds"), Some(&"5".into()));
}

#[test]
fn service_restart_restarts_the_units_of_the_client_found() {
    for (cpp, units) in [
        (false, "mender-client"),
        (true, "mender-authd mender-updated"),
    ] {
        let dev = device(cpp);
        let log = dev.fake_systemd_run(0);
        let tree = stage1(&dev, Restart::Service, ClientGeneration::Any);
        dev.client(
            &tree,
            &[INSTALL_5X, QUESTIONS_5X, &["ArtifactCommit", "Cleanup"]],
            &[],
        );
        let logged = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            logged.trim(),
            format!("--on-active=30 --unit=server-migration-restart systemctl restart {units}")
        );
    }
}

/// Runs the module binary with its stderr on a datagram socket: every write(2) arrives as one
/// datagram, so the test sees exactly the chunks a pipe reader such as the 5.x client gets.
fn stderr_writes(dev: &Device, args: &[&str]) -> Vec<String> {
    let (ours, theirs) = UnixDatagram::pair().unwrap();
    let status = Command::new(BIN)
        .args(args)
        .env("SERVER_MIGRATION_ROOT", dev.root())
        .stdout(Stdio::null())
        .stderr(Stdio::from(OwnedFd::from(theirs)))
        .status()
        .unwrap();
    assert!(status.code().is_some(), "{status:?}");
    ours.set_nonblocking(true).unwrap();
    let mut writes = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = ours.recv(&mut buf) {
        writes.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    writes
}

#[test]
fn every_diagnostic_write_is_one_whole_line() {
    let dev = device(true);
    dev.write("usr/share/mender/inventory/.keep", "", 0o644);
    let tree = stage1(&dev, Restart::Reboot, ClientGeneration::Any);
    let install = stderr_writes(&dev, &["ArtifactInstall", tree.to_str().unwrap()]);
    // The client line, the installed line and the inventory script line.
    assert!(install.len() >= 3, "{install:?}");
    let usage = stderr_writes(&dev, &["recover", "extra", "arguments"]);
    assert!(usage.len() > 3, "{usage:?}");
    let refused = stderr_writes(&dev, &["ArtifactInstall", "/nonexistent/tree"]);
    // (It first rolls back the install above, which the client abandoned: one more line.)
    assert!(!refused.is_empty(), "{refused:?}");
    for write in install.iter().chain(&usage).chain(&refused) {
        assert!(
            write.ends_with('\n') && write.matches('\n').count() == 1,
            "not one whole line: {write:?}"
        );
    }
    let last = refused.last().unwrap();
    assert!(last.starts_with("server-migration: error: "), "{refused:?}");
}
