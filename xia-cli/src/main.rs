//! `xia`: the command-line front end of xia-rs.
//!
//! Each subcommand is a thin shell over the library crates: it parses
//! arguments, calls the library, and prints. Errors are printed as one line
//! on stderr with a non-zero exit status.

mod cmd;
mod input;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// xia-rs: the eXpressive Internet Architecture in Rust.
#[derive(Parser)]
#[command(name = "xia", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// DAG addresses: parse, check and convert between text forms.
    #[command(subcommand)]
    Dag(cmd::dag::DagCmd),
    /// Self-certifying identities: make and inspect key files.
    #[command(subcommand)]
    Key(cmd::key::KeyCmd),
    /// XIP packets: encode to hex, decode hex to a readable dump.
    #[command(subcommand)]
    Xip(cmd::xip::XipCmd),
    /// Simulated and (later) real XIA networks.
    #[command(subcommand)]
    Testbed(cmd::testbed::TestbedCmd),
    /// A short tour of what xia-rs does.
    Demo,
    /// Run a router daemon on real links (UDP), until SIGINT/SIGTERM.
    Router {
        /// Its configuration (TOML: one [[router]], its [[link]]s).
        #[arg(long)]
        config: std::path::PathBuf,
        /// Write every packet received and sent to this pcap.
        #[arg(long)]
        pcap: Option<std::path::PathBuf>,
    },
    /// Run a host daemon on real links; applications reach it through
    /// its socket.
    Host {
        /// Its configuration (TOML: one [[host]], its [[link]]).
        #[arg(long)]
        config: std::path::PathBuf,
        /// Write every packet received and sent to this pcap.
        #[arg(long)]
        pcap: Option<std::path::PathBuf>,
    },
    /// Run a hypervisor daemon: a migration agent and its VMs on real
    /// links; `xia migrate` talks to its socket.
    Hypervisor {
        /// Its configuration (TOML: one [[hypervisor]], its [[vm]]s, its
        /// [[link]]).
        #[arg(long)]
        config: std::path::PathBuf,
        /// Write every packet received and sent to this pcap.
        #[arg(long)]
        pcap: Option<std::path::PathBuf>,
    },
    /// Move a VM to another hypervisor (full, live or smart), with a
    /// progress bar and a final report.
    Migrate(cmd::migrate::MigrateArgs),
    /// A hypervisor daemon's agent address, VMs and counters.
    HypervisorInfo(cmd::migrate::HypervisorArg),
    /// Send XCMP echo requests through a host daemon.
    Ping(cmd::apps::PingArgs),
    /// Show the routers on the path to a destination.
    Traceroute(cmd::apps::TracerouteArgs),
    /// Echo service and client, over streams or datagrams.
    #[command(subcommand)]
    Echo(cmd::apps::EchoCmd),
    /// netcat over XStream: stdin to a stream, the stream to stdout.
    Nc(cmd::apps::NcArgs),
    /// Publish a file as content chunks; prints the manifest of CIDs.
    Put(cmd::apps::PutArgs),
    /// Fetch a file's chunks by the manifest `xia put` printed.
    Get(cmd::apps::GetArgs),
    /// Register and resolve names.
    #[command(subcommand)]
    Name(cmd::apps::NameCmd),
    /// A host daemon's addresses and counters.
    Stats(cmd::apps::HostArg),
}

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dag(c) => cmd::dag::run(c),
        Command::Key(c) => cmd::key::run(c),
        Command::Xip(c) => cmd::xip::run(c),
        Command::Testbed(c) => cmd::testbed::run(c),
        Command::Demo => cmd::demo::run(),
        Command::Router { config, pcap } => cmd::daemon::run(config, pcap, "router"),
        Command::Host { config, pcap } => cmd::daemon::run(config, pcap, "host"),
        Command::Hypervisor { config, pcap } => cmd::daemon::run(config, pcap, "hypervisor"),
        Command::Migrate(a) => cmd::migrate::migrate(a),
        Command::HypervisorInfo(h) => cmd::migrate::info(h),
        Command::Ping(a) => cmd::apps::ping(a),
        Command::Traceroute(a) => cmd::apps::traceroute(a),
        Command::Echo(c) => cmd::apps::echo(c),
        Command::Nc(a) => cmd::apps::nc(a),
        Command::Put(a) => cmd::apps::put(a),
        Command::Get(a) => cmd::apps::get(a),
        Command::Name(c) => cmd::apps::name(c),
        Command::Stats(h) => cmd::apps::stats(h),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins anyhow's context chain with ": " on one line.
            eprintln!("xia: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Rust ignores SIGPIPE, so `xia … | head` would panic on the closed pipe;
/// a command-line tool should just stop, as `cat` does.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to the default before any
    // thread starts has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
