//! The hypervisor daemon (`xia hypervisor --config FILE`): a migration
//! agent ([`xia_migrate::agent::Agent`]) on real links, and the control
//! socket `xia migrate` talks to.
//!
//! The agent is the same sans-IO core the simulator runs; here
//! [`HypervisorNode`] lets xia-net's driver feed it packets and time, and
//! keeps its events in a bounded log for the control connections that
//! wait on them (as the host daemon does with its host's events).
//!
//! The control protocol is the host daemon's framing (`u32` big-endian
//! length, then postcard): one [`HvRequest`] per connection. `Info` is
//! answered with [`HvResponse::Info`]; `Migrate` with `Started`, then
//! `Progress` (every 200 ms and on every change) and `Note`s, and at the
//! end `Done` with the report or `Failed` with the phase and the cause.
//! Closing the connection does not cancel the migration. A `Migrate`'s
//! destination is an agent's DAG or the name it registered: the daemon
//! resolves a name through its agent's stack (the name server XHCP
//! announced).
//!
//! **The agent's name.** The daemon registers its agent's DAG under a
//! name (the hypervisor's, by default) with the name server XHCP
//! announced, signed with the agent's key, and again with a higher
//! sequence number whenever the agent's DAG changes; a registration
//! that gets no answer is tried again until one comes. The sequence
//! number starts at the wall clock in microseconds, so a restarted
//! daemon's registrations supersede its old ones. The agent keeps the
//! registration itself ([`AgentConfig::name`], a
//! [`xia_stack::socket::NameKeeper`]); lookups of other agents' names
//! (`--to NAME`) are answered by [`AgentEvent::NameAnswer`]s.
//!
//! **The log.** With [`HypervisorNode::with_log`] every entry the agent
//! hands out ([`Agent::poll_log`]) is appended to a file and synced after
//! each step, before the step's packets are sent (the driver sends only
//! after [`Node::after_step`]); if that fails nothing more is sent and the
//! daemon stops ([`HypervisorNode::log_failure`]). See
//! [`crate::hypervisor_log`].

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{oneshot, watch};
use xia_migrate::agent::{Agent, AgentConfig, AgentCounters, AgentEvent};
use xia_migrate::guest::{Guest as _, SyntheticGuest};
use xia_migrate::msg::Mode;
use xia_migrate::source::{Report, SourceConfig, SourceNote, Status};
use xia_migrate::vm::Vm;
use xia_net::api::{read_frame, write_frame, FrameError};
use xia_net::event_log::EventLog;
use xia_net::node::{Node, NodeHandle, Stopped};
use xia_stack::dag::Dag;
use xia_stack::forward::{PortId, Transmit};
use xia_stack::host::ResolveError;
use xia_stack::identity::Identity;
use xia_stack::time::Instant;
use xia_stack::xid::{Principal, Xid};

use crate::hypervisor_log::LogWriter;
use crate::migration::VmSpec;
use crate::topology::derived_identity;

/// Events kept for control connections (older ones are forgotten).
pub const EVENT_LOG: usize = 4096;

/// How often a migration's progress is sent when nothing else happens.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// The agent key of hypervisor `name`: derived from the name, as node
/// identities are, so a hypervisor's SID is the same in the simulator and
/// in real mode and can be computed from a topology.
pub fn agent_key(name: &str) -> Identity {
    derived_identity(Principal::SID, &format!("agent {name}"))
}

/// What an agent is built from, in the simulator or a daemon.
#[derive(Clone, Debug)]
pub struct AgentSetup<'a> {
    /// The hypervisor's name.
    pub name: &'a str,
    /// Its HID.
    pub identity: Identity,
    /// Its AD.
    pub ad: Xid,
    /// Its router, if known (else learnt from XHCP).
    pub gateway: Option<Xid>,
    /// The name server, if known (else learnt from XHCP).
    pub name_server: Option<Dag>,
    /// Bytes of guest memory it takes in.
    pub capacity: u64,
    /// Seed of the agent's randomness: migration ids, nonces and the
    /// secrets query nonces derive from. Deterministic in the simulator;
    /// a daemon draws it from the OS, or in-doubt answers could be
    /// collected in advance.
    pub agent_seed: u64,
    /// Seed of its VMs' memory and stacks.
    pub vm_seed: u64,
    /// Where incoming migrations fetch pages sent by CID: an image
    /// store's `AD HID`.
    pub content_store: Option<Dag>,
    /// The name the agent keeps registered, and its first registration's
    /// sequence number (a daemon: the wall clock in µs, so a restart
    /// never repeats one).
    pub agent_name: Option<(String, u64)>,
}

