//! Applications that run on simulated hosts: a pinger with ping(8)'s
//! output, a datagram flow (sender and sink), a stream flow (client and
//! server) and a chunk fetcher. They are written against the socket API
//! ([`xia_stack::socket`]) as any application would be — the pinger sends
//! its echo requests with [`Host::ping`] — and react to the host's events;
//! the simulator wakes them at the times they ask for.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use xia_stack::dag::Dag;
use xia_stack::host::{Host, HostEvent, NetError, ResolveError, StreamHandle};
use xia_stack::socket::{
    self, ChunkFetch, Peer, Resolution, SocketError, XDatagram, XListener, XStream,
};

use crate::topology::Target;
use xia_stack::stream::StreamEvent;
use xia_stack::time::Instant;

impl From<Target> for Peer {
    fn from(t: Target) -> Peer {
        match t {
            Target::Dag(d) => Peer::Dag(d),
            Target::Name(n) => Peer::Name(n),
        }
    }
}

/// A pinger: `count` echo requests every `interval`, then statistics after
/// `timeout`.
#[derive(Debug)]
pub struct Pinger {
    /// Destination: a DAG, or a name (`ping name:…`) until it is resolved.
    pub dst: Target,
    // The outstanding name lookup.
    pending: Option<Resolution>,
    /// A name for the destination in the output.
    pub label: String,
    count: u32,
    interval: Duration,
    size: usize,
    timeout: Duration,
    ident: u16,
    /// Hop limit of the requests (`None`: the default).
    pub hop_limit: Option<u8>,
    next_seq: u16,
    started: Option<Instant>,
    last_activity: Instant,
    sent: BTreeMap<u16, Instant>,
    /// Round-trip times of the replies, in order of arrival.
    pub rtts: Vec<Duration>,
    /// XCMP errors received about our requests.
    pub errors: u32,
    /// ping(8)-style output lines.
    pub lines: Vec<String>,
    /// Whether the statistics were printed.
    pub done: bool,
    /// Names to print for known HIDs (the topology's nodes).
    pub names: Vec<(xia_stack::xid::Xid, String)>,
}

impl Pinger {
    /// A pinger (not started).
    pub fn new(
        dst: Target,
        label: String,
        count: u32,
        interval: Duration,
        size: usize,
        timeout: Duration,
        ident: u16,
    ) -> Pinger {
        Pinger {
            dst,
            pending: None,
            label,
            count,
            interval,
            size,
            timeout,
            ident,
            hop_limit: None,
            next_seq: 0,
            started: None,
            last_activity: Instant::ZERO,
            sent: BTreeMap::new(),
            rtts: Vec::new(),
            errors: 0,
            lines: Vec::new(),
            done: false,
            names: Vec::new(),
        }
    }

    /// A node's name for a reply's source, else its DAG.
    fn who(&self, d: &Dag) -> String {
        match self.names.iter().find(|(x, _)| x == d.intent()) {
            Some((_, n)) => n.clone(),
            None => d.to_line(),
        }
    }

    /// Requests sent.
    pub fn transmitted(&self) -> u32 {
        self.sent.len() as u32
    }

    /// Woken at `now`: resolve the name, send the next request or finish.
    /// Returns when to wake next.
    pub fn wake(&mut self, now: Instant, host: &mut Host) -> Option<Instant> {
        if self.done {
            return None;
        }
        let dst = match &self.dst {
            Target::Dag(d) => d.clone(),
            // `ping name:…`: ask the name server, and wait for its answer.
            Target::Name(name) => {
                if self.pending.is_none() {
                    self.started = Some(now);
                    match socket::resolve(host, now, name) {
                        Ok(r) => self.pending = Some(r),
                        Err(e) => {
                            self.lines.push(format!("ping: {}: {e}", self.label));
                            self.finish(now);
                        }
                    }
                }
                return None;
            }
        };
        if self.lines.is_empty() {
            self.started.get_or_insert(now);
            self.lines.push(format!(
                "PING {} ({}): {} data bytes",
                dst.to_line(),
                self.label,
                self.size
            ));
        }
        if (self.next_seq as u32) < self.count {
            let seq = self.next_seq;
            self.next_seq += 1;
            // The payload carries nothing the pinger needs: send times are
            // kept here, so the data is a fixed pattern like ping's.
            let data: Vec<u8> = (0..self.size).map(|i| i as u8).collect();
            match host.ping(&dst, self.ident, seq, &data, self.hop_limit) {
                Ok(()) => {
                    self.sent.insert(seq, now);
                    self.last_activity = now;
                }
                Err(e) => self.lines.push(format!("ping: sendmsg: {e}")),
            }
            if (self.next_seq as u32) < self.count {
                return Some(now + self.interval);
            }
            return Some(now + self.timeout);
        }
        self.finish(now);
        None
    }

