//! The hypervisor agent: a sans-IO node that runs VMs on one machine and
//! migrates them to and from other agents.
//!
//! One agent per hypervisor. It has its own XIA stack (the machine's HID,
//! and the agent's SID, the SHA-1 of its key, where other agents reach it)
//! and bridges its VMs' stacks onto the machine's link: a packet for a
//! VM's HID goes to that VM's stack, a broadcast to every stack. It speaks
//! the migration control protocol ([`crate::source`],
//! [`crate::destination`]) over XStream connections between agents, one
//! per migration.
//!
//! **Location management** (seed paper 000). While a migrating VM is
//! paused, packets for it are buffered (bounded); when the destination
//! commits they are re-addressed to the VM's new DAG (the destination
//! agent's AD) and sent on, and for a grace period afterwards the agent
//! keeps a *forwarding pointer*: packets that still arrive for the old DAG
//! are re-addressed the same way and their sender gets an XCMP redirect
//! naming the new DAG. If the migration fails the buffered packets go to
//! the resumed VM. Either way none is dropped for the move.
//!
//! **Pacing.** What goes to the new location is paced, not sent as it
//! comes: a stop-and-copy pause holds a whole pause's worth of packets
//! (a second of a flow, thousands of packets), and released as one burst
//! at the commit they overflow the first small queue on the way. Each
//! pointer has a token bucket ([`FORWARD_BURST`] bytes deep) filled at
//! the bandwidth the migration's own connection measured toward the
//! destination when it committed ([`Status::bandwidth`]): that connection
//! stops using the path at the commit, so the held packets take its place
//! at a rate the path was just seen to carry. (A configured
//! [`AgentConfig::forward_rate`] wins; [`FALLBACK_FORWARD_RATE`] serves
//! when nothing was measured, and for pointers a restart rebuilds.) One
//! queue per pointer keeps the order: the held packets first, then those
//! that follow the pointer, which wait behind them rather than overtake
//! them. The queue is bounded like the buffer (`buffer_packets`; more are
//! dropped and counted in `buffer_drops`), the pacer's next release is in
//! [`Agent::poll_timeout`], and its clock is the `now` the driver passes.
//! A lapsed pointer takes no new packets but sends what it queued.
//!
//! **Handoff** (seed paper 001). The destination network needs no change
//! beyond a route to the VM's HID, which the VM's stack registers itself:
//! at activation the agent restores the stack and replays the network's
//! latest XHCP beacon to it, so the VM learns its new AD at once (without
//! waiting for the next beacon), registers its HID with the AD's router,
//! re-registers its service name (signed), and sends every peer a signed
//! MIGRATE with its new DAG.
//!
//! **The log** (write-ahead, sans-IO). The agent keeps its sessions in
//! memory; what a restarted process needs to finish what it had under way
//! it hands its driver as [`LogEntry`]s ([`Agent::poll_log`]), which the
//! driver appends to storage before it sends anything the agent has
//! queued. An outgoing migration is logged when it begins — before its
//! offer leaves, so before its guest can pause — with what
//! [`SourceSession::recover`] needs (id, VM, session hash) and the
//! destination's DAG; its acceptance, its commit (with the forwarding
//! pointer) and its end follow. An incoming migration's commit is logged
//! before the `Commit` leaves, so that a restarted destination never
//! answers "unknown" about a guest it took. [`AgentLog`] is that storage,
//! compacted and bounded; [`Agent::restart`] rebuilds an agent from it and
//! the VMs that outlived the old process ([`Agent::into_vms`]), as QEMU
//! outlives a crashed libvirtd: a migration whose VM is paused (its final
//! copy had begun) is recovered in doubt and asks the destination; one
//! whose VM still runs had not reached the final copy, and is dropped.
//! What a restart keeps and loses is listed at [`Agent::restart`].

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use xia_stack::dag::Dag;
use xia_stack::forward::xcmp::{error_reply, is_unanswerable, ErrorKind};
use xia_stack::forward::Transmit;
use xia_stack::host::{Host, HostConfig, HostEvent, ListenerHandle, StreamHandle};
use xia_stack::identity::Identity;
use xia_stack::socket::NameKeeper;
use xia_stack::stream::StreamEvent;
use xia_stack::time::Instant;
use xia_stack::wire::dag::EdgeMarks;
use xia_stack::wire::xip::{LastNode, Packet as XipPacket, XipRepr};
use xia_stack::xhcp::XHCP_SID;
use xia_stack::xid::{Principal, Xid};

use crate::auth::{self, SourceAuth};
use crate::destination::{DestinationConfig, DestinationNote, DestinationSession};
use crate::guest::{Guest, SyntheticGuest};
use crate::msg::{FrameReader, Msg, Outcome};
use crate::source::{MigrateError, Recovery, SourceConfig, SourceNote, SourceSession, Status};
use crate::state::Source;
use crate::vm::Vm;

/// How an agent is set up.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The machine's identity (its HID).
    pub host: Identity,
    /// The agent's key: its SID is the key's hash.
    pub key: Identity,
    /// The AD the machine is in.
    pub ad: Xid,
    /// Its router.
    pub gateway: Option<Xid>,
    /// The name server, for the VMs' stacks.
    pub name_server: Option<Dag>,
    /// The incoming side's limits.
    pub destination: DestinationConfig,
    /// How long a forwarding pointer lives.
    pub grace: Duration,
    /// Packets buffered per paused VM, and queued per forwarding pointer
    /// for the pacer (more are dropped and counted).
    pub buffer_packets: usize,
    /// The rate, bytes per second, at which packets for a VM that left
    /// (the ones held while it was paused, then the ones that follow the
    /// forwarding pointer) are released toward its new location. `None`:
    /// the bandwidth the migration's connection measured when the
    /// destination committed ([`FALLBACK_FORWARD_RATE`] when it measured
    /// none, and for pointers a restart rebuilds).
    pub forward_rate: Option<u64>,
    /// Where incoming migrations fetch pages sent by CID (dedup): a
    /// content store's host, as `AD HID` (a node holding the chunk on the
    /// way may answer first). `None`: such pages are asked of the source.
    pub content_store: Option<Dag>,
    /// The name the agent keeps registered for its DAG (signed with its
    /// key), so `xia migrate --to NAME` can find it; `None`: none.
    pub name: Option<String>,
    /// The sequence number of the name's first registration (a daemon
    /// passes the wall clock, so that after a restart it never repeats
    /// one the name server has seen).
    pub name_seq: u64,
    /// The largest send and receive buffers of the agents' connections,
    /// bytes: the migration stream's window, which bounds its rate to
    /// this much per round trip ([`DEFAULT_WINDOW`]).
    pub window: usize,
    /// Seed for migration ids and the stacks' SIDs.
    pub seed: u64,
}

/// The agents' connections' window: 32 MiB, for 1 Gbit/s at 250 ms or
/// 10 Gbit/s at 25 ms. The stack's default (4 MiB) carries a migration
/// at only 671 Mbit/s over 50 ms; buffers grow to this only as
/// autotuning finds the path needs them.
pub const DEFAULT_WINDOW: usize = 32 << 20;

impl AgentConfig {
    /// An agent with defaults: 60 s of forwarding pointer, 4096 packets of
    /// buffer per VM, forwarding paced at the migration's measured
    /// bandwidth, a 32 MiB window, 4 GiB of room.
    pub fn new(host: Identity, key: Identity, ad: Xid, gateway: Option<Xid>) -> AgentConfig {
        AgentConfig {
            host,
            key,
            ad,
            gateway,
            name_server: None,
            destination: DestinationConfig::default(),
            grace: Duration::from_secs(60),
            buffer_packets: 4096,
            forward_rate: None,
            content_store: None,
            name: None,
            name_seq: 1,
            window: DEFAULT_WINDOW,
            seed: 0,
        }
    }
}

