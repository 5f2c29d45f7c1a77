//! Hypervisors, VMs and migrations in the simulator: building the agents,
//! starting the VMs' clients, running each `[[migration]]` at its time,
//! and timing it by the simulation's clock (pause at the source,
//! activation at the destination).

use std::time::Duration;

use xia_migrate::agent::{Agent, AgentConfig, AgentCounters, AgentEvent};
use xia_migrate::guest::SyntheticGuest;
use xia_migrate::source::{Report as SessionReport, SourceNote};
use xia_migrate::vm::{ServiceSpec, Vm};
use xia_stack::dag::Dag;
use xia_stack::socket::XDatagram;
use xia_stack::time::Instant;
use xia_stack::xid::Principal;

use super::{App, Event, NodeState, SimError, Simulation};
use crate::migration::{ClientKind, Datagrams, Download};
use crate::topology::{derived_identity, Target, Topology};

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
    let ad = topo.ads[n.ad].xid;
    let gateway = ports[i].first().map(|&(_, peer)| topo.nodes[peer].hid());
    let key = derived_identity(Principal::SID, &format!("agent {}", n.name));
    let mut cfg = AgentConfig::new(n.identity.clone(), key, ad, gateway);
    cfg.name_server = name_server.clone();
    cfg.seed = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    if let Some(h) = topo.migration.hypervisor(i) {
        cfg.destination.capacity = h.capacity;
    }
    let mut agent = Agent::new(cfg);
    for (k, v) in topo.migration.vms.iter().enumerate() {
        if v.hypervisor != i {
            continue;
        }
        let memory = SyntheticGuest::new(
            v.pages,
            v.page_size,
            seed ^ (k as u64 + 1).wrapping_mul(0xc2b2_ae3d_27d4_eb4f),
            v.model,
            v.dirty_rate,
        );
        let vm = Vm::new(
            &v.name,
            memory,
            v.identity.clone(),
            ad,
            gateway,
            name_server.clone(),
            v.service.clone(),
            v.service_key.clone(),
            v.service_name.clone(),
            seed ^ (k as u64).wrapping_mul(0x2545_f491_4f6c_dd1d),
            Instant::ZERO,
        )
        .map_err(|e| SimError::Setup(format!("vm {}: {e}", v.name)))?;
        agent.add_vm(vm);
    }
    Ok(agent)
}

impl Simulation {
    /// Starts the VMs' clients and schedules the migrations.
    pub(super) fn install_vms(&mut self) -> Result<(), SimError> {
        let plan = self.topo.migration.clone();
        for (k, c) in plan.clients.iter().enumerate() {
            let v = &plan.vms[c.vm];
            let hv = &self.topo.nodes[v.hypervisor];
            let dag = Dag::path(&[
                self.topo.ads[hv.ad].xid,
                v.identity.xid(),
                v.service_key.xid(),
            ])
            .expect("three nodes");
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
            Ok(id) => self.migration_log[index].id = Some(id),
            Err(e) => self.migration_log[index].error = Some(e.to_string()),
        }
        self.flush(src);
    }

    /// Records what an agent reports, by the simulation's clock.
    pub(super) fn on_agent_event(&mut self, e: AgentEvent) {
        let now = self.now;
        match e {
            AgentEvent::Outgoing { id, note, .. } => {
                let Some(log) = self.migration_log.iter_mut().find(|l| l.id == Some(id)) else {
                    return;
                };
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
            AgentEvent::Incoming { .. } | AgentEvent::IncomingFailed { .. } => {}
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
                    if s.throttle < 1.0 {
                        write!(f, ", throttled to {:.0} %", s.throttle * 100.0)?;
                    }
                    if s.target_missed {
                        write!(f, ", downtime target missed")?;
                    }
                }
                (None, None) => write!(f, "unfinished")?,
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
        }
        writeln!(f)?;
    }
    Ok(())
}
