//! Topology files: ADs, routers, hosts, links and a scenario, in TOML.
//!
//! ```toml
//! [[ad]]
//! name = "A"
//!
//! [[router]]
//! name = "rA"
//! ad = "A"
//! ipv4 = "10.0.0.1"      # optional: the router is a 4ID gateway
//! unknown_ads = ["C"]    # optional: ADs this router pretends not to know
//!
//! [[host]]
//! name = "h1"
//! ad = "A"
//!
//! [[link]]
//! a = "h1"
//! b = "rA"
//! bandwidth = "100Mbps"  # default 1Gbps
//! delay = "2ms"          # one way, default 1ms
//! queue = 100            # packets per direction, default 1000
//! loss = 0.01            # per packet, default 0
//! jitter = "1ms"         # uniform extra delay, default 0
//! reorder = 0.0          # chance a packet is held back, default 0
//! duplicate = 0.0        # chance a packet arrives twice, default 0
//!
//! [[run]]                # the scenario: commands run on nodes
//! at = "1s"
//! node = "h1"
//! command = "ping -c 3 @h2"
//!
//! [xhcp]                 # optional: routers beacon their AD to hosts
//! interval = "1s"
//!
//! [name_server]          # optional: a host that serves names; services
//! host = "h2"            # register theirs; `ping name:echo` resolves
//!
//! [[chunk]]              # content published by a host at the start
//! name = "c1"
//! host = "h2"
//! size = 100000
//!
//! [[fetch]]              # fetch it by CID (routers with cache_bytes keep
//! at = "1s"              # chunks passing through and answer later fetches)
//! node = "h1"
//! chunk = "c1"
//!
//! [[move]]               # re-plug a host into another router (needs [xhcp])
//! at = "5s"
//! host = "h1"
//! router = "rB"
//!
//! [[stream]]             # a reliable XStream transfer
//! from = "h1"
//! to = "h2"
//! at = "1s"
//! bytes = 1000000
//!
//! [[flow]]               # datagrams from one host's socket to another's
//! from = "h1"
//! to = "h2"
//! at = "0.5s"
//! count = 100
//! interval = "10ms"
//! size = 64
//! dag = "RE ( IP:10.0.0.3 ) @D @h2"   # optional: the receiver's DAG
//! ```
//!
//! In DAG text inside a scenario, `@name` stands for a node or AD: `@A` is
//! AD A's XID, `@h2` a host's or router's HID. Identities are derived from
//! names, so the same file gives the same XIDs everywhere.
//!
//! Every error names the file, the line, and what is wrong.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use xia_net::impair::Impairment;
use xia_router::routing::LinkStateConfig;
use xia_stack::dag::Dag;
use xia_stack::identity::Identity;
use xia_stack::xid::{sha1, Principal, Xid};