/// What an agent reports.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentEvent {
    /// News of an outgoing migration.
    Outgoing {
        /// The migration.
        id: u64,
        /// The VM.
        vm: String,
        /// What happened.
        note: SourceNote,
    },
    /// An incoming migration reserved room.
    Incoming {
        /// The migration.
        id: u64,
        /// The VM.
        vm: String,
    },
    /// An incoming migration failed before its commit.
    IncomingFailed {
        /// The VM, if the offer named it.
        vm: String,
        /// Why.
        error: String,
    },
    /// A VM migrated here runs.
    Activated {
        /// The VM.
        vm: String,
    },
    /// A committed VM could not be started (its device state is bad).
    ActivationFailed {
        /// The VM.
        vm: String,
        /// Why.
        error: String,
    },
    /// The name server answered lookup `id` ([`Agent::resolve_name`]).
    NameAnswer {
        /// The request id.
        id: u32,
        /// The answer, or why there is none.
        answer: Result<xia_stack::naming::NameResponse, String>,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No VM of that name here.
    #[error("no VM named {0:?} here")]
    NoSuchVm(String),
    /// It is already migrating.
    #[error("VM {0:?} is already migrating")]
    Busy(String),
    /// The VM is not running.
    #[error("VM {0:?} is not running")]
    NotRunning(String),
    /// The stack could not open the connection.
    #[error("cannot reach the destination agent: {0}")]
    Connect(String),
}

/// An agent's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentCounters {
    /// Packets for paused VMs held back.
    pub buffered: u64,
    /// Packets a full buffer dropped.
    pub buffer_drops: u64,
    /// Buffered packets delivered to a resumed VM.
    pub delivered_after_pause: u64,
    /// Packets re-addressed to a VM's new location.
    pub forwarded: u64,
    /// The longest a packet for a VM waited here before it went on: held
    /// while the VM was paused, then queued for the pacer (see
    /// [`AgentConfig::forward_rate`]), or delivered after a failed move.
    pub max_hold: Duration,
    /// The longest a packet waited for the forwarding pacer: from the
    /// commit for one held while the VM was paused, from its arrival for
    /// one that followed the pointer.
    pub max_pacer_wait: Duration,
    /// XCMP redirects sent.
    pub redirects: u64,
    /// Control messages whose signature did not hold, dropped.
    pub forged: u64,
    /// Pages of incoming migrations fetched by CID from the network.
    pub pages_fetched: u64,
    /// Fetches by CID that failed (those pages were asked of the source).
    pub fetch_failures: u64,
}

/// A record the agent hands its driver to make durable
/// ([`Agent::poll_log`]); [`AgentLog::apply`] folds it into what a
/// restart reads.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LogEntry {
    /// An outgoing migration began. Logged before its offer is written,
    /// so before its guest can pause.
    Began {
        /// What [`SourceSession::recover`] needs: id, VM name, session
        /// hash.
        recovery: Recovery,
        /// The destination agent (`AD HID SID`): where a recovered session
        /// asks.
        to: Dag,
        /// The session's timeout, for the recovered session.
        timeout: Duration,
    },
    /// The destination accepted it: pre-copy began. (Only what a restart
    /// reports: "failed in PreCopy" rather than "in Negotiating".)
    Accepted {
        /// The migration.
        id: u64,
    },
    /// The destination committed (its signed commit checked): the VM is
    /// its own, and packets for the VM's HID go to `new_ad` until `until`
    /// (the forwarding pointer, in the driver's clock).
    Committed {
        /// The migration.
        id: u64,
        /// The VM's HID.
        hid: Xid,
        /// The AD it moved to.
        new_ad: Xid,
        /// When the pointer lapses.
        until: Instant,
    },
    /// It ended: nothing to recover. A failed one (`done` false) also
    /// takes its pointer back: the VM runs here again.
    Ended {
        /// The migration.
        id: u64,
        /// Whether the VM runs at the destination.
        done: bool,
    },
    /// An incoming migration committed (`active`: and its VM was
    /// started). Logged before the `Commit` leaves: a restarted agent
    /// answers in-doubt queries about it from this, never "unknown" (which
    /// would let the source resume a second copy).
    Incoming {
        /// The migration.
        id: u64,
        /// The VM was started.
        active: bool,
    },
    /// The agent was restarted from the log for the `count`th time: it
    /// draws its migration ids, nonces and secrets from a fresh stream.
    Restarted {
        /// How many restarts so far.
        count: u32,
    },
}

/// An outgoing migration the log says is under way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedMigration {
    /// For [`SourceSession::recover`].
    pub recovery: Recovery,
    /// The destination agent.
    pub to: Dag,
    /// The session's timeout.
    pub timeout: Duration,
    /// The destination accepted (pre-copy began).
    pub accepted: bool,
    /// The destination committed.
    pub committed: bool,
}

/// An agent's log as its driver keeps it: every [`LogEntry`] applied,
/// compacted to what a restart needs, and bounded — the migrations under
/// way (at most one per VM, a few thousand in all), the forwarding
/// pointers (4096, the soonest to lapse dropped first), and the last 1024
/// incoming commits (as many as the agent remembers outcomes). A daemon
/// appends each entry to a file and replays the file into an `AgentLog` on
/// start; it can rewrite the file from [`AgentLog::entries`] when it grows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentLog {
    // By VM name: a VM migrates once at a time.
    outgoing: BTreeMap<String, LoggedMigration>,
    // By HID: (new AD, until, the migration).
    pointers: BTreeMap<Xid, (Xid, Instant, u64)>,
    // Oldest first.
    incoming: VecDeque<(u64, bool)>,
    restarts: u32,
}

/// Migrations under way an [`AgentLog`] holds at most (more is not what
/// an agent writes: it has one per VM).
const LOGGED_MAX: usize = 4096;
/// Forwarding pointers an [`AgentLog`] holds at most.
const LOGGED_POINTERS: usize = 4096;
/// Entries [`Agent::poll_log`] holds for a driver that does not take them
/// (one that keeps no log); past this the oldest go.
const LOG_PENDING: usize = 4096;

impl AgentLog {
    /// An empty log.
    pub fn new() -> AgentLog {
        AgentLog::default()
    }

    /// Folds `entry` in.
    pub fn apply(&mut self, entry: &LogEntry) {
        match entry {
            LogEntry::Began {
                recovery,
                to,
                timeout,
            } => {
                self.outgoing.insert(
                    recovery.name.clone(),
                    LoggedMigration {
                        recovery: recovery.clone(),
                        to: to.clone(),
                        timeout: *timeout,
                        accepted: false,
                        committed: false,
                    },
                );
                while self.outgoing.len() > LOGGED_MAX {
                    self.outgoing.pop_first();
                }
            }
            LogEntry::Accepted { id } => {
                if let Some(m) = self.by_id(*id) {
                    m.accepted = true;
                }
            }
            LogEntry::Committed {
                id,
                hid,
                new_ad,
                until,
            } => {
                if let Some(m) = self.by_id(*id) {
                    m.accepted = true;
                    m.committed = true;
                }
                self.pointers.insert(*hid, (*new_ad, *until, *id));
                while self.pointers.len() > LOGGED_POINTERS {
                    let soonest = self
                        .pointers
                        .iter()
                        .min_by_key(|(_, (_, until, _))| *until)
                        .map(|(h, _)| *h);
                    if let Some(h) = soonest {
                        self.pointers.remove(&h);
                    }
                }
            }
            LogEntry::Ended { id, done } => {
                self.outgoing.retain(|_, m| m.recovery.id != *id);
                if !done {
                    self.pointers.retain(|_, p| p.2 != *id);
                }
            }
            LogEntry::Incoming { id, active } => {
                match self.incoming.iter_mut().find(|(i, _)| i == id) {
                    Some(e) => e.1 |= *active,
                    None => self.incoming.push_back((*id, *active)),
                }
                while self.incoming.len() > OUTCOMES_KEPT {
                    self.incoming.pop_front();
                }
            }
            LogEntry::Restarted { count } => self.restarts = self.restarts.max(*count),
        }
    }

