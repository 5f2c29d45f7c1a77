//! The discrete-event simulator: routers and hosts running the sans-IO
//! cores, joined by modelled links, in virtual time.
//!
//! The loop pops the earliest event (ties broken by insertion order), sets
//! `now` to its time, and hands it to a node; whatever the node sends goes
//! through the link model and becomes a future arrival. Nothing reads a
//! clock and every random draw comes from a per-link RNG derived from the
//! seed, so the same topology and seed give byte-identical reports and
//! pcaps.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::fs;
use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Duration;

use xia_router::{Counters, Router, RouterConfig};
use xia_stack::host::{Host, HostConfig, HostEvent};
use xia_stack::naming::NAME_SERVER_SID;
use xia_stack::socket::{self, XDatagram, XListener};
use xia_stack::time::Instant;
use xia_stack::xid::{Principal, Xid};

use crate::apps::{ChunkFetcher, FlowSender, FlowSink, Pinger, StreamClient, StreamServer};
use crate::migration::{Datagrams, Download};

mod vms;
use crate::link::{DirStats, Direction, Fate};
use crate::pcap::{frame, mac, Capture};
use crate::routes;
use crate::topology::{
    derived_identity, Command, EventTarget, NodeKind, RoutingSpec, Target, Topology,
};
pub use vms::{AgentReport, MigrationReport, VmClientReport};

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct SimConfig {
    /// Seed for every random draw.
    pub seed: u64,
    /// Stop at this virtual time (default: when no events are left).
    pub until: Option<Duration>,
    /// Write one pcap per link into this directory.
    pub pcap_dir: Option<PathBuf>,
    /// Turn the routers' fast path off.
    pub no_fast_path: bool,
}

#[derive(Debug)]
enum App {
    Ping(Pinger, usize),
    Sender(FlowSender, usize),
    Sink(FlowSink, usize),
    Service(XDatagram, u64, usize),
    StreamClient(StreamClient, usize),
    Fetch(ChunkFetcher, usize),
    StreamServer(StreamServer, usize),
    Download(Download, usize),
    Datagrams(Datagrams, usize),
}

#[derive(Debug)]
enum NodeState {
    Router(Box<Router>),
    Host(Box<Host>, Vec<App>),
    Agent(Box<xia_migrate::agent::Agent>),
}

#[derive(Debug)]
enum Event {
    Arrive {
        node: usize,
        port: usize,
        packet: Vec<u8>,
    },
    Wake {
        node: usize,
        app: usize,
    },
    Timer {
        node: usize,
    },
    Move {
        index: usize,
    },
    Change {
        index: usize,
    },
    Migrate {
        index: usize,
    },
    // `[[migration]]` `index`'s fault starts (or ends: a cut link is back).
    Fault {
        index: usize,
        end: bool,
    },
    // A crashed agent restarts (its migration's fault).
    Restart {
        node: usize,
        index: usize,
    },
    // An end system's full link queue has room again.
    NicReady {
        node: usize,
        at: Instant,
    },
}

struct Queued {
    at: Instant,
    seq: u64,
    event: Event,
    // Background events (router timers — beacons, expiries — and the
    // packets they cause) do not keep a run going: it ends when only they
    // are left.
    background: bool,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// A simulation, ready to [`run`](Simulation::run).
pub struct Simulation {
    topo: Topology,
    ports: Vec<Vec<(usize, usize)>>,
    // For link l and direction d (0: a→b), the port at the receiving end.
    peer_port: Vec<[usize; 2]>,
    nodes: Vec<NodeState>,
    dirs: Vec<[Direction; 2]>,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    now: Instant,
    events: u64,
    captures: Vec<Option<Capture<BufWriter<fs::File>>>>,
    until: Option<Instant>,
    seed: u64,
    // The timer each router has scheduled, so stale ones are ignored.
    timers: Vec<Option<Instant>>,
    // Links that are unplugged, and packets sent into them.
    down: Vec<bool>,
    down_drops: u64,
    // Foreground events queued, and whether the event being handled is
    // background (what it causes is background too).
    foreground: usize,
    background: bool,
    // Routers that are down (failed by an [[event]]), and packets that
    // arrived at them meanwhile.
    failed: Vec<bool>,
    failed_drops: u64,
    no_fast_path: bool,
    ns_dag: Option<xia_stack::dag::Dag>,
    // What happened to each [[migration]].
    migration_log: Vec<vms::MigrationLog>,
    // Faults injected into migrations, and the agents' logs.
    faults: vms::Faults,
    // Per node: the packet an end system's full link queue did not take,
    // with its port, and when the queue has room again.
    nic_held: Vec<Option<(usize, Vec<u8>)>>,
    nic_ready: Vec<Option<Instant>>,
    nic_waits: u64,
}

/// A ping's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct PingReport {
    /// The host it ran on.
    pub node: String,
    /// The command.
    pub command: String,
    /// Requests sent.
    pub transmitted: u32,
    /// Replies received.
    pub received: u32,
    /// XCMP errors received.
    pub errors: u32,
    /// Round-trip times.
    pub rtts: Vec<Duration>,
    /// ping(8)-style output.
    pub lines: Vec<String>,
}

/// A flow's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowReport {
    /// Sender.
    pub from: String,
    /// Receiver.
    pub to: String,
    /// Datagrams sent.
    pub sent: u32,
    /// Distinct datagrams received.
    pub delivered: u32,
    /// Sent but never received.
    pub lost: u32,
    /// Duplicates received.
    pub duplicates: u32,
    /// Received after a later one.
    pub reordered: u32,
    /// XCMP errors the sender got.
    pub net_errors: u32,
}

