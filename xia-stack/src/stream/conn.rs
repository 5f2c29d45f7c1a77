//! The connection state machine.

use std::collections::VecDeque;

use super::buffer::Reassembly;
use super::cc::{CongestionController, Controller, HyStart, NewReno, SlowStartStep};
use super::rtt::RttEstimator;
use super::state::{State, Transition};
use super::{seq_ge, seq_gt, seq_le, seq_lt};
use super::{Config, ConnectionError, StreamError, StreamEvent};
use crate::dag::Dag;
use crate::time::Instant;
use crate::wire::xstream::{Flags, XstreamOption, XstreamRepr};
use crate::xid::Xid;

/// The MSS assumed when the peer's SYN names none (RFC 1122).
const DEFAULT_PEER_MSS: usize = 536;
/// Largest window-scale shift (RFC 7323).
const MAX_WSCALE: u8 = 14;
/// Most events held; events are deduplicated, so this is never reached by
/// a well-behaved application, and it bounds a careless one.
const EVENT_LIMIT: usize = 32;
/// Most SACKed ranges the sender remembers; beyond it the highest ranges
/// are forgotten (SACK is advisory, so forgetting only costs repeats).
const SCOREBOARD_LIMIT: usize = 1024;
/// SACK blocks we put in an ACK (the wire format's maximum).
const SACK_BLOCKS: usize = crate::wire::xstream::MAX_SACK_BLOCKS;
/// Consecutive timeouts after which the scoreboard is forgotten.
const SACK_RENEGE_TIMEOUTS: u32 = 3;
/// Shortest round trip over which receive-buffer autotuning measures (a
/// near-zero RTT would measure noise).
const TUNE_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1);

/// What identifies a connection: the two SIDs, not their locators.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub struct ConnectionId {
    /// Our SID (the intent of our DAG).
    pub local: Xid,
    /// The peer's SID (the intent of its DAG).
    pub peer: Xid,
}

/// Counters for tests and monitoring.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Segments produced by `poll_transmit`.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub segments_sent: u64,
    /// Segments handed to `handle_*`.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub segments_received: u64,
    /// Segments dropped: malformed, out of window or otherwise unusable.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub segments_dropped: u64,
    /// Segments that repeated sequence space already sent.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub retransmissions: u64,
    /// Fast retransmits (three duplicate ACKs).
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub fast_retransmits: u64,
    /// Retransmission timer expiries.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub timeouts: u64,
    /// Payload bytes sent, retransmissions included.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub bytes_sent: u64,
    /// Payload bytes the peer acknowledged.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub bytes_acked: u64,
    /// Payload bytes delivered in order to the receive buffer.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub bytes_received: u64,
    /// Keepalive probes sent.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub keepalive_probes: u64,
    /// Signed MIGRATEs accepted from the peer.
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub peer_moves: u64,
    /// MIGRATEs refused (forged, replayed, stale, wrong intent).
    #[serde(deserialize_with = "crate::serde_util::counter")]
    pub migrates_refused: u64,
}

/// One XStream connection. See the [module docs](super) for the calling
/// convention.
///
/// It serializes whole — buffers, sequence numbers, timers, congestion
/// state — for [host snapshots](crate::host::Host::snapshot); a congestion
/// controller set with [`Connection::set_congestion_controller`] is
/// carried only as its window and threshold, and continues as NewReno.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Connection {
    config: Config,
    local_dag: Dag,
    peer_dag: Dag,
    state: State,

    // Send side (RFC 793 names).
    iss: u32,
    snd_una: u32,
    snd_nxt: u32,
    /// Highest sequence number sent plus one (`snd_nxt` goes back on RTO).
    snd_max: u32,
    snd_wnd: usize,
    snd_wl1: u32,
    snd_wl2: u32,
    /// Shift applied to the peer's window field.
    snd_wscale: u8,
    /// Shift we apply to our window field.
    rcv_wscale: u8,
    /// Effective send MSS.
    mss: usize,
    #[serde(with = "crate::serde_util::deque_bytes")]
    send_buf: VecDeque<u8>,
    /// What the send buffer may hold now: `config.send_buffer`, grown with
    /// the window up to `config.send_buffer_max`.
    send_cap: usize,
    /// Sequence number of `send_buf[0]`.
    buf_seq: u32,
    /// Sequence number of our FIN, once the application closed.
    fin_seq: Option<u32>,

    // Receive side.
    irs: u32,
    rcv_nxt: u32,
    recv: Reassembly,
    /// Where the peer's FIN sits, if seen (possibly ahead of a gap).
    peer_fin: Option<u32>,
    /// Right edge of the window we last advertised.
    adv_edge: u32,
    /// Bytes the application has read, in total (for autotuning).
    #[serde(deserialize_with = "crate::serde_util::counter")]
    app_read: u64,
    /// Autotuning's current measurement: when it began and `app_read`
    /// then.
    tune_mark: Option<(Instant, u64)>,
    /// Bytes the application read in the last measured round trip
    /// (Linux's `rcvq_space`).
    tune_space: usize,

    // Timers.
    rto_deadline: Option<Instant>,
    ack_deadline: Option<Instant>,
    time_wait_deadline: Option<Instant>,
    /// When the next keepalive probe is due (or, after the last one, when
    /// the connection fails).
    keepalive_deadline: Option<Instant>,
    // Our signed MIGRATE until the peer acknowledges it: (body, seq).
    migrate_out: Option<(Vec<u8>, u32)>,
    migrate_seq: u32,
    migrate_deadline: Option<Instant>,
    #[serde(deserialize_with = "crate::serde_util::counter32")]
    migrate_backoff: u32,
    // The last MIGRATE we accepted, and an acknowledgement owed for it.
    migrate_in: Option<super::migrate::Accepted>,
    migrate_ack_out: Option<u32>,
    /// Keepalive probes sent since the peer was last heard.
    #[serde(deserialize_with = "crate::serde_util::counter32")]
    keepalive_unanswered: u32,
    /// A keepalive probe is to be sent.
    keepalive_now: bool,
    rtt: RttEstimator,
    /// The segment being timed: its end and when it left (Karn: cleared on
    /// any retransmission).
    rtt_probe: Option<(u32, Instant)>,
    #[serde(deserialize_with = "crate::serde_util::counter32")]
    retries: u32,

    // Loss recovery.
    dup_acks: u32,
    recover: u32,
    in_recovery: bool,
    retransmit_now: bool,
    /// Both ends offered SACK.
    sack_ok: bool,
    /// SACKed ranges `[left, right)` above SND.UNA: sorted, disjoint,
    /// at most [`SCOREBOARD_LIMIT`].
    scoreboard: Vec<(u32, u32)>,
    /// In SACK recovery, holes below this were already repeated.
    high_rxt: u32,
    probe_now: bool,
    resend_synack: bool,
    cc: Controller,
    /// HyStart++ for the first slow start.
    hystart: HyStart,

    // Pending control output.
    ack_now: bool,
    /// One RST to send: sequence number and, if any, acknowledgement.
    pending_rst: Option<(u32, Option<u32>)>,
    write_blocked: bool,
    events: VecDeque<StreamEvent>,
    error: Option<ConnectionError>,
    stats: Stats,
}