    fn by_id(&mut self, id: u64) -> Option<&mut LoggedMigration> {
        self.outgoing.values_mut().find(|m| m.recovery.id == id)
    }

    /// Forgets the forwarding pointers that lapsed by `now`.
    pub fn forget_expired(&mut self, now: Instant) {
        self.pointers.retain(|_, p| p.1 > now);
    }

    /// The outgoing migrations under way.
    pub fn in_flight(&self) -> impl Iterator<Item = &LoggedMigration> {
        self.outgoing.values()
    }

    /// How often the agent was restarted from this log.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Entries that rebuild this log (applied in order to an empty one):
    /// what a driver rewrites its storage with to keep it short.
    pub fn entries(&self) -> Vec<LogEntry> {
        let mut out = Vec::new();
        if self.restarts > 0 {
            out.push(LogEntry::Restarted {
                count: self.restarts,
            });
        }
        for m in self.outgoing.values() {
            out.push(LogEntry::Began {
                recovery: m.recovery.clone(),
                to: m.to.clone(),
                timeout: m.timeout,
            });
            if m.accepted {
                out.push(LogEntry::Accepted { id: m.recovery.id });
            }
        }
        // Pointers after the migrations: a pointer's entry also marks its
        // migration committed.
        for (hid, (new_ad, until, id)) in &self.pointers {
            out.push(LogEntry::Committed {
                id: *id,
                hid: *hid,
                new_ad: *new_ad,
                until: *until,
            });
        }
        for (id, active) in &self.incoming {
            out.push(LogEntry::Incoming {
                id: *id,
                active: *active,
            });
        }
        out
    }
}

// Queues a log entry for the driver (bounded: see LOG_PENDING).
fn push_log(log: &mut VecDeque<LogEntry>, e: LogEntry) {
    if log.len() >= LOG_PENDING {
        log.pop_front();
    }
    log.push_back(e);
}

struct Slot {
    vm: Vm,
    migrating: Option<u64>,
    // Handed over (the destination committed): not driven, packets go on.
    gone: bool,
    // Held while paused, with when each arrived.
    buffer: VecDeque<(Vec<u8>, Instant)>,
}

struct Outgoing {
    id: u64,
    vm: String,
    session: SourceSession,
    stream: Option<StreamHandle>,
    to: Dag,
    pending: Vec<u8>,
    finished: bool,
}

struct Incoming {
    stream: StreamHandle,
    // Until the first message says what the connection is for.
    reader: Option<FrameReader>,
    session: Option<DestinationSession<SyntheticGuest>>,
    pending: Vec<u8>,
    vm: String,
    done: bool,
}

struct Pointer {
    new_ad: Xid,
    until: Instant,
    // Packets for the VM waiting for the pacer, oldest first, as they
    // arrived (re-addressed when they leave), with when they arrived here
    // and when they joined the queue.
    queue: VecDeque<(Vec<u8>, Instant, Instant)>,
    // The pacer: bytes per second, and when the next packet may leave
    // (a token bucket of FORWARD_BURST bytes, kept as the time its
    // deficit runs out).
    rate: u64,
    next: Instant,
}

impl Pointer {
    fn new(new_ad: Xid, until: Instant, rate: u64) -> Pointer {
        Pointer {
            new_ad,
            until,
            queue: VecDeque::new(),
            rate: rate.max(1),
            next: Instant::ZERO,
        }
    }

    // Whether packets that arrive now follow it (a lapsed pointer still
    // sends what it queued, then goes).
    fn live(&self, now: Instant) -> bool {
        self.until > now
    }

    // When the pacer lets the next queued packet go, if one waits.
    fn due(&self) -> Option<Instant> {
        (!self.queue.is_empty()).then_some(self.next)
    }

    // A packet of `len` bytes leaves at `now`: the bucket holds at most
    // FORWARD_BURST bytes of credit, and each packet costs its length.
    fn spend(&mut self, now: Instant, len: usize) {
        let burst = nanos_for(FORWARD_BURST as u64, self.rate);
        let start = self
            .next
            .max(Instant::from_nanos(now.as_nanos().saturating_sub(burst)));
        self.next = start + Duration::from_nanos(nanos_for(len as u64, self.rate));
    }
}

// Nanoseconds `bytes` take at `rate` bytes per second.
fn nanos_for(bytes: u64, rate: u64) -> u64 {
    let n = u128::from(bytes) * 1_000_000_000 / u128::from(rate.max(1));
    n.min(u128::from(u64::MAX)) as u64
}

/// A hypervisor agent.
pub struct Agent {
    config: AgentConfig,
    host: Host,
    listener: ListenerHandle,
    vms: BTreeMap<String, Slot>,
    outgoing: Vec<Outgoing>,
    incoming: Vec<Incoming>,
    outcomes: BTreeMap<u64, Outcome>,
    pointers: BTreeMap<Xid, Pointer>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<AgentEvent>,
    last_beacon: Option<Vec<u8>>,
    redirected: BTreeMap<Vec<u8>, Instant>,
    counters: AgentCounters,
    next_id: u64,
    // Nonces and secrets for the control protocol: seeded for the
    // simulator's determinism, from the OS in the daemons (`seed`).
    rng: ChaCha20Rng,
    // Read buffer for the agents' connections, kept across steps (they
    // run after every packet).
    scratch: Vec<u8>,
    // Entries for the driver's log, oldest first.
    log: VecDeque<LogEntry>,
    // Dedup: pages to fetch by CID (migration, page, CID), and the fetches
    // under way by the host's fetch id.
    to_fetch: VecDeque<(u64, u32, [u8; 20])>,
    fetching: BTreeMap<u32, (u64, u32, [u8; 20])>,
    // The agent's own name in the name service.
    naming: Option<NameKeeper>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("dag", &self.dag().to_line())
            .field("vms", &self.vms.keys().collect::<Vec<_>>())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// Page fetches by CID under way at once (the host allows
/// 256; some are left for its other users).
const FETCH_WINDOW: usize = 128;
/// Outcomes remembered for in-doubt queries.
const OUTCOMES_KEPT: usize = 1024;
/// A sender gets at most one redirect per this.
const REDIRECT_INTERVAL: Duration = Duration::from_millis(500);
/// The forwarding pacer's bucket, bytes: what may leave back to back
/// before the rate applies (five full-size packets; enough to ride out a
/// daemon's millisecond timers at tens of Mbit/s).
pub const FORWARD_BURST: usize = 8 * 1024;
/// The forwarding rate, bytes per second, when the migration measured no
/// bandwidth and none is configured: 10 Mbit/s.
pub const FALLBACK_FORWARD_RATE: u64 = 1_250_000;
const ROOM: usize = 64 * 1024;

impl Agent {
    /// An agent listening on its SID.
    pub fn new(config: AgentConfig) -> Agent {
        let seed = config.seed;
        Agent::start(config, seed)
    }

