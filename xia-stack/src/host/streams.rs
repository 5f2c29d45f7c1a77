//! Stream sockets on the host: listeners bound to SIDs, connections keyed
//! by their SID pair, and the glue between [`Connection`]s and XIP.
//!
//! A connection's segments leave as XIP packets from its local DAG
//! (`AD HID SID`) to its peer's DAG; incoming XSTREAM packets are matched to
//! a connection by (local SID, peer SID) — never by locators, so a peer that
//! moved is still recognised. When XHCP moves the host to another AD, every
//! connection is rebound to the new local DAG.
//!
//! A stream opened by name ([`Host::connect_name`]) takes its handle at
//! once and waits in [`StreamPhase::Resolving`] for the name server's
//! answer; the answer connects it (the SID, the initial sequence number
//! and the SYN come then) or fails it, and [`HostEvent::Resolved`] says
//! which.

use std::collections::VecDeque;

use rand_chacha::rand_core::RngCore;

use super::{Host, HostError, HostEvent, ResolveError};
use crate::dag::Dag;
use crate::forward::Route;
use crate::identity::Identity;
use crate::naming::NameResponse;
use crate::stream::{Connection, ConnectionId};
use crate::time::Instant;
use crate::wire::xip::{NextHeader, XipRepr, DEFAULT_HOP_LIMIT};
use crate::wire::xstream::{Flags, XstreamRepr};
use crate::xid::{Principal, Xid};

/// A stream listener's handle.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ListenerHandle(pub usize);