impl Connection {
    fn new(local_dag: Dag, peer_dag: Dag, iss: u32, config: Config) -> Connection {
        let mss = (config.mss as usize).max(1);
        Connection {
            rtt: RttEstimator::new(config.initial_rto, config.min_rto, config.max_rto),
            cc: Controller::NewReno(NewReno::new(config.initial_window, mss)),
            hystart: HyStart::new(config.hystart),
            recv: Reassembly::new(config.recv_buffer, config.max_out_of_order),
            rcv_wscale: config.window_scale.min(MAX_WSCALE),
            local_dag,
            peer_dag,
            state: State::Closed,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: 0,
            snd_wl1: 0,
            snd_wl2: 0,
            snd_wscale: 0,
            mss,
            send_buf: VecDeque::new(),
            send_cap: config.send_buffer.min(config.send_buffer_max.max(1)),
            buf_seq: iss.wrapping_add(1),
            fin_seq: None,
            irs: 0,
            rcv_nxt: 0,
            peer_fin: None,
            adv_edge: 0,
            app_read: 0,
            tune_mark: None,
            // Linux starts from ten segments (TCP_INIT_CWND).
            tune_space: (10 * mss).min(config.recv_buffer),
            rto_deadline: None,
            ack_deadline: None,
            time_wait_deadline: None,
            keepalive_deadline: None,
            migrate_out: None,
            migrate_seq: 0,
            migrate_deadline: None,
            migrate_backoff: 0,
            migrate_in: None,
            migrate_ack_out: None,
            keepalive_unanswered: 0,
            keepalive_now: false,
            rtt_probe: None,
            retries: 0,
            dup_acks: 0,
            recover: iss,
            in_recovery: false,
            retransmit_now: false,
            sack_ok: false,
            scoreboard: Vec::new(),
            high_rxt: iss,
            probe_now: false,
            resend_synack: false,
            ack_now: false,
            pending_rst: None,
            write_blocked: false,
            events: VecDeque::new(),
            error: None,
            stats: Stats::default(),
            config,
        }
    }

    /// Opens a connection to `peer_dag`; the SYN comes out of
    /// [`poll_transmit`](Self::poll_transmit). `iss` is the initial
    /// sequence number (the caller's randomness).
    pub fn connect(
        local_dag: Dag,
        peer_dag: Dag,
        iss: u32,
        _now: Instant,
        config: Config,
    ) -> Connection {
        let mut c = Connection::new(local_dag, peer_dag, iss, config);
        c.state = State::SynSent;
        c
    }

    /// Creates the server side from a received SYN; the SYN|ACK comes out
    /// of [`poll_transmit`](Self::poll_transmit).
    pub fn accept(
        local_dag: Dag,
        peer_dag: Dag,
        syn: &XstreamRepr<'_>,
        iss: u32,
        _now: Instant,
        config: Config,
    ) -> Result<Connection, StreamError> {
        if !syn.flags.contains(Flags::SYN)
            || syn.flags.contains(Flags::ACK)
            || syn.flags.contains(Flags::RST)
        {
            return Err(StreamError::NotSyn);
        }
        let mut c = Connection::new(local_dag, peer_dag, iss, config);
        c.state = c.state.next(Transition::RecvSyn)?;
        c.take_syn(syn);
        c.stats.segments_received += 1;
        Ok(c)
    }

    // ---- getters ----

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The pair of SIDs identifying this connection.
    pub fn id(&self) -> ConnectionId {
        ConnectionId {
            local: *self.local_dag.intent(),
            peer: *self.peer_dag.intent(),
        }
    }

    /// Our address.
    pub fn local_dag(&self) -> &Dag {
        &self.local_dag
    }

    /// Where segments go.
    pub fn peer_dag(&self) -> &Dag {
        &self.peer_dag
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Why the connection failed, if it did.
    pub fn error(&self) -> Option<ConnectionError> {
        self.error
    }

    /// Whether selective acknowledgements are in use (both ends offered
    /// them in the handshake).
    pub fn sack_enabled(&self) -> bool {
        self.sack_ok
    }

    /// The congestion window in bytes.
    pub fn congestion_window(&self) -> usize {
        self.cc.window()
    }

    /// The smoothed RTT, once measured.
    pub fn srtt(&self) -> Option<std::time::Duration> {
        self.rtt.srtt()
    }

    /// The current retransmission timeout, backoff included.
    pub fn rto(&self) -> std::time::Duration {
        self.rtt.rto()
    }

    /// Bytes ready to [`read`](Self::read).
    pub fn readable(&self) -> usize {
        self.recv.readable()
    }

    /// Free space in the send buffer.
    pub fn writable(&self) -> usize {
        self.send_cap.saturating_sub(self.send_buf.len())
    }

    /// The receive buffer's current size (grown by autotuning up to
    /// [`Config::recv_buffer_max`](super::Config::recv_buffer_max)).
    pub fn recv_buffer(&self) -> usize {
        self.recv.capacity()
    }

    /// The send buffer's current size (grown with the window up to
    /// [`Config::send_buffer_max`](super::Config::send_buffer_max)).
    pub fn send_buffer(&self) -> usize {
        self.send_cap
    }

    /// Whether the peer closed and every byte it sent has been read.
    pub fn is_read_finished(&self) -> bool {
        self.state.peer_closed() && self.recv.readable() == 0
    }

    /// Refuses restored state (a host snapshot) the connection's
    /// arithmetic could panic on. It is not a full consistency check: a
    /// snapshot is this stack's own state, carried over an authenticated
    /// channel.
    pub(crate) fn check(&self) -> Result<(), String> {
        self.config.check()?;
        if self.mss == 0 || self.mss > usize::from(u16::MAX) {
            return Err(format!("MSS {} out of range", self.mss));
        }
        if self.snd_wscale > MAX_WSCALE || self.rcv_wscale > MAX_WSCALE {
            return Err("window scale out of range".into());
        }
        // The MIGRATE backoff never exceeds 6 (see `handle_timeout`).
        if self.migrate_backoff > 6 {
            return Err("MIGRATE backoff out of range".into());
        }
        if self.tune_mark.is_some_and(|(_, read)| read > self.app_read) {
            return Err("autotuning mark ahead of the bytes read".into());
        }
        self.rtt.check()?;
        self.hystart.check()?;
        self.recv.check()
    }

    /// Replaces the congestion controller (e.g. with CUBIC, later).
    pub fn set_congestion_controller(&mut self, cc: Box<dyn CongestionController>) {
        self.cc = Controller::Custom(cc);
    }

    // ---- address changes ----

    /// Moves our end to `dag` (a new locator for the same SID). Segments
    /// carry no addresses, so nothing else changes here; the XIP layer
    /// uses the new source address.
    pub fn rebind_local(&mut self, dag: Dag) -> Result<(), StreamError> {
        if dag.intent() != self.local_dag.intent() {
            return Err(StreamError::IntentMismatch);
        }
        self.local_dag = dag;
        Ok(())
    }

    /// Moves our end to `new_dag` and tells the peer with a signed
    /// MIGRATE (XSTREAM option 50; see [`migrate`](super::migrate)),
    /// repeated on every segment, and after a timeout when idle, until the
    /// peer acknowledges it. `identity` is our SID's key; `timestamp_ms`
    /// our clock, which must not go back between two migrations.
    pub fn migrate(
        &mut self,
        identity: &crate::identity::Identity,
        new_dag: Dag,
        timestamp_ms: u64,
        now: Instant,
    ) -> Result<(), super::migrate::MigrateError> {
        use super::migrate::{Migrate, MigrateError};
        if !self.state.is_synchronized() {
            return Err(MigrateError::Malformed("the connection is not established"));
        }
        let peer = *self.peer_dag.intent();
        let seq = self.migrate_seq.wrapping_add(1);
        let m = Migrate::sign(
            identity,
            &peer,
            &self.migrate_context(),
            new_dag.clone(),
            timestamp_ms,
            seq,
        )?;
        self.rebind_local(new_dag)
            .map_err(|_| MigrateError::NotTheIntent(identity.xid()))?;
        self.migrate_seq = seq;
        self.migrate_out = Some((m.to_bytes(), seq));
        self.migrate_backoff = 0;
        self.migrate_deadline = Some(now + self.rtt.rto());
        self.ack_now = true;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn migrate_context_for_tests(&self) -> Vec<u8> {
        self.migrate_context()
    }

    #[cfg(test)]
    pub(crate) fn snd_nxt_for_tests(&self) -> u32 {
        self.snd_nxt
    }

    /// Whether our last MIGRATE is still unacknowledged.
    pub fn migrate_pending(&self) -> bool {
        self.migrate_out.is_some()
    }

    // What binds a MIGRATE to this connection: both initial sequence
    // numbers, the smaller first (both ends agree, whoever opened).
    fn migrate_context(&self) -> Vec<u8> {
        let (a, b) = (self.iss.min(self.irs), self.iss.max(self.irs));
        let mut c = a.to_be_bytes().to_vec();
        c.extend_from_slice(&b.to_be_bytes());
        c
    }

    // MIGRATE options on an arriving segment: signed, so checked before
    // the window (a MIGRATE from the peer's new address may come late).
    fn migrate_options(&mut self, seg: &XstreamRepr<'_>) {
        use super::migrate::{Migrate, MigrateError};
        for o in &seg.options {
            let XstreamOption::Migrate(body) = o else {
                continue;
            };
            let peer = *self.peer_dag.intent();
            let us = *self.local_dag.intent();
            let ctx = self.migrate_context();
            let verdict = Migrate::parse(body)
                .and_then(|m| m.verify(&peer, &us, &ctx, self.migrate_in).map(|()| m));
            match verdict {
                Ok(m) => {
                    self.migrate_in = Some(m.accepted());
                    self.migrate_ack_out = Some(m.seq);
                    self.peer_dag = m.new_dag.clone();
                    self.ack_now = true;
                    self.stats.peer_moves += 1;
                    self.push_event(StreamEvent::PeerMoved(m.new_dag));
                }
                // Our acknowledgement was lost: say it again.
                Err(MigrateError::Replayed { seq, last }) if seq == last => {
                    self.migrate_ack_out = Some(seq);
                    self.ack_now = true;
                }
                Err(e) => {
                    self.stats.migrates_refused += 1;
                    self.push_event(StreamEvent::MigrateRefused(e));
                }
            }
        }
    }

    // A MIGRATEACK stops our MIGRATE's retransmissions. It is unsigned
    // (its wire form is a sequence number), so it counts only on a segment
    // that is in our window and acknowledges data we sent: otherwise anyone
    // who knows the two SIDs could cancel a lost MIGRATE with one forged
    // segment and strand the connection at our old address.
    fn migrate_ack(&mut self, seg: &XstreamRepr<'_>) {
        use super::migrate::parse_ack;
        let Some((_, want)) = self.migrate_out else {
            return;
        };
        let acks_ours = seg.flags.contains(Flags::ACK)
            && seq_ge(seg.ack, self.snd_una)
            && seq_ge(self.snd_max, seg.ack);
        if !acks_ours {
            return;
        }
        for o in &seg.options {
            if let XstreamOption::MigrateAck(body) = o {
                if parse_ack(body) == Ok(want) {
                    self.migrate_out = None;
                    self.migrate_deadline = None;
                }
            }
        }
    }

    /// Sends to the peer at `dag` from now on (it moved).
    pub fn set_peer_dag(&mut self, dag: Dag) -> Result<(), StreamError> {
        if dag.intent() != self.peer_dag.intent() {
            return Err(StreamError::IntentMismatch);
        }
        self.peer_dag = dag;
        // Tell the peer promptly where we are and what we have.
        if self.state.is_synchronized() {
            self.ack_now = true;
        }
        Ok(())
    }

    // ---- application commands ----

    /// Queues as much of `data` as the send buffer takes; returns how much.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, StreamError> {
        if let Some(e) = self.error {
            return Err(StreamError::Failed(e));
        }
        if !self.state.can_write() || self.fin_seq.is_some() {
            return Err(StreamError::InvalidState {
                op: "write",
                state: self.state,
            });
        }
        let n = data.len().min(self.writable());
        self.send_buf.extend(&data[..n]);
        if n < data.len() {
            self.write_blocked = true;
        }
        Ok(n)
    }

    /// Reads in-order bytes; 0 means none are ready (see
    /// [`is_read_finished`](Self::is_read_finished) for end of stream).
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let n = self.recv.read(out);
        self.app_read += n as u64;
        if n > 0 && self.state.is_synchronized() {
            // Announce an opened window once it grew enough to matter
            // (RFC 1122's receiver side silly-window avoidance).
            let edge = self.rcv_nxt.wrapping_add(self.advertised_window() as u32);
            let grown = edge.wrapping_sub(self.adv_edge) as usize;
            let threshold = (2 * self.mss).min(self.recv.capacity() / 2).max(1);
            if seq_gt(edge, self.adv_edge) && grown >= threshold {
                self.ack_now = true;
            }
        }
        n
    }

