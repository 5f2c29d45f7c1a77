//! Datagram sockets ([`XDatagram`]) and raw sockets ([`XRaw`]).

use super::SocketError;
use crate::dag::Dag;
use crate::host::{Host, HostError, HostEvent, RawHandle, SocketHandle};
use crate::wire::xip::NextHeader;
use crate::xid::Xid;

/// Copies a received payload into `buf`, dropping what does not fit (as
/// UDP's `recv_from` does).
fn copy_out(buf: &mut [u8], data: &[u8]) -> usize {
    let n = data.len().min(buf.len());
    buf[..n].copy_from_slice(&data[..n]);
    n
}

/// A datagram socket bound to a SID (XDGRAM, xia-core's `XSOCK_DGRAM`):
/// unreliable, unordered messages of up to
/// [`MAX_DATAGRAM`](crate::host::MAX_DATAGRAM) bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct XDatagram(SocketHandle);

/// Adopts a socket the host opened (with [`Host::bind`]).
impl From<SocketHandle> for XDatagram {
    fn from(h: SocketHandle) -> XDatagram {
        XDatagram(h)
    }
}

impl XDatagram {
    /// Binds a socket to `sid`, or to a fresh SID when `None`.
    pub fn bind(host: &mut Host, sid: Option<Xid>) -> Result<XDatagram, SocketError> {
        Ok(XDatagram(host.bind(sid)?))
    }

    /// The host's handle for this socket.
    pub fn handle(self) -> SocketHandle {
        self.0
    }

    /// The SID it is bound to.
    pub fn sid(&self, host: &Host) -> Option<Xid> {
        host.socket_sid(self.0)
    }

    /// Its address on the host's current network: `AD HID SID`.
    pub fn local_dag(&self, host: &Host) -> Option<Dag> {
        host.socket_dag(self.0)
    }

    /// Sends `payload` as one datagram to `dst`. XCMP errors about it
    /// come back as [`HostEvent::Error`] naming this socket.
    pub fn send_to(&self, host: &mut Host, dst: &Dag, payload: &[u8]) -> Result<(), SocketError> {
        Ok(host.send_to(self.0, dst, payload)?)
    }

    /// Takes the oldest datagram: copies it into `buf` (the part that does
    /// not fit is dropped) and returns its length there and its sender's
    /// DAG; [`SocketError::WouldBlock`] if none is waiting.
    pub fn recv_from(&self, host: &mut Host, buf: &mut [u8]) -> Result<(usize, Dag), SocketError> {
        if host.socket_sid(self.0).is_none() {
            return Err(SocketError::Host(HostError::BadSocket(self.0)));
        }
        let (from, data) = host.recv_from(self.0).ok_or(SocketError::WouldBlock)?;
        Ok((copy_out(buf, &data), from))
    }

    /// Whether a datagram is waiting.
    pub fn can_read(&self, host: &Host) -> bool {
        host.socket_queue_len(self.0).is_some_and(|n| n > 0)
    }

    /// Sets the hop limit of the datagrams it sends (`XOPT_HLIM`).
    pub fn set_hop_limit(&self, host: &mut Host, hop_limit: u8) -> Result<(), SocketError> {
        Ok(host.set_socket_hop_limit(self.0, hop_limit)?)
    }

    /// The hop limit of the datagrams it sends.
    pub fn hop_limit(&self, host: &Host) -> Option<u8> {
        host.socket_hop_limit(self.0)
    }

    /// Closes the socket; its SID is no longer served here.
    pub fn close(self, host: &mut Host) {
        host.close(self.0);
    }

    /// Whether `event` is about this socket: a datagram waiting, or an
    /// XCMP error about one it sent.
    pub fn matches(&self, event: &HostEvent) -> bool {
        match event {
            HostEvent::Readable(s) => *s == self.0,
            HostEvent::Error { socket, .. } => *socket == Some(self.0),
            _ => false,
        }
    }
}

/// A raw socket (xia-core's `XSOCK_RAW`): sends and receives whole XIP
/// payloads with a chosen next header.
///
/// Packets leave from the host's DAG (`AD HID`) with the socket's next
/// header and hop limit; the socket receives the payload of every packet
/// delivered to the host whose next header is its own — copies, for the
/// protocols the stack handles itself (a raw XCMP socket sees echo
/// replies and errors, as xia-core's `traceroute` uses it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct XRaw(RawHandle);

impl XRaw {
    /// Opens a raw socket for `next_header`.
    pub fn open(host: &mut Host, next_header: NextHeader) -> XRaw {
        XRaw(host.raw_open(next_header))
    }

    /// The host's handle for this socket.
    pub fn handle(self) -> RawHandle {
        self.0
    }

    /// Sends `payload` as the body of one XIP packet to `dst`.
    pub fn send_to(&self, host: &mut Host, dst: &Dag, payload: &[u8]) -> Result<(), SocketError> {
        Ok(host.raw_send_to(self.0, dst, payload)?)
    }

    /// Takes the oldest packet: copies its XIP payload into `buf` (the
    /// part that does not fit is dropped) and returns its length there and
    /// the sender's DAG; [`SocketError::WouldBlock`] if none is waiting.
    pub fn recv_from(&self, host: &mut Host, buf: &mut [u8]) -> Result<(usize, Dag), SocketError> {
        if host.raw_next_header(self.0).is_none() {
            return Err(SocketError::Host(HostError::BadRaw(self.0)));
        }
        let (from, data) = host.raw_recv_from(self.0).ok_or(SocketError::WouldBlock)?;
        Ok((copy_out(buf, &data), from))
    }

    /// Whether a packet is waiting.
    pub fn can_read(&self, host: &Host) -> bool {
        host.raw_queue_len(self.0).is_some_and(|n| n > 0)
    }

    /// Sets the next header it sends and receives (`XOPT_NEXT_PROTO`).
    pub fn set_next_header(
        &self,
        host: &mut Host,
        next_header: NextHeader,
    ) -> Result<(), SocketError> {
        Ok(host.set_raw_next_header(self.0, next_header)?)
    }

    /// The next header it sends and receives.
    pub fn next_header(&self, host: &Host) -> Option<NextHeader> {
        host.raw_next_header(self.0)
    }

    /// Sets the hop limit of the packets it sends (`XOPT_HLIM`).
    pub fn set_hop_limit(&self, host: &mut Host, hop_limit: u8) -> Result<(), SocketError> {
        Ok(host.set_raw_hop_limit(self.0, hop_limit)?)
    }

    /// The hop limit of the packets it sends.
    pub fn hop_limit(&self, host: &Host) -> Option<u8> {
        host.raw_hop_limit(self.0)
    }

    /// Closes the socket.
    pub fn close(self, host: &mut Host) {
        host.raw_close(self.0);
    }

    /// Whether `event` is about this socket (a packet waiting).
    pub fn matches(&self, event: &HostEvent) -> bool {
        matches!(event, HostEvent::RawReadable(h) if *h == self.0)
    }
}
