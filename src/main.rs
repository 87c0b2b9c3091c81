//! The `tlsgate` command: `run` an appliance from a settings file, or `replay`
//! a capture through the same data plane on the net_pcap PMD.
#![forbid(unsafe_code)]

mod control;
mod replay;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::control::Output;

/// Inline TLS decryption-policy appliance on DPDK.
#[derive(Parser)]
#[command(name = "tlsgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance on the ports named in a settings file until SIGINT/SIGTERM.
    Run {
        /// Settings file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Print a line of rates every SECS seconds.
        #[arg(long, value_name = "SECS")]
        stats_interval: Option<f64>,
        /// Also write the final counters as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        counters_json: Option<PathBuf>,
    },
    /// Replay a capture through the data plane (net_pcap PMD) and stop when done.
    Replay {
        /// Capture to read (pcap or pcapng, optionally gzip-compressed).
        #[arg(long)]
        pcap: PathBuf,
        /// Where to write what the appliance let through.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print a line of rates every SECS seconds.
        #[arg(long, value_name = "SECS")]
        stats_interval: Option<f64>,
        /// Also write the final counters as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        counters_json: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, stats_interval, counters_json } => {
            control::run(&config, Output { stats_interval, counters_json })
        }
        Command::Replay { pcap, out, stats_interval, counters_json } => {
            replay::replay(&pcap, out.as_deref(), Output { stats_interval, counters_json })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tlsgate: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
