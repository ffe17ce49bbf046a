//! The module on 3.x and 4.x/5.x devices: it finds the client generation in the device root,
//! applies that generation's rules (a byte order mark, wrong value types), refuses a plan made
//! for the other generation, restarts that client's units, and writes whole diagnostic lines.

mod common;

use common::*;
use menderconf::{ClientGeneration, ConfigFile, Mode, Restart, ServerUrl, Stage, StagePlan};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The 4.x/5.x client's program, where its Debian/Yocto packages put it.
fn install_cpp_client(dev: &Device) {
    dev.write("usr/bin/mender-update", "#!/bin/sh\n", 0o755);
}

fn plan_for(stage: Stage, restart: Restart, client: ClientGeneration) -> Vec<u8> {
    let mut p = StagePlan::new(
        stage,
        Mode::Patch,
        ServerUrl::parse(OLD).unwrap(),
        ServerUrl::parse(NEW).unwrap(),
    );
    p.restart = restart;
    p.client = client;
    p.to_json()
}

fn write_main_with_bom(dev: &Device) {
    let mut bytes = BOM.to_vec();
    bytes.extend_from_slice(MAIN_OLD.as_bytes());
    std::fs::write(dev.path(MAIN), bytes).unwrap();
}

#[test]
fn a_bom_config_on_a_4_5_device_is_migrated_and_written_without_the_bom() {
    for client in [
        ClientGeneration::Any,
        ClientGeneration::V4,
        ClientGeneration::V5,
    ] {
        let dev = Device::debian();
        install_cpp_client(&dev);
        write_main_with_bom(&dev);
        let tree = dev.tree(
            "stage1",
            Some(&plan_for(Stage::Dual, Restart::Reboot, client)),
        );
        let (code, _, err) = dev.state("ArtifactInstall", &tree);
        assert_eq!(code, 0, "{client}: {err}");
        assert!(err.contains("client 4.x/5.x"), "{err}");
        let (main, _) = dev.configs();
        let main = main.unwrap();
        assert!(
            main.starts_with(b"{"),
            "{client}: {}",
            String::from_utf8_lossy(&main)
        );
        let file = ConfigFile::parse_for("main", &main, ClientGeneration::V3).unwrap();
        assert!(file.get("Servers").is_some(), "{client}");
    }
}

#[test]
fn a_bom_config_on_a_3_device_is_refused_naming_the_file_and_nothing_changes() {
    let dev = Device::debian();
    write_main_with_bom(&dev);
    let before = dev.configs();
    let tree = dev.tree(
        "stage1",
        Some(&plan_for(
            Stage::Dual,
            Restart::Reboot,
            ClientGeneration::Any,
        )),
    );
    let (code, _, err) = dev.state("ArtifactInstall", &tree);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("/etc/mender/mender.conf") && err.contains("byte order mark"),
        "{err}"
    );
    assert_eq!(dev.configs(), before);
}

#[test]
fn a_plan_for_the_other_generation_is_refused_and_nothing_changes() {
    for (cpp_device, planned) in [(true, ClientGeneration::V3), (false, ClientGeneration::V5)] {
        let dev = Device::debian();
        if cpp_device {
            install_cpp_client(&dev);
        }
        let before = dev.configs();
        let tree = dev.tree(
            "stage1",
            Some(&plan_for(Stage::Dual, Restart::Reboot, planned)),
        );
        let (code, _, err) = dev.state("ArtifactInstall", &tree);
        assert_eq!(code, 1, "{planned}: {err}");
        assert!(
            err.contains(&format!("--client {}", planned.as_str()))
                && err.contains("nothing was changed"),
            "{err}"
        );
        assert_eq!(dev.configs(), before, "{planned}");
        // Nothing installed: the client's later states find nothing to do.
        let (code, out, _) = dev.state("NeedsArtifactReboot", &tree);
        assert_eq!((code, out.trim()), (0, "No"));
    }
}

#[test]
fn a_wrong_value_type_is_kept_on_4_5_devices_and_refused_on_3() {
    let main =
        "{\"ServerURL\": \"https://old.example.com\", \"UpdatePollIntervalSeconds\": \"5\"}\n";
    for cpp_device in [true, false] {
        let dev = Device::debian();
        dev.write(MAIN, main, 0o644);
        if cpp_device {
            install_cpp_client(&dev);
        }
        let tree = dev.tree(
            "stage1",
            Some(&plan_for(
                Stage::Dual,
                Restart::Reboot,
                ClientGeneration::Any,
            )),
        );
        let (code, _, err) = dev.state("ArtifactInstall", &tree);
        assert!(err.contains("UpdatePollIntervalSeconds"), "{err}");
        if cpp_device {
            assert_eq!(code, 0, "{err}");
            assert!(err.contains("warning"), "{err}");
            let file = ConfigFile::parse_for("m", &dev.configs().0.unwrap(), ClientGeneration::V5)
                .unwrap();
            assert_eq!(file.get("UpdatePollIntervalSeconds"), Some(&"5".into()));
        } else {
            assert_eq!(code, 1, "{err}");
            assert_eq!(dev.configs().0.unwrap(), main.as_bytes());
        }
    }
}

#[test]
fn service_restart_restarts_the_units_of_the_client_found() {
    for (cpp_device, units) in [
        (false, "mender-client"),
        (true, "mender-authd mender-updated"),
    ] {
        let dev = Device::debian();
        if cpp_device {
            install_cpp_client(&dev);
        }
        let log = dev.fake_systemd_run(0);
        let tree = dev.tree(
            "stage1",
            Some(&plan_for(
                Stage::Dual,
                Restart::Service,
                ClientGeneration::Any,
            )),
        );
        dev.sequence(
            &tree,
            &[
                "ProvidePayloadFileSizes",
                "Download",
                "ArtifactInstall",
                "NeedsArtifactReboot",
                "SupportsRollback",
                "ArtifactCommit",
                "Cleanup",
            ],
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
    let dev = Device::debian();
    install_cpp_client(&dev);
    dev.write("usr/share/mender/inventory/.keep", "", 0o644);
    let tree = dev.tree(
        "stage1",
        Some(&plan_for(
            Stage::Dual,
            Restart::Reboot,
            ClientGeneration::Any,
        )),
    );
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
