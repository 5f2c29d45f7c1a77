//! The router node: the shared DAG walk plus what a router adds — ports,
//! a fast path, broadcast with neighbour learning, XCMP errors and echo,
//! and a counter for every drop reason.
//!
//! Sans-IO in quinn-proto's manner: feed packets with
//! [`Router::handle_packet`], then drain [`Router::poll_transmit`] (packets
//! to send, in order) and [`Router::poll_delivered`] (packets for the
//! router's own services); call [`Router::handle_timeout`] when
//! [`Router::poll_timeout`] says (learnt neighbours expire). The router holds
//! no clock; `now` is passed in.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use xia_stack::dag::Dag;
use xia_stack::forward::walk::{self, Verdict};
use xia_stack::forward::xcmp::{echo_reply, error_reply, unreachable_reason, ErrorKind};
use xia_stack::forward::{Action, PortId, Route, RouteTables, Transmit};
use xia_stack::time::Instant;
use xia_stack::wire::xcmp::Unreachable;
use xia_stack::wire::xip::{Packet, XipRepr};
use xia_stack::xhcp::{Beacon, XHCP_SID};
use xia_stack::xid::{Principal, Xid};

use crate::cache::ContentCache;
use crate::counters::{Counters, Drop};
use crate::fastpath::FastPath;
use crate::routing::{LinkState, LinkStateConfig, RoutingCounters, FLAG_ROUTED, ROUTING_SID};

/// A packet for the router itself (not XCMP echo, which it answers).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Delivered {
    /// When it arrived.
    pub at: Instant,
    /// On which port.
    pub port: PortId,
    /// The packet.
    pub packet: Vec<u8>,
}

/// How to build a router.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// The AD the router belongs to.
    pub ad: Xid,
    /// The router's own HID.
    pub hid: Xid,
    /// Number of ports (0..ports).
    pub ports: PortId,
    /// Use the per-destination fast-path cache.
    pub fast_path: bool,
    /// Most packets queued for [`Router::poll_transmit`] before new ones
    /// are dropped (counted as [`Drop::QueueFull`]).
    pub queue_limit: usize,
    /// How long a neighbour learnt from its broadcasts is remembered
    /// without hearing from it again (bridges use 300 s).
    pub neighbour_ttl: Duration,
    /// Send XHCP beacons on every port this often (`None`: no beacons).
    pub xhcp_interval: Option<Duration>,
    /// The name server's DAG, announced in beacons.
    pub name_server: Option<Dag>,
    /// Bytes of content chunks to cache from passing traffic (0: none).
    pub chunk_cache: usize,
    /// Run link-state routing with this configuration (`None`: routes
    /// are configured from outside).
    pub routing: Option<LinkStateConfig>,
}

impl RouterConfig {
    /// A router of AD `ad` with HID `hid` and `ports` ports, fast path on.
    pub fn new(ad: Xid, hid: Xid, ports: PortId) -> RouterConfig {
        RouterConfig {
            ad,
            hid,
            ports,
            fast_path: true,
            queue_limit: 4096,
            neighbour_ttl: Duration::from_secs(300),
            xhcp_interval: None,
            name_server: None,
            chunk_cache: 0,
            routing: None,
        }
    }
}

/// A host registration delivered to the router's XHCP service, if this is one.
fn host_registration(packet: &[u8]) -> Option<xia_stack::xhcp::Registration> {
    let view = Packet::new_unchecked(packet);
    let repr = XipRepr::parse(&view).ok()?;
    if *repr.dst.intent() != XHCP_SID {
        return None;
    }
    let seg = xia_stack::wire::xdgram::XdgramRepr::parse(view.payload()).ok()?;
    xia_stack::xhcp::Registration::parse(seg.payload)
}

/// The service a link-local message (hop limit 1, to the broadcast HID)
/// is for: XHCP beacons and routing messages.
fn link_local_service(packet: &[u8]) -> Option<Xid> {
    let repr = XipRepr::parse_header(&Packet::new_unchecked(packet)).ok()?;
    let intent = *repr.dst.intent();
    (intent == XHCP_SID || intent == ROUTING_SID).then_some(intent)
}