/// A topology file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct TopologyError {
    /// The file (or `<embedded>`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    #[serde(default)]
    ad: Vec<RawAd>,
    #[serde(default)]
    router: Vec<RawRouter>,
    #[serde(default)]
    host: Vec<RawHost>,
    #[serde(default)]
    link: Vec<RawLink>,
    #[serde(default)]
    run: Vec<RawRun>,
    #[serde(default)]
    flow: Vec<RawFlow>,
    #[serde(default)]
    service: Vec<RawService>,
    xhcp: Option<RawXhcp>,
    #[serde(default)]
    stream: Vec<RawStream>,
    name_server: Option<RawNameServer>,
    #[serde(default)]
    chunk: Vec<RawChunk>,
    #[serde(default)]
    fetch: Vec<RawFetch>,
    #[serde(default, rename = "move")]
    moves: Vec<RawMove>,
    routing: Option<RawRouting>,
    #[serde(default)]
    event: Vec<RawEvent>,
    #[serde(default)]
    hypervisor: Vec<crate::migration::RawHypervisor>,
    #[serde(default)]
    vm: Vec<crate::migration::RawVm>,
    #[serde(default)]
    migration: Vec<crate::migration::RawMigration>,
    #[serde(default)]
    client: Vec<crate::migration::RawClient>,
    #[serde(default)]
    image: Vec<crate::migration::RawImage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    protocol: Spanned<String>,
    hello: Option<Spanned<String>>,
    dead: Option<Spanned<String>>,
    refresh: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at: Spanned<String>,
    link: Option<Spanned<Vec<Spanned<String>>>>,
    node: Option<Spanned<String>>,
    state: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMove {
    at: Spanned<String>,
    host: Spanned<String>,
    router: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChunk {
    name: Spanned<String>,
    host: Spanned<String>,
    size: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFetch {
    at: Spanned<String>,
    node: Spanned<String>,
    chunk: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNameServer {
    host: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    from: Spanned<String>,
    to: Option<Spanned<String>>,
    service: Option<Spanned<String>>,
    at: Spanned<String>,
    bytes: Spanned<i64>,
    dag: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawXhcp {
    pub(crate) interval: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    host: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAd {
    pub(crate) name: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouter {
    pub(crate) name: Spanned<String>,
    pub(crate) ad: Spanned<String>,
    pub(crate) ipv4: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) unknown_ads: Vec<Spanned<String>>,
    pub(crate) cache_bytes: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHost {
    pub(crate) name: Spanned<String>,
    pub(crate) ad: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    a: Spanned<String>,
    b: Spanned<String>,
    bandwidth: Option<Spanned<String>>,
    delay: Option<Spanned<String>>,
    queue: Option<Spanned<i64>>,
    loss: Option<Spanned<f64>>,
    jitter: Option<Spanned<String>>,
    reorder: Option<Spanned<f64>>,
    duplicate: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    at: Spanned<String>,
    node: Spanned<String>,
    command: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    from: Spanned<String>,
    to: Spanned<String>,
    at: Spanned<String>,
    count: Spanned<i64>,
    interval: Spanned<String>,
    size: Option<Spanned<i64>>,
    dag: Option<Spanned<String>>,
}

/// What a node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A router.
    Router {
        /// Its 4ID, if it is a gateway to an IPv4 island.
        ipv4: Option<Ipv4Addr>,
        /// ADs it is configured not to know (to exercise fallbacks).
        unknown_ads: Vec<usize>,
        /// Bytes of passing content chunks it caches (0: none).
        cache_bytes: usize,
    },
    /// An end host.
    Host,
}

/// A router or host.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// Its name.
    pub name: String,
    /// Index into [`Topology::ads`].
    pub ad: usize,
    /// What it is.
    pub kind: NodeKind,
    /// Its HID identity (derived from the name).
    pub identity: Identity,
}

impl NodeSpec {
    /// Its HID.
    pub fn hid(&self) -> Xid {
        self.identity.xid()
    }
}

/// An AD.
#[derive(Clone, Debug)]
pub struct AdSpec {
    /// Its name.
    pub name: String,
    /// Its XID (derived from the name).
    pub xid: Xid,
}

/// A bidirectional link's properties (each direction has its own queue).
#[derive(Clone, Debug, PartialEq)]
pub struct LinkSpec {
    /// One end (node index).
    pub a: usize,
    /// The other end.
    pub b: usize,
    /// Bits per second.
    pub bandwidth_bps: u64,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Packets each direction may queue.
    pub queue: usize,
    /// Chance each packet is lost.
    pub loss: f64,
    /// Most extra delay, drawn uniformly per packet.
    pub jitter: Duration,
    /// Chance a packet is held back by one extra delay (so later packets
    /// overtake it).
    pub reorder: f64,
    /// Chance a packet arrives twice (the copy one serialisation time
    /// later).
    pub duplicate: f64,
    /// A link a `[[move]]` plugs in later (`a` is the router, `b` the
    /// host); down until then.
    pub initially_down: bool,
}

/// One scenario command.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `ping [-c COUNT] [-i SECONDS] [-s SIZE] [-t HOPS] [-W SECONDS] DAG|name:NAME`.
    Ping {
        /// The destination.
        dst: Target,
        /// How many echo requests.
        count: u32,
        /// Between requests.
        interval: Duration,
        /// Payload bytes.
        size: usize,
        /// How long to wait for the last reply.
        timeout: Duration,
        /// Hop limit of the requests (default 250).
        hop_limit: Option<u8>,
    },
}

/// Where a command goes: an address, or a name resolved first.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// A DAG.
    Dag(Dag),
    /// A name (`name:NAME` in a command), resolved with the topology's
    /// name server.
    Name(String),
}

/// A command to run at a time on a node.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSpec {
    /// When.
    pub at: Duration,
    /// Where (node index).
    pub node: usize,
    /// The command as written.
    pub text: String,
    /// What it does.
    pub command: Command,
}

/// A datagram flow.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowSpec {
    /// Sending host.
    pub from: usize,
    /// Receiving host.
    pub to: usize,
    /// Start.
    pub at: Duration,
    /// Datagrams.
    pub count: u32,
    /// Between datagrams.
    pub interval: Duration,
    /// Payload bytes (at least 8: a sequence number is carried).
    pub size: usize,
    /// The receiver's DAG to use instead of its plain `AD HID` (e.g. with a
    /// fallback); the sink's SID is appended as the intent.
    pub dag: Option<Dag>,
}

/// A checked topology.
#[derive(Clone, Debug)]
pub struct Topology {
    /// ADs.
    pub ads: Vec<AdSpec>,
    /// Routers and hosts.
    pub nodes: Vec<NodeSpec>,
    /// Links.
    pub links: Vec<LinkSpec>,
    /// Commands.
    pub runs: Vec<RunSpec>,
    /// Datagram flows.
    pub flows: Vec<FlowSpec>,
    /// Services bound on hosts.
    pub services: Vec<ServiceSpec>,
    /// Routers send XHCP beacons this often (`[xhcp] interval`).
    pub xhcp_interval: Option<Duration>,
    /// Stream transfers.
    pub streams: Vec<StreamSpec>,
    /// Hosts re-plugged into another router during the run.
    pub moves: Vec<MoveSpec>,
    /// Content chunks published on hosts at the start.
    pub chunks: Vec<ChunkSpec>,
    /// Chunk fetches.
    pub fetches: Vec<FetchSpec>,
    /// The host that serves names (`[name_server] host`); services register
    /// their names with it, and hosts know it from the start (or from XHCP).
    pub name_server: Option<usize>,
    /// How routers get their routes.
    pub routing: RoutingSpec,
    /// Link and router failures and repairs, in file order.
    pub events: Vec<EventSpec>,
    /// Hypervisors, VMs, migrations and the VMs' clients.
    pub migration: crate::migration::MigrationPlan,
}

/// A host's link re-plugged into another router at `at` (the old link goes
/// down, `link` — made for the move, with the old link's properties —
/// comes up). The host learns its new AD from XHCP beacons and registers
/// with its new gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct MoveSpec {
    /// When.
    pub at: Duration,
    /// The host.
    pub host: usize,
    /// The new router.
    pub router: usize,
    /// The link index of the new attachment.
    pub link: usize,
}

/// How routers get their routes (`[routing]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoutingSpec {
    /// Shortest paths computed from the file and installed at the start
    /// (the default): instant, but blind to failures.
    Static,
    /// Every router runs link-state routing; only directly attached hosts
    /// and a router's own 4ID are configured.
    LinkState(RoutingTimers),
}

/// Link-state timers (`[routing]` in topology and daemon files).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoutingTimers {
    /// HELLO interval.
    pub hello: Duration,
    /// Dead interval.
    pub dead: Duration,
    /// LSA refresh interval; LSAs age out at four times it.
    pub refresh: Duration,
}

impl Default for RoutingTimers {
    /// HELLO every second, dead after four, LSAs refreshed every 30 s.
    fn default() -> RoutingTimers {
        RoutingTimers {
            hello: Duration::from_secs(1),
            dead: Duration::from_secs(4),
            refresh: Duration::from_secs(30),
        }
    }
}

