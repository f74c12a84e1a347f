//! `cargo xtask gpu-bundle` (written next).
use anyhow::Result;
pub fn run(_arches: &[String]) -> Result<()> {
    anyhow::bail!("not yet")
}
