//! A virtual machine as the agents run it: memory (a [`SyntheticGuest`]),
//! the guest's own XIA stack (a [`Host`] with its HID, its service's SID
//! key, its connections) and a service inside it that clients talk to.
//!
//! [`Vm`] is a [`Guest`]: its pages are the memory's, and its device state
//! is the whole stack (a [`Host::snapshot`], taken relative to the moment
//! of the pause, so the restored stack sees no time pass while it was
//! frozen), the service's state and the memory's own device bytes. What a
//! VM does while it runs — its stack's timers, its service answering
//! clients — is driven by the agent that hosts it; a paused VM is not
//! driven at all.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xia_stack::dag::Dag;
use xia_stack::host::{Host, HostConfig, HostEvent, ListenerHandle, SocketHandle, StreamHandle};
use xia_stack::identity::Identity;
use xia_stack::socket::NameKeeper;
use xia_stack::stream::StreamEvent;
use xia_stack::time::Instant;
use xia_stack::xid::Xid;

use crate::guest::{Guest, SyntheticGuest};

/// The byte at offset `i` of a stream flow's data: a pattern a receiver
/// checks without keeping a copy (so "every byte exactly once, in order"
/// is checkable at any size).
pub fn stream_byte(i: u64) -> u8 {
    (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
}

/// Fills `buf` with the pattern's bytes from offset `at`.
pub fn fill_stream(at: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = stream_byte(at + k as u64);
    }
}

/// How many bytes of `data`, received at offset `at`, are not the
/// pattern's.
pub fn stream_mismatches(at: u64, data: &[u8]) -> u64 {
    data.iter()
        .enumerate()
        .filter(|(k, b)| **b != stream_byte(at + *k as u64))
        .count() as u64
}

/// What runs inside a VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceSpec {
    /// Nothing.
    None,
    /// Sends `bytes` of the stream pattern to every client that connects
    /// (at most `rate` bytes per second when set), then closes.
    StreamSource {
        /// Bytes per client.
        bytes: u64,
        /// Pacing, bytes per second.
        rate: Option<u64>,
    },
    /// Counts numbered datagrams (the first 8 bytes of each, big-endian).
    DatagramSink,
}

/// The service's state: it travels with the VM.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Service {
    spec: ServiceSpec,
    /// The SID's key: the stack signs MIGRATEs with it, the service its
    /// name registrations.
    key: Identity,
    /// Keeps the service's name registered for its DAG.
    naming: Option<NameKeeper>,
    listener: Option<ListenerHandle>,
    socket: Option<SocketHandle>,
    conns: BTreeMap<usize, Conn>,
    next_send: Option<Instant>,
    /// Distinct datagrams received (a set of sequence numbers, as runs).
    seen: BTreeMap<u64, u64>,
    /// Datagrams received.
    pub received: u64,
    /// Copies of datagrams already received.
    pub duplicates: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Conn {
    sent: u64,
    closed: bool,
}

/// Why a VM could not be built or restored.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The device state does not decode.
    #[error("bad device state: {0}")]
    DeviceState(String),
    /// The stack refused a socket.
    #[error("service setup: {0}")]
    Setup(String),
}

#[derive(Serialize, Deserialize)]
struct DeviceState {
    name: String,
    stack: Vec<u8>,
    service: Service,
    memory_device: Vec<u8>,
}

/// A VM: memory, stack, service.
#[derive(Debug)]
pub struct Vm {
    /// Its name.
    pub name: String,
    /// Its memory.
    pub memory: SyntheticGuest,
    /// Its XIA stack.
    pub stack: Host,
    /// What runs in it.
    pub service: Service,
    last_run: Instant,
    paused_at: Instant,
}

