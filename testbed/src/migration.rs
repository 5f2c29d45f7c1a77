//! VM migration in topologies: hypervisors (hosts that run a
//! [`xia_migrate::agent::Agent`]), the VMs they start with, the migrations
//! to run, and the clients that talk to the VMs' services meanwhile.
//!
//! ```toml
//! [[hypervisor]]
//! name = "hv1"
//! ad = "A"
//! capacity = "4GiB"          # memory it can take in (default 4 GiB)
//!
//! [[vm]]
//! name = "vm1"
//! hypervisor = "hv1"
//! memory = "64MiB"           # a multiple of page_size (default 4096)
//! dirty_rate = 2000          # pages per second while it runs
//! dirty = "hot-set"          # uniform | hot-set | zipf
//! hot_set = "8MiB"           # hot-set: its size (90 % of writes land in it)
//! service = "stream"         # stream | datagrams | none
//! service_name = "video"     # registered with the name server
//! bytes = "20MB"             # stream: bytes per client
//! rate = "20Mbps"            # stream: pacing (default: as fast as it can)
//!
//! [[migration]]
//! vm = "vm1"
//! to = "hv2"
//! at = "2s"
//! mode = "live"              # full | live | smart
//! downtime_target = "300ms"
//! max_bandwidth = "1Gbps"    # optional cap
//! deltas = false             # XOR deltas for re-sent pages
//! auto_converge = true
//! # optional: a fault, the first time the source reaches a phase
//! # (negotiating | precopy | stop-and-copy | await-commit | released)
//! fault = { phase = "precopy", kind = "link-cut", duration = "12s" }
//! #   link-cut    the inter-AD links between the two hypervisors go down
//! #               (what is on them is lost) for `duration`, then back
//! #   stall       nothing gets through them for `duration`, then
//! #               everything that was sent does
//! #   loss        they lose `rate` (0 to 1) of the packets for `duration`
//! #   dest-crash  the destination's agent loses everything (its VMs and
//! #               log too) and restarts empty after `duration` (default 0)
//! #   source-crash  the source's agent process dies; its VMs live on; it
//! #               restarts from its log after `duration` (default 1s)
//!
//! [[client]]
//! host = "c1"
//! vm = "vm1"
//! at = "1s"
//! kind = "download"          # download (stream) | datagrams
//! by_name = true             # resolve the service name (else its DAG)
//! # datagrams: count = 1000, interval = "5ms", size = 200
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use xia_migrate::guest::{DirtyModel, Image};
use xia_migrate::msg::Mode;
use xia_migrate::source::{SourceConfig, DEFAULT_DELTA_CACHE};
use xia_migrate::state::Source;
use xia_migrate::vm::{stream_mismatches, ServiceSpec};
use xia_stack::dag::Dag;
use xia_stack::host::{Host, HostEvent, NetError};
use xia_stack::identity::Identity;
use xia_stack::socket::{XDatagram, XStream};
use xia_stack::stream::StreamEvent;
use xia_stack::time::Instant;
use xia_stack::xid::Principal;

