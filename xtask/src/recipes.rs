//! `recipes` task (placeholder until the Yocto/Debian issue lands).

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("recipes is not implemented yet")
}