/// The agent for a hypervisor, with the VMs that start on it (`vms`:
/// (index among the topology's VMs, spec)); one implementation for the
/// simulator and the daemon.
pub fn build_agent<'v>(
    s: &AgentSetup<'_>,
    vms: impl IntoIterator<Item = (usize, &'v VmSpec)>,
    now: Instant,
) -> Result<Agent, String> {
    let mut agent = Agent::new(agent_config(s));
    for vm in build_vms(s, vms, now)? {
        agent.add_vm(vm);
    }
    Ok(agent)
}

/// The configuration of a hypervisor's agent.
pub fn agent_config(s: &AgentSetup<'_>) -> AgentConfig {
    let mut cfg = AgentConfig::new(s.identity.clone(), agent_key(s.name), s.ad, s.gateway);
    cfg.name_server = s.name_server.clone();
    cfg.seed = s.agent_seed;
    cfg.destination.capacity = s.capacity;
    cfg.content_store = s.content_store.clone();
    if let Some((name, seq)) = &s.agent_name {
        cfg.name = Some(name.clone());
        cfg.name_seq = *seq;
    }
    cfg
}

/// The VMs that start on a hypervisor, running (`vms`: (index among the
/// topology's VMs, spec)).
pub fn build_vms<'v>(
    s: &AgentSetup<'_>,
    vms: impl IntoIterator<Item = (usize, &'v VmSpec)>,
    now: Instant,
) -> Result<Vec<Vm>, String> {
    let mut out = Vec::new();
    for (k, v) in vms {
        let memory = SyntheticGuest::new(
            v.pages,
            v.page_size,
            s.vm_seed ^ (k as u64 + 1).wrapping_mul(0xc2b2_ae3d_27d4_eb4f),
            v.model,
            v.dirty_rate,
        );
        let memory = match v.image {
            Some(image) => memory.with_image(image),
            None => memory,
        };
        let vm = Vm::new(
            &v.name,
            memory,
            v.identity.clone(),
            s.ad,
            s.gateway,
            s.name_server.clone(),
            v.service.clone(),
            v.service_key.clone(),
            v.service_name.clone(),
            s.vm_seed ^ (k as u64).wrapping_mul(0x2545_f491_4f6c_dd1d),
            now,
        )
        .map_err(|e| format!("vm {}: {e}", v.name))?;
        out.push(vm);
    }
    Ok(out)
}

/// A lookup of another agent's name, awaiting the name server (whose
/// answer, or the stack's "no answer" after its tries, always comes).
struct Lookup {
    id: u32,
    name: String,
    reply: oneshot::Sender<Result<Dag, ResolveError>>,
}

/// The VMs of `configured` that `agent` does not run (they left, or are
/// handed over).
pub fn left(agent: &Agent, configured: &BTreeSet<String>) -> BTreeSet<String> {
    configured
        .iter()
        .filter(|v| agent.vm(v).is_none())
        .cloned()
        .collect()
}

/// An agent as a node of xia-net's driver, with its event log, the
/// registration of its name and its durable log.
pub struct HypervisorNode {
    /// The agent.
    pub agent: Agent,
    /// Its name.
    pub name: String,
    events: EventLog<AgentEvent>,
    lookups: Vec<Lookup>,
    log: Option<LogWriter>,
    // The VMs configured (whether one left is logged).
    configured: BTreeSet<String>,
    // Set when the log could not be written: nothing is sent any more.
    log_failed: watch::Sender<Option<String>>,
}

impl HypervisorNode {
    /// Wraps `agent`.
    pub fn new(name: &str, agent: Agent) -> HypervisorNode {
        HypervisorNode {
            agent,
            name: name.to_owned(),
            events: EventLog::new(EVENT_LOG),
            lookups: Vec::new(),
            log: None,
            configured: BTreeSet::new(),
            log_failed: watch::channel(None).0,
        }
    }

