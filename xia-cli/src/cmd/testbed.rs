//! `xia testbed …`: run topologies in the simulator (`run`), sweep
//! experiments in it (`experiment`), or run them as real processes on
//! loopback UDP (`up`, `exec`, `down`).

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
    /// Run an experiment plan in the simulator: every point of its sweep,
    /// then tables and plots.
    Experiment {
        #[command(subcommand)]
        kind: ExperimentCmd,
    },
    /// Start every node of a topology as a real daemon (loopback UDP).
    Up {
        /// The topology (TOML).
        topology: PathBuf,
        /// Where configurations, sockets, logs and the state go.
        #[arg(long, env = "XIA_TESTBED_DIR", default_value = "/tmp/xia-testbed")]
        dir: PathBuf,
        /// Node i listens on UDP port BASE_PORT + i.
        #[arg(long, default_value_t = 14000)]
        base_port: u16,
        /// Seed for fresh SIDs and link impairments.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Seconds to wait for the network to come up.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// One network namespace per node, joined by veth pairs (root).
        #[arg(long)]
        netns: bool,
        /// Each daemon writes every packet to DIR/NODE.pcap.
        #[arg(long)]
        pcap: bool,
        /// With --netns: raw Ethernet links on the veth pairs (EtherType
        /// 0xC0DE, XARP) instead of UDP.
        #[arg(long, requires = "netns")]
        ethernet: bool,
        /// Run the topology's pings and streams, print what they did,
        /// then bring the testbed down.
        #[arg(long)]
        run: bool,
    },
    /// Write each node's daemon configuration without starting anything
    /// (to run a topology across machines).
    Configs {
        /// The topology (TOML).
        topology: PathBuf,
        /// Where to write them.
        #[arg(long)]
        dir: PathBuf,
        /// Place a node at a real address: NODE=IP[:PORT] (repeatable);
        /// other nodes listen on loopback.
        #[arg(long = "addr", value_name = "NODE=IP[:PORT]")]
        addrs: Vec<String>,
        /// Node i not placed listens on UDP BASE_PORT + i.
        #[arg(long, default_value_t = 14000)]
        base_port: u16,
        /// Seed for fresh SIDs and link impairments.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run a command with XIA_HOST set to a node's socket.
    Exec {
        /// The node.
        node: String,
        /// The testbed's directory.
        #[arg(long, env = "XIA_TESTBED_DIR", default_value = "/tmp/xia-testbed")]
        dir: PathBuf,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Crash a node's daemon (SIGKILL), for failure experiments.
    Kill {
        /// The node.
        node: String,
        /// The testbed's directory.
        #[arg(long, env = "XIA_TESTBED_DIR", default_value = "/tmp/xia-testbed")]
        dir: PathBuf,
    },
    /// Start a node's daemon again (empty state, as after a reboot).
    Start {
        /// The node.
        node: String,
        /// The testbed's directory.
        #[arg(long, env = "XIA_TESTBED_DIR", default_value = "/tmp/xia-testbed")]
        dir: PathBuf,
    },
    /// Stop every daemon `up` started and remove its files.
    Down {
        /// The testbed's directory.
        #[arg(long, env = "XIA_TESTBED_DIR", default_value = "/tmp/xia-testbed")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum ExperimentCmd {
    /// VM migration: sweep memory, dirtying, link and mode; write
    /// results.csv, results.md and SVG plots.
    Migration {
        /// The plan (TOML).
        plan: PathBuf,
        /// Where the outputs go (default: experiment-out/PLAN-STEM).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Points to run at once (default: the number of CPUs).
        #[arg(long)]
        jobs: Option<usize>,
    },
}

fn experiment(cmd: ExperimentCmd) -> Result<()> {
    use testbed::experiment::{self, Plan, Progress};
    let ExperimentCmd::Migration { plan, out, jobs } = cmd;
    let plan = Plan::load(&plan)?;
    let out = out.unwrap_or_else(|| PathBuf::from("experiment-out").join(&plan.name));
    let jobs = jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    eprintln!(
        "{}: {} points, {} at a time, into {}",
        plan.title,
        plan.points.len(),
        jobs.min(plan.points.len().max(1)),
        out.display()
    );
    let inputs = experiment::write_inputs(&plan, &out).context("writing the topologies")?;
    let wall = std::time::Instant::now();
    // Progress and wall-clock times go to stderr only: the files and
    // stdout depend on the plan alone.
    let results = experiment::run(&plan, jobs, &mut |p| match p {
        Progress::Started { point, of } => {
            eprintln!(
                "      start  point {} of {of}: {}",
                point.index,
                point.label()
            );
        }
        Progress::Finished {
            row,
            done,
            of,
            wall,
        } => {
            let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
            let outcome = match &row.error {
                Some(e) => format!("failed: {e}"),
                None => format!(
                    "downtime {}, total {:.3} s",
                    row.downtime.map_or_else(|| "?".into(), ms),
                    row.total.map_or(0.0, |t| t.as_secs_f64())
                ),
            };
            eprintln!(
                "[{done:>3}/{of}] done   point {} ({}): {outcome} ({:.1} s wall)",
                row.point.index,
                row.point.mode.name(),
                wall.as_secs_f64()
            );
        }
    })
    .context("experiment")?;
    let files = experiment::write_results(&plan, &results, &out).context("writing the results")?;
    print!("{}", experiment::markdown(&plan, &results));
    eprintln!(
        "wrote {} files to {} ({:.1} s wall)",
        inputs.len() + files.len(),
        out.display(),
        wall.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn run(cmd: TestbedCmd) -> Result<()> {
    match cmd {
        TestbedCmd::Experiment { kind } => experiment(kind),
        TestbedCmd::Up {
            topology,
            dir,
            base_port,
            seed,
            timeout,
            netns,
            pcap,
            ethernet,
            run,
        } => {
            let topo = Topology::load(&topology)?;
            let cfg = testbed::real::UpConfig {
                dir: dir.clone(),
                base_port,
                exe: std::env::current_exe().context("the xia executable")?,
                timeout: Duration::from_secs(timeout),
                netns,
                pcap,
                ethernet,
                placed: Default::default(),
            };
            if !topo.moves.is_empty() || !topo.events.is_empty() {
                eprintln!("note: [[move]] and [[event]] run in the simulator only; real mode ignores them");
            }
            let state = match testbed::real::up(&topo, &topology, &cfg, seed) {
                Ok(s) => s,
                Err(e) => {
                    // Leave nothing half-started behind.
                    let _ = testbed::real::down(&dir);
                    return Err(e.into());
                }
            };
            if run {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("tokio runtime")?;
                let report = rt.block_on(testbed::real_scenario::run(&topo, &state));
                print!("{report}");
                testbed::real::down(&dir)?;
                return Ok(());
            }
            println!(
                "{:<10} {:<7} {:<22} {:>7}  socket",
                "node", "kind", "udp", "pid"
            );
            for n in &state.node {
                println!(
                    "{:<10} {:<7} {:<22} {:>7}  {}",
                    n.name,
                    n.kind,
                    n.udp,
                    n.pid,
                    n.socket.display()
                );
            }
            println!("\nxia testbed exec NODE -- xia ping …    then    xia testbed down");
            Ok(())
        }
        TestbedCmd::Exec { node, dir, command } => {
            let state = testbed::real::State::load(&dir)?;
            let n = state.node(&node)?;
            // `@name` in arguments stands for a node's HID or an AD's XID,
            // as in topology files; a lone `@host` for its `AD HID` DAG.
            let topo = Topology::load(std::path::Path::new(&state.topology))?;
            let mut args = Vec::new();
            for a in &command[1..] {
                if let Some(name) = a.strip_prefix('@').filter(|_| !a.contains(' ')) {
                    if let Some(i) = topo.node(name) {
                        let dag = topo.node_dag(i);
                        args.push(dag.to_re_string().unwrap_or_else(|| dag.to_string()));
                        continue;
                    }
                }
                args.push(if a.contains('@') {
                    topo.expand(a).map_err(|e| anyhow::anyhow!("{a}: {e}"))?
                } else {
                    a.clone()
                });
            }
            let status = testbed::real::command_in(n.netns.as_deref(), &command[0])
                .args(&args)
                .env("XIA_HOST", &n.socket)
                .status()
                .with_context(|| format!("running {}", command[0]))?;
            if !status.success() {
                std::process::exit(status.code().unwrap_or(1));
            }
            Ok(())
        }
        TestbedCmd::Configs {
            topology,
            dir,
            addrs,
            base_port,
            seed,
        } => {
            let topo = Topology::load(&topology)?;
            let mut placed = std::collections::BTreeMap::new();
            for a in &addrs {
                let Some((node, addr)) = a.split_once('=') else {
                    anyhow::bail!("--addr {a:?}: expected NODE=IP[:PORT]");
                };
                if topo.node(node).is_none() {
                    anyhow::bail!("--addr {a:?}: no node {node:?} in {}", topology.display());
                }
                let with_port = if addr.parse::<std::net::SocketAddr>().is_ok() {
                    addr.to_string()
                } else {
                    format!("{addr}:{}", xia_net::udp::DEFAULT_PORT)
                };
                let sa: std::net::SocketAddr = with_port
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--addr {a:?}: {addr:?} is not IP[:PORT]"))?;
                placed.insert(node.to_string(), sa);
            }
            let cfg = testbed::real::UpConfig {
                dir: dir.clone(),
                base_port,
                exe: PathBuf::from("xia"),
                timeout: Duration::ZERO,
                netns: false,
                pcap: false,
                ethernet: false,
                placed,
            };
            for f in testbed::real::write_configs(&topo, &cfg, seed)? {
                println!("{}", f.display());
            }
            Ok(())
        }
        TestbedCmd::Kill { node, dir } => {
            testbed::real::kill(&dir, &node)?;
            println!("killed {node}");
            Ok(())
        }
        TestbedCmd::Start { node, dir } => {
            let exe = std::env::current_exe().context("the xia executable")?;
            testbed::real::start(&dir, &node, &exe)?;
            println!("started {node}");
            Ok(())
        }
        TestbedCmd::Down { dir } => {
            let state = testbed::real::down(&dir)?;
            println!("stopped {} nodes", state.node.len());
            Ok(())
        }
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