impl RoutingTimers {
    /// The router's link-state configuration with these timers.
    pub fn link_state_config(&self, port_costs: Vec<u32>, exclude: Vec<Xid>) -> LinkStateConfig {
        LinkStateConfig {
            hello_interval: self.hello,
            dead_interval: self.dead,
            refresh_interval: self.refresh,
            max_age: self.refresh * 4,
            port_costs,
            exclude,
            ..LinkStateConfig::default()
        }
    }
}

/// What an `[[event]]` changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventTarget {
    /// A link (index into [`Topology::links`]).
    Link(usize),
    /// A router (node index): down, it hears and sends nothing; up again,
    /// it restarts with empty state, as after a reboot.
    Node(usize),
}

/// A failure or repair during the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventSpec {
    /// When.
    pub at: Duration,
    /// What.
    pub target: EventTarget,
    /// Up (`true`) or down.
    pub up: bool,
}

/// A chunk of generated content (`size` bytes derived from its name)
/// published by a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkSpec {
    /// Its name in the file.
    pub name: String,
    /// The publishing host.
    pub host: usize,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// A host fetching a chunk by CID (from `RE ( AD HID ) CID` of its
/// publisher, so a router on the way may answer from its cache).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchSpec {
    /// When.
    pub at: Duration,
    /// Who fetches.
    pub node: usize,
    /// Which chunk (index into [`Topology::chunks`]).
    pub chunk: usize,
}

/// A stream transfer: a client on `from` connects to a server SID on `to`
/// and sends `bytes` bytes, then closes.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamSpec {
    /// The client host.
    pub from: usize,
    /// The server host.
    pub to: usize,
    /// The service whose name the client resolves and whose SID the server
    /// listens on (`service = "…"`), instead of a fresh server SID.
    pub service: Option<usize>,
    /// When the client connects.
    pub at: Duration,
    /// How much it sends.
    pub bytes: u64,
    /// The server's DAG to use instead of its `AD HID` (the server SID is
    /// appended).
    pub dag: Option<Dag>,
}

/// A service: a datagram socket bound to a SID on a host from the start,
/// answering pings sent to its SID and counting datagrams sent to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Its name (`@name` in DAG text is its SID).
    pub name: String,
    /// The host (node index).
    pub host: usize,
    /// Its SID (derived from the name).
    pub sid: Xid,
}

/// An identity derived from a label, so names give the same XIDs on every
/// run and machine.
pub fn derived_identity(principal: Principal, label: &str) -> Identity {
    let a = sha1(format!("xia-rs testbed key 1 {label}").as_bytes());
    let b = sha1(format!("xia-rs testbed key 2 {label}").as_bytes());
    let mut secret = [0u8; 32];
    secret[..20].copy_from_slice(&a);
    secret[20..].copy_from_slice(&b[..12]);
    Identity::from_secret_bytes(principal, &secret)
}

/// Where parse errors point: a file's name and text.
pub(crate) struct Ctx<'a> {
    pub(crate) file: &'a str,
    pub(crate) text: &'a str,
}

/// The impairment keys of a `[[link]]`, shared by topology and daemon
/// files.
pub(crate) struct LinkKeys<'a> {
    pub(crate) bandwidth: &'a Option<Spanned<String>>,
    pub(crate) delay: &'a Option<Spanned<String>>,
    pub(crate) queue: &'a Option<Spanned<i64>>,
    pub(crate) loss: &'a Option<Spanned<f64>>,
    pub(crate) jitter: &'a Option<Spanned<String>>,
    pub(crate) reorder: &'a Option<Spanned<f64>>,
    pub(crate) duplicate: &'a Option<Spanned<f64>>,
}

impl LinkKeys<'_> {
    /// Whether any key is given.
    pub(crate) fn any(&self) -> bool {
        self.bandwidth.is_some()
            || self.delay.is_some()
            || self.queue.is_some()
            || self.loss.is_some()
            || self.jitter.is_some()
            || self.reorder.is_some()
            || self.duplicate.is_some()
    }
}

/// Reads a configuration file (topology, daemon, plan) for its parser:
/// its name for errors and its text.
pub(crate) fn read_config(path: &Path) -> Result<(String, String), TopologyError> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((file, text)),
        Err(e) => Err(TopologyError {
            file,
            line: 0,
            message: e.to_string(),
        }),
    }
}

