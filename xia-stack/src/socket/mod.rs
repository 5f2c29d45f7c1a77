//! The socket API: xia-core's Xsocket calls, the Rust way, over the
//! sans-IO [`Host`].
//!
//! | xia-core | here |
//! |---|---|
//! | `Xsocket(XSOCK_STREAM)` + `Xconnect` | [`XStream::connect`] (a DAG or a name) |
//! | `Xbind` + `Xlisten` + `Xaccept` | [`XListener::bind`], [`XListener::accept`] |
//! | `Xsend` / `Xrecv` / `Xclose` | [`XStream::write`] / [`XStream::read`] / [`XStream::close`] |
//! | `Xsocket(XSOCK_DGRAM)` + `Xbind` | [`XDatagram::bind`] |
//! | `Xsendto` / `Xrecvfrom` | [`XDatagram::send_to`] / [`XDatagram::recv_from`] |
//! | `Xsocket(XSOCK_RAW)` | [`XRaw::open`] |
//! | `Xsetsockopt(XOPT_HLIM)` / `(XOPT_NEXT_PROTO)` | `set_hop_limit` / [`XRaw::set_next_header`] |
//! | `XgetDAGbyName` / `XregisterName` | [`resolve`] / [`register`] |
//! | `XfetchChunk` / `XputChunk` | [`fetch_chunk`] / [`put_chunk`] |
//!
//! # Handles and an explicit `&mut Host`
//!
//! A socket is a small `Copy` handle (an index into the host's tables,
//! like smoltcp's `SocketHandle`), and every operation borrows the host
//! for the length of the call:
//!
//! ```
//! # use xia_stack::{Identity, Principal, Xid};
//! # use xia_stack::host::{Host, HostConfig};
//! # use xia_stack::socket::{SocketError, XListener, XStream};
//! # use xia_stack::time::Instant;
//! # fn host(seed: u8) -> Host {
//! #     let id = Identity::from_secret_bytes(Principal::HID, &[seed; 32]);
//! #     Host::new(HostConfig::new(id, Xid::new(Principal::AD, [7; 20]), None))
//! # }
//! # // The driver's job: move packets between the two hosts.
//! # fn pump(a: &mut Host, b: &mut Host) {
//! #     loop {
//! #         let mut moved = false;
//! #         while let Some(t) = a.poll_transmit() {
//! #             b.handle_packet(Instant::ZERO, 0, t.packet);
//! #             moved = true;
//! #         }
//! #         while let Some(t) = b.poll_transmit() {
//! #             a.handle_packet(Instant::ZERO, 0, t.packet);
//! #             moved = true;
//! #         }
//! #         if !moved {
//! #             break;
//! #         }
//! #     }
//! # }
//! # let (mut client, mut server) = (host(1), host(2));
//! # let now = Instant::ZERO;
//! let web = Xid::new(Principal::SID, [0x77; 20]);
//! let listener = XListener::bind(&mut server, Some(web))?;
//! let to_web = listener.local_dag(&server).expect("bound");
//! let stream = XStream::connect(&mut client, now, &to_web)?; // or a name: "web.example"
//! // Nothing has travelled yet: the SYN waits in the client's queue.
//! assert_eq!(stream.write(&mut client, now, b"hello"), Err(SocketError::WouldBlock));
//! assert_eq!(listener.accept(&mut server), Err(SocketError::WouldBlock));
//! pump(&mut client, &mut server);
//! let conn = listener.accept(&mut server)?;
//! stream.write(&mut client, now, b"hello")?;
//! pump(&mut client, &mut server);
//! let mut buf = [0u8; 64];
//! let n = conn.read(&mut server, now, &mut buf)?;
//! assert_eq!(&buf[..n], b"hello");
//! # Ok::<(), SocketError>(())
//! ```
//!
//! Why not smoltcp's `sockets.get_mut::<TcpSocket>(h)`, a borrowed socket
//! with methods of its own? Because here a socket is not separable from
//! its host: writing to a stream emits segments into the host's transmit
//! queue, an unbound client draws its SID from the host's RNG, a
//! connection by name goes through the host's resolver, and a datagram is
//! routed through the host's tables. A borrowed view would have to borrow
//! the whole host anyway. Handles taking `&mut Host` say exactly that,
//! and they keep what makes the cores testable:
//!
//! - the host stays owned by its driver (the simulator, a test, later a
//!   tokio task), which polls [`Host::poll_transmit`],
//!   [`Host::poll_event`] and [`Host::poll_timeout`] after every call, as
//!   it does for the host's own commands;
//! - handles have no lifetime, so applications keep them in their
//!   structs — no `Rc<RefCell<Host>>`;
//! - every call that may send takes `now`: there is no hidden clock.
//!
//! A handle belongs to the host that made it and means nothing to
//! another. It stays valid until its socket is closed (datagram, raw,
//! listener) or released (stream). Using it afterwards is a logic error:
//! the call fails with a "no such socket" error, or, once the slot has
//! been reused, acts on a newer socket.
//!
//! # Non-blocking semantics and readiness
//!
//! Nothing blocks. An operation that cannot make progress now returns
//! [`SocketError::WouldBlock`]: reading with no data ready, writing into a
//! full send buffer, accepting with an empty backlog, receiving from an
//! empty queue, reading or writing a stream whose peer's name is still
//! being resolved, writing before the handshake completed. A read that returns `Ok(0)` is the end of the stream
//! (the peer closed and everything it sent was read), as in `std::io`.
//!
//! Readiness comes two ways, in the manner of `mio`/tokio:
//!
//! - events: the host's [`HostEvent`]s name the socket they concern
//!   (`Readable`, `Incoming`, `Stream`, `Resolved`, `RawReadable`, …);
//!   each handle's `matches` says whether an event is about it. After such
//!   an event, retry the operation that would have blocked.
//! - poll methods: `can_read`, `can_write`, [`XListener::can_accept`],
//!   [`XStream::state`] tell without side effects whether an operation
//!   would make progress now.
//!
//! One-shot requests — [`resolve`], [`register`], [`fetch_chunk`] —
//! complete with an event that carries their result; their handle
//! recognises it ([`Resolution::answer`], [`NameRegistration::answer`],
//! [`ChunkFetch::result`]).
//!
//! This is the contract the tokio layer (a later issue) builds on: its
//! `AsyncRead::poll_read` calls [`XStream::read`], and on `WouldBlock`
//! parks the task's waker under the handle until the driver sees an
//! event that `matches` it.
//!
//! # Connecting by name
//!
//! [`XStream::connect`] with a name ([`Peer::Name`], or any `&str`) asks
//! the name server the host knows (from XHCP or
//! [`Host::set_name_server`]) and returns the stream at once, in
//! [`StreamState::Resolving`]. The answer connects it — a fresh SID, then
//! the SYN — or fails it with [`SocketError::Resolve`]; either way the
//! host raises [`HostEvent::Resolved`]. With no name server known,
//! `connect` fails at once. The name request is one datagram: if it is
//! lost the stream stays resolving (there is no retry yet), and the
//! application may give up with [`XStream::close`].
//!
//! A client stream always gets a fresh SID (a new key pair from the
//! host's seeded RNG), as in xia-core.
//!
//! # Options
//!
//! Every socket has a hop limit (`set_hop_limit`, xia-core's `XOPT_HLIM`,
//! default [`DEFAULT_HOP_LIMIT`](crate::wire::xip::DEFAULT_HOP_LIMIT)):
//! the value its packets are built with. As for every packet the host
//! sends (a ping's too), the host's own forwarding step counts as the
//! first hop, so a packet leaves with one less. A raw socket's next header
//! ([`XRaw::set_next_header`], `XOPT_NEXT_PROTO`) chooses what it sends
//! and receives; datagram and stream sockets have theirs fixed by their
//! protocol.

