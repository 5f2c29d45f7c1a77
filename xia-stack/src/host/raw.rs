//! Raw sockets: whole XIP payloads with a next header of the
//! application's choosing.
//!
//! A raw socket sends its payload as the body of an XIP packet from the
//! host's DAG (`AD HID`) with the socket's next-header value and hop
//! limit, and receives a copy of the payload of every packet delivered to
//! this host whose next header is the socket's — as xia-core's
//! `XSOCK_RAW` with `XOPT_NEXT_PROTO` does, and as Linux raw sockets do.
//! The stack still handles the protocols it implements (XCMP, XDGRAM,
//! XSTREAM); a packet of another protocol that a raw socket took is not
//! answered with "protocol unreachable".

use std::collections::VecDeque;

use super::{Host, HostError, HostEvent};
use crate::dag::Dag;
use crate::wire::xip::{NextHeader, XipRepr, DEFAULT_HOP_LIMIT};

/// A raw socket's handle.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct RawHandle(pub usize);

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct RawSocket {
    next_header: NextHeader,
    hop_limit: u8,
    rx: VecDeque<(Dag, Vec<u8>)>,
}

/// `Unknown(2)` and `Xdgram` are the same value on the wire: compare in
/// one form.
fn normal(nxt: NextHeader) -> NextHeader {
    NextHeader::from(u8::from(nxt))
}

impl Host {
    /// Opens a raw socket for packets with next header `next_header`.
    pub fn raw_open(&mut self, next_header: NextHeader) -> RawHandle {
        let socket = RawSocket {
            next_header: normal(next_header),
            hop_limit: DEFAULT_HOP_LIMIT,
            rx: VecDeque::new(),
        };
        match self.raw.iter().position(Option::is_none) {
            Some(i) => {
                self.raw[i] = Some(socket);
                RawHandle(i)
            }
            None => {
                self.raw.push(Some(socket));
                RawHandle(self.raw.len() - 1)
            }
        }
    }

    /// Closes a raw socket; packets waiting on it are dropped.
    pub fn raw_close(&mut self, h: RawHandle) {
        if let Some(slot) = self.raw.get_mut(h.0) {
            *slot = None;
        }
        while self.raw.last().is_some_and(Option::is_none) {
            self.raw.pop();
        }
    }

    fn raw_socket(&self, h: RawHandle) -> Result<&RawSocket, HostError> {
        self.raw
            .get(h.0)
            .and_then(Option::as_ref)
            .ok_or(HostError::BadRaw(h))
    }

    fn raw_socket_mut(&mut self, h: RawHandle) -> Result<&mut RawSocket, HostError> {
        self.raw
            .get_mut(h.0)
            .and_then(Option::as_mut)
            .ok_or(HostError::BadRaw(h))
    }

    /// Sends `payload` as the body of one XIP packet from this host's DAG
    /// to `dst`, with the socket's next header and hop limit.
    pub fn raw_send_to(
        &mut self,
        h: RawHandle,
        dst: &Dag,
        payload: &[u8],
    ) -> Result<(), HostError> {
        let s = self.raw_socket(h)?;
        let mut repr = XipRepr::new(dst.clone(), self.dag(), s.next_header, 0);
        repr.hop_limit = s.hop_limit;
        let pkt = repr
            .to_bytes(payload)
            .map_err(|_| HostError::TooLarge(payload.len()))?;
        self.send_packet(pkt, dst)
    }

    /// Takes the oldest packet on raw socket `h`: the sender's DAG and the
    /// XIP payload.
    pub fn raw_recv_from(&mut self, h: RawHandle) -> Option<(Dag, Vec<u8>)> {
        self.raw_socket_mut(h).ok()?.rx.pop_front()
    }

    /// How many packets wait on raw socket `h`.
    pub fn raw_queue_len(&self, h: RawHandle) -> Option<usize> {
        self.raw_socket(h).ok().map(|s| s.rx.len())
    }

    /// Sets the next header a raw socket sends and receives (xia-core's
    /// `XOPT_NEXT_PROTO`).
    pub fn set_raw_next_header(
        &mut self,
        h: RawHandle,
        next_header: NextHeader,
    ) -> Result<(), HostError> {
        self.raw_socket_mut(h)?.next_header = normal(next_header);
        Ok(())
    }

    /// A raw socket's next header.
    pub fn raw_next_header(&self, h: RawHandle) -> Option<NextHeader> {
        self.raw_socket(h).ok().map(|s| s.next_header)
    }

    /// Sets the hop limit of a raw socket's packets (xia-core's
    /// `XOPT_HLIM`; the default is [`DEFAULT_HOP_LIMIT`]).
    pub fn set_raw_hop_limit(&mut self, h: RawHandle, hop_limit: u8) -> Result<(), HostError> {
        self.raw_socket_mut(h)?.hop_limit = hop_limit;
        Ok(())
    }

    /// The hop limit of a raw socket's packets.
    pub fn raw_hop_limit(&self, h: RawHandle) -> Option<u8> {
        self.raw_socket(h).ok().map(|s| s.hop_limit)
    }

    /// Copies a delivered packet's payload to every raw socket for its
    /// next header; `true` if at least one took it.
    pub(super) fn deliver_raw(&mut self, repr: &XipRepr, payload: &[u8]) -> bool {
        let nxt = normal(repr.next_header);
        let limit = self.config.socket_queue;
        let mut taken = false;
        for i in 0..self.raw.len() {
            let Some(s) = self.raw[i].as_mut() else {
                continue;
            };
            if s.next_header != nxt {
                continue;
            }
            taken = true;
            if s.rx.len() >= limit {
                self.counters.queue_full += 1;
                continue;
            }
            s.rx.push_back((repr.src.clone(), payload.to_vec()));
            self.push_event(HostEvent::RawReadable(RawHandle(i)));
        }
        taken
    }
}