impl Ctx<'_> {
    /// The text as TOML of shape `T`; a syntax or shape error names its
    /// line.
    pub(crate) fn toml<T: serde::de::DeserializeOwned>(&self) -> Result<T, TopologyError> {
        toml::from_str(self.text).map_err(|e| TopologyError {
            file: self.file.to_string(),
            line: e.span().map_or(0, |s| self.line_of(s.start)),
            message: e.message().to_string(),
        })
    }

    /// A duration key, or `default`.
    pub(crate) fn duration(
        &self,
        f: &Option<Spanned<String>>,
        default: Duration,
        what: &str,
    ) -> Result<Duration, TopologyError> {
        match f {
            None => Ok(default),
            Some(s) => match parse_duration(s.get_ref()) {
                Some(d) => Ok(d),
                None => self.err(
                    s.span(),
                    format!("{what} {:?} is not a duration like \"5ms\"", s.get_ref()),
                ),
            },
        }
    }

    /// The `hello`, `dead` and `refresh` keys of a `[routing]` section:
    /// positive durations, 1 s, 4 × hello and 30 s by default, and a dead
    /// interval longer than the hello interval (errors at `anchor` when no
    /// key can be blamed).
    pub(crate) fn routing_timers(
        &self,
        hello: &Option<Spanned<String>>,
        dead: &Option<Spanned<String>>,
        refresh: &Option<Spanned<String>>,
        anchor: std::ops::Range<usize>,
    ) -> Result<RoutingTimers, TopologyError> {
        let positive = |f: &Option<Spanned<String>>, default: Duration, what: &str| match f {
            None => Ok(default),
            Some(s) => match parse_duration(s.get_ref()) {
                Some(d) if !d.is_zero() => Ok(d),
                _ => self.err(
                    s.span(),
                    format!(
                        "{what} {:?} is not a positive duration like \"1s\"",
                        s.get_ref()
                    ),
                ),
            },
        };
        let d = RoutingTimers::default();
        let hello = positive(hello, d.hello, "hello")?;
        let dead_d = positive(dead, hello * 4, "dead")?;
        if dead_d <= hello {
            return self.err(
                dead.as_ref().map_or(anchor, |s| s.span()),
                "the dead interval must be longer than the hello interval",
            );
        }
        Ok(RoutingTimers {
            hello,
            dead: dead_d,
            refresh: positive(refresh, d.refresh, "refresh")?,
        })
    }

    /// A probability key, or 0.
    pub(crate) fn prob(&self, f: &Option<Spanned<f64>>, what: &str) -> Result<f64, TopologyError> {
        match f {
            None => Ok(0.0),
            Some(s) if (0.0..=1.0).contains(s.get_ref()) => Ok(*s.get_ref()),
            Some(s) => self.err(
                s.span(),
                format!("{what} {} must be between 0 and 1", s.get_ref()),
            ),
        }
    }

    /// A link's impairment; absent keys take the defaults given for
    /// bandwidth and delay, a 1000-packet queue and no loss.
    pub(crate) fn impairment(
        &self,
        k: &LinkKeys,
        bandwidth_bps: u64,
        delay: Duration,
    ) -> Result<Impairment, TopologyError> {
        let bandwidth_bps = match k.bandwidth {
            None => bandwidth_bps,
            Some(s) => match parse_bandwidth(s.get_ref()) {
                Some(b) => b,
                None => {
                    return self.err(
                        s.span(),
                        format!("bandwidth {:?} is not like \"100Mbps\"", s.get_ref()),
                    )
                }
            },
        };
        let queue = match k.queue {
            None => 1000,
            Some(q) if (1..=1_000_000).contains(q.get_ref()) => *q.get_ref() as usize,
            Some(q) => {
                return self.err(
                    q.span(),
                    format!("queue {} must be 1 to 1000000 packets", q.get_ref()),
                )
            }
        };
        Ok(Impairment {
            bandwidth_bps,
            delay: self.duration(k.delay, delay, "delay")?,
            queue,
            loss: self.prob(k.loss, "loss")?,
            jitter: self.duration(k.jitter, Duration::ZERO, "jitter")?,
            reorder: self.prob(k.reorder, "reorder")?,
            duplicate: self.prob(k.duplicate, "duplicate")?,
        })
    }

    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    pub(crate) fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> Result<T, TopologyError> {
        Err(TopologyError {
            file: self.file.to_string(),
            line: self.line_of(span.start),
            message: message.into(),
        })
    }
}

/// Parses a duration: a number with `s`, `ms`, `us` or `ns` (`1.5s`,
/// `20ms`); a bare number is seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix("ns") {
        (n, 1e-9)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0 && v * scale < 1e9)
        .then(|| Duration::from_nanos((v * scale * 1e9).round() as u64))
}

/// Parses a bandwidth: a number with `bps`, `kbps`, `Mbps` or `Gbps`.
pub fn parse_bandwidth(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, scale) = [("Gbps", 1e9), ("Mbps", 1e6), ("kbps", 1e3), ("bps", 1.0)]
        .iter()
        .find_map(|(suf, s)| t.strip_suffix(suf).map(|n| (n, *s)))?;
    let v: f64 = num.trim().parse().ok()?;
    let bps = v * scale;
    (1.0..=1e13).contains(&bps).then_some(bps as u64)
}