use crate::apps::FlowSender;
use crate::topology::{derived_identity, parse_bandwidth, parse_duration, Ctx, TopologyError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHypervisor {
    pub(crate) name: Spanned<String>,
    pub(crate) ad: Spanned<String>,
    capacity: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVm {
    name: Spanned<String>,
    hypervisor: Spanned<String>,
    memory: Spanned<String>,
    page_size: Option<Spanned<i64>>,
    dirty_rate: Option<Spanned<f64>>,
    dirty: Option<Spanned<String>>,
    hot_set: Option<Spanned<String>>,
    zipf: Option<Spanned<f64>>,
    service: Option<Spanned<String>>,
    service_name: Option<Spanned<String>>,
    bytes: Option<Spanned<String>>,
    rate: Option<Spanned<String>>,
    image: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawImage {
    name: Spanned<String>,
    pub(crate) host: Spanned<String>,
    share: Option<Spanned<f64>>,
}

impl RawImage {
    /// An image of a daemon configuration, whose store is not a node the
    /// daemon knows: [`MigrationPlan::parse`] takes the stores from
    /// [`Raw::image_hosts`] and never reads `host`, so it holds the name's
    /// span and nothing.
    pub(crate) fn for_daemon(name: Spanned<String>, share: Option<Spanned<f64>>) -> RawImage {
        RawImage {
            host: Spanned::new(name.span(), String::new()),
            name,
            share,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMigration {
    vm: Spanned<String>,
    to: Spanned<String>,
    at: Spanned<String>,
    mode: Option<Spanned<String>>,
    downtime_target: Option<Spanned<String>>,
    max_bandwidth: Option<Spanned<String>>,
    deltas: Option<bool>,
    auto_converge: Option<bool>,
    max_rounds: Option<Spanned<i64>>,
    dedup: Option<bool>,
    fault: Option<Spanned<RawFault>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFault {
    phase: Spanned<String>,
    kind: Spanned<String>,
    duration: Option<Spanned<String>>,
    rate: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClient {
    host: Spanned<String>,
    vm: Spanned<String>,
    at: Spanned<String>,
    kind: Spanned<String>,
    by_name: Option<bool>,
    count: Option<Spanned<i64>>,
    interval: Option<Spanned<String>>,
    size: Option<Spanned<i64>>,
}

/// A hypervisor: a host node that runs an agent.
#[derive(Clone, Debug, PartialEq)]
pub struct HypervisorSpec {
    /// Its node.
    pub node: usize,
    /// Bytes of guest memory it takes in.
    pub capacity: u64,
}

/// A VM at the start of a run.
#[derive(Clone, Debug)]
pub struct VmSpec {
    /// Its name.
    pub name: String,
    /// The hypervisor node it starts on.
    pub hypervisor: usize,
    /// Pages of memory.
    pub pages: usize,
    /// Bytes per page.
    pub page_size: usize,
    /// Pages dirtied per second.
    pub dirty_rate: f64,
    /// Which pages.
    pub model: DirtyModel,
    /// What runs in it.
    pub service: ServiceSpec,
    /// Its service's registered name.
    pub service_name: Option<String>,
    /// The VM's HID key.
    pub identity: Identity,
    /// Its service's SID key.
    pub service_key: Identity,
    /// The base image it booted from (`image = NAME`).
    pub image: Option<Image>,
}

/// A base image and the store that serves its pages by CID
/// (`[[image]]`): the hypervisors in the store's AD fetch pages sent by
/// CID from it.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSpec {
    /// Its name.
    pub name: String,
    /// The host that stores it.
    pub host: usize,
    /// Its content.
    pub image: Image,
}

/// The content of the image named `name` covering `share` of a guest's
/// non-zero pages: the same name, the same bytes — in every topology and
/// every daemon configuration, so a store and the VMs booted from the
/// image agree on every page's CID without exchanging anything.
pub fn named_image(name: &str, share: f64) -> Image {
    let seed = xia_stack::xid::sha1(format!("image {name}").as_bytes());
    let seed = u64::from_be_bytes(seed[..8].try_into().expect("8 bytes"));
    Image { seed, share }
}

/// An `[[image]]`'s `share` (default 0.5), checked.
pub(crate) fn image_share(cx: &Ctx, share: &Option<Spanned<f64>>) -> Result<f64, TopologyError> {
    match share {
        None => Ok(0.5),
        Some(x) if (0.0..=1.0).contains(x.get_ref()) => Ok(*x.get_ref()),
        Some(x) => cx.err(x.span(), "share must be 0 to 1"),
    }
}

/// What an image store publishes of one image: the pages of the first
/// `pages` that the image covers, `page_size` bytes each — those a VM of
/// that many pages booted from it starts with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageExtent {
    /// The image.
    pub image: Image,
    /// Pages from the start (the largest VM booted from it).
    pub pages: usize,
    /// Bytes per page.
    pub page_size: usize,
}

/// The pages `extents` publish, each once: (image, page number, page
/// size). One derivation for the simulator's stores and the host daemon's.
pub fn published_pages(
    extents: impl IntoIterator<Item = ImageExtent>,
) -> impl Iterator<Item = (Image, usize, usize)> {
    let mut seen = std::collections::BTreeSet::new();
    extents
        .into_iter()
        .flat_map(|e| (0..e.pages).map(move |i| (e.image, i, e.page_size)))
        .filter(move |(m, i, ps)| m.covers(*i) && seen.insert((m.seed, *i, *ps)))
}

/// An image store's host: `cfg` with room for `pages` (from
/// [`published_pages`]) in its chunk store, and each page published as a
/// chunk (its CID is the SHA-1 of its bytes). What the host daemon of a
/// store runs.
pub fn image_store_host(
    mut cfg: xia_stack::host::HostConfig,
    pages: &[(Image, usize, usize)],
) -> Result<Host, xia_stack::host::HostError> {
    let bytes: usize = pages.iter().map(|&(_, _, ps)| ps).sum();
    // A megabyte more for chunks the host is given later.
    cfg.chunk_store = cfg.chunk_store.max(bytes + (1 << 20));
    let mut host = Host::new(cfg);
    let mut page = Vec::new();
    for &(m, p, ps) in pages {
        page.resize(ps, 0);
        m.page(p, &mut page);
        host.put_chunk(&page)?;
    }
    Ok(host)
}

impl crate::topology::Topology {
    /// Where VM `k`'s service is at the start: its hypervisor's AD, the
    /// VM's HID, the service's SID.
    pub fn vm_service_dag(&self, k: usize) -> Dag {
        let v = &self.migration.vms[k];
        let ad = self.ads[self.nodes[v.hypervisor].ad].xid;
        Dag::path(&[ad, v.identity.xid(), v.service_key.xid()]).expect("three nodes")
    }

    /// Where hypervisor node `n`'s agent fetches pages sent by CID: the
    /// first image store in its own AD (`AD HID`), if there is one — a
    /// store elsewhere would cost the WAN crossing dedup saves.
    pub fn content_store(&self, n: usize) -> Option<Dag> {
        let ad = self.nodes[n].ad;
        self.migration
            .images
            .iter()
            .find(|im| self.nodes[im.host].ad == ad)
            .map(|im| Dag::path(&[self.ads[ad].xid, self.nodes[im.host].hid()]).expect("two nodes"))
    }
}

/// A migration to run.
#[derive(Clone, Debug)]
pub struct MigrationSpec {
    /// The VM (index into the VMs).
    pub vm: usize,
    /// The destination hypervisor's node.
    pub to: usize,
    /// When.
    pub at: Duration,
    /// How.
    pub config: SourceConfig,
    /// A fault to inject (`fault = { … }`).
    pub fault: Option<FaultSpec>,
}

/// A fault injected into a migration the first time its source reaches a
/// phase (`fault = { phase = "precopy", kind = "link-cut", duration =
/// "12s" }` in a `[[migration]]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultSpec {
    /// When: the source's phase (Negotiating, PreCopy, StopAndCopy,
    /// AwaitCommit or Released).
    pub phase: Source,
    /// What.
    pub kind: FaultKind,
}

/// What a [`FaultSpec`] does. The link faults hit the links that join two
/// ADs on the path between the two hypervisors (within one AD, its
/// router-to-router links; with none, the whole path).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FaultKind {
    /// The links go down for this long (what is on them is lost), then
    /// come back.
    LinkCut(Duration),
    /// Nothing gets through the links for this long; then everything that
    /// was sent meanwhile arrives.
    Stall(Duration),
    /// The links lose this share of packets for this long.
    Loss {
        /// The share, 0 to 1.
        rate: f64,
        /// For how long.
        duration: Duration,
    },
    /// The destination's agent loses all its state — connections,
    /// sessions, log, and the VMs it runs, one it activated included —
    /// and restarts empty after this long.
    DestCrash(Duration),
    /// The source's agent process dies (its VMs live on, running or
    /// paused, as QEMU outlives libvirtd) and restarts from its log after
    /// this long; meanwhile the machine, whose network the agent bridges,
    /// hears nothing.
    SourceCrash(Duration),
}

impl FaultKind {
    /// Its name in a topology.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::LinkCut(_) => "link-cut",
            FaultKind::Stall(_) => "stall",
            FaultKind::Loss { .. } => "loss",
            FaultKind::DestCrash(_) => "dest-crash",
            FaultKind::SourceCrash(_) => "source-crash",
        }
    }
}

impl std::fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = |d: &Duration| d.as_secs_f64();
        write!(f, "{}", self.kind.name())?;
        match &self.kind {
            FaultKind::LinkCut(d) | FaultKind::Stall(d) => write!(f, " for {} s", secs(d))?,
            FaultKind::Loss { rate, duration } => {
                write!(f, " of {} % for {} s", rate * 100.0, secs(duration))?
            }
            FaultKind::DestCrash(d) | FaultKind::SourceCrash(d) => {
                write!(f, ", restarted after {} s", secs(d))?
            }
        }
        write!(f, " in {:?}", self.phase)
    }
}