/// A chunk fetch's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchReport {
    /// The fetching host.
    pub node: String,
    /// The chunk's name.
    pub chunk: String,
    /// Bytes received and verified, or why not (`None`: unfinished).
    pub result: Option<Result<usize, String>>,
    /// From the request to the verified chunk.
    pub duration: Option<Duration>,
}

/// A stream transfer's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamReport {
    /// Client.
    pub from: String,
    /// Server.
    pub to: String,
    /// Bytes the client was to send.
    pub bytes: u64,
    /// Bytes the server received.
    pub received: u64,
    /// Received bytes that were wrong (always 0 unless something is broken).
    pub corrupt: u64,
    /// From the client's connect to the server seeing the end of the stream.
    pub duration: Option<Duration>,
    /// Segments the client retransmitted.
    pub retransmissions: u64,
    /// How the connection failed, if it did.
    pub error: Option<String>,
}

impl StreamReport {
    /// Goodput in Mbit/s, if the transfer finished.
    pub fn goodput_mbps(&self) -> Option<f64> {
        let d = self.duration?.as_secs_f64();
        (d > 0.0).then(|| self.received as f64 * 8.0 / d / 1e6)
    }
}

/// A service's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceReport {
    /// Its name.
    pub name: String,
    /// Its host.
    pub host: String,
    /// Datagrams it received.
    pub received: u64,
}

/// A link's outcome, per direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkReport {
    /// Its ends.
    pub a: String,
    /// Its ends.
    pub b: String,
    /// a→b and b→a.
    pub dirs: [DirStats; 2],
}

/// What a run produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Events processed.
    pub events: u64,
    /// Virtual time at the end.
    pub end: Instant,
    /// Pings, in scenario order.
    pub pings: Vec<PingReport>,
    /// Flows, in scenario order.
    pub flows: Vec<FlowReport>,
    /// Stream transfers, in scenario order.
    pub streams: Vec<StreamReport>,
    /// Chunk fetches, in scenario order.
    pub fetches: Vec<FetchReport>,
    /// Services and the datagrams they received.
    pub services: Vec<ServiceReport>,
    /// Router counters, by name (node order).
    pub routers: Vec<(String, Counters)>,
    /// Links.
    pub links: Vec<LinkReport>,
    /// Packets sent into a link a move, an event or a migration's fault
    /// had unplugged, or on it when a fault cut it.
    pub unplugged_drops: u64,
    /// Packets that arrived at a failed router.
    pub failed_router_drops: u64,
    /// Times an end system's link queue was full and its NIC held a
    /// packet back (it waits; routers drop instead).
    pub nic_waits: u64,
    /// Packets end systems' stacks dropped because their own transmit
    /// queue was full while the NIC held back (hosts, hypervisors' own
    /// stacks and their VMs').
    pub send_queue_drops: u64,
    /// The `[[event]]`s, as printed lines ("5.000 s link rB-rC down").
    pub changes: Vec<String>,
    /// The `[[migration]]`s, in file order.
    pub migrations: Vec<MigrationReport>,
    /// The `[[client]]`s of VMs, in file order.
    pub vm_clients: Vec<VmClientReport>,
    /// Hypervisors' location-management counters.
    pub hypervisors: Vec<AgentReport>,
}

/// The simulation could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The pcap directory or a file in it.
    #[error("pcap {path}: {source}")]
    Pcap {
        /// The path.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A host could not bind a socket or the like.
    #[error("{0}")]
    Setup(String),
}

