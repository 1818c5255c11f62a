//! The file source: follows files matching globs, across rotation. (Being written.)

use crate::config::FileSourceConfig;
use crate::sources::SourceContext;

/// Follows the files of `config` until shutdown.
pub async fn run(ctx: SourceContext, config: FileSourceConfig) -> crate::Result<()> {
    let _ = config;
    let mut ctx = ctx;
    ctx.stopped().await;
    Ok(())
}