    // An agent whose stack, ids, nonces and secrets come from `seed` (the
    // configured seed, or for a restart one mixed with the restart count:
    // a restarted process must not draw the secrets it drew before).
    fn start(config: AgentConfig, seed: u64) -> Agent {
        let naming = config
            .name
            .as_deref()
            .map(|n| NameKeeper::new(n, config.name_seq));
        let mut cfg = HostConfig::new(config.host.clone(), config.ad, config.gateway);
        cfg.seed = seed;
        cfg.stream.send_buffer_max = config.window.max(cfg.stream.send_buffer);
        cfg.stream.recv_buffer_max = config.window.max(cfg.stream.recv_buffer);
        // The smallest scale that announces the whole window (14 at most).
        cfg.stream.window_scale = (0..14u8)
            .find(|&s| (u16::MAX as usize) << s >= config.window)
            .unwrap_or(14)
            .max(cfg.stream.window_scale);
        // Room to hold a window's worth of segments out of order (the
        // stack's default is sized for its 4 MiB at 1 KiB per segment).
        cfg.stream.max_out_of_order = cfg.stream.max_out_of_order.max(config.window >> 10);
        let mut host = Host::new(cfg);
        if let Some(ns) = &config.name_server {
            host.set_name_server(ns.clone());
        }
        let listener = host
            .listen(Some(config.key.xid()))
            .expect("a fresh host has room for a listener");
        Agent {
            next_id: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            rng: ChaCha20Rng::seed_from_u64(seed ^ 0x6167_656e_7420_6b65),
            config,
            host,
            listener,
            vms: BTreeMap::new(),
            outgoing: Vec::new(),
            incoming: Vec::new(),
            outcomes: BTreeMap::new(),
            pointers: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            last_beacon: None,
            redirected: BTreeMap::new(),
            counters: AgentCounters::default(),
            scratch: Vec::new(),
            log: VecDeque::new(),
            to_fetch: VecDeque::new(),
            fetching: BTreeMap::new(),
            naming,
        }
    }

    /// An agent restarted after its process died, from its log and the
    /// VMs that outlived the process (see [`Agent::into_vms`]); `config`
    /// is the old one.
    ///
    /// For each migration the log says was under way: if its VM is paused,
    /// the final copy had begun and the destination may hold the guest, so
    /// the session is recovered in doubt ([`SourceSession::recover`], with
    /// a fresh secret) and asks the destination on a new connection — it
    /// resumes the VM or lets it go on the signed answer. If its VM runs,
    /// the final copy had not begun: the migration is reported failed
    /// ("the source agent restarted", in the phase the log last saw) and
    /// the VM's throttle is lifted. A VM the log says was committed away
    /// is treated as handed over (its packets follow the pointer) until
    /// the destination's answer is in.
    ///
    /// **Kept**: the VMs; the migrations under way, as above; the
    /// forwarding pointers that have not lapsed (packets for a VM that
    /// left still follow it, and their senders are still redirected); the
    /// incoming migrations it committed, for in-doubt queries.
    /// **Lost**: every connection (the destinations of lost outgoing
    /// sessions time out and abort; sources of lost incoming ones ask
    /// again), incoming migrations not yet committed (their sources time
    /// out and resume), the packets held for paused VMs (senders
    /// retransmit; datagrams are lost), the redirect rate limit, the last
    /// XHCP beacon (the next one restores it) and the counters.
    pub fn restart(config: AgentConfig, vms: Vec<Vm>, log: &AgentLog, now: Instant) -> Agent {
        let count = log.restarts().saturating_add(1);
        let seed = config.seed ^ u64::from(count).wrapping_mul(0xd6e8_feb8_6659_fd93);
        let mut agent = Agent::start(config, seed);
        push_log(&mut agent.log, LogEntry::Restarted { count });
        for vm in vms {
            agent.add_vm(vm);
        }
        let rate = agent.config.forward_rate.unwrap_or(FALLBACK_FORWARD_RATE);
        for (hid, (new_ad, until, _)) in &log.pointers {
            if *until > now {
                agent
                    .pointers
                    .insert(*hid, Pointer::new(*new_ad, *until, rate));
            }
        }
        for (id, active) in &log.incoming {
            let o = if *active {
                Outcome::Active
            } else {
                Outcome::Committed
            };
            agent.outcomes.insert(*id, o);
        }
        for m in log.in_flight() {
            let id = m.recovery.id;
            let name = m.recovery.name.clone();
            let Some(slot) = agent.vms.get_mut(&name) else {
                // The VM is gone (released before the crash): nothing to do.
                push_log(&mut agent.log, LogEntry::Ended { id, done: true });
                continue;
            };
            if slot.vm.is_running() {
                slot.vm.set_throttle(1.0);
                let phase = if m.accepted {
                    Source::PreCopy
                } else {
                    Source::Negotiating
                };
                agent.events.push_back(AgentEvent::Outgoing {
                    id,
                    vm: name,
                    note: SourceNote::Failed {
                        phase,
                        error: MigrateError::Cancelled("the source agent restarted".into()),
                    },
                });
                push_log(&mut agent.log, LogEntry::Ended { id, done: false });
                continue;
            }
            let mut secret = [0; 32];
            agent.rng.fill_bytes(&mut secret);
            let auth = SourceAuth {
                key: agent.config.key.clone(),
                destination: *m.to.intent(),
                secret,
            };
            let config = SourceConfig {
                timeout: m.timeout,
                ..SourceConfig::default()
            };
            let session = SourceSession::recover(&m.recovery, config, auth, now);
            slot.migrating = Some(id);
            // Committed away: its packets follow the pointer meanwhile.
            slot.gone = m.committed && agent.pointers.contains_key(&slot.vm.hid());
            agent.outgoing.push(Outgoing {
                id,
                vm: name,
                session,
                stream: None,
                to: m.to.clone(),
                pending: Vec::new(),
                finished: false,
            });
        }
        agent.step(now);
        agent
    }

    /// Ends the agent as its process dying would, and returns what
    /// outlives it: its VMs, running or paused as they were (each a
    /// process of its own, as QEMU outlives libvirtd). Everything else is
    /// lost but what its log holds; see [`Agent::restart`].
    pub fn into_vms(self) -> Vec<Vm> {
        self.vms.into_values().map(|s| s.vm).collect()
    }

    /// Its configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The next entry for the log. The driver takes every entry after each
    /// call into the agent and makes it durable (e.g. appends it to a file
    /// and syncs, or applies it to an [`AgentLog`] that outlives the
    /// agent) **before** it sends what [`Agent::poll_transmit`] returns:
    /// that is what makes the log write-ahead — the begin of a migration is
    /// durable before its offer leaves, an incoming commit before the
    /// `Commit` does. A driver that keeps no log may ignore this (at most
    /// 4096 entries wait; older ones are dropped).
    pub fn poll_log(&mut self) -> Option<LogEntry> {
        self.log.pop_front()
    }

    /// Where other agents reach this one: `AD HID SID`.
    pub fn dag(&self) -> Dag {
        self.host
            .dag()
            .append_xid(self.config.key.xid())
            .expect("room for the SID")
    }

    /// The machine's own stack.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Its counters.
    pub fn counters(&self) -> AgentCounters {
        self.counters
    }

    /// Starts running `vm` here.
    pub fn add_vm(&mut self, vm: Vm) {
        self.vms.insert(
            vm.name.clone(),
            Slot {
                vm,
                migrating: None,
                gone: false,
                buffer: VecDeque::new(),
            },
        );
    }

    /// The VM named `name`, if it is here (and not handed over).
    pub fn vm(&self, name: &str) -> Option<&Vm> {
        self.vms.get(name).filter(|s| !s.gone).map(|s| &s.vm)
    }

