//! Hypervisors, VMs and migrations in the simulator: building the agents,
//! starting the VMs' clients, running each `[[migration]]` at its time,
//! and timing it by the simulation's clock (pause at the source,
//! activation at the destination); and injecting the fault a migration
//! names (link cut, stall, loss, agent crashes: see the end of the file),
//! keeping each agent's log where a crash cannot reach it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xia_migrate::agent::{Agent, AgentCounters, AgentEvent, AgentLog, LogEntry};
use xia_migrate::source::{Report as SessionReport, SourceNote};
use xia_migrate::state::Source;
use xia_migrate::vm::ServiceSpec;
use xia_stack::dag::Dag;
use xia_stack::socket::XDatagram;
use xia_stack::time::Instant;

use super::{App, Event, NodeState, SimError, Simulation};
use crate::link::{DirStats, Fate};
use crate::migration::{ClientKind, Datagrams, Download, FaultKind};
use crate::topology::{NodeKind, Target, Topology};

/// What happened to one `[[migration]]`.
#[derive(Clone, Debug, Default)]
pub(super) struct MigrationLog {
    id: Option<u64>,
    started: Option<Instant>,
    paused: Option<Instant>,
    activated: Option<Instant>,
    done: Option<Instant>,
    report: Option<SessionReport>,
    error: Option<String>,
    chose: Option<String>,
    // The source agent's node, the phase its session last reported, and
    // when the migration's fault fired (and in which phase).
    from_node: Option<usize>,
    phase: Option<Source>,
    fault_at: Option<(Instant, Source)>,
    // The links a link fault hits (computed when it fires).
    fault_links: Vec<usize>,
}

/// A migration's outcome, timed by the simulation's clock.
#[derive(Clone, Debug, PartialEq)]
pub struct MigrationReport {
    /// The VM.
    pub vm: String,
    /// From which hypervisor.
    pub from: String,
    /// To which.
    pub to: String,
    /// The mode asked for.
    pub mode: String,
    /// When it started.
    pub start: Duration,
    /// From the pause at the source to the activation at the destination.
    pub downtime: Option<Duration>,
    /// From the start to the source's release of the VM.
    pub total: Option<Duration>,
    /// When the VM ran at the destination.
    pub activated: Option<Duration>,
    /// The source's figures, when it finished.
    pub session: Option<SessionReport>,
    /// Smart mode's choice.
    pub chose: Option<String>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The fault injected (`fault = { … }`) and when it fired, or that
    /// the phase it waited for never came.
    pub fault: Option<String>,
    /// The hypervisors the VM runs on at the end of the run.
    pub running_on: Vec<String>,
    /// The hypervisors that hold a paused copy of it at the end.
    pub paused_on: Vec<String>,
}

/// What a client of a VM saw.
#[derive(Clone, Debug, PartialEq)]
pub struct VmClientReport {
    /// The client's host.
    pub host: String,
    /// The VM.
    pub vm: String,
    /// Download: bytes received and expected.
    pub received: u64,
    /// Download: bytes expected.
    pub expected: u64,
    /// Download: bytes that were not the pattern's.
    pub corrupt: u64,
    /// Download: the longest time without new bytes, and when it ended.
    pub max_gap: Duration,
    /// When that gap ended.
    pub gap_end: Option<Duration>,
    /// Download: when the stream ended (all read).
    pub finished: Option<Duration>,
    /// Download: signed MIGRATEs the client's connection took.
    pub peer_moves: u32,
    /// Datagrams: sent.
    pub sent: u32,
    /// Datagrams: received by the VM's service (distinct).
    pub delivered: u64,
    /// Datagrams: XCMP redirects the client got.
    pub redirects: u32,
    /// Datagrams: times the client switched to a new DAG.
    pub dst_changes: u32,
    /// How the client failed, if it did.
    pub error: Option<String>,
    /// `download` or `datagrams`.
    pub kind: &'static str,
}

/// A hypervisor's location-management counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentReport {
    /// Its name.
    pub name: String,
    /// The counters.
    pub counters: AgentCounters,
}

