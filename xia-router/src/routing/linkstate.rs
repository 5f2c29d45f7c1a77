//! The link-state routing state machine of one router.
//!
//! Sans-IO like the rest: [`LinkState::handle_message`] for messages heard
//! on a port, [`LinkState::handle_timeout`] when [`LinkState::poll_timeout`]
//! says, [`LinkState::set_stubs`] when the XIDs reachable at this router
//! change; then drain [`LinkState::poll_transmit`] (message bodies for a
//! port) and [`LinkState::poll_routes`] (the full route set, when it
//! changed).
//!
//! The protocol is OSPF's core, reduced:
//! - **HELLO** on every port each `hello_interval`, listing the routers
//!   heard on that port. A neighbour that lists us is *two-way*; a
//!   neighbour not heard for its dead interval is gone.
//! - **LSA** per router: its two-way adjacencies with costs and its stubs.
//!   Re-originated (sequence number + 1) whenever they change and every
//!   `refresh_interval`; an LSA not refreshed within `max_age` is purged.
//!   A router that restarts learns its old sequence number from the copy
//!   its neighbours send back, and jumps past it.
//! - **Reliable flooding**: a newer LSA is stored, acknowledged, and sent on
//!   every other port with a two-way neighbour, where it is repeated every
//!   `retransmit_interval` until acknowledged. A new two-way neighbour is
//!   sent the whole database.
//! - **SPF** (Dijkstra, using only links both ends advertise): a route to
//!   every other AD via its nearest router, to every router and host of
//!   our own AD, and to every non-HID stub (e.g. 4IDs) anywhere. Ties break
//!   on the lower first-hop port, so results are deterministic.
//!
//! One area spans all ADs; there is no inter-AD policy (BGP-like) layer.
//! LSAs are not signed: routers trust each other.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::Duration;

use xia_stack::forward::{PortId, Route};
use xia_stack::time::Instant;
use xia_stack::xid::{Principal, Xid};

use super::message::{Hello, Lsa, LsaAck, LsaLink, Message, MessageError, MAX_STUBS};
use super::FLAG_ROUTED;

/// How the protocol is timed and bounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStateConfig {
    /// HELLOs on every port this often.
    pub hello_interval: Duration,
    /// A neighbour not heard for this long is gone (announced in HELLOs).
    pub dead_interval: Duration,
    /// Our LSA is re-originated this often even when nothing changed.
    pub refresh_interval: Duration,
    /// LSAs not refreshed for this long are purged.
    pub max_age: Duration,
    /// Unacknowledged LSAs are repeated this often.
    pub retransmit_interval: Duration,
    /// Cost of each port's link (missing ports cost 1).
    pub port_costs: Vec<u32>,
    /// Most LSAs (routers) kept.
    pub max_routers: usize,
    /// XIDs never routed by this router, whatever it learns (an
    /// experiment's "router that does not know AD D").
    pub exclude: Vec<Xid>,
}

impl Default for LinkStateConfig {
    fn default() -> LinkStateConfig {
        LinkStateConfig {
            hello_interval: Duration::from_secs(1),
            dead_interval: Duration::from_secs(4),
            refresh_interval: Duration::from_secs(30),
            max_age: Duration::from_secs(120),
            retransmit_interval: Duration::from_secs(1),
            port_costs: Vec::new(),
            max_routers: 4096,
            exclude: Vec::new(),
        }
    }
}

/// Counters of the routing protocol.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct RoutingCounters {
    /// HELLOs sent.
    pub hellos_sent: u64,
    /// LSAs sent (floods, database syncs and repeats).
    pub lsas_sent: u64,
    /// LSAs repeated because no ACK came.
    pub lsas_retransmitted: u64,
    /// LSAs received that were newer than ours.
    pub lsas_accepted: u64,
    /// LSAs this router originated.
    pub lsas_originated: u64,
    /// Messages that failed to parse or came from no known neighbour.
    pub rejected: u64,
    /// Neighbours that became two-way.
    pub adjacencies_up: u64,
    /// Neighbours lost (dead interval passed).
    pub adjacencies_down: u64,
    /// Route computations.
    pub spf_runs: u64,
}

#[derive(Clone, Debug)]
struct Neighbour {
    ad: Xid,
    dead_at: Instant,
    two_way: bool,
}

