//! `new-down-stage1`: the new server is down while stage 1 runs.

use crate::artifacts::{Mode, Transport};
use crate::harness::{Run, Which};
use crate::servers::now_epoch;
use crate::speed::budget;
use anyhow::{ensure, Context, Result};

pub(crate) fn new_down_stage1(run: &mut Run) -> Result<()> {
    let set = run.env.artifacts(Mode::Patch, Transport::Http)?;
    let (stage1, stage2) = (set.stage1.clone(), set.stage2.clone());
    run.start_servers(Transport::Http, true)?;
    run.prepare_disk(true, |_, _| Ok(()))?;
    run.boot()?;
    run.accept_on_old()?;
    let r = run.deploy(Which::Old, &stage1)?;
    let status = r["status"].as_str().unwrap_or("?").to_string();
    ensure!(
        status == "success" || status == "failure",
        "stage 1 with new down ended `{status}`"
    );
    // The device keeps working with old: more update checks answered there.
    let t = now_epoch();
    run.wait_polls(
        Which::Old,
        t,
        2,
        "update checks at old after stage 1",
        budget(20),
    )?;
    run.log(&format!(
        "stage 1 ended `{status}` with new down; device still polling old"
    ));
    // Later the new server comes up and the migration continues.
    run.new.as_mut().context("no new server")?.restart()?;
    if status == "failure" {
        let r = run.deploy(Which::Old, &stage1)?;
        run.expect_status(&r, "success")?;
    }
    run.switch_to_new()?;
    let r = run.deploy(Which::New, &stage2)?;
    run.expect_status(&r, "success")?;
    run.stop_vm()?;
    run.expect_servers(&[run.new_url()], "after continuing the migration")?;
    run.expect_client_healthy()
}
