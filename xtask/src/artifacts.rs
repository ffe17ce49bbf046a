//! `artifacts` and `plan`: build the update module, then call the CLI library.

pub fn run_artifacts(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("artifacts is not implemented yet")
}

pub fn run_plan(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("plan is not implemented yet")
}