/// A stream connection's handle.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct StreamHandle(pub usize);

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Listener {
    sid: Xid,
    backlog: VecDeque<StreamHandle>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Stream {
    phase: Phase,
    // The SID was made for this connection (a client's) and goes with it.
    owns_sid: bool,
    hop_limit: u8,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Phase {
    Resolving { id: u32, name: String },
    Unresolved(ResolveError),
    Cancelled,
    Open(Box<Connection>),
}

impl Stream {
    fn new(phase: Phase, owns_sid: bool) -> Stream {
        Stream {
            phase,
            owns_sid,
            hop_limit: DEFAULT_HOP_LIMIT,
        }
    }

    /// Refuses a restored connection its arithmetic could panic on.
    pub(super) fn check(&self) -> Result<(), String> {
        self.conn().map_or(Ok(()), Connection::check)
    }

    fn conn(&self) -> Option<&Connection> {
        match &self.phase {
            Phase::Open(c) => Some(c),
            _ => None,
        }
    }

    fn conn_mut(&mut self) -> Option<&mut Connection> {
        match &mut self.phase {
            Phase::Open(c) => Some(c),
            _ => None,
        }
    }
}

/// Where a stream is in its life, as [`Host::stream_phase`] tells it.
#[derive(Clone, Copy, Debug)]
pub enum StreamPhase<'a> {
    /// Waiting for the name server to resolve the peer's name.
    Resolving {
        /// The name.
        name: &'a str,
    },
    /// The name did not resolve; the stream never connected.
    Unresolved(&'a ResolveError),
    /// Closed while it was resolving; it never connected.
    Cancelled,
    /// A connection (in any state of its own).
    Open(&'a Connection),
}

impl Host {
    /// Listens for stream connections to `sid` (or a fresh SID).
    pub fn listen(&mut self, sid: Option<Xid>) -> Result<ListenerHandle, HostError> {
        let sid = match sid {
            Some(s) if s.principal() != Principal::SID => return Err(HostError::NotASid(s)),
            Some(s) => s,
            None => Identity::generate(Principal::SID, &mut self.rng).xid(),
        };
        if self.listeners.iter().flatten().any(|l| l.sid == sid) {
            return Err(HostError::AddressInUse(sid));
        }
        let _ = self.tables.insert(sid, Route::LOCAL);
        let l = Listener {
            sid,
            backlog: VecDeque::new(),
        };
        Ok(ListenerHandle(put(&mut self.listeners, l)))
    }

    /// A listener's SID.
    pub fn listener_sid(&self, l: ListenerHandle) -> Option<Xid> {
        self.listeners.get(l.0)?.as_ref().map(|l| l.sid)
    }

    /// The next connection a listener accepted (its handshake may still be
    /// completing; [`StreamEvent::Connected`](crate::stream::StreamEvent::Connected)
    /// says when it is done).
    pub fn accept(&mut self, l: ListenerHandle) -> Option<StreamHandle> {
        self.listeners.get_mut(l.0)?.as_mut()?.backlog.pop_front()
    }

    /// Opens a stream from a fresh SID to `dst` at `now`.
    pub fn connect(&mut self, dst: &Dag, now: Instant) -> Result<StreamHandle, HostError> {
        self.check_stream_limit()?;
        let conn = self.open_connection(dst, now)?;
        let h = StreamHandle(put(
            &mut self.streams,
            Stream::new(Phase::Open(Box::new(conn)), true),
        ));
        self.flush_stream(now, h);
        Ok(h)
    }

    /// Opens a stream to the service called `name`: asks the name server
    /// (as [`Host::resolve`] does) and connects when it answers. The
    /// handle is valid at once; [`HostEvent::Resolved`] says when the name
    /// resolved (and the SYN left) or why it did not.
    pub fn connect_name(&mut self, now: Instant, name: &str) -> Result<StreamHandle, HostError> {
        self.check_stream_limit()?;
        let id = self.resolve(now, name)?;
        let phase = Phase::Resolving {
            id,
            name: name.to_string(),
        };
        Ok(StreamHandle(put(
            &mut self.streams,
            Stream::new(phase, true),
        )))
    }

    fn check_stream_limit(&self) -> Result<(), HostError> {
        if self.streams.iter().flatten().count() >= self.config.max_streams {
            return Err(HostError::TooManyStreams(self.config.max_streams));
        }
        Ok(())
    }

    /// A client connection from a fresh SID to `dst`.
    fn open_connection(&mut self, dst: &Dag, now: Instant) -> Result<Connection, HostError> {
        let key = Identity::generate(Principal::SID, &mut self.rng);
        let sid = key.xid();
        let _ = self.tables.insert(sid, Route::LOCAL);
        let local = self
            .dag()
            .append_xid(sid)
            .map_err(|_| HostError::NoRoute(*dst.intent()))?;
        // Kept so that the connection can follow this host when it moves.
        self.sid_keys.insert(sid, key);
        let iss = self.rng.next_u32();
        Ok(Connection::connect(
            local,
            dst.clone(),
            iss,
            now,
            self.config.stream.clone(),
        ))
    }

    /// Name request `id` went unanswered: if a stream is resolving with
    /// it, fail that stream and return `true`.
    pub(super) fn resolve_failed(&mut self, now: Instant, id: u32) -> bool {
        let Some(i) = self.streams.iter().position(
            |s| matches!(s, Some(Stream { phase: Phase::Resolving { id: r, .. }, .. }) if *r == id),
        ) else {
            return false;
        };
        let Some(Stream {
            phase: Phase::Resolving { name, .. },
            ..
        }) = &self.streams[i]
        else {
            return false;
        };
        let e = ResolveError::NoAnswer(name.clone());
        self.push_event(HostEvent::Resolved {
            stream: StreamHandle(i),
            result: Err(e.clone()),
        });
        if let Some(s) = self.streams[i].as_mut() {
            s.phase = Phase::Unresolved(e);
        }
        self.flush_stream(now, StreamHandle(i));
        true
    }

    /// A name server's answer to request `id`: if a stream is resolving
    /// with it, connect or fail that stream and return `true`.
    pub(super) fn resolved(
        &mut self,
        now: Instant,
        id: u32,
        answer: &Result<NameResponse, String>,
    ) -> bool {
        let Some(i) = self.streams.iter().position(
            |s| matches!(s, Some(Stream { phase: Phase::Resolving { id: r, .. }, .. }) if *r == id),
        ) else {
            return false;
        };
        let h = StreamHandle(i);
        let name = match &self.streams[i] {
            Some(Stream {
                phase: Phase::Resolving { name, .. },
                ..
            }) => name.clone(),
            _ => return false,
        };
        let result = ResolveError::from_answer(&name, answer);
        self.push_event(HostEvent::Resolved {
            stream: h,
            result: result.clone(),
        });
        let phase = match result.map(|dag| self.open_connection(&dag, now)) {
            Ok(Ok(conn)) => Phase::Open(Box::new(conn)),
            // Only a DAG with no room for our SID gets here: no name
            // server can tell us a usable address for it.
            Ok(Err(_)) => Phase::Unresolved(ResolveError::NotFound(name)),
            Err(e) => Phase::Unresolved(e),
        };
        if let Some(s) = self.streams[i].as_mut() {
            s.phase = phase;
        }
        self.flush_stream(now, h);
        true
    }

    /// The connection behind a handle (`None` while it has none: see
    /// [`Host::stream_phase`]).
    pub fn stream(&self, h: StreamHandle) -> Option<&Connection> {
        self.streams.get(h.0)?.as_ref()?.conn()
    }

    /// Where a stream is: resolving its peer's name, failed to, or a
    /// connection.
    pub fn stream_phase(&self, h: StreamHandle) -> Option<StreamPhase<'_>> {
        let s = self.streams.get(h.0)?.as_ref()?;
        Some(match &s.phase {
            Phase::Resolving { name, .. } => StreamPhase::Resolving { name },
            Phase::Unresolved(e) => StreamPhase::Unresolved(e),
            Phase::Cancelled => StreamPhase::Cancelled,
            Phase::Open(c) => StreamPhase::Open(c),
        })
    }

    /// Sets the hop limit of a stream's packets (xia-core's `XOPT_HLIM`;
    /// the default is [`DEFAULT_HOP_LIMIT`]).
    pub fn set_stream_hop_limit(
        &mut self,
        h: StreamHandle,
        hop_limit: u8,
    ) -> Result<(), HostError> {
        self.streams
            .get_mut(h.0)
            .and_then(Option::as_mut)
            .ok_or(HostError::BadStream(h))?
            .hop_limit = hop_limit;
        Ok(())
    }

    /// The hop limit of a stream's packets.
    pub fn stream_hop_limit(&self, h: StreamHandle) -> Option<u8> {
        Some(self.streams.get(h.0)?.as_ref()?.hop_limit)
    }

    fn stream_mut(&mut self, h: StreamHandle) -> Result<&mut Connection, HostError> {
        let s = self
            .streams
            .get_mut(h.0)
            .and_then(Option::as_mut)
            .ok_or(HostError::BadStream(h))?;
        match &mut s.phase {
            Phase::Open(c) => Ok(c),
            Phase::Resolving { .. } => Err(HostError::Resolving(h)),
            Phase::Unresolved(e) => Err(HostError::Resolve(e.clone())),
            Phase::Cancelled => Err(HostError::Stream(
                crate::stream::StreamError::InvalidState {
                    op: "use",
                    state: crate::stream::State::Closed,
                },
            )),
        }
    }

    /// Writes what fits of `data`; returns how much was taken.
    pub fn stream_write(
        &mut self,
        h: StreamHandle,
        data: &[u8],
        now: Instant,
    ) -> Result<usize, HostError> {
        let n = self.stream_mut(h)?.write(data).map_err(HostError::Stream)?;
        self.flush_stream(now, h);
        Ok(n)
    }

    /// Reads received bytes into `buf`; 0 when none are ready (see
    /// [`Connection::is_read_finished`] for the end of the stream), also
    /// while the stream is resolving or after it was cancelled.
    pub fn stream_read(
        &mut self,
        h: StreamHandle,
        buf: &mut [u8],
        now: Instant,
    ) -> Result<usize, HostError> {
        let n = match self.stream_mut(h) {
            Ok(c) => c.read(buf),
            Err(HostError::Resolving(_) | HostError::Stream(_)) => return Ok(0),
            Err(e) => return Err(e),
        };
        // Reading may open the window: let the connection say so.
        self.flush_stream(now, h);
        Ok(n)
    }

    /// Closes our direction (FIN after the queued data). A stream still
    /// resolving its peer's name is cancelled; closing again is a no-op.
    pub fn stream_close(&mut self, h: StreamHandle, now: Instant) -> Result<(), HostError> {
        let s = self
            .streams
            .get_mut(h.0)
            .and_then(Option::as_mut)
            .ok_or(HostError::BadStream(h))?;
        match &mut s.phase {
            Phase::Open(c) => c.close().map_err(HostError::Stream)?,
            Phase::Resolving { .. } => s.phase = Phase::Cancelled,
            Phase::Unresolved(_) | Phase::Cancelled => {}
        }
        self.flush_stream(now, h);
        Ok(())
    }

    /// Ends a stream at once: a connection is reset (RST), a resolution
    /// cancelled.
    pub fn stream_abort(&mut self, h: StreamHandle, now: Instant) -> Result<(), HostError> {
        let s = self
            .streams
            .get_mut(h.0)
            .and_then(Option::as_mut)
            .ok_or(HostError::BadStream(h))?;
        match &mut s.phase {
            Phase::Open(c) => c.abort(),
            Phase::Resolving { .. } => s.phase = Phase::Cancelled,
            Phase::Unresolved(_) | Phase::Cancelled => {}
        }
        self.flush_stream(now, h);
        Ok(())
    }

    /// Forgets a stream (after it closed, or to abandon it); a client's SID
    /// is no longer local.
    pub fn release_stream(&mut self, h: StreamHandle) {
        if let Some(s) = self.streams.get_mut(h.0).and_then(Option::take) {
            if let (true, Some(c)) = (s.owns_sid, s.conn()) {
                self.tables.remove(&c.id().local);
                self.sid_keys.remove(&c.id().local);
            }
        }
    }

    /// How many accepted connections wait on a listener.
    pub fn listener_backlog(&self, l: ListenerHandle) -> Option<usize> {
        Some(self.listeners.get(l.0)?.as_ref()?.backlog.len())
    }

    /// Stops listening. Connections it accepted go on; its SID stays local
    /// while one of them uses it. Connections still in its backlog are
    /// reset.
    pub fn close_listener(&mut self, l: ListenerHandle, now: Instant) -> Result<(), HostError> {
        let listener = self
            .listeners
            .get_mut(l.0)
            .and_then(Option::take)
            .ok_or(HostError::BadListener(l))?;
        for h in listener.backlog {
            let _ = self.stream_abort(h, now);
            self.release_stream(h);
        }
        let in_use = self
            .streams
            .iter()
            .flatten()
            .filter_map(Stream::conn)
            .any(|c| c.id().local == listener.sid);
        if !in_use {
            self.tables.remove(&listener.sid);
        }
        Ok(())
    }

    /// Handles an XSTREAM segment delivered to this host.
    pub(super) fn deliver_stream(&mut self, now: Instant, repr: &XipRepr, payload: &[u8]) {
        let Ok(seg) = XstreamRepr::parse(payload) else {
            self.counters.malformed += 1;
            return;
        };
        let peer = *repr.src.intent();
        let local = repr.dst.nodes().iter().map(|n| n.xid).find(|x| {
            x.principal() == Principal::SID
                && self.tables.lookup(x) == crate::forward::Lookup::Hit(Route::LOCAL)
        });
        let Some(local) = local else {
            self.counters.no_socket += 1;
            return;
        };
        let id = ConnectionId { local, peer };
        if let Some(i) = self.streams.iter().position(|s| {
            s.as_ref()
                .and_then(Stream::conn)
                .is_some_and(|c| c.id() == id)
        }) {
            if let Some(c) = self.streams[i].as_mut().and_then(Stream::conn_mut) {
                c.handle_segment(now, &seg);
            }
            return self.flush_stream(now, StreamHandle(i));
        }
        let is_syn = seg.flags.contains(Flags::SYN) && !seg.flags.contains(Flags::ACK);
        let listener = self
            .listeners
            .iter()
            .position(|l| l.as_ref().is_some_and(|l| l.sid == local));
        let (Some(li), true) = (listener, is_syn) else {
            self.counters.no_socket += 1;
            return;
        };
        if self.streams.iter().flatten().count() >= self.config.max_streams {
            self.counters.queue_full += 1;
            return;
        }
        let Ok(local_dag) = self.dag().append_xid(local) else {
            return;
        };
        let iss = self.rng.next_u32();
        let Ok(conn) = Connection::accept(
            local_dag,
            repr.src.clone(),
            &seg,
            iss,
            now,
            self.config.stream.clone(),
        ) else {
            self.counters.malformed += 1;
            return;
        };
        let h = StreamHandle(put(
            &mut self.streams,
            Stream::new(Phase::Open(Box::new(conn)), false),
        ));
        if let Some(l) = self.listeners[li].as_mut() {
            l.backlog.push_back(h);
        }
        self.push_event(HostEvent::Incoming {
            listener: ListenerHandle(li),
            stream: h,
        });
        self.flush_stream(now, h);
    }

    /// Sends what a connection wants sent and passes on its events.
    pub(super) fn flush_stream(&mut self, now: Instant, h: StreamHandle) {
        let mut out = Vec::new();
        let mut events = Vec::new();
        let mut hop_limit = DEFAULT_HOP_LIMIT;
        self.tx_now = self.tx_now.max(now);
        let room = self.stream_tx_limit().saturating_sub(self.transmits.len());
        if let Some(Some(s)) = self.streams.get_mut(h.0) {
            hop_limit = s.hop_limit;
            if let Some(c) = s.conn_mut() {
                while out.len() < room {
                    let Some(seg) = c.poll_transmit(now) else {
                        break;
                    };
                    out.push((c.peer_dag().clone(), c.local_dag().clone(), seg));
                }
                if out.len() >= room {
                    // It may have more: it goes on when the queue drains.
                    self.streams_held = true;
                }
                while let Some(e) = c.poll_event() {
                    events.push(e);
                }
            }
        }
        for (dst, src, seg) in out {
            let mut repr = XipRepr::new(dst.clone(), src, NextHeader::Xstream, 0);
            repr.hop_limit = hop_limit;
            if let Ok(pkt) = repr.to_bytes(&seg) {
                // A full queue or no route is a lost segment: the
                // connection's retransmission covers it.
                let _ = self.send_packet(pkt, &dst);
            }
        }
        for event in events {
            self.push_event(HostEvent::Stream { stream: h, event });
        }
    }

    /// Gives the host the key of a SID it serves (a listener's), so that
    /// its connections can tell their peers when the host moves.
    pub fn add_sid_key(&mut self, key: Identity) {
        self.sid_keys.insert(key.xid(), key);
    }

    /// Rebinds every connection to this host's current DAG (after XHCP
    /// moved it). Where the host holds the SID's key, the peer is told
    /// with a signed MIGRATE; otherwise only our end moves, and the peer
    /// must learn the new DAG some other way (a name update).
    pub(super) fn rebind_streams(&mut self, now: Instant) {
        let dag = self.dag();
        // Our clock: only the order of one connection's MIGRATEs matters
        // (kept across a restore by `migrate_clock_ms`).
        let timestamp_ms = (now.as_nanos() / 1_000_000).saturating_add(self.migrate_clock_ms);
        for i in 0..self.streams.len() {
            if let Some(c) = self.streams[i].as_mut().and_then(Stream::conn_mut) {
                let sid = c.id().local;
                if let Ok(new) = dag.append_xid(sid) {
                    let signed = match self.sid_keys.get(&sid) {
                        Some(key) => c.migrate(key, new.clone(), timestamp_ms, now).is_ok(),
                        None => false,
                    };
                    if !signed {
                        let _ = c.rebind_local(new);
                    }
                }
            }
            self.flush_stream(now, StreamHandle(i));
        }
    }

    /// When the host next needs [`Host::handle_timeout`]: the earliest of
    /// its connections' timers and chunk-fetch retries.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let streams = self
            .streams
            .iter()
            .flatten()
            .filter_map(|s| s.conn()?.poll_timeout())
            .min();
        [streams, self.chunk_timeout(), self.name_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs the connection timers and chunk-fetch retries that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.chunk_timeouts(now);
        self.name_timeouts(now);
        for i in 0..self.streams.len() {
            let due = self.streams[i]
                .as_ref()
                .and_then(|s| s.conn()?.poll_timeout())
                .is_some_and(|t| t <= now);
            if due {
                if let Some(c) = self.streams[i].as_mut().and_then(Stream::conn_mut) {
                    c.handle_timeout(now);
                }
                self.flush_stream(now, StreamHandle(i));
            }
        }
    }
}

/// Puts `item` in the first free slot; returns its index.
fn put<T>(slots: &mut Vec<Option<T>>, item: T) -> usize {
    match slots.iter().position(Option::is_none) {
        Some(i) => {
            slots[i] = Some(item);
            i
        }
        None => {
            slots.push(Some(item));
            slots.len() - 1
        }
    }
}