/// The phases a fault can name, as written in a topology.
const FAULT_PHASES: [(&str, Source); 5] = [
    ("negotiating", Source::Negotiating),
    ("precopy", Source::PreCopy),
    ("stop-and-copy", Source::StopAndCopy),
    ("await-commit", Source::AwaitCommit),
    ("released", Source::Released),
];

/// Faults last at most an hour.
const FAULT_LONGEST: Duration = Duration::from_secs(3600);

impl FaultSpec {
    fn parse(cx: &Ctx, raw: &Spanned<RawFault>) -> Result<FaultSpec, TopologyError> {
        let r = raw.get_ref();
        let Some(&(_, phase)) = FAULT_PHASES
            .iter()
            .find(|(n, _)| *n == r.phase.get_ref().as_str())
        else {
            return cx.err(
                r.phase.span(),
                format!(
                    "fault phase {:?} is not negotiating, precopy, stop-and-copy, await-commit or released",
                    r.phase.get_ref()
                ),
            );
        };
        let duration = match &r.duration {
            None => None,
            Some(d) => match parse_duration(d.get_ref()) {
                Some(t) if t <= FAULT_LONGEST => Some(t),
                _ => {
                    return cx.err(
                        d.span(),
                        format!(
                            "fault duration {:?} is not a time like \"12s\" (at most 1 hour)",
                            d.get_ref()
                        ),
                    )
                }
            },
        };
        let kind = r.kind.get_ref().as_str();
        // Only loss takes a rate.
        if let (Some(rate), false) = (&r.rate, kind == "loss") {
            return cx.err(rate.span(), "fault rate is for kind = \"loss\" only");
        }
        let needs = |what: &str| -> Result<Duration, TopologyError> {
            match duration {
                Some(d) if !d.is_zero() => Ok(d),
                _ => cx.err(
                    raw.span(),
                    format!("a {what} fault needs duration = TIME (more than 0)"),
                ),
            }
        };
        let kind = match kind {
            "link-cut" => FaultKind::LinkCut(needs("link-cut")?),
            "stall" => FaultKind::Stall(needs("stall")?),
            "loss" => {
                let duration = needs("loss")?;
                let rate = match &r.rate {
                    Some(x) if *x.get_ref() > 0.0 && *x.get_ref() <= 1.0 => *x.get_ref(),
                    Some(x) => return cx.err(x.span(), "fault rate must be above 0 and at most 1"),
                    None => return cx.err(raw.span(), "a loss fault needs rate = SHARE (0 to 1)"),
                };
                FaultKind::Loss { rate, duration }
            }
            "dest-crash" => FaultKind::DestCrash(duration.unwrap_or(Duration::ZERO)),
            "source-crash" => FaultKind::SourceCrash(duration.unwrap_or(Duration::from_secs(1))),
            other => {
                return cx.err(
                    r.kind.span(),
                    format!(
                    "fault kind {other:?} is not link-cut, stall, loss, dest-crash or source-crash"
                ),
                )
            }
        };
        Ok(FaultSpec { phase, kind })
    }
}