    /// The names of the VMs here.
    pub fn vm_names(&self) -> impl Iterator<Item = &str> {
        self.vms
            .iter()
            .filter(|(_, s)| !s.gone)
            .map(|(n, _)| n.as_str())
    }

    /// The next thing to report.
    pub fn poll_event(&mut self) -> Option<AgentEvent> {
        self.events.pop_front()
    }

    /// Migrates VM `name` to the agent at `to` (its `AD HID SID`).
    pub fn migrate(
        &mut self,
        now: Instant,
        name: &str,
        to: &Dag,
        config: SourceConfig,
    ) -> Result<u64, AgentError> {
        let slot = self
            .vms
            .get_mut(name)
            .filter(|s| !s.gone)
            .ok_or_else(|| AgentError::NoSuchVm(name.to_owned()))?;
        if slot.migrating.is_some() {
            return Err(AgentError::Busy(name.to_owned()));
        }
        if !slot.vm.is_running() {
            return Err(AgentError::NotRunning(name.to_owned()));
        }
        slot.vm.run_to(now);
        let stream = self
            .host
            .connect(to, now)
            .map_err(|e| AgentError::Connect(e.to_string()))?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(0x9e37_79b9_7f4a_7c15);
        slot.migrating = Some(id);
        let mut secret = [0; 32];
        self.rng.fill_bytes(&mut secret);
        let auth = SourceAuth {
            key: self.config.key.clone(),
            destination: *to.intent(),
            secret,
        };
        let timeout = config.timeout;
        let session = SourceSession::new(id, name, &slot.vm, config, auth, now);
        // Before anything of it is sent: a restart must find it.
        push_log(
            &mut self.log,
            LogEntry::Began {
                recovery: session.recovery(),
                to: to.clone(),
                timeout,
            },
        );
        self.outgoing.push(Outgoing {
            id,
            vm: name.to_owned(),
            session,
            stream: Some(stream),
            to: to.clone(),
            pending: Vec::new(),
            finished: false,
        });
        self.step(now);
        Ok(id)
    }

    /// A live view of outgoing migration `id`.
    pub fn status(&self, id: u64) -> Option<Status> {
        let o = self.outgoing.iter().find(|o| o.id == id)?;
        let slot = self.vms.get(&o.vm)?;
        Some(o.session.status(&slot.vm))
    }

    /// Cancels outgoing migration `id` if it has not reached the end of
    /// the final copy: the VM runs here again.
    pub fn cancel(&mut self, now: Instant, id: u64) -> bool {
        let Some(o) = self.outgoing.iter_mut().find(|o| o.id == id) else {
            return false;
        };
        let Some(slot) = self.vms.get_mut(&o.vm) else {
            return false;
        };
        let done = o
            .session
            .cancel(now, "cancelled by the operator", &mut slot.vm);
        self.step(now);
        done
    }

    /// A packet from the link.
    pub fn handle_packet(&mut self, now: Instant, packet: Vec<u8>) {
        self.run_vms(now);
        self.pointers
            .retain(|_, p| p.live(now) || !p.queue.is_empty());
        // Demultiplex on the destination's XIDs read from the wire: every
        // packet for a VM passes here, so no DAG is built for it.
        let view = XipPacket::new_unchecked(&packet[..]);
        let (mut broadcast, mut xhcp) = (false, false);
        let (mut vm, mut pointer) = (None, None);
        if view.check_header_len().is_ok() {
            for n in (0..usize::from(view.dst_count())).filter_map(|i| view.dst_node(i)) {
                let x = n.xid;
                broadcast |= x == Xid::BROADCAST_HID;
                xhcp |= x == XHCP_SID;
                if x.principal() == Principal::HID {
                    if self.vms.values().any(|s| s.vm.hid() == x) {
                        vm = vm.or(Some(x));
                    } else if self.pointers.get(&x).is_some_and(|p| p.live(now)) {
                        pointer = pointer.or(Some(x));
                    }
                }
            }
        }
        if broadcast {
            if xhcp {
                self.last_beacon = Some(packet.clone());
            }
            for slot in self.vms.values_mut() {
                if !slot.gone && slot.vm.is_running() {
                    slot.vm.stack.handle_packet(now, 0, packet.clone());
                }
            }
            self.host.handle_packet(now, 0, packet);
        } else if let Some(hid) = vm {
            let slot = self
                .vms
                .values_mut()
                .find(|s| s.vm.hid() == hid)
                .expect("found above");
            if slot.gone {
                self.forward(now, hid, packet, now);
            } else if slot.vm.is_running() {
                slot.vm.stack.handle_packet(now, 0, packet);
            } else if slot.buffer.len() < self.config.buffer_packets {
                slot.buffer.push_back((packet, now));
                self.counters.buffered += 1;
            } else {
                self.counters.buffer_drops += 1;
            }
        } else if let Some(hid) = pointer {
            self.forward(now, hid, packet, now);
        } else {
            // The machine's own, or malformed (its stack counts the drop).
            self.host.handle_packet(now, 0, packet);
        }
        self.step(now);
    }

    // A packet for a VM that left (`arrived` here then): queued behind
    // what its pointer holds (the pacer re-addresses it to the new AD and
    // sends it: see `release`), and its sender told (at most every
    // REDIRECT_INTERVAL).
    fn forward(&mut self, now: Instant, hid: Xid, packet: Vec<u8>, arrived: Instant) {
        let Some(new_ad) = self.pointers.get(&hid).map(|p| p.new_ad) else {
            return;
        };
        let Ok(repr) = XipRepr::parse_header(&XipPacket::new_unchecked(&packet[..])) else {
            return;
        };
        // The redirect is built now, while the packet is at hand; it
        // leaves after the packet if the pacer lets that go at once.
        let key = repr.src.to_wire();
        let redirect = (!is_unanswerable(&packet)
            && self
                .redirected
                .get(&key)
                .is_none_or(|t| now >= *t + REDIRECT_INTERVAL))
        .then(|| {
            let new_dst = readdress(&repr.dst, self.config.ad, new_ad, hid);
            error_reply(&packet, ErrorKind::Redirect(new_dst), &self.dag())
        })
        .flatten();
        let p = self.pointers.get_mut(&hid).expect("looked up above");
        if p.queue.len() < self.config.buffer_packets {
            p.queue.push_back((packet, arrived, now));
        } else {
            self.counters.buffer_drops += 1;
        }
        self.release(now);
        if let Some(x) = redirect {
            self.redirected.insert(key, now);
            if self.redirected.len() > 4096 {
                self.redirected.clear();
            }
            self.counters.redirects += 1;
            self.transmits.push_back(Transmit {
                port: 0,
                next_hop: self.config.gateway,
                packet: x,
            });
        }
    }

    // Sends what the forwarding pointers' pacers let go by `now`, in
    // order, each re-addressed to its VM's new AD.
    fn release(&mut self, now: Instant) {
        for (hid, p) in self.pointers.iter_mut() {
            while p.due().is_some_and(|t| t <= now) {
                let (packet, arrived, queued) = p.queue.pop_front().expect("due: one waits");
                let Some(out) = readdressed(&packet, self.config.ad, p.new_ad, *hid) else {
                    continue;
                };
                p.spend(now, out.len());
                let c = &mut self.counters;
                c.forwarded += 1;
                c.max_hold = c.max_hold.max(now - arrived);
                c.max_pacer_wait = c.max_pacer_wait.max(now - queued);
                self.transmits.push_back(Transmit {
                    port: 0,
                    next_hop: self.config.gateway,
                    packet: out,
                });
            }
        }
    }

    fn run_vms(&mut self, now: Instant) {
        for slot in self.vms.values_mut() {
            if !slot.gone {
                slot.vm.run_to(now);
            }
        }
    }

