//! Daemon configuration files: one node of a topology, run as a real
//! process by `xia router --config FILE` or `xia host --config FILE`.
//!
//! The node sections are those of topology files; links name the peer's
//! UDP address instead of a node, and carry the impairments applied to
//! what this node sends on them:
//!
//! ```toml
//! [[ad]]
//! name = "A"
//!
//! [[router]]             # or [[host]], or [[hypervisor]]: exactly one node
//! name = "rA"
//! ad = "A"
//!
//! # A [[hypervisor]] (`xia hypervisor --config FILE`) runs a migration
//! # agent and the [[vm]]s listed with it (keys as in topology files); its
//! # socket is the control socket `xia migrate` talks to.
//!
//! [[image]]                # a base image (name, host, share as in topology files)
//! name = "base"            # its content derives from the name and share: the
//!                          # same in the store's and the hypervisors' configs
//! share = 0.6
//! host = "store"           # the host storing it (optional; in the store's own
//!                          # config, that host)
//! # In a [[hypervisor]]'s config: an image its [[vm]]s boot from (image = "base").
//! # In a [[host]]'s config: an image it stores and publishes by CID — the
//! # pages VMs this large booted from it start with (one [[image]] per page size):
//! memory = "64MiB"         # the largest such VM
//! page_size = 4096         # default 4096
//!
//! [daemon]
//! listen = "127.0.0.1:13781"   # UDP address of the node's links (default 0.0.0.0:13781)
//! socket = "/tmp/rA.sock"      # control socket (hosts: the application API)
//! seed = 1                     # for fresh SIDs and impairment draws
//! # Hypervisors only:
//! agent_name = "hv1"           # the agent's name in the name service (default: the
//!                              # hypervisor's name, lowercased; "" registers none)
//! log = "/var/lib/xia/hv1.migrations.log"  # the agent's write-ahead log (default:
//!                              # NAME.migrations.log next to the socket)
//! content_store = "RE AD:… HID:…"  # where incoming migrations fetch pages sent by
//!                              # CID (dedup): an image store's `AD HID`, in this
//!                              # hypervisor's AD (default: none, such pages are
//!                              # asked of the source)
//!
//! [[link]]
//! peer = "127.0.0.1:13782"     # the other end's UDP address; port i is the i-th link
//!                              # (or: interface = "eth1" — raw Ethernet, XARP; root)
//! delay = "10ms"               # optional impairments, as for topology links
//! loss = 0.01
//!
//! [routing]                    # routers: link-state (the default) with these timers
//! hello = "1s"
//!
//! [xhcp]                       # routers: beacon interval (default 1s)
//! interval = "1s"
//!
//! [name_server]
//! dag = "RE AD:… HID:… SID:…1113"   # routers: the name server to announce
//! serve = true                      # hosts: serve names
//! ```
//!
//! Identities are derived from names exactly as in topology files, so a
//! node has the same XIDs in the simulator and as a daemon.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use xia_net::impair::Impairment;
use xia_stack::dag::Dag;
use xia_stack::identity::Identity;
use xia_stack::xid::{Principal, Xid};

use crate::topology::{
    derived_identity, parse_duration, Ctx as Cx, LinkKeys, RawAd, RawHost, RawRouter, RawXhcp,
    TopologyError,
};

/// What kind of node a daemon runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaemonKind {
    /// A router.
    Router {
        /// Its 4ID, if it is an IPv4 gateway.
        ipv4: Option<std::net::Ipv4Addr>,
        /// Bytes of passing chunks to cache.
        cache_bytes: usize,
        /// ADs it never routes (`unknown_ads`, for fallback experiments).
        unknown_ads: Vec<Xid>,
    },
    /// A host.
    Host {
        /// Whether it serves names.
        serve_names: bool,
    },
    /// A hypervisor: a host that runs a migration agent and VMs
    /// ([`DaemonConfig::vms`]).
    Hypervisor {
        /// Bytes of guest memory it takes in.
        capacity: u64,
    },
}

/// One link of a daemon.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonLink {
    /// Where it goes.
    pub to: LinkTo,
    /// Impairments on what this node sends (`None`: none).
    pub impairment: Option<Impairment>,
}

/// What a link is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkTo {
    /// XIP over UDP to this address.
    Udp(SocketAddr),
    /// Raw Ethernet (EtherType 0xC0DE, XARP) on this interface.
    Ethernet(String),
}

pub use crate::topology::RoutingTimers;