/// A routing message body as the packet a router sends on a link.
fn routing_packet(own: &Dag, body: &[u8]) -> Vec<u8> {
    let dst = Dag::path(&[Xid::BROADCAST_HID, ROUTING_SID]).expect("two nodes");
    let seg = xia_stack::wire::xdgram::XdgramRepr {
        next_header: xia_stack::wire::xip::NextHeader::Data,
        payload: body,
    }
    .to_bytes();
    let mut repr = XipRepr::new(
        dst,
        own.clone(),
        xia_stack::wire::xip::NextHeader::Xdgram,
        0,
    );
    // For the link it is sent on only.
    repr.hop_limit = 1;
    repr.to_bytes(&seg).unwrap_or_default()
}

/// What [`Router::learn_route`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Learned {
    /// A configured route exists; nothing changed.
    Configured,
    /// A new (or moved) learnt route.
    New,
    /// The same learnt route, its expiry pushed back.
    Refreshed,
    /// The HID table is full.
    Full,
}

/// Route flag set on HID routes learnt from broadcasts.
pub const FLAG_LEARNED: u32 = 1;

/// An XIA router.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    own: Dag,
    tables: RouteTables,
    fast: Option<FastPath>,
    counters: Counters,
    transmits: VecDeque<Transmit>,
    delivered: VecDeque<Delivered>,
    // Learnt neighbours: HID → expiry, and the same ordered by expiry.
    learned: BTreeMap<Xid, Instant>,
    expiries: BTreeSet<(Instant, Xid)>,
    // When the next XHCP beacon is due (the first as soon as asked).
    next_beacon: Option<Instant>,
    cache: Option<ContentCache>,
    routing: Option<LinkState>,
    // Routes the routing protocol wants, whether or not installed (a
    // configured or learnt route for the same XID wins).
    routed: BTreeMap<Xid, Route>,
    // The attached hosts or local 4IDs may have changed: recompute the
    // stubs advertised by routing.
    stubs_dirty: bool,
}

impl Router {
    /// A router with tables for AD, HID, SID, CID and IP, where its own AD
    /// and HID are local and the broadcast HID broadcasts.
    pub fn new(config: RouterConfig) -> Router {
        let mut tables = RouteTables::with_principals(&[
            Principal::AD,
            Principal::HID,
            Principal::SID,
            Principal::CID,
            Principal::IP,
        ]);
        let own = Dag::path(&[config.ad, config.hid]).expect("two nodes make a DAG");
        // Fresh tables have room: these cannot fail.
        let _ = tables.insert(config.ad, Route::LOCAL);
        let _ = tables.insert(config.hid, Route::LOCAL);
        let _ = tables.insert(Xid::BROADCAST_HID, Route::special(Action::Broadcast));
        // Hosts register with their gateway at its XHCP service.
        let _ = tables.insert(XHCP_SID, Route::LOCAL);
        Router {
            fast: config.fast_path.then(FastPath::default),
            config: config.clone(),
            own,
            tables,
            counters: Counters::default(),
            transmits: VecDeque::new(),
            delivered: VecDeque::new(),
            learned: BTreeMap::new(),
            expiries: BTreeSet::new(),
            next_beacon: config.xhcp_interval.map(|_| Instant::ZERO),
            cache: (config.chunk_cache > 0).then(|| ContentCache::new(config.chunk_cache)),
            routing: config
                .routing
                .clone()
                .map(|c| LinkState::new(config.ad, config.hid, config.ports, c)),
            routed: BTreeMap::new(),
            stubs_dirty: true,
        }
    }

    /// The router's own DAG (`AD HID`), the source of its XCMP messages.
    pub fn own_dag(&self) -> &Dag {
        &self.own
    }

    /// Its configuration.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Its route tables.
    pub fn tables(&self) -> &RouteTables {
        &self.tables
    }

    /// Its route tables, for changes (the fast path notices them, and
    /// routing re-reads the attached hosts it advertises).
    pub fn tables_mut(&mut self) -> &mut RouteTables {
        self.stubs_dirty = true;
        &mut self.tables
    }

    /// The routing protocol's state, if it runs.
    pub fn routing(&self) -> Option<&LinkState> {
        self.routing.as_ref()
    }

    /// The routing protocol's counters, if it runs.
    pub fn routing_counters(&self) -> Option<RoutingCounters> {
        self.routing.as_ref().map(|r| r.counters())
    }