    /// Stops now (the run's time limit came) and prints the statistics.
    pub fn finish(&mut self, now: Instant) {
        if self.done {
            return;
        }
        self.done = true;
        let tx = self.transmitted();
        let rx = self.rtts.len() as u32;
        let loss = if tx == 0 {
            0.0
        } else {
            100.0 * (tx - rx.min(tx)) as f64 / tx as f64
        };
        // Like ping(8): from the first request to the last thing seen.
        let elapsed =
            self.last_activity.max(self.started.unwrap_or(now)) - self.started.unwrap_or(now);
        let _ = now;
        self.lines
            .push(format!("--- {} ping statistics ---", self.label));
        let mut stat = format!("{tx} packets transmitted, {rx} received");
        if self.errors > 0 {
            let _ = write!(stat, ", +{} errors", self.errors);
        }
        let _ = write!(
            stat,
            ", {loss:.0}% packet loss, time {}ms",
            elapsed.as_millis()
        );
        self.lines.push(stat);
        if rx > 0 {
            let ms: Vec<f64> = self.rtts.iter().map(|d| d.as_secs_f64() * 1e3).collect();
            let min = ms.iter().copied().fold(f64::INFINITY, f64::min);
            let max = ms.iter().copied().fold(0.0, f64::max);
            let avg = ms.iter().sum::<f64>() / ms.len() as f64;
            let mdev = (ms.iter().map(|m| (m - avg).powi(2)).sum::<f64>() / ms.len() as f64).sqrt();
            self.lines.push(format!(
                "rtt min/avg/max/mdev = {min:.3}/{avg:.3}/{max:.3}/{mdev:.3} ms"
            ));
        }
    }

    /// Offers a host event; `Some(wake)` if it was this pinger's, with
    /// when to wake it (`Some(now)` once a name is resolved).
    pub fn on_event(&mut self, now: Instant, e: &HostEvent) -> Option<Option<Instant>> {
        if let Some(answer) = self.pending.as_ref().and_then(|r| r.answer(e)) {
            self.pending = None;
            return Some(match answer {
                Ok(dag) => {
                    self.dst = Target::Dag(dag);
                    Some(now)
                }
                Err(e) => {
                    let why = match e {
                        SocketError::Resolve(ResolveError::NotFound(_)) => {
                            "Name or service not known".to_string()
                        }
                        SocketError::Resolve(ResolveError::Refused { why, .. }) => why,
                        other => other.to_string(),
                    };
                    self.lines.push(format!("ping: {}: {why}", self.label));
                    self.finish(now);
                    None
                }
            });
        }
        self.on_reply(e).then_some(None)
    }

    fn on_reply(&mut self, e: &HostEvent) -> bool {
        match e {
            HostEvent::EchoReply {
                from,
                ident,
                seq_no,
                hop_limit,
                len,
                at,
            } if *ident == self.ident => {
                if let Some(sent) = self.sent.get(seq_no) {
                    let rtt = *at - *sent;
                    self.rtts.push(rtt);
                    self.last_activity = self.last_activity.max(*at);
                    self.lines.push(format!(
                        "{} bytes from {}: xcmp_seq={seq_no} hlim={hop_limit} time={:.3} ms",
                        len + 8,
                        self.who(from),
                        rtt.as_secs_f64() * 1e3
                    ));
                }
                true
            }
            HostEvent::Error {
                echo: Some((ident, seq)),
                error,
                ..
            } if *ident == self.ident => {
                self.errors += 1;
                let (from, what) = match error {
                    NetError::Unreachable { reason, from } => {
                        (from, format!("Destination Unreachable ({reason})"))
                    }
                    NetError::TimeExceeded { from } => (from, "Time to live exceeded".to_string()),
                    NetError::Redirect { to, from } => {
                        (from, format!("Redirect to {}", to.to_line()))
                    }
                };
                let who = self.who(from);
                self.lines
                    .push(format!("From {who}: xcmp_seq={seq} {what}"));
                true
            }
            _ => false,
        }
    }
}

/// The sending end of a datagram flow: `count` datagrams of `size` bytes
/// every `interval`, each starting with its sequence number.
#[derive(Debug)]
pub struct FlowSender {
    /// The socket.
    pub socket: XDatagram,
    /// Where to.
    pub dst: Dag,
    count: u32,
    interval: Duration,
    size: usize,
    /// Datagrams sent.
    pub sent: u32,
    /// Datagrams the host refused to send.
    pub send_errors: u32,
    /// XCMP errors about our datagrams.
    pub net_errors: u32,
}

impl FlowSender {
    /// A sender on `socket`.
    pub fn new(
        socket: impl Into<XDatagram>,
        dst: Dag,
        count: u32,
        interval: Duration,
        size: usize,
    ) -> FlowSender {
        FlowSender {
            socket: socket.into(),
            dst,
            count,
            interval,
            size,
            sent: 0,
            send_errors: 0,
            net_errors: 0,
        }
    }

