//! XIA over UDP: each link is one peer address, and all of a node's links
//! share one socket (xia-core's port 13781 by default), so one `recvmmsg`
//! drains every link at once.
//!
//! Batching comes from `quinn-udp`: `recvmmsg` (and GRO where the kernel
//! offers it) on receive; on send, runs of equal-sized packets to the same
//! peer go out as one GSO super-datagram where available, one `sendmsg`
//! each otherwise. A datagram from an address that is not a configured
//! peer is dropped and counted: links are configured, not learnt.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use xia_stack::forward::PortId;

/// xia-core's UDP port for XIP.
pub const DEFAULT_PORT: u16 = 13781;

/// Datagrams read per receive call.
pub const BATCH: usize = 32;

/// Most bytes in one GSO super-datagram (the kernel refuses more than an
/// IP packet's worth).
const MAX_GSO_BYTES: usize = 60_000;

/// Largest datagram (an XIP packet is at most 64 KiB).
const MAX_DATAGRAM: usize = 65_535;

/// Counters of a UDP transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Datagrams received from configured peers.
    pub received: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams from addresses that are not peers (dropped).
    pub unknown_peer: u64,
    /// Datagrams the kernel refused to send (dropped).
    pub send_errors: u64,
    /// Receive calls that returned more than one datagram.
    pub batched_reads: u64,
}

/// A node's UDP links: port `i` is peer `i`.
#[derive(Debug)]
pub struct UdpLinks {
    socket: tokio::net::UdpSocket,
    state: UdpSocketState,
    peers: Vec<SocketAddr>,
    by_addr: HashMap<SocketAddr, PortId>,
    bufs: Vec<Vec<u8>>,
    stats: UdpStats,
}

/// Why a UDP transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    /// Binding the local address failed.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// Two links name the same peer.
    #[error("peer {0} is named by two links")]
    DuplicatePeer(SocketAddr),
    /// More links than port numbers.
    #[error("{0} links are more than a node can have")]
    TooManyLinks(usize),
}

impl UdpLinks {
    /// Binds `local` (needs a tokio runtime) with one link per peer.
    pub fn bind(local: SocketAddr, peers: Vec<SocketAddr>) -> Result<UdpLinks, UdpError> {
        if peers.len() > usize::from(PortId::MAX) {
            return Err(UdpError::TooManyLinks(peers.len()));
        }
        let mut by_addr = HashMap::new();
        for (i, p) in peers.iter().enumerate() {
            if by_addr.insert(*p, i as PortId).is_some() {
                return Err(UdpError::DuplicatePeer(*p));
            }
        }
        let bind = |source| UdpError::Bind {
            addr: local,
            source,
        };
        let std = std::net::UdpSocket::bind(local).map_err(bind)?;
        std.set_nonblocking(true).map_err(bind)?;
        // Room for bursts: a router may receive a whole window at once.
        let sock2 = socket2::SockRef::from(&std);
        let _ = sock2.set_recv_buffer_size(4 << 20);
        let _ = sock2.set_send_buffer_size(4 << 20);
        let state = UdpSocketState::new(UdpSockRef::from(&std)).map_err(bind)?;
        let socket = tokio::net::UdpSocket::from_std(std).map_err(bind)?;
        let buf_len = MAX_DATAGRAM.max(state.gro_segments() * 1500);
        Ok(UdpLinks {
            socket,
            state,
            peers,
            by_addr,
            bufs: vec![vec![0; buf_len]; BATCH],
            stats: UdpStats::default(),
        })
    }

