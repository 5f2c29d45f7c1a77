//! The host stack: a sans-IO XIA end host with datagram sockets and ping.
//!
//! A host has its own HID identity and one or more interfaces, each in an
//! AD with a gateway router (set by configuration for now; XHCP later). It
//! walks DAGs with the same [`forward`](crate::forward) code as routers: its
//! tables make its ADs, its HID and its bound SIDs local and send everything
//! else to its first interface's gateway.
//!
//! Use it in quinn-proto's manner:
//! - feed received packets to [`Host::handle_packet`] with the interface
//!   and `now`;
//! - issue commands: [`Host::bind`], [`Host::send_to`], [`Host::ping`];
//! - drain [`Host::poll_transmit`] (packets to send, in order) and
//!   [`Host::poll_event`] (datagrams ready, echo replies, XCMP errors);
//!   read datagrams with [`Host::recv_from`].
//!
//! The transmit queue is bounded ([`HostConfig::queue_limit`]). A driver
//! whose NIC cannot take more may leave packets in it; streams then stop
//! handing segments over at three quarters of it (the data stays unsent
//! in the connection, as Linux's TSQ keeps it in the socket) and go on
//! from [`Host::poll_transmit`] once the driver has drained it to half
//! that. Only datagrams and control find the queue full (dropped and
//! counted in [`HostCounters::send_queue_full`]).
//!
//! Applications normally use the handles of [`crate::socket`] (`XStream`,
//! `XListener`, `XDatagram`, `XRaw`) rather than these methods directly.
//!
//! With XHCP on (the default) the host follows routers' beacons: a beacon
//! for a new AD moves the interface and raises
//! [`HostEvent::NetworkChanged`].
//!
//! The host has no timers of its own yet: datagrams and echo need none
//! (a pinger's interval and timeout belong to the application).
//!
//! A whole host moves with a migrating VM: [`Host::snapshot`] writes it
//! as bytes (keys, sockets, connections mid-transfer, queues, timers
//! relative to `now`) and [`Host::restore`] builds it again on another
//! machine, its timers rebased on that machine's clock.

mod chunks;
mod names;
mod raw;
mod snapshot;
mod streams;

use std::collections::VecDeque;
use std::time::Duration;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::dag::Dag;
use crate::forward::walk::{self, Verdict};
use crate::forward::xcmp::{echo_reply, error_reply, ErrorKind};
use crate::forward::{PortId, Route, RouteTables, Transmit};
use crate::identity::Identity;
use crate::stream::{Config as StreamConfig, StreamError, StreamEvent};
use crate::time::Instant;
use crate::wire::xcmp::{Packet as XcmpPacket, Unreachable, XcmpRepr};
use crate::wire::xdgram::XdgramRepr;
use crate::wire::xip::{NextHeader, Packet, XipRepr, DEFAULT_HOP_LIMIT};
use crate::xhcp::{Beacon, XHCP_SID};

use crate::xid::{Principal, Xid};
pub use names::{ResolveError, NO_ANSWER};
pub use raw::RawHandle;
pub use snapshot::SnapshotError;
pub use streams::{ListenerHandle, StreamHandle, StreamPhase};

/// One network attachment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InterfaceConfig {
    /// The AD this interface is in.
    pub ad: Xid,
    /// The gateway router's HID, if known.
    pub gateway: Option<Xid>,
}

/// How to build a host.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct HostConfig {
    /// The host's identity (its HID).
    pub identity: Identity,
    /// Its interfaces; interface `i` is port `i`. At least one.
    pub interfaces: Vec<InterfaceConfig>,
    /// Seed for the SIDs the host makes for unbound sockets.
    pub seed: u64,
    /// Most datagrams queued per socket (further ones are dropped).
    pub socket_queue: usize,
    /// Most packets queued for [`Host::poll_transmit`] and events queued
    /// for [`Host::poll_event`].
    pub queue_limit: usize,
    /// Listen to XHCP beacons and follow the network they announce.
    pub xhcp: bool,
    /// Settings of new stream connections.
    pub stream: StreamConfig,
    /// Most stream connections at once.
    pub max_streams: usize,
    /// Bytes of chunks the host keeps (published and fetched).
    pub chunk_store: usize,
    /// A name request unanswered this long is sent again ...
    pub name_timeout: Duration,
    /// ... up to this many times in all; then it fails.
    pub name_tries: u8,
}

impl HostConfig {
    /// A host with one interface in `ad` behind `gateway`.
    pub fn new(identity: Identity, ad: Xid, gateway: Option<Xid>) -> HostConfig {
        HostConfig {
            identity,
            interfaces: vec![InterfaceConfig { ad, gateway }],
            seed: 0,
            socket_queue: 256,
            queue_limit: 4096,
            xhcp: true,
            stream: StreamConfig::default(),
            max_streams: 1024,
            chunk_store: 64 << 20,
            name_timeout: Duration::from_secs(1),
            name_tries: 3,
        }
    }
}

/// A socket's handle.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct SocketHandle(pub usize);

/// An XCMP error reported to the application.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum NetError {
    /// Destination unreachable, as reported by the node at `from`.
    Unreachable {
        /// Why.
        reason: Unreachable,
        /// Who said so.
        from: Dag,
    },
    /// Hop limit exhausted at `from`.
    TimeExceeded {
        /// Who said so.
        from: Dag,
    },
    /// Redirected to `to` by `from`.
    Redirect {
        /// The DAG to use.
        to: Dag,
        /// Who said so.
        from: Dag,
    },
}