/// The agent for hypervisor node `i`, with the VMs that start on it.
pub(super) fn build_agent(
    topo: &Topology,
    ports: &[Vec<(usize, usize)>],
    i: usize,
    seed: u64,
    name_server: Option<Dag>,
) -> Result<Agent, SimError> {
    let n = &topo.nodes[i];
    let setup = crate::hypervisor::AgentSetup {
        name: &n.name,
        identity: n.identity.clone(),
        ad: topo.ads[n.ad].xid,
        gateway: ports[i].first().map(|&(_, peer)| topo.nodes[peer].hid()),
        name_server,
        capacity: topo.migration.hypervisor(i).map_or(4 << 30, |h| h.capacity),
        agent_seed: seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        vm_seed: seed,
        content_store: topo.content_store(i),
        agent_name: None,
    };
    let vms = topo.migration.vms.iter().enumerate();
    crate::hypervisor::build_agent(
        &setup,
        vms.filter(|(_, v)| v.hypervisor == i),
        Instant::ZERO,
    )
    .map_err(SimError::Setup)
}

impl Simulation {
    /// Starts the VMs' clients and schedules the migrations.
    pub(super) fn install_vms(&mut self) -> Result<(), SimError> {
        let plan = self.topo.migration.clone();
        for (k, c) in plan.clients.iter().enumerate() {
            let v = &plan.vms[c.vm];
            let dag = self.topo.vm_service_dag(c.vm);
            let NodeState::Host(host, _) = &mut self.nodes[c.host] else {
                return Err(SimError::Setup(format!("client {k}: not on a host")));
            };
            let app = match &c.kind {
                ClientKind::Download => {
                    let ServiceSpec::StreamSource { bytes, .. } = v.service else {
                        return Err(SimError::Setup(format!("client {k}: not a stream VM")));
                    };
                    let target = match (&v.service_name, c.by_name) {
                        (Some(n), true) => Target::Name(n.clone()),
                        _ => Target::Dag(dag),
                    };
                    App::Download(Download::new(target, bytes), k)
                }
                ClientKind::Datagrams {
                    count,
                    interval,
                    size,
                } => {
                    let sock = XDatagram::bind(host, None)
                        .map_err(|e| SimError::Setup(format!("client {k}: {e}")))?;
                    let dst = (!c.by_name).then_some(dag);
                    App::Datagrams(
                        Datagrams::new(sock, dst, v.service_name.clone(), *count, *interval, *size),
                        k,
                    )
                }
            };
            let app = self.add_app(c.host, app);
            self.schedule(Instant::ZERO + c.at, Event::Wake { node: c.host, app });
        }
        for (index, m) in plan.migrations.iter().enumerate() {
            self.migration_log.push(MigrationLog::default());
            self.schedule(Instant::ZERO + m.at, Event::Migrate { index });
        }
        Ok(())
    }