/// What a client does.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientKind {
    /// Downloads the VM's stream service, checking every byte.
    Download,
    /// Sends numbered datagrams to the VM's datagram service.
    Datagrams {
        /// How many.
        count: u32,
        /// Between them.
        interval: Duration,
        /// Bytes each (at least 8).
        size: usize,
    },
}

/// A client of a VM's service.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientSpec {
    /// The host it runs on.
    pub host: usize,
    /// The VM.
    pub vm: usize,
    /// When it starts.
    pub at: Duration,
    /// Resolve the service's name (else use its DAG at the start).
    pub by_name: bool,
    /// What it does.
    pub kind: ClientKind,
}

/// Reads a size: bytes, or a number with `KiB`, `MiB`, `GiB`, `kB`, `MB`,
/// `GB`.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let units = [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("kB", 1000),
        ("B", 1),
    ];
    let (num, scale) = units
        .iter()
        .find_map(|(u, s)| t.strip_suffix(u).map(|n| (n.trim(), *s)))
        .unwrap_or((t, 1));
    let v: f64 = num.parse().ok()?;
    let bytes = v * scale as f64;
    (v.is_finite() && v >= 0.0 && bytes < 1e13).then_some(bytes as u64)
}

/// A VM's (or an image extent's) `page_size`, default 4096, checked.
pub(crate) fn parse_page_size(cx: &Ctx, p: &Option<Spanned<i64>>) -> Result<usize, TopologyError> {
    match p {
        None => Ok(4096),
        Some(p) if (64..=1 << 21).contains(p.get_ref()) => Ok(*p.get_ref() as usize),
        Some(p) => cx.err(
            p.span(),
            format!("page_size {} must be 64 to 2 MiB", p.get_ref()),
        ),
    }
}

/// A VM's (or an image extent's) `memory` in bytes, checked: whole pages,
/// at most 64 GiB.
pub(crate) fn parse_memory(
    cx: &Ctx,
    m: &Spanned<String>,
    page_size: usize,
) -> Result<u64, TopologyError> {
    match parse_size(m.get_ref()) {
        Some(b) if b > 0 && b % page_size as u64 == 0 && b <= 64 << 30 => Ok(b),
        _ => cx.err(
            m.span(),
            format!(
                "memory {:?} must be a size like \"64MiB\", a multiple of the page size ({page_size}), at most 64 GiB",
                m.get_ref()
            ),
        ),
    }
}