/// Something the application should know.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum HostEvent {
    /// A chunk fetch ended: the verified bytes, or why not.
    ChunkFetched {
        /// The id [`Host::fetch_chunk`] returned.
        id: u32,
        /// The chunk's CID.
        cid: Xid,
        /// Its bytes (checked against the CID), or the error.
        result: Result<Vec<u8>, crate::content::ContentError>,
    },
    /// A name server answered request `id`; a refusal comes as its text.
    NameAnswer {
        /// The request id [`Host::name_request`] returned.
        id: u32,
        /// The answer.
        answer: Result<crate::naming::NameResponse, String>,
    },
    /// A listener accepted a connection (take it with [`Host::accept`]).
    Incoming {
        /// The listener.
        listener: ListenerHandle,
        /// The new connection.
        stream: StreamHandle,
    },
    /// Something happened on a stream.
    Stream {
        /// The connection.
        stream: StreamHandle,
        /// What.
        event: StreamEvent,
    },
    /// XHCP moved an interface to another AD (or gateway): the host's DAG
    /// changed, its HID and SIDs did not.
    NetworkChanged {
        /// The interface.
        interface: PortId,
        /// The AD it was in.
        old_ad: Xid,
        /// The AD it is in now.
        new_ad: Xid,
        /// The new gateway router.
        gateway: Xid,
    },
    /// A datagram is waiting on this socket.
    Readable(SocketHandle),
    /// A packet is waiting on this raw socket.
    RawReadable(RawHandle),
    /// A stream opened by name ([`Host::connect_name`]) learnt its peer's
    /// DAG and sent its SYN, or its name could not be resolved.
    Resolved {
        /// The connection.
        stream: StreamHandle,
        /// The peer's DAG, or why there is none.
        result: Result<Dag, ResolveError>,
    },
    /// An XCMP echo reply arrived.
    EchoReply {
        /// From whom.
        from: Dag,
        /// Identifier and sequence number of the request.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Hop limit left on arrival.
        hop_limit: u8,
        /// Payload length.
        len: usize,
        /// Arrival time.
        at: Instant,
    },
    /// An XCMP error about a packet a socket sent (`socket` is `None` for
    /// one about an echo request or a packet no socket sent).
    Error {
        /// The socket whose packet it was about.
        socket: Option<SocketHandle>,
        /// Identifier and sequence number of the echo request it was
        /// about, if any.
        echo: Option<(u16, u16)>,
        /// What happened.
        error: NetError,
    },
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// A socket is already bound to this SID.
    #[error("{0} is already bound")]
    AddressInUse(Xid),
    /// Not a SID.
    #[error("{0} is not a SID")]
    NotASid(Xid),
    /// No such socket.
    #[error("no socket {0:?}")]
    BadSocket(SocketHandle),
    /// The payload does not fit one packet.
    #[error("payload of {0} bytes is too large for one packet")]
    TooLarge(usize),
    /// No route for the destination from this host.
    #[error("no route to {0}")]
    NoRoute(Xid),
    /// The transmit queue is full.
    #[error("transmit queue full")]
    QueueFull,
    /// A content operation failed.
    #[error("content: {0}")]
    Content(crate::content::ContentError),
    /// No name server is known (XHCP has not announced one).
    #[error("no name server known")]
    NoNameServer,
    /// No such stream.
    #[error("no stream {0:?}")]
    BadStream(StreamHandle),
    /// No such listener.
    #[error("no listener {0:?}")]
    BadListener(ListenerHandle),
    /// No such raw socket.
    #[error("no raw socket {0:?}")]
    BadRaw(RawHandle),
    /// The stream is still waiting for its peer's name to resolve.
    #[error("stream {0:?} is still resolving its peer's name")]
    Resolving(StreamHandle),
    /// The stream's peer name could not be resolved.
    #[error(transparent)]
    Resolve(ResolveError),
    /// The stream limit is reached.
    #[error("too many streams (at most {0})")]
    TooManyStreams(usize),
    /// The connection refused the command.
    #[error("stream: {0}")]
    Stream(StreamError),
}

/// Host counters.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct HostCounters {
    /// Packets received.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub received: u64,
    /// Packets sent.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub sent: u64,
    /// Datagrams delivered to sockets.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub datagrams_in: u64,
    /// Received packets dropped: malformed headers.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub malformed: u64,
    /// Received packets dropped: not for this host.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub not_for_us: u64,
    /// Received packets dropped: no socket (XCMP unreachable sent).
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub no_socket: u64,
    /// Received packets dropped: a socket or event queue was full.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub queue_full: u64,
    /// Packets this host originated and dropped: its transmit queue
    /// ([`HostConfig::queue_limit`]) was full, as when a driver's NIC
    /// holds them back faster than they come.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub send_queue_full: u64,
    /// XHCP beacons heard.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub beacons: u64,
    /// Chunk requests answered.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub chunks_served: u64,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Socket {
    sid: Xid,
    hop_limit: u8,
    rx: VecDeque<(Dag, Vec<u8>)>,
}

