//! `xia migrate GUEST --to AGENT` and `xia hypervisor-info`: talk to a
//! running hypervisor daemon's control socket (`--hypervisor`, or
//! `XIA_HOST`, which `xia testbed exec NODE` sets to the node's socket).
//! `--to` is an agent's DAG or the name it registered; the daemon
//! resolves a name.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use testbed::hypervisor::{self, HvResponse, MigrateRequest, Summary};

/// Which hypervisor daemon.
#[derive(Args, Clone)]
pub struct HypervisorArg {
    /// The hypervisor daemon's control socket (default: $XIA_HOST).
    #[arg(long = "hypervisor", env = "XIA_HOST")]
    socket: PathBuf,
}

#[derive(Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    hv: HypervisorArg,
    /// The VM to move.
    guest: String,
    /// The destination agent: its DAG (`AD:… HID:… SID:…`, as `xia
    /// hypervisor-info` prints it on that machine) or the name it
    /// registered in the name service (by default its hypervisor's name,
    /// e.g. hv2).
    #[arg(long)]
    to: String,
    /// full (stop-and-copy), live (iterative pre-copy) or smart (chooses
    /// from measured bandwidth, RTT and dirty rate).
    #[arg(long, default_value = "live")]
    mode: String,
    /// Live: pause when the estimated downtime is under this (ms).
    #[arg(long, default_value_t = 300)]
    downtime_target: u64,
    /// Cap on the migration's rate, e.g. 500Mbps.
    #[arg(long)]
    max_bandwidth: Option<String>,
    /// Send re-sent pages as XOR deltas (XBZRLE-like).
    #[arg(long)]
    deltas: bool,
    /// Do not throttle a guest whose rounds stop shrinking.
    #[arg(long)]
    no_auto_converge: bool,
    /// Send the pages the VM still has of its base image as their CIDs;
    /// the destination fetches them from its content store (an image
    /// store in its AD) and asks for any it cannot fetch.
    #[arg(long)]
    dedup: bool,
    /// No progress bar; print each event on a line.
    #[arg(long)]
    quiet: bool,
}

/// `xia migrate`.
pub fn migrate(a: MigrateArgs) -> Result<()> {
    let max_bandwidth = match &a.max_bandwidth {
        None => None,
        Some(t) => Some(
            testbed::topology::parse_bandwidth(t)
                .with_context(|| format!("--max-bandwidth {t:?} is not a rate like 500Mbps"))?
                as f64
                / 8.0,
        ),
    };
    let req = MigrateRequest {
        vm: a.guest.clone(),
        to: a.to.clone(),
        mode: a.mode.clone(),
        downtime_target_ms: a.downtime_target,
        max_bandwidth,
        deltas: a.deltas,
        auto_converge: !a.no_auto_converge,
        dedup: a.dedup,
    };
    req.config().map_err(anyhow::Error::msg)?;
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {msg}",
            )
            .expect("a valid template"),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        b
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let quiet = a.quiet;
    let mut dest = req.to.clone();
    let result = rt.block_on(hypervisor::migrate_via(&a.hv.socket, &req, |r| match r {
        HvResponse::Started { id, to } => {
            // A name is shown with the DAG it resolved to.
            if *to != req.to {
                dest = format!("{} ({to})", req.to);
            }
            let line = format!("migration {id:#x}: {} -> {dest}", req.vm);
            if quiet {
                println!("{line}");
            } else {
                bar.println(line);
            }
        }
        HvResponse::Progress(p) => {
            // The bar's length is what is known to be left to send: what
            // was sent plus this round's rest.
            bar.set_length(p.bytes_sent + p.pages_left * p.page_size);
            bar.set_position(p.bytes_sent);
            let est = p
                .estimated_downtime_ms
                .map_or("-".into(), |e| format!("{e:.0} ms"));
            bar.set_message(format!(
                "{} round {} | dirty {} pages ({:.0}/s) | {:.1} Mbit/s | est. downtime {est}{}",
                p.state,
                p.round,
                p.dirty,
                p.dirty_rate,
                p.bandwidth * 8.0 / 1e6,
                if p.throttle < 1.0 {
                    format!(" | throttle {:.0} %", p.throttle * 100.0)
                } else {
                    String::new()
                }
            ));
        }
        HvResponse::Note(n) => {
            if quiet {
                println!("{n}");
            } else {
                bar.println(n);
            }
        }
        _ => {}
    }));
    bar.finish_and_clear();
    let s = result?;
    print!("{}", report(&req, &dest, &s));
    Ok(())
}

/// The final report; `to`: the destination as given (and resolved).
fn report(req: &MigrateRequest, to: &str, s: &Summary) -> String {
    let mut out = format!(
        "done: {vm} runs at {to}\n  mode {mode} (strategy {strategy}), {rounds} pre-copy rounds, {final_pages} pages in the final copy\n  downtime {down:.1} ms as the source saw it (estimated {est:.1} ms{missed}), total {total:.1} ms\n  {bytes} bytes sent at {bw:.1} Mbit/s, RTT {rtt:.1} ms{throttle}\n",
        vm = req.vm,
        mode = req.mode,
        strategy = s.strategy,
        rounds = s.rounds,
        final_pages = s.final_pages,
        down = s.downtime_ms,
        est = s.estimated_downtime_ms,
        missed = if s.target_missed { ", target missed" } else { "" },
        total = s.total_ms,
        bytes = s.bytes,
        bw = s.bandwidth * 8.0 / 1e6,
        rtt = s.rtt_ms,
        throttle = if s.throttle < 1.0 {
            format!(", guest throttled to {:.0} %", s.throttle * 100.0)
        } else {
            String::new()
        }
    );
    // Asked for, it is said even when nothing went by CID (a VM with no
    // image, or whose image pages were all written).
    if req.dedup || s.cid_pages > 0 {
        out.push_str(&format!(
            "  {} pages by CID (the destination's hypervisor-info counts those it fetched)\n",
            s.cid_pages
        ));
    }
    out
}

/// `xia hypervisor-info`.
pub fn info(hv: HypervisorArg) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let i = rt.block_on(hypervisor::info(&hv.socket))?;
    println!(
        "hypervisor {} ({})",
        i.name,
        if i.attached {
            "attached"
        } else {
            "no router heard yet"
        }
    );
    println!("agent: {}", i.dag);
    if let Some(n) = &i.agent_name {
        println!(
            "name: {n}{}",
            if i.named { "" } else { " (not registered yet)" }
        );
    }
    if let Some(c) = &i.content_store {
        println!("content store: {c}");
    }
    for v in &i.vms {
        println!(
            "vm {}: {} MiB, {}, service {}{}",
            v.name,
            v.memory >> 20,
            if v.running { "running" } else { "paused" },
            v.service,
            if v.named {
                ""
            } else {
                " (name not registered yet)"
            }
        );
    }
    println!("counters: {}", i.counters);
    if let Some(l) = &i.log {
        println!("log: {l}");
    }
    Ok(())
}
