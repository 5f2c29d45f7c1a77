//! Stream sockets: [`XStream`] (a connection) and [`XListener`].

use super::{Peer, SocketError};
use crate::dag::Dag;
use crate::host::{Host, HostError, HostEvent, ListenerHandle, StreamHandle, StreamPhase};
use crate::stream::{Connection, State};
use crate::time::Instant;
use crate::xid::Xid;

/// Where a stream is, as an application sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// Waiting for the name server to resolve the peer's name.
    Resolving,
    /// The handshake is under way.
    Connecting,
    /// Synchronized and not yet closed in both directions (one side may
    /// have closed: see [`XStream::can_read`] and [`XStream::can_write`]).
    Connected,
    /// Closed in both directions (bytes received may still wait to be
    /// read), or closed before it connected.
    Closed,
    /// The name did not resolve or the connection failed.
    Failed(SocketError),
}

/// A reliable byte stream (XStream, xia-core's `XSOCK_STREAM`).
///
/// A handle: it stays valid until [`XStream::release`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct XStream(StreamHandle);

/// Adopts a stream the host opened (e.g. with [`Host::connect`]).
impl From<StreamHandle> for XStream {
    fn from(h: StreamHandle) -> XStream {
        XStream(h)
    }
}

impl XStream {
    /// Opens a stream to `peer` — a DAG, or a name to resolve first — from
    /// a fresh SID. It returns at once: the handshake (and the name
    /// lookup) proceed as the driver moves packets, see
    /// [`XStream::state`].
    ///
    /// Fails at once if the host has no name server to ask (for a name),
    /// or has too many streams.
    pub fn connect(
        host: &mut Host,
        now: Instant,
        peer: impl Into<Peer>,
    ) -> Result<XStream, SocketError> {
        let h = match peer.into() {
            Peer::Dag(dag) => host.connect(&dag, now)?,
            Peer::Name(name) => host.connect_name(now, &name)?,
        };
        Ok(XStream(h))
    }

    /// The host's handle for this stream.
    pub fn handle(self) -> StreamHandle {
        self.0
    }

    /// Where the stream is.
    pub fn state(&self, host: &Host) -> StreamState {
        let Some(phase) = host.stream_phase(self.0) else {
            return StreamState::Failed(SocketError::Host(HostError::BadStream(self.0)));
        };
        match phase {
            StreamPhase::Resolving { .. } => StreamState::Resolving,
            StreamPhase::Unresolved(e) => StreamState::Failed(SocketError::Resolve(e.clone())),
            StreamPhase::Cancelled => StreamState::Closed,
            StreamPhase::Open(c) => match (c.error(), c.state()) {
                (Some(e), _) => StreamState::Failed(SocketError::Connection(e)),
                (None, State::SynSent | State::SynReceived) => StreamState::Connecting,
                (None, State::Closed | State::TimeWait) => StreamState::Closed,
                (None, _) => StreamState::Connected,
            },
        }
    }