/// An XIA end host.
///
/// [`Host::snapshot`] and [`Host::restore`] move a whole host (for VM
/// migration); the serde implementations they use are public, but only
/// `restore` checks the state it reads and rebases its times.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Host {
    config: HostConfig,
    hid: Xid,
    tables: RouteTables,
    sockets: Vec<Option<Socket>>,
    rng: ChaCha20Rng,
    transmits: VecDeque<Transmit>,
    events: VecDeque<HostEvent>,
    counters: HostCounters,
    name_server: Option<Dag>,
    listeners: Vec<Option<streams::Listener>>,
    streams: Vec<Option<streams::Stream>>,
    // The name-server role, and the SID answers to our requests come to.
    names: Option<crate::naming::NameServer>,
    resolver: Option<Xid>,
    // Name requests awaiting an answer, by request id.
    name_pending: std::collections::BTreeMap<u32, names::Pending>,
    chunks: crate::content::ChunkCache,
    fetches: Vec<chunks::Fetch>,
    fetcher: Option<Xid>,
    raw: Vec<Option<raw::RawSocket>>,
    // Keys of SIDs this host may sign MIGRATEs for: its client streams'
    // fresh SIDs, and services' SIDs whose keys were handed over.
    sid_keys: std::collections::BTreeMap<Xid, Identity>,
    // Added to `now` (in ms) for the timestamps of our MIGRATEs, which
    // peers require to never go back: zero until a restore on a clock
    // behind the snapshot's (see `snapshot`).
    migrate_clock_ms: u64,
    // A stream stopped handing segments over because the transmit queue
    // held its streams' share (`stream_tx_limit`): `poll_transmit` lets
    // streams go on once the driver has drained it to half that, at the
    // time of the latest call that gave one (`tx_now`). Like Linux's TSQ,
    // this keeps a large window's burst in the connection's send buffer
    // (where it is still unsent) rather than dropping it at a full queue
    // when the driver's NIC holds back.
    #[serde(skip)]
    streams_held: bool,
    #[serde(skip)]
    tx_now: Instant,
}

/// The principal types a host has tables for.
const HOST_PRINCIPALS: [Principal; 5] = [
    Principal::AD,
    Principal::HID,
    Principal::SID,
    Principal::CID,
    Principal::IP,
];

/// Points every table's default at interface 0's gateway: a host sends
/// whatever is not its own to its first-hop router.
fn set_gateway(tables: &mut RouteTables, gateway: Option<Xid>) {
    let route = Route {
        action: crate::forward::Action::Forward(0),
        next_hop: gateway,
        flags: 0,
    };
    for p in HOST_PRINCIPALS {
        tables.set_default(p, Some(route));
    }
}

/// Most payload one datagram may carry: plen is 16 bits.
pub const MAX_DATAGRAM: usize = u16::MAX as usize - crate::wire::xdgram::HEADER_LEN;

impl Host {
    /// A host from its configuration.
    ///
    /// # Panics
    /// If `config.interfaces` is empty.
    pub fn new(config: HostConfig) -> Host {
        let chunk_store = config.chunk_store;
        assert!(!config.interfaces.is_empty(), "a host needs an interface");
        let hid = config.identity.xid().with_principal(Principal::HID);
        let mut tables = RouteTables::with_principals(&HOST_PRINCIPALS);
        set_gateway(&mut tables, config.interfaces[0].gateway);
        for iface in &config.interfaces {
            let _ = tables.insert(iface.ad, Route::LOCAL);
        }
        let _ = tables.insert(hid, Route::LOCAL);
        // Packets to the broadcast HID (a broadcast ping, neighbour
        // discovery) are for every host that hears them.
        let _ = tables.insert(Xid::BROADCAST_HID, Route::LOCAL);
        if config.xhcp {
            let _ = tables.insert(XHCP_SID, Route::LOCAL);
        }
        Host {
            rng: ChaCha20Rng::seed_from_u64(config.seed),
            config,
            hid,
            tables,
            sockets: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: HostCounters::default(),
            name_server: None,
            listeners: Vec::new(),
            streams: Vec::new(),
            names: None,
            resolver: None,
            name_pending: std::collections::BTreeMap::new(),
            sid_keys: std::collections::BTreeMap::new(),
            chunks: crate::content::ChunkCache::new(chunk_store),
            fetches: Vec::new(),
            fetcher: None,
            raw: Vec::new(),
            migrate_clock_ms: 0,
            streams_held: false,
            tx_now: Instant::ZERO,
        }
    }

    /// The host's HID.
    pub fn hid(&self) -> Xid {
        self.hid
    }

    /// The host's DAG on its first interface: `AD HID`.
    pub fn dag(&self) -> Dag {
        Dag::path(&[self.config.interfaces[0].ad, self.hid]).expect("two nodes")
    }

    /// Its interfaces.
    pub fn interfaces(&self) -> &[InterfaceConfig] {
        &self.config.interfaces
    }

    /// Moves interface `i` to another AD (and gateway); bound sockets keep
    /// their SIDs and get the new DAG.
    pub fn set_interface(&mut self, i: usize, iface: InterfaceConfig) {
        if let Some(old) = self.config.interfaces.get(i).cloned() {
            self.tables.remove(&old.ad);
            let _ = self.tables.insert(iface.ad, Route::LOCAL);
            if i == 0 {
                set_gateway(&mut self.tables, iface.gateway);
            }
            self.config.interfaces[i] = iface;
        }
    }

    /// Its counters.
    pub fn counters(&self) -> HostCounters {
        self.counters
    }

    /// Its route tables.
    pub fn tables(&self) -> &RouteTables {
        &self.tables
    }

    /// Opens a datagram socket bound to `sid`, or to a fresh SID (a new
    /// key pair from the host's seeded RNG) when `None`.
    pub fn bind(&mut self, sid: Option<Xid>) -> Result<SocketHandle, HostError> {
        let sid = match sid {
            Some(s) if s.principal() != Principal::SID => return Err(HostError::NotASid(s)),
            Some(s) => s,
            None => Identity::generate(Principal::SID, &mut self.rng).xid(),
        };
        if self.sockets.iter().flatten().any(|s| s.sid == sid) {
            return Err(HostError::AddressInUse(sid));
        }
        let _ = self.tables.insert(sid, Route::LOCAL);
        let socket = Socket {
            sid,
            hop_limit: DEFAULT_HOP_LIMIT,
            rx: VecDeque::new(),
        };
        let slot = self.sockets.iter().position(Option::is_none);
        let handle = match slot {
            Some(i) => {
                self.sockets[i] = Some(socket);
                i
            }
            None => {
                self.sockets.push(Some(socket));
                self.sockets.len() - 1
            }
        };
        Ok(SocketHandle(handle))
    }

