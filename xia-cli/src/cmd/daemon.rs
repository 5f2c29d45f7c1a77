//! `xia router`, `xia host` and `xia hypervisor --config FILE`: run one node
//! as a real process, until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::{Context, Result};
use testbed::daemon::{DaemonConfig, DaemonKind};

/// Runs the daemon in `config`, which must be of `want` kind ("router" or
/// "host").
pub fn run(config: PathBuf, pcap: Option<PathBuf>, want: &str) -> Result<()> {
    let mut cfg = DaemonConfig::load(&config)?;
    if pcap.is_some() {
        cfg.pcap = pcap;
    }
    let kind = match cfg.kind {
        DaemonKind::Router { .. } => "router",
        DaemonKind::Host { .. } => "host",
        DaemonKind::Hypervisor { .. } => "hypervisor",
    };
    if kind != want {
        anyhow::bail!(
            "{}: runs a {kind} ({}), not a {want}: use `xia {kind} --config`",
            config.display(),
            cfg.name
        );
    }
    init_logging();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
        };
        cfg.run(shutdown).await
    })
    .with_context(|| format!("{} {}", want, cfg.name))
}

/// Logs to stderr; `XIA_LOG` (e.g. `debug`, `xia_net=trace`) filters.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("XIA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
