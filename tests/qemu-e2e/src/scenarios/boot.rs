//! `boot`: the guest boots and the real client authenticates on old and sends inventory.

use crate::artifacts::Transport;
use crate::guest::{BASE_ARTIFACT, DEVICE_TYPE};
use crate::harness::{inventory_attr, Run, Which};
use anyhow::{ensure, Context, Result};
use std::process::Command;

pub(crate) fn boot(run: &mut Run) -> Result<()> {
    run.start_servers(Transport::Http, false)?;
    run.prepare_disk(true, |_, _| Ok(()))?;
    run.boot()?;
    run.accept_on_old()?;
    let inv = run.wait_inventory(
        Which::Old,
        "inventory with device_type and artifact_name",
        |inv| {
            inventory_attr(inv, "device_type").is_some()
                && inventory_attr(inv, "artifact_name").is_some()
        },
    )?;
    let attr = |n: &str| inventory_attr(&inv, n);
    ensure!(
        attr("device_type") == Some(DEVICE_TYPE.into()),
        "inventory device_type is {:?}",
        attr("device_type")
    );
    ensure!(
        attr("artifact_name") == Some(BASE_ARTIFACT.into()),
        "inventory artifact_name is {:?}",
        attr("artifact_name")
    );
    ensure!(
        attr("serial") == Some(run.serial_number.clone().into()),
        "identity serial is {:?}",
        attr("serial")
    );
    // The client used the key provisioned on the disk (it generates none under emulation).
    let provisioned = crate::host::run(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(run.dir.join("inject/device-key.pem")),
    )?;
    let device = run
        .server(Which::Old)?
        .device_by_serial(&run.serial_number)?
        .context("device gone")?;
    let sent = device["auth_sets"][0]["pubkey"]
        .as_str()
        .unwrap_or_default();
    let squash = |s: &str| s.split_whitespace().collect::<String>();
    ensure!(
        squash(sent) == squash(&provisioned),
        "the device authenticated with a key other than the provisioned one"
    );
    // The guest can reach only the two forwarded addresses: nothing arrived at new.
    ensure!(
        run.server(Which::New)?.requests()?.is_empty(),
        "the device contacted new although its config lists only old"
    );
    run.stop_vm()?;
    run.expect_servers(&[run.old_url()], "after boot")?;
    run.expect_client_healthy()
}