    /// Closes a socket; its SID is no longer local.
    pub fn close(&mut self, h: SocketHandle) {
        if let Some(s) = self.sockets.get_mut(h.0).and_then(Option::take) {
            self.tables.remove(&s.sid);
        }
    }

    /// A socket's SID.
    pub fn socket_sid(&self, h: SocketHandle) -> Option<Xid> {
        self.socket(h).ok().map(|s| s.sid)
    }

    /// A socket's full address: `AD HID SID`.
    pub fn socket_dag(&self, h: SocketHandle) -> Option<Dag> {
        let sid = self.socket_sid(h)?;
        self.dag().append_xid(sid).ok()
    }

    fn socket(&self, h: SocketHandle) -> Result<&Socket, HostError> {
        self.sockets
            .get(h.0)
            .and_then(Option::as_ref)
            .ok_or(HostError::BadSocket(h))
    }

    /// Sends a datagram from socket `h` to `dst`.
    pub fn send_to(&mut self, h: SocketHandle, dst: &Dag, payload: &[u8]) -> Result<(), HostError> {
        if payload.len() > MAX_DATAGRAM {
            return Err(HostError::TooLarge(payload.len()));
        }
        let src = self.socket_dag(h).ok_or(HostError::BadSocket(h))?;
        let hop_limit = self.socket(h)?.hop_limit;
        self.send_datagram_with(dst, src, payload, hop_limit)
    }

    /// Sets the hop limit of the datagrams socket `h` sends (xia-core's
    /// `XOPT_HLIM`; the default is [`DEFAULT_HOP_LIMIT`]).
    pub fn set_socket_hop_limit(
        &mut self,
        h: SocketHandle,
        hop_limit: u8,
    ) -> Result<(), HostError> {
        self.sockets
            .get_mut(h.0)
            .and_then(Option::as_mut)
            .ok_or(HostError::BadSocket(h))?
            .hop_limit = hop_limit;
        Ok(())
    }

    /// The hop limit of socket `h`'s datagrams.
    pub fn socket_hop_limit(&self, h: SocketHandle) -> Option<u8> {
        self.socket(h).ok().map(|s| s.hop_limit)
    }

    /// How many datagrams wait on socket `h`.
    pub fn socket_queue_len(&self, h: SocketHandle) -> Option<usize> {
        self.socket(h).ok().map(|s| s.rx.len())
    }

    /// Sends an XCMP echo request to `dst`, with the default hop limit or
    /// `hop_limit`.
    pub fn ping(
        &mut self,
        dst: &Dag,
        ident: u16,
        seq_no: u16,
        data: &[u8],
        hop_limit: Option<u8>,
    ) -> Result<(), HostError> {
        let msg = XcmpRepr::EchoRequest {
            ident,
            seq_no,
            data,
        }
        .to_bytes();
        let mut repr = XipRepr::new(dst.clone(), self.dag(), NextHeader::Xcmp, 0);
        if let Some(h) = hop_limit {
            repr.hop_limit = h;
        }
        let pkt = repr
            .to_bytes(&msg)
            .map_err(|_| HostError::TooLarge(data.len()))?;
        self.send_packet(pkt, dst)
    }

    /// Takes the oldest datagram on socket `h`: the sender's DAG and the
    /// payload.
    pub fn recv_from(&mut self, h: SocketHandle) -> Option<(Dag, Vec<u8>)> {
        self.sockets.get_mut(h.0)?.as_mut()?.rx.pop_front()
    }

    /// Routes a packet this host originates.
    fn send_packet(&mut self, mut pkt: Vec<u8>, dst: &Dag) -> Result<(), HostError> {
        let mut checked = walk::check(&mut pkt).map_err(|_| HostError::NoRoute(*dst.intent()))?;
        match walk::route(&self.tables, &mut checked) {
            Verdict::Forward { port, next_hop } => {
                if self.transmits.len() >= self.config.queue_limit {
                    self.counters.send_queue_full += 1;
                    return Err(HostError::QueueFull);
                }
                self.counters.sent += 1;
                self.transmits.push_back(Transmit {
                    port,
                    next_hop,
                    packet: pkt,
                });
                Ok(())
            }
            // A broadcast goes out on the first interface, not back to us.
            Verdict::Deliver { .. } if *dst.intent() == Xid::BROADCAST_HID => {
                if self.transmits.len() >= self.config.queue_limit {
                    self.counters.send_queue_full += 1;
                    return Err(HostError::QueueFull);
                }
                self.counters.sent += 1;
                self.transmits.push_back(Transmit {
                    port: 0,
                    next_hop: None,
                    packet: pkt,
                });
                Ok(())
            }
            // To ourselves: loop back.
            Verdict::Deliver { .. } => {
                self.counters.sent += 1;
                self.deliver(Instant::ZERO, 0, pkt);
                Ok(())
            }
            _ => Err(HostError::NoRoute(*dst.intent())),
        }
    }

    /// Handles a packet received on interface `port` at `now`.
    pub fn handle_packet(&mut self, now: Instant, port: PortId, mut pkt: Vec<u8>) {
        self.counters.received += 1;
        let Ok(mut checked) = walk::check(&mut pkt) else {
            self.counters.malformed += 1;
            return;
        };
        match walk::route(&self.tables, &mut checked) {
            Verdict::Deliver { .. } => self.deliver(now, port, pkt),
            // The walk reached this host but found nothing bound after it
            // (the SID table's default points back out): the intent is not
            // served here.
            Verdict::Forward { .. }
                if !checked.at_entry() && checked.dst_xid(checked.current_node()) == self.hid =>
            {
                self.counters.no_socket += 1;
                self.reply_error(&pkt, ErrorKind::Unreachable(Unreachable::Intent));
            }
            // A host does not forward.
            _ => self.counters.not_for_us += 1,
        }
    }