/// The checked migration sections of a topology.
#[derive(Clone, Debug, Default)]
pub struct MigrationPlan {
    /// Hypervisors.
    pub hypervisors: Vec<HypervisorSpec>,
    /// VMs.
    pub vms: Vec<VmSpec>,
    /// Migrations.
    pub migrations: Vec<MigrationSpec>,
    /// Clients of VMs.
    pub clients: Vec<ClientSpec>,
    /// Base images and their stores.
    pub images: Vec<ImageSpec>,
}

pub(crate) struct Raw<'a> {
    pub(crate) hypervisors: &'a [RawHypervisor],
    pub(crate) vms: &'a [RawVm],
    pub(crate) migrations: &'a [RawMigration],
    pub(crate) clients: &'a [RawClient],
    pub(crate) images: &'a [RawImage],
    /// The host of each image (checked by the topology).
    pub(crate) image_hosts: &'a [usize],
}

impl MigrationPlan {
    /// The pages image store `host` publishes, each once: every page of
    /// each image it stores that some VM booted from it has.
    pub fn image_pages(&self, host: usize) -> impl Iterator<Item = (Image, usize, usize)> + '_ {
        published_pages(self.image_extents(host).into_iter().map(|(_, e)| e))
    }

    /// What image store `host` publishes, image by image: for each page
    /// size of the VMs booted from an image it stores, as many pages as
    /// the largest of them has (what a daemon configuration of the store
    /// says, [`crate::daemon`]).
    pub fn image_extents(&self, host: usize) -> Vec<(&ImageSpec, ImageExtent)> {
        let mut out: Vec<(&ImageSpec, ImageExtent)> = Vec::new();
        for im in self.images.iter().filter(|im| im.host == host) {
            for v in self.vms.iter().filter(|v| v.image == Some(im.image)) {
                match out
                    .iter_mut()
                    .find(|(x, e)| x.name == im.name && e.page_size == v.page_size)
                {
                    Some((_, e)) => e.pages = e.pages.max(v.pages),
                    None => out.push((
                        im,
                        ImageExtent {
                            image: im.image,
                            pages: v.pages,
                            page_size: v.page_size,
                        },
                    )),
                }
            }
        }
        out
    }

    /// The hypervisor spec of node `n`, if it is one.
    pub fn hypervisor(&self, n: usize) -> Option<&HypervisorSpec> {
        self.hypervisors.iter().find(|h| h.node == n)
    }

    pub(crate) fn parse(
        cx: &Ctx,
        raw: Raw,
        hypervisor_nodes: &[usize],
        node_index: &BTreeMap<String, usize>,
        has_name_server: bool,
    ) -> Result<MigrationPlan, TopologyError> {
        let mut plan = MigrationPlan::default();
        for (&node, h) in hypervisor_nodes.iter().zip(raw.hypervisors) {
            let capacity = match &h.capacity {
                None => 4 << 30,
                Some(s) => match parse_size(s.get_ref()) {
                    Some(c) => c,
                    None => {
                        return cx.err(
                            s.span(),
                            format!("capacity {:?} is not a size like \"4GiB\"", s.get_ref()),
                        )
                    }
                },
            };
            plan.hypervisors.push(HypervisorSpec { node, capacity });
        }
        let hyper = |s: &Spanned<String>, what: &str| -> Result<usize, TopologyError> {
            match node_index.get(s.get_ref()) {
                Some(n) if hypervisor_nodes.contains(n) => Ok(*n),
                Some(_) => cx.err(
                    s.span(),
                    format!("{what} {:?} is not a [[hypervisor]]", s.get_ref()),
                ),
                None => cx.err(s.span(), format!("unknown hypervisor {:?}", s.get_ref())),
            }
        };
        for (im, &host) in raw.images.iter().zip(raw.image_hosts) {
            let name = im.name.get_ref().clone();
            if plan.images.iter().any(|x| x.name == name) {
                return cx.err(im.name.span(), format!("image {name:?} is defined twice"));
            }
            let share = image_share(cx, &im.share)?;
            plan.images.push(ImageSpec {
                image: named_image(&name, share),
                name,
                host,
            });
        }
        let mut vm_index: BTreeMap<String, usize> = BTreeMap::new();
        for v in raw.vms {
            let name = v.name.get_ref().clone();
            if vm_index.insert(name.clone(), plan.vms.len()).is_some()
                || node_index.contains_key(&name)
            {
                return cx.err(v.name.span(), format!("VM name {name:?} is already used"));
            }
            let hypervisor = hyper(&v.hypervisor, "hypervisor")?;
            let page_size = parse_page_size(cx, &v.page_size)?;
            let memory = parse_memory(cx, &v.memory, page_size)?;
            let pages = (memory / page_size as u64) as usize;
            let dirty_rate = match &v.dirty_rate {
                None => 0.0,
                Some(r) if r.get_ref().is_finite() && *r.get_ref() >= 0.0 => *r.get_ref(),
                Some(r) => {
                    return cx.err(r.span(), "dirty_rate must be pages per second, at least 0")
                }
            };
            let model = match v.dirty.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
                None | Some(("uniform", _)) => DirtyModel::Uniform,
                Some(("hot-set", span)) => {
                    let Some(h) = &v.hot_set else {
                        return cx.err(span, "dirty = \"hot-set\" needs hot_set = SIZE");
                    };
                    match parse_size(h.get_ref()) {
                        Some(b) if b >= page_size as u64 && b <= memory => DirtyModel::HotSet {
                            pages: (b / page_size as u64) as usize,
                            share: 0.9,
                        },
                        _ => {
                            return cx.err(
                                h.span(),
                                format!(
                                    "hot_set {:?} must be a size between a page and the memory",
                                    h.get_ref()
                                ),
                            )
                        }
                    }
                }
                Some(("zipf", _)) => DirtyModel::Zipf {
                    s: v.zipf.as_ref().map_or(1.0, |z| *z.get_ref()),
                },
                Some((other, span)) => {
                    return cx.err(
                        span,
                        format!("dirty {other:?} is not uniform, hot-set or zipf"),
                    )
                }
            };
            let service = match v.service.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
                None | Some(("none", _)) => ServiceSpec::None,
                Some(("stream", _)) => {
                    let bytes = match &v.bytes {
                        None => 10_000_000,
                        Some(b) => match parse_size(b.get_ref()) {
                            Some(n) if n > 0 => n,
                            _ => {
                                return cx.err(
                                    b.span(),
                                    format!("bytes {:?} is not a size like \"20MB\"", b.get_ref()),
                                )
                            }
                        },
                    };
                    let rate = match &v.rate {
                        None => None,
                        Some(r) => match parse_bandwidth(r.get_ref()) {
                            Some(bps) => Some((bps / 8).max(1)),
                            None => {
                                return cx.err(
                                    r.span(),
                                    format!(
                                        "rate {:?} is not a bandwidth like \"20Mbps\"",
                                        r.get_ref()
                                    ),
                                )
                            }
                        },
                    };
                    ServiceSpec::StreamSource { bytes, rate }
                }
                Some(("datagrams", _)) => ServiceSpec::DatagramSink,
                Some((other, span)) => {
                    return cx.err(
                        span,
                        format!("service {other:?} is not stream, datagrams or none"),
                    )
                }
            };
            let service_name = match &v.service_name {
                None => None,
                Some(n) => {
                    if !has_name_server {
                        return cx.err(n.span(), "service_name needs a [name_server]");
                    }
                    if xia_stack::naming::check_name(n.get_ref()).is_err() {
                        return cx.err(n.span(), format!("service_name {:?} is not a valid name (lowercase letters, digits, . - _)", n.get_ref()));
                    }
                    Some(n.get_ref().clone())
                }
            };
            let image = match &v.image {
                None => None,
                Some(n) => match plan.images.iter().find(|x| &x.name == n.get_ref()) {
                    Some(x) => Some(x.image),
                    None => {
                        return cx.err(
                            n.span(),
                            format!("unknown image {:?} (define it with [[image]])", n.get_ref()),
                        )
                    }
                },
            };
            plan.vms.push(VmSpec {
                image,
                identity: derived_identity(Principal::HID, &format!("vm {name}")),
                service_key: derived_identity(Principal::SID, &format!("vm service {name}")),
                name,
                hypervisor,
                pages,
                page_size,
                dirty_rate,
                model,
                service,
                service_name,
            });
        }
        let find_vm = |s: &Spanned<String>| -> Result<usize, TopologyError> {
            vm_index.get(s.get_ref()).copied().map_or_else(
                || {
                    cx.err(
                        s.span(),
                        format!("unknown VM {:?} (define it with [[vm]])", s.get_ref()),
                    )
                },
                Ok,
            )
        };
        let time = |s: &Spanned<String>, what: &str| -> Result<Duration, TopologyError> {
            parse_duration(s.get_ref()).map_or_else(
                || {
                    cx.err(
                        s.span(),
                        format!("{what} {:?} is not a time like \"1.5s\"", s.get_ref()),
                    )
                },
                Ok,
            )
        };
        for m in raw.migrations {
            let vm = find_vm(&m.vm)?;
            let to = hyper(&m.to, "to")?;
            let mut config = SourceConfig::default();
            if let Some(s) = &m.mode {
                config.mode = match s.get_ref().parse::<Mode>() {
                    Ok(mode) => mode,
                    Err(e) => return cx.err(s.span(), e),
                };
            }
            if let Some(s) = &m.downtime_target {
                config.downtime_target = time(s, "downtime_target")?;
            }
            if let Some(s) = &m.max_bandwidth {
                config.max_bandwidth = match parse_bandwidth(s.get_ref()) {
                    Some(bps) => Some(bps as f64 / 8.0),
                    None => {
                        return cx.err(
                            s.span(),
                            format!(
                                "max_bandwidth {:?} is not a bandwidth like \"1Gbps\"",
                                s.get_ref()
                            ),
                        )
                    }
                };
            }
            if m.deltas == Some(true) {
                config.delta_cache = DEFAULT_DELTA_CACHE;
            }
            if let Some(a) = m.auto_converge {
                config.auto_converge = a;
            }
            config.dedup = m.dedup.unwrap_or(false);
            if let Some(r) = &m.max_rounds {
                config.max_rounds = match u32::try_from(*r.get_ref()) {
                    Ok(n) if n >= 1 => n,
                    _ => return cx.err(r.span(), "max_rounds must be at least 1"),
                };
            }
            let fault = match &m.fault {
                Some(f) => Some(FaultSpec::parse(cx, f)?),
                None => None,
            };
            plan.migrations.push(MigrationSpec {
                vm,
                to,
                at: time(&m.at, "at")?,
                config,
                fault,
            });
        }
        for c in raw.clients {
            let Some(&host) = node_index.get(c.host.get_ref()) else {
                return cx.err(
                    c.host.span(),
                    format!("unknown host {:?}", c.host.get_ref()),
                );
            };
            if hypervisor_nodes.contains(&host) {
                return cx.err(c.host.span(), "clients run on plain hosts, not hypervisors");
            }
            let vm = find_vm(&c.vm)?;
            let by_name = c.by_name.unwrap_or(false);
            if by_name && plan.vms[vm].service_name.is_none() {
                return cx.err(c.vm.span(), "by_name needs the VM's service_name");
            }
            let kind = match c.kind.get_ref().as_str() {
                "download" => {
                    if !matches!(plan.vms[vm].service, ServiceSpec::StreamSource { .. }) {
                        return cx.err(
                            c.kind.span(),
                            "a download needs a VM with service = \"stream\"",
                        );
                    }
                    ClientKind::Download
                }
                "datagrams" => {
                    if plan.vms[vm].service != ServiceSpec::DatagramSink {
                        return cx.err(
                            c.kind.span(),
                            "datagrams need a VM with service = \"datagrams\"",
                        );
                    }
                    let count = c.count.as_ref().map_or(Ok(1000), |n| {
                        match u32::try_from(*n.get_ref()) {
                            Ok(v) if v > 0 => Ok(v),
                            _ => cx.err(n.span(), "count must be a positive number"),
                        }
                    })?;
                    let interval = match &c.interval {
                        None => Duration::from_millis(10),
                        Some(s) => time(s, "interval")?,
                    };
                    let size = c.size.as_ref().map_or(Ok(200), |n| {
                        match usize::try_from(*n.get_ref()) {
                            Ok(v) if (8..=1400).contains(&v) => Ok(v),
                            _ => cx.err(n.span(), "size must be 8 to 1400 bytes"),
                        }
                    })?;
                    ClientKind::Datagrams {
                        count,
                        interval,
                        size,
                    }
                }
                other => {
                    return cx.err(
                        c.kind.span(),
                        format!("client kind {other:?} is not download or datagrams"),
                    )
                }
            };
            plan.clients.push(ClientSpec {
                host,
                vm,
                at: time(&c.at, "at")?,
                by_name,
                kind,
            });
        }
        Ok(plan)
    }
}