impl Simulation {
    /// Builds every node and link of `topo`.
    pub fn new(topo: Topology, config: &SimConfig) -> Result<Simulation, SimError> {
        let ports = routes::ports(&topo);
        let n_nodes = topo.nodes.len();
        let ns_dag = topo.name_server.map(|n| {
            topo.node_dag(n)
                .append_xid(NAME_SERVER_SID)
                .expect("three nodes")
        });
        let mut nodes = Vec::with_capacity(topo.nodes.len());
        for (i, n) in topo.nodes.iter().enumerate() {
            let ad = topo.ads[n.ad].xid;
            match &n.kind {
                NodeKind::Router { .. } => {
                    let r = build_router(&topo, &ports, i, config.no_fast_path, ns_dag.clone());
                    nodes.push(NodeState::Router(Box::new(r)));
                }
                NodeKind::Host if topo.migration.hypervisor(i).is_some() => {
                    let agent = vms::build_agent(&topo, &ports, i, config.seed, ns_dag.clone())?;
                    nodes.push(NodeState::Agent(Box::new(agent)));
                }
                NodeKind::Host => {
                    let gateway = ports[i].first().map(|&(_, peer)| topo.nodes[peer].hid());
                    let mut cfg = HostConfig::new(n.identity.clone(), ad, gateway);
                    cfg.seed = config.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    // An image store holds its images' pages.
                    let pages: Vec<_> = topo.migration.image_pages(i).collect();
                    let mut host = crate::migration::image_store_host(cfg, &pages)
                        .map_err(|e| SimError::Setup(format!("image store {}: {e}", n.name)))?;
                    if let Some(ns) = &ns_dag {
                        host.set_name_server(ns.clone());
                        if topo.name_server == Some(i) {
                            host.serve_names(100_000);
                        }
                    }
                    nodes.push(NodeState::Host(Box::new(host), Vec::new()));
                }
            }
        }
        let dirs = topo
            .links
            .iter()
            .enumerate()
            .map(|(li, l)| {
                let s = config.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ ((li as u64) << 1);
                [
                    Direction::new(l.clone(), s),
                    Direction::new(l.clone(), s ^ 1),
                ]
            })
            .collect();
        let peer_port = topo
            .links
            .iter()
            .enumerate()
            .map(|(li, l)| {
                let at = |node: usize| {
                    // A move's link is the host's port 0 once it is up.
                    ports[node]
                        .iter()
                        .position(|&(pl, _)| pl == li)
                        .unwrap_or(0)
                };
                [at(l.b), at(l.a)]
            })
            .collect();
        let mut captures = Vec::new();
        if let Some(dir) = &config.pcap_dir {
            fs::create_dir_all(dir).map_err(|source| SimError::Pcap {
                path: dir.clone(),
                source,
            })?;
            for l in &topo.links {
                let path = dir.join(format!(
                    "{}-{}.pcap",
                    topo.nodes[l.a].name, topo.nodes[l.b].name
                ));
                let cap = Capture::create(&path).map_err(|source| SimError::Pcap {
                    path: path.clone(),
                    source,
                })?;
                captures.push(Some(cap));
            }
        }
        let mut sim = Simulation {
            ports,
            peer_port,
            nodes,
            dirs,
            queue: BinaryHeap::new(),
            seq: 0,
            now: Instant::ZERO,
            events: 0,
            captures,
            until: config.until.map(|d| Instant::ZERO + d),
            seed: config.seed,
            timers: vec![None; n_nodes],
            down: topo.links.iter().map(|l| l.initially_down).collect(),
            down_drops: 0,
            foreground: 0,
            background: false,
            failed: vec![false; n_nodes],
            failed_drops: 0,
            no_fast_path: config.no_fast_path,
            ns_dag,
            migration_log: Vec::new(),
            faults: vms::Faults::new(topo.links.len(), config.seed),
            nic_held: vec![None; n_nodes],
            nic_ready: vec![None; n_nodes],
            nic_waits: 0,
            topo,
        };
        sim.install_scenario()?;
        // Send what setup queued (name registrations) at time zero.
        for node in 0..sim.nodes.len() {
            sim.flush(node);
        }
        Ok(sim)
    }

    fn install_scenario(&mut self) -> Result<(), SimError> {
        for (k, sv) in self.topo.services.clone().into_iter().enumerate() {
            let NodeState::Host(host, _) = &mut self.nodes[sv.host] else {
                return Err(SimError::Setup(format!(
                    "service {}: not on a host",
                    sv.name
                )));
            };
            let setup =
                |e: &dyn std::fmt::Display| SimError::Setup(format!("service {}: {e}", sv.name));
            let sock = XDatagram::bind(host, Some(sv.sid)).map_err(|e| setup(&e))?;
            // With a name server, the service registers its name (in
            // lowercase, as names are), signed by its SID's key.
            if host.name_server().is_some() {
                let owner = derived_identity(Principal::SID, &format!("service {}", sv.name));
                let dag = sock.local_dag(host).expect("just bound");
                socket::register(
                    host,
                    Instant::ZERO,
                    &owner,
                    &sv.name.to_ascii_lowercase(),
                    &dag,
                    1,
                )
                .map_err(|e| setup(&e))?;
            }
            self.add_app(sv.host, App::Service(sock, 0, k));
        }
        for (k, run) in self.topo.runs.clone().into_iter().enumerate() {
            let Command::Ping {
                dst,
                count,
                interval,
                size,
                timeout,
                hop_limit,
            } = run.command;
            let label = match &dst {
                Target::Dag(d) => self
                    .topo
                    .name_of(d.intent())
                    .unwrap_or_else(|| d.intent().to_string()),
                Target::Name(name) => name.clone(),
            };
            let mut pinger = Pinger::new(
                dst,
                label,
                count,
                interval,
                size,
                timeout,
                0x1000 + k as u16,
            );
            pinger.hop_limit = hop_limit;
            pinger.names = self
                .topo
                .nodes
                .iter()
                .map(|n| (n.hid(), n.name.clone()))
                .collect();
            let app = self.add_app(run.node, App::Ping(pinger, k));
            self.schedule(
                Instant::ZERO + run.at,
                Event::Wake {
                    node: run.node,
                    app,
                },
            );
        }
        for c in self.topo.chunks.clone() {
            let NodeState::Host(host, _) = &mut self.nodes[c.host] else {
                return Err(SimError::Setup(format!("chunk {}: not on a host", c.name)));
            };
            socket::put_chunk(host, &c.bytes)
                .map_err(|e| SimError::Setup(format!("chunk {}: {e}", c.name)))?;
        }
        for (k, f) in self.topo.fetches.clone().into_iter().enumerate() {
            let c = &self.topo.chunks[f.chunk];
            let NodeState::Host(publisher, _) = &self.nodes[c.host] else {
                return Err(SimError::Setup(format!(
                    "fetch {k}: publisher is not a host"
                )));
            };
            let dag = publisher.content_dag(Xid::cid_of(&c.bytes));
            let app = self.add_app(f.node, App::Fetch(ChunkFetcher::new(dag), k));
            self.schedule(Instant::ZERO + f.at, Event::Wake { node: f.node, app });
        }
        for (index, m) in self.topo.moves.clone().into_iter().enumerate() {
            self.schedule(Instant::ZERO + m.at, Event::Move { index });
        }
        for (index, e) in self.topo.events.clone().into_iter().enumerate() {
            self.schedule(Instant::ZERO + e.at, Event::Change { index });
        }
        for (k, st) in self.topo.streams.clone().into_iter().enumerate() {
            let sid = match st.service {
                Some(i) => self.topo.services[i].sid,
                None => derived_identity(Principal::SID, &format!("stream {k} server")).xid(),
            };
            let NodeState::Host(server, _) = &mut self.nodes[st.to] else {
                return Err(SimError::Setup(format!("stream {k}: server is not a host")));
            };
            let l = XListener::bind(server, Some(sid))
                .map_err(|e| SimError::Setup(format!("stream {k}: {e}")))?;
            let base = match &st.dag {
                Some(d) => d.clone(),
                None => server.dag(),
            };
            let dst = base
                .append_xid(sid)
                .map_err(|e| SimError::Setup(format!("stream {k}: {e}")))?;
            self.add_app(st.to, App::StreamServer(StreamServer::new(l), k));
            let target = match st.service {
                Some(i) => Target::Name(self.topo.services[i].name.to_ascii_lowercase()),
                None => Target::Dag(dst),
            };
            let client = StreamClient::new(target, st.bytes);
            let app = self.add_app(st.from, App::StreamClient(client, k));
            self.schedule(Instant::ZERO + st.at, Event::Wake { node: st.from, app });
        }
        for (k, flow) in self.topo.flows.clone().into_iter().enumerate() {
            let sink_sid = derived_identity(Principal::SID, &format!("flow {k} sink")).xid();
            let NodeState::Host(sink_host, _) = &mut self.nodes[flow.to] else {
                return Err(SimError::Setup(format!("flow {k}: receiver is not a host")));
            };
            let sink_sock = XDatagram::bind(sink_host, Some(sink_sid))
                .map_err(|e| SimError::Setup(format!("flow {k}: {e}")))?;
            let dst = match &flow.dag {
                Some(d) => d
                    .append_xid(sink_sid)
                    .map_err(|e| SimError::Setup(format!("flow {k}: {e}")))?,
                None => sink_sock.local_dag(sink_host).expect("just bound"),
            };
            self.add_app(flow.to, App::Sink(FlowSink::new(sink_sock, flow.count), k));
            let NodeState::Host(src_host, _) = &mut self.nodes[flow.from] else {
                return Err(SimError::Setup(format!("flow {k}: sender is not a host")));
            };
            let sock = XDatagram::bind(src_host, None)
                .map_err(|e| SimError::Setup(format!("flow {k}: {e}")))?;
            let sender = FlowSender::new(sock, dst, flow.count, flow.interval, flow.size);
            let app = self.add_app(flow.from, App::Sender(sender, k));
            self.schedule(
                Instant::ZERO + flow.at,
                Event::Wake {
                    node: flow.from,
                    app,
                },
            );
        }
        self.install_vms()
    }