    /// Makes the agent's log durable in `log`, with which of the
    /// `configured` VMs left.
    pub fn with_log(mut self, log: LogWriter, configured: BTreeSet<String>) -> HypervisorNode {
        self.log = Some(log);
        self.configured = configured;
        self
    }

    /// Becomes `Some(why)` if the log could not be written: the node then
    /// sends nothing, and its daemon should stop.
    pub fn log_failure(&self) -> watch::Receiver<Option<String>> {
        self.log_failed.subscribe()
    }

    /// Looks `name` up with the name server XHCP announced; the answer
    /// comes on the receiver.
    pub fn resolve(
        &mut self,
        now: Instant,
        name: &str,
    ) -> Result<oneshot::Receiver<Result<Dag, ResolveError>>, String> {
        use xia_stack::host::HostError;
        use xia_stack::socket::SocketError;
        let id = self.agent.resolve_name(now, name).map_err(|e| match e {
            SocketError::Host(HostError::NoNameServer) => {
                "no name server known yet (no router has announced one)".to_string()
            }
            e => e.to_string(),
        })?;
        let (reply, rx) = oneshot::channel();
        self.lookups.push(Lookup {
            id,
            name: name.to_owned(),
            reply,
        });
        Ok(rx)
    }

    // Appends what the agent logged and syncs it: before anything of this
    // step is sent.
    fn write_log(&mut self, now: Instant) {
        let Some(w) = self.log.as_mut() else {
            return;
        };
        let entries: Vec<_> = std::iter::from_fn(|| self.agent.poll_log()).collect();
        if self.log_failed.borrow().is_some() {
            return;
        }
        let left = left(&self.agent, &self.configured);
        if let Err(e) = w.append(&entries, &left, now) {
            tracing::error!(hypervisor = %self.name, error = %e, "cannot write the migration log: sending nothing more");
            self.log_failed.send_replace(Some(e.to_string()));
        }
    }

    /// A receiver whose value changes when events arrive.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.events.subscribe()
    }

    /// The log position: events after it are new.
    pub fn position(&self) -> u64 {
        self.events.position()
    }

    /// The events after position `from`, and the new position.
    pub fn events_since(&self, from: u64) -> (Vec<AgentEvent>, u64) {
        (self.events.since(from).cloned().collect(), self.position())
    }
}

impl Node for HypervisorNode {
    fn handle_packet(&mut self, now: Instant, _port: PortId, packet: Vec<u8>) {
        self.agent.handle_packet(now, packet);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.agent.handle_timeout(now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.agent.poll_timeout()
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.log_failed.borrow().is_some() {
            // What the log does not hold must not leave.
            while self.agent.poll_transmit().is_some() {}
            return None;
        }
        self.agent.poll_transmit()
    }
    fn after_step(&mut self, now: Instant) {
        self.write_log(now);
        let mut any = false;
        while let Some(e) = self.agent.poll_event() {
            if let AgentEvent::NameAnswer { id, answer } = &e {
                if let Some(k) = self.lookups.iter().position(|l| l.id == *id) {
                    let l = self.lookups.swap_remove(k);
                    let _ = l.reply.send(ResolveError::from_answer(&l.name, answer));
                }
                continue;
            }
            log_event(&self.name, &e);
            self.events.push(e);
            any = true;
        }
        if any {
            self.events.notify();
        }
    }
}

fn log_event(name: &str, e: &AgentEvent) {
    match e {
        AgentEvent::Outgoing { id, vm, note } => match note {
            SourceNote::Done(r) => tracing::info!(
                hypervisor = name, id, vm, downtime = ?r.downtime, total = ?r.total,
                bytes = r.bytes, rounds = r.rounds, "migration done"
            ),
            SourceNote::Failed { phase, error } => tracing::warn!(
                hypervisor = name, id, vm, ?phase, %error, "migration failed"
            ),
            other => tracing::debug!(hypervisor = name, id, vm, note = ?other, "migration"),
        },
        other => tracing::info!(hypervisor = name, event = ?other, "agent"),
    }
}

/// A request on the control socket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HvRequest {
    /// The agent's address, its VMs and counters.
    Info,
    /// Migrate a VM.
    Migrate(MigrateRequest),
}