    /// Closes our sending direction: a FIN follows the queued data.
    /// Closing again is a no-op.
    pub fn close(&mut self) -> Result<(), StreamError> {
        match self.state {
            State::FinWait1
            | State::FinWait2
            | State::Closing
            | State::LastAck
            | State::TimeWait => Ok(()),
            State::SynReceived => {
                // The FIN waits for the handshake: see `ack_of_syn`.
                self.queue_fin();
                Ok(())
            }
            State::SynSent => {
                self.state = self.state.next(Transition::Close)?;
                self.clear_timers();
                self.push_event(StreamEvent::Closed);
                Ok(())
            }
            _ => {
                self.state = self.state.next(Transition::Close)?;
                self.queue_fin();
                Ok(())
            }
        }
    }

    /// Ends the connection at once with a reset.
    pub fn abort(&mut self) {
        if self.state == State::Closed {
            return;
        }
        if self.state != State::SynSent {
            self.pending_rst = Some((self.snd_nxt, Some(self.rcv_nxt)));
        }
        self.state = State::Closed;
        self.clear_timers();
        self.push_event(StreamEvent::Closed);
    }

    fn queue_fin(&mut self) {
        if self.fin_seq.is_none() {
            self.fin_seq = Some(self.buf_seq.wrapping_add(self.send_buf.len() as u32));
        }
    }

    // ---- incoming ----