    fn deliver(&mut self, now: Instant, port: PortId, pkt: Vec<u8>) {
        let p = Packet::new_unchecked(&pkt[..]);
        let Ok(repr) = XipRepr::parse(&p) else {
            self.counters.malformed += 1;
            return;
        };
        // Raw sockets get a copy of every packet with their next header,
        // as Linux raw sockets do; the stack still handles its own.
        let raw_taken = !self.raw.is_empty() && self.deliver_raw(&repr, p.payload());
        match repr.next_header {
            NextHeader::Xcmp => self.deliver_xcmp(now, &repr, &pkt),
            NextHeader::Xstream => self.deliver_stream(now, &repr, p.payload()),
            NextHeader::Xdgram => {
                let Ok(seg) = XdgramRepr::parse(p.payload()) else {
                    self.counters.malformed += 1;
                    return;
                };
                if self.config.xhcp && *repr.dst.intent() == XHCP_SID {
                    return self.handle_beacon(now, port, seg.payload);
                }
                if self.deliver_names(now, repr.dst.intent(), &repr.src, seg.payload) {
                    return;
                }
                if self.deliver_chunks(now, &repr, seg.payload) {
                    return;
                }
                // The socket is the first local SID on the walk: the
                // intent, or a bound SID before it.
                let target = repr
                    .dst
                    .nodes()
                    .iter()
                    .map(|n| n.xid)
                    .find(|x| x.principal() == Principal::SID && self.sid_socket(x).is_some());
                let Some(h) = target.and_then(|x| self.sid_socket(&x)) else {
                    self.counters.no_socket += 1;
                    self.reply_error(&pkt, ErrorKind::Unreachable(Unreachable::Intent));
                    return;
                };
                let limit = self.config.socket_queue;
                let sock = self.sockets[h.0].as_mut().expect("sid_socket found it");
                if sock.rx.len() >= limit {
                    self.counters.queue_full += 1;
                    return;
                }
                sock.rx.push_back((repr.src, seg.payload.to_vec()));
                self.counters.datagrams_in += 1;
                self.push_event(HostEvent::Readable(h));
            }
            _ if raw_taken => {}
            _ => {
                self.counters.no_socket += 1;
                self.reply_error(&pkt, ErrorKind::Unreachable(Unreachable::Protocol));
            }
        }
    }

    fn deliver_xcmp(&mut self, now: Instant, repr: &XipRepr, pkt: &[u8]) {
        let payload = &pkt[repr.header_len()..];
        let Ok(msg) = XcmpRepr::parse(&XcmpPacket::new_unchecked(payload)) else {
            self.counters.malformed += 1;
            return;
        };
        let from = repr.src.clone();
        let (quoted, error) = match msg {
            XcmpRepr::EchoRequest { .. } => {
                if let Some(reply) = echo_reply(pkt, &self.dag()) {
                    let dst = repr.src.clone();
                    let _ = self.send_packet(reply, &dst);
                }
                return;
            }
            XcmpRepr::EchoReply {
                ident,
                seq_no,
                data,
            } => {
                return self.push_event(HostEvent::EchoReply {
                    from,
                    ident,
                    seq_no,
                    hop_limit: repr.hop_limit,
                    len: data.len(),
                    at: now,
                });
            }
            XcmpRepr::Unreachable { reason, quoted } => {
                (quoted, NetError::Unreachable { reason, from })
            }
            XcmpRepr::TimeExceeded { quoted, .. } => (quoted, NetError::TimeExceeded { from }),
            XcmpRepr::Redirect {
                new_dst, quoted, ..
            } => (quoted, NetError::Redirect { to: new_dst, from }),
        };
        // Which of our sockets (or pings) sent the packet it is about?
        let about = XipRepr::parse_header(&Packet::new_unchecked(quoted)).ok();
        let socket = about.as_ref().and_then(|q| self.sid_socket(q.src.intent()));
        let echo = about.as_ref().and_then(|q| {
            if q.next_header != NextHeader::Xcmp {
                return None;
            }
            let body = quoted.get(q.header_len()..)?;
            // Only 8 bytes are quoted, so no checksum check is possible:
            // read the echo header fields directly.
            (body.len() >= 8 && body[0] == 8).then(|| {
                (
                    u16::from_be_bytes([body[4], body[5]]),
                    u16::from_be_bytes([body[6], body[7]]),
                )
            })
        });
        self.push_event(HostEvent::Error {
            socket,
            echo,
            error,
        });
    }

    /// A router's XHCP beacon heard on interface `port`: move the interface
    /// to the AD and gateway it names if they are new.
    fn handle_beacon(&mut self, now: Instant, port: PortId, body: &[u8]) {
        let Ok(beacon) = Beacon::parse(body) else {
            self.counters.malformed += 1;
            return;
        };
        self.counters.beacons += 1;
        if beacon.name_server.is_some() {
            self.name_server = beacon.name_server.clone();
        }
        let i = port as usize;
        let Some(old) = self.config.interfaces.get(i).cloned() else {
            return;
        };
        if old.ad == beacon.ad && old.gateway == Some(beacon.gateway) {
            return;
        }
        self.set_interface(
            i,
            InterfaceConfig {
                ad: beacon.ad,
                gateway: Some(beacon.gateway),
            },
        );
        self.rebind_streams(now);
        // Tell the new gateway this HID is here, so it can route to it.
        let reg = crate::xhcp::Registration::sign(&self.config.identity, beacon.ad);
        let packet = reg.packet(beacon.gateway, self.dag());
        let dst = Dag::path(&[beacon.ad, beacon.gateway, XHCP_SID]).expect("three nodes");
        let _ = self.send_packet(packet, &dst);
        self.push_event(HostEvent::NetworkChanged {
            interface: port,
            old_ad: old.ad,
            new_ad: beacon.ad,
            gateway: beacon.gateway,
        });
    }