impl Topology {
    /// Reads a topology file.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let (file, text) = read_config(path)?;
        Topology::parse(&file, &text)
    }

    /// Parses topology text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Topology, TopologyError> {
        let cx = Ctx { file, text };
        let raw: RawTopology = cx.toml()?;
        let mut ads: Vec<AdSpec> = Vec::new();
        let mut ad_index: BTreeMap<String, usize> = BTreeMap::new();
        for ad in &raw.ad {
            let name = ad.name.get_ref();
            check_name(&cx, &ad.name)?;
            if ad_index.insert(name.clone(), ads.len()).is_some() {
                return cx.err(ad.name.span(), format!("AD {name:?} is defined twice"));
            }
            ads.push(AdSpec {
                name: name.clone(),
                xid: derived_identity(Principal::AD, &format!("ad {name}")).xid(),
            });
        }
        let find_ad = |s: &Spanned<String>| -> Result<usize, TopologyError> {
            match ad_index.get(s.get_ref()) {
                Some(&i) => Ok(i),
                None => cx.err(
                    s.span(),
                    format!("unknown AD {:?} (define it with [[ad]])", s.get_ref()),
                ),
            }
        };
        let mut nodes: Vec<NodeSpec> = Vec::new();
        let mut node_index: BTreeMap<String, usize> = BTreeMap::new();
        let mut add_node =
            |name: &Spanned<String>, ad: usize, kind: NodeKind| -> Result<(), TopologyError> {
                check_name(&cx, name)?;
                let n = name.get_ref();
                if node_index.contains_key(n) || ad_index.contains_key(n) {
                    return cx.err(name.span(), format!("name {n:?} is already used"));
                }
                node_index.insert(n.clone(), nodes.len());
                nodes.push(NodeSpec {
                    name: n.clone(),
                    ad,
                    kind,
                    identity: derived_identity(Principal::HID, &format!("node {n}")),
                });
                Ok(())
            };
        for r in &raw.router {
            let ad = find_ad(&r.ad)?;
            let ipv4 = match &r.ipv4 {
                None => None,
                Some(s) => match s.get_ref().parse::<Ipv4Addr>() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        return cx.err(
                            s.span(),
                            format!("ipv4 {:?} is not a dotted-quad address", s.get_ref()),
                        )
                    }
                },
            };
            let unknown_ads = r
                .unknown_ads
                .iter()
                .map(&find_ad)
                .collect::<Result<Vec<_>, _>>()?;
            let cache_bytes = match &r.cache_bytes {
                None => 0,
                Some(c) if (0..=1 << 34).contains(c.get_ref()) => *c.get_ref() as usize,
                Some(c) => {
                    return cx.err(
                        c.span(),
                        format!("cache_bytes {} must be 0 to 2^34", c.get_ref()),
                    )
                }
            };
            add_node(
                &r.name,
                ad,
                NodeKind::Router {
                    ipv4,
                    unknown_ads,
                    cache_bytes,
                },
            )?;
        }
        for h in &raw.host {
            let ad = find_ad(&h.ad)?;
            add_node(&h.name, ad, NodeKind::Host)?;
        }
        // Hypervisors are hosts to the network; their node indices, for
        // the checks below and the migration plan.
        for h in &raw.hypervisor {
            let ad = find_ad(&h.ad)?;
            add_node(&h.name, ad, NodeKind::Host)?;
        }
        let hypervisor_nodes: Vec<usize> = raw
            .hypervisor
            .iter()
            .filter_map(|h| node_index.get(h.name.get_ref()).copied())
            .collect();
        let find_node = |s: &Spanned<String>| -> Result<usize, TopologyError> {
            match node_index.get(s.get_ref()) {
                Some(&i) => Ok(i),
                None => cx.err(s.span(), format!("unknown node {:?}", s.get_ref())),
            }
        };
        // A node that must be a host; `what` says what runs there.
        let find_host = |s: &Spanned<String>, what: &str| -> Result<usize, TopologyError> {
            let n = find_node(s)?;
            if nodes[n].kind != NodeKind::Host {
                return cx.err(
                    s.span(),
                    format!("{what} run on hosts; {:?} is a router", s.get_ref()),
                );
            }
            if hypervisor_nodes.contains(&n) {
                return cx.err(
                    s.span(),
                    format!(
                        "{what} run on hosts; {:?} is a hypervisor (run services in a [[vm]])",
                        s.get_ref()
                    ),
                );
            }
            Ok(n)
        };
        let time_at = |s: &Spanned<String>| -> Result<Duration, TopologyError> {
            parse_duration(s.get_ref()).map_or_else(
                || {
                    cx.err(
                        s.span(),
                        format!("at {:?} is not a time like \"1.5s\"", s.get_ref()),
                    )
                },
                Ok,
            )
        };
        let mut links = Vec::new();
        for l in &raw.link {
            let (a, b) = (find_node(&l.a)?, find_node(&l.b)?);
            if a == b {
                return cx.err(l.b.span(), "a link needs two different nodes");
            }
            let keys = LinkKeys {
                bandwidth: &l.bandwidth,
                delay: &l.delay,
                queue: &l.queue,
                loss: &l.loss,
                jitter: &l.jitter,
                reorder: &l.reorder,
                duplicate: &l.duplicate,
            };
            let imp = cx.impairment(&keys, 1_000_000_000, Duration::from_millis(1))?;
            let hosts_on_link = [a, b]
                .iter()
                .filter(|&&n| nodes[n].kind == NodeKind::Host)
                .count();
            if hosts_on_link == 2 {
                return cx.err(
                    l.a.span(),
                    "a link between two hosts: hosts attach to routers",
                );
            }
            links.push(LinkSpec {
                a,
                b,
                bandwidth_bps: imp.bandwidth_bps,
                delay: imp.delay,
                queue: imp.queue,
                loss: imp.loss,
                jitter: imp.jitter,
                reorder: imp.reorder,
                duplicate: imp.duplicate,
                initially_down: false,
            });
        }
        for (i, n) in nodes.iter().enumerate() {
            if n.kind == NodeKind::Host {
                let attached: Vec<usize> = links
                    .iter()
                    .filter(|l| l.a == i || l.b == i)
                    .map(|l| if l.a == i { l.b } else { l.a })
                    .collect();
                let decl = raw
                    .host
                    .iter()
                    .map(|h| &h.name)
                    .chain(raw.hypervisor.iter().map(|h| &h.name))
                    .find(|name| name.get_ref() == &n.name)
                    .expect("declared");
                match attached.as_slice() {
                    [] => return cx.err(decl.span(), format!("host {:?} has no link", n.name)),
                    [r] if nodes[*r].ad != n.ad => {
                        return cx.err(
                            decl.span(),
                            format!(
                                "host {:?} is in AD {} but its router {:?} is in AD {}",
                                n.name, ads[n.ad].name, nodes[*r].name, ads[nodes[*r].ad].name
                            ),
                        )
                    }
                    [_] => {}
                    _ => {
                        return cx.err(
                            decl.span(),
                            format!(
                                "host {:?} has more than one link (one interface per host for now)",
                                n.name
                            ),
                        )
                    }
                }
            }
        }
        let mut services: Vec<ServiceSpec> = Vec::new();
        for sv in &raw.service {
            check_name(&cx, &sv.name)?;
            let n = sv.name.get_ref();
            if node_index.contains_key(n)
                || ad_index.contains_key(n)
                || services.iter().any(|s| &s.name == n)
            {
                return cx.err(sv.name.span(), format!("name {n:?} is already used"));
            }
            let host = find_host(&sv.host, "services")?;
            services.push(ServiceSpec {
                name: n.clone(),
                host,
                sid: derived_identity(Principal::SID, &format!("service {n}")).xid(),
            });
        }
        let names = Names {
            ads: &ads,
            nodes: &nodes,
            services: &services,
        };
        // An optional `dag = "…"` key: DAG text with `@name`s.
        let opt_dag = |d: &Option<Spanned<String>>| -> Result<Option<Dag>, TopologyError> {
            match d {
                None => Ok(None),
                Some(d) => names
                    .dag(d.get_ref())
                    .map(Some)
                    .or_else(|m| cx.err(d.span(), format!("dag: {m}"))),
            }
        };
        let mut runs = Vec::new();
        for r in &raw.run {
            let node = find_host(&r.node, "commands")?;
            let at = time_at(&r.at)?;
            let command = match parse_command(r.command.get_ref(), &names) {
                Ok(c) => c,
                Err(m) => return cx.err(r.command.span(), m),
            };
            runs.push(RunSpec {
                at,
                node,
                text: r.command.get_ref().clone(),
                command,
            });
        }
        let mut flows = Vec::new();
        for f in &raw.flow {
            let (from, to) = (find_host(&f.from, "flows")?, find_host(&f.to, "flows")?);
            let at = time_at(&f.at)?;
            let interval = parse_duration(f.interval.get_ref()).map_or_else(
                || {
                    cx.err(
                        f.interval.span(),
                        "interval is not a duration like \"10ms\"",
                    )
                },
                Ok,
            )?;
            let count = match *f.count.get_ref() {
                c @ 1..=10_000_000 => c as u32,
                c => return cx.err(f.count.span(), format!("count {c} must be 1 to 10000000")),
            };
            let size = match &f.size {
                None => 64,
                Some(s) if (8..=60_000).contains(s.get_ref()) => *s.get_ref() as usize,
                Some(s) => {
                    return cx.err(
                        s.span(),
                        format!("size {} must be 8 to 60000 bytes", s.get_ref()),
                    )
                }
            };
            let dag = opt_dag(&f.dag)?;
            flows.push(FlowSpec {
                from,
                to,
                at,
                count,
                interval,
                size,
                dag,
            });
        }
        let mut streams = Vec::new();
        let mut named_stream_line = None;
        for st in &raw.stream {
            let (to_span, to, service) = match (&st.to, &st.service) {
                (Some(t), None) => (t, find_node(t)?, None),
                (None, Some(sv)) => match services.iter().position(|s| &s.name == sv.get_ref()) {
                    Some(i) => {
                        named_stream_line.get_or_insert(sv.span());
                        (sv, services[i].host, Some(i))
                    }
                    None => {
                        return cx.err(sv.span(), format!("unknown service {:?}", sv.get_ref()))
                    }
                },
                _ => return cx.err(
                    st.from.span(),
                    "a stream needs exactly one of `to` (a host) or `service` (a name to resolve)",
                ),
            };
            let from = find_host(&st.from, "streams")?;
            if nodes[to].kind != NodeKind::Host {
                return cx.err(
                    to_span.span(),
                    format!("streams run on hosts; {:?} is a router", to_span.get_ref()),
                );
            }
            let at = time_at(&st.at)?;
            let bytes = match *st.bytes.get_ref() {
                b @ 0..=10_000_000_000 => b as u64,
                b => {
                    return cx.err(
                        st.bytes.span(),
                        format!("bytes {b} must be 0 to 10000000000"),
                    )
                }
            };
            let dag = opt_dag(&st.dag)?;
            streams.push(StreamSpec {
                from,
                to,
                service,
                at,
                bytes,
                dag,
            });
        }
        let xhcp_interval = match &raw.xhcp {
            None => None,
            Some(x) => match parse_duration(x.interval.get_ref()) {
                Some(d) if d >= Duration::from_millis(1) => Some(d),
                _ => {
                    return cx.err(
                        x.interval.span(),
                        "xhcp interval must be a duration of at least 1ms",
                    )
                }
            },
        };
        let name_server = match &raw.name_server {
            None => None,
            Some(ns) => Some(find_host(&ns.host, "name servers")?),
        };
        let mut moves = Vec::new();
        for m in &raw.moves {
            let host = find_host(&m.host, "moves")?;
            let router = find_node(&m.router)?;
            if nodes[router].kind == NodeKind::Host {
                return cx.err(
                    m.router.span(),
                    format!("{:?} is not a router", m.router.get_ref()),
                );
            }
            if raw.xhcp.is_none() {
                return cx.err(
                    m.host.span(),
                    "a moved host learns its new network from XHCP: add [xhcp]",
                );
            }
            let at = time_at(&m.at)?;
            let current = links
                .iter()
                .find(|l| !l.initially_down && (l.a == host || l.b == host))
                .expect("hosts have a link")
                .clone();
            links.push(LinkSpec {
                a: router,
                b: host,
                initially_down: true,
                ..current
            });
            moves.push(MoveSpec {
                at,
                host,
                router,
                link: links.len() - 1,
            });
        }
        let mut chunks: Vec<ChunkSpec> = Vec::new();
        for c in &raw.chunk {
            check_name(&cx, &c.name)?;
            if chunks.iter().any(|x| &x.name == c.name.get_ref()) {
                return cx.err(
                    c.name.span(),
                    format!("chunk {:?} is defined twice", c.name.get_ref()),
                );
            }
            let host = find_host(&c.host, "chunks")?;
            let size = match *c.size.get_ref() {
                s @ 0..=16_777_216 => s as usize,
                s => {
                    return cx.err(
                        c.size.span(),
                        format!("size {s} must be 0 to 16777216 bytes"),
                    )
                }
            };
            // Content derived from the name: the same file, the same CID.
            let seed = sha1(c.name.get_ref().as_bytes());
            let bytes = (0..size).map(|i| seed[i % 20] ^ (i / 20) as u8).collect();
            chunks.push(ChunkSpec {
                name: c.name.get_ref().clone(),
                host,
                bytes,
            });
        }
        let mut fetches = Vec::new();
        for f in &raw.fetch {
            let node = find_host(&f.node, "fetches")?;
            let Some(chunk) = chunks.iter().position(|c| &c.name == f.chunk.get_ref()) else {
                return cx.err(
                    f.chunk.span(),
                    format!("unknown chunk {:?}", f.chunk.get_ref()),
                );
            };
            let at = time_at(&f.at)?;
            fetches.push(FetchSpec { at, node, chunk });
        }
        let routing = match &raw.routing {
            None => RoutingSpec::Static,
            Some(r) => match r.protocol.get_ref().as_str() {
                "static" => RoutingSpec::Static,
                "link-state" => RoutingSpec::LinkState(cx.routing_timers(
                    &r.hello,
                    &r.dead,
                    &r.refresh,
                    r.protocol.span(),
                )?),
                other => {
                    return cx.err(
                        r.protocol.span(),
                        format!("routing protocol {other:?} is not \"static\" or \"link-state\""),
                    )
                }
            },
        };
        let mut events = Vec::new();
        for e in &raw.event {
            let at = time_at(&e.at)?;
            let up = match e.state.get_ref().as_str() {
                "up" => true,
                "down" => false,
                other => {
                    return cx.err(
                        e.state.span(),
                        format!("state {other:?} is not \"up\" or \"down\""),
                    )
                }
            };
            let target = match (&e.link, &e.node) {
                (Some(l), None) => {
                    let ends = l.get_ref();
                    if ends.len() != 2 {
                        return cx.err(l.span(), "link = [\"A\", \"B\"] names its two ends");
                    }
                    let (a, b) = (find_node(&ends[0])?, find_node(&ends[1])?);
                    match links.iter().position(|k| {
                        !k.initially_down && ((k.a, k.b) == (a, b) || (k.a, k.b) == (b, a))
                    }) {
                        Some(li) => EventTarget::Link(li),
                        None => {
                            return cx.err(
                                l.span(),
                                format!(
                                    "no link between {:?} and {:?}",
                                    ends[0].get_ref(),
                                    ends[1].get_ref()
                                ),
                            )
                        }
                    }
                }
                (None, Some(n)) => {
                    let node = find_node(n)?;
                    if nodes[node].kind == NodeKind::Host {
                        return cx.err(
                            n.span(),
                            format!("{:?} is a host; node events fail routers", n.get_ref()),
                        );
                    }
                    EventTarget::Node(node)
                }
                _ => {
                    return cx.err(
                        e.at.span(),
                        "an event names either a link = [\"A\", \"B\"] or a node",
                    )
                }
            };
            events.push(EventSpec { at, target, up });
        }
        if let (Some(span), None) = (named_stream_line, name_server) {
            return cx.err(
                span,
                "streams to a service resolve its name: add a [name_server]",
            );
        }
        let image_hosts = raw
            .image
            .iter()
            .map(|im| find_host(&im.host, "image stores"))
            .collect::<Result<Vec<_>, _>>()?;
        let migration = crate::migration::MigrationPlan::parse(
            &cx,
            crate::migration::Raw {
                hypervisors: &raw.hypervisor,
                vms: &raw.vm,
                migrations: &raw.migration,
                clients: &raw.client,
                images: &raw.image,
                image_hosts: &image_hosts,
            },
            &hypervisor_nodes,
            &node_index,
            name_server.is_some(),
        )?;
        Ok(Topology {
            migration,
            routing,
            events,
            moves,
            chunks,
            fetches,
            name_server,
            streams,
            xhcp_interval,
            services,
            ads,
            nodes,
            links,
            runs,
            flows,
        })
    }

    /// A node's index by name.
    pub fn node(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The name of the node or AD an XID belongs to.
    pub fn name_of(&self, xid: &Xid) -> Option<String> {
        let nodes = self.nodes.iter().map(|n| (n.hid(), &n.name));
        let ads = self.ads.iter().map(|a| (a.xid, &a.name));
        let services = self.services.iter().map(|s| (s.sid, &s.name));
        nodes
            .chain(ads)
            .chain(services)
            .find(|(x, _)| x == xid)
            .map(|(_, n)| n.clone())
    }

    /// A node's DAG: `AD HID`.
    pub fn node_dag(&self, i: usize) -> Dag {
        let n = &self.nodes[i];
        Dag::path(&[self.ads[n.ad].xid, n.hid()]).expect("two nodes")
    }

    /// Replaces `@name` tokens in DAG text with XIDs.
    pub fn expand(&self, text: &str) -> Result<String, String> {
        Names {
            ads: &self.ads,
            nodes: &self.nodes,
            services: &self.services,
        }
        .expand(text)
    }
}