/// A checked daemon configuration.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// The node's name.
    pub name: String,
    /// Its AD's name and XID.
    pub ad: (String, Xid),
    /// Its identity (its HID).
    pub identity: Identity,
    /// Router or host.
    pub kind: DaemonKind,
    /// UDP address of its links.
    pub listen: SocketAddr,
    /// Control / application socket.
    pub socket: Option<PathBuf>,
    /// Seed.
    pub seed: u64,
    /// Write every packet received and sent here (pcap, Ethernet framing
    /// with EtherType 0xC0DE, wall-clock timestamps).
    pub pcap: Option<PathBuf>,
    /// Links, in port order.
    pub links: Vec<DaemonLink>,
    /// Routers: link-state timers.
    pub routing: RoutingTimers,
    /// Routers: XHCP beacon interval.
    pub xhcp_interval: Duration,
    /// Routers: the name server to announce.
    pub name_server: Option<Dag>,
    /// Hypervisors: the VMs it starts with.
    pub vms: Vec<crate::migration::VmSpec>,
    /// Hypervisors: the name its agent registers (`None`: none).
    pub agent_name: Option<String>,
    /// Hypervisors: the agent's log file.
    pub log: Option<PathBuf>,
    /// Hypervisors: where incoming migrations fetch pages sent by CID
    /// (an image store's `AD HID`).
    pub content_store: Option<Dag>,
    /// Hosts: the images whose pages it publishes by CID (an image store).
    pub images: Vec<crate::migration::ImageExtent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    ad: Vec<RawAd>,
    #[serde(default)]
    router: Vec<RawRouter>,
    #[serde(default)]
    host: Vec<RawHost>,
    #[serde(default)]
    hypervisor: Vec<crate::migration::RawHypervisor>,
    #[serde(default)]
    vm: Vec<crate::migration::RawVm>,
    #[serde(default)]
    image: Vec<RawImage>,
    daemon: Option<RawDaemon>,
    #[serde(default)]
    link: Vec<RawLink>,
    routing: Option<RawRouting>,
    xhcp: Option<RawXhcp>,
    name_server: Option<RawNameServer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    listen: Option<Spanned<String>>,
    socket: Option<Spanned<String>>,
    seed: Option<Spanned<i64>>,
    pcap: Option<Spanned<String>>,
    agent_name: Option<Spanned<String>>,
    log: Option<Spanned<String>>,
    content_store: Option<Spanned<String>>,
}

/// A topology's `[[image]]` (name, host, share), and for an image store
/// how much of it to publish.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    name: Spanned<String>,
    host: Option<Spanned<String>>,
    share: Option<Spanned<f64>>,
    memory: Option<Spanned<String>>,
    page_size: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    peer: Option<Spanned<String>>,
    interface: Option<Spanned<String>>,
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
struct RawRouting {
    protocol: Option<Spanned<String>>,
    hello: Option<Spanned<String>>,
    dead: Option<Spanned<String>>,
    refresh: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNameServer {
    dag: Option<Spanned<String>>,
    serve: Option<Spanned<bool>>,
}

/// A peer or listen address; the port defaults to 13781.
fn addr(cx: &Cx, s: &Spanned<String>, what: &str) -> Result<SocketAddr, TopologyError> {
    let text = s.get_ref();
    let with_port = if text
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !text.ends_with(']')
    {
        text.clone()
    } else {
        format!("{text}:{}", xia_net::udp::DEFAULT_PORT)
    };
    match with_port.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => Ok(a),
        _ => cx.err(
            s.span(),
            format!("{what} {text:?} is not an address like \"192.0.2.1:13781\""),
        ),
    }
}

/// An AD: a name defined with `[[ad]]` (derived as in topologies) or an
/// XID written out.
fn ad_xid(cx: &Cx, ads: &[RawAd], name: &Spanned<String>) -> Result<Xid, TopologyError> {
    if ads.iter().any(|a| a.name.get_ref() == name.get_ref()) {
        return Ok(derived_identity(Principal::AD, &format!("ad {}", name.get_ref())).xid());
    }
    match name.get_ref().parse::<Xid>() {
        Ok(x) if x.principal() == Principal::AD => Ok(x),
        _ => cx.err(
            name.span(),
            format!(
                "unknown AD {:?} (define it with [[ad]] or write AD:<40 hex>)",
                name.get_ref()
            ),
        ),
    }
}

/// The images a host stores: what it publishes of each, checked. An
/// image may come once per page size (VMs of two page sizes booted from
/// it), with one share.
fn store_images(
    cx: &Cx,
    node: &Spanned<String>,
    raw: &[RawImage],
) -> Result<Vec<crate::migration::ImageExtent>, TopologyError> {
    use crate::migration::{image_share, named_image, parse_memory, parse_page_size, ImageExtent};
    let mut out: Vec<(&str, ImageExtent)> = Vec::new();
    for im in raw {
        let name = im.name.get_ref();
        if let Some(h) = im.host.as_ref().filter(|h| h.get_ref() != node.get_ref()) {
            return cx.err(
                h.span(),
                format!(
                    "image {name:?} is stored on {:?}: this is {:?}'s configuration",
                    h.get_ref(),
                    node.get_ref()
                ),
            );
        }
        let share = image_share(cx, &im.share)?;
        let Some(memory) = &im.memory else {
            return cx.err(
                im.name.span(),
                format!(
                    "image {name:?}: say how many of its pages to publish with \
                     memory = SIZE (the largest VM booted from it)"
                ),
            );
        };
        let page_size = parse_page_size(cx, &im.page_size)?;
        let bytes = parse_memory(cx, memory, page_size)?;
        for (n, e) in out.iter().filter(|(n, _)| *n == name.as_str()) {
            if e.image.share != share {
                return cx.err(
                    im.share.as_ref().map_or(im.name.span(), |s| s.span()),
                    format!(
                        "image {n:?} is given two shares ({} and {share})",
                        e.image.share
                    ),
                );
            }
            if e.page_size == page_size {
                return cx.err(
                    im.name.span(),
                    format!(
                        "image {n:?} is given twice with page_size {page_size} \
                         (one [[image]] per page size)"
                    ),
                );
            }
        }
        out.push((
            name,
            ImageExtent {
                image: named_image(name, share),
                pages: (bytes / page_size as u64) as usize,
                page_size,
            },
        ));
    }
    Ok(out.into_iter().map(|(_, e)| e).collect())
}

