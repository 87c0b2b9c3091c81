//! The `tlsgate` command: `run` an appliance from a settings file, or `replay`
//! a capture through the same data plane on the net_pcap PMD.
#![forbid(unsafe_code)]

mod control;
mod decrypt;
mod doctor;
mod events;
mod plaintext;
mod replay;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tlsgate_config::HandshakeEvents;

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
        /// Where to append session events (overrides `events` in the settings file).
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
    },
    /// Work with decryption policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Check that a `tlsgate run` with these settings would start here, and say what to fix.
    Doctor {
        /// Settings file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the man page (roff) made from these commands' definitions.
    #[command(hide = true)]
    Manpage,
    /// Replay a capture through the data plane (net_pcap PMD) and stop when done.
    Replay {
        /// Capture to read (pcap or pcapng, optionally gzip-compressed).
        #[arg(long)]
        pcap: PathBuf,
        /// Where to write what the appliance let through (and the resets it made).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Decryption policy to decide by (without one, tlsgate only bridges).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Where to append session events (JSON lines).
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
        /// Print a line of rates every SECS seconds.
        #[arg(long, value_name = "SECS")]
        stats_interval: Option<f64>,
        /// Also write the final counters as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        counters_json: Option<PathBuf>,
        /// How much of each handshake the events carry, as `[events] handshake`:
        /// `full` (the session's own facts, whatever the decision's timing) or
        /// `decision` (the facts the decision was taken on).
        #[arg(long, value_name = "MODE", default_value = "full", value_parser = ["full", "decision"])]
        handshake: String,
        /// Handshake bytes buffered per direction, as `[flows] handshake_buffer`.
        #[arg(long, value_name = "BYTES")]
        handshake_buffer: Option<u32>,
        /// Checksums of segments being inspected, as `[flows.normalize]
        /// checksums`: `ignore` (the default here: captures taken on a sending
        /// host hold the partial sums its NIC completes) or `verify`.
        #[arg(long, value_name = "MODE", default_value = "ignore", value_parser = ["ignore", "verify"])]
        checksums: String,
        /// Remove ECH configurations from DNS answers, as `[dns] strip_ech`
        /// (the output capture has the rewritten answers; needs --policy).
        #[arg(long)]
        strip_ech: bool,
        /// NSS key log (`SSLKEYLOGFILE`): every session whose secrets it holds is decrypted.
        #[arg(long, value_name = "FILE")]
        keylog: Option<PathBuf>,
        /// Where to write the decrypted sessions (key log, and passive
        /// `decrypt-known-key` rules of --policy) as synthetic TCP streams (pcap).
        #[arg(long, value_name = "FILE")]
        decrypted: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file and print what it will do.
    Check {
        /// The policy file (TOML).
        file: PathBuf,
    },
}

/// mimalloc: packet cores allocate per session (facts, events) and the
/// control thread frees what they send it; glibc's malloc serialises such
/// cross-thread frees on an arena lock, mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, stats_interval, counters_json, events } => {
            control::run(&config, Output { stats_interval, counters_json, events, reopen: None })
        }
        Command::Replay {
            pcap,
            out,
            policy,
            events,
            stats_interval,
            counters_json,
            handshake,
            handshake_buffer,
            checksums,
            strip_ech,
            keylog,
            decrypted,
        } => {
            let how = replay::How {
                handshake: if handshake == "decision" { HandshakeEvents::Decision } else { HandshakeEvents::Full },
                handshake_buffer,
                verify_checksums: checksums == "verify",
                strip_ech,
                keylog,
                decrypted,
            };
            let output = Output { stats_interval, counters_json, events, reopen: None };
            replay::replay(&pcap, out.as_deref(), policy.as_deref(), how, output)
        }
        Command::Policy { command: PolicyCommand::Check { file } } => control::policy_check(&file),
        Command::Doctor { config } => doctor::doctor(&config),
        Command::Manpage => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            match clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .and_then(|()| std::io::Write::write_all(&mut std::io::stdout(), &out))
            {
                Ok(()) => Ok(()),
                Err(e) => Err(control::Failure::Runtime(format!("writing the man page: {e}"))),
            }
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