    /// The next packet for the link.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.transmits.pop_front() {
            return Some(t);
        }
        if let Some(t) = self.host.poll_transmit() {
            return Some(t);
        }
        for slot in self.vms.values_mut() {
            if !slot.gone {
                if let Some(mut t) = slot.vm.stack.poll_transmit() {
                    t.port = 0;
                    return Some(t);
                }
            }
        }
        None
    }

    /// When [`Agent::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let vms = self
            .vms
            .values()
            .filter(|s| !s.gone && s.vm.is_running())
            .filter_map(|s| s.vm.poll_timeout());
        let out = self
            .outgoing
            .iter()
            .filter_map(|o| o.session.poll_timeout());
        let inc = self
            .incoming
            .iter()
            .filter_map(|i| i.session.as_ref()?.poll_timeout());
        // Forwarding pointers expire lazily (at the next packet or
        // timer): a timer of their own would keep an idle simulation going.
        // Their pacers have one only while packets wait.
        let paced = self.pointers.values().filter_map(Pointer::due);
        let naming = self.naming.as_ref().and_then(NameKeeper::poll_timeout);
        [self.host.poll_timeout(), naming]
            .into_iter()
            .flatten()
            .chain(vms)
            .chain(out)
            .chain(inc)
            .chain(paced)
            .min()
    }

    /// Runs what is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.run_vms(now);
        if self.host.poll_timeout().is_some_and(|t| t <= now) {
            self.host.handle_timeout(now);
        }
        for slot in self.vms.values_mut() {
            if !slot.gone
                && slot.vm.is_running()
                && slot.vm.poll_timeout().is_some_and(|t| t <= now)
            {
                slot.vm.handle_timeout(now);
            }
        }
        for o in &mut self.outgoing {
            if o.session.poll_timeout().is_some_and(|t| t <= now) {
                if let Some(slot) = self.vms.get_mut(&o.vm) {
                    o.session.handle_timeout(now, &mut slot.vm);
                }
            }
        }
        for i in &mut self.incoming {
            if let Some(s) = i.session.as_mut() {
                s.handle_timeout(now);
            }
        }
        let naming = self.naming.as_ref();
        if naming
            .and_then(NameKeeper::poll_timeout)
            .is_some_and(|t| t <= now)
        {
            self.keep_name(now);
        }
        self.pointers
            .retain(|_, p| p.live(now) || !p.queue.is_empty());
        self.step(now);
    }

    // Runs everything that can make progress without new input.
    fn step(&mut self, now: Instant) {
        for _ in 0..64 {
            let mut busy = false;
            while let Some(e) = self.host.poll_event() {
                busy = true;
                self.on_host_event(now, e);
            }
            busy |= self.pump_outgoing(now);
            busy |= self.pump_incoming(now);
            busy |= self.start_fetches(now);
            for slot in self.vms.values_mut() {
                if !slot.gone && slot.vm.is_running() {
                    slot.vm.drive(now);
                }
            }
            if !busy {
                break;
            }
        }
        self.outgoing
            .retain(|o| !(o.finished && o.pending.is_empty()));
        self.incoming.retain(|i| !i.done);
        self.release(now);
    }

    // Starts queued page fetches while there is room; true if any ended
    // at once (no route: asked of the source).
    fn start_fetches(&mut self, now: Instant) -> bool {
        // The store's AD and HID: a fetch asks `RE ( AD HID ) CID`.
        let store = self.config.content_store.as_ref().and_then(|d| {
            let ad = d.nodes_of_type(Principal::AD).next()?;
            Some((*ad, *d.nodes_of_type(Principal::HID).next()?))
        });
        let mut ended = false;
        while self.fetching.len() < FETCH_WINDOW {
            let Some((mid, page, cid)) = self.to_fetch.pop_front() else {
                break;
            };
            let started = store.and_then(|(ad, hid)| {
                let dag = Dag::content(ad, hid, Xid::new(Principal::CID, cid));
                self.host.fetch_chunk(&dag, now).ok()
            });
            match started {
                Some(id) => {
                    self.fetching.insert(id, (mid, page, cid));
                }
                None => {
                    self.fetched(now, mid, page, &cid, None);
                    ended = true;
                }
            }
        }
        ended
    }

    fn fetched(&mut self, now: Instant, mid: u64, page: u32, cid: &[u8; 20], bytes: Option<&[u8]>) {
        let outcome = self
            .incoming
            .iter_mut()
            .filter_map(|i| i.session.as_mut())
            .find(|s| s.id() == Some(mid))
            .and_then(|s| s.page_fetched(now, page, cid, bytes));
        // Counted by what the session made of it: bytes that do not hash
        // to the CID are a failure too (the page is asked of the source);
        // an answer for a page no longer awaited is neither.
        match outcome {
            Some(true) => self.counters.pages_fetched += 1,
            Some(false) => self.counters.fetch_failures += 1,
            None => {}
        }
    }

    fn on_host_event(&mut self, now: Instant, e: HostEvent) {
        match e {
            HostEvent::NameAnswer { .. } => {
                let ours = self
                    .naming
                    .as_mut()
                    .is_some_and(|k| k.handle_event(now, &e));
                match e {
                    _ if ours => self.keep_name(now),
                    HostEvent::NameAnswer { id, answer } => {
                        self.events.push_back(AgentEvent::NameAnswer { id, answer });
                    }
                    _ => {}
                }
            }
            // A new DAG (XHCP): the name follows it.
            HostEvent::NetworkChanged { .. } => self.keep_name(now),
            HostEvent::ChunkFetched { id, result, .. } => {
                if let Some((mid, page, cid)) = self.fetching.remove(&id) {
                    self.fetched(now, mid, page, &cid, result.as_deref().ok());
                }
            }
            HostEvent::Incoming { listener, .. } if listener == self.listener => {
                while let Some(stream) = self.host.accept(listener) {
                    self.incoming.push(Incoming {
                        stream,
                        reader: Some(FrameReader::default()),
                        session: None,
                        pending: Vec::new(),
                        vm: String::new(),
                        done: false,
                    });
                }
            }
            HostEvent::Stream { stream, event } => {
                if event == StreamEvent::Connected {
                    if let Some(o) = self.outgoing.iter_mut().find(|o| o.stream == Some(stream)) {
                        o.session.connected(now);
                    }
                    return;
                }
                if event == StreamEvent::PeerClosed {
                    // The other agent is done with this connection: so are
                    // we (a half-open connection would keep timers going).
                    if self
                        .incoming
                        .iter()
                        .any(|i| i.stream == stream && i.pending.is_empty())
                    {
                        let _ = self.host.stream_close(stream, now);
                    }
                    return;
                }
                let broken = matches!(event, StreamEvent::Error(_) | StreamEvent::Closed);
                if !broken {
                    return;
                }
                if let Some(o) = self.outgoing.iter_mut().find(|o| o.stream == Some(stream)) {
                    o.stream = None;
                    o.pending.clear();
                    if let Some(slot) = self.vms.get_mut(&o.vm) {
                        o.session.handle_link_lost(now, &mut slot.vm);
                    }
                }
                if let Some(k) = self.incoming.iter().position(|i| i.stream == stream) {
                    if let Some(s) = self.incoming[k].session.as_mut() {
                        s.handle_link_lost();
                    }
                    self.record_outcome(k);
                    self.incoming[k].done = true;
                }
            }
            _ => {}
        }
    }

    fn pump_outgoing(&mut self, now: Instant) -> bool {
        let mut busy = false;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(ROOM, 0);
        for k in 0..self.outgoing.len() {
            let o = &mut self.outgoing[k];
            let Some(slot) = self.vms.get_mut(&o.vm) else {
                continue;
            };
            if let Some(h) = o.stream {
                loop {
                    match self.host.stream_read(h, &mut buf, now) {
                        Ok(n) if n > 0 => {
                            busy = true;
                            o.session.handle_bytes(now, &buf[..n], &mut slot.vm);
                        }
                        _ => break,
                    }
                }
                // Write what the session has, as the connection takes it.
                loop {
                    if o.pending.is_empty() {
                        match o.session.poll_transmit(now, ROOM, &mut slot.vm) {
                            Some(f) => o.pending = f,
                            None => break,
                        }
                    }
                    match self.host.stream_write(h, &o.pending, now) {
                        Ok(n) if n > 0 => {
                            busy = true;
                            o.pending.drain(..n);
                        }
                        _ => break,
                    }
                }
                if o.finished && o.pending.is_empty() {
                    let _ = self.host.stream_close(h, now);
                    o.stream = None;
                }
            } else if o.session.wants_link() {
                if let Ok(h) = self.host.connect(&o.to, now) {
                    o.stream = Some(h);
                    o.session.link_up(now);
                    busy = true;
                }
            }
            while let Some(note) = o.session.poll_note() {
                busy = true;
                let hid = slot.vm.hid();
                match &note {
                    SourceNote::Accepted => {
                        push_log(&mut self.log, LogEntry::Accepted { id: o.id });
                    }
                    SourceNote::Committed => {
                        slot.gone = true;
                        let new_ad =
                            o.to.nodes_of_type(Principal::AD)
                                .next()
                                .copied()
                                .unwrap_or(self.config.ad);
                        let until = now + self.config.grace;
                        // Paced at what the migration's connection got
                        // toward the destination: it stops using that path
                        // now, and what was held takes its place.
                        let measured = o.session.status(&slot.vm).bandwidth;
                        let rate = self.config.forward_rate.unwrap_or(
                            if measured.is_finite() && measured >= 1.0 {
                                measured as u64
                            } else {
                                FALLBACK_FORWARD_RATE
                            },
                        );
                        self.pointers.insert(hid, Pointer::new(new_ad, until, rate));
                        push_log(
                            &mut self.log,
                            LogEntry::Committed {
                                id: o.id,
                                hid,
                                new_ad,
                                until,
                            },
                        );
                    }
                    SourceNote::InDoubt => {
                        // In doubt after silence (a timeout), the old
                        // connection may be dead without knowing it —
                        // XStream gives up only after minutes, and a
                        // restarted destination never answers on it: ask
                        // on a new one. The reset tells the destination,
                        // if it hears it, that this connection is over.
                        if let Some(h) = o.stream.take() {
                            let _ = self.host.stream_abort(h, now);
                            o.pending.clear();
                            o.session.handle_link_lost(now, &mut slot.vm);
                        }
                    }
                    SourceNote::Failed { .. } => {
                        push_log(
                            &mut self.log,
                            LogEntry::Ended {
                                id: o.id,
                                done: false,
                            },
                        );
                        slot.migrating = None;
                        o.finished = true;
                        // Resumed here (also after an in-doubt query found
                        // the destination without it): no pointer away.
                        slot.gone = false;
                        // The VM runs here again: what arrived meanwhile is
                        // its (held while paused, or, after a restart that
                        // thought it gone, queued for the pointer).
                        let queued = self
                            .pointers
                            .remove(&hid)
                            .map(|p| p.queue.into_iter().map(|(p, arrived, _)| (p, arrived)))
                            .into_iter()
                            .flatten();
                        for (p, arrived) in slot.buffer.drain(..).chain(queued) {
                            self.counters.delivered_after_pause += 1;
                            self.counters.max_hold = self.counters.max_hold.max(now - arrived);
                            slot.vm.stack.handle_packet(now, 0, p);
                        }
                    }
                    SourceNote::Done(_) => {
                        push_log(
                            &mut self.log,
                            LogEntry::Ended {
                                id: o.id,
                                done: true,
                            },
                        );
                        o.finished = true;
                    }
                    SourceNote::Forged(_) => self.counters.forged += 1,
                    _ => {}
                }
                self.events.push_back(AgentEvent::Outgoing {
                    id: o.id,
                    vm: o.vm.clone(),
                    note,
                });
            }
            // Handed over: what was held goes to the new location, paced
            // and ahead of anything that arrives from now on.
            if slot.gone && !slot.buffer.is_empty() {
                let hid = slot.vm.hid();
                let held: Vec<(Vec<u8>, Instant)> = slot.buffer.drain(..).collect();
                for (p, arrived) in held {
                    self.forward(now, hid, p, arrived);
                }
            }
        }
        // A VM whose migration finished is gone for good.
        let done: Vec<String> = self
            .outgoing
            .iter()
            .filter(|o| o.finished && o.session.state() == Source::Done)
            .map(|o| o.vm.clone())
            .collect();
        for name in done {
            self.vms.remove(&name);
        }
        self.scratch = buf;
        busy
    }

    fn pump_incoming(&mut self, now: Instant) -> bool {
        let mut busy = false;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(ROOM, 0);
        for k in 0..self.incoming.len() {
            loop {
                let n = match self
                    .host
                    .stream_read(self.incoming[k].stream, &mut buf, now)
                {
                    Ok(n) if n > 0 => n,
                    _ => break,
                };
                busy = true;
                let i = &mut self.incoming[k];
                if let Some(s) = i.session.as_mut() {
                    s.handle_bytes(now, &buf[..n]);
                    continue;
                }
                let Some(reader) = i.reader.as_mut() else {
                    break;
                };
                reader.push(&buf[..n]);
                self.first_messages(now, k);
            }
            let i = &mut self.incoming[k];
            if let Some(s) = i.session.as_mut() {
                while let Some(f) = s.poll_transmit() {
                    i.pending.extend(f);
                }
            }
            while !i.pending.is_empty() {
                match self.host.stream_write(i.stream, &i.pending, now) {
                    Ok(n) if n > 0 => {
                        busy = true;
                        i.pending.drain(..n);
                    }
                    _ => break,
                }
            }
            let notes: Vec<DestinationNote> = match i.session.as_mut() {
                Some(s) => std::iter::from_fn(|| s.poll_note()).collect(),
                None => Vec::new(),
            };
            for note in notes {
                busy = true;
                self.on_incoming_note(now, k, note);
            }
            self.record_outcome(k);
        }
        self.scratch = buf;
        busy
    }

    // A connection's first messages: an offer starts a session; queries
    // (from an in-doubt source) and aborts are answered from what we know.
    fn first_messages(&mut self, now: Instant, k: usize) {
        loop {
            let Some(reader) = self.incoming[k].reader.as_mut() else {
                return;
            };
            match reader.next_msg() {
                Ok(None) => return,
                Ok(Some(Msg::Query { id, nonce })) => {
                    let outcome = self.outcome(id);
                    let answer = auth::outcome_msg(&self.config.key, id, outcome, &nonce);
                    self.incoming[k].pending.extend(answer.to_frame());
                }
                Ok(Some(m @ Msg::Abort { .. })) => self.abort_incoming(now, &m),
                Ok(Some(m @ Msg::Offer(_))) => {
                    let rest = reader.take_pending();
                    let mut nonce = [0; crate::msg::NONCE_LEN];
                    self.rng.fill_bytes(&mut nonce);
                    let mut dc = self.config.destination.clone();
                    dc.fetch = self.config.content_store.is_some();
                    let mut s = DestinationSession::new(
                        dc,
                        SyntheticGuest::blank,
                        self.config.key.clone(),
                        nonce,
                        now,
                    );
                    s.handle_bytes(now, &m.to_frame());
                    s.handle_bytes(now, &rest);
                    let i = &mut self.incoming[k];
                    i.session = Some(s);
                    i.reader = None;
                    return;
                }
                Ok(Some(_)) | Err(_) => {
                    let i = &mut self.incoming[k];
                    i.done = true;
                    i.reader = None;
                    let _ = self.host.stream_abort(i.stream, now);
                    return;
                }
            }
        }
    }

    fn record_outcome(&mut self, k: usize) {
        if let Some(s) = &self.incoming[k].session {
            if let Some(id) = s.id() {
                self.outcomes.insert(id, s.outcome());
                while self.outcomes.len() > OUTCOMES_KEPT {
                    self.outcomes.pop_first();
                }
            }
        }
    }

    // An abort on a query connection: the source, in doubt, gave the old
    // connection up. Its session checks it against the offer's key.
    fn abort_incoming(&mut self, now: Instant, abort: &Msg) {
        let Msg::Abort { id, .. } = abort else {
            return;
        };
        for k in 0..self.incoming.len() {
            let i = &mut self.incoming[k];
            let Some(s) = i.session.as_mut().filter(|s| s.id() == Some(*id)) else {
                continue;
            };
            s.handle_message(abort.clone());
            let aborted = s.outcome() == Outcome::Aborted;
            let notes: Vec<DestinationNote> = std::iter::from_fn(|| s.poll_note()).collect();
            // Before the commit it aborts; after it, nothing changes (a
            // committed destination never aborts).
            if aborted {
                let _ = self.host.stream_abort(i.stream, now);
                i.pending.clear();
                i.done = true;
                self.record_outcome(k);
            }
            for note in notes {
                self.on_incoming_note(now, k, note);
            }
        }
    }

    fn outcome(&self, id: u64) -> Outcome {
        self.incoming
            .iter()
            .filter_map(|i| i.session.as_ref())
            .find(|s| s.id() == Some(id))
            .map(DestinationSession::outcome)
            .or_else(|| self.outcomes.get(&id).copied())
            .unwrap_or(Outcome::Unknown)
    }

    fn on_incoming_note(&mut self, now: Instant, k: usize, note: DestinationNote) {
        match note {
            DestinationNote::Reserved { id, name, .. } => {
                self.incoming[k].vm = name.clone();
                self.events.push_back(AgentEvent::Incoming { id, vm: name });
            }
            DestinationNote::Refused { reason } => {
                self.events.push_back(AgentEvent::IncomingFailed {
                    vm: self.incoming[k].vm.clone(),
                    error: reason,
                });
            }
            DestinationNote::Failed { error, .. } => {
                self.events.push_back(AgentEvent::IncomingFailed {
                    vm: self.incoming[k].vm.clone(),
                    error: error.to_string(),
                });
            }
            DestinationNote::Committed => {
                // Before the Commit leaves (the driver syncs the log before
                // it sends): a restart must not answer "unknown".
                if let Some(id) = self.incoming[k].session.as_ref().and_then(|s| s.id()) {
                    push_log(&mut self.log, LogEntry::Incoming { id, active: false });
                }
            }
            DestinationNote::Forged(_) => self.counters.forged += 1,
            DestinationNote::Fetch { page, cid } => {
                if let Some(id) = self.incoming[k].session.as_ref().and_then(|s| s.id()) {
                    self.to_fetch.push_back((id, page, cid));
                }
            }
            DestinationNote::Activate { device } => {
                let i = &mut self.incoming[k];
                let Some(memory) = i.session.as_mut().and_then(|s| s.take_guest()) else {
                    return;
                };
                match Vm::restore(memory, &device, now) {
                    Ok(mut vm) => {
                        vm.memory.resume();
                        // The network's latest beacon: the VM learns its AD now.
                        if let Some(b) = self.last_beacon.clone() {
                            vm.stack.handle_packet(now, 0, b);
                        }
                        // Back here while packets for it waited for the
                        // pacer: they are its.
                        if let Some(p) = self.pointers.remove(&vm.hid()) {
                            for (packet, _, _) in p.queue {
                                vm.stack.handle_packet(now, 0, packet);
                            }
                        }
                        vm.drive(now);
                        let name = vm.name.clone();
                        self.add_vm(vm);
                        if let Some(s) = self.incoming[k].session.as_mut() {
                            s.activated();
                            if let Some(id) = s.id() {
                                push_log(&mut self.log, LogEntry::Incoming { id, active: true });
                            }
                        }
                        self.events.push_back(AgentEvent::Activated { vm: name });
                    }
                    Err(e) => self.events.push_back(AgentEvent::ActivationFailed {
                        vm: self.incoming[k].vm.clone(),
                        error: e.to_string(),
                    }),
                }
            }
        }
    }
}

