//! Applications that run on simulated hosts: a pinger with ping(8)'s output
//! and a datagram flow (sender and sink). They drive the host stack's
//! commands and react to its events; the simulator wakes them at the times
//! they ask for.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use xia_stack::dag::Dag;
use xia_stack::host::{Host, HostEvent, ListenerHandle, NetError, SocketHandle, StreamHandle};
use xia_stack::naming::NameResponse;

use crate::topology::Target;
use xia_stack::stream::StreamEvent;
use xia_stack::time::Instant;

/// A pinger: `count` echo requests every `interval`, then statistics after
/// `timeout`.
#[derive(Debug)]
pub struct Pinger {
    /// Destination: a DAG, or a name (`ping name:…`) until it is resolved.
    pub dst: Target,
    // The outstanding name request.
    pending: Option<u32>,
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

/// How a pinger's destination is printed: RE form when it has one.
fn show(d: &Dag) -> String {
    d.to_re_string()
        .unwrap_or_else(|| d.to_string().replace(" \n", " "))
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
            None => show(d),
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
                    match host.resolve(name) {
                        Ok(id) => self.pending = Some(id),
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
                show(&dst),
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
        if let HostEvent::NameAnswer { id, answer } = e {
            if Some(*id) != self.pending {
                return None;
            }
            self.pending = None;
            return Some(match answer {
                Ok(NameResponse::Record { dag, .. }) => {
                    self.dst = Target::Dag(dag.clone());
                    Some(now)
                }
                Ok(_) => {
                    self.lines
                        .push(format!("ping: {}: Name or service not known", self.label));
                    self.finish(now);
                    None
                }
                Err(why) => {
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
                    NetError::Redirect { to, from } => (from, format!("Redirect to {}", show(to))),
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
    pub socket: SocketHandle,
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
        socket: SocketHandle,
        dst: Dag,
        count: u32,
        interval: Duration,
        size: usize,
    ) -> FlowSender {
        FlowSender {
            socket,
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
        match host.send_to(self.socket, &self.dst, &payload) {
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
            } if *s == self.socket => {
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
    pub socket: SocketHandle,
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
    pub fn new(socket: SocketHandle, count: u32) -> FlowSink {
        FlowSink {
            socket,
            seen: vec![false; count as usize],
            received: 0,
            duplicates: 0,
            reordered: 0,
            highest: None,
        }
    }

    /// Offers a host event; reads the socket if it was this sink's.
    pub fn on_event(&mut self, e: &HostEvent, host: &mut Host) -> bool {
        let HostEvent::Readable(s) = e else {
            return false;
        };
        if *s != self.socket {
            return false;
        }
        while let Some((_, data)) = host.recv_from(self.socket) {
            let Some(seq) = data
                .get(..8)
                .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
            else {
                continue;
            };
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

/// The byte at offset `i` of a stream flow's data: a pattern the receiver
/// can check without keeping a copy.
pub fn stream_byte(i: u64) -> u8 {
    (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
}

/// The sending end of a stream flow: connects, writes `bytes` of the
/// pattern as the window allows, then closes.
#[derive(Debug)]
pub struct StreamClient {
    /// Where to: a DAG, or a service name until it is resolved.
    pub dst: Target,
    pending: Option<u32>,
    bytes: u64,
    /// Bytes handed to the connection.
    pub written: u64,
    /// The connection, once opened.
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
            pending: None,
            bytes,
            written: 0,
            stream: None,
            started: None,
            connected: None,
            closed: false,
            error: None,
        }
    }

    /// Woken at the start time: resolve the name, or connect.
    pub fn wake(&mut self, now: Instant, host: &mut Host) -> Option<Instant> {
        if self.stream.is_some() || self.pending.is_some() {
            return None;
        }
        self.started = Some(now);
        match &self.dst {
            Target::Dag(_) => self.open(now, host),
            Target::Name(name) => match host.resolve(name) {
                Ok(id) => self.pending = Some(id),
                Err(e) => self.error = Some(format!("{name}: {e}")),
            },
        }
        None
    }

    fn open(&mut self, now: Instant, host: &mut Host) {
        let Target::Dag(dst) = &self.dst else { return };
        match host.connect(dst, now) {
            Ok(h) => self.stream = Some(h),
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    fn pump(&mut self, now: Instant, host: &mut Host) {
        let Some(h) = self.stream else { return };
        let mut chunk = [0u8; 16 * 1024];
        while self.written < self.bytes {
            let n = (self.bytes - self.written).min(chunk.len() as u64) as usize;
            for (k, b) in chunk[..n].iter_mut().enumerate() {
                *b = stream_byte(self.written + k as u64);
            }
            match host.stream_write(h, &chunk[..n], now) {
                Ok(0) | Err(_) => return,
                Ok(w) => self.written += w as u64,
            }
        }
        if !self.closed {
            self.closed = host.stream_close(h, now).is_ok();
        }
    }

    /// Offers a host event; `true` if it was this client's.
    pub fn on_event(&mut self, now: Instant, e: &HostEvent, host: &mut Host) -> bool {
        if let HostEvent::NameAnswer { id, answer } = e {
            if Some(*id) != self.pending {
                return false;
            }
            self.pending = None;
            match answer {
                Ok(NameResponse::Record { dag, .. }) => {
                    self.dst = Target::Dag(dag.clone());
                    self.open(now, host);
                }
                Ok(_) => {
                    if let Target::Name(name) = &self.dst {
                        self.error = Some(format!("{name}: name not known"));
                    }
                }
                Err(why) => self.error = Some(why.clone()),
            }
            return true;
        }
        let HostEvent::Stream { stream, event } = e else {
            return false;
        };
        if Some(*stream) != self.stream {
            return false;
        }
        match event {
            StreamEvent::Connected => {
                self.connected = Some(now);
                self.pump(now, host);
            }
            StreamEvent::Writable => self.pump(now, host),
            StreamEvent::Error(err) => self.error = Some(err.to_string()),
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
    pub listener: ListenerHandle,
    /// The accepted connection.
    pub stream: Option<StreamHandle>,
    /// Bytes received.
    pub received: u64,
    /// Bytes that were not the pattern's.
    pub corrupt: u64,
    /// When the last byte (the sender's FIN) arrived.
    pub finished: Option<Instant>,
}

impl StreamServer {
    /// A server on `listener`.
    pub fn new(listener: ListenerHandle) -> StreamServer {
        StreamServer {
            listener,
            stream: None,
            received: 0,
            corrupt: 0,
            finished: None,
        }
    }

    fn drain(&mut self, now: Instant, host: &mut Host) {
        let Some(h) = self.stream else { return };
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n @ 1..) = host.stream_read(h, &mut buf, now) {
            for (k, b) in buf[..n].iter().enumerate() {
                if *b != stream_byte(self.received + k as u64) {
                    self.corrupt += 1;
                }
            }
            self.received += n as u64;
        }
        let done = host.stream(h).is_some_and(|c| c.is_read_finished());
        if done && self.finished.is_none() {
            self.finished = Some(now);
            let _ = host.stream_close(h, now);
        }
    }

    /// Offers a host event; `true` if it was this server's.
    pub fn on_event(&mut self, now: Instant, e: &HostEvent, host: &mut Host) -> bool {
        match e {
            HostEvent::Incoming { listener, .. } if *listener == self.listener => {
                if self.stream.is_none() {
                    self.stream = host.accept(self.listener);
                }
                true
            }
            HostEvent::Stream { stream, .. } if Some(*stream) == self.stream => {
                self.drain(now, host);
                true
            }
            _ => false,
        }
    }
}

/// Fetches one chunk by CID and records how it went.
#[derive(Debug)]
pub struct ChunkFetcher {
    /// Where it asks (`RE ( AD HID ) CID` of the publisher).
    pub dag: Dag,
    id: Option<u32>,
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
            id: None,
            started: None,
            finished: None,
            result: None,
        }
    }

    /// Woken at the start time: ask.
    pub fn wake(&mut self, now: Instant, host: &mut Host) -> Option<Instant> {
        if self.id.is_none() && self.result.is_none() {
            self.started = Some(now);
            match host.fetch_chunk(&self.dag, now) {
                Ok(id) => self.id = Some(id),
                Err(e) => self.result = Some(Err(e.to_string())),
            }
        }
        None
    }

    /// Offers a host event; `true` if it was this fetch's.
    pub fn on_event(&mut self, now: Instant, e: &HostEvent) -> bool {
        match e {
            HostEvent::ChunkFetched { id, result, .. } if Some(*id) == self.id => {
                self.id = None;
                self.finished = Some(now);
                self.result = Some(result.as_ref().map(Vec::len).map_err(|e| e.to_string()));
                true
            }
            _ => false,
        }
    }
}