    // The agent that runs VM `name` now.
    fn agent_of(&self, name: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| matches!(n, NodeState::Agent(a) if a.vm(name).is_some()))
    }

    /// Runs `[[migration]]` `index`.
    pub(super) fn migrate(&mut self, index: usize) {
        let m = self.topo.migration.migrations[index].clone();
        let name = self.topo.migration.vms[m.vm].name.clone();
        let now = self.now;
        self.migration_log[index].started = Some(now);
        let Some(src) = self.agent_of(&name) else {
            self.migration_log[index].error = Some(format!("VM {name} is on no hypervisor"));
            return;
        };
        let NodeState::Agent(dst) = &self.nodes[m.to] else {
            return;
        };
        let to = dst.dag();
        let NodeState::Agent(a) = &mut self.nodes[src] else {
            return;
        };
        match a.migrate(now, &name, &to, m.config.clone()) {
            Ok(id) => {
                let log = &mut self.migration_log[index];
                log.id = Some(id);
                log.from_node = Some(src);
                log.phase = Some(Source::Negotiating);
            }
            Err(e) => self.migration_log[index].error = Some(e.to_string()),
        }
        self.flush(src);
        self.fault_due(index);
    }

    /// Records what an agent reports, by the simulation's clock.
    pub(super) fn on_agent_event(&mut self, e: AgentEvent) {
        let now = self.now;
        match e {
            AgentEvent::Outgoing { id, note, .. } => {
                let Some(index) = self.migration_log.iter().position(|l| l.id == Some(id)) else {
                    return;
                };
                let log = &mut self.migration_log[index];
                if let Some(p) = phase_after(&note) {
                    log.phase = Some(p);
                }
                match note {
                    SourceNote::Paused => log.paused = Some(now),
                    SourceNote::Chose { strategy, .. } => log.chose = Some(strategy.to_string()),
                    SourceNote::Done(r) => {
                        log.done = Some(now);
                        log.report = Some(r);
                    }
                    SourceNote::Failed { phase, error } => {
                        log.error = Some(format!("failed in {phase:?}: {error}"));
                    }
                    _ => {}
                }
                self.fault_due(index);
            }
            AgentEvent::Activated { vm } => {
                let plan = &self.topo.migration;
                if let Some(log) = self
                    .migration_log
                    .iter_mut()
                    .enumerate()
                    .filter(|(i, l)| {
                        plan.vms[plan.migrations[*i].vm].name == vm
                            && l.id.is_some()
                            && l.activated.is_none()
                    })
                    .map(|(_, l)| l)
                    .next()
                {
                    log.activated = Some(now);
                }
            }
            AgentEvent::ActivationFailed { vm, error } => {
                let plan = &self.topo.migration;
                for (i, l) in self.migration_log.iter_mut().enumerate() {
                    if plan.vms[plan.migrations[i].vm].name == vm && l.error.is_none() {
                        l.error = Some(format!("activation failed: {error}"));
                    }
                }
            }
            AgentEvent::Incoming { .. }
            | AgentEvent::IncomingFailed { .. }
            | AgentEvent::NameAnswer { .. } => {}
        }
    }

    pub(super) fn migration_reports(&self) -> Vec<MigrationReport> {
        let plan = &self.topo.migration;
        plan.migrations
            .iter()
            .zip(&self.migration_log)
            .map(|(m, l)| {
                let v = &plan.vms[m.vm];
                let since = |t: Instant| t - Instant::ZERO;
                MigrationReport {
                    vm: v.name.clone(),
                    from: self.topo.nodes[v.hypervisor].name.clone(),
                    to: self.topo.nodes[m.to].name.clone(),
                    mode: m.config.mode.to_string(),
                    start: m.at,
                    downtime: l.paused.zip(l.activated).map(|(p, a)| a - p),
                    total: l.started.zip(l.done).map(|(s, d)| d - s),
                    activated: l.activated.map(since),
                    session: l.report.clone(),
                    chose: l.chose.clone(),
                    error: l.error.clone(),
                    fault: m.fault.map(|f| match l.fault_at {
                        Some((t, _)) => format!("{f} at {:.3} s", since(t).as_secs_f64()),
                        None => format!("{f}: not reached"),
                    }),
                    running_on: self.copies_of(&v.name, true),
                    paused_on: self.copies_of(&v.name, false),
                }
            })
            .collect()
    }

    pub(super) fn vm_client_reports(&self) -> Vec<VmClientReport> {
        let plan = &self.topo.migration;
        let mut out: Vec<(usize, VmClientReport)> = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let NodeState::Host(_, apps) = n else {
                continue;
            };
            for a in apps {
                let host = self.topo.nodes[i].name.clone();
                let since = |t: Instant| t - Instant::ZERO;
                let (k, r) = match a {
                    App::Download(d, k) => (
                        *k,
                        VmClientReport {
                            host,
                            vm: plan.vms[plan.clients[*k].vm].name.clone(),
                            received: d.received,
                            expected: d.expected(),
                            corrupt: d.corrupt,
                            max_gap: d.max_gap.0,
                            gap_end: d.max_gap.1.map(since),
                            finished: d.finished.map(since),
                            peer_moves: d.peer_moves,
                            sent: 0,
                            delivered: 0,
                            redirects: 0,
                            dst_changes: 0,
                            error: d.error.clone(),
                            kind: "download",
                        },
                    ),
                    App::Datagrams(d, k) => {
                        let vm = plan.vms[plan.clients[*k].vm].name.clone();
                        let delivered = self
                            .nodes
                            .iter()
                            .find_map(|n| match n {
                                NodeState::Agent(a) => a.vm(&vm).map(|v| v.datagrams()),
                                _ => None,
                            })
                            .unwrap_or(0);
                        (
                            *k,
                            VmClientReport {
                                host,
                                vm,
                                received: 0,
                                expected: 0,
                                corrupt: 0,
                                max_gap: Duration::ZERO,
                                gap_end: None,
                                finished: None,
                                peer_moves: 0,
                                sent: d.sent(),
                                delivered,
                                redirects: d.redirects,
                                dst_changes: d.dst_changes,
                                error: None,
                                kind: "datagrams",
                            },
                        )
                    }
                    _ => continue,
                };
                out.push((k, r));
            }
        }
        out.sort_by_key(|(k, _)| *k);
        out.into_iter().map(|(_, r)| r).collect()
    }

    pub(super) fn agent_reports(&self) -> Vec<AgentReport> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match n {
                NodeState::Agent(a) => Some(AgentReport {
                    name: self.topo.nodes[i].name.clone(),
                    counters: a.counters(),
                }),
                _ => None,
            })
            .collect()
    }
}