/// What `xia migrate` asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MigrateRequest {
    /// The VM.
    pub vm: String,
    /// The destination agent's DAG (`AD HID SID`, text).
    pub to: String,
    /// full, live or smart.
    pub mode: String,
    /// Live: pause when the estimated downtime is under this.
    pub downtime_target_ms: u64,
    /// A cap on the bytes per second sent.
    pub max_bandwidth: Option<f64>,
    /// XOR deltas for re-sent pages.
    pub deltas: bool,
    /// Throttle a guest that does not converge.
    pub auto_converge: bool,
    /// Send the pages of the VM's base image as their CIDs, for the
    /// destination to fetch from its content store.
    #[serde(default, deserialize_with = "added_later")]
    pub dedup: bool,
}

/// Reads a field added to a control message after its first release, so
/// that one from an older `xia` still parses (absent: the default).
/// Formats that name their fields skip a missing one, and
/// `#[serde(default)]` fills it in; postcard — the control socket's
/// framing — names none and reads fields in order, so an older message
/// simply ends where the field would start, which postcard reports as an
/// error reading it. Only for fields that come last, whose failure can
/// hide nothing after them.
fn added_later<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    if d.is_human_readable() {
        return T::deserialize(d);
    }
    Ok(T::deserialize(d).unwrap_or_default())
}

impl MigrateRequest {
    /// The session configuration it asks for.
    pub fn config(&self) -> Result<SourceConfig, String> {
        let mode: Mode = self.mode.parse()?;
        let mut c = SourceConfig {
            mode,
            downtime_target: Duration::from_millis(self.downtime_target_ms),
            max_bandwidth: self.max_bandwidth,
            auto_converge: self.auto_converge,
            dedup: self.dedup,
            ..SourceConfig::default()
        };
        if self.deltas {
            c.delta_cache = xia_migrate::source::DEFAULT_DELTA_CACHE;
        }
        Ok(c)
    }
}

/// The agent and its VMs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HvInfo {
    /// The hypervisor's name.
    pub name: String,
    /// Where other agents reach it.
    pub dag: String,
    /// Whether it has heard its router (XHCP).
    pub attached: bool,
    /// The name it registers its DAG under, if any.
    pub agent_name: Option<String>,
    /// Whether the name server holds its current DAG under that name
    /// (true if it registers none).
    pub named: bool,
    /// Its migration log file, if it keeps one.
    pub log: Option<String>,
    /// Its VMs.
    pub vms: Vec<VmInfo>,
    /// Location-management counters.
    pub counters: String,
    /// Where incoming migrations fetch pages sent by CID (`AD HID`), if
    /// anywhere.
    #[serde(default, deserialize_with = "added_later")]
    pub content_store: Option<String>,
}

/// One VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmInfo {
    /// Its name.
    pub name: String,
    /// Bytes of memory.
    pub memory: u64,
    /// Running (not paused for a migration).
    pub running: bool,
    /// Its service's DAG.
    pub service: String,
    /// Whether the name server holds that DAG under the service's name
    /// (true for a service without one).
    pub named: bool,
}

/// A live view of a migration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The source's state.
    pub state: String,
    /// The round.
    pub round: u32,
    /// Pages left in this round.
    pub pages_left: u64,
    /// Pages dirty now.
    pub dirty: u64,
    /// Pages dirtied per second.
    pub dirty_rate: f64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes the destination confirmed.
    pub bytes_acked: u64,
    /// Bytes per second (0: not measured yet).
    pub bandwidth: f64,
    /// The downtime a pause now would cost, ms.
    pub estimated_downtime_ms: Option<f64>,
    /// The guest's throttle (1: none).
    pub throttle: f64,
    /// Bytes per page.
    pub page_size: u64,
}

impl From<Status> for Progress {
    fn from(s: Status) -> Progress {
        Progress {
            state: format!("{:?}", s.state),
            round: s.round,
            pages_left: s.pages_left as u64,
            dirty: s.dirty as u64,
            dirty_rate: s.dirty_rate,
            bytes_sent: s.bytes_sent,
            bytes_acked: s.bytes_acked,
            bandwidth: s.bandwidth,
            estimated_downtime_ms: s.estimated_downtime.map(ms),
            throttle: s.throttle,
            page_size: 0,
        }
    }
}