    /// Parses and handles a segment; malformed bytes are counted and
    /// returned as an error, never a panic.
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        bytes: &[u8],
    ) -> Result<(), crate::wire::xstream::XstreamError> {
        match XstreamRepr::parse(bytes) {
            Ok(seg) => {
                self.handle_segment(now, &seg);
                Ok(())
            }
            Err(e) => {
                self.stats.segments_received += 1;
                self.stats.segments_dropped += 1;
                Err(e)
            }
        }
    }

    /// Handles one segment addressed to this connection (RFC 793 3.9,
    /// "SEGMENT ARRIVES", with RFC 5961's challenge ACKs).
    pub fn handle_segment(&mut self, now: Instant, seg: &XstreamRepr<'_>) {
        self.segment_arrives(now, seg);
        // Whatever the segment was, the peer is alive.
        self.arm_keepalive(now);
    }

    fn segment_arrives(&mut self, now: Instant, seg: &XstreamRepr<'_>) {
        self.stats.segments_received += 1;
        if self.state.is_synchronized() && !seg.options.is_empty() {
            self.migrate_options(seg);
        }
        let f = seg.flags;
        let (syn, ack, rst, fin) = (
            f.contains(Flags::SYN),
            f.contains(Flags::ACK),
            f.contains(Flags::RST),
            f.contains(Flags::FIN),
        );
        match self.state {
            State::Closed => {
                self.stats.segments_dropped += 1;
                self.reply_rst(seg);
                return;
            }
            State::SynSent => {
                self.handle_syn_sent(now, seg);
                return;
            }
            State::SynReceived if syn && !ack && seg.seq == self.irs => {
                // The peer did not hear our SYN|ACK.
                self.resend_synack = true;
                return;
            }
            _ => {}
        }

        // 1. Is the segment in the window?
        if !self.acceptable(seg) {
            self.stats.segments_dropped += 1;
            if !rst {
                // Old duplicates still carry a useful cumulative ACK.
                if ack && self.state.is_synchronized() {
                    self.process_ack(now, seg, false);
                }
                if self.state == State::TimeWait && fin {
                    self.time_wait_deadline = Some(now + self.config.time_wait);
                }
                self.ack_now = true;
            }
            return;
        }
        if self.state.is_synchronized() && !seg.options.is_empty() {
            self.migrate_ack(seg);
        }

        // 2. RST: exact match resets, anything else in window is challenged.
        if rst {
            if self.state == State::TimeWait {
                // RFC 1337: do not let a reset cut TIME-WAIT short.
                return;
            }
            if seg.seq == self.rcv_nxt {
                self.fail(ConnectionError::Reset);
            } else {
                self.ack_now = true;
            }
            return;
        }

        // 3. A SYN in a synchronized state: challenge ACK (RFC 5961 4).
        if syn {
            self.stats.segments_dropped += 1;
            self.ack_now = true;
            return;
        }

        // 4. ACK.
        if !ack {
            self.stats.segments_dropped += 1;
            return;
        }
        if self.state == State::SynReceived {
            if seq_lt(self.snd_una, seg.ack) && seq_le(seg.ack, self.snd_max) {
                if self.ack_of_syn().is_err() {
                    return;
                }
            } else {
                self.pending_rst = Some((seg.ack, None));
                return;
            }
        }
        if seq_gt(seg.ack, self.snd_max) {
            // Acknowledges something never sent.
            self.stats.segments_dropped += 1;
            self.ack_now = true;
            return;
        }
        self.process_ack(now, seg, true);
        if self.state == State::Closed {
            return;
        }

        // 5. Data.
        if !seg.payload.is_empty() {
            if self.state.peer_closed() {
                // Data after the peer's FIN is nonsense; ignore it.
                self.ack_now = true;
            } else {
                self.process_data(now, seg);
            }
        }

        // 6. FIN, once everything before it has arrived.
        if fin && !self.state.peer_closed() {
            self.peer_fin = Some(seg.seq.wrapping_add(seg.payload.len() as u32));
        }
        self.check_peer_fin(now);
    }

    fn handle_syn_sent(&mut self, now: Instant, seg: &XstreamRepr<'_>) {
        let f = seg.flags;
        let ack = f.contains(Flags::ACK);
        if ack && (seq_le(seg.ack, self.iss) || seq_gt(seg.ack, self.snd_max)) {
            self.stats.segments_dropped += 1;
            if !f.contains(Flags::RST) {
                self.pending_rst = Some((seg.ack, None));
            }
            return;
        }
        if f.contains(Flags::RST) {
            if ack {
                self.fail(ConnectionError::Refused);
            }
            return;
        }
        if !f.contains(Flags::SYN) {
            self.stats.segments_dropped += 1;
            return;
        }
        self.take_syn(seg);
        if ack {
            let Ok(next) = self.state.next(Transition::RecvSynAck) else {
                return;
            };
            self.state = next;
            self.snd_una = seg.ack;
            if seq_lt(self.snd_nxt, self.snd_una) {
                self.snd_nxt = self.snd_una;
            }
            self.sample_rtt(now, seg.ack);
            self.retries = 0;
            self.rtt.reset_backoff();
            self.rto_deadline = None;
            self.ack_now = true;
            self.push_event(StreamEvent::Connected);
        } else if let Ok(next) = self.state.next(Transition::RecvSyn) {
            // Simultaneous open: answer with SYN|ACK.
            self.state = next;
            self.resend_synack = true;
        }
    }

    /// Records the peer's SYN: its sequence number, MSS, window scale.
    fn take_syn(&mut self, seg: &XstreamRepr<'_>) {
        self.irs = seg.seq;
        self.rcv_nxt = seg.seq.wrapping_add(1);
        let mut peer_mss = DEFAULT_PEER_MSS;
        let mut peer_wscale = None;
        let mut peer_sack = false;
        for o in &seg.options {
            match o {
                XstreamOption::Mss(m) if *m > 0 => peer_mss = *m as usize,
                XstreamOption::WindowScale(s) => peer_wscale = Some((*s).min(MAX_WSCALE)),
                XstreamOption::SackPermitted => peer_sack = true,
                _ => {}
            }
        }
        self.sack_ok = self.config.sack && peer_sack;
        self.mss = (self.config.mss as usize).min(peer_mss).max(1);
        match peer_wscale {
            Some(s) => self.snd_wscale = s,
            None => {
                // Scaling needs both sides' consent (RFC 7323 2.2).
                self.snd_wscale = 0;
                self.rcv_wscale = 0;
            }
        }
        // The window in a SYN is never scaled.
        self.snd_wnd = seg.window as usize;
        self.snd_wl1 = seg.seq;
        self.snd_wl2 = seg.ack;
        self.cc = self
            .config
            .congestion
            .controller(self.config.initial_window, self.mss);
    }

    fn ack_of_syn(&mut self) -> Result<(), StreamError> {
        self.state = self.state.next(Transition::AckOfSyn)?;
        self.push_event(StreamEvent::Connected);
        if self.fin_seq.is_some() {
            // `close` was called during the handshake.
            self.state = self.state.next(Transition::Close)?;
        }
        Ok(())
    }

    fn acceptable(&self, seg: &XstreamRepr<'_>) -> bool {
        let len = seg.payload.len() as u32
            + u32::from(seg.flags.contains(Flags::SYN))
            + u32::from(seg.flags.contains(Flags::FIN));
        let wnd = self.recv.free().min(u32::MAX as usize / 2) as u32;
        let in_wnd = |s: u32| seq_ge(s, self.rcv_nxt) && seq_lt(s, self.rcv_nxt.wrapping_add(wnd));
        if seg.seq == self.rcv_nxt {
            // Covers zero-window probes: their ACK still counts.
            return true;
        }
        if len == 0 {
            return in_wnd(seg.seq);
        }
        wnd > 0 && (in_wnd(seg.seq) || in_wnd(seg.seq.wrapping_add(len - 1)))
    }

    /// Processes the ACK field; `in_window` is false for old duplicates,
    /// which may advance SND.UNA but never count as duplicate ACKs.
    fn process_ack(&mut self, now: Instant, seg: &XstreamRepr<'_>, in_window: bool) {
        let ack = seg.ack;
        if seq_lt(ack, self.snd_una) || seq_gt(ack, self.snd_max) {
            return;
        }
        let window = ((seg.window as u64) << self.snd_wscale).min(u32::MAX as u64) as usize;
        let old_wnd = self.snd_wnd;
        if in_window
            && (seq_lt(self.snd_wl1, seg.seq)
                || (self.snd_wl1 == seg.seq && seq_le(self.snd_wl2, ack)))
        {
            self.snd_wnd = window;
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = ack;
        }
        if self.snd_una == self.snd_max {
            // Nothing outstanding: a live peer answers probes; not a loss.
            self.retries = 0;
        }
        if self.sack_ok {
            for o in &seg.options {
                if let XstreamOption::Sack(blocks) = o {
                    for &(l, r) in blocks.iter().take(SACK_BLOCKS) {
                        self.sack_insert(ack, l, r);
                    }
                }
            }
        }
        if ack == self.snd_una {
            let pure = seg.payload.is_empty()
                && !seg.flags.contains(Flags::SYN)
                && !seg.flags.contains(Flags::FIN);
            if in_window && pure && window == old_wnd && self.snd_una != self.snd_max {
                self.on_dup_ack();
            }
            self.check_sack_loss();
            return;
        }

        // New data acknowledged.
        let acked = ack.wrapping_sub(self.snd_una) as usize;
        let fin_acked = self.fin_seq.is_some_and(|f| seq_gt(ack, f));
        // Bytes of the buffer covered: up to the ACK, not past the FIN.
        let data_end = if fin_acked {
            self.fin_seq.unwrap_or(ack)
        } else {
            ack
        };
        if seq_gt(data_end, self.buf_seq) {
            let n = (data_end.wrapping_sub(self.buf_seq) as usize).min(self.send_buf.len());
            self.send_buf.drain(..n);
            self.buf_seq = self.buf_seq.wrapping_add(n as u32);
            self.stats.bytes_acked += n as u64;
        }
        self.snd_una = ack;
        if seq_lt(self.snd_nxt, ack) {
            self.snd_nxt = ack;
        }
        self.sack_trim();
        self.retries = 0;
        self.rtt.reset_backoff();
        self.sample_rtt(now, ack);

        let flight = self.snd_max.wrapping_sub(self.snd_una) as usize;
        if self.in_recovery {
            if seq_ge(ack, self.recover) {
                self.in_recovery = false;
                self.cc.on_exit_recovery(flight, self.mss);
            } else {
                if !self.sack_ok {
                    // Partial ACK: the next hole is lost too (RFC 6582 3.2 (5)).
                    self.cc.on_partial_ack(acked, self.mss);
                    self.retransmit_now = true;
                }
                // With SACK the holes are repeated by `emit_sack_recovery`
                // as the pipe allows.
            }
        } else {
            let mut grow_by = acked;
            if self.hystart.active() && self.cc.window() < self.cc.ssthresh() {
                match self.hystart.on_ack(ack, self.snd_nxt, now) {
                    SlowStartStep::Grow(divisor) => grow_by = acked / divisor,
                    SlowStartStep::Exit => self.cc.end_slow_start(self.mss),
                }
            }
            if self.cwnd_limited(flight + acked) {
                self.cc.on_ack_at(grow_by, self.mss, now, self.rtt.srtt());
            }
        }
        self.grow_send_buffer();
        self.dup_acks = 0;
        self.rto_deadline = if self.snd_una == self.snd_max {
            None
        } else {
            Some(now + self.rtt.rto())
        };
        self.check_sack_loss();
        if self.write_blocked && self.writable() > 0 && self.state.can_write() {
            self.write_blocked = false;
            self.push_event(StreamEvent::Writable);
        }
        if fin_acked {
            self.on_fin_acked(now);
        }
    }

    /// Whether the congestion window, rather than the peer's window or the
    /// application, limited what was outstanding (`outstanding` bytes
    /// before this ACK). The window grows only then (RFC 7661's concern,
    /// decided as Linux's `tcp_is_cwnd_limited` does): otherwise a flow
    /// held back by the receiver would inflate it without bound, and the
    /// first loss would cut a meaningless number.
    fn cwnd_limited(&self, outstanding: usize) -> bool {
        let cwnd = self.cc.window();
        if cwnd < self.cc.ssthresh() {
            // Slow start may double what was actually used.
            cwnd < 2 * outstanding
        } else {
            // Silly-window avoidance leaves up to an MSS unused.
            outstanding + 3 * self.mss >= cwnd
        }
    }

    /// Send-buffer autotuning: room for twice the usable window (one
    /// window in flight, the next one queued), as Linux sizes `sk_sndbuf`
    /// from the congestion window; bounded by `send_buffer_max`, never
    /// shrinking.
    fn grow_send_buffer(&mut self) {
        let want = 2 * self.cc.window().min(self.snd_wnd);
        if want > self.send_cap {
            self.send_cap = want.min(self.config.send_buffer_max).max(self.send_cap);
        }
    }

    /// Receive-buffer autotuning after Linux's dynamic right-sizing
    /// (`tcp_rcv_space_adjust`): once per round trip, if the application
    /// read more than in the round trip before, the buffer grows to twice
    /// what it read (loss and queueing margin), plus 16 segments, plus
    /// twice the growth (a sender in slow start doubles each round trip),
    /// up to `recv_buffer_max`. Reads, not arrivals, drive it: a slow
    /// reader keeps a small window.
    fn tune_recv_buffer(&mut self, now: Instant) {
        let max = self.config.recv_buffer_max;
        if self.recv.capacity() >= max {
            return;
        }
        // The handshake gave both ends a sample; without one, wait.
        let Some(rtt) = self.rtt.srtt() else {
            return;
        };
        let (start, read_then) = *self.tune_mark.get_or_insert((now, self.app_read));
        if now.saturating_since(start) < rtt.max(TUNE_MIN_INTERVAL) {
            return;
        }
        let copied = (self.app_read - read_then).min(u32::MAX as u64);
        let space = self.tune_space.max(1) as u64;
        if copied > space {
            let mut win = 2 * copied + 16 * self.mss as u64;
            win += 2 * (win * (copied - space) / space);
            self.recv.grow(win.min(max as u64) as usize);
            self.tune_space = copied as usize;
        }
        self.tune_mark = Some((now, self.app_read));
    }

    fn on_dup_ack(&mut self) {
        self.dup_acks = self.dup_acks.saturating_add(1);
        if self.in_recovery {
            if !self.sack_ok {
                // Window inflation; SACK recovery counts the pipe instead.
                self.cc.on_recovery_dup_ack(self.mss);
            }
        } else if self.dup_acks == 3 && seq_gt(self.snd_una, self.recover) {
            // RFC 6582 3.2 (2): only when the ACK covers more than
            // `recover`, so one loss event is not answered twice.
            self.enter_recovery();
        }
    }

    /// RFC 6675 5: with SACK, recovery also begins once the first
    /// unacknowledged segment counts as lost (three segments' worth
    /// SACKed above it), though fewer than three duplicate ACKs arrived
    /// (some were lost, or the window is small).
    fn check_sack_loss(&mut self) {
        if self.sack_ok
            && !self.in_recovery
            && self.snd_una != self.snd_max
            && seq_gt(self.snd_una, self.recover)
            && self.holes_to_repeat().is_some()
        {
            self.enter_recovery();
        }
    }

    /// Fast retransmit and the start of fast recovery.
    fn enter_recovery(&mut self) {
        let flight = self.snd_max.wrapping_sub(self.snd_una) as usize;
        self.recover = self.snd_max;
        self.in_recovery = true;
        self.high_rxt = self.snd_una;
        self.cc.on_enter_recovery(flight, self.mss);
        self.hystart.finish();
        self.retransmit_now = true;
        self.stats.fast_retransmits += 1;
    }

    fn on_fin_acked(&mut self, now: Instant) {
        let Ok(next) = self.state.next(Transition::AckOfFin) else {
            return;
        };
        self.state = next;
        match next {
            State::TimeWait => self.enter_time_wait(now),
            State::Closed => {
                self.clear_timers();
                self.push_event(StreamEvent::Closed);
            }
            _ => {}
        }
    }

    fn enter_time_wait(&mut self, now: Instant) {
        self.rto_deadline = None;
        self.time_wait_deadline = Some(now + self.config.time_wait);
    }

    fn sample_rtt(&mut self, now: Instant, ack: u32) {
        if let Some((end, sent)) = self.rtt_probe {
            if seq_ge(ack, end) {
                self.rtt.on_sample(now - sent);
                self.rtt_probe = None;
            }
        }
    }

    fn process_data(&mut self, now: Instant, seg: &XstreamRepr<'_>) {
        // Trim what lies before RCV.NXT and beyond the free space.
        let mut seq = seg.seq;
        let mut data = seg.payload;
        if seq_lt(seq, self.rcv_nxt) {
            let skip = self.rcv_nxt.wrapping_sub(seq) as usize;
            data = data.get(skip..).unwrap_or(&[]);
            seq = self.rcv_nxt;
        }
        let rel = seq.wrapping_sub(self.rcv_nxt) as usize;
        let room = self.recv.free().saturating_sub(rel);
        let data = &data[..data.len().min(room)];
        if data.is_empty() {
            self.ack_now = true;
            return;
        }
        let advanced = self.recv.insert(rel, data);
        self.tune_recv_buffer(now);
        if advanced == 0 {
            // Out of order: ACK at once so the sender sees duplicates.
            self.ack_now = true;
            return;
        }
        self.rcv_nxt = self.rcv_nxt.wrapping_add(advanced as u32);
        self.stats.bytes_received += advanced as u64;
        self.push_event(StreamEvent::Readable);
        match self.config.delayed_ack {
            // A gap was filled (rel was 0 but more than the segment came
            // out), or delayed ACKs are off: ACK now.
            _ if advanced > data.len() => self.ack_now = true,
            None => self.ack_now = true,
            Some(d) => {
                if self.ack_deadline.is_some() {
                    // Every second full segment is ACKed at once (RFC 5681).
                    self.ack_now = true;
                } else {
                    self.ack_deadline = Some(now + d);
                }
            }
        }
    }

    fn check_peer_fin(&mut self, now: Instant) {
        if self.peer_fin != Some(self.rcv_nxt) || self.state.peer_closed() {
            return;
        }
        let Ok(next) = self.state.next(Transition::RecvFin) else {
            return;
        };
        self.state = next;
        self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
        self.peer_fin = None;
        self.ack_now = true;
        self.push_event(StreamEvent::PeerClosed);
        if next == State::TimeWait {
            self.enter_time_wait(now);
        }
    }

    /// The reply to a segment for a closed connection (RFC 793: never to
    /// a RST; with the segment's ACK as sequence number, if it has one).
    fn reply_rst(&mut self, seg: &XstreamRepr<'_>) {
        if seg.flags.contains(Flags::RST) {
            return;
        }
        self.pending_rst = Some(if seg.flags.contains(Flags::ACK) {
            (seg.ack, None)
        } else {
            let len = seg.payload.len() as u32
                + u32::from(seg.flags.contains(Flags::SYN))
                + u32::from(seg.flags.contains(Flags::FIN));
            (0, Some(seg.seq.wrapping_add(len)))
        });
    }

    fn fail(&mut self, e: ConnectionError) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        self.error = Some(e);
        self.clear_timers();
        self.push_event(StreamEvent::Error(e));
        self.push_event(StreamEvent::Closed);
    }

    // Entering CLOSED: nothing is due any more. That includes the
    // repetition of an unacknowledged MIGRATE (which rides on segments a
    // closed connection no longer sends): left armed, it would fire every
    // 64 RTOs for as long as the host keeps the connection.
    fn clear_timers(&mut self) {
        self.rto_deadline = None;
        self.ack_deadline = None;
        self.time_wait_deadline = None;
        self.keepalive_deadline = None;
        self.migrate_deadline = None;
    }

    fn push_event(&mut self, e: StreamEvent) {
        if !self.events.contains(&e) && self.events.len() < EVENT_LIMIT {
            self.events.push_back(e);
        }
    }

    // ---- timers ----

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.rto_deadline,
            self.ack_deadline,
            self.time_wait_deadline,
            self.keepalive_deadline,
            self.migrate_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.time_wait_deadline.is_some_and(|t| t <= now) {
            self.time_wait_deadline = None;
            if let Ok(next) = self.state.next(Transition::TimeWaitExpired) {
                self.state = next;
                self.clear_timers();
                self.push_event(StreamEvent::Closed);
            }
            return;
        }
        if self.ack_deadline.is_some_and(|t| t <= now) {
            self.ack_deadline = None;
            self.ack_now = true;
        }
        if self.rto_deadline.is_some_and(|t| t <= now) {
            self.on_rto(now);
        }
        if self.keepalive_deadline.is_some_and(|t| t <= now) {
            self.on_keepalive(now);
        }
        if self.migrate_deadline.is_some_and(|t| t <= now) {
            // An idle connection: repeat the MIGRATE on a bare ACK, backing
            // off as the RTO does.
            self.migrate_backoff = (self.migrate_backoff + 1).min(6);
            self.migrate_deadline = self
                .migrate_out
                .as_ref()
                .map(|_| now + self.rtt.rto() * (1 << self.migrate_backoff));
            self.ack_now = self.migrate_out.is_some();
        }
    }

    // ---- keepalive (RFC 1122 4.2.3.6) ----

    /// Whether keepalive is on and the state is one where an idle
    /// connection is probed: ESTABLISHED, CLOSE-WAIT, and FIN-WAIT-2 (which
    /// waits for the peer's FIN, possibly forever). In the other states a
    /// SYN or FIN of ours is outstanding, or TIME-WAIT runs.
    fn keepalive_applies(&self) -> bool {
        self.config.keepalive.is_some()
            && matches!(
                self.state,
                State::Established | State::CloseWait | State::FinWait2
            )
    }

    /// The peer was heard: the idle time starts again.
    fn arm_keepalive(&mut self, now: Instant) {
        self.keepalive_unanswered = 0;
        self.keepalive_deadline = match self.config.keepalive {
            Some(idle) if self.keepalive_applies() => Some(now + idle),
            _ => None,
        };
    }

    fn on_keepalive(&mut self, now: Instant) {
        let Some(idle) = self.config.keepalive.filter(|_| self.keepalive_applies()) else {
            self.keepalive_deadline = None;
            return;
        };
        if self.snd_una != self.snd_max || self.unsent() > 0 {
            // Not idle: the retransmission or persist timer watches the
            // peer; look again after another idle period.
            self.keepalive_unanswered = 0;
            self.keepalive_deadline = Some(now + idle);
            return;
        }
        if self.keepalive_unanswered >= self.config.keepalive_probes {
            self.fail(ConnectionError::TimedOut);
            return;
        }
        self.keepalive_unanswered += 1;
        self.keepalive_now = true;
        self.keepalive_deadline = Some(now + self.config.keepalive_interval);
    }

    fn on_rto(&mut self, now: Instant) {
        self.rto_deadline = None;
        self.stats.timeouts += 1;
        self.retries += 1;
        let limit = match self.state() {
            State::SynSent | State::SynReceived => self.config.syn_retries,
            _ => self.config.max_retransmissions,
        };
        if self.retries > limit {
            self.fail(ConnectionError::TimedOut);
            return;
        }
        self.rtt.on_backoff();
        self.rtt_probe = None;
        if self.snd_una == self.snd_max {
            // Persist timer: the peer's window is closed and nothing is in
            // flight. Probe with one byte so its window update is repeated.
            self.probe_now = true;
        } else {
            let flight = self.snd_max.wrapping_sub(self.snd_una) as usize;
            self.cc.on_timeout(flight, self.mss, self.retries == 1);
            self.hystart.finish();
            self.in_recovery = false;
            self.recover = self.snd_max;
            self.dup_acks = 0;
            if self.retries >= SACK_RENEGE_TIMEOUTS {
                // The peer may have discarded data it SACKed (RFC 2018 8).
                self.scoreboard.clear();
            }
            // Go back N: resend from the first unacknowledged byte (with
            // SACK, `skip_sacked` jumps over what the peer holds).
            self.snd_nxt = self.snd_una;
            self.retransmit_now = false;
            if self.state == State::SynReceived {
                self.resend_synack = true;
            }
        }
        self.rto_deadline = Some(now + self.rtt.rto());
    }

    // ---- outgoing ----

    /// Takes the next event, if any.
    pub fn poll_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    /// The next segment to send to [`peer_dag`](Self::peer_dag), as bytes
    /// for an XIP payload. Call until `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if let Some((seq, ack)) = self.pending_rst.take() {
            let flags = if ack.is_some() {
                Flags::RST | Flags::ACK
            } else {
                Flags::RST
            };
            let repr = XstreamRepr {
                next_header: 0,
                flags,
                seq,
                ack: ack.unwrap_or(0),
                window: 0,
                options: Vec::new(),
                payload: &[],
            };
            self.stats.segments_sent += 1;
            return repr.to_bytes().ok();
        }
        match self.state {
            State::Closed => return None,
            State::SynSent => {
                if seq_lt(self.snd_nxt, self.iss.wrapping_add(1)) {
                    return Some(self.emit_syn(now, false));
                }
                return None;
            }
            State::SynReceived => {
                if self.resend_synack || self.snd_nxt == self.iss {
                    self.resend_synack = false;
                    return Some(self.emit_syn(now, true));
                }
                if self.ack_now {
                    return Some(self.emit_ack());
                }
                return None;
            }
            _ => {}
        }
        if self.state.can_send_data() {
            if self.sack_ok && self.in_recovery {
                if let Some(s) = self.emit_sack_recovery(now) {
                    return Some(s);
                }
            }
            if self.retransmit_now {
                self.retransmit_now = false;
                if let Some(s) = self.emit_data(now, self.snd_una, Mode::Retransmit) {
                    return Some(s);
                }
            }
            if self.probe_now {
                self.probe_now = false;
                if let Some(s) = self.emit_data(now, self.snd_nxt, Mode::Probe) {
                    return Some(s);
                }
            }
            self.skip_sacked();
            if let Some(s) = self.emit_data(now, self.snd_nxt, Mode::New) {
                return Some(s);
            }
            // Blocked by a zero window with nothing in flight: arm the
            // persist timer so a lost window update cannot deadlock us.
            if self.snd_wnd == 0
                && self.snd_una == self.snd_max
                && self.unsent() > 0
                && self.rto_deadline.is_none()
            {
                self.rto_deadline = Some(now + self.rtt.rto());
            }
        }
        if std::mem::take(&mut self.keepalive_now) && self.state.is_synchronized() {
            // A segment the peer has already seen (SND.UNA - 1, no data):
            // out of its window, so it answers with an ACK (RFC 1122
            // 4.2.3.6; RFC 9293 3.8.4).
            self.stats.keepalive_probes += 1;
            let window = (self.advertised_window() >> self.rcv_wscale) as u32;
            let seq = self.snd_una.wrapping_sub(1);
            return Some(self.segment(Flags::ACK, seq, window, Vec::new(), &[]));
        }
        if self.ack_now {
            return Some(self.emit_ack());
        }
        None
    }

    fn unsent(&self) -> usize {
        let sent = self.snd_nxt.wrapping_sub(self.buf_seq) as usize;
        self.send_buf.len().saturating_sub(sent)
    }

    fn advertised_window(&self) -> usize {
        let scaled = self.recv.free() >> self.rcv_wscale;
        scaled.min(u16::MAX as usize) << self.rcv_wscale
    }

    fn emit_syn(&mut self, now: Instant, with_ack: bool) -> Vec<u8> {
        let mut options = vec![XstreamOption::Mss(self.config.mss)];
        // A SYN|ACK offers scaling only if the SYN did.
        if !with_ack || self.rcv_wscale > 0 || self.snd_wscale > 0 {
            options.push(XstreamOption::WindowScale(self.rcv_wscale));
        }
        // Likewise SACK (RFC 2018 2).
        if self.config.sack && (!with_ack || self.sack_ok) {
            options.push(XstreamOption::SackPermitted);
        }
        let flags = if with_ack {
            Flags::SYN | Flags::ACK
        } else {
            Flags::SYN
        };
        if seq_lt(self.iss, self.snd_max) {
            self.stats.retransmissions += 1;
            self.rtt_probe = None;
        } else {
            self.rtt_probe = Some((self.iss.wrapping_add(1), now));
        }
        self.snd_nxt = self.iss.wrapping_add(1);
        self.snd_max = self.snd_nxt;
        if self.rto_deadline.is_none() {
            self.rto_deadline = Some(now + self.rtt.rto());
        }
        let window = self.recv.free().min(u16::MAX as usize) as u32;
        self.segment(flags, self.iss, window, options, &[])
    }

    fn emit_ack(&mut self) -> Vec<u8> {
        let window = (self.advertised_window() >> self.rcv_wscale) as u32;
        self.segment(Flags::ACK, self.snd_nxt, window, Vec::new(), &[])
    }

    fn emit_data(&mut self, now: Instant, seq: u32, mode: Mode) -> Option<Vec<u8>> {
        if seq_lt(seq, self.buf_seq) {
            return None;
        }
        let off = seq.wrapping_sub(self.buf_seq) as usize;
        if off > self.send_buf.len() {
            return None;
        }
        let avail = self.send_buf.len() - off;
        let limit = match mode {
            Mode::Retransmit => self.snd_max.wrapping_sub(seq) as usize,
            Mode::Hole { end } => end.wrapping_sub(seq) as usize,
            Mode::Probe => 1,
            Mode::New => {
                let flight = self.snd_nxt.wrapping_sub(self.snd_una) as usize;
                let (wnd, sacked) = if self.sack_ok {
                    let cwnd = if self.in_recovery {
                        self.cc.ssthresh()
                    } else {
                        self.cc.window()
                    };
                    let peer = self.snd_wnd.saturating_sub(flight);
                    // Never into a SACKed range (after a timeout).
                    let sacked = match self.next_unsacked(seq).1 {
                        Some(l) => l.wrapping_sub(seq) as usize,
                        None => usize::MAX,
                    };
                    (cwnd.saturating_sub(self.pipe()).min(peer), sacked)
                } else {
                    let wnd = self.cc.window().min(self.snd_wnd);
                    (wnd.saturating_sub(flight), usize::MAX)
                };
                // Sender-side silly window avoidance (RFC 1122 4.2.3.4):
                // while data is in flight, wait until the windows admit a
                // full segment, or all that is queued. Otherwise every ACK
                // would release a sliver of window as a tiny segment.
                if wnd < self.mss.min(avail) && flight > 0 {
                    0
                } else {
                    wnd.min(sacked)
                }
            }
        };
        let len = avail.min(self.mss).min(limit);
        let end_data = seq.wrapping_add(len as u32);
        let fin = self.fin_seq == Some(end_data)
            && match mode {
                // Resend the FIN only if it was sent before.
                Mode::Retransmit | Mode::Hole { .. } => seq_lt(end_data, self.snd_max),
                _ => true,
            };
        if len == 0 && !fin {
            return None;
        }
        let payload: Vec<u8> = self.send_buf.range(off..off + len).copied().collect();
        let end = end_data.wrapping_add(u32::from(fin));
        if seq_lt(seq, self.snd_max) {
            self.stats.retransmissions += 1;
            // Karn: an ACK may now be for either copy.
            self.rtt_probe = None;
        } else {
            if self.rtt_probe.is_none() {
                self.rtt_probe = Some((end, now));
            }
            self.hystart.on_send(end, now);
        }
        if seq_gt(end, self.snd_nxt) {
            self.snd_nxt = end;
        }
        if seq_gt(end, self.snd_max) {
            self.snd_max = end;
        }
        if self.rto_deadline.is_none() {
            self.rto_deadline = Some(now + self.rtt.rto());
        }
        self.stats.bytes_sent += len as u64;
        let mut flags = Flags::ACK;
        if fin {
            flags = flags | Flags::FIN;
        }
        if len > 0 && len == avail {
            flags = flags | Flags::PSH;
        }
        let window = (self.advertised_window() >> self.rcv_wscale) as u32;
        Some(self.segment(flags, seq, window, Vec::new(), &payload))
    }

    // ---- SACK ----

    /// Records a SACK block `[l, r)` from an ACK of `ack`, if plausible:
    /// inside `(ack, SND.MAX]`.
    fn sack_insert(&mut self, ack: u32, l: u32, r: u32) {
        let base = ack;
        if !seq_gt(r, base) || seq_gt(r, self.snd_max) {
            return;
        }
        let rel = |s: u32| s.wrapping_sub(base);
        let mut lo = if seq_lt(l, base) { 0 } else { rel(l) };
        let mut hi = rel(r);
        if lo >= hi {
            return;
        }
        let mut out = Vec::with_capacity(self.scoreboard.len() + 1);
        let mut placed = false;
        for &(a, b) in &self.scoreboard {
            // Ranges wholly at or below `ack` are stale.
            if !seq_gt(b, base) {
                continue;
            }
            let ra = if seq_lt(a, base) { 0 } else { rel(a) };
            let rb = rel(b);
            if rb < lo {
                out.push((base.wrapping_add(ra), b));
            } else if ra > hi {
                if !placed {
                    out.push((base.wrapping_add(lo), base.wrapping_add(hi)));
                    placed = true;
                }
                out.push((a, b));
            } else {
                lo = lo.min(ra);
                hi = hi.max(rb);
            }
        }
        if !placed {
            out.push((base.wrapping_add(lo), base.wrapping_add(hi)));
        }
        out.truncate(SCOREBOARD_LIMIT);
        self.scoreboard = out;
    }

    /// Drops what SND.UNA covers from the scoreboard.
    fn sack_trim(&mut self) {
        let una = self.snd_una;
        if una == self.snd_max {
            self.scoreboard.clear();
            return;
        }
        self.scoreboard.retain(|&(_, b)| seq_gt(b, una));
        for r in &mut self.scoreboard {
            if seq_lt(r.0, una) {
                r.0 = una;
            }
        }
    }

    /// SACKed bytes in `[a, b)`.
    fn sacked_between(&self, a: u32, b: u32) -> usize {
        self.scoreboard
            .iter()
            .map(|&(l, r)| {
                let lo = if seq_lt(l, a) { a } else { l };
                let hi = if seq_gt(r, b) { b } else { r };
                if seq_lt(lo, hi) {
                    hi.wrapping_sub(lo) as usize
                } else {
                    0
                }
            })
            .sum()
    }

    /// The first byte at or after `from` that is not SACKed, and where the
    /// next SACKed range above it begins.
    fn next_unsacked(&self, mut from: u32) -> (u32, Option<u32>) {
        for &(a, b) in &self.scoreboard {
            if seq_le(b, from) {
                continue;
            }
            if seq_le(a, from) {
                from = b;
                continue;
            }
            return (from, Some(a));
        }
        (from, None)
    }

    /// Moves SND.NXT past SACKed data (resending after a timeout).
    fn skip_sacked(&mut self) {
        if self.sack_ok && seq_lt(self.snd_nxt, self.snd_max) {
            let (next, _) = self.next_unsacked(self.snd_nxt);
            self.snd_nxt = if seq_gt(next, self.snd_max) {
                self.snd_max
            } else {
                next
            };
        }
    }

    /// Where un-SACKed holes not yet repeated begin, and where lost ones
    /// end: `[start, high)` holds the holes still to repeat.
    fn holes_to_repeat(&self) -> Option<(u32, u32)> {
        // RFC 6675's IsLost: a hole counts as lost once at least three
        // segments' worth above it is SACKed (reordering is not loss).
        let mut above = 0usize;
        let mut high = None;
        for &(l, r) in self.scoreboard.iter().rev() {
            above += r.wrapping_sub(l) as usize;
            if above >= 3 * self.mss {
                high = Some(l);
                break;
            }
        }
        let high = high?;
        let start = if seq_gt(self.high_rxt, self.snd_una) {
            self.high_rxt
        } else {
            self.snd_una
        };
        seq_lt(start, high).then_some((start, high))
    }

    /// RFC 6675's pipe, simplified: bytes sent and not yet acknowledged,
    /// minus SACKed bytes, minus (in recovery) holes deemed lost and not
    /// yet repeated.
    fn pipe(&self) -> usize {
        let outstanding = self.snd_nxt.wrapping_sub(self.snd_una) as usize;
        let sacked = self.sacked_between(self.snd_una, self.snd_nxt);
        let lost = match self.holes_to_repeat() {
            Some((start, high)) if self.in_recovery => {
                (high.wrapping_sub(start) as usize).saturating_sub(self.sacked_between(start, high))
            }
            _ => 0,
        };
        outstanding.saturating_sub(sacked).saturating_sub(lost)
    }

    /// In SACK fast recovery: the next hole to repeat, if the pipe allows
    /// (the first one regardless, RFC 6675 5 (3)).
    fn emit_sack_recovery(&mut self, now: Instant) -> Option<Vec<u8>> {
        let forced = std::mem::take(&mut self.retransmit_now);
        if !forced && self.pipe() >= self.cc.ssthresh() {
            return None;
        }
        let (start, high) = match self.holes_to_repeat() {
            Some(h) => h,
            // Nothing SACKed yet: the first unacknowledged segment.
            None if forced => (self.snd_una, self.snd_max),
            None => return None,
        };
        let (from, next_sacked) = self.next_unsacked(start);
        if !seq_lt(from, high) {
            self.high_rxt = high;
            return None;
        }
        let end = next_sacked.filter(|&l| seq_lt(l, high)).unwrap_or(high);
        let end = if (end.wrapping_sub(from) as usize) > self.mss {
            from.wrapping_add(self.mss as u32)
        } else {
            end
        };
        self.high_rxt = end;
        self.emit_data(now, from, Mode::Hole { end })
    }

    fn segment(
        &mut self,
        flags: Flags,
        seq: u32,
        window: u32,
        options: Vec<XstreamOption>,
        payload: &[u8],
    ) -> Vec<u8> {
        let ack = if flags.contains(Flags::ACK) {
            self.rcv_nxt
        } else {
            0
        };
        let mut options = options;
        if flags.contains(Flags::ACK) && !flags.contains(Flags::SYN) {
            if let Some((body, _)) = &self.migrate_out {
                options.push(XstreamOption::Migrate(body.clone()));
            }
            if let Some(seq) = self.migrate_ack_out.take() {
                options.push(XstreamOption::MigrateAck(super::migrate::ack_bytes(seq)));
            }
        }
        if self.sack_ok && flags.contains(Flags::ACK) && !flags.contains(Flags::SYN) {
            let blocks: Vec<(u32, u32)> = self
                .recv
                .sack_blocks(SACK_BLOCKS)
                .into_iter()
                .map(|(l, r)| {
                    (
                        self.rcv_nxt.wrapping_add(l as u32),
                        self.rcv_nxt.wrapping_add(r as u32),
                    )
                })
                .collect();
            if !blocks.is_empty() {
                options.push(XstreamOption::Sack(blocks));
            }
        }
        if flags.contains(Flags::ACK) {
            // Any ACK carries everything a pending or delayed one would.
            self.ack_now = false;
            self.ack_deadline = None;
            self.adv_edge = self.rcv_nxt.wrapping_add(self.advertised_window() as u32);
        }
        self.stats.segments_sent += 1;
        let repr = XstreamRepr {
            next_header: 0,
            flags,
            seq,
            ack,
            window,
            options,
            payload,
        };
        // Our options are at most 12 bytes, or 36 with at most four
        // non-empty SACK blocks, so emitting cannot fail; an empty vector
        // would be a harmless runt anyway.
        repr.to_bytes().unwrap_or_default()
    }
}

/// Why `emit_data` is called.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// New data within the congestion and peer windows.
    New,
    /// The first unacknowledged segment, ignoring the windows.
    Retransmit,
    /// Part of a hole below the highest SACKed byte, up to `end`.
    Hole {
        /// Where the hole ends (a SACKed range begins).
        end: u32,
    },
    /// One byte past a closed peer window.
    Probe,
}