/// The report's migration lines.
pub(super) fn write_migrations(
    f: &mut std::fmt::Formatter<'_>,
    r: &super::Report,
) -> std::fmt::Result {
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    if !r.migrations.is_empty() {
        writeln!(f, "migrations:")?;
        for m in &r.migrations {
            write!(
                f,
                "  {} {} -> {} {} at {:.3} s: ",
                m.vm,
                m.from,
                m.to,
                m.mode,
                m.start.as_secs_f64()
            )?;
            match (&m.error, &m.session) {
                (Some(e), _) => write!(f, "{e}")?,
                (None, Some(s)) => {
                    write!(f, "done")?;
                    if let Some(c) = &m.chose {
                        write!(f, " (chose {c})")?;
                    }
                    write!(
                        f,
                        "; downtime {} (estimated {}), total {}, {} rounds, {:.2} MB sent, {} pages in the final copy",
                        m.downtime.map_or_else(|| "?".into(), ms),
                        ms(s.estimated_downtime.min(Duration::from_secs(3600))),
                        m.total.map_or_else(|| "?".into(), ms),
                        s.rounds,
                        s.bytes as f64 / 1e6,
                        s.final_pages
                    )?;
                    if s.pages.cid > 0 {
                        write!(f, ", {} pages by CID", s.pages.cid)?;
                    }
                    if s.throttle < 1.0 {
                        write!(f, ", throttled to {:.0} %", s.throttle * 100.0)?;
                    }
                    if s.target_missed {
                        write!(f, ", downtime target missed")?;
                    }
                }
                (None, None) => write!(f, "unfinished")?,
            }
            if let Some(fault) = &m.fault {
                match m.running_on.as_slice() {
                    [] => write!(f, "; fault: {fault}; runs nowhere")?,
                    on => write!(f, "; fault: {fault}; runs on {}", on.join(" and "))?,
                }
                if !m.paused_on.is_empty() {
                    write!(f, ", paused on {}", m.paused_on.join(" and "))?;
                }
            }
            writeln!(f)?;
        }
        writeln!(f)?;
    }
    if !r.vm_clients.is_empty() {
        writeln!(f, "vm clients:")?;
        for c in &r.vm_clients {
            if c.kind == "download" {
                write!(
                    f,
                    "  {} <- {} (download): {} of {} bytes, {} corrupt, longest gap {}",
                    c.host,
                    c.vm,
                    c.received,
                    c.expected,
                    c.corrupt,
                    ms(c.max_gap)
                )?;
                if let Some(t) = c.gap_end {
                    write!(f, " ending at {:.3} s", t.as_secs_f64())?;
                }
                write!(f, ", {} peer moves", c.peer_moves)?;
            } else {
                write!(
                    f,
                    "  {} -> {} (datagrams): {} sent, {} delivered, {} lost, {} redirects, {} address changes",
                    c.host,
                    c.vm,
                    c.sent,
                    c.delivered,
                    u64::from(c.sent).saturating_sub(c.delivered),
                    c.redirects,
                    c.dst_changes
                )?;
            }
            if let Some(e) = &c.error {
                write!(f, ", error: {e}")?;
            }
            writeln!(f)?;
        }
        writeln!(f)?;
    }
    if !r.hypervisors.is_empty() {
        writeln!(f, "hypervisors:")?;
        for h in &r.hypervisors {
            let c = h.counters;
            writeln!(
                f,
                "  {}: {} buffered, {} dropped, {} delivered after a failed move, {} forwarded, {} redirects",
                h.name, c.buffered, c.buffer_drops, c.delivered_after_pause, c.forwarded, c.redirects
            )?;
            if c.pages_fetched + c.fetch_failures > 0 {
                writeln!(
                    f,
                    "    {} pages fetched by CID, {} fetches failed (asked of the source)",
                    c.pages_fetched, c.fetch_failures
                )?;
            }
        }
        writeln!(f)?;
    }
    Ok(())
}