    /// Reads received bytes into `buf`.
    ///
    /// `Ok(0)` (with a non-empty `buf`) is the end of the stream: the peer
    /// closed and every byte it sent has been read. With nothing to read
    /// yet — or while the peer's name is being resolved — it is
    /// [`SocketError::WouldBlock`]. A failed connection first yields the
    /// bytes it had received, then its error.
    pub fn read(
        &self,
        host: &mut Host,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<usize, SocketError> {
        match host.stream_phase(self.0) {
            None => return Err(SocketError::Host(HostError::BadStream(self.0))),
            Some(StreamPhase::Resolving { .. }) => return Err(SocketError::WouldBlock),
            Some(StreamPhase::Unresolved(e)) => return Err(SocketError::Resolve(e.clone())),
            Some(StreamPhase::Cancelled) => return Ok(0),
            Some(StreamPhase::Open(_)) => {}
        }
        let n = host.stream_read(self.0, buf, now)?;
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        match host.stream(self.0) {
            Some(c) => end_of_read(c),
            None => Err(SocketError::Host(HostError::BadStream(self.0))),
        }
    }

    /// Queues as much of `data` as the send buffer takes; returns how
    /// much. With no room it is [`SocketError::WouldBlock`], and a
    /// [`StreamEvent::Writable`] event says when to try again.
    ///
    /// A client cannot write before its handshake completes (as with a
    /// non-blocking `connect` in POSIX): while it resolves or connects,
    /// `write` is `WouldBlock` and [`StreamEvent::Connected`] says when to
    /// try again. A stream a listener accepted may write at once; its data
    /// leaves when the handshake completes.
    ///
    /// [`StreamEvent::Writable`]: crate::stream::StreamEvent::Writable
    /// [`StreamEvent::Connected`]: crate::stream::StreamEvent::Connected
    pub fn write(&self, host: &mut Host, now: Instant, data: &[u8]) -> Result<usize, SocketError> {
        let connecting = host
            .stream(self.0)
            .is_some_and(|c| c.state() == State::SynSent && c.error().is_none());
        if connecting {
            return Err(SocketError::WouldBlock);
        }
        match host.stream_write(self.0, data, now)? {
            0 if !data.is_empty() => Err(SocketError::WouldBlock),
            n => Ok(n),
        }
    }

    /// Closes our direction: a FIN follows the queued data, and reading
    /// goes on until the peer closes too (`shutdown(Write)` in `std`).
    /// A client stream still resolving or connecting is abandoned, as TCP
    /// does. Closing again does nothing.
    pub fn close(&self, host: &mut Host, now: Instant) -> Result<(), SocketError> {
        host.stream_close(self.0, now)?;
        Ok(())
    }

    /// Forgets the stream and frees its handle. A connection that is not
    /// closed yet is reset first. To end a stream gracefully, [`close`]
    /// it and release it once [`state`] is [`StreamState::Closed`].
    ///
    /// [`close`]: XStream::close
    /// [`state`]: XStream::state
    pub fn release(self, host: &mut Host, now: Instant) {
        let open = host
            .stream(self.0)
            .is_some_and(|c| !matches!(c.state(), State::Closed | State::TimeWait));
        if open {
            let _ = host.stream_abort(self.0, now);
        }
        host.release_stream(self.0);
    }

    /// Whether [`read`](XStream::read) would return something other than
    /// `WouldBlock`: data, the end of the stream, or an error.
    pub fn can_read(&self, host: &Host) -> bool {
        match host.stream_phase(self.0) {
            None | Some(StreamPhase::Unresolved(_) | StreamPhase::Cancelled) => true,
            Some(StreamPhase::Resolving { .. }) => false,
            Some(StreamPhase::Open(c)) => c.readable() > 0 || end_of_read(c).is_ok_and(|n| n == 0),
        }
    }

    /// Whether [`write`](XStream::write) would take at least one byte now.
    pub fn can_write(&self, host: &Host) -> bool {
        host.stream(self.0).is_some_and(|c| {
            c.error().is_none()
                && matches!(
                    c.state(),
                    State::SynReceived | State::Established | State::CloseWait
                )
                && c.writable() > 0
        })
    }

    /// Our address (`AD HID SID`), once connecting.
    pub fn local_dag(&self, host: &Host) -> Option<Dag> {
        host.stream(self.0).map(|c| c.local_dag().clone())
    }

    /// The peer's address, once known.
    pub fn peer_dag(&self, host: &Host) -> Option<Dag> {
        host.stream(self.0).map(|c| c.peer_dag().clone())
    }

    /// The connection itself, for its statistics and details.
    pub fn connection<'h>(&self, host: &'h Host) -> Option<&'h Connection> {
        host.stream(self.0)
    }

    /// Sets the hop limit of the stream's packets (`XOPT_HLIM`).
    pub fn set_hop_limit(&self, host: &mut Host, hop_limit: u8) -> Result<(), SocketError> {
        Ok(host.set_stream_hop_limit(self.0, hop_limit)?)
    }

    /// The hop limit of the stream's packets.
    pub fn hop_limit(&self, host: &Host) -> Option<u8> {
        host.stream_hop_limit(self.0)
    }

    /// Whether `event` is about this stream.
    pub fn matches(&self, event: &HostEvent) -> bool {
        match event {
            HostEvent::Stream { stream, .. } | HostEvent::Resolved { stream, .. } => {
                *stream == self.0
            }
            _ => false,
        }
    }
}

/// What a read that found no bytes means: the end, an error, or not yet.
fn end_of_read(c: &Connection) -> Result<usize, SocketError> {
    if let Some(e) = c.error() {
        return Err(SocketError::Connection(e));
    }
    if c.is_read_finished() || c.state() == State::Closed {
        return Ok(0);
    }
    Err(SocketError::WouldBlock)
}

/// A listener for stream connections to a SID (`Xbind` + `Xlisten`).
///
/// The host completes handshakes on its own; [`XListener::accept`] takes
/// the connections it accepted, in order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct XListener(ListenerHandle);

/// Adopts a listener the host opened (with [`Host::listen`]).
impl From<ListenerHandle> for XListener {
    fn from(h: ListenerHandle) -> XListener {
        XListener(h)
    }
}

impl XListener {
    /// Listens on `sid`, or on a fresh SID when `None`.
    pub fn bind(host: &mut Host, sid: Option<Xid>) -> Result<XListener, SocketError> {
        Ok(XListener(host.listen(sid)?))
    }

    /// The host's handle for this listener.
    pub fn handle(self) -> ListenerHandle {
        self.0
    }

    /// The SID it listens on.
    pub fn sid(&self, host: &Host) -> Option<Xid> {
        host.listener_sid(self.0)
    }

    /// Its address on the host's current network: `AD HID SID`.
    pub fn local_dag(&self, host: &Host) -> Option<Dag> {
        host.dag().append_xid(self.sid(host)?).ok()
    }

    /// The next accepted connection; [`SocketError::WouldBlock`] if none
    /// is waiting. Its handshake may still be completing: data can be
    /// written at once and leaves when it has.
    pub fn accept(&self, host: &mut Host) -> Result<XStream, SocketError> {
        if host.listener_sid(self.0).is_none() {
            return Err(SocketError::Host(HostError::BadListener(self.0)));
        }
        host.accept(self.0)
            .map(XStream)
            .ok_or(SocketError::WouldBlock)
    }

    /// Whether a connection is waiting to be accepted.
    pub fn can_accept(&self, host: &Host) -> bool {
        host.listener_backlog(self.0).is_some_and(|n| n > 0)
    }

    /// Stops listening; connections not yet accepted are reset, accepted
    /// ones go on.
    pub fn close(self, host: &mut Host, now: Instant) -> Result<(), SocketError> {
        Ok(host.close_listener(self.0, now)?)
    }

    /// Whether `event` is about this listener.
    pub fn matches(&self, event: &HostEvent) -> bool {
        matches!(event, HostEvent::Incoming { listener, .. } if *listener == self.0)
    }
}