struct Names<'a> {
    ads: &'a [AdSpec],
    nodes: &'a [NodeSpec],
    services: &'a [ServiceSpec],
}

impl Names<'_> {
    /// DAG text with `@name`s, expanded and parsed.
    fn dag(&self, text: &str) -> Result<Dag, String> {
        Dag::parse(&self.expand(text)?).map_err(|e| e.to_string())
    }

    fn expand(&self, text: &str) -> Result<String, String> {
        let mut out = Vec::new();
        for word in text.split_whitespace() {
            match word.strip_prefix('@') {
                None => out.push(word.to_string()),
                Some(name) => {
                    if let Some(ad) = self.ads.iter().find(|a| a.name == name) {
                        out.push(ad.xid.to_string());
                    } else if let Some(n) = self.nodes.iter().find(|n| n.name == name) {
                        out.push(n.hid().to_string());
                    } else if let Some(sv) = self.services.iter().find(|s| s.name == name) {
                        out.push(sv.sid.to_string());
                    } else {
                        return Err(format!("@{name}: no AD, node or service has that name"));
                    }
                }
            }
        }
        Ok(out.join(" "))
    }
}

/// Checks a name-service name in a command.
fn check_dns_name(name: &str) -> Result<(), String> {
    xia_stack::naming::check_name(name).map_err(|e| e.to_string())
}