    fn add_app(&mut self, node: usize, app: App) -> usize {
        match &mut self.nodes[node] {
            NodeState::Host(_, apps) => {
                apps.push(app);
                apps.len() - 1
            }
            NodeState::Router(_) | NodeState::Agent(_) => {
                unreachable!("topology checks that apps run on hosts")
            }
        }
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        // Router timers are background; a host's (its connections'
        // retransmissions) are the scenario's own work.
        let background = self.background
            || matches!(event, Event::Timer { node } if matches!(self.nodes[node], NodeState::Router(_)));
        self.seq += 1;
        if !background {
            self.foreground += 1;
        }
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            event,
            background,
        }));
    }

    /// Runs until no events are left or the time limit; returns the report
    /// and finishes the pcaps.
    pub fn run(mut self) -> Result<Report, SimError> {
        while let Some(Reverse(q)) = self.queue.pop() {
            if self.until.is_some_and(|u| q.at > u) {
                break;
            }
            // Without a time limit, a run ends when nothing but background
            // work (periodic beacons) is left.
            if self.until.is_none() && self.foreground == 0 {
                break;
            }
            if !q.background {
                self.foreground -= 1;
            }
            self.background = q.background;
            self.now = q.at;
            self.events += 1;
            match q.event {
                Event::Arrive { node, port, packet } => self.arrive(node, port, packet),
                Event::Wake { node, app } => self.wake(node, app),
                Event::Timer { node } => self.timer(node, q.at),
                Event::Move { index } => self.do_move(index),
                Event::Change { index } => self.change(index),
                Event::Migrate { index } => self.migrate(index),
                Event::Fault { index, end } => self.fault(index, end),
                Event::Restart { node, index } => self.restart_agent(node, index),
                Event::NicReady { node, at } => {
                    if self.nic_ready[node] == Some(at) {
                        self.nic_ready[node] = None;
                        if self.failed[node] {
                            self.nic_held[node] = None; // crashed with it
                        } else {
                            self.flush(node);
                        }
                    }
                }
            }
        }
        // Pingers still waiting when time ran out print their statistics.
        let now = self.now;
        for n in &mut self.nodes {
            if let NodeState::Host(_, apps) = n {
                for a in apps.iter_mut() {
                    if let App::Ping(p, _) = a {
                        p.finish(now);
                    }
                }
            }
        }
        for (li, cap) in self.captures.iter_mut().enumerate() {
            if let Some(c) = cap.take() {
                let l = &self.topo.links[li];
                let path = PathBuf::from(format!(
                    "{}-{}.pcap",
                    self.topo.nodes[l.a].name, self.topo.nodes[l.b].name
                ));
                c.finish()
                    .map_err(|source| SimError::Pcap { path, source })?;
            }
        }
        Ok(self.report())
    }

    fn arrive(&mut self, node: usize, port: usize, packet: Vec<u8>) {
        let now = self.now;
        if self.failed[node] {
            match self.nodes[node] {
                NodeState::Agent(_) => self.faults.crash_drops += 1,
                _ => self.failed_drops += 1,
            }
            return;
        }
        match &mut self.nodes[node] {
            NodeState::Router(r) => {
                r.handle_packet(now, port as u16, packet);
                while r.poll_delivered().is_some() {}
            }
            NodeState::Host(h, _) => h.handle_packet(now, port as u16, packet),
            NodeState::Agent(a) => a.handle_packet(now, packet),
        }
        self.flush(node);
    }

    fn wake(&mut self, node: usize, app: usize) {
        let now = self.now;
        let next = match &mut self.nodes[node] {
            NodeState::Host(host, apps) => match &mut apps[app] {
                App::Ping(p, _) => p.wake(now, host),
                App::Sender(s, _) => s.wake(now, host),
                App::StreamClient(c, _) => c.wake(now, host),
                App::Fetch(f, _) => f.wake(now, host),
                App::Download(d, _) => d.wake(now, host),
                App::Datagrams(d, _) => d.wake(now, host),
                App::Sink(..) | App::Service(..) | App::StreamServer(..) => None,
            },
            NodeState::Router(_) | NodeState::Agent(_) => None,
        };
        if let Some(at) = next {
            self.schedule(at, Event::Wake { node, app });
        }
        self.flush(node);
    }

    /// Re-plugs a host: its old link goes down, the move's link comes up
    /// as its port 0.
    fn do_move(&mut self, index: usize) {
        let m = self.topo.moves[index].clone();
        if let Some(&(old, _)) = self.ports[m.host].first() {
            self.down[old] = true;
        }
        self.down[m.link] = false;
        match self.ports[m.host].first_mut() {
            Some(p) => *p = (m.link, m.router),
            None => self.ports[m.host].push((m.link, m.router)),
        }
    }

    /// A link or router fails or comes back.
    fn change(&mut self, index: usize) {
        let e = self.topo.events[index];
        match e.target {
            EventTarget::Link(li) => self.down[li] = !e.up,
            EventTarget::Node(n) => {
                self.failed[n] = !e.up;
                self.timers[n] = None;
                if e.up {
                    // A reboot: the router starts again from its
                    // configuration, knowing nothing it had learnt.
                    let r = build_router(
                        &self.topo,
                        &self.ports,
                        n,
                        self.no_fast_path,
                        self.ns_dag.clone(),
                    );
                    self.nodes[n] = NodeState::Router(Box::new(r));
                    self.flush(n);
                }
            }
        }
    }

    fn timer(&mut self, node: usize, at: Instant) {
        if self.timers[node] != Some(at) || self.failed[node] {
            return; // superseded, or the router is down
        }
        self.timers[node] = None;
        match &mut self.nodes[node] {
            NodeState::Router(r) => r.handle_timeout(self.now),
            NodeState::Host(h, _) => h.handle_timeout(self.now),
            NodeState::Agent(a) => a.handle_timeout(self.now),
        }
        self.flush(node);
    }

    /// Moves what a node wants to send onto its links, and its events to
    /// its apps, and keeps its timer scheduled.
    ///
    /// An end system (host or hypervisor) stops taking packets from its
    /// stack when its link's queue is full, as a NIC whose ring is full
    /// stops its host's queue: the packet that did not fit is held and
    /// goes first when the queue has room, and the rest wait in the stack
    /// (its own bounded queue). Only routers drop at a full queue. Without
    /// this a sender whose first hop is as fast as its path would overflow
    /// its own link at every burst (slow start sends at twice the rate the
    /// ACKs come back), which no real host does.
    fn flush(&mut self, node: usize) {
        let mut out = Vec::new();
        let mut wait = None;
        // Packets this flush has offered per port (they reach the links
        // below, after the timer is scheduled).
        let mut offered = vec![0; self.ports[node].len()];
        if let Some((port, packet)) = self.nic_held[node].take() {
            wait = self.nic_offer(node, port, packet, &mut out, &mut offered);
        }
        let mut wakes = Vec::new();
        let mut agent_events = Vec::new();
        match &mut self.nodes[node] {
            NodeState::Agent(a) => {
                // The log first: it is durable before anything leaves.
                while let Some(e) = a.poll_log() {
                    self.faults.record(node, &e);
                }
            }
            NodeState::Router(r) => {
                while let Some(t) = r.poll_transmit() {
                    out.push((t.port as usize, t.packet));
                }
            }
            NodeState::Host(host, apps) => {
                while let Some(e) = host.poll_event() {
                    wakes.extend(dispatch(self.now, &e, host, apps));
                }
            }
        }
        while self.nic_held[node].is_none() {
            let t = match &mut self.nodes[node] {
                NodeState::Agent(a) => a.poll_transmit(),
                NodeState::Host(host, _) => host.poll_transmit(),
                NodeState::Router(_) => None,
            };
            let Some(t) = t else { break };
            wait = self.nic_offer(node, t.port as usize, t.packet, &mut out, &mut offered);
        }
        let next = match &mut self.nodes[node] {
            NodeState::Agent(a) => {
                while let Some(e) = a.poll_event() {
                    agent_events.push(e);
                }
                a.poll_timeout()
            }
            NodeState::Router(r) => r.poll_timeout(),
            NodeState::Host(host, _) => host.poll_timeout(),
        };
        if next != self.timers[node] {
            self.timers[node] = next;
            if let Some(at) = next {
                self.schedule(at, Event::Timer { node });
            }
        }
        for (port, packet) in out {
            self.transmit(node, port, packet);
        }
        if let Some(at) = wait {
            if self.nic_ready[node] != Some(at) {
                self.nic_waits += 1;
                self.nic_ready[node] = Some(at);
                self.schedule(at, Event::NicReady { node, at });
            }
        }
        for (app, at) in wakes {
            self.schedule(at, Event::Wake { node, app });
        }
        for e in agent_events {
            self.on_agent_event(e);
        }
    }

    /// Offers end system `node`'s `packet` to its link on `port`, after
    /// the `offered` ones this flush already took: into `out` if the
    /// queue has room, else the NIC holds it and the answer is when the
    /// queue has room again. A link that is down or cut takes everything
    /// (and loses it).
    fn nic_offer(
        &mut self,
        node: usize,
        port: usize,
        packet: Vec<u8>,
        out: &mut Vec<(usize, Vec<u8>)>,
        offered: &mut [usize],
    ) -> Option<Instant> {
        let full = self.ports[node].get(port).and_then(|&(li, _)| {
            if self.down[li] || self.faults.is_cut(li) {
                return None;
            }
            let d = if self.topo.links[li].a == node { 0 } else { 1 };
            let extra = offered.get(port).copied().unwrap_or(0);
            self.dirs[li][d].full_until(self.now, extra)
        });
        if full.is_some() {
            self.nic_held[node] = Some((port, packet));
        } else {
            if let Some(n) = offered.get_mut(port) {
                *n += 1;
            }
            out.push((port, packet));
        }
        full
    }

    fn transmit(&mut self, node: usize, port: usize, packet: Vec<u8>) {
        let Some(&(li, peer)) = self.ports[node].get(port) else {
            return;
        };
        if self.down[li] || self.faults.is_cut(li) {
            self.down_drops += 1;
            return;
        }
        let d = if self.topo.links[li].a == node { 0 } else { 1 };
        let frame_len = packet.len() + 14;
        if let Some(Some(cap)) = self.captures.get_mut(li) {
            let peer_port = self.peer_port[li][d];
            // A capture error (disk full) must not change the simulation;
            // it drops the capture.
            if cap
                .write(
                    self.now,
                    &frame(mac(peer, peer_port), mac(node, port), &packet),
                )
                .is_err()
            {
                self.captures[li] = None;
            }
        }
        let port = self.peer_port[li][d];
        let fate = self.dirs[li][d].send(self.now, frame_len);
        match self
            .faults
            .impair(li, self.now, fate, &mut self.dirs[li][d].stats)
        {
            Fate::Arrives(at) => self.schedule(
                at,
                Event::Arrive {
                    node: peer,
                    port,
                    packet,
                },
            ),
            Fate::Duplicated(first, second) => {
                self.schedule(
                    first,
                    Event::Arrive {
                        node: peer,
                        port,
                        packet: packet.clone(),
                    },
                );
                self.schedule(
                    second,
                    Event::Arrive {
                        node: peer,
                        port,
                        packet,
                    },
                );
            }
            Fate::QueueDrop | Fate::Lost => {}
        }
    }

    fn report(&self) -> Report {
        let mut pings = Vec::new();
        let mut flows: Vec<(usize, FlowReport)> = Vec::new();
        let mut sinks: Vec<(usize, &FlowSink)> = Vec::new();
        let mut services = Vec::new();
        let mut clients: Vec<(usize, &StreamClient)> = Vec::new();
        let mut fetches: Vec<(usize, FetchReport)> = Vec::new();
        let mut servers: Vec<(usize, &StreamServer)> = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let NodeState::Host(_, apps) = n else {
                continue;
            };
            for a in apps {
                match a {
                    App::Ping(p, k) => pings.push((
                        *k,
                        PingReport {
                            node: self.topo.nodes[i].name.clone(),
                            command: self.topo.runs[*k].text.clone(),
                            transmitted: p.transmitted(),
                            received: p.rtts.len() as u32,
                            errors: p.errors,
                            rtts: p.rtts.clone(),
                            lines: p.lines.clone(),
                        },
                    )),
                    App::Sender(s, k) => {
                        let f = &self.topo.flows[*k];
                        flows.push((
                            *k,
                            FlowReport {
                                from: self.topo.nodes[f.from].name.clone(),
                                to: self.topo.nodes[f.to].name.clone(),
                                sent: s.sent,
                                delivered: 0,
                                lost: 0,
                                duplicates: 0,
                                reordered: 0,
                                net_errors: s.net_errors,
                            },
                        ))
                    }
                    App::Sink(s, k) => sinks.push((*k, s)),
                    App::StreamClient(c, k) => clients.push((*k, c)),
                    App::Fetch(f, k) => fetches.push((
                        *k,
                        FetchReport {
                            node: self.topo.nodes[i].name.clone(),
                            chunk: self.topo.chunks[self.topo.fetches[*k].chunk].name.clone(),
                            result: f.result.clone(),
                            duration: f.started.zip(f.finished).map(|(a, b)| b - a),
                        },
                    )),
                    App::StreamServer(sv, k) => servers.push((*k, sv)),
                    App::Service(_, count, k) => services.push(ServiceReport {
                        name: self.topo.services[*k].name.clone(),
                        host: self.topo.nodes[i].name.clone(),
                        received: *count,
                    }),
                    // Reported by vm_client_reports.
                    App::Download(..) | App::Datagrams(..) => {}
                }
            }
        }
        for (k, f) in &mut flows {
            if let Some((_, s)) = sinks.iter().find(|(sk, _)| sk == k) {
                f.delivered = s.received;
                f.duplicates = s.duplicates;
                f.reordered = s.reordered;
            }
            f.lost = f.sent.saturating_sub(f.delivered);
        }
        flows.sort_by_key(|(k, _)| *k);
        pings.sort_by_key(|(k, _)| *k);
        clients.sort_by_key(|(k, _)| *k);
        fetches.sort_by_key(|(k, _)| *k);
        let streams = clients
            .iter()
            .map(|(k, c)| {
                let spec = &self.topo.streams[*k];
                let sv = servers.iter().find(|(sk, _)| sk == k).map(|(_, s)| *s);
                let received = sv.map_or(0, |s| s.received);
                let duration = match (c.started, sv.and_then(|s| s.finished)) {
                    (Some(a), Some(b)) => Some(b - a),
                    _ => None,
                };
                let stats = c.stream.and_then(|h| self.host_stream_stats(spec.from, h));
                StreamReport {
                    from: self.topo.nodes[spec.from].name.clone(),
                    to: self.topo.nodes[spec.to].name.clone(),
                    bytes: spec.bytes,
                    received,
                    corrupt: sv.map_or(0, |s| s.corrupt),
                    duration,
                    retransmissions: stats.map_or(0, |s| s.retransmissions),
                    error: c.error.clone(),
                }
            })
            .collect();
        let routers = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match n {
                NodeState::Router(r) => {
                    Some((self.topo.nodes[i].name.clone(), r.counters().clone()))
                }
                NodeState::Host(..) | NodeState::Agent(_) => None,
            })
            .collect();
        let links = self
            .topo
            .links
            .iter()
            .zip(&self.dirs)
            .map(|(l, d)| LinkReport {
                a: self.topo.nodes[l.a].name.clone(),
                b: self.topo.nodes[l.b].name.clone(),
                dirs: [d[0].stats, d[1].stats],
            })
            .collect();
        Report {
            seed: self.seed,
            events: self.events,
            end: self.now,
            pings: pings.into_iter().map(|(_, p)| p).collect(),
            streams,
            fetches: fetches.into_iter().map(|(_, f)| f).collect(),
            flows: flows.into_iter().map(|(_, f)| f).collect(),
            unplugged_drops: self.down_drops,
            failed_router_drops: self.failed_drops,
            nic_waits: self.nic_waits,
            send_queue_drops: self
                .nodes
                .iter()
                .map(|n| match n {
                    NodeState::Router(_) => 0,
                    NodeState::Host(h, _) => h.counters().send_queue_full,
                    NodeState::Agent(a) => {
                        a.host().counters().send_queue_full
                            + a.vm_names()
                                .filter_map(|n| a.vm(n))
                                .map(|vm| vm.stack.counters().send_queue_full)
                                .sum::<u64>()
                    }
                })
                .sum(),
            changes: self
                .topo
                .events
                .iter()
                .map(|e| {
                    let what = match e.target {
                        EventTarget::Link(li) => {
                            let l = &self.topo.links[li];
                            format!(
                                "link {}-{}",
                                self.topo.nodes[l.a].name, self.topo.nodes[l.b].name
                            )
                        }
                        EventTarget::Node(n) => format!("router {}", self.topo.nodes[n].name),
                    };
                    let state = if e.up { "up" } else { "down" };
                    format!("{:.3} s {what} {state}", e.at.as_secs_f64())
                })
                .collect(),
            services,
            routers,
            links,
            migrations: self.migration_reports(),
            vm_clients: self.vm_client_reports(),
            hypervisors: self.agent_reports(),
        }
    }
}