// ---- Fault injection (`fault = { … }` in a `[[migration]]`) ----
//
// A fault fires the first time the migration's source reports the phase
// it names (the agent's notes, seen as the simulator flushes the source
// node), as an event at that instant. Link faults act on the links that
// join two ADs on the path between the hypervisors; crashes replace the
// agent: the source's restarts from the log the simulator kept for it
// (what `Agent::poll_log` handed out, applied to an `AgentLog` outside the
// agent), with the VMs that outlived it; the destination's restarts empty.

/// The simulator's fault state: what is cut, stalled or lossy, and the
/// agents' logs (the "disk" that outlives an agent process).
pub(super) struct Faults {
    logs: BTreeMap<usize, AgentLog>,
    cut: Vec<bool>,
    stall_until: Vec<Option<Instant>>,
    loss: Vec<Option<(f64, Instant)>>,
    // Loss draws: their own stream, so that a fault shifts no other draw.
    rng: ChaCha8Rng,
    // Destination crashes per node: each new incarnation draws from a
    // fresh seed.
    crashes: BTreeMap<usize, u64>,
    /// Packets that arrived at a crashed agent's machine.
    pub(super) crash_drops: u64,
}

impl Faults {
    pub(super) fn new(links: usize, seed: u64) -> Faults {
        Faults {
            logs: BTreeMap::new(),
            cut: vec![false; links],
            stall_until: vec![None; links],
            loss: vec![None; links],
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6661_756c_7473_2121),
            crashes: BTreeMap::new(),
            crash_drops: 0,
        }
    }

    /// Makes an agent's log entry durable: before its packets leave.
    pub(super) fn record(&mut self, node: usize, entry: &LogEntry) {
        self.logs.entry(node).or_default().apply(entry);
    }

    /// Whether a fault has link `li` down.
    pub(super) fn is_cut(&self, li: usize) -> bool {
        self.cut.get(li).copied().unwrap_or(false)
    }

    /// What a loss or stall fault does to a packet the link model gave
    /// `fate` (sent at `now`).
    pub(super) fn impair(
        &mut self,
        li: usize,
        now: Instant,
        fate: Fate,
        stats: &mut DirStats,
    ) -> Fate {
        if let Some((rate, until)) = self.loss[li] {
            if now < until {
                let x = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                if x < rate && matches!(fate, Fate::Arrives(_) | Fate::Duplicated(..)) {
                    stats.delivered = stats.delivered.saturating_sub(1);
                    stats.lost += 1;
                    return Fate::Lost;
                }
            } else {
                self.loss[li] = None;
            }
        }
        if let Some(until) = self.stall_until[li] {
            if now < until {
                return match fate {
                    Fate::Arrives(t) => Fate::Arrives(t.max(until)),
                    Fate::Duplicated(a, b) => Fate::Duplicated(a.max(until), b.max(until)),
                    other => other,
                };
            }
            self.stall_until[li] = None;
        }
        fate
    }
}