fn check_name(cx: &Ctx, name: &Spanned<String>) -> Result<(), TopologyError> {
    let n = name.get_ref();
    let ok = !n.is_empty()
        && n.len() <= 32
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        cx.err(
            name.span(),
            format!("name {n:?} must be 1-32 letters, digits, '_' or '-'"),
        )
    }
}

/// Parses a scenario command. A DAG argument is the rest of the line; a
/// lone `@host` means that host's `AD HID`.
fn parse_command(text: &str, names: &Names) -> Result<Command, String> {
    let mut words = text.split_whitespace().peekable();
    // `xia ping …` reads like the command line it mirrors.
    if words.peek() == Some(&"xia") {
        words.next();
    }
    match words.next() {
        Some("ping") => {
            let (mut count, mut interval, mut size, mut timeout) = (
                4u32,
                Duration::from_secs(1),
                56usize,
                Duration::from_secs(2),
            );
            let mut hop_limit = None;
            while let Some(&w) = words.peek() {
                fn value<'a>(flag: &str, v: Option<&'a str>) -> Result<&'a str, String> {
                    v.ok_or_else(|| format!("{flag} needs a value"))
                }
                match w {
                    "-c" => {
                        words.next();
                        count = value(w, words.next())?
                            .parse()
                            .ok()
                            .filter(|c| (1..=100_000).contains(c))
                            .ok_or("-c needs 1 to 100000")?;
                    }
                    "-i" => {
                        words.next();
                        interval =
                            parse_duration(value(w, words.next())?).ok_or("-i needs a duration")?;
                    }
                    "-s" => {
                        words.next();
                        size = value(w, words.next())?
                            .parse()
                            .ok()
                            .filter(|s| *s <= 60_000)
                            .ok_or("-s needs 0 to 60000")?;
                    }
                    "-t" => {
                        words.next();
                        hop_limit = Some(
                            value(w, words.next())?
                                .parse()
                                .ok()
                                .filter(|h| *h >= 1)
                                .ok_or("-t needs 1 to 255")?,
                        );
                    }
                    "-W" => {
                        words.next();
                        timeout =
                            parse_duration(value(w, words.next())?).ok_or("-W needs a duration")?;
                    }
                    _ => break,
                }
            }
            let rest: Vec<&str> = words.collect();
            if rest.is_empty() {
                return Err("ping needs a destination DAG".into());
            }
            let dst = match rest.as_slice() {
                [one] if one.starts_with("name:") => {
                    let name = &one["name:".len()..];
                    check_dns_name(name)?;
                    Target::Name(name.to_string())
                }
                [one] if one.starts_with('@') && names.nodes.iter().any(|n| n.name == one[1..]) => {
                    let name = &one[1..];
                    let n = names
                        .nodes
                        .iter()
                        .find(|n| n.name == name)
                        .ok_or_else(|| format!("@{name}: no node has that name"))?;
                    Target::Dag(Dag::path(&[names.ads[n.ad].xid, n.hid()]).expect("two nodes"))
                }
                _ => Target::Dag(
                    names
                        .dag(&rest.join(" "))
                        .map_err(|e| format!("destination: {e}"))?,
                ),
            };
            Ok(Command::Ping {
                dst,
                count,
                interval,
                size,
                timeout,
                hop_limit,
            })
        }
        Some(other) => Err(format!("unknown command {other:?} (known: ping)")),
        None => Err("empty command".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[ad]]