#[derive(Clone, Debug)]
struct Stored {
    lsa: Lsa,
    received: Instant,
    expires: Instant,
}

/// One router's link-state routing.
#[derive(Debug)]
pub struct LinkState {
    ad: Xid,
    hid: Xid,
    ports: PortId,
    config: LinkStateConfig,
    neighbours: BTreeMap<(PortId, Xid), Neighbour>,
    lsdb: BTreeMap<Xid, Stored>,
    seq: u32,
    stubs: Vec<Xid>,
    // Unacknowledged LSAs: (port, origin) → (seq, when to repeat).
    pending: BTreeMap<(PortId, Xid), (u32, Instant)>,
    // Acknowledgements to send, per port.
    acks: BTreeMap<PortId, Vec<LsaAck>>,
    out: VecDeque<(PortId, Message)>,
    next_hello: Instant,
    next_refresh: Option<Instant>,
    reoriginate: bool,
    routes_dirty: bool,
    counters: RoutingCounters,
    // The next timer, recomputed after every change: routers ask for it
    // after every packet they forward.
    deadline: Instant,
}

impl LinkState {
    /// Routing for router `hid` of AD `ad` with `ports` ports. It starts
    /// at the first [`LinkState::handle_timeout`] (due at once).
    pub fn new(ad: Xid, hid: Xid, ports: PortId, config: LinkStateConfig) -> LinkState {
        LinkState {
            ad,
            hid,
            ports,
            config,
            neighbours: BTreeMap::new(),
            lsdb: BTreeMap::new(),
            seq: 0,
            stubs: Vec::new(),
            pending: BTreeMap::new(),
            acks: BTreeMap::new(),
            out: VecDeque::new(),
            next_hello: Instant::ZERO,
            next_refresh: None,
            reoriginate: true,
            routes_dirty: true,
            counters: RoutingCounters::default(),
            deadline: Instant::ZERO,
        }
    }

    /// Its counters.
    pub fn counters(&self) -> RoutingCounters {
        self.counters
    }