/// Downloads a VM's stream service and checks every byte.
#[derive(Debug)]
pub struct Download {
    target: crate::topology::Target,
    expect: u64,
    socket: Option<XStream>,
    /// Bytes received.
    pub received: u64,
    /// Bytes that were not the pattern's.
    pub corrupt: u64,
    /// When the first byte came.
    pub first: Option<Instant>,
    /// When the last byte (and the end of the stream) came.
    pub finished: Option<Instant>,
    last: Option<Instant>,
    /// The longest time without new bytes, and when it ended.
    pub max_gap: (Duration, Option<Instant>),
    /// How often the server's DAG changed (signed MIGRATEs taken).
    pub peer_moves: u32,
    /// How the connection failed, if it did.
    pub error: Option<String>,
}

impl Download {
    /// A download of `expect` bytes from `target`.
    pub fn new(target: crate::topology::Target, expect: u64) -> Download {
        Download {
            target,
            expect,
            socket: None,
            received: 0,
            corrupt: 0,
            first: None,
            finished: None,
            last: None,
            max_gap: (Duration::ZERO, None),
            peer_moves: 0,
            error: None,
        }
    }

    /// Woken at the start: connects.
    pub fn wake(&mut self, now: Instant, host: &mut Host) -> Option<Instant> {
        if self.socket.is_none() {
            match XStream::connect(host, now, self.target.clone()) {
                Ok(s) => self.socket = Some(s),
                Err(e) => self.error = Some(e.to_string()),
            }
        }
        None
    }