/// A finished migration, as the source saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The strategy followed.
    pub strategy: String,
    /// Pre-copy rounds.
    pub rounds: u32,
    /// Offer to activation, ms.
    pub total_ms: f64,
    /// Pause to activation less half an RTT, ms.
    pub downtime_ms: f64,
    /// The estimate at the pause, ms.
    pub estimated_downtime_ms: f64,
    /// Bytes sent.
    pub bytes: u64,
    /// Pages in the final copy.
    pub final_pages: u64,
    /// The lowest throttle applied.
    pub throttle: f64,
    /// Paused without meeting the target.
    pub target_missed: bool,
    /// Bytes per second at the pause.
    pub bandwidth: f64,
    /// RTT, ms.
    pub rtt_ms: f64,
    /// Pages sent as their CID (dedup), for the destination to fetch.
    #[serde(default, deserialize_with = "added_later")]
    pub cid_pages: u64,
}

impl From<&Report> for Summary {
    fn from(r: &Report) -> Summary {
        Summary {
            strategy: format!("{:?}", r.strategy),
            rounds: r.rounds,
            total_ms: ms(r.total),
            downtime_ms: ms(r.downtime),
            estimated_downtime_ms: ms(r.estimated_downtime),
            bytes: r.bytes,
            final_pages: r.final_pages as u64,
            throttle: r.throttle,
            target_missed: r.target_missed,
            bandwidth: r.bandwidth,
            rtt_ms: ms(r.rtt),
            cid_pages: r.pages.cid,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// An answer on the control socket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HvResponse {
    /// The agent.
    Info(HvInfo),
    /// The migration started.
    Started {
        /// Its id.
        id: u64,
        /// The destination agent's DAG (the name given, resolved).
        to: String,
    },
    /// Where it is.
    Progress(Progress),
    /// Something happened (accepted, a round, throttled, paused …).
    Note(String),
    /// It finished: the VM runs at the destination.
    Done(Summary),
    /// It failed: the VM runs here.
    Failed {
        /// The phase.
        phase: String,
        /// Why.
        error: String,
    },
    /// The request could not be carried out.
    Error(String),
}

fn counters_line(c: &AgentCounters) -> String {
    let mut line = format!(
        "{} buffered, {} dropped, {} delivered after a failed move, {} forwarded, {} redirects, {} forged",
        c.buffered, c.buffer_drops, c.delivered_after_pause, c.forwarded, c.redirects, c.forged
    );
    // Only an agent that took in pages sent by CID has these (as the
    // simulator's report shows them).
    if c.pages_fetched + c.fetch_failures > 0 {
        line.push_str(&format!(
            ", {} pages fetched by CID, {} fetches failed (asked of the source)",
            c.pages_fetched, c.fetch_failures
        ));
    }
    line
}

/// Serves control connections on `listener` until the node stops.
pub async fn serve(listener: UnixListener, node: NodeHandle<HypervisorNode>) {
    let node = Arc::new(node);
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            return;
        };
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(conn, &node).await {
                tracing::debug!(error = %e, "control connection ended");
            }
        });
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Stopped(#[from] Stopped),
}

async fn connection(
    mut conn: UnixStream,
    node: &NodeHandle<HypervisorNode>,
) -> Result<(), ConnError> {
    let req: HvRequest = read_frame(&mut conn).await?;
    match req {
        HvRequest::Info => {
            let info = node
                .call(|n, _| HvInfo {
                    name: n.name.clone(),
                    dag: n.agent.dag().to_line(),
                    attached: n.agent.host().interfaces()[0].gateway.is_some(),
                    agent_name: n.agent.name().map(str::to_owned),
                    named: n.agent.name_registered(),
                    log: n.log.as_ref().map(|w| w.path().display().to_string()),
                    vms: n
                        .agent
                        .vm_names()
                        .filter_map(|v| n.agent.vm(v))
                        .map(|v| VmInfo {
                            name: v.name.clone(),
                            memory: (v.memory.pages() * v.memory.page_size()) as u64,
                            running: v.is_running(),
                            service: v.service_dag().to_line(),
                            named: v.name_registered(),
                        })
                        .collect(),
                    counters: counters_line(&n.agent.counters()),
                    content_store: n.agent.config().content_store.as_ref().map(Dag::to_line),
                })
                .await?;
            write_frame(&mut conn, &HvResponse::Info(info)).await?;
        }
        HvRequest::Migrate(m) => migrate(conn, node, m).await?,
    }
    Ok(())
}

