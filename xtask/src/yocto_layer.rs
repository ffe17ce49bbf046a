//! `yocto_layer` task (placeholder until the Yocto/Debian issue lands).

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("yocto_layer is not implemented yet")
}