mod chunks;
mod datagram;
mod names;
mod stream;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::content::ContentError;
use crate::dag::Dag;
use crate::host::HostError;
use crate::naming::NameError;
use crate::stream::{ConnectionError, StreamError};

pub use crate::host::{Host, HostEvent, NetError, ResolveError};
pub use chunks::{fetch_chunk, put_chunk, ChunkFetch};
pub use datagram::{XDatagram, XRaw};
pub use names::{
    register, resolve, NameKeeper, NameRegistration, Resolution, NAME_REFUSED_RETRY, NAME_RETRY,
};
pub use stream::{StreamState, XListener, XStream};

/// Where a stream connects: a DAG, or a name the name server resolves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A DAG whose intent is the service's SID.
    Dag(Dag),
    /// A registered name.
    Name(String),
}

impl From<Dag> for Peer {
    fn from(d: Dag) -> Peer {
        Peer::Dag(d)
    }
}

impl From<&Dag> for Peer {
    fn from(d: &Dag) -> Peer {
        Peer::Dag(d.clone())
    }
}

/// A string is a name. (To connect to a DAG written as text, parse it:
/// `"RE AD:… HID:… SID:…".parse::<Dag>()`.)
impl From<&str> for Peer {
    fn from(name: &str) -> Peer {
        Peer::Name(name.to_string())
    }
}

impl From<String> for Peer {
    fn from(name: String) -> Peer {
        Peer::Name(name)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Dag(d) => match d.to_re_string() {
                Some(re) => f.write_str(&re),
                None => write!(f, "{d}"),
            },
            Peer::Name(n) => write!(f, "name:{n}"),
        }
    }
}

/// Why a socket operation did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocketError {
    /// Not now: try again after an event about this socket.
    #[error("operation would block")]
    WouldBlock,
    /// The peer's name did not resolve.
    #[error(transparent)]
    Resolve(ResolveError),
    /// The connection failed: refused, reset or timed out.
    #[error(transparent)]
    Connection(ConnectionError),
    /// The stream cannot do this in its state (e.g. write after close).
    #[error(transparent)]
    Stream(StreamError),
    /// The name server refused a registration (its reason).
    #[error("name server refused: {0}")]
    Refused(String),
    /// Not a name names may be.
    #[error(transparent)]
    Name(NameError),
    /// A chunk could not be published or fetched.
    #[error(transparent)]
    Content(ContentError),
    /// The host refused the command (no such socket, address in use, no
    /// route, no name server, queue full, …).
    #[error(transparent)]
    Host(HostError),
}

impl From<HostError> for SocketError {
    fn from(e: HostError) -> SocketError {
        match e {
            HostError::Resolving(_) => SocketError::WouldBlock,
            HostError::Resolve(r) => SocketError::Resolve(r),
            HostError::Stream(StreamError::Failed(c)) => SocketError::Connection(c),
            HostError::Stream(s) => SocketError::Stream(s),
            HostError::Content(c) => SocketError::Content(c),
            other => SocketError::Host(other),
        }
    }
}