    /// Offers a host event; `true` if it was this client's.
    pub fn on_event(&mut self, now: Instant, e: &HostEvent, host: &mut Host) -> bool {
        let Some(s) = self.socket.filter(|s| s.matches(e)) else {
            return false;
        };
        match e {
            HostEvent::Stream {
                event: StreamEvent::PeerMoved(_),
                ..
            } => self.peer_moves += 1,
            HostEvent::Stream {
                event: StreamEvent::Error(err),
                ..
            } => self.error = Some(err.to_string()),
            HostEvent::Resolved {
                result: Err(err), ..
            } => self.error = Some(err.to_string()),
            _ => {}
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            match s.read(host, now, &mut buf) {
                Ok(0) => {
                    if self.finished.is_none() {
                        self.finished = Some(now);
                        let _ = s.close(host, now);
                    }
                    break;
                }
                Ok(n) => {
                    self.corrupt += stream_mismatches(self.received, &buf[..n]);
                    self.received += n as u64;
                    if let Some(l) = self.last {
                        if now - l > self.max_gap.0 {
                            self.max_gap = (now - l, Some(now));
                        }
                    }
                    self.first.get_or_insert(now);
                    self.last = Some(now);
                }
                Err(_) => break,
            }
        }
        true
    }

    /// Bytes expected.
    pub fn expected(&self) -> u64 {
        self.expect
    }
}