impl Vm {
    /// A VM named `name` with `memory`, whose stack has `identity` (its
    /// HID) in `ad` behind `gateway`, running `spec` on the SID of
    /// `service_key`, registered as `service_name` if given.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        memory: SyntheticGuest,
        identity: Identity,
        ad: Xid,
        gateway: Option<Xid>,
        name_server: Option<Dag>,
        spec: ServiceSpec,
        service_key: Identity,
        service_name: Option<String>,
        seed: u64,
        now: Instant,
    ) -> Result<Vm, VmError> {
        let mut cfg = HostConfig::new(identity, ad, gateway);
        cfg.seed = seed;
        let mut stack = Host::new(cfg);
        if let Some(ns) = name_server {
            stack.set_name_server(ns);
        }
        let sid = service_key.xid();
        stack.add_sid_key(service_key.clone());
        let mut service = Service {
            spec: spec.clone(),
            key: service_key,
            naming: service_name.map(|n| NameKeeper::new(&n, 1)),
            listener: None,
            socket: None,
            conns: BTreeMap::new(),
            next_send: None,
            seen: BTreeMap::new(),
            received: 0,
            duplicates: 0,
        };
        match spec {
            ServiceSpec::None => {}
            ServiceSpec::StreamSource { .. } => {
                service.listener = Some(
                    stack
                        .listen(Some(sid))
                        .map_err(|e| VmError::Setup(e.to_string()))?,
                );
            }
            ServiceSpec::DatagramSink => {
                service.socket = Some(
                    stack
                        .bind(Some(sid))
                        .map_err(|e| VmError::Setup(e.to_string()))?,
                );
            }
        }
        let mut vm = Vm {
            name: name.to_owned(),
            memory,
            stack,
            service,
            last_run: now,
            paused_at: now,
        };
        vm.keep_name(now);
        Ok(vm)
    }

    /// The service's SID.
    pub fn service_sid(&self) -> Xid {
        self.service.key.xid()
    }

    /// The service's address now.
    pub fn service_dag(&self) -> Dag {
        self.stack
            .dag()
            .append_xid(self.service_sid())
            .unwrap_or_else(|_| self.stack.dag())
    }

    /// The VM's HID.
    pub fn hid(&self) -> Xid {
        self.stack.hid()
    }

    /// A VM rebuilt from the memory a migration delivered and its device
    /// state, its stack's times rebased on `now`.
    pub fn restore(mut memory: SyntheticGuest, device: &[u8], now: Instant) -> Result<Vm, VmError> {
        let d: DeviceState =
            postcard::from_bytes(device).map_err(|e| VmError::DeviceState(e.to_string()))?;
        let stack =
            Host::restore(&d.stack, now).map_err(|e| VmError::DeviceState(e.to_string()))?;
        memory.set_device_state(&d.memory_device);
        let mut service = d.service;
        // Pacing restarts from now.
        service.next_send = None;
        Ok(Vm {
            name: d.name,
            memory,
            stack,
            service,
            last_run: now,
            paused_at: now,
        })
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.memory.is_running()
    }

    /// Runs the memory's dirtying up to `now`.
    pub fn run_to(&mut self, now: Instant) {
        if now > self.last_run {
            self.memory.run(now - self.last_run);
        }
        self.last_run = self.last_run.max(now);
    }

    /// Takes the VM's stack events and lets the service act on them.
    pub fn drive(&mut self, now: Instant) {
        while let Some(e) = self.stack.poll_event() {
            self.on_event(now, &e);
        }
        self.pump(now);
    }

    /// When the VM next needs [`Vm::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.stack.poll_timeout(),
            self.service.next_send,
            self.service
                .naming
                .as_ref()
                .and_then(NameKeeper::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the stack's timers and the service's pacing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.stack.poll_timeout().is_some_and(|t| t <= now) {
            self.stack.handle_timeout(now);
        }
        if self.service.next_send.is_some_and(|t| t <= now) {
            self.service.next_send = None;
        }
        let naming = self.service.naming.as_ref();
        if naming
            .and_then(NameKeeper::poll_timeout)
            .is_some_and(|t| t <= now)
        {
            self.keep_name(now);
        }
        self.drive(now);
    }

    // Registers the service's name for its DAG when the name server does
    // not hold it (at start, after a move, after a lost registration).
    fn keep_name(&mut self, now: Instant) {
        if self.service.naming.is_none() {
            return;
        }
        let dag = self.service_dag();
        if let Some(k) = self.service.naming.as_mut() {
            k.poll(&mut self.stack, now, &self.service.key, &dag);
        }
    }

    /// Whether the name server holds the service's current address (true
    /// for a service without a name): a testbed is ready when it does.
    pub fn name_registered(&self) -> bool {
        let dag = self.service_dag();
        self.service
            .naming
            .as_ref()
            .is_none_or(|k| k.is_registered(&dag))
    }

    /// Name registrations refused so far.
    pub fn name_refusals(&self) -> u64 {
        self.service.naming.as_ref().map_or(0, |k| k.refusals)
    }

    fn on_event(&mut self, now: Instant, e: &HostEvent) {
        match e {
            // Moved (a new DAG), or an answer (perhaps a failure to try
            // again later): the name may need registering.
            HostEvent::NetworkChanged { .. } => self.keep_name(now),
            HostEvent::NameAnswer { .. } => {
                if let Some(k) = self.service.naming.as_mut() {
                    if k.handle_event(now, e) {
                        self.keep_name(now);
                    }
                }
            }
            HostEvent::Incoming { listener, .. } if Some(*listener) == self.service.listener => {
                while let Some(h) = self.stack.accept(*listener) {
                    self.service.conns.insert(
                        h.0,
                        Conn {
                            sent: 0,
                            closed: false,
                        },
                    );
                }
            }
            HostEvent::Stream {
                stream,
                event: StreamEvent::Closed | StreamEvent::Error(_),
            } => {
                if let Some(c) = self.service.conns.get_mut(&stream.0) {
                    c.closed = true;
                }
            }
            HostEvent::Readable(s) if Some(*s) == self.service.socket => {
                while let Some((_, data)) = self.stack.recv_from(*s) {
                    let Some(seq) = data.get(..8) else { continue };
                    let seq = u64::from_be_bytes(seq.try_into().expect("8 bytes"));
                    if insert(&mut self.service.seen, seq) {
                        self.service.received += 1;
                    } else {
                        self.service.duplicates += 1;
                    }
                }
            }
            _ => {}
        }
    }

    // Writes what the stream service may write now.
    fn pump(&mut self, now: Instant) {
        let ServiceSpec::StreamSource { bytes, rate } = self.service.spec else {
            return;
        };
        if self.service.next_send.is_some_and(|t| t > now) {
            return;
        }
        let mut chunk = [0u8; 16 * 1024];
        let mut wrote = 0u64;
        for (h, c) in self.service.conns.iter_mut() {
            let h = StreamHandle(*h);
            while !c.closed && c.sent < bytes {
                let n = (bytes - c.sent).min(chunk.len() as u64) as usize;
                let n = match rate {
                    // Paced: a millisecond's worth at a time.
                    Some(r) => n.min((r / 1000).max(1) as usize),
                    None => n,
                };
                fill_stream(c.sent, &mut chunk[..n]);
                match self.stack.stream_write(h, &chunk[..n], now) {
                    Ok(0) | Err(_) => break,
                    Ok(w) => {
                        c.sent += w as u64;
                        wrote += w as u64;
                    }
                }
                if rate.is_some() {
                    break;
                }
            }
            if !c.closed && c.sent >= bytes {
                c.closed = self.stack.stream_close(h, now).is_ok();
            }
        }
        if let (Some(r), true) = (rate, wrote > 0) {
            self.service.next_send =
                Some(now + Duration::from_secs_f64(wrote as f64 / r.max(1) as f64));
        }
    }

    /// Distinct datagrams the sink has seen.
    pub fn datagrams(&self) -> u64 {
        self.service.received
    }
}