    /// The two-way neighbours: (port, HID).
    pub fn neighbours(&self) -> impl Iterator<Item = (PortId, Xid)> + '_ {
        self.neighbours
            .iter()
            .filter(|(_, n)| n.two_way)
            .map(|(&(p, h), _)| (p, h))
    }

    /// Whether `hid` is a router we hear (two-way or not).
    pub fn is_neighbour(&self, hid: &Xid) -> bool {
        self.neighbours.keys().any(|(_, h)| h == hid)
    }

    /// The routers in the link-state database (including us).
    pub fn routers(&self) -> impl Iterator<Item = &Lsa> + '_ {
        self.lsdb.values().map(|s| &s.lsa)
    }

    /// Sets the XIDs reachable at this router (attached hosts, 4IDs); a
    /// change is advertised at once (if the protocol has started).
    pub fn set_stubs(&mut self, now: Instant, mut stubs: Vec<Xid>) {
        stubs.sort();
        stubs.dedup();
        stubs.truncate(MAX_STUBS);
        if stubs != self.stubs {
            self.stubs = stubs;
            self.reoriginate = true;
            if self.seq > 0 {
                self.finish(now);
            }
        }
    }

    /// Handles a message body heard on `port`.
    pub fn handle_message(
        &mut self,
        now: Instant,
        port: PortId,
        bytes: &[u8],
    ) -> Result<(), MessageError> {
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.counters.rejected += 1;
                return Err(e);
            }
        };
        if port < self.ports {
            match msg {
                Message::Hello(h) => self.on_hello(now, port, h),
                Message::Lsa(l) => self.on_lsa(now, port, l),
                Message::Ack(a) => self.on_ack(port, &a),
            }
        } else {
            self.counters.rejected += 1;
        }
        self.finish(now);
        Ok(())
    }

    fn on_hello(&mut self, now: Instant, port: PortId, h: Hello) {
        if h.hid == self.hid {
            return;
        }
        let dead = Duration::from_millis(u64::from(h.dead_interval_ms.max(1)));
        let two_way = h.heard.contains(&self.hid);
        let key = (port, h.hid);
        let was = self.neighbours.get(&key).map(|n| n.two_way);
        self.neighbours.insert(
            key,
            Neighbour {
                ad: h.ad,
                dead_at: now + dead,
                two_way,
            },
        );
        if was.is_none() {
            // A new neighbour: answer at once so it sees us two-way
            // without waiting a whole hello interval.
            self.send_hello(port);
        }
        if was != Some(two_way) && (two_way || was == Some(true)) {
            self.reoriginate = true;
            if two_way {
                self.counters.adjacencies_up += 1;
                // Database exchange: everything we know, reliably.
                let origins: Vec<Xid> = self.lsdb.keys().copied().collect();
                for o in origins {
                    self.send_lsa(now, port, o);
                }
            } else {
                self.counters.adjacencies_down += 1;
                self.drop_pending(port);
            }
        }
    }

    fn on_lsa(&mut self, now: Instant, port: PortId, lsa: Lsa) {
        if !self
            .neighbours
            .iter()
            .any(|(&(p, _), n)| p == port && n.two_way)
        {
            self.counters.rejected += 1;
            return;
        }
        self.acks.entry(port).or_default().push(LsaAck {
            origin: lsa.hid,
            seq: lsa.seq,
        });
        // An LSA sent is also an implicit acknowledgement of the same one.
        if self
            .pending
            .get(&(port, lsa.hid))
            .is_some_and(|&(s, _)| s <= lsa.seq)
        {
            self.pending.remove(&(port, lsa.hid));
        }
        if lsa.hid == self.hid {
            // Our own, from before a restart: jump past it.
            if lsa.seq >= self.seq {
                self.seq = lsa.seq;
                self.reoriginate = true;
            }
            return;
        }
        let age = Duration::from_secs(u64::from(lsa.age));
        if age >= self.config.max_age {
            return;
        }
        match self.lsdb.get(&lsa.hid).map(|s| s.lsa.seq) {
            Some(s) if s == lsa.seq => {}
            Some(s) if s > lsa.seq => {
                // The sender is behind: give it ours.
                self.send_lsa(now, port, lsa.hid);
            }
            stored => {
                if stored.is_none() && self.lsdb.len() >= self.config.max_routers {
                    self.counters.rejected += 1;
                    return;
                }
                self.counters.lsas_accepted += 1;
                let origin = lsa.hid;
                self.lsdb.insert(
                    origin,
                    Stored {
                        lsa,
                        received: now,
                        expires: now + (self.config.max_age - age),
                    },
                );
                self.routes_dirty = true;
                self.flood(now, origin, Some(port));
            }
        }
    }

    fn on_ack(&mut self, port: PortId, acks: &[LsaAck]) {
        for a in acks {
            if self
                .pending
                .get(&(port, a.origin))
                .is_some_and(|&(s, _)| s <= a.seq)
            {
                self.pending.remove(&(port, a.origin));
            }
        }
    }

    /// When [`LinkState::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.deadline)
    }

    fn next_deadline(&self) -> Instant {
        let mut t = self.next_hello;
        let mut consider = |x: Instant| t = t.min(x);
        if let Some(r) = self.next_refresh {
            consider(r);
        }
        for n in self.neighbours.values() {
            consider(n.dead_at);
        }
        for (o, s) in &self.lsdb {
            if *o != self.hid {
                consider(s.expires);
            }
        }
        for &(_, at) in self.pending.values() {
            consider(at);
        }
        t
    }

    /// Sends HELLOs, refreshes our LSA, forgets silent neighbours, purges
    /// old LSAs and repeats unacknowledged ones, as due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_hello <= now {
            for port in 0..self.ports {
                self.send_hello(port);
            }
            self.next_hello = now + self.config.hello_interval;
        }
        if self.next_refresh.is_some_and(|t| t <= now) {
            self.reoriginate = true;
        }
        let dead: Vec<(PortId, Xid)> = self
            .neighbours
            .iter()
            .filter(|(_, n)| n.dead_at <= now)
            .map(|(&k, _)| k)
            .collect();
        for key in dead {
            if self.neighbours.remove(&key).is_some_and(|n| n.two_way) {
                self.counters.adjacencies_down += 1;
                self.reoriginate = true;
            }
            if !self.neighbours.keys().any(|(p, _)| *p == key.0) {
                self.drop_pending(key.0);
            }
        }
        let me = self.hid;
        let before = self.lsdb.len();
        self.lsdb.retain(|o, s| *o == me || s.expires > now);
        if self.lsdb.len() != before {
            self.routes_dirty = true;
        }
        let due: Vec<(PortId, Xid)> = self
            .pending
            .iter()
            .filter(|(_, &(_, at))| at <= now)
            .map(|(&k, _)| k)
            .collect();
        for (port, origin) in due {
            self.counters.lsas_retransmitted += 1;
            self.send_lsa(now, port, origin);
        }
        self.finish(now);
    }

    /// The next message body to send, and on which port.
    pub fn poll_transmit(&mut self) -> Option<(PortId, Vec<u8>)> {
        self.out.pop_front().map(|(p, m)| (p, m.to_bytes()))
    }

    /// The routes this router should have, when they may have changed
    /// since the last call: every entry carries [`FLAG_ROUTED`].
    pub fn poll_routes(&mut self) -> Option<Vec<(Xid, Route)>> {
        if !self.routes_dirty {
            return None;
        }
        self.routes_dirty = false;
        self.counters.spf_runs += 1;
        Some(self.spf())
    }

    // Re-originates if asked, sends the acknowledgements gathered, and
    // notes the next timer.
    fn finish(&mut self, now: Instant) {
        if self.reoriginate {
            self.reoriginate = false;
            self.originate(now);
        }
        for (port, acks) in std::mem::take(&mut self.acks) {
            for chunk in acks.chunks(255) {
                self.out.push_back((port, Message::Ack(chunk.to_vec())));
            }
        }
        self.deadline = self.next_deadline();
    }

    fn originate(&mut self, now: Instant) {
        self.seq = self.seq.wrapping_add(1);
        let mut links: BTreeMap<Xid, LsaLink> = BTreeMap::new();
        for (&(port, hid), n) in &self.neighbours {
            if !n.two_way {
                continue;
            }
            let cost = self.cost(port);
            let e = links.entry(hid).or_insert(LsaLink {
                ad: n.ad,
                hid,
                cost,
            });
            e.cost = e.cost.min(cost);
        }
        let lsa = Lsa {
            ad: self.ad,
            hid: self.hid,
            seq: self.seq,
            age: 0,
            links: links.into_values().take(255).collect(),
            stubs: self.stubs.clone(),
        };
        self.lsdb.insert(
            self.hid,
            Stored {
                lsa,
                received: now,
                expires: now + self.config.max_age,
            },
        );
        self.counters.lsas_originated += 1;
        self.routes_dirty = true;
        self.next_refresh = Some(now + self.config.refresh_interval);
        self.flood(now, self.hid, None);
    }

    fn cost(&self, port: PortId) -> u32 {
        self.config
            .port_costs
            .get(usize::from(port))
            .copied()
            .unwrap_or(1)
            .max(1)
    }

    fn send_hello(&mut self, port: PortId) {
        let heard = self
            .neighbours
            .keys()
            .filter(|(p, _)| *p == port)
            .map(|(_, h)| *h)
            .take(255)
            .collect();
        self.counters.hellos_sent += 1;
        self.out.push_back((
            port,
            Message::Hello(Hello {
                ad: self.ad,
                hid: self.hid,
                dead_interval_ms: self.config.dead_interval.as_millis().min(u32::MAX as u128)
                    as u32,
                heard,
            }),
        ));
    }

    // Sends `origin`'s LSA on every port with a two-way neighbour except
    // `except`.
    fn flood(&mut self, now: Instant, origin: Xid, except: Option<PortId>) {
        let ports: BTreeSet<PortId> = self
            .neighbours
            .iter()
            .filter(|(&(p, _), n)| n.two_way && Some(p) != except)
            .map(|(&(p, _), _)| p)
            .collect();
        for p in ports {
            self.send_lsa(now, p, origin);
        }
    }

    // Sends the stored LSA of `origin` on `port` and expects an ACK.
    fn send_lsa(&mut self, now: Instant, port: PortId, origin: Xid) {
        let Some(s) = self.lsdb.get(&origin) else {
            self.pending.remove(&(port, origin));
            return;
        };
        let mut lsa = s.lsa.clone();
        let held = now.saturating_since(s.received).as_secs();
        lsa.age = (u64::from(lsa.age) + held).min(u64::from(u16::MAX)) as u16;
        self.pending.insert(
            (port, origin),
            (lsa.seq, now + self.config.retransmit_interval),
        );
        self.counters.lsas_sent += 1;
        self.out.push_back((port, Message::Lsa(lsa)));
    }

    fn drop_pending(&mut self, port: PortId) {
        self.pending.retain(|(p, _), _| *p != port);
    }

    // Dijkstra over two-way links; the route set (see the module doc).
    fn spf(&self) -> Vec<(Xid, Route)> {
        // Edge u→v counts only if v's LSA lists u too.
        let lists = |u: &Xid, v: &Xid| {
            self.lsdb
                .get(u)
                .is_some_and(|s| s.lsa.links.iter().any(|l| l.hid == *v))
        };
        // (distance, first-hop port, first-hop HID) per router.
        let mut best: BTreeMap<Xid, (u64, PortId, Xid)> = BTreeMap::new();
        let mut heap = BinaryHeap::new();
        for (&(port, hid), n) in &self.neighbours {
            if !n.two_way || !lists(&hid, &self.hid) {
                continue;
            }
            let d = u64::from(self.cost(port));
            heap.push(Reverse((d, port, hid, hid)));
        }
        while let Some(Reverse((d, port, first, u))) = heap.pop() {
            if best.contains_key(&u) || u == self.hid {
                continue;
            }
            best.insert(u, (d, port, first));
            let Some(s) = self.lsdb.get(&u) else { continue };
            for l in &s.lsa.links {
                if !best.contains_key(&l.hid) && l.hid != self.hid && lists(&l.hid, &u) {
                    heap.push(Reverse((d + u64::from(l.cost.max(1)), port, first, l.hid)));
                }
            }
        }
        // For each destination XID, the nearest router that offers it.
        let mut chosen: BTreeMap<Xid, (u64, PortId, Xid)> = BTreeMap::new();
        let mut offer = |xid: Xid, via: (u64, PortId, Xid)| {
            let e = chosen.entry(xid).or_insert(via);
            if (via.0, via.1) < (e.0, e.1) {
                *e = via;
            }
        };
        for (router, &via) in &best {
            let Some(s) = self.lsdb.get(router) else {
                continue;
            };
            let lsa = &s.lsa;
            if lsa.ad == self.ad {
                offer(lsa.hid, via);
            } else {
                offer(lsa.ad, via);
            }
            for &x in &lsa.stubs {
                if x.principal() != Principal::HID || lsa.ad == self.ad {
                    offer(x, via);
                }
            }
        }
        let own: BTreeSet<Xid> = self
            .stubs
            .iter()
            .copied()
            .chain([self.ad, self.hid])
            .collect();
        chosen
            .into_iter()
            .filter(|(x, _)| !own.contains(x) && !self.config.exclude.contains(x))
            .map(|(x, (_, port, nh))| {
                let mut r = Route::via(port, nh);
                r.flags |= FLAG_ROUTED;
                (x, r)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad(b: u8) -> Xid {
        Xid::new(Principal::AD, [b; 20])
    }
    fn hid(b: u8) -> Xid {
        Xid::new(Principal::HID, [b; 20])
    }

    /// Routers joined by point-to-point links with a fixed one-way delay;
    /// messages are exchanged in virtual time.
    struct Net {
        routers: Vec<LinkState>,
        // (router a, port a, router b, port b, up)
        links: Vec<(usize, PortId, usize, PortId, bool)>,
        in_flight: Vec<(Instant, usize, PortId, Vec<u8>)>,
        now: Instant,
        delay: Duration,
    }

    impl Net {
        // `spec`: (ad, number of ports) per router; `links` join (router,
        // port) pairs.
        fn new(spec: &[(u8, PortId)], links: &[(usize, PortId, usize, PortId)]) -> Net {
            let routers = spec
                .iter()
                .enumerate()
                .map(|(i, &(a, ports))| {
                    LinkState::new(ad(a), hid(i as u8 + 1), ports, LinkStateConfig::default())
                })
                .collect();
            Net {
                routers,
                links: links
                    .iter()
                    .map(|&(a, pa, b, pb)| (a, pa, b, pb, true))
                    .collect(),
                in_flight: Vec::new(),
                now: Instant::ZERO,
                delay: Duration::from_millis(5),
            }
        }

        fn peer(&self, r: usize, p: PortId) -> Option<(usize, PortId)> {
            self.links.iter().find_map(|&(a, pa, b, pb, up)| {
                if !up {
                    None
                } else if (a, pa) == (r, p) {
                    Some((b, pb))
                } else if (b, pb) == (r, p) {
                    Some((a, pa))
                } else {
                    None
                }
            })
        }

        fn drain(&mut self, r: usize) {
            while let Some((p, m)) = self.routers[r].poll_transmit() {
                if let Some((b, pb)) = self.peer(r, p) {
                    self.in_flight.push((self.now + self.delay, b, pb, m));
                }
            }
        }

        fn run_until(&mut self, end: Instant) {
            loop {
                let timer = (0..self.routers.len())
                    .filter_map(|i| self.routers[i].poll_timeout().map(|t| (t, i)))
                    .min();
                let arrival = self
                    .in_flight
                    .iter()
                    .enumerate()
                    .map(|(k, m)| (m.0, k))
                    .min();
                let next = match (timer, arrival) {
                    (Some((t, _)), Some((a, _))) => t.min(a),
                    (Some((t, _)), None) => t,
                    (None, Some((a, _))) => a,
                    (None, None) => break,
                };
                if next > end {
                    break;
                }
                self.now = next;
                if let Some((a, k)) = arrival {
                    if a == next {
                        let (_, r, p, m) = self.in_flight.remove(k);
                        self.routers[r].handle_message(self.now, p, &m).unwrap();
                        self.drain(r);
                        continue;
                    }
                }
                let (_, i) = timer.unwrap();
                self.routers[i].handle_timeout(self.now);
                self.drain(i);
            }
            self.now = end;
        }

        fn routes(&mut self, r: usize) -> BTreeMap<Xid, (PortId, Xid)> {
            // Take the latest computation (recomputed when asked).
            self.routers[r].routes_dirty = true;
            self.routers[r]
                .poll_routes()
                .unwrap()
                .into_iter()
                .map(|(x, r)| match r.action {
                    xia_stack::forward::Action::Forward(p) => (x, (p, r.next_hop.unwrap())),
                    other => panic!("unexpected {other:?}"),
                })
                .collect()
        }
    }

    // A ring of four routers in four ADs:  r0 -p1- r1 -p1- r2, r0 -p0- r3 - r2
    //   r0.p0 — r3.p0, r0.p1 — r1.p0, r1.p1 — r2.p0, r2.p1 — r3.p1
    fn ring() -> Net {
        Net::new(
            &[(1, 2), (2, 2), (3, 2), (4, 2)],
            &[(0, 0, 3, 0), (0, 1, 1, 0), (1, 1, 2, 0), (2, 1, 3, 1)],
        )
    }

    #[test]
    fn converges_to_shortest_paths() {
        let mut net = ring();
        net.routers[0].config.port_costs = vec![10, 1];
        net.run_until(Instant::from_secs(3));
        let r0 = net.routes(0);
        assert_eq!(r0[&ad(2)], (1, hid(2)));
        // AD 3 is two hops either way; via r1 costs 1 + 1 against 10 + 1.
        assert_eq!(r0[&ad(3)], (1, hid(2)));
        // AD 4 is a neighbour, but at cost 10 against 3 the long way round.
        assert_eq!(r0[&ad(4)], (1, hid(2)));
        assert_eq!(r0.len(), 3, "{r0:?}");
        for r in &net.routers {
            assert_eq!(r.routers().count(), 4);
        }
    }

    #[test]
    fn reconverges_after_a_link_fails_and_recovers() {
        let mut net = ring();
        net.run_until(Instant::from_secs(3));
        assert_eq!(net.routes(0)[&ad(2)], (1, hid(2)));
        net.links[1].4 = false; // r0 — r1 fails
        net.run_until(Instant::from_secs(4));
        // Not yet: the dead interval has not passed.
        assert_eq!(net.routes(0)[&ad(2)], (1, hid(2)));
        net.run_until(Instant::from_secs(9));
        assert_eq!(net.routes(0)[&ad(2)], (0, hid(4)));
        assert_eq!(net.routes(1)[&ad(1)], (1, hid(3)));
        assert!(net.routers[0].counters().adjacencies_down >= 1);
        net.links[1].4 = true;
        net.run_until(Instant::from_secs(12));
        assert_eq!(net.routes(0)[&ad(2)], (1, hid(2)));
    }

    #[test]
    fn a_dead_router_ages_out_and_a_restarted_one_jumps_its_sequence() {
        let mut net = ring();
        net.run_until(Instant::from_secs(50));
        let old_seq = net.routers[1].lsdb[&hid(2)].lsa.seq;
        assert!(old_seq >= 2, "refreshed at 30 s: {old_seq}");
        // r1 restarts with a fresh state machine.
        net.routers[1] = LinkState::new(ad(2), hid(2), 2, LinkStateConfig::default());
        net.run_until(Instant::from_secs(55));
        let seen = net.routers[0].lsdb[&hid(2)].lsa.seq;
        assert!(seen > old_seq, "{seen} > {old_seq}");
        assert_eq!(net.routes(0)[&ad(2)], (1, hid(2)));
        // Now r1 dies for good: neighbours drop it after the dead
        // interval, and its LSA ages out of everyone's database.
        net.links[1].4 = false;
        net.links[2].4 = false;
        net.routers[1] = LinkState::new(ad(2), hid(2), 0, LinkStateConfig::default());
        net.run_until(Instant::from_secs(62));
        assert!(!net.routes(0).contains_key(&ad(2)));
        assert_eq!(net.routes(0)[&ad(3)], (0, hid(4)));
        net.run_until(Instant::from_secs(200));
        assert!(!net.routers[3].lsdb.contains_key(&hid(2)));
    }

    #[test]
    fn stubs_hids_stay_in_their_ad() {
        // r0 and r1 in AD 1, r2 in AD 2, a line r0 — r1 — r2.
        let mut net = Net::new(&[(1, 1), (1, 2), (2, 1)], &[(0, 0, 1, 0), (1, 1, 2, 0)]);
        let host = hid(50);
        let ip = Xid::from_ipv4([10, 0, 0, 3].into());
        net.routers[0].set_stubs(Instant::ZERO, vec![host]);
        net.routers[2].set_stubs(Instant::ZERO, vec![hid(60), ip]);
        net.run_until(Instant::from_secs(3));
        let r1 = net.routes(1);
        assert_eq!(r1[&host], (0, hid(1)));
        assert_eq!(r1[&hid(1)], (0, hid(1)));
        assert!(!r1.contains_key(&hid(60)), "HIDs stay in their AD");
        assert!(!r1.contains_key(&hid(3)), "routers of other ADs: by AD");
        assert_eq!(r1[&ad(2)], (1, hid(3)));
        assert_eq!(r1[&ip], (1, hid(3)));
        assert_eq!(net.routes(0)[&ip], (0, hid(2)));
        // Excluded XIDs are not routed.
        net.routers[0].config.exclude = vec![ad(2)];
        assert!(!net.routes(0).contains_key(&ad(2)));
    }

    #[test]
    fn lost_lsas_are_repeated_until_acknowledged() {
        let mut net = Net::new(&[(1, 1), (2, 1)], &[(0, 0, 1, 0)]);
        net.run_until(Instant::from_secs(2));
        // Cut the link only for the first LSA after a stub change, by
        // dropping what is in flight.
        net.routers[0].set_stubs(net.now, vec![Xid::from_ipv4([10, 0, 0, 1].into())]);
        net.drain(0);
        net.in_flight.clear();
        net.run_until(Instant::from_secs(4));
        assert!(net.routers[0].counters().lsas_retransmitted >= 1);
        assert!(net
            .routes(1)
            .contains_key(&Xid::from_ipv4([10, 0, 0, 1].into())));
    }

    #[test]
    fn garbage_is_rejected_and_counted() {
        let mut ls = LinkState::new(ad(1), hid(1), 1, LinkStateConfig::default());
        assert!(ls.handle_message(Instant::ZERO, 0, &[1, 7]).is_err());
        // An LSA from nobody we know.
        let lsa = Message::Lsa(Lsa {
            ad: ad(2),
            hid: hid(2),
            seq: 1,
            age: 0,
            links: vec![],
            stubs: vec![],
        });
        ls.handle_message(Instant::ZERO, 0, &lsa.to_bytes())
            .unwrap();
        assert_eq!(ls.counters().rejected, 2);
        assert_eq!(ls.routers().count(), 1);
    }
}
