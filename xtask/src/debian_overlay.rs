//! `debian_overlay` task (placeholder until the Yocto/Debian issue lands).

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("debian_overlay is not implemented yet")
}