// Adds `x` to a set kept as runs start → end (exclusive); false if present.
fn insert(runs: &mut BTreeMap<u64, u64>, x: u64) -> bool {
    if let Some((&s, &e)) = runs.range(..=x).next_back() {
        if x < e {
            return false;
        }
        if x == e {
            let mut end = e + 1;
            if let Some(&e2) = runs.get(&end) {
                runs.remove(&end);
                end = e2;
            }
            runs.insert(s, end);
            return true;
        }
    }
    let mut end = x + 1;
    if let Some(&e2) = runs.get(&end) {
        runs.remove(&end);
        end = e2;
    }
    runs.insert(x, end);
    true
}

impl Guest for Vm {
    fn page_size(&self) -> usize {
        self.memory.page_size()
    }
    fn pages(&self) -> usize {
        self.memory.pages()
    }
    fn read_page(&self, i: usize, out: &mut [u8]) {
        self.memory.read_page(i, out);
    }
    fn write_page(&mut self, i: usize, data: &[u8]) {
        self.memory.write_page(i, data);
    }
    fn take_dirty(&mut self) -> Vec<usize> {
        self.memory.take_dirty()
    }
    fn dirty_count(&self) -> usize {
        self.memory.dirty_count()
    }
    fn set_throttle(&mut self, factor: f64) {
        self.memory.set_throttle(factor);
    }
    fn pause(&mut self) {
        self.memory.pause();
        self.paused_at = self.last_run;
    }
    fn resume(&mut self) {
        self.memory.resume();
    }
    fn is_running(&self) -> bool {
        self.memory.is_running()
    }
    fn device_state(&self) -> Vec<u8> {
        let d = DeviceState {
            name: self.name.clone(),
            stack: self.stack.snapshot(self.paused_at),
            service: self.service.clone(),
            memory_device: self.memory.device_state(),
        };
        postcard::to_allocvec(&d).unwrap_or_default()
    }
    fn set_device_state(&mut self, state: &[u8]) {
        self.memory.set_device_state(state);
    }
    fn content_index(&self) -> Option<crate::guest::ContentIndex> {
        self.memory.content_index()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_record_a_set() {
        let mut r = BTreeMap::new();
        for x in [5, 3, 4, 9, 6, 8, 7] {
            assert!(insert(&mut r, x));
        }
        assert!(!insert(&mut r, 6));
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec![(3, 10)]);
    }
}