    /// Sends the next datagram; returns when to wake next.
    pub fn wake(&mut self, now: Instant, host: &mut Host) -> Option<Instant> {
        let attempted = self.sent + self.send_errors;
        if attempted >= self.count {
            return None;
        }
        let mut payload = vec![0u8; self.size];
        payload[..8].copy_from_slice(&(attempted as u64).to_be_bytes());
        match self.socket.send_to(host, &self.dst, &payload) {
            Ok(()) => self.sent += 1,
            Err(_) => self.send_errors += 1,
        }
        (attempted + 1 < self.count).then(|| now + self.interval)
    }

    /// Offers a host event; `true` if it was this sender's.
    pub fn on_event(&mut self, e: &HostEvent) -> bool {
        match e {
            HostEvent::Error {
                socket: Some(s), ..
            } if *s == self.socket.handle() => {
                self.net_errors += 1;
                true
            }
            _ => false,
        }
    }
}

/// The receiving end of a datagram flow.
#[derive(Debug)]
pub struct FlowSink {
    /// The socket.
    pub socket: XDatagram,
    seen: Vec<bool>,
    /// Distinct datagrams received.
    pub received: u32,
    /// Copies of datagrams already received.
    pub duplicates: u32,
    /// Datagrams that arrived after a higher sequence number.
    pub reordered: u32,
    highest: Option<u64>,
}

impl FlowSink {
    /// A sink for up to `count` datagrams on `socket`.
    pub fn new(socket: impl Into<XDatagram>, count: u32) -> FlowSink {
        FlowSink {
            socket: socket.into(),
            seen: vec![false; count as usize],
            received: 0,
            duplicates: 0,
            reordered: 0,
            highest: None,
        }
    }

    /// Offers a host event; reads the socket if it was this sink's.
    pub fn on_event(&mut self, e: &HostEvent, host: &mut Host) -> bool {
        if *e != HostEvent::Readable(self.socket.handle()) {
            return false;
        }
        // Only the sequence number matters; the rest of each datagram is
        // dropped by the read.
        let mut buf = [0u8; 8];
        while let Ok((n, _)) = self.socket.recv_from(host, &mut buf) {
            if n < buf.len() {
                continue;
            }
            let seq = u64::from_be_bytes(buf);
            match self.seen.get_mut(seq as usize) {
                Some(true) => self.duplicates += 1,
                Some(slot) => {
                    *slot = true;
                    self.received += 1;
                    if self.highest.is_some_and(|h| seq < h) {
                        self.reordered += 1;
                    }
                    self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
                }
                None => {}
            }
        }
        true
    }
}

/// The byte at offset `i` of a stream flow's data (one pattern for host
/// flows and VM services alike).
pub use xia_migrate::vm::{fill_stream, stream_byte, stream_mismatches};

/// The sending end of a stream flow: connects (by DAG or by name),
/// writes `bytes` of the pattern as the window allows, then closes.
#[derive(Debug)]
pub struct StreamClient {
    /// Where to: a DAG, or a service name the host resolves.
    pub dst: Target,
    bytes: u64,
    /// Bytes handed to the connection.
    pub written: u64,
    socket: Option<XStream>,
    /// The host's handle for the connection, once opened (for its
    /// statistics).
    pub stream: Option<StreamHandle>,
    /// When it connected.
    pub started: Option<Instant>,
    /// When the handshake completed.
    pub connected: Option<Instant>,
    closed: bool,
    /// How the connection failed, if it did.
    pub error: Option<String>,
}

impl StreamClient {
    /// A client for `bytes` bytes to `dst`.
    pub fn new(dst: Target, bytes: u64) -> StreamClient {
        StreamClient {
            dst,
            bytes,
            written: 0,
            socket: None,
            stream: None,
            started: None,
            connected: None,
            closed: false,
            error: None,
        }
    }

    /// The connection, once opened.
    pub fn socket(&self) -> Option<XStream> {
        self.socket
    }

    /// Woken at the start time: connect (a name is resolved first).
    pub fn wake(&mut self, now: Instant, host: &mut Host) -> Option<Instant> {
        if self.socket.is_some() {
            return None;
        }
        self.started = Some(now);
        match XStream::connect(host, now, self.dst.clone()) {
            Ok(s) => {
                self.socket = Some(s);
                self.stream = Some(s.handle());
            }
            Err(e) => {
                self.error = Some(match &self.dst {
                    Target::Name(name) => format!("{name}: {e}"),
                    Target::Dag(_) => e.to_string(),
                })
            }
        }
        None
    }