impl Simulation {
    fn host_stream_stats(
        &self,
        node: usize,
        h: xia_stack::host::StreamHandle,
    ) -> Option<xia_stack::stream::Stats> {
        match &self.nodes[node] {
            NodeState::Host(host, _) => host.stream(h).map(|c| c.stats()),
            NodeState::Router(_) | NodeState::Agent(_) => None,
        }
    }
}

/// Router `i` as configured by the topology, with its initial routes.
fn build_router(
    topo: &Topology,
    ports: &[Vec<(usize, usize)>],
    i: usize,
    no_fast_path: bool,
    name_server: Option<xia_stack::dag::Dag>,
) -> Router {
    let n = &topo.nodes[i];
    let mut cfg = RouterConfig::new(topo.ads[n.ad].xid, n.hid(), ports[i].len() as u16);
    cfg.fast_path = !no_fast_path;
    cfg.xhcp_interval = topo.xhcp_interval;
    cfg.name_server = name_server;
    let NodeKind::Router {
        cache_bytes,
        unknown_ads,
        ..
    } = &n.kind
    else {
        unreachable!("build_router is called for routers")
    };
    cfg.chunk_cache = *cache_bytes;
    if let RoutingSpec::LinkState(timers) = topo.routing {
        cfg.routing = Some(timers.link_state_config(
            routes::port_costs(topo, ports, i),
            unknown_ads.iter().map(|&a| topo.ads[a].xid).collect(),
        ));
    }
    let mut r = Router::new(cfg);
    match topo.routing {
        RoutingSpec::Static => routes::install(topo, ports, i, r.tables_mut()),
        RoutingSpec::LinkState(_) => routes::install_connected(topo, ports, i, r.tables_mut()),
    }
    r
}