async fn migrate(
    mut conn: UnixStream,
    node: &NodeHandle<HypervisorNode>,
    m: MigrateRequest,
) -> Result<(), ConnError> {
    let config = match m.config() {
        Ok(c) => c,
        Err(e) => return Ok(write_frame(&mut conn, &HvResponse::Error(e)).await?),
    };
    let to = match destination(node, &m.to).await? {
        Ok(d) => d,
        Err(msg) => return Ok(write_frame(&mut conn, &HvResponse::Error(msg)).await?),
    };
    let to_line = to.to_line();
    let vm = m.vm.clone();
    let (started, mut pos, mut changed, page_size) = node
        .call(move |n, now| {
            let pos = n.position();
            let page = n.agent.vm(&vm).map_or(0, |v| v.memory.page_size() as u64);
            let r = if *to.intent() == n.agent.config().key.xid() {
                Err(format!("{} is this hypervisor's own agent", to.to_line()))
            } else {
                n.agent
                    .migrate(now, &vm, &to, config)
                    .map_err(|e| e.to_string())
            };
            (r, pos, n.subscribe(), page)
        })
        .await?;
    let id = match started {
        Ok(id) => id,
        Err(e) => return Ok(write_frame(&mut conn, &HvResponse::Error(e)).await?),
    };
    write_frame(&mut conn, &HvResponse::Started { id, to: to_line }).await?;
    loop {
        let (events, next, status) = node
            .call(move |n, _| {
                let (events, next) = n.events_since(pos);
                (events, next, n.agent.status(id))
            })
            .await?;
        pos = next;
        for e in events {
            let AgentEvent::Outgoing { id: eid, note, .. } = e else {
                continue;
            };
            if eid != id {
                continue;
            }
            let answer = match note {
                SourceNote::Done(r) => {
                    write_frame(&mut conn, &HvResponse::Done(Summary::from(&r))).await?;
                    return Ok(());
                }
                SourceNote::Failed { phase, error } => {
                    let f = HvResponse::Failed {
                        phase: format!("{phase:?}"),
                        error: error.to_string(),
                    };
                    write_frame(&mut conn, &f).await?;
                    return Ok(());
                }
                other => HvResponse::Note(note_text(&other)),
            };
            write_frame(&mut conn, &answer).await?;
        }
        if let Some(s) = status {
            let mut p = Progress::from(s);
            p.page_size = page_size;
            write_frame(&mut conn, &HvResponse::Progress(p)).await?;
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return Ok(()) },
            () = tokio::time::sleep(PROGRESS_EVERY) => {}
        }
    }
}

/// The destination agent `to` names: a DAG as it is, else a name
/// resolved through the agent's stack. `Err`: what to tell the operator.
async fn destination(
    node: &NodeHandle<HypervisorNode>,
    to: &str,
) -> Result<Result<Dag, String>, ConnError> {
    let dag_error = match to.parse::<Dag>() {
        Ok(d) => return Ok(Ok(d)),
        Err(e) => e,
    };
    // Names are lowercase; hypervisors' are registered lowercased.
    let name = to.to_ascii_lowercase();
    if xia_stack::naming::check_name(&name).is_err() {
        return Ok(Err(format!(
            "--to {to:?} is not a DAG ({dag_error}) nor an agent's name"
        )));
    }
    let asked = {
        let name = name.clone();
        node.call(move |n, now| n.resolve(now, &name)).await?
    };
    let answer = match asked {
        Ok(rx) => rx
            .await
            .unwrap_or(Err(ResolveError::NoAnswer(name.clone()))),
        Err(why) => return Ok(Err(format!("cannot look up agent {name:?}: {why}"))),
    };
    Ok(match answer {
        Ok(dag) if dag.intent().principal() == Principal::SID => Ok(dag),
        Ok(dag) => Err(format!(
            "{name:?} names {}, not an agent (AD HID SID)",
            dag.to_line()
        )),
        Err(ResolveError::NotFound(_)) => Err(format!("no agent named {name:?}: name not known")),
        Err(ResolveError::NoAnswer(_)) => Err(format!(
            "cannot look up agent {name:?}: no answer from the name server"
        )),
        Err(ResolveError::Refused { why, .. }) => Err(format!(
            "cannot look up agent {name:?}: the name server refused: {why}"
        )),
    })
}