/// Sends numbered datagrams to a VM's service (a [`FlowSender`]); when told
/// its packets were redirected, looks the service's name up again (a
/// signed record) and sends to where it says.
#[derive(Debug)]
pub struct Datagrams {
    // Until the first name lookup answers (by name), there is no flow.
    flow: Option<FlowSender>,
    socket: XDatagram,
    name: Option<String>,
    count: u32,
    interval: Duration,
    size: usize,
    resolving: Option<xia_stack::socket::Resolution>,
    /// Redirects received.
    pub redirects: u32,
    /// Times the destination changed.
    pub dst_changes: u32,
}

impl Datagrams {
    /// A sender on `socket` to `dst` (or, when `None`, to what `name`
    /// resolves to).
    pub fn new(
        socket: XDatagram,
        dst: Option<Dag>,
        name: Option<String>,
        count: u32,
        interval: Duration,
        size: usize,
    ) -> Datagrams {
        Datagrams {
            flow: dst.map(|d| FlowSender::new(socket, d, count, interval, size)),
            socket,
            name,
            count,
            interval,
            size,
            resolving: None,
            redirects: 0,
            dst_changes: 0,
        }
    }

    /// Datagrams sent.
    pub fn sent(&self) -> u32 {
        self.flow.as_ref().map_or(0, |f| f.sent)
    }

    fn resolve(&mut self, now: Instant, host: &mut Host) {
        if self.resolving.is_none() {
            if let Some(n) = &self.name {
                self.resolving = xia_stack::socket::resolve(host, now, n).ok();
            }
        }
    }

    /// Sends the next datagram; returns when to wake next.
    pub fn wake(&mut self, now: Instant, host: &mut Host) -> Option<Instant> {
        match self.flow.as_mut() {
            Some(f) => f.wake(now, host),
            None => {
                self.resolve(now, host);
                Some(now + self.interval)
            }
        }
    }

    /// Offers a host event; `true` if it was this sender's.
    pub fn on_event(&mut self, now: Instant, e: &HostEvent, host: &mut Host) -> bool {
        if let HostEvent::Error {
            socket: Some(s),
            error,
            ..
        } = e
        {
            if *s != self.socket.handle() {
                return false;
            }
            if let NetError::Redirect { .. } = error {
                self.redirects += 1;
                // The redirect is a hint (unsigned): ask the name service,
                // whose records are signed by the owner.
                self.resolve(now, host);
            }
            return true;
        }
        let Some(answer) = self.resolving.as_ref().and_then(|r| r.answer(e)) else {
            return false;
        };
        self.resolving = None;
        if let Ok(dag) = answer {
            match self.flow.as_mut() {
                Some(f) if f.dst != dag => {
                    f.dst = dag;
                    self.dst_changes += 1;
                }
                Some(_) => {}
                None => {
                    self.flow = Some(FlowSender::new(
                        self.socket,
                        dag,
                        self.count,
                        self.interval,
                        self.size,
                    ))
                }
            }
        }
        true
    }
}