    /// The name server's DAG, as the last XHCP beacon told it.
    pub fn name_server(&self) -> Option<&Dag> {
        self.name_server.as_ref()
    }

    fn sid_socket(&self, sid: &Xid) -> Option<SocketHandle> {
        self.sockets
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.sid == *sid))
            .map(SocketHandle)
    }

    fn reply_error(&mut self, offending: &[u8], kind: ErrorKind) {
        if let Some(err) = error_reply(offending, kind, &self.dag()) {
            let dst = XipRepr::parse_header(&Packet::new_unchecked(&err[..]))
                .map(|r| r.dst)
                .unwrap_or_else(|_| self.dag());
            let _ = self.send_packet(err, &dst);
        }
    }

    fn push_event(&mut self, e: HostEvent) {
        if self.events.len() >= self.config.queue_limit {
            self.counters.queue_full += 1;
            return;
        }
        self.events.push_back(e);
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front();
        if self.streams_held && self.transmits.len() <= self.stream_tx_limit() / 2 {
            self.streams_held = false;
            let now = self.tx_now;
            for i in 0..self.streams.len() {
                self.flush_stream(now, StreamHandle(i));
            }
        }
        t.or_else(|| self.transmits.pop_front())
    }

    /// How many packets streams may have in the transmit queue: three
    /// quarters of it, the rest left for datagrams and control.
    fn stream_tx_limit(&self) -> usize {
        (self.config.queue_limit * 3 / 4).max(1)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<HostEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(seed: u8, ad: u8) -> Host {
        let id = Identity::from_secret_bytes(Principal::HID, &[seed; 32]);
        let mut cfg = HostConfig::new(
            id,
            Xid::new(Principal::AD, [ad; 20]),
            Some(Xid::new(Principal::HID, [0xee; 20])),
        );
        cfg.seed = seed as u64;
        Host::new(cfg)
    }

    /// Moves every packet one host sends to the other, as a wire would.
    fn pump(a: &mut Host, b: &mut Host) {
        loop {
            let mut moved = false;
            while let Some(t) = a.poll_transmit() {
                b.handle_packet(Instant::ZERO, 0, t.packet);
                moved = true;
            }
            while let Some(t) = b.poll_transmit() {
                a.handle_packet(Instant::ZERO, 0, t.packet);
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }

    #[test]
    fn datagrams_between_two_hosts_in_one_ad() {
        let (mut a, mut b) = (host(1, 7), host(2, 7));
        let sa = a.bind(None).unwrap();
        let sid_b = Xid::new(Principal::SID, [0x5b; 20]);
        let sb = b.bind(Some(sid_b)).unwrap();
        let to_b = b.socket_dag(sb).unwrap();
        a.send_to(sa, &to_b, b"hello").unwrap();
        let t = a.poll_transmit().unwrap();
        assert_eq!(
            t.next_hop,
            Some(Xid::new(Principal::HID, [0xee; 20])),
            "via the gateway"
        );
        b.handle_packet(Instant::ZERO, 0, t.packet);
        assert_eq!(b.poll_event(), Some(HostEvent::Readable(sb)));
        let (from, data) = b.recv_from(sb).unwrap();
        assert_eq!(data, b"hello");
        assert_eq!(from, a.socket_dag(sa).unwrap());
        assert_eq!(b.bind(Some(sid_b)), Err(HostError::AddressInUse(sid_b)));
    }

    #[test]
    fn unbound_sid_gets_intent_unreachable() {
        let (mut a, mut b) = (host(1, 7), host(2, 7));
        let sa = a.bind(None).unwrap();
        let nowhere = b
            .dag()
            .append_xid(Xid::new(Principal::SID, [9; 20]))
            .unwrap();
        a.send_to(sa, &nowhere, b"x").unwrap();
        pump(&mut a, &mut b);
        match a.poll_event() {
            Some(HostEvent::Error {
                socket: Some(s),
                error: NetError::Unreachable { reason, .. },
                ..
            }) => {
                assert_eq!(s, sa);
                assert_eq!(reason, Unreachable::Intent);
            }
            other => panic!("expected an unreachable error, got {other:?}"),
        }
        assert_eq!(b.counters().no_socket, 1);
    }

    #[test]
    fn ping_is_answered() {
        let (mut a, mut b) = (host(1, 7), host(2, 7));
        a.ping(&b.dag(), 42, 1, b"abcdefgh", None).unwrap();
        pump(&mut a, &mut b);
        match a.poll_event() {
            Some(HostEvent::EchoReply {
                ident, seq_no, len, ..
            }) => {
                assert_eq!((ident, seq_no, len), (42, 1, 8));
            }
            other => panic!("expected an echo reply, got {other:?}"),
        }
    }

    #[test]
    fn a_beacon_for_a_new_ad_moves_the_interface() {
        let mut a = host(1, 7);
        let sa = a.bind(Some(Xid::new(Principal::SID, [0x5a; 20]))).unwrap();
        let new_ad = Xid::new(Principal::AD, [8; 20]);
        let gw = Xid::new(Principal::HID, [0xab; 20]);
        let ns = Dag::path(&[new_ad, crate::naming::NAME_SERVER_SID]).unwrap();
        let beacon = Beacon {
            ad: new_ad,
            gateway: gw,
            name_server: Some(ns.clone()),
        };
        a.handle_packet(Instant::ZERO, 0, beacon.packet());
        assert_eq!(
            a.poll_event(),
            Some(HostEvent::NetworkChanged {
                interface: 0,
                old_ad: Xid::new(Principal::AD, [7; 20]),
                new_ad,
                gateway: gw
            })
        );
        assert_eq!(a.name_server(), Some(&ns));
        assert_eq!(a.dag(), Dag::path(&[new_ad, a.hid()]).unwrap());
        assert_eq!(
            *a.socket_dag(sa).unwrap().intent(),
            Xid::new(Principal::SID, [0x5a; 20])
        );
        // Hearing it again changes nothing.
        a.handle_packet(Instant::ZERO, 0, beacon.packet());
        assert_eq!(a.poll_event(), None);
        assert_eq!(a.counters().beacons, 2);
        // Packets now leave through the new gateway.
        a.send_to(sa, &Dag::from_xid(Xid::new(Principal::SID, [1; 20])), b"x")
            .unwrap();
        assert_eq!(a.poll_transmit().unwrap().next_hop, Some(gw));
    }

    #[test]
    fn a_stream_waits_in_its_buffer_while_the_driver_holds_the_transmit_queue() {
        // A driver whose NIC takes 4 packets per millisecond, and a
        // transmit queue of 16: the window outgrows the queue within a few
        // round trips. Segments the queue cannot take stay unsent in the
        // connection instead of being dropped (and retransmitted).
        let mut cfg = HostConfig::new(
            Identity::from_secret_bytes(Principal::HID, &[1; 32]),
            Xid::new(Principal::AD, [7; 20]),
            Some(Xid::new(Principal::HID, [0xee; 20])),
        );
        cfg.queue_limit = 16;
        let (mut a, mut b) = (Host::new(cfg), host(2, 7));
        let web = Xid::new(Principal::SID, [0x77; 20]);
        let l = b.listen(Some(web)).unwrap();
        let to_web = b.dag().append_xid(web).unwrap();
        let mut now = Instant::ZERO;
        let s = a.connect(&to_web, now).unwrap();
        pump(&mut a, &mut b);
        let server = b.accept(l).expect("accepted");
        let data: Vec<u8> = (0..400_000u32).map(|i| (i * 13 + 5) as u8).collect();
        let (mut sent, mut got) = (0, Vec::new());
        let mut buf = vec![0u8; 65536];
        let mut most_queued = 0;
        for _ in 0..20_000 {
            if got.len() == data.len() {
                break;
            }
            now = now + std::time::Duration::from_millis(1);
            a.handle_timeout(now);
            b.handle_timeout(now);
            sent += a.stream_write(s, &data[sent..], now).unwrap();
            most_queued = most_queued.max(a.transmits.len());
            for _ in 0..4 {
                match a.poll_transmit() {
                    Some(t) => b.handle_packet(now, 0, t.packet),
                    None => break,
                }
            }
            loop {
                let n = b.stream_read(server, &mut buf, now).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            while let Some(t) = b.poll_transmit() {
                a.handle_packet(now, 0, t.packet);
            }
        }
        assert_eq!(got.len(), data.len(), "the transfer finished");
        assert!(got == data);
        assert_eq!(a.counters().send_queue_full, 0, "nothing dropped");
        assert!(most_queued <= 16, "queued {most_queued}");
        let st = a.stream(s).unwrap().stats();
        assert_eq!(st.retransmissions, 0, "{st:?}");
    }

    #[test]
    fn a_stream_between_two_hosts_is_rebound_by_an_xhcp_move() {
        let (mut a, mut b) = (host(1, 7), host(2, 7));
        let web = Xid::new(Principal::SID, [0x77; 20]);
        let l = b.listen(Some(web)).unwrap();
        let to_web = b.dag().append_xid(web).unwrap();
        let now = Instant::ZERO;
        let s = a.connect(&to_web, now).unwrap();
        pump(&mut a, &mut b);
        let server = b.accept(l).expect("accepted");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + 3) as u8).collect();
        let (mut sent, mut got) = (0, Vec::new());
        let mut buf = vec![0u8; 8192];
        let mut moved = false;
        while got.len() < data.len() {
            sent += a.stream_write(s, &data[sent..], now).unwrap();
            pump(&mut a, &mut b);
            loop {
                let n = b.stream_read(server, &mut buf, now).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            pump(&mut a, &mut b);
            if !moved && got.len() > 50_000 {
                // The client's network changes under it: XHCP moves it.
                let beacon = Beacon {
                    ad: Xid::new(Principal::AD, [9; 20]),
                    gateway: Xid::new(Principal::HID, [0xee; 20]),
                    name_server: None,
                };
                a.handle_packet(now, 0, beacon.packet());
                moved = true;
            }
        }
        assert_eq!(got, data);
        // The client's end was rebound to its new DAG; the server's view of
        // its peer changes only through a signed MIGRATE (the migration
        // work), never because a packet's source says so.
        let local = a.stream(s).unwrap().local_dag().clone();
        assert_eq!(local.nodes()[0].xid, Xid::new(Principal::AD, [9; 20]));
        let peer = b.stream(server).unwrap().peer_dag().clone();
        assert_eq!(peer.nodes()[0].xid, Xid::new(Principal::AD, [7; 20]));
        a.stream_close(s, now).unwrap();
        pump(&mut a, &mut b);
        assert!(b.stream(server).unwrap().is_read_finished());
        let events: Vec<_> = std::iter::from_fn(|| a.poll_event()).collect();
        assert!(
            events.contains(&HostEvent::Stream {
                stream: s,
                event: StreamEvent::Connected
            }),
            "{events:?}"
        );
    }

    #[test]
    fn register_and_resolve_names_over_the_network() {
        use crate::naming::{NameRequest, NameResponse, Registration};
        let (mut client, mut server) = (host(1, 7), host(2, 7));
        server.serve_names(100);
        let ns = server.name_server_dag().unwrap();
        // A service on the client registers itself, signed by its SID's key.
        let svc = Identity::from_secret_bytes(Principal::SID, &[0x33; 32]);
        client.bind(Some(svc.xid())).unwrap();
        let svc_dag = client.dag().append_xid(svc.xid()).unwrap();
        let reg = Registration::sign(&svc, "echo.example", &svc_dag, 1).unwrap();
        let id = client
            .name_request(
                Instant::ZERO,
                &ns,
                &NameRequest::Register(Box::new(reg.clone())),
            )
            .unwrap();
        pump(&mut client, &mut server);
        assert_eq!(
            client.poll_event(),
            Some(HostEvent::NameAnswer {
                id,
                answer: Ok(NameResponse::Registered { seq: 1 })
            })
        );
        // Replaying it is refused, over the wire too.
        let id2 = client
            .name_request(Instant::ZERO, &ns, &NameRequest::Register(Box::new(reg)))
            .unwrap();
        pump(&mut client, &mut server);
        match client.poll_event() {
            Some(HostEvent::NameAnswer {
                id,
                answer: Err(why),
            }) => {
                assert_eq!(id, id2);
                assert!(why.contains("not above"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // Resolving through the name server XHCP announced.
        assert_eq!(
            client.resolve(Instant::ZERO, "echo.example"),
            Err(HostError::NoNameServer)
        );
        let beacon = Beacon {
            ad: Xid::new(Principal::AD, [7; 20]),
            gateway: Xid::new(Principal::HID, [0xee; 20]),
            name_server: Some(ns),
        };
        client.handle_packet(Instant::ZERO, 0, beacon.packet());
        let id3 = client.resolve(Instant::ZERO, "echo.example").unwrap();
        pump(&mut client, &mut server);
        assert_eq!(
            client.poll_event(),
            Some(HostEvent::NameAnswer {
                id: id3,
                answer: Ok(NameResponse::Record {
                    name: "echo.example".into(),
                    dag: svc_dag,
                    seq: 1
                })
            })
        );
    }

    #[test]
    fn lost_name_requests_are_repeated_then_fail() {
        use crate::naming::NameResponse;
        let (mut client, mut server) = (host(1, 7), host(2, 7));
        server.serve_names(100);
        client.set_name_server(server.name_server_dag().unwrap());
        let t0 = Instant::from_secs(5);
        let id = client.resolve(t0, "nothing.example").unwrap();
        // The first request is lost on the way.
        assert!(client.poll_transmit().is_some());
        assert_eq!(client.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        client.handle_timeout(t0 + Duration::from_secs(1));
        pump(&mut client, &mut server);
        assert_eq!(
            client.poll_event(),
            Some(HostEvent::NameAnswer {
                id,
                answer: Ok(NameResponse::NotFound)
            })
        );
        assert_eq!(client.poll_timeout(), None, "answered: nothing pending");
        // A name server that never answers: three tries, then an error;
        // a stream opened by name fails with NoAnswer.
        let s = client.connect_name(t0, "web.example").unwrap();
        for k in 1..=3 {
            assert!(client.poll_transmit().is_some(), "try {k}");
            let due = client.poll_timeout().unwrap();
            assert_eq!(due, t0 + Duration::from_secs(k));
            client.handle_timeout(due);
        }
        assert!(client.poll_transmit().is_none());
        assert_eq!(
            client.poll_event(),
            Some(HostEvent::Resolved {
                stream: s,
                result: Err(ResolveError::NoAnswer("web.example".into()))
            })
        );
        assert_eq!(client.poll_timeout(), None);
    }

    #[test]
    fn publish_and_fetch_a_multi_piece_chunk() {
        let (mut client, mut server) = (host(1, 7), host(2, 7));
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 13) as u8).collect();
        let cid = server.put_chunk(&data).unwrap();
        let dag = server.content_dag(cid);
        assert!(
            dag.to_re_string().unwrap().starts_with("RE ( AD:"),
            "{dag:?}"
        );
        let id = client.fetch_chunk(&dag, Instant::ZERO).unwrap();
        pump(&mut client, &mut server);
        assert_eq!(
            client.poll_event(),
            Some(HostEvent::ChunkFetched {
                id,
                cid,
                result: Ok(data.clone())
            })
        );
        assert_eq!(server.counters().chunks_served, 1);
        // A lost piece is asked for again after the retry timeout.
        let id = client.fetch_chunk(&dag, Instant::ZERO).unwrap();
        let req = client.poll_transmit().unwrap();
        server.handle_packet(Instant::ZERO, 0, req.packet);
        let mut first = true;
        while let Some(t) = server.poll_transmit() {
            if std::mem::take(&mut first) {
                continue; // lose the first piece
            }
            client.handle_packet(Instant::ZERO, 0, t.packet);
        }
        assert_eq!(client.poll_event(), None);
        assert_eq!(
            client.poll_timeout(),
            Some(Instant::ZERO + crate::host::chunks::FETCH_RETRY)
        );
        client.handle_timeout(Instant::ZERO + crate::host::chunks::FETCH_RETRY);
        pump(&mut client, &mut server);
        assert!(
            matches!(client.poll_event(), Some(HostEvent::ChunkFetched { id: i, result: Ok(_), .. }) if i == id)
        );
        // Not a CID: refused up front.
        assert!(client.fetch_chunk(&server.dag(), Instant::ZERO).is_err());
    }

    #[test]
    fn seeded_sids_are_reproducible_and_hostile_bytes_are_counted() {
        let (mut a1, mut a2) = (host(1, 7), host(1, 7));
        let (s1, s2) = (a1.bind(None).unwrap(), a2.bind(None).unwrap());
        assert_eq!(a1.socket_sid(s1), a2.socket_sid(s2));
        a1.handle_packet(Instant::ZERO, 0, vec![1, 0, 0]);
        assert_eq!(a1.counters().malformed, 1);
    }
}
