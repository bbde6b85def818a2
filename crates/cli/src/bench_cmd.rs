//! `fastfuse bench`: glue over the `fastfuse-bench` library, which mounts
//! this very binary for the fastfuse configurations and starts it again as
//! `fastfuse bench --job-worker ...` for each job of its load generator.

use anyhow::Context;
pub use fastfuse_bench::BenchArgs;

/// Runs `fastfuse bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    // Logs go to stderr, below the progress; RUST_LOG=info shows more.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let exe = std::env::current_exe().context("finding this program")?;
    let worker = fastfuse_bench::cli::SelfExe {
        exe: exe.clone(),
        args: vec!["bench".into()],
    };
    fastfuse_bench::cli::run(args, Some(&exe), Some(worker))
}
