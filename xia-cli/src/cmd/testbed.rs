//! `xia testbed …`: run topologies in the simulator.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use testbed::{SimConfig, Topology};

#[derive(Subcommand)]
pub enum TestbedCmd {
    /// Run a topology file's scenario in the deterministic simulator.
    Run {
        /// The topology (TOML).
        topology: PathBuf,
        /// Seed for every random draw (loss, jitter, reordering, keys).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write one pcap per link into this directory.
        #[arg(long)]
        pcap: Option<PathBuf>,
        /// Stop at this virtual time, in seconds.
        #[arg(long)]
        until: Option<f64>,
        /// Turn the routers' fast path off.
        #[arg(long)]
        no_fast_path: bool,
    },
}

pub fn run(cmd: TestbedCmd) -> Result<()> {
    match cmd {
        TestbedCmd::Run {
            topology,
            seed,
            pcap,
            until,
            no_fast_path,
        } => {
            let topo = Topology::load(&topology)?;
            let until = match until {
                Some(s) if s.is_finite() && s >= 0.0 => Some(Duration::from_secs_f64(s)),
                Some(s) => anyhow::bail!("--until {s}: expected seconds, 0 or more"),
                None => None,
            };
            let config = SimConfig {
                seed,
                until,
                pcap_dir: pcap.clone(),
                no_fast_path,
            };
            let wall = std::time::Instant::now();
            let report = testbed::run(topo, &config).context("simulation")?;
            let secs = wall.elapsed().as_secs_f64();
            print!("{report}");
            // Wall-clock figures go to stderr: stdout stays byte-identical
            // for a given topology and seed.
            eprintln!(
                "simulated {} in {secs:.3} s of wall time ({:.2} M events/s)",
                report.end,
                report.events as f64 / secs.max(1e-9) / 1e6
            );
            if let Some(dir) = pcap {
                println!("pcaps in {}", dir.display());
            }
            Ok(())
        }
    }
}