/// The phase a source is in after reporting `note`.
fn phase_after(note: &SourceNote) -> Option<Source> {
    Some(match note {
        SourceNote::Accepted => Source::PreCopy,
        SourceNote::Paused => Source::StopAndCopy,
        SourceNote::FinalSent => Source::AwaitCommit,
        SourceNote::Committed => Source::Released,
        SourceNote::InDoubt => Source::InDoubt,
        SourceNote::Done(_) => Source::Done,
        SourceNote::Failed { .. } => Source::Aborted,
        _ => return None,
    })
}

impl Simulation {
    /// Schedules `[[migration]]` `index`'s fault if its source has just
    /// reached the phase it waits for (the first time only).
    fn fault_due(&mut self, index: usize) {
        let Some(spec) = self.topo.migration.migrations[index].fault else {
            return;
        };
        let log = &mut self.migration_log[index];
        if log.fault_at.is_none() && log.phase == Some(spec.phase) {
            log.fault_at = Some((self.now, spec.phase));
            self.schedule(self.now, Event::Fault { index, end: false });
        }
    }

    /// Starts (or, `end`, ends) `[[migration]]` `index`'s fault.
    pub(super) fn fault(&mut self, index: usize, end: bool) {
        let m = &self.topo.migration.migrations[index];
        let (Some(spec), to) = (m.fault, m.to) else {
            return;
        };
        let now = self.now;
        if !end
            && matches!(
                spec.kind,
                FaultKind::LinkCut(_) | FaultKind::Stall(_) | FaultKind::Loss { .. }
            )
        {
            self.migration_log[index].fault_links = self.fault_links(index);
        }
        let links = self.migration_log[index].fault_links.clone();
        match spec.kind {
            FaultKind::LinkCut(d) => {
                for &li in &links {
                    self.faults.cut[li] = !end;
                }
                if !end {
                    // What is on the wire goes down with it.
                    self.reschedule_arrivals(&links, None);
                    self.schedule(now + d, Event::Fault { index, end: true });
                }
            }
            FaultKind::Stall(d) => {
                let until = now + d;
                for &li in &links {
                    self.faults.stall_until[li] = Some(until);
                }
                // What is on the wire is held too.
                self.reschedule_arrivals(&links, Some(until));
            }
            FaultKind::Loss { rate, duration } => {
                for &li in &links {
                    self.faults.loss[li] = Some((rate, now + duration));
                }
            }
            FaultKind::DestCrash(d) => self.crash(to, index, d),
            FaultKind::SourceCrash(d) => {
                if let Some(from) = self.migration_log[index].from_node {
                    self.crash(from, index, d);
                }
            }
        }
    }

    // The links a link fault hits: those joining two ADs on the path
    // between the migration's hypervisors; within one AD, the path's
    // router-to-router links; with none, the whole path.
    fn fault_links(&self, index: usize) -> Vec<usize> {
        let to = self.topo.migration.migrations[index].to;
        let Some(from) = self.migration_log[index].from_node else {
            return Vec::new();
        };
        // Breadth-first over the ports, in port order: deterministic.
        let mut prev: Vec<Option<(usize, usize)>> = vec![None; self.nodes.len()];
        let mut seen = vec![false; self.nodes.len()];
        let mut queue = std::collections::VecDeque::from([from]);
        seen[from] = true;
        while let Some(n) = queue.pop_front() {
            if n == to {
                break;
            }
            for &(li, peer) in &self.ports[n] {
                if !seen[peer] && !self.down[li] {
                    seen[peer] = true;
                    prev[peer] = Some((n, li));
                    queue.push_back(peer);
                }
            }
        }
        let mut path = Vec::new();
        let mut n = to;
        while let Some((p, li)) = prev[n] {
            path.push(li);
            n = p;
        }
        path.reverse();
        let nodes = &self.topo.nodes;
        let ends = |li: usize| (&nodes[self.topo.links[li].a], &nodes[self.topo.links[li].b]);
        let inter_ad: Vec<usize> = path
            .iter()
            .copied()
            .filter(|&li| ends(li).0.ad != ends(li).1.ad)
            .collect();
        if !inter_ad.is_empty() {
            return inter_ad;
        }
        let is_router = |n: &crate::topology::NodeSpec| matches!(n.kind, NodeKind::Router { .. });
        let routers: Vec<usize> = path
            .iter()
            .copied()
            .filter(|&li| is_router(ends(li).0) && is_router(ends(li).1))
            .collect();
        if routers.is_empty() {
            path
        } else {
            routers
        }
    }

