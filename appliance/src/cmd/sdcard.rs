//! `labboot sdcard` (being written).

/// Arguments of `labboot sdcard`.
#[derive(Debug, clap::Args)]
pub struct SdcardArgs {}

/// Runs `labboot sdcard`.
pub fn run(_args: SdcardArgs) -> anyhow::Result<()> {
    anyhow::bail!("labboot sdcard is not built yet")
}
