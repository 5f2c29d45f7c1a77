//! # testbed: XIA networks to experiment on
//!
//! Topologies of ADs, routers and hosts ([`topology`], read from TOML), run
//! in a deterministic discrete-event simulator ([`sim`]) in virtual time:
//! the nodes are the real sans-IO cores (`xia-router`'s router,
//! `xia-stack`'s host), the links are modelled ([`link`]: bandwidth,
//! drop-tail queue, delay, seeded loss, jitter, reordering), static
//! shortest-path routes are installed at start ([`routes`]), scenario
//! applications ping and send datagrams ([`apps`]), and any link can be
//! captured to a pcap Wireshark decodes ([`pcap`]).
//!
//! The same topology, seed and options give byte-identical reports and
//! pcaps. Real-process testbeds are in [`real`]; migration experiment plans (sweeps, CSV, Markdown, SVG plots) in [`experiment`].

#![forbid(unsafe_code)]

pub mod apps;
pub mod daemon;
pub mod experiment;
pub mod hypervisor;
pub mod hypervisor_log;
pub mod link;
pub mod migration;
pub mod pcap;
pub mod real;
pub mod real_scenario;
pub mod routes;
pub mod sim;
pub mod synthetic;
pub mod topology;

pub use sim::{run, Report, SimConfig, Simulation};

/// The topology `xia demo` runs (`testbed/topologies/demo.toml`).
pub const DEMO_TOPOLOGY: &str = include_str!("../topologies/demo.toml");

/// The migration topology `xia demo` runs first
/// (`testbed/topologies/migration.toml`).
pub const MIGRATION_TOPOLOGY: &str = include_str!("../topologies/migration.toml");
pub use topology::{Topology, TopologyError};
