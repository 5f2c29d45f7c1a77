//! # testbed: XIA networks to experiment on
//!
//! Will hold topologies of ADs, routers, hosts and VMs, run either in a
//! deterministic virtual-time simulator (seeded, byte-identical results and
//! pcaps) or as real processes over UDP tunnels and network namespaces, and
//! the experiment runner that turns runs into tables, plots and pcaps,
//! including comparisons against TCP/IP. Nothing is implemented yet.