/// Offers a host event to the node's apps until one takes it; returns the
/// wake-ups an app asked for.
fn dispatch(
    now: Instant,
    e: &HostEvent,
    host: &mut Host,
    apps: &mut [App],
) -> Vec<(usize, Instant)> {
    let mut wakes = Vec::new();
    for (i, a) in apps.iter_mut().enumerate() {
        let taken = match a {
            App::Ping(p, _) => match p.on_event(now, e) {
                Some(wake) => {
                    if let Some(at) = wake {
                        wakes.push((i, at));
                    }
                    true
                }
                None => false,
            },
            App::Sender(s, _) => s.on_event(e),
            App::Sink(s, _) => s.on_event(e, host),
            App::StreamClient(c, _) => c.on_event(now, e, host),
            App::Fetch(f, _) => f.on_event(now, e),
            App::StreamServer(sv, _) => sv.on_event(now, e, host),
            App::Download(d, _) => d.on_event(now, e, host),
            App::Datagrams(d, _) => d.on_event(now, e, host),
            App::Service(sock, count, _) => {
                let mine = matches!(e, HostEvent::Readable(_)) && sock.matches(e);
                if mine {
                    let mut buf = [0u8; 2048];
                    while sock.recv_from(host, &mut buf).is_ok() {
                        *count += 1;
                    }
                }
                mine
            }
        };
        if taken {
            break;
        }
    }
    wakes
}