/// `packet` for a VM that moved from `old_ad` to `new_ad`: its
/// destination [`readdress`]ed, to be walked from the entry again.
fn readdressed(packet: &[u8], old_ad: Xid, new_ad: Xid, hid: Xid) -> Option<Vec<u8>> {
    let repr = XipRepr::parse_header(&XipPacket::new_unchecked(packet)).ok()?;
    let mut r = repr.clone();
    r.dst = readdress(&repr.dst, old_ad, new_ad, hid);
    r.last = LastNode::Entry;
    r.dst_visited = EdgeMarks::NONE;
    let payload = &packet[repr.header_len().min(packet.len())..];
    r.to_bytes(payload).ok()
}

/// `dst` with the old AD replaced by the new one (or, if it names no AD,
/// the path `new_ad hid` to its intent).
fn readdress(dst: &Dag, old_ad: Xid, new_ad: Xid, hid: Xid) -> Dag {
    if dst.nodes().iter().any(|n| n.xid == old_ad) {
        let nodes = dst
            .nodes()
            .iter()
            .map(|n| {
                let xid = if n.xid == old_ad { new_ad } else { n.xid };
                xia_stack::dag::Node::new(xid, n.edges)
            })
            .collect();
        if let Ok(d) = Dag::new(*dst.entry_edges(), nodes) {
            return d;
        }
    }
    let intent = *dst.intent();
    let path = if intent == hid {
        vec![new_ad, hid]
    } else {
        vec![new_ad, hid, intent]
    };
    Dag::path(&path).unwrap_or_else(|_| dst.clone())
}