    // Packets on their way over `links`: lost (`None`: the links went
    // down) or held until `Some(t)` (a stall).
    fn reschedule_arrivals(&mut self, links: &[usize], hold: Option<Instant>) {
        let items = std::mem::take(&mut self.queue).into_vec();
        let mut kept = Vec::with_capacity(items.len());
        for Reverse(mut q) in items {
            if let Event::Arrive { node, port, .. } = &q.event {
                let li = self.ports[*node].get(*port).map(|&(li, _)| li);
                if let Some(li) = li.filter(|li| links.contains(li)) {
                    match hold {
                        Some(t) => q.at = q.at.max(t),
                        None => {
                            if !q.background {
                                self.foreground -= 1;
                            }
                            let d = usize::from(self.topo.links[li].b != *node);
                            let st = &mut self.dirs[li][d].stats;
                            st.delivered = st.delivered.saturating_sub(1);
                            st.lost += 1;
                            continue;
                        }
                    }
                }
            }
            kept.push(Reverse(q));
        }
        self.queue = BinaryHeap::from(kept);
    }

    // An agent's process dies: its machine hears nothing (and its timers
    // stop) until it restarts `downtime` later.
    fn crash(&mut self, node: usize, index: usize, downtime: Duration) {
        if !matches!(self.nodes[node], NodeState::Agent(_)) || self.failed[node] {
            return;
        }
        self.failed[node] = true;
        self.timers[node] = None;
        // What its NIC held dies with it.
        self.nic_held[node] = None;
        self.nic_ready[node] = None;
        self.schedule(self.now + downtime, Event::Restart { node, index });
    }

    /// Restarts a crashed agent: the source's from its log with the VMs
    /// that outlived it, the destination's empty (its VMs died with it).
    pub(super) fn restart_agent(&mut self, node: usize, index: usize) {
        let Some(spec) = self.topo.migration.migrations[index].fault else {
            return;
        };
        let now = self.now;
        let NodeState::Agent(a) = &mut self.nodes[node] else {
            return;
        };
        let config = a.config().clone();
        let old = std::mem::replace(&mut **a, Agent::new(config.clone()));
        if let FaultKind::SourceCrash(_) = spec.kind {
            let log = self.faults.logs.get(&node).cloned().unwrap_or_default();
            **a = Agent::restart(config, old.into_vms(), &log, now);
        } else {
            // Everything is lost, the log too: a log that said "committed"
            // about a VM that died would tell the source to let its copy
            // go. A new incarnation draws fresh nonces and SIDs.
            self.faults.logs.remove(&node);
            let k = self.faults.crashes.entry(node).or_insert(0);
            *k += 1;
            let mut config = config;
            config.seed ^= k.wrapping_mul(0xa076_1d64_78bd_642f);
            **a = Agent::new(config);
            drop(old);
        }
        self.failed[node] = false;
        self.timers[node] = None;
        self.flush(node);
    }

    // The hypervisors that hold VM `name`, running (`running`) or paused.
    fn copies_of(&self, name: &str, running: bool) -> Vec<String> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match n {
                NodeState::Agent(a) => a
                    .vm(name)
                    .filter(|v| v.is_running() == running)
                    .map(|_| self.topo.nodes[i].name.clone()),
                _ => None,
            })
            .collect()
    }
}