name = "A"
[[ad]]
name = "B"
[[router]]
name = "rA"
ad = "A"
[[router]]
name = "rB"
ad = "B"
[[host]]
name = "h1"
ad = "A"
[[host]]
name = "h2"
ad = "B"
[[link]]
a = "h1"
b = "rA"
[[link]]
a = "rA"
b = "rB"
delay = "10ms"
bandwidth = "100Mbps"
[[link]]
a = "rB"
b = "h2"
[[run]]
at = "1s"
node = "h1"
command = "ping -c 2 @h2"
"#;

    fn err(text: &str) -> TopologyError {
        Topology::parse("t.toml", text).unwrap_err()
    }

    #[test]
    fn parses_and_derives_stable_xids() {
        let t = Topology::parse("t.toml", GOOD).unwrap();
        assert_eq!(t.nodes.len(), 4);
        assert_eq!(t.links[1].delay, Duration::from_millis(10));
        assert_eq!(t.links[1].bandwidth_bps, 100_000_000);
        let t2 = Topology::parse("t.toml", GOOD).unwrap();
        assert_eq!(t.ads[0].xid, t2.ads[0].xid);
        match &t.runs[0].command {
            Command::Ping { dst, count, .. } => {
                assert_eq!(*count, 2);
                assert_eq!(*dst, Target::Dag(t.node_dag(t.node("h2").unwrap())));
            }
        }
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = err(&GOOD.replace("b = \"rB\"\ndelay", "b = \"rX\"\ndelay"));
        assert_eq!(e.line, 23);
        assert!(e.message.contains("unknown node \"rX\""), "{e}");
        assert!(e.to_string().starts_with("t.toml:23: "));
        let e = err(&GOOD.replace("delay = \"10ms\"", "delay = \"ten\""));
        assert_eq!(e.line, 24);
        let e = err(&GOOD.replace(
            "command = \"ping -c 2 @h2\"",
            "command = \"ping -c 2 @nobody\"",
        ));
        assert!(e.message.contains("@nobody"), "{e}");
        let e = err("[[ad]]\nname = \"A\"\nsize = 3\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("unknown field"), "{e}");
        let e = err("[[ad]\nname = 1");
        assert_eq!(e.line, 1);
        let e = err(&GOOD.replace(
            "[[host]]\nname = \"h2\"\nad = \"B\"",
            "[[host]]\nname = \"h2\"\nad = \"A\"",
        ));
        assert!(e.message.contains("its router"), "{e}");
    }

    #[test]
    fn units() {
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_bandwidth("1Gbps"), Some(1_000_000_000));
        assert_eq!(parse_bandwidth("2.5Mbps"), Some(2_500_000));
        assert_eq!(parse_bandwidth("fast"), None);
    }
}