    /// Its counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Fast-path hits and misses so far.
    pub fn fast_path_stats(&self) -> Option<(u64, u64)> {
        self.fast.as_ref().map(|f| (f.hits(), f.misses()))
    }

    /// Handles a packet that arrived on `port`.
    pub fn handle_packet(&mut self, now: Instant, port: PortId, mut packet: Vec<u8>) {
        self.counters.received += 1;
        let mut checked = match walk::check(&mut packet) {
            Ok(c) => c,
            Err(_) => return self.counters.drop(Drop::Malformed),
        };
        if port >= self.config.ports {
            return self.counters.drop(Drop::NoSuchPort);
        }
        if let Some(cache) = self.cache.as_mut() {
            if cache.observe(checked.bytes(), &mut self.tables) {
                self.counters.chunks_cached += 1;
            }
        }
        let verdict = match self.fast.as_mut() {
            Some(fast) => fast.route(&self.tables, &mut checked),
            None => walk::route(&self.tables, &mut checked),
        };
        match verdict {
            Verdict::Forward {
                port: out,
                next_hop,
            } => {
                if out >= self.config.ports {
                    return self.counters.drop(Drop::NoSuchPort);
                }
                self.counters.forwarded += 1;
                self.push(out, next_hop, packet);
            }
            // XHCP beacons and routing messages are link-local (hop limit
            // 1): heard, never flooded on, and not an error.
            Verdict::Broadcast | Verdict::TimeExceeded => match link_local_service(&packet) {
                Some(XHCP_SID) => self.counters.beacons_heard += 1,
                Some(_) => self.handle_routing(now, port, &packet),
                None if matches!(verdict, Verdict::TimeExceeded) => {
                    self.counters.drop(Drop::HopLimit);
                    self.send_error(&packet, ErrorKind::TimeExceeded);
                }
                None => {
                    self.learn_neighbour(now, port, &packet);
                    self.counters.broadcast += 1;
                    for out in (0..self.config.ports).filter(|&p| p != port) {
                        self.push(out, None, packet.clone());
                    }
                }
            },
            Verdict::Deliver { .. } => self.deliver(now, port, packet),
            Verdict::Unreachable => {
                self.counters.drop(Drop::Unreachable);
                let reason =
                    walk::check(&mut packet).map_or(Unreachable::Host, |c| unreachable_reason(&c));
                self.send_error(&packet, ErrorKind::Unreachable(reason));
            }
            Verdict::Discard => self.counters.drop(Drop::Discarded),
        }
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next packet delivered to the router's own services.
    pub fn poll_delivered(&mut self) -> Option<Delivered> {
        self.delivered.pop_front()
    }

    /// Sends a packet the router originates (e.g. from a routing daemon),
    /// routed like any other; `false` if it had nowhere to go.
    pub fn send(&mut self, mut packet: Vec<u8>) -> bool {
        let Ok(mut checked) = walk::check(&mut packet) else {
            self.counters.drop(Drop::Malformed);
            return false;
        };
        match walk::route(&self.tables, &mut checked) {
            Verdict::Forward { port, next_hop } if port < self.config.ports => {
                self.push(port, next_hop, packet);
                true
            }
            _ => {
                self.counters.drop(Drop::Unreachable);
                false
            }
        }
    }

    fn deliver(&mut self, now: Instant, port: PortId, packet: Vec<u8>) {
        self.counters.delivered += 1;
        if let Some(reply) = echo_reply(&packet, &self.own) {
            self.counters.echo_replies += 1;
            self.send(reply);
            return;
        }
        if let Some(reg) = host_registration(&packet) {
            return self.register_host(now, port, &reg);
        }
        if let Some(answer) = self
            .cache
            .as_mut()
            .and_then(|c| c.serve(&packet, &self.own))
        {
            self.counters.chunks_served += 1;
            for p in answer {
                self.send(p);
            }
            return;
        }
        if self.delivered.len() >= self.config.queue_limit {
            return self.counters.drop(Drop::QueueFull);
        }
        self.delivered.push_back(Delivered {
            at: now,
            port,
            packet,
        });
    }

    fn handle_routing(&mut self, now: Instant, port: PortId, packet: &[u8]) {
        self.counters.routing_heard += 1;
        // A router that does not run routing ignores its messages.
        let Some(routing) = self.routing.as_mut() else {
            return;
        };
        let view = Packet::new_unchecked(packet);
        let parsed = xia_stack::wire::xdgram::XdgramRepr::parse(view.payload())
            .ok()
            .map(|seg| routing.handle_message(now, port, seg.payload));
        if !matches!(parsed, Some(Ok(()))) {
            self.counters.drop(Drop::Malformed);
        }
        self.pump_routing();
    }

    /// Sends what routing wants sent and installs the routes it computed.
    fn pump_routing(&mut self) {
        let Some(routing) = self.routing.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        while let Some(t) = routing.poll_transmit() {
            out.push(t);
        }
        let routes = routing.poll_routes();
        for (port, body) in out {
            let packet = routing_packet(&self.own, &body);
            self.counters.routing_sent += 1;
            self.push(port, None, packet);
        }
        if let Some(routes) = routes {
            let new: BTreeMap<Xid, Route> = routes.into_iter().collect();
            for xid in self.routed.keys() {
                if !new.contains_key(xid) && self.installed_by_routing(xid) {
                    self.tables.remove(xid);
                }
            }
            self.routed = new;
            self.install_routed();
        }
    }

    fn installed_by_routing(&self, xid: &Xid) -> bool {
        self.tables
            .table(xid.principal())
            .and_then(|t| t.get(xid.id()))
            .is_some_and(|r| r.flags & FLAG_ROUTED != 0)
    }

    // Installs every routed route whose XID has no configured or learnt
    // route.
    fn install_routed(&mut self) {
        for (xid, route) in &self.routed {
            let existing = self
                .tables
                .table(xid.principal())
                .and_then(|t| t.get(xid.id()));
            match existing {
                Some(r) if r == route => {}
                Some(r) if r.flags & FLAG_ROUTED == 0 => {}
                _ => {
                    if self.tables.insert(*xid, *route).is_err() {
                        self.counters.drop(Drop::QueueFull);
                    }
                }
            }
        }
    }

    /// What routing advertises as reachable here: hosts attached by a
    /// configured or learnt direct route (not other routers), and the
    /// router's own 4IDs.
    fn refresh_stubs(&mut self, now: Instant) {
        if !self.stubs_dirty {
            return;
        }
        self.stubs_dirty = false;
        let Some(routing) = self.routing.as_ref() else {
            return;
        };
        let mut stubs = Vec::new();
        if let Some(t) = self.tables.table(Principal::HID) {
            for (hid, r) in t.iter() {
                let direct = matches!(r.action, Action::Forward(_)) && r.next_hop == Some(hid);
                if direct && r.flags & FLAG_ROUTED == 0 && !routing.is_neighbour(&hid) {
                    stubs.push(hid);
                }
            }
        }
        if let Some(t) = self.tables.table(Principal::IP) {
            stubs.extend(
                t.iter()
                    .filter(|(_, r)| r.action == Action::Local)
                    .map(|(x, _)| x),
            );
        }
        if let Some(routing) = self.routing.as_mut() {
            routing.set_stubs(now, stubs);
        }
    }

    fn send_error(&mut self, offending: &[u8], kind: ErrorKind) {
        if let Some(err) = error_reply(offending, kind, &self.own) {
            self.counters.xcmp_errors_sent += 1;
            self.send(err);
        }
    }

    fn push(&mut self, port: PortId, next_hop: Option<Xid>, packet: Vec<u8>) {
        if self.transmits.len() >= self.config.queue_limit {
            return self.counters.drop(Drop::QueueFull);
        }
        self.transmits.push_back(Transmit {
            port,
            next_hop,
            packet,
        });
    }

    /// A broadcast's source HID is a neighbour on the port it came in on:
    /// remember it (for [`RouterConfig::neighbour_ttl`], refreshed by every
    /// broadcast it sends) unless a configured route says otherwise.
    fn learn_neighbour(&mut self, now: Instant, port: PortId, packet: &[u8]) {
        let Ok(repr) = XipRepr::parse_header(&Packet::new_unchecked(packet)) else {
            return;
        };
        let Some(hid) = repr.src.nodes_of_type(Principal::HID).last().copied() else {
            return;
        };
        if self.learn_route(now, hid, port) == Learned::New {
            self.counters.neighbours_learned += 1;
            self.refresh_stubs(now);
            self.pump_routing();
        }
    }

    /// A host registered its HID here (XHCP): route it out the port the
    /// registration came in on, as a learnt neighbour (it expires unless
    /// renewed), unless a configured route exists.
    fn register_host(&mut self, now: Instant, port: PortId, reg: &xia_stack::xhcp::Registration) {
        if !reg.verify() || reg.ad != self.config.ad {
            return self.counters.drop(Drop::Malformed);
        }
        match self.learn_route(now, reg.hid, port) {
            Learned::New => {
                self.counters.hosts_registered += 1;
                self.refresh_stubs(now);
                self.pump_routing();
            }
            Learned::Refreshed => self.counters.hosts_registered += 1,
            Learned::Full => self.counters.drop(Drop::QueueFull),
            Learned::Configured => {}
        }
    }

    /// Learns `hid` out of `port` for [`RouterConfig::neighbour_ttl`]: the
    /// one mechanism behind broadcast learning and host registration. A
    /// configured route is never replaced.
    fn learn_route(&mut self, now: Instant, hid: Xid, port: PortId) -> Learned {
        let existing = self
            .tables
            .table(Principal::HID)
            .and_then(|t| t.get(hid.id()))
            .copied();
        if existing.is_some_and(|r| r.flags & (FLAG_LEARNED | FLAG_ROUTED) == 0) {
            return Learned::Configured;
        }
        let outcome = if existing.is_some_and(|r| r.action == Action::Forward(port)) {
            Learned::Refreshed
        } else {
            let route = Route {
                action: Action::Forward(port),
                next_hop: Some(hid),
                flags: FLAG_LEARNED,
            };
            if self.tables.insert(hid, route).is_err() {
                return Learned::Full;
            }
            self.stubs_dirty = true;
            Learned::New
        };
        let expiry = now + self.config.neighbour_ttl;
        if let Some(old) = self.learned.insert(hid, expiry) {
            self.expiries.remove(&(old, hid));
        }
        self.expiries.insert((expiry, hid));
        outcome
    }

    /// When the router next needs [`Router::handle_timeout`]: the next XHCP
    /// beacon, the expiry of the oldest learnt neighbour, or routing's
    /// next timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self.expiries.first().map(|(t, _)| *t);
        let routing = self.routing.as_ref().and_then(|r| r.poll_timeout());
        [self.next_beacon, expiry, routing]
            .into_iter()
            .flatten()
            .min()
    }