/// Runs `topo` with `config`.
pub fn run(topo: Topology, config: &SimConfig) -> Result<Report, SimError> {
    Simulation::new(topo, config)?.run()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.pings {
            writeln!(f, "[{}] {}", p.node, p.command)?;
            for l in &p.lines {
                writeln!(f, "  {l}")?;
            }
            writeln!(f)?;
        }
        if !self.flows.is_empty() {
            writeln!(f, "flows:")?;
            writeln!(
                f,
                "  {:<10} {:<10} {:>8} {:>9} {:>7} {:>5} {:>9} {:>10}",
                "from", "to", "sent", "delivered", "lost", "dup", "reordered", "xcmp-errs"
            )?;
            for fl in &self.flows {
                writeln!(
                    f,
                    "  {:<10} {:<10} {:>8} {:>9} {:>7} {:>5} {:>9} {:>10}",
                    fl.from,
                    fl.to,
                    fl.sent,
                    fl.delivered,
                    fl.lost,
                    fl.duplicates,
                    fl.reordered,
                    fl.net_errors
                )?;
            }
            writeln!(f)?;
        }
        if !self.streams.is_empty() {
            writeln!(f, "streams:")?;
            for s in &self.streams {
                let time = s.duration.map_or_else(
                    || "unfinished".to_string(),
                    |d| format!("{:.3} s", d.as_secs_f64()),
                );
                let rate = s
                    .goodput_mbps()
                    .map_or_else(String::new, |g| format!(", {g:.2} Mbit/s"));
                write!(
                    f,
                    "  {} -> {}: {} of {} bytes in {time}{rate}, {} retransmissions",
                    s.from, s.to, s.received, s.bytes, s.retransmissions
                )?;
                if s.corrupt > 0 {
                    write!(f, ", {} CORRUPT bytes", s.corrupt)?;
                }
                if let Some(e) = &s.error {
                    write!(f, ", error: {e}")?;
                }
                writeln!(f)?;
            }
            writeln!(f)?;
        }
        vms::write_migrations(f, self)?;
        if !self.fetches.is_empty() {
            writeln!(f, "fetches:")?;
            for x in &self.fetches {
                let what = match &x.result {
                    Some(Ok(n)) => format!("{n} bytes, verified"),
                    Some(Err(e)) => format!("failed: {e}"),
                    None => "unfinished".to_string(),
                };
                let time = x.duration.map_or_else(String::new, |d| {
                    format!(" in {:.3} ms", d.as_secs_f64() * 1e3)
                });
                writeln!(f, "  {} fetched {}: {what}{time}", x.node, x.chunk)?;
            }
            writeln!(f)?;
        }
        if !self.services.is_empty() {
            writeln!(f, "services:")?;
            for s in &self.services {
                writeln!(
                    f,
                    "  {:<10} on {:<10} {} datagrams received",
                    s.name, s.host, s.received
                )?;
            }
            writeln!(f)?;
        }
        if !self.changes.is_empty() {
            writeln!(f, "events:")?;
            for e in &self.changes {
                writeln!(f, "  {e}")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "routers:")?;
        for (name, c) in &self.routers {
            writeln!(f, "  {name:<10} {c}")?;
        }
        writeln!(f, "\nlinks (a->b | b->a: delivered / queue drops / lost):")?;
        for l in &self.links {
            let [x, y] = &l.dirs;
            writeln!(
                f,
                "  {:<10} {:<10} {} / {} / {} | {} / {} / {}",
                l.a, l.b, x.delivered, x.queue_drops, x.lost, y.delivered, y.queue_drops, y.lost
            )?;
        }
        if self.unplugged_drops > 0 {
            writeln!(
                f,
                "\n{} packets sent into unplugged links",
                self.unplugged_drops
            )?;
        }
        if self.failed_router_drops > 0 {
            writeln!(
                f,
                "{} packets arrived at failed routers",
                self.failed_router_drops
            )?;
        }
        if self.nic_waits > 0 || self.send_queue_drops > 0 {
            writeln!(
                f,
                "end systems waited {} times for a full link queue; their stacks dropped {} packets at a full transmit queue",
                self.nic_waits, self.send_queue_drops
            )?;
        }
        writeln!(
            f,
            "\nseed {}, {} events, ended at {}",
            self.seed, self.events, self.end
        )
    }
}
