//! `fastfuse`: mount a directory through the fastfuse passthrough
//! filesystem, or read a running mount's statistics.
//!
//! This binary is glue: option parsing and process handling. The work is in
//! the `fastfuse` engine and `fastfuse-passthrough` libraries.

#![deny(unsafe_code)]

mod bench_cmd;
mod channel;
mod control;
mod daemon;
mod mount_cmd;
mod stats_cmd;
mod supervise;
mod upgrade;

use clap::{Parser, Subcommand};

/// A fast FUSE passthrough filesystem.
///
/// Mount SRC at MNT, the passthrough_hp way:
///
///   fastfuse [--num-threads N] [--clone-fd] [--bypass-rw N] [--foreground] SRC MNT
///
/// or the passthrough_ll way:
///
///   fastfuse -o writeback -o max_threads=4 -o source=SRC MNT
///
/// The writeback cache is on by default (-o no_writeback turns it off).
/// Without --foreground the command returns once the mount is live.
/// Unmount with `umount MNT` or `fusermount3 -u MNT`; SIGTERM/SIGINT to the
/// daemon flush and unmount too.
#[derive(Parser, Debug)]
#[command(name = "fastfuse", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    mount: mount_cmd::MountArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mount (the default when no command is named; use it when SRC is
    /// called "stats").
    Mount(mount_cmd::MountArgs),
    /// Print the request statistics of a fastfuse mount.
    Stats(stats_cmd::StatsArgs),
    /// Benchmark fastfuse against tmpfs and other FUSE servers.
    Bench(bench_cmd::BenchArgs),
    /// Hand a running mount over to a new daemon binary without
    /// unmounting (a live upgrade).
    Upgrade(upgrade::UpgradeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Mount(args)) => mount_cmd::run(args),
        Some(Command::Stats(args)) => stats_cmd::run(args),
        Some(Command::Bench(args)) => bench_cmd::run(args),
        Some(Command::Upgrade(args)) => upgrade::run(args),
        None => mount_cmd::run(cli.mount),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fastfuse: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