    /// Sends the XHCP beacons that are due and expires learnt neighbours
    /// whose time has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let (Some(due), Some(interval)) = (self.next_beacon, self.config.xhcp_interval) {
            if due <= now {
                let packet = Beacon {
                    ad: self.config.ad,
                    gateway: self.config.hid,
                    name_server: self.config.name_server.clone(),
                }
                .packet();
                for port in 0..self.config.ports {
                    self.push(port, None, packet.clone());
                }
                self.counters.beacons_sent += u64::from(self.config.ports);
                self.next_beacon = Some(now + interval);
            }
        }
        let mut expired = false;
        while let Some(&(t, hid)) = self.expiries.first() {
            if t > now {
                break;
            }
            self.expiries.pop_first();
            self.learned.remove(&hid);
            // Only a route that is still the learnt one goes.
            let still_learned = self
                .tables
                .table(Principal::HID)
                .and_then(|tb| tb.get(hid.id()))
                .is_some_and(|r| r.flags & FLAG_LEARNED != 0);
            if still_learned {
                self.tables.remove(&hid);
                self.counters.neighbours_expired += 1;
                self.stubs_dirty = true;
                expired = true;
            }
        }
        if self.routing.is_some() {
            if expired {
                // A learnt route that expired may uncover a routed one.
                self.install_routed();
            }
            self.refresh_stubs(now);
            if let Some(r) = self.routing.as_mut() {
                if r.poll_timeout().is_some_and(|t| t <= now) {
                    r.handle_timeout(now);
                }
            }
            self.pump_routing();
        }
    }
}