fn note_text(n: &SourceNote) -> String {
    match n {
        SourceNote::Accepted => "the destination reserved room".into(),
        SourceNote::Chose { strategy, .. } => format!("smart mode chose {strategy:?}"),
        SourceNote::Round { round, pages } => format!("round {round}: {pages} pages"),
        SourceNote::Throttled { factor } => {
            format!("guest throttled to {:.0} % (auto-converge)", factor * 100.0)
        }
        SourceNote::Paused => "guest paused for the final copy".into(),
        SourceNote::FinalSent => "final copy sent; waiting for the commit".into(),
        SourceNote::Committed => "the destination committed".into(),
        SourceNote::InDoubt => "contact lost after the final copy: in doubt, asking".into(),
        SourceNote::Forged(e) => format!("dropped a forged message: {e}"),
        other => format!("{other:?}"),
    }
}

/// Why a control request failed, client side.
#[derive(Debug, thiserror::Error)]
pub enum HvError {
    /// The socket.
    #[error("hypervisor socket {path}: {source}")]
    Connect {
        /// Its path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The conversation.
    #[error("hypervisor: {0}")]
    Frame(#[from] FrameError),
    /// The daemon refused.
    #[error("{0}")]
    Refused(String),
    /// It failed.
    #[error("migration failed in {phase}: {error}")]
    Failed {
        /// Where.
        phase: String,
        /// Why.
        error: String,
    },
    /// The daemon answered out of turn.
    #[error("hypervisor: unexpected answer {0}")]
    Unexpected(String),
}

async fn dial(socket: &Path) -> Result<UnixStream, HvError> {
    UnixStream::connect(socket)
        .await
        .map_err(|source| HvError::Connect {
            path: socket.display().to_string(),
            source,
        })
}

/// Asks the hypervisor at `socket` for its agent and VMs.
pub async fn info(socket: &Path) -> Result<HvInfo, HvError> {
    let mut c = dial(socket).await?;
    write_frame(&mut c, &HvRequest::Info).await?;
    match read_frame(&mut c).await? {
        HvResponse::Info(i) => Ok(i),
        HvResponse::Error(e) => Err(HvError::Refused(e)),
        other => Err(HvError::Unexpected(format!("{other:?}"))),
    }
}

/// Runs a migration through the hypervisor at `socket`, showing every
/// answer to `update`; returns the summary.
pub async fn migrate_via(
    socket: &Path,
    req: &MigrateRequest,
    mut update: impl FnMut(&HvResponse),
) -> Result<Summary, HvError> {
    let mut c = dial(socket).await?;
    write_frame(&mut c, &HvRequest::Migrate(req.clone())).await?;
    loop {
        let r: HvResponse = read_frame(&mut c).await?;
        update(&r);
        match r {
            HvResponse::Done(s) => return Ok(s),
            HvResponse::Failed { phase, error } => return Err(HvError::Failed { phase, error }),
            HvResponse::Error(e) => return Err(HvError::Refused(e)),
            HvResponse::Info(_) => return Err(HvError::Unexpected("info".into())),
            _ => {}
        }
    }
}

/// A VM's `[[vm]]` section (for generated daemon configurations): the
/// inverse of the topology parser's, so a hypervisor daemon starts the VM
/// the topology describes. `image`: the name of the image it boots from
/// (the configuration must define it with `[[image]]`).
pub fn vm_section(v: &VmSpec, hypervisor: &str, image: Option<&str>) -> String {
    use std::fmt::Write as _;
    use xia_migrate::guest::DirtyModel;
    use xia_migrate::vm::ServiceSpec;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "[[vm]]\nname = {:?}\nhypervisor = {hypervisor:?}\nmemory = \"{}B\"\npage_size = {}\ndirty_rate = {:?}",
        v.name,
        v.pages as u64 * v.page_size as u64,
        v.page_size,
        v.dirty_rate
    );
    match v.model {
        DirtyModel::Uniform => {
            let _ = writeln!(t, "dirty = \"uniform\"");
        }
        DirtyModel::HotSet { pages, .. } => {
            let _ = writeln!(
                t,
                "dirty = \"hot-set\"\nhot_set = \"{}B\"",
                pages as u64 * v.page_size as u64
            );
        }
        DirtyModel::Zipf { s } => {
            let _ = writeln!(t, "dirty = \"zipf\"\nzipf = {s:?}");
        }
    }
    match &v.service {
        ServiceSpec::None => {
            let _ = writeln!(t, "service = \"none\"");
        }
        ServiceSpec::StreamSource { bytes, rate } => {
            let _ = writeln!(t, "service = \"stream\"\nbytes = \"{bytes}B\"");
            if let Some(r) = rate {
                let _ = writeln!(t, "rate = \"{}bps\"", r * 8);
            }
        }
        ServiceSpec::DatagramSink => {
            let _ = writeln!(t, "service = \"datagrams\"");
        }
    }
    if let Some(n) = &v.service_name {
        let _ = writeln!(t, "service_name = {n:?}");
    }
    if let Some(n) = image {
        let _ = writeln!(t, "image = {n:?}");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The requests and answers of an `xia` from before dedup.
    #[derive(Serialize)]
    enum OldRequest {
        #[allow(dead_code)]
        Info,
        Migrate {
            vm: String,
            to: String,
            mode: String,
            downtime_target_ms: u64,
            max_bandwidth: Option<f64>,
            deltas: bool,
            auto_converge: bool,
        },
    }

    #[derive(Serialize)]
    enum OldResponse {
        #[allow(dead_code)]
        Info,
        #[allow(dead_code)]
        Started,
        #[allow(dead_code)]
        Progress,
        #[allow(dead_code)]
        Note,
        Done {
            strategy: String,
            rounds: u32,
            total_ms: f64,
            downtime_ms: f64,
            estimated_downtime_ms: f64,
            bytes: u64,
            final_pages: u64,
            throttle: f64,
            target_missed: bool,
            bandwidth: f64,
            rtt_ms: f64,
        },
    }

    async fn reframe<T: Serialize, U: for<'de> Deserialize<'de>>(t: &T) -> U {
        let mut buf = Vec::new();
        write_frame(&mut buf, t).await.unwrap();
        read_frame(&mut buf.as_slice()).await.unwrap()
    }

    #[tokio::test]
    async fn messages_from_before_dedup_still_parse() {
        let old = OldRequest::Migrate {
            vm: "vm1".into(),
            to: "hv2".into(),
            mode: "live".into(),
            downtime_target_ms: 300,
            max_bandwidth: None,
            deltas: true,
            auto_converge: true,
        };
        let HvRequest::Migrate(m) = reframe(&old).await else {
            panic!("not a migration");
        };
        assert_eq!((m.vm.as_str(), m.deltas, m.dedup), ("vm1", true, false));
        assert!(!m.config().unwrap().dedup);
        // And today's carry the flag.
        let new = HvRequest::Migrate(MigrateRequest { dedup: true, ..m });
        let back: HvRequest = reframe(&new).await;
        assert_eq!(back, new);
        let HvRequest::Migrate(m) = back else {
            unreachable!()
        };
        assert!(m.config().unwrap().dedup);

        let old = OldResponse::Done {
            strategy: "Live".into(),
            rounds: 2,
            total_ms: 1.0,
            downtime_ms: 1.0,
            estimated_downtime_ms: 1.0,
            bytes: 10,
            final_pages: 3,
            throttle: 1.0,
            target_missed: false,
            bandwidth: 1.0,
            rtt_ms: 1.0,
        };
        let HvResponse::Done(s) = reframe(&old).await else {
            panic!("not done");
        };
        assert_eq!((s.final_pages, s.cid_pages), (3, 0));
        // Human-readable formats still refuse a wrong value.
        let json = r#"{"vm":"v","to":"t","mode":"live","downtime_target_ms":1,"max_bandwidth":null,"deltas":false,"auto_converge":true,"dedup":"yes"}"#;
        assert!(serde_json::from_str::<MigrateRequest>(json).is_err());
        let json = json.replace(r#","dedup":"yes""#, "");
        assert!(!serde_json::from_str::<MigrateRequest>(&json).unwrap().dedup);
    }
}