impl DaemonConfig {
    /// Reads a daemon configuration file.
    pub fn load(path: &Path) -> Result<DaemonConfig, TopologyError> {
        let (file, text) = crate::topology::read_config(path)?;
        DaemonConfig::parse(&file, &text)
    }

    /// Parses a daemon configuration.
    pub fn parse(file: &str, text: &str) -> Result<DaemonConfig, TopologyError> {
        let cx = Cx { file, text };
        let raw: Raw = cx.toml()?;
        let mut vms = Vec::new();
        let (name, ad_name, kind) = match (
            raw.router.as_slice(),
            raw.host.as_slice(),
            raw.hypervisor.as_slice(),
        ) {
            ([r], [], []) => {
                let ipv4 = match &r.ipv4 {
                    None => None,
                    Some(s) => match s.get_ref().parse() {
                        Ok(a) => Some(a),
                        Err(_) => {
                            return cx.err(
                                s.span(),
                                format!("ipv4 {:?} is not a dotted-quad address", s.get_ref()),
                            )
                        }
                    },
                };
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
                let mut unknown_ads = Vec::new();
                for a in &r.unknown_ads {
                    unknown_ads.push(ad_xid(&cx, &raw.ad, a)?);
                }
                (
                    &r.name,
                    &r.ad,
                    DaemonKind::Router {
                        ipv4,
                        cache_bytes,
                        unknown_ads,
                    },
                )
            }
            ([], [], [h]) => {
                let index = std::iter::once((h.name.get_ref().clone(), 0)).collect();
                // A hypervisor's images are those its VMs boot from; what a
                // store publishes is the store's business.
                let store_only = raw.image.iter().find_map(|im| {
                    let memory = im.memory.as_ref().map(|m| m.span());
                    memory.or(im.page_size.as_ref().map(|p| p.span()))
                });
                if let Some(span) = store_only {
                    return cx.err(
                        span,
                        "memory and page_size say what an image store publishes: \
                         they go in the store's [[host]] config, not a hypervisor's",
                    );
                }
                let images: Vec<_> = raw
                    .image
                    .iter()
                    .map(|im| {
                        let (name, share) = (im.name.clone(), im.share.clone());
                        crate::migration::RawImage::for_daemon(name, share)
                    })
                    .collect();
                // The store is no node of this file: every image is put on
                // node 0 (this hypervisor), which only the simulator's
                // stores would read.
                let image_hosts = vec![0; images.len()];
                let plan = crate::migration::MigrationPlan::parse(
                    &cx,
                    crate::migration::Raw {
                        hypervisors: &raw.hypervisor,
                        vms: &raw.vm,
                        migrations: &[],
                        clients: &[],
                        images: &images,
                        image_hosts: &image_hosts,
                    },
                    &[0],
                    &index,
                    // The name server is learnt from the router's beacons.
                    true,
                )?;
                vms = plan.vms;
                let capacity = plan.hypervisors.first().map_or(4 << 30, |h| h.capacity);
                (&h.name, &h.ad, DaemonKind::Hypervisor { capacity })
            }
            ([], [h], []) => {
                let serve_names = raw
                    .name_server
                    .as_ref()
                    .and_then(|n| n.serve.as_ref())
                    .is_some_and(|s| *s.get_ref());
                (&h.name, &h.ad, DaemonKind::Host { serve_names })
            }
            _ => {
                return Err(TopologyError {
                    file: file.to_string(),
                    line: 1,
                    message: format!(
                        "a daemon runs exactly one node: found {} [[router]], {} [[host]] and {} [[hypervisor]]",
                        raw.router.len(),
                        raw.host.len(),
                        raw.hypervisor.len()
                    ),
                })
            }
        };
        let ad = ad_xid(&cx, &raw.ad, ad_name)?;
        let images = match kind {
            DaemonKind::Host { .. } => store_images(&cx, name, &raw.image)?,
            DaemonKind::Router { .. } => match raw.image.first() {
                Some(im) => {
                    return cx.err(
                        im.name.span(),
                        "[[image]] is for image stores ([[host]]) and hypervisors, not routers",
                    )
                }
                None => Vec::new(),
            },
            DaemonKind::Hypervisor { .. } => Vec::new(),
        };
        let identity = derived_identity(Principal::HID, &format!("node {}", name.get_ref()));
        let daemon = raw.daemon.as_ref();
        let listen = match daemon.and_then(|d| d.listen.as_ref()) {
            Some(s) => addr(&cx, s, "listen")?,
            None => SocketAddr::from(([0, 0, 0, 0], xia_net::udp::DEFAULT_PORT)),
        };
        let socket = daemon
            .and_then(|d| d.socket.as_ref())
            .map(|s| PathBuf::from(s.get_ref()));
        let seed = match daemon.and_then(|d| d.seed.as_ref()) {
            None => 1,
            Some(s) if *s.get_ref() >= 0 => *s.get_ref() as u64,
            Some(s) => return cx.err(s.span(), "seed must be 0 or more"),
        };
        let mut links = Vec::new();
        for l in &raw.link {
            let to = match (&l.peer, &l.interface) {
                (Some(p), None) => {
                    let peer = addr(&cx, p, "peer")?;
                    if links.iter().any(|k: &DaemonLink| k.to == LinkTo::Udp(peer)) {
                        return cx.err(p.span(), format!("peer {peer} is named by two links"));
                    }
                    LinkTo::Udp(peer)
                }
                (None, Some(i)) => {
                    let name = i.get_ref().clone();
                    if links
                        .iter()
                        .any(|k: &DaemonLink| k.to == LinkTo::Ethernet(name.clone()))
                    {
                        return cx.err(
                            i.span(),
                            format!("interface {name:?} is named by two links"),
                        );
                    }
                    LinkTo::Ethernet(name)
                }
                _ => return cx.err(
                    l.peer
                        .as_ref()
                        .or(l.interface.as_ref())
                        .map_or(0..0, |s| s.span()),
                    "a link has either peer = \"ADDRESS\" (UDP) or interface = \"NAME\" (Ethernet)",
                ),
            };
            let keys = LinkKeys {
                bandwidth: &l.bandwidth,
                delay: &l.delay,
                queue: &l.queue,
                loss: &l.loss,
                jitter: &l.jitter,
                reorder: &l.reorder,
                duplicate: &l.duplicate,
            };
            // No keys, no impairment; any key, the rest unlimited.
            let impairment = if keys.any() {
                Some(cx.impairment(&keys, u64::MAX, Duration::ZERO)?)
            } else {
                None
            };
            links.push(DaemonLink { to, impairment });
        }
        let routing = match &raw.routing {
            None => RoutingTimers::default(),
            Some(r) => {
                if let Some(p) = &r.protocol {
                    if p.get_ref() != "link-state" {
                        return cx.err(
                            p.span(),
                            format!(
                                "routing protocol {:?}: daemons run \"link-state\"",
                                p.get_ref()
                            ),
                        );
                    }
                }
                let anchor = r.protocol.as_ref().map_or(0..0, |p| p.span());
                cx.routing_timers(&r.hello, &r.dead, &r.refresh, anchor)?
            }
        };
        let xhcp_interval = match &raw.xhcp {
            None => Duration::from_secs(1),
            Some(x) => match parse_duration(x.interval.get_ref()) {
                Some(d) if !d.is_zero() => d,
                _ => {
                    return cx.err(
                        x.interval.span(),
                        format!(
                            "interval {:?} is not a positive duration",
                            x.interval.get_ref()
                        ),
                    )
                }
            },
        };
        let name_server = match raw.name_server.as_ref().and_then(|n| n.dag.as_ref()) {
            None => None,
            Some(s) => match s.get_ref().parse::<Dag>() {
                Ok(d) => Some(d),
                Err(e) => return cx.err(s.span(), format!("name server DAG: {e}")),
            },
        };
        let pcap = daemon
            .and_then(|d| d.pcap.as_ref())
            .map(|s| PathBuf::from(s.get_ref()));
        let hypervisor = matches!(kind, DaemonKind::Hypervisor { .. });
        let raw_name = daemon.and_then(|d| d.agent_name.as_ref());
        let raw_log = daemon.and_then(|d| d.log.as_ref());
        let raw_store = daemon.and_then(|d| d.content_store.as_ref());
        if !hypervisor {
            if let Some(s) = raw_name.or(raw_log).or(raw_store) {
                return cx.err(
                    s.span(),
                    "agent_name, log and content_store are for hypervisors ([[hypervisor]])",
                );
            }
        }
        let content_store = match raw_store {
            None => None,
            Some(s) => match s.get_ref().parse::<Dag>() {
                // The agent fetches `RE ( AD HID ) CID`: it needs both.
                Ok(d)
                    if d.nodes_of_type(Principal::AD).next().is_some()
                        && d.nodes_of_type(Principal::HID).next().is_some() =>
                {
                    Some(d)
                }
                Ok(d) => {
                    return cx.err(
                        s.span(),
                        format!(
                            "content_store {} is not a host: write the image store's `AD HID`",
                            d.to_line()
                        ),
                    )
                }
                Err(e) => return cx.err(s.span(), format!("content_store: {e}")),
            },
        };
        let agent_name = match raw_name {
            _ if !hypervisor => None,
            // The hypervisor's name, if a name may be that.
            None => {
                let n = name.get_ref().to_ascii_lowercase();
                xia_stack::naming::check_name(&n).is_ok().then_some(n)
            }
            Some(s) if s.get_ref().is_empty() => None,
            Some(s) => match xia_stack::naming::check_name(s.get_ref()) {
                Ok(()) => Some(s.get_ref().clone()),
                Err(e) => return cx.err(s.span(), format!("agent_name: {e}")),
            },
        };
        let log = match raw_log {
            _ if !hypervisor => None,
            Some(s) if s.get_ref().is_empty() => return cx.err(s.span(), "log must name a file"),
            Some(s) => Some(PathBuf::from(s.get_ref())),
            // Next to the control socket, else in the working directory.
            None => {
                let file = format!("{}.migrations.log", name.get_ref());
                Some(match socket.as_ref().and_then(|s| s.parent()) {
                    Some(dir) => dir.join(file),
                    None => PathBuf::from(file),
                })
            }
        };
        Ok(DaemonConfig {
            agent_name,
            log,
            content_store,
            images,
            pcap,
            name: name.get_ref().clone(),
            ad: (ad_name.get_ref().clone(), ad),
            identity,
            kind,
            listen,
            socket,
            seed,
            links,
            routing,
            xhcp_interval,
            name_server,
            vms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTER: &str = r#"
[[ad]]
name = "A"

[[router]]
name = "rA"
ad = "A"

[daemon]
listen = "127.0.0.1:14000"
socket = "/tmp/rA.sock"

[[link]]
peer = "127.0.0.1:14001"
delay = "10ms"
loss = 0.01

[[link]]
peer = "127.0.0.1"
"#;

    #[test]
    fn a_router_config_gives_the_topology_identities() {
        let c = DaemonConfig::parse("rA.toml", ROUTER).unwrap();
        assert_eq!(c.name, "rA");
        assert_eq!(
            c.identity.xid(),
            derived_identity(Principal::HID, "node rA").xid()
        );
        assert_eq!(c.ad.1, derived_identity(Principal::AD, "ad A").xid());
        assert_eq!(c.links.len(), 2);
        assert!(matches!(c.links[1].to, LinkTo::Udp(a) if a.port() == xia_net::udp::DEFAULT_PORT));
        let imp = c.links[0].impairment.as_ref().unwrap();
        assert_eq!((imp.delay, imp.loss), (Duration::from_millis(10), 0.01));
        assert!(c.links[1].impairment.is_none());
        assert!(matches!(c.kind, DaemonKind::Router { .. }));
    }

    const HYPERVISOR: &str = r#"
[[ad]]
name = "A"

[[hypervisor]]
name = "hvA"
ad = "A"

[daemon]
socket = "/run/xia/hvA.sock"
"#;

    #[test]
    fn a_hypervisor_registers_its_name_and_logs_next_to_its_socket() {
        let c = DaemonConfig::parse("hv.toml", HYPERVISOR).unwrap();
        assert_eq!(c.agent_name.as_deref(), Some("hva"));
        assert_eq!(
            c.log.as_deref(),
            Some(Path::new("/run/xia/hvA.migrations.log"))
        );
        let with = |extra: &str| DaemonConfig::parse("hv.toml", &format!("{HYPERVISOR}{extra}"));
        let c = with("agent_name = \"\"\nlog = \"/var/hv.log\"\n").unwrap();
        assert_eq!(c.agent_name, None);
        assert_eq!(c.log.as_deref(), Some(Path::new("/var/hv.log")));
        let e = with("agent_name = \"Not A Name\"\n").unwrap_err();
        assert_eq!(e.line, 11, "{e}");
        assert!(e.message.contains("agent_name"), "{e}");
        // Routers and hosts have neither.
        let c = DaemonConfig::parse("rA.toml", ROUTER).unwrap();
        assert_eq!((c.agent_name, c.log), (None, None));
        let e = DaemonConfig::parse(
            "rA.toml",
            &ROUTER.replace("[daemon]\n", "[daemon]\nlog = \"x.log\"\n"),
        )
        .unwrap_err();
        assert!(e.message.contains("for hypervisors"), "{e}");
    }

    const STORE: &str = r#"
[[ad]]
name = "B"

[[host]]
name = "store"
ad = "B"

[[image]]
name = "base"
host = "store"
share = 0.6
memory = "1MiB"

[[image]]
name = "base"
share = 0.6
memory = "2MiB"
page_size = 8192
"#;

    #[test]
    fn an_image_store_publishes_what_the_simulator_s_store_does() {
        let c = DaemonConfig::parse("store.toml", STORE).unwrap();
        let image = crate::migration::named_image("base", 0.6);
        assert_eq!(
            c.images,
            [
                crate::migration::ImageExtent {
                    image,
                    pages: 256,
                    page_size: 4096
                },
                crate::migration::ImageExtent {
                    image,
                    pages: 256,
                    page_size: 8192
                }
            ]
        );
        let pages: Vec<_> = crate::migration::published_pages(c.images.clone()).collect();
        assert!(pages.iter().all(|(m, i, _)| m.covers(*i)));
        assert!((200..400).contains(&pages.len()), "{}", pages.len());
        assert_eq!(c.content_store, None);
    }

    #[test]
    fn bad_images_and_content_stores_name_their_line() {
        let store = |from: &str, to: &str| {
            assert!(STORE.contains(from), "{from}");
            DaemonConfig::parse("store.toml", &STORE.replacen(from, to, 1)).unwrap_err()
        };
        let e = store("host = \"store\"", "host = \"other\"");
        assert_eq!(e.line, 11, "{e}");
        assert!(e.message.contains("stored on \"other\""), "{e}");
        let e = store("memory = \"1MiB\"\n", "");
        assert_eq!(e.line, 10, "{e}");
        assert!(e.message.contains("memory = SIZE"), "{e}");
        let e = store("memory = \"1MiB\"", "memory = \"1000B\"");
        assert_eq!(e.line, 13, "{e}");
        assert!(e.message.contains("multiple of the page size"), "{e}");
        let e = store("share = 0.6", "share = 1.5");
        assert_eq!(e.line, 12, "{e}");
        assert!(e.message.contains("share must be 0 to 1"), "{e}");
        let e = store("page_size = 8192", "page_size = 4096");
        assert_eq!(e.line, 16, "{e}");
        assert!(e.message.contains("one [[image]] per page size"), "{e}");
        let e = store(
            "share = 0.6\nmemory = \"2MiB\"",
            "share = 0.5\nmemory = \"2MiB\"",
        );
        assert_eq!(e.line, 17, "{e}");
        assert!(e.message.contains("two shares"), "{e}");
        let e = DaemonConfig::parse(
            "rA.toml",
            &format!("{ROUTER}\n[[image]]\nname = \"base\"\nmemory = \"1MiB\"\n"),
        )
        .unwrap_err();
        assert!(e.message.contains("not routers"), "{e}");

        // A hypervisor: images its VMs boot from, and where it fetches.
        let hv = format!(
            "{HYPERVISOR}content_store = \"RE AD:{ad} HID:{hid}\"\n\n[[image]]\nname = \"base\"\nshare = 0.6\n\n[[vm]]\nname = \"vm1\"\nhypervisor = \"hvA\"\nmemory = \"1MiB\"\nimage = \"base\"\n",
            ad = "11".repeat(20),
            hid = "22".repeat(20)
        );
        let c = DaemonConfig::parse("hv.toml", &hv).unwrap();
        assert_eq!(
            c.vms[0].image,
            Some(crate::migration::named_image("base", 0.6))
        );
        let store = c.content_store.unwrap();
        assert_eq!(store.nodes_of_type(Principal::HID).count(), 1);
        let bad = |from: &str, to: &str| {
            assert!(hv.contains(from), "{from}");
            DaemonConfig::parse("hv.toml", &hv.replacen(from, to, 1)).unwrap_err()
        };
        let e = bad("image = \"base\"", "image = \"nope\"");
        assert_eq!(e.line, 21, "{e}");
        assert!(e.message.contains("unknown image \"nope\""), "{e}");
        let e = bad("share = 0.6\n", "share = 0.6\nmemory = \"1MiB\"\n");
        assert_eq!(e.line, 16, "{e}");
        assert!(e.message.contains("store's [[host]] config"), "{e}");
        let e = bad("content_store = \"RE AD:", "content_store = \"RE XD:");
        assert_eq!(e.line, 11, "{e}");
        assert!(e.message.contains("content_store"), "{e}");
        let e = bad(&format!(" HID:{}", "22".repeat(20)), "");
        assert_eq!(e.line, 11, "{e}");
        assert!(e.message.contains("is not a host"), "{e}");
        let e = DaemonConfig::parse(
            "store.toml",
            &format!("{STORE}\n[daemon]\ncontent_store = \"x\"\n"),
        )
        .unwrap_err();
        assert!(e.message.contains("for hypervisors"), "{e}");
    }

    #[test]
    fn bad_configs_name_their_line() {
        let e = DaemonConfig::parse("x.toml", &ROUTER.replace("14001", "99999")).unwrap_err();
        assert_eq!(e.line, 14, "{e}");
        assert!(e.message.contains("not an address"), "{e}");
        let e =
            DaemonConfig::parse("x.toml", &ROUTER.replace("ad = \"A\"", "ad = \"Z\"")).unwrap_err();
        assert!(e.message.contains("unknown AD \"Z\""), "{e}");
        let e = DaemonConfig::parse(
            "x.toml",
            &format!("{ROUTER}\n[[host]]\nname = \"h\"\nad = \"A\"\n"),
        )
        .unwrap_err();
        assert!(e.message.contains("exactly one node"), "{e}");
        let e = DaemonConfig::parse(
            "x.toml",
            &format!("{ROUTER}\n[[link]]\npeer = \"127.0.0.1:14001\"\n"),
        )
        .unwrap_err();
        assert!(e.message.contains("named by two links"), "{e}");
        let e = DaemonConfig::parse("x.toml", &ROUTER.replace("loss = 0.01", "loss = 2.0"))
            .unwrap_err();
        assert!(e.message.contains("between 0 and 1"), "{e}");
    }
}

/// Why a daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The UDP links.
    #[error(transparent)]
    Udp(#[from] xia_net::udp::UdpError),
    /// The control or application socket.
    #[error("socket {path}: {source}")]
    Socket {
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An Ethernet interface.
    #[error(transparent)]
    Ether(#[from] xia_net::ether::EtherError),
    /// The links failed while running.
    #[error("links: {0}")]
    Io(#[from] std::io::Error),
    /// The node could not be set up (a VM that does not start).
    #[error("{0}")]
    Setup(String),
    /// The hypervisor's migration log could not be read or written.
    #[error(transparent)]
    Log(#[from] crate::hypervisor_log::LogFileError),
    /// Writing the migration log failed while running: the daemon
    /// stopped sending and exited.
    #[error("stopped: {0}")]
    LogFailed(String),
}

/// Removes a Unix socket file when dropped.
struct SocketFile(Option<PathBuf>);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn bind_socket(
    path: &Option<PathBuf>,
) -> Result<(Option<tokio::net::UnixListener>, SocketFile), DaemonError> {
    let Some(p) = path else {
        return Ok((None, SocketFile(None)));
    };
    // A socket file left by a daemon that died is replaced; a live one
    // is refused.
    if std::os::unix::net::UnixStream::connect(p).is_ok() {
        return Err(DaemonError::Socket {
            path: p.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another daemon is listening there",
            ),
        });
    }
    let _ = std::fs::remove_file(p);
    let l = tokio::net::UnixListener::bind(p).map_err(|source| DaemonError::Socket {
        path: p.clone(),
        source,
    })?;
    Ok((Some(l), SocketFile(Some(p.clone()))))
}

impl DaemonConfig {
    /// Runs the node on its links until `shutdown` completes.
    pub async fn run(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), DaemonError> {
        use xia_net::clock::Clock;
        use xia_net::node::Driver;
        let peers = self
            .links
            .iter()
            .filter_map(|l| match l.to {
                LinkTo::Udp(a) => Some(a),
                LinkTo::Ethernet(_) => None,
            })
            .collect();
        let links = xia_net::udp::UdpLinks::bind(self.listen, peers)?;
        // Ports in file order: UDP peers and Ethernet interfaces mixed.
        let mut ethers = Vec::new();
        let mut order = Vec::new();
        for l in &self.links {
            match &l.to {
                LinkTo::Udp(_) => order.push(None),
                LinkTo::Ethernet(name) => {
                    order.push(Some(ethers.len()));
                    ethers.push(xia_net::ether::EtherLink::open(name)?);
                }
            }
        }
        tracing::info!(
            node = %self.name,
            hid = %self.identity.xid(),
            listen = %links.local_addr()?,
            links = self.links.len(),
            "starting"
        );
        let (listener, _file) = bind_socket(&self.socket)?;
        let clock = Clock::start();
        let ports = self.links.len() as u16;
        match &self.kind {
            DaemonKind::Router {
                ipv4,
                cache_bytes,
                unknown_ads,
            } => {
                let mut cfg = xia_router::RouterConfig::new(self.ad.1, self.identity.xid(), ports);
                cfg.xhcp_interval = Some(self.xhcp_interval);
                cfg.name_server = self.name_server.clone();
                cfg.chunk_cache = *cache_bytes;
                cfg.routing = Some(
                    self.routing
                        .link_state_config(Vec::new(), unknown_ads.clone()),
                );
                let mut router = xia_router::Router::new(cfg);
                if let Some(a) = ipv4 {
                    let _ = router
                        .tables_mut()
                        .insert(Xid::from_ipv4(*a), xia_stack::forward::Route::LOCAL);
                }
                let mut d = Driver::new(router, links, clock);
                self.wire(&mut d, ethers, &order)?;
                if let Some(l) = listener {
                    tokio::spawn(xia_net::server::serve_router(l, d.handle()));
                }
                let r = d.run(shutdown).await?;
                tracing::info!(node = %self.name, counters = %r.counters(), "stopped");
            }
            DaemonKind::Host { serve_names } => {
                let gateway = None;
                let mut cfg =
                    xia_stack::host::HostConfig::new(self.identity.clone(), self.ad.1, gateway);
                cfg.seed = self.seed;
                // An image store publishes its images' pages before it
                // joins the network, as the simulator's stores do.
                let pages: Vec<_> =
                    crate::migration::published_pages(self.images.iter().copied()).collect();
                let mut host = crate::migration::image_store_host(cfg, &pages)
                    .map_err(|e| DaemonError::Setup(format!("image store {}: {e}", self.name)))?;
                if !self.images.is_empty() {
                    tracing::info!(
                        node = %self.name,
                        images = self.images.len(),
                        pages = pages.len(),
                        "publishing image pages by CID"
                    );
                }
                if *serve_names {
                    host.serve_names(100_000);
                }
                let mut d = Driver::new(xia_net::host_node::HostNode::new(host), links, clock);
                self.wire(&mut d, ethers, &order)?;
                if let Some(l) = listener {
                    tokio::spawn(xia_net::server::serve(l, d.handle()));
                }
                let h = d.run(shutdown).await?;
                tracing::info!(node = %self.name, counters = ?h.host.counters(), "stopped");
            }
            DaemonKind::Hypervisor { capacity } => {
                use rand_core::RngCore as _;
                let setup = crate::hypervisor::AgentSetup {
                    name: &self.name,
                    identity: self.identity.clone(),
                    ad: self.ad.1,
                    gateway: None,
                    name_server: None,
                    capacity: *capacity,
                    agent_seed: rand_core::OsRng.next_u64(),
                    vm_seed: self.seed,
                    content_store: self.content_store.clone(),
                    agent_name: self
                        .agent_name
                        .clone()
                        .map(|n| (n, crate::hypervisor_log::unix_ns() / 1_000)),
                };
                // The clock's zero on the wall clock: the log's instants
                // are rebased on it.
                let zero = crate::hypervisor_log::unix_ns().saturating_sub(clock.now().as_nanos());
                let (agent, writer) = self.start_agent(&setup, zero, clock.now())?;
                tracing::info!(node = %self.name, agent = %agent.dag().to_line(), "agent");
                let mut node = crate::hypervisor::HypervisorNode::new(&self.name, agent);
                if let Some(w) = writer {
                    node = node.with_log(w, self.configured_vms());
                }
                let mut failed = node.log_failure();
                let mut d = Driver::new(node, links, clock);
                self.wire(&mut d, ethers, &order)?;
                if let Some(l) = listener {
                    tokio::spawn(crate::hypervisor::serve(l, d.handle()));
                }
                let log_failed = async {
                    if failed.wait_for(Option::is_some).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                let h = d
                    .run(async {
                        tokio::select! {
                            () = shutdown => {}
                            () = log_failed => {}
                        }
                    })
                    .await?;
                tracing::info!(node = %self.name, counters = ?h.agent.counters(), "stopped");
                if let Some(why) = h.log_failure().borrow().clone() {
                    return Err(DaemonError::LogFailed(why));
                }
            }
        }
        Ok(())
    }

    /// The names of the VMs configured.
    fn configured_vms(&self) -> std::collections::BTreeSet<String> {
        self.vms.iter().map(|v| v.name.clone()).collect()
    }

    /// A hypervisor's agent: new, or — if its log holds entries — restarted
    /// from the log ([`Agent::restart`](xia_migrate::agent::Agent::restart))
    /// with the VMs configured; and the log, rewritten compacted, open for
    /// appending. `zero`: the clock's zero, in ns since the Unix epoch.
    fn start_agent(
        &self,
        setup: &crate::hypervisor::AgentSetup<'_>,
        zero: u64,
        now: xia_stack::time::Instant,
    ) -> Result<
        (
            xia_migrate::agent::Agent,
            Option<crate::hypervisor_log::LogWriter>,
        ),
        DaemonError,
    > {
        use crate::hypervisor::{agent_config, build_agent, build_vms};
        use xia_migrate::agent::Agent;
        let vms = self.vms.iter().enumerate();
        let Some(path) = &self.log else {
            return Ok((
                build_agent(setup, vms, now).map_err(DaemonError::Setup)?,
                None,
            ));
        };
        let loaded = crate::hypervisor_log::read(path, zero)?;
        if let Some(w) = &loaded.torn {
            tracing::warn!(node = %self.name, "{w}");
        }
        // The VMs as configured, less those the file says left (they run
        // elsewhere). One whose migration the log has under way starts
        // paused, so that the restarted agent asks the destination before
        // it runs it here again.
        let log = &loaded.log;
        let mut kept = Vec::new();
        for mut vm in build_vms(setup, vms, now).map_err(DaemonError::Setup)? {
            if loaded.left.contains(&vm.name) {
                tracing::info!(node = %self.name, vm = %vm.name, "not started: it had left");
                continue;
            }
            if log.in_flight().any(|m| m.recovery.name == vm.name) {
                xia_migrate::guest::Guest::pause(&mut vm);
            }
            kept.push(vm);
        }
        let agent = if loaded.entries == 0 {
            let mut agent = Agent::new(agent_config(setup));
            for vm in kept {
                agent.add_vm(vm);
            }
            agent
        } else {
            tracing::info!(
                node = %self.name,
                log = %path.display(),
                entries = loaded.entries,
                in_flight = log.in_flight().count(),
                restarts = log.restarts() + 1,
                "restarting the agent from its log"
            );
            Agent::restart(agent_config(setup), kept, log, now)
        };
        let left = crate::hypervisor::left(&agent, &self.configured_vms());
        let writer = crate::hypervisor_log::LogWriter::create(path, loaded.log, left, zero)?;
        Ok((agent, Some(writer)))
    }

    /// A tap writing a pcap: this node's interfaces are MAC `02:58:00:00:PP:00`
    /// (port PP), each peer `02:58:00:01:PP:00`.
    fn pcap_tap(&self) -> Result<Option<xia_net::node::Tap>, DaemonError> {
        let Some(path) = &self.pcap else {
            return Ok(None);
        };
        let mut cap = crate::pcap::Capture::create_unbuffered(path).map_err(|source| {
            DaemonError::Socket {
                path: path.clone(),
                source,
            }
        })?;
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut broken = false;
        Ok(Some(Box::new(
            move |at: xia_stack::time::Instant, sent: bool, port: u16, p: &[u8]| {
                if broken {
                    return;
                }
                let (me, peer) = (
                    crate::pcap::mac(0, port.into()),
                    crate::pcap::mac(1, port.into()),
                );
                let frame = if sent {
                    crate::pcap::frame(peer, me, p)
                } else {
                    crate::pcap::frame(me, peer, p)
                };
                let ts = xia_stack::time::Instant::from_nanos(epoch + at.as_nanos());
                // A failing capture (disk full) stops capturing, not the node.
                broken = cap.write(ts, &frame).is_err();
            },
        )))
    }

    // Completes a node's driver, whatever the node: its Ethernet links,
    // the ports in file order, the links' impairments and the capture.
    fn wire<N: xia_net::node::Node>(
        &self,
        d: &mut xia_net::node::Driver<N>,
        ethers: Vec<xia_net::ether::EtherLink>,
        order: &[Option<usize>],
    ) -> Result<(), DaemonError> {
        for e in ethers {
            d.add_ethernet(e, self.identity.xid());
        }
        d.set_port_order(order);
        if let Some(t) = self.pcap_tap()? {
            d.set_tap(t);
        }
        for (i, l) in self.links.iter().enumerate() {
            if let Some(imp) = &l.impairment {
                let seed = self.seed ^ ((i as u64) << 32) ^ 0x5eed;
                d.impair(i as u16, xia_net::impair::Direction::new(imp.clone(), seed));
            }
        }
        Ok(())
    }
}