/// Names: the agent's own, kept registered ([`AgentConfig::name`]), and
/// lookups of other agents'.
impl Agent {
    /// The name it keeps registered, if any.
    pub fn name(&self) -> Option<&str> {
        self.naming.as_ref().map(NameKeeper::name)
    }

    /// Whether the name server holds its current DAG under its name
    /// (true if it has none).
    pub fn name_registered(&self) -> bool {
        let dag = self.dag();
        self.naming.as_ref().is_none_or(|k| k.is_registered(&dag))
    }

    // Registers the agent's name for its DAG: at the first timer, when
    // the DAG changes, and again after a failure (before XHCP has brought
    // the name server, that is a wait and a retry).
    fn keep_name(&mut self, now: Instant) {
        if self.naming.is_none() {
            return;
        }
        let dag = self.dag();
        if let Some(k) = self.naming.as_mut() {
            k.poll(&mut self.host, now, &self.config.key, &dag);
        }
    }

    /// Asks the name server XHCP announced for `name`'s DAG (another
    /// agent's, for a migration). Returns the request id its answer
    /// ([`AgentEvent::NameAnswer`]) carries.
    pub fn resolve_name(
        &mut self,
        now: Instant,
        name: &str,
    ) -> Result<u32, xia_stack::socket::SocketError> {
        Ok(xia_stack::socket::resolve(&mut self.host, now, name)?.id())
    }
}