    /// Adds a link to `peer`; its port is the next number.
    pub fn add_peer(&mut self, peer: SocketAddr) -> Result<PortId, UdpError> {
        if self.peers.len() >= usize::from(PortId::MAX) {
            return Err(UdpError::TooManyLinks(self.peers.len() + 1));
        }
        if self.by_addr.contains_key(&peer) {
            return Err(UdpError::DuplicatePeer(peer));
        }
        let port = self.peers.len() as PortId;
        self.peers.push(peer);
        self.by_addr.insert(peer, port);
        Ok(port)
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The peers, by port.
    pub fn peers(&self) -> &[SocketAddr] {
        &self.peers
    }

    /// Its counters.
    pub fn stats(&self) -> UdpStats {
        self.stats
    }

    /// Waits for datagrams and appends each, with the port of the peer it
    /// came from, to `out` (at least one, at most a batch; GRO
    /// super-datagrams are split).
    pub async fn recv(&mut self, out: &mut Vec<(PortId, Vec<u8>)>) -> io::Result<()> {
        loop {
            self.socket.readable().await?;
            let mut meta = [RecvMeta::default(); BATCH];
            let n = {
                let (socket, state) = (&self.socket, &self.state);
                let mut slices: Vec<IoSliceMut<'_>> =
                    self.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                match socket.try_io(Interest::READABLE, || {
                    state.recv(UdpSockRef::from(socket), &mut slices, &mut meta)
                }) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            };
            let before = out.len();
            for (m, buf) in meta.iter().zip(&self.bufs).take(n) {
                let Some(&port) = self.by_addr.get(&m.addr) else {
                    self.stats.unknown_peer += 1;
                    continue;
                };
                let stride = m.stride.max(1);
                for chunk in buf[..m.len].chunks(stride) {
                    out.push((port, chunk.to_vec()));
                }
            }
            let got = (out.len() - before) as u64;
            self.stats.received += got;
            if got > 1 {
                self.stats.batched_reads += 1;
            }
            if got > 0 {
                return Ok(());
            }
        }
    }

    /// Sends packets, each to its port's peer, in order; runs of
    /// equal-sized packets to one peer are coalesced where GSO allows.
    /// Packets for ports that do not exist are dropped.
    pub async fn send(&mut self, packets: &[(PortId, Vec<u8>)]) -> io::Result<()> {
        let max_seg = self.state.max_gso_segments().max(1);
        let mut i = 0;
        let mut joined = Vec::new();
        while i < packets.len() {
            let (port, first) = (&packets[i].0, &packets[i].1);
            let Some(&dst) = self.peers.get(usize::from(*port)) else {
                self.stats.send_errors += 1;
                i += 1;
                continue;
            };
            // A run: same peer, same size (the last may be shorter).
            let mut j = i + 1;
            while j < packets.len()
                && j - i < max_seg
                && (j - i + 1) * first.len() <= MAX_GSO_BYTES
                && packets[j].0 == *port
                && packets[j - 1].1.len() == first.len()
                && packets[j].1.len() <= first.len()
                && !first.is_empty()
            {
                j += 1;
            }
            let contents: &[u8] = if j - i == 1 {
                first
            } else {
                joined.clear();
                for (_, p) in &packets[i..j] {
                    joined.extend_from_slice(p);
                }
                &joined
            };
            let transmit = Transmit {
                destination: dst,
                ecn: None,
                contents,
                segment_size: (j - i > 1).then_some(first.len()),
                src_ip: None,
            };
            let sent = self.transmit(&transmit).await?;
            if !sent && j - i > 1 {
                // GSO refused: one datagram at a time.
                for (_, p) in &packets[i..j] {
                    let one = Transmit {
                        destination: dst,
                        ecn: None,
                        contents: p,
                        segment_size: None,
                        src_ip: None,
                    };
                    if !self.transmit(&one).await? {
                        self.stats.send_errors += 1;
                    }
                }
            } else if !sent {
                self.stats.send_errors += 1;
            }
            self.stats.sent += (j - i) as u64;
            i = j;
        }
        Ok(())
    }

    // Sends one transmit, waiting while the socket is full; `false` if
    // the kernel refused it.
    async fn transmit(&self, t: &Transmit<'_>) -> io::Result<bool> {
        loop {
            self.socket.writable().await?;
            match self.socket.try_io(Interest::WRITABLE, || {
                self.state.try_send(UdpSockRef::from(&self.socket), t)
            }) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::debug!("UDP send to {} failed: {e}", t.destination);
                    return Ok(false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[tokio::test]
    async fn datagrams_carry_their_port_and_strangers_are_dropped() {
        // a has two links: port 0 to b, port 1 to c.
        let mut b = UdpLinks::bind(local(), vec![]).unwrap();
        let mut c = UdpLinks::bind(local(), vec![]).unwrap();
        let (ba, ca) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        let mut a = UdpLinks::bind(local(), vec![ba, ca]).unwrap();
        let aa = a.local_addr().unwrap();
        assert_eq!(b.add_peer(aa).unwrap(), 0);
        assert_eq!(c.add_peer(aa).unwrap(), 0);
        assert!(matches!(c.add_peer(aa), Err(UdpError::DuplicatePeer(_))));
        // Runs of equal sizes exercise GSO where the kernel has it.
        let burst: Vec<(PortId, Vec<u8>)> = (0..10u8)
            .map(|k| (0, vec![k; 1000]))
            .chain([(1, vec![9; 300]), (0, vec![7; 20])])
            .collect();
        a.send(&burst).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 11 {
            b.recv(&mut got).await.unwrap();
        }
        assert_eq!(got.len(), 11);
        assert!(got[..10]
            .iter()
            .enumerate()
            .all(|(k, (p, d))| *p == 0 && d.len() == 1000 && d[0] == k as u8));
        assert_eq!(got[10], (0, vec![7; 20]));
        let mut from_a = Vec::new();
        c.recv(&mut from_a).await.unwrap();
        assert_eq!(from_a, vec![(0, vec![9; 300])]);
        // A stranger's datagram is counted, not delivered.
        let stranger = tokio::net::UdpSocket::bind(local()).await.unwrap();
        stranger.send_to(b"hi", aa).await.unwrap();
        b.send(&[(0, b"ok".to_vec())]).await.unwrap();
        let mut at_a = Vec::new();
        a.recv(&mut at_a).await.unwrap();
        assert_eq!(at_a, vec![(0, b"ok".to_vec())]);
        assert_eq!(a.stats().unknown_peer, 1);
        assert_eq!(a.stats().sent, 12);
    }

    #[tokio::test]
    async fn ipv6_links_work_the_same() {
        let v6: SocketAddr = "[::1]:0".parse().unwrap();
        let Ok(mut a) = UdpLinks::bind(v6, vec![]) else {
            eprintln!("skipping: no IPv6 loopback here");
            return;
        };
        let mut b = UdpLinks::bind(v6, vec![]).unwrap();
        a.add_peer(b.local_addr().unwrap()).unwrap();
        b.add_peer(a.local_addr().unwrap()).unwrap();
        a.send(&[(0, vec![1, 2, 3])]).await.unwrap();
        let mut got = Vec::new();
        b.recv(&mut got).await.unwrap();
        assert_eq!(got, vec![(0, vec![1, 2, 3])]);
    }
}
