//! Stream sockets on the host: listeners bound to SIDs, connections keyed
//! by their SID pair, and the glue between [`Connection`]s and XIP.
//!
//! A connection's segments leave as XIP packets from its local DAG
//! (`AD HID SID`) to its peer's DAG; incoming XSTREAM packets are matched to
//! a connection by (local SID, peer SID) — never by locators, so a peer that
//! moved is still recognised. When XHCP moves the host to another AD, every
//! connection is rebound to the new local DAG.

use std::collections::VecDeque;

use rand_chacha::rand_core::RngCore;

use super::{Host, HostError, HostEvent};
use crate::dag::Dag;
use crate::forward::Route;
use crate::identity::Identity;
use crate::stream::{Connection, ConnectionId};
use crate::time::Instant;
use crate::wire::xip::{NextHeader, XipRepr};
use crate::wire::xstream::{Flags, XstreamRepr};
use crate::xid::{Principal, Xid};

/// A stream listener's handle.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ListenerHandle(pub usize);

/// A stream connection's handle.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct StreamHandle(pub usize);

#[derive(Debug)]
pub(super) struct Listener {
    sid: Xid,
    backlog: VecDeque<StreamHandle>,
}

#[derive(Debug)]
pub(super) struct Stream {
    conn: Connection,
    // The SID was made for this connection (a client's) and goes with it.
    owns_sid: bool,
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
    /// completing; [`StreamEvent::Connected`] says when it is done).
    pub fn accept(&mut self, l: ListenerHandle) -> Option<StreamHandle> {
        self.listeners.get_mut(l.0)?.as_mut()?.backlog.pop_front()
    }

    /// Opens a stream from a fresh SID to `dst` at `now`.
    pub fn connect(&mut self, dst: &Dag, now: Instant) -> Result<StreamHandle, HostError> {
        if self.streams.iter().flatten().count() >= self.config.max_streams {
            return Err(HostError::TooManyStreams(self.config.max_streams));
        }
        let sid = Identity::generate(Principal::SID, &mut self.rng).xid();
        let _ = self.tables.insert(sid, Route::LOCAL);
        let local = self
            .dag()
            .append_xid(sid)
            .map_err(|_| HostError::NoRoute(*dst.intent()))?;
        let iss = self.rng.next_u32();
        let conn = Connection::connect(local, dst.clone(), iss, now, self.config.stream.clone());
        let h = StreamHandle(put(
            &mut self.streams,
            Stream {
                conn,
                owns_sid: true,
            },
        ));
        self.flush_stream(now, h);
        Ok(h)
    }

    /// The connection behind a handle.
    pub fn stream(&self, h: StreamHandle) -> Option<&Connection> {
        self.streams.get(h.0)?.as_ref().map(|s| &s.conn)
    }

    fn stream_mut(&mut self, h: StreamHandle) -> Result<&mut Connection, HostError> {
        self.streams
            .get_mut(h.0)
            .and_then(Option::as_mut)
            .map(|s| &mut s.conn)
            .ok_or(HostError::BadStream(h))
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
    /// [`Connection::is_read_finished`] for the end of the stream).
    pub fn stream_read(
        &mut self,
        h: StreamHandle,
        buf: &mut [u8],
        now: Instant,
    ) -> Result<usize, HostError> {
        let n = self.stream_mut(h)?.read(buf);
        // Reading may open the window: let the connection say so.
        self.flush_stream(now, h);
        Ok(n)
    }

    /// Closes our direction (FIN after the queued data).
    pub fn stream_close(&mut self, h: StreamHandle, now: Instant) -> Result<(), HostError> {
        self.stream_mut(h)?.close().map_err(HostError::Stream)?;
        self.flush_stream(now, h);
        Ok(())
    }

    /// Forgets a stream (after it closed, or to abandon it); a client's SID
    /// is no longer local.
    pub fn release_stream(&mut self, h: StreamHandle) {
        if let Some(s) = self.streams.get_mut(h.0).and_then(Option::take) {
            if s.owns_sid {
                self.tables.remove(&s.conn.id().local);
            }
        }
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
        if let Some(i) = self
            .streams
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.conn.id() == id))
        {
            if let Some(s) = self.streams[i].as_mut() {
                s.conn.handle_segment(now, &seg);
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
            Stream {
                conn,
                owns_sid: false,
            },
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
    fn flush_stream(&mut self, now: Instant, h: StreamHandle) {
        let mut out = Vec::new();
        let mut events = Vec::new();
        if let Some(Some(s)) = self.streams.get_mut(h.0) {
            while let Some(seg) = s.conn.poll_transmit(now) {
                out.push((s.conn.peer_dag().clone(), s.conn.local_dag().clone(), seg));
            }
            while let Some(e) = s.conn.poll_event() {
                events.push(e);
            }
        }
        for (dst, src, seg) in out {
            if let Ok(pkt) = XipRepr::new(dst.clone(), src, NextHeader::Xstream, 0).to_bytes(&seg) {
                // A full queue or no route is a lost segment: the
                // connection's retransmission covers it.
                let _ = self.send_packet(pkt, &dst);
            }
        }
        for event in events {
            self.push_event(HostEvent::Stream { stream: h, event });
        }
    }

    /// Rebinds every connection to this host's current DAG (after XHCP
    /// moved it).
    pub(super) fn rebind_streams(&mut self, now: Instant) {
        let dag = self.dag();
        for i in 0..self.streams.len() {
            if let Some(s) = self.streams[i].as_mut() {
                let sid = s.conn.id().local;
                if let Ok(new) = dag.append_xid(sid) {
                    let _ = s.conn.rebind_local(new);
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
            .filter_map(|s| s.conn.poll_timeout())
            .min();
        match (streams, self.chunk_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the connection timers and chunk-fetch retries that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.chunk_timeouts(now);
        for i in 0..self.streams.len() {
            let due = self.streams[i]
                .as_ref()
                .and_then(|s| s.conn.poll_timeout())
                .is_some_and(|t| t <= now);
            if due {
                if let Some(s) = self.streams[i].as_mut() {
                    s.conn.handle_timeout(now);
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