    fn pump(&mut self, now: Instant, host: &mut Host) {
        let Some(s) = self.socket else { return };
        let mut chunk = [0u8; 16 * 1024];
        while self.written < self.bytes {
            let n = (self.bytes - self.written).min(chunk.len() as u64) as usize;
            fill_stream(self.written, &mut chunk[..n]);
            match s.write(host, now, &chunk[..n]) {
                // Full (or failed): a Writable event brings us back.
                Err(_) => return,
                Ok(w) => self.written += w as u64,
            }
        }
        if !self.closed {
            self.closed = s.close(host, now).is_ok();
        }
    }

    /// Offers a host event; `true` if it was this client's.
    pub fn on_event(&mut self, now: Instant, e: &HostEvent, host: &mut Host) -> bool {
        if !self.socket.is_some_and(|s| s.matches(e)) {
            return false;
        }
        match e {
            HostEvent::Resolved {
                result: Err(err), ..
            } => {
                self.error = Some(match err {
                    ResolveError::Refused { why, .. } => why.clone(),
                    other => other.to_string(),
                })
            }
            HostEvent::Stream { event, .. } => match event {
                StreamEvent::Connected => {
                    self.connected = Some(now);
                    self.pump(now, host);
                }
                StreamEvent::Writable => self.pump(now, host),
                StreamEvent::Error(err) => self.error = Some(err.to_string()),
                _ => {}
            },
            _ => {}
        }
        true
    }
}

/// The receiving end of a stream flow: accepts one connection, reads and
/// checks every byte, and closes when the sender has.
#[derive(Debug)]
pub struct StreamServer {
    /// The listener.
    pub listener: XListener,
    /// The accepted connection.
    pub stream: Option<XStream>,
    /// Bytes received.
    pub received: u64,
    /// Bytes that were not the pattern's.
    pub corrupt: u64,
    /// When the last byte (the sender's FIN) arrived.
    pub finished: Option<Instant>,
}

impl StreamServer {
    /// A server on `listener`.
    pub fn new(listener: impl Into<XListener>) -> StreamServer {
        StreamServer {
            listener: listener.into(),
            stream: None,
            received: 0,
            corrupt: 0,
            finished: None,
        }
    }

    fn drain(&mut self, now: Instant, host: &mut Host) {
        let Some(s) = self.stream else { return };
        let mut buf = [0u8; 16 * 1024];
        loop {
            match s.read(host, now, &mut buf) {
                Ok(0) => {
                    // The end: the sender closed and everything is read.
                    if self.finished.is_none() {
                        self.finished = Some(now);
                        let _ = s.close(host, now);
                    }
                    return;
                }
                Ok(n) => {
                    self.corrupt += stream_mismatches(self.received, &buf[..n]);
                    self.received += n as u64;
                }
                // Nothing more for now (or the connection failed).
                Err(_) => return,
            }
        }
    }

    /// Offers a host event; `true` if it was this server's.
    pub fn on_event(&mut self, now: Instant, e: &HostEvent, host: &mut Host) -> bool {
        if self.listener.matches(e) {
            if self.stream.is_none() {
                self.stream = self.listener.accept(host).ok();
            }
            return true;
        }
        if self.stream.is_some_and(|s| s.matches(e)) {
            self.drain(now, host);
            return true;
        }
        false
    }
}

/// Fetches one chunk by CID and records how it went.
#[derive(Debug)]
pub struct ChunkFetcher {
    /// Where it asks (`RE ( AD HID ) CID` of the publisher).
    pub dag: Dag,
    fetch: Option<ChunkFetch>,
    /// When it asked.
    pub started: Option<Instant>,
    /// When the verified chunk was in.
    pub finished: Option<Instant>,
    /// Bytes received, or why not.
    pub result: Option<Result<usize, String>>,
}

impl ChunkFetcher {
    /// A fetcher for `dag`.
    pub fn new(dag: Dag) -> ChunkFetcher {
        ChunkFetcher {
            dag,
            fetch: None,
            started: None,
            finished: None,
            result: None,
        }
    }

    /// Woken at the start time: ask.
    pub fn wake(&mut self, now: Instant, host: &mut Host) -> Option<Instant> {
        if self.fetch.is_none() && self.result.is_none() {
            self.started = Some(now);
            match socket::fetch_chunk(host, now, &self.dag) {
                Ok(f) => self.fetch = Some(f),
                Err(e) => self.result = Some(Err(e.to_string())),
            }
        }
        None
    }

    /// Offers a host event; `true` if it was this fetch's.
    pub fn on_event(&mut self, now: Instant, e: &HostEvent) -> bool {
        let Some(result) = self.fetch.and_then(|f| f.result(e)) else {
            return false;
        };
        self.fetch = None;
        self.finished = Some(now);
        self.result = Some(result.map(<[u8]>::len).map_err(|e| e.to_string()));
        true
    }
}
