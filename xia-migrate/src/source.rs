//! The source side of a migration: a sans-IO session that drives
//! [`crate::state::Source`] through its table.
//!
//! The agent that runs the guest feeds the session what arrives on the
//! migration's connection ([`SourceSession::handle_bytes`]), asks it for
//! bytes to write when the connection has room
//! ([`SourceSession::poll_transmit`]), calls
//! [`SourceSession::handle_timeout`] at [`SourceSession::poll_timeout`],
//! and tells it when the connection fails. The session pauses, throttles
//! and resumes the guest itself, so the guest is passed to every call that
//! may change it; it never reads a clock.
//!
//! **Rounds.** Round 0 sends every page while the guest runs; each later
//! round sends the pages dirtied during the one before (read when sent, so
//! a page written after it went is caught by the next round). At the end of
//! a round the session estimates the downtime a stop now would cost — the
//! dirty pages at the size pages had in the last round, plus what is still
//! in flight, plus the device state, over the measured bandwidth, plus one
//! RTT — and pauses when it is under the target. Rounds that stop
//! shrinking (two in a row not 10 % smaller) throttle the guest as QEMU's
//! auto-converge does (20 %, then 10 % more a round, up to 99 %); without
//! auto-converge, or at 99 %, or after `max_rounds`, it pauses anyway and
//! the report says the target was missed.
//!
//! **Bandwidth** is measured from the destination's progress reports
//! (bytes received, every 64 KiB) over a window of a few RTTs; the RTT
//! from the offer's round trip, before any data queues. The session keeps
//! at most a few bandwidth-delay products unacknowledged, so that little is
//! queued in the network when it pauses, and before pausing it lets the
//! pipe drain to one BDP (bytes still queued are downtime QEMU's estimate
//! does not see).
//!
//! **Smart** mode starts like live and measures bandwidth, RTT and the
//! dirty rate during round 0, then follows the model from where round 0
//! has got ([`crate::model::choose_midway`]): full (pause now and send
//! the pages round 0 has not sent and the dirty ones), live, or live with
//! deltas. It decides
//!
//! 1. **as soon as full meets the target**: at every progress report
//!    during the probe (500 ms by default), once the bandwidth has been
//!    measured over two RTTs at least, it asks the model; if the pick is
//!    full it pauses at once, without draining the pipe (the pages in
//!    flight must arrive anyway, and an idle connection restarts with a
//!    window's burst). Full sends no page twice unless it was written
//!    since, so when it meets the target it finishes first, and waiting
//!    for the probe's end would only make round 0 re-send what the guest
//!    dirtied meanwhile — on a fast link, round 0 ends before the probe
//!    does, and "full" after it is a pre-copy round plus a stop;
//! 2. otherwise **at the probe's end**, for any strategy;
//! 3. or **when round 0 ends** before the probe does: then full (the dirty
//!    set only) drains the pipe to one BDP and pauses, as live's stop
//!    does.
//!
//! Live and live with deltas do the same thing during round 0 (the delta
//! cache starts with round 1), so deciding between them early would gain
//! nothing.

use std::collections::VecDeque;
use std::time::Duration;

use xia_stack::identity::PublicKey;
use xia_stack::time::Instant;

use crate::auth::{self, AuthError, SourceAuth};
use crate::guest::Guest;
use crate::model::{self, Prediction, Strategy};
use crate::msg::{FrameError, FrameReader, Mode, Msg, Offer, Outcome, NONCE_LEN};
use crate::pages::{EncodeStats, Encoder};
use crate::state::{IllegalTransition, Source, SourceEvent as T};

/// How a source migrates.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceConfig {
    /// Full, live or smart.
    pub mode: Mode,
    /// Live: pause when the estimated downtime is under this.
    pub downtime_target: Duration,
    /// A cap on the bytes per second the session sends (`None`: none).
    pub max_bandwidth: Option<f64>,
    /// Live: at most this many pre-copy rounds.
    pub max_rounds: u32,
    /// Live: throttle a guest whose rounds stop shrinking.
    pub auto_converge: bool,
    /// Live: send re-sent pages as XOR deltas (XBZRLE), keeping the last
    /// content of up to this many bytes of pages (0: off). Smart sets it
    /// when it picks deltas.
    pub delta_cache: usize,
    /// Bytes of pages per second the source can delta-encode (`None`: as
    /// fast as it is asked). The simulator sets it to model the CPU.
    pub encode_rate: Option<f64>,
    /// No word from the destination for this long fails the migration.
    pub timeout: Duration,
    /// Smart: how long round 0 measures before choosing.
    pub probe: Duration,
    /// Bytes of pages per frame.
    pub batch: usize,
    /// Send pages the network holds ([`Guest::content_index`]: the
    /// guest's base image) as their CID, for the destination to fetch
    /// from a nearby cache or image store.
    pub dedup: bool,
}

impl Default for SourceConfig {
    fn default() -> SourceConfig {
        SourceConfig {
            mode: Mode::Live,
            downtime_target: Duration::from_millis(300),
            max_bandwidth: None,
            max_rounds: 30,
            auto_converge: true,
            delta_cache: 0,
            encode_rate: None,
            timeout: Duration::from_secs(10),
            probe: Duration::from_millis(500),
            batch: 64 * 1024,
            dedup: false,
        }
    }
}

/// The share of a page a delta is assumed to take when smart mode
/// predicts (the synthetic guest's are far smaller; real guests' larger).
pub const ASSUMED_DELTA_RATIO: f64 = 0.25;

/// Midway through round 0, smart takes full only if its predicted
/// downtime is within this share of the target (see `decide`).
const MIDWAY_FULL_MARGIN: f64 = 0.8;

/// The default delta cache: 64 MiB, QEMU's XBZRLE default.
pub const DEFAULT_DELTA_CACHE: usize = 64 << 20;

/// Why a migration failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MigrateError {
    /// The destination would not take the guest.
    #[error("the destination refused: {0}")]
    Refused(String),
    /// The destination gave up.
    #[error("the destination aborted: {0}")]
    PeerAborted(String),
    /// No word from the other side in time.
    #[error("no word from the other side for {0:?}")]
    Timeout(Duration),
    /// The connection failed.
    #[error("the connection to the destination failed")]
    LinkLost,
    /// The peer sent something that is not the protocol.
    #[error("protocol error: {0}")]
    Protocol(#[from] FrameError),
    /// A message out of turn.
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// Stopped by the operator.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// The other agent did not prove who it is.
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
}

/// What the session tells its agent.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceNote {
    /// The destination reserved room.
    Accepted,
    /// Smart mode chose (with every strategy's prediction).
    Chose {
        /// The pick.
        strategy: Strategy,
        /// What the model predicted for each.
        predictions: [Prediction; 3],
    },
    /// A pre-copy round began.
    Round {
        /// Its number.
        round: u32,
        /// Pages it sends.
        pages: usize,
    },
    /// The guest is throttled to `factor` of its speed.
    Throttled {
        /// The factor.
        factor: f64,
    },
    /// The guest is paused for the final copy.
    Paused,
    /// Everything is sent; waiting for the commit.
    FinalSent,
    /// The destination committed: the guest is its own; do not resume it.
    Committed,
    /// Contact lost after the final copy: the guest stays paused until
    /// the destination's outcome is known.
    InDoubt,
    /// Finished: the guest runs at the destination; release it here.
    Done(Report),
    /// A message whose signature did not hold was dropped.
    Forged(AuthError),
    /// Failed before the commit: the guest runs here again.
    Failed {
        /// Where it failed.
        phase: Source,
        /// Why.
        error: MigrateError,
    },
}

/// A finished migration's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The migration.
    pub id: u64,
    /// The mode asked for.
    pub mode: Mode,
    /// The strategy followed.
    pub strategy: Strategy,
    /// Pre-copy rounds (the final copy not counted).
    pub rounds: u32,
    /// From the offer to the destination's activation message.
    pub total: Duration,
    /// From the pause to the activation message, less half an RTT: the
    /// source's view of the downtime.
    pub downtime: Duration,
    /// Bytes written to the connection.
    pub bytes: u64,
    /// Pages sent, by encoding.
    pub pages: EncodeStats,
    /// Pages in the final copy.
    pub final_pages: usize,
    /// The estimate of the downtime when the session paused.
    pub estimated_downtime: Duration,
    /// The lowest throttle factor applied (1: none).
    pub throttle: f64,
    /// Whether it paused without meeting the downtime target.
    pub target_missed: bool,
    /// Bandwidth measured at the pause, bytes per second.
    pub bandwidth: f64,
    /// RTT measured by the offer.
    pub rtt: Duration,
}

/// What a source agent must log before it pauses a guest, to resume the
/// migration in doubt after a restart ([`SourceSession::recover`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recovery {
    /// The migration.
    pub id: u64,
    /// The guest.
    pub name: String,
    /// The session hash (what its aborts are signed over).
    pub session: [u8; 20],
}

/// A live view, for progress bars.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Status {
    /// The state.
    pub state: Source,
    /// The round.
    pub round: u32,
    /// Pages left in this round.
    pub pages_left: usize,
    /// Pages dirty now (to be sent next round).
    pub dirty: usize,
    /// Distinct pages dirtied per second in the last round.
    pub dirty_rate: f64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes the destination reported.
    pub bytes_acked: u64,
    /// Bandwidth, bytes per second (0: not measured yet).
    pub bandwidth: f64,
    /// The downtime a pause now would cost.
    pub estimated_downtime: Option<Duration>,
    /// The throttle factor.
    pub throttle: f64,
}

/// The source side of one migration.
#[derive(Debug)]
pub struct SourceSession {
    id: u64,
    name: String,
    auth: SourceAuth,
    // The session hash: SHA-1 of the signed offer.
    session: [u8; 20],
    // Learnt from the Accept (a recovered session never has it).
    dest_key: Option<PublicKey>,
    dest_nonce: [u8; NONCE_LEN],
    final_digest: [u8; 20],
    // Queries sent; an outcome must answer one of the last few.
    queries: u32,
    config: SourceConfig,
    state: Source,
    strategy: Strategy,
    decided: bool,
    pages: usize,
    page_size: usize,
    enc: Encoder,
    reader: FrameReader,
    out: VecDeque<Vec<u8>>,
    notes: VecDeque<SourceNote>,
    queue: Vec<usize>,
    cursor: usize,
    round: u32,
    precopy_rounds: u32,
    round_start: Instant,
    round_bytes: u64,
    round_pages: usize,
    // Of those, sent by CID (a few bytes each: not what a page costs).
    round_cid: usize,
    // Pages the destination could not fetch by CID: sent whole next.
    wanted: VecDeque<u32>,
    bytes_per_page: f64,
    last_dirty: usize,
    dirty_rate: f64,
    stalled: u32,
    throttle_pct: u32,
    min_throttle: f64,
    sent: u64,
    acked: u64,
    samples: VecDeque<(Instant, u64)>,
    rtt: Option<Duration>,
    device_len: usize,
    started: Instant,
    offer_at: Instant,
    accepted_at: Instant,
    last_heard: Instant,
    send_at: Instant,
    // When pacing held sending back: poll_transmit is due then.
    pace_wake: Option<Instant>,
    pause_pending: bool,
    paused_at: Option<Instant>,
    final_at: Instant,
    final_pages: usize,
    estimate_at_pause: Duration,
    target_missed: bool,
    bw_at_pause: f64,
    link_down: bool,
    next_query: Instant,
    // Went in doubt at some point: once committed, it asks about the
    // activation too instead of waiting for word on a lost connection.
    was_in_doubt: bool,
}

// A page sent by CID on the wire: index, tag, SHA-1.
const CID_PAGE_BYTES: usize = 25;
const PROGRESS_WINDOW_MIN: Duration = Duration::from_millis(100);
const MIN_INFLIGHT: u64 = 2 << 20;
const QUERY_INTERVAL: Duration = Duration::from_secs(1);
// Outcomes answer one of the last this many queries.
const QUERIES_ANSWERED: u32 = 8;

impl SourceSession {
    /// Starts migration `id` of `guest` (named `name`): the offer is the
    /// first thing [`SourceSession::poll_transmit`] returns.
    pub fn new(
        id: u64,
        name: &str,
        guest: &impl Guest,
        config: SourceConfig,
        auth: SourceAuth,
        now: Instant,
    ) -> SourceSession {
        let mut s = SourceSession::idle(
            id,
            name,
            (guest.pages(), guest.page_size(), guest.device_state().len()),
            config,
            auth,
            now,
        );
        s.step(T::Offer).expect("Idle takes Offer");
        if s.config.dedup {
            s.enc.set_content_index(guest.content_index());
        }
        let mut offer = Offer {
            id,
            mode: s.config.mode,
            pages: s.pages as u32,
            page_size: s.page_size as u32,
            name: s.name.clone(),
            key: s.auth.key.public_key().to_bytes(),
            to: s.auth.destination,
            nonce: s.auth.offer_nonce(),
            sig: [0; 64],
        };
        offer.sig = auth::sign(&s.auth.key, &offer.signed_bytes());
        s.session = offer.session();
        s.push(Msg::Offer(offer));
        s
    }

    // A session in Idle for a guest of `pages` pages of `page_size`
    // bytes with `device_len` bytes of device state.
    fn idle(
        id: u64,
        name: &str,
        (pages, page_size, device_len): (usize, usize, usize),
        config: SourceConfig,
        auth: SourceAuth,
        now: Instant,
    ) -> SourceSession {
        let strategy = match config.mode {
            Mode::Full => Strategy::Full,
            Mode::Live | Mode::Smart if config.delta_cache > 0 => Strategy::LiveDelta,
            Mode::Live | Mode::Smart => Strategy::Live,
        };
        SourceSession {
            id,
            name: name.to_owned(),
            auth,
            session: [0; 20],
            dest_key: None,
            dest_nonce: [0; NONCE_LEN],
            final_digest: [0; 20],
            queries: 0,
            state: Source::Idle,
            strategy,
            decided: config.mode != Mode::Smart,
            pages,
            page_size,
            enc: Encoder::new(page_size, 0),
            reader: FrameReader::default(),
            out: VecDeque::new(),
            notes: VecDeque::new(),
            queue: Vec::new(),
            cursor: 0,
            round: 0,
            precopy_rounds: 0,
            round_start: now,
            round_bytes: 0,
            round_pages: 0,
            round_cid: 0,
            wanted: VecDeque::new(),
            bytes_per_page: page_size as f64,
            last_dirty: pages,
            dirty_rate: 0.0,
            stalled: 0,
            throttle_pct: 0,
            min_throttle: 1.0,
            sent: 0,
            acked: 0,
            samples: VecDeque::new(),
            rtt: None,
            device_len,
            started: now,
            offer_at: now,
            accepted_at: now,
            last_heard: now,
            send_at: now,
            pace_wake: None,
            pause_pending: false,
            paused_at: None,
            final_at: now,
            final_pages: 0,
            estimate_at_pause: Duration::ZERO,
            target_missed: false,
            bw_at_pause: 0.0,
            link_down: false,
            next_query: now,
            was_in_doubt: false,
            config,
        }
    }

    /// A source agent that restarted and finds a migration's guest paused
    /// (its log says the final copy had begun): it must learn the
    /// destination's outcome before it may resume it. `auth` needs a
    /// fresh secret.
    pub fn recover(
        log: &Recovery,
        config: SourceConfig,
        auth: SourceAuth,
        now: Instant,
    ) -> SourceSession {
        let mut s = SourceSession::idle(log.id, &log.name, (0, 1, 0), config, auth, now);
        s.session = log.session;
        s.state = Source::InDoubt;
        s.was_in_doubt = true;
        s.link_down = true;
        s.paused_at = Some(now);
        s.notes.push_back(SourceNote::InDoubt);
        s
    }

    /// The connection is up: the offer goes now (its round trip, not the
    /// connection's handshake, is the RTT sample).
    pub fn connected(&mut self, now: Instant) {
        if self.state == Source::Negotiating {
            self.offer_at = now;
        }
    }

    /// The migration's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// What to log before the guest pauses.
    pub fn recovery(&self) -> Recovery {
        Recovery {
            id: self.id,
            name: self.name.clone(),
            session: self.session,
        }
    }

    /// Its state.
    pub fn state(&self) -> Source {
        self.state
    }

    /// Whether the guest must not run here (paused for the final copy,
    /// in doubt, or handed over).
    pub fn guest_paused(&self) -> bool {
        !self.state.guest_runs()
    }

    /// Whether the session needs a new connection to the destination (in
    /// doubt after losing the old one): open one and call
    /// [`SourceSession::link_up`].
    pub fn wants_link(&self) -> bool {
        self.link_down && self.state == Source::InDoubt
    }

    /// A new connection to the destination is up: the session asks it.
    pub fn link_up(&mut self, now: Instant) {
        self.link_down = false;
        self.reader = FrameReader::default();
        self.next_query = now;
    }

    /// The next thing to tell the agent.
    pub fn poll_note(&mut self) -> Option<SourceNote> {
        self.notes.pop_front()
    }

    /// A live view.
    pub fn status(&self, guest: &impl Guest) -> Status {
        let dirty = guest.dirty_count();
        Status {
            state: self.state,
            round: self.round,
            pages_left: self.queue.len() - self.cursor,
            dirty,
            dirty_rate: self.dirty_rate,
            bytes_sent: self.sent,
            bytes_acked: self.acked,
            bandwidth: self.bandwidth().unwrap_or(0.0),
            estimated_downtime: self.estimate(dirty),
            throttle: 1.0 - f64::from(self.throttle_pct) / 100.0,
        }
    }

    fn step(&mut self, t: T) -> Result<(), IllegalTransition> {
        self.state = self.state.next(t)?;
        Ok(())
    }

    fn push(&mut self, m: Msg) {
        self.out.push_back(m.to_frame());
    }

    // Checks a destination's signature with the key its accept proved.
    fn check_dest(
        &self,
        bytes: &[u8],
        sig: &[u8; 64],
        what: &'static str,
    ) -> Result<(), AuthError> {
        let key = self.dest_key.as_ref().ok_or(AuthError::NoKey(what))?;
        auth::verify(key, bytes, sig, what)
    }

    /// Bytes that arrived on the connection.
    pub fn handle_bytes(&mut self, now: Instant, data: &[u8], guest: &mut impl Guest) {
        self.reader.push(data);
        self.last_heard = now;
        loop {
            match self.reader.next_msg() {
                Ok(Some(m)) => self.handle_msg(now, m, guest),
                Ok(None) => break,
                Err(e) => {
                    self.fail(now, MigrateError::Protocol(e), guest);
                    break;
                }
            }
        }
    }

    fn handle_msg(&mut self, now: Instant, m: Msg, guest: &mut impl Guest) {
        match m {
            Msg::Accept {
                id,
                key,
                nonce,
                sig,
            } if id == self.id && self.state == Source::Negotiating => {
                // The accept opens the copy: a destination that cannot
                // prove it owns the SID we dialled gets nothing.
                let checked =
                    auth::certified(&key, &self.auth.destination, "accept").and_then(|k| {
                        let bytes = auth::accept_bytes(&self.session, &key, &nonce);
                        auth::verify(&k, &bytes, &sig, "accept").map(|()| k)
                    });
                match checked {
                    Ok(k) => {
                        self.dest_key = Some(k);
                        self.dest_nonce = nonce;
                    }
                    Err(e) => {
                        self.push(auth::abort_msg(
                            &self.auth.key,
                            self.id,
                            &self.session,
                            &format!("{e}"),
                        ));
                        self.fail(now, MigrateError::Auth(e), guest);
                        return;
                    }
                }
                let _ = self.step(T::Accepted);
                self.rtt = Some(now - self.offer_at);
                self.accepted_at = now;
                self.notes.push_back(SourceNote::Accepted);
                // Round 0: every page; clear the log so that round 1
                // sends what is written from now on.
                guest.take_dirty();
                self.queue = (0..self.pages).collect();
                self.start_round(now);
                if self.strategy == Strategy::Full {
                    self.pause(now, guest, Vec::new());
                } else {
                    self.notes.push_back(SourceNote::Round {
                        round: 0,
                        pages: self.pages,
                    });
                }
            }
            Msg::Refuse { id, reason } if id == self.id => {
                if self.step(T::Refused).is_ok() {
                    self.notes.push_back(SourceNote::Failed {
                        phase: Source::Negotiating,
                        error: MigrateError::Refused(reason),
                    });
                }
            }
            Msg::Progress { received } => {
                self.acked = self.acked.max(received);
                self.samples.push_back((now, self.acked));
                let keep = self.window() * 4;
                while self.samples.len() > 2 && self.samples[0].0 + keep < now {
                    self.samples.pop_front();
                }
                if self.samples.len() > 4096 {
                    self.samples.pop_front();
                }
                // Smart: a new measurement; full may meet the target now.
                self.probe(now, guest, true);
            }
            // The destination could not fetch these by CID. While the
            // image is still ours to send; after the commit it has them.
            Msg::Want { pages } if self.state.owns_guest() => {
                let n = self.pages as u32;
                self.wanted.extend(pages.into_iter().filter(|&p| p < n));
            }
            Msg::Commit { id, sig } if id == self.id => {
                let bytes = auth::commit_bytes(&self.session, &self.final_digest);
                if let Err(e) = self.check_dest(&bytes, &sig, "commit") {
                    self.notes.push_back(SourceNote::Forged(e));
                    return;
                }
                if self.step(T::Committed).is_ok() {
                    self.notes.push_back(SourceNote::Committed);
                }
            }
            Msg::Activated { id, sig } if id == self.id => {
                let bytes = auth::activated_bytes(&self.session);
                if let Err(e) = self.check_dest(&bytes, &sig, "activated") {
                    self.notes.push_back(SourceNote::Forged(e));
                    return;
                }
                if matches!(self.state, Source::AwaitCommit | Source::InDoubt) {
                    let _ = self.step(T::Committed);
                    self.notes.push_back(SourceNote::Committed);
                }
                if self.step(T::Activated).is_ok() {
                    let report = self.report(now);
                    self.notes.push_back(SourceNote::Done(report));
                }
            }
            Msg::Abort { id, sig, reason } if id == self.id => {
                // Before the accept nothing is copied and the guest runs
                // here: an abort needs no proof. After it, it must come
                // from the destination's key.
                if self.state != Source::Negotiating {
                    let bytes = auth::abort_bytes(&self.session, &reason);
                    if let Err(e) = self.check_dest(&bytes, &sig, "abort") {
                        self.notes.push_back(SourceNote::Forged(e));
                        return;
                    }
                }
                // The destination has not committed and never will.
                let phase = self.state;
                if matches!(self.state, Source::AwaitCommit) {
                    let _ = self.step(T::Fail);
                }
                if self.state == Source::InDoubt {
                    let _ = self.step(T::NotCommitted);
                } else if self.step(T::Fail).is_err() {
                    return;
                }
                self.resume(guest);
                self.notes.push_back(SourceNote::Failed {
                    phase,
                    error: MigrateError::PeerAborted(reason),
                });
            }
            Msg::Outcome {
                id,
                outcome,
                nonce,
                key,
                sig,
            } if id == self.id => {
                // One of our recent queries (answers to a resent one may
                // cross), then one signature check.
                let recent = (self.queries.saturating_sub(QUERIES_ANSWERED)..self.queries)
                    .any(|n| self.auth.query_nonce(n) == nonce);
                let checked = if recent {
                    auth::certified(&key, &self.auth.destination, "outcome").and_then(|k| {
                        let bytes = auth::outcome_bytes(id, outcome, &nonce);
                        auth::verify(&k, &bytes, &sig, "outcome")
                    })
                } else {
                    Err(AuthError::UnknownQuery)
                };
                match checked {
                    Ok(()) => self.outcome(now, outcome, guest),
                    Err(e) => self.notes.push_back(SourceNote::Forged(e)),
                }
            }
            other => {
                // Anything else out of turn is a protocol error before the
                // commit and is ignored after it.
                if self.state.owns_guest() && self.state != Source::Aborted {
                    let e = IllegalTransition {
                        from: format!("{:?}", self.state),
                        via: format!("{other:?}").chars().take(40).collect(),
                    };
                    self.fail(now, MigrateError::Illegal(e), guest);
                }
            }
        }
    }

    fn outcome(&mut self, now: Instant, outcome: Outcome, guest: &mut impl Guest) {
        match (self.state, outcome) {
            (Source::InDoubt, Outcome::Committed) => {
                let _ = self.step(T::Committed);
                self.notes.push_back(SourceNote::Committed);
            }
            (Source::InDoubt | Source::Released, Outcome::Active) => {
                if self.state == Source::InDoubt {
                    let _ = self.step(T::Committed);
                    self.notes.push_back(SourceNote::Committed);
                }
                let _ = self.step(T::Activated);
                let report = self.report(now);
                self.notes.push_back(SourceNote::Done(report));
            }
            (Source::InDoubt, Outcome::Unknown | Outcome::Aborted) => {
                let _ = self.step(T::NotCommitted);
                self.resume(guest);
                self.notes.push_back(SourceNote::Failed {
                    phase: Source::InDoubt,
                    error: MigrateError::PeerAborted(
                        "the destination did not commit (in-doubt resolution)".into(),
                    ),
                });
            }
            (Source::InDoubt, Outcome::Receiving) => {
                // It has not committed: ask it to abort, and ask again.
                self.push(auth::abort_msg(
                    &self.auth.key,
                    self.id,
                    &self.session,
                    "source lost the connection before the commit",
                ));
                self.next_query = now;
            }
            _ => {}
        }
    }

    /// Cancels the migration if it has not reached the final copy's end:
    /// the guest runs here again. Returns whether it did.
    pub fn cancel(&mut self, now: Instant, reason: &str, guest: &mut impl Guest) -> bool {
        if !matches!(
            self.state,
            Source::Negotiating | Source::PreCopy | Source::StopAndCopy
        ) {
            return false;
        }
        self.out.clear();
        self.push(auth::abort_msg(
            &self.auth.key,
            self.id,
            &self.session,
            reason,
        ));
        self.fail(now, MigrateError::Cancelled(reason.to_owned()), guest);
        true
    }

    /// The connection failed (reset, timed out, closed).
    pub fn handle_link_lost(&mut self, now: Instant, guest: &mut impl Guest) {
        self.link_down = true;
        self.fail(now, MigrateError::LinkLost, guest);
    }

    fn fail(&mut self, now: Instant, error: MigrateError, guest: &mut impl Guest) {
        let phase = self.state;
        match self.state {
            Source::Negotiating | Source::PreCopy | Source::StopAndCopy => {
                let _ = self.step(T::Fail);
                self.resume(guest);
                self.notes.push_back(SourceNote::Failed { phase, error });
            }
            Source::AwaitCommit | Source::Released => {
                let _ = self.step(T::Fail);
                self.was_in_doubt = true;
                self.next_query = now;
                self.notes.push_back(SourceNote::InDoubt);
            }
            _ => {}
        }
    }

    fn resume(&mut self, guest: &mut impl Guest) {
        guest.set_throttle(1.0);
        guest.resume();
        self.queue.clear();
        self.cursor = 0;
    }

    /// Bytes to write to the connection now, at most about `room` (a
    /// control message may exceed it); `None` when there is nothing, or
    /// when pacing or the in-flight limit holds it back (call again after
    /// [`SourceSession::handle_bytes`] or at [`SourceSession::poll_timeout`]).
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        room: usize,
        guest: &mut impl Guest,
    ) -> Option<Vec<u8>> {
        loop {
            if let Some(f) = self.out.pop_front() {
                self.sent += f.len() as u64;
                return Some(f);
            }
            // Pages the destination could not fetch go first, whatever
            // the round: until they arrive it cannot commit.
            if !self.wanted.is_empty()
                && matches!(
                    self.state,
                    Source::PreCopy | Source::StopAndCopy | Source::AwaitCommit
                )
            {
                if room == 0 {
                    return None;
                }
                return Some(self.pages_frame(room, guest, true).0);
            }
            match self.state {
                Source::PreCopy | Source::StopAndCopy => {}
                // In doubt, ask; committed after being in doubt, ask
                // until the activation is known too.
                Source::InDoubt | Source::Released
                    if !self.link_down && (self.state == Source::InDoubt || self.was_in_doubt) =>
                {
                    if now >= self.next_query {
                        self.next_query = now + QUERY_INTERVAL;
                        let nonce = self.auth.query_nonce(self.queries);
                        self.queries += 1;
                        self.push(Msg::Query { id: self.id, nonce });
                        continue;
                    }
                    return None;
                }
                _ => return None,
            }
            // Smart: choose once the probe has run and bandwidth is known.
            if self.probe(now, guest, false) {
                continue;
            }
            if self.cursor == self.queue.len() {
                if !self.round_end(now, guest) {
                    return None;
                }
                continue;
            }
            if now < self.send_at {
                self.pace_wake = Some(self.send_at);
                return None;
            }
            if room == 0 || self.sent - self.acked >= self.inflight_cap() {
                return None;
            }
            self.pace_wake = None;
            return Some(self.batch(now, room, guest));
        }
    }

    fn batch(&mut self, now: Instant, room: usize, guest: &mut impl Guest) -> Vec<u8> {
        let cid_before = self.enc.stats().cid;
        let (frame, n) = self.pages_frame(room, guest, false);
        self.round_cid += (self.enc.stats().cid - cid_before) as usize;
        self.round_bytes += frame.len() as u64;
        self.round_pages += n;
        // Pacing: the bandwidth cap, and the encoder's speed when deltas
        // are on (it reads every page it sends).
        let mut busy = Duration::ZERO;
        if let Some(b) = self.config.max_bandwidth {
            busy = busy.max(Duration::from_secs_f64(frame.len() as f64 / b.max(1.0)));
        }
        if let (Some(e), true) = (self.config.encode_rate, self.deltas_on()) {
            busy = busy.max(Duration::from_secs_f64(
                (n * self.page_size) as f64 / e.max(1.0),
            ));
        }
        self.send_at = self.send_at.max(now) + busy;
        frame
    }

    // A Pages frame of up to `room` bytes (at least one page) and how many
    // pages it holds: the round's next pages, or with `wanted` the pages
    // the destination asked for, whole (their content is what the encoder
    // recorded: a page written since is in a later round too).
    fn pages_frame(
        &mut self,
        room: usize,
        guest: &mut impl Guest,
        wanted: bool,
    ) -> (Vec<u8>, usize) {
        let limit = room.min(self.config.batch).max(self.page_size + 16);
        let mut data = Vec::with_capacity(limit + self.page_size);
        let mut page = vec![0; self.page_size];
        let mut n = 0;
        while data.len() < limit {
            let i = if wanted {
                let Some(i) = self.wanted.pop_front() else {
                    break;
                };
                i
            } else {
                let Some(&i) = self.queue.get(self.cursor) else {
                    break;
                };
                self.cursor += 1;
                i as u32
            };
            guest.read_page(i as usize, &mut page);
            let msg = if wanted {
                self.enc.encode_inline(i, &page)
            } else {
                self.enc.encode(i, &page)
            };
            msg.emit(&mut data);
            n += 1;
        }
        let frame = Msg::Pages {
            round: self.round,
            data,
        }
        .to_frame();
        self.sent += frame.len() as u64;
        (frame, n)
    }

    fn deltas_on(&self) -> bool {
        self.strategy == Strategy::LiveDelta && self.round >= 1
    }

    fn start_round(&mut self, now: Instant) {
        self.cursor = 0;
        self.round_start = now;
        self.round_bytes = 0;
        self.round_pages = 0;
        self.round_cid = 0;
    }

    // The end of a round: decide whether to go on, throttle or pause.
    // Returns false when it must wait (for the pipe to drain).
    fn round_end(&mut self, now: Instant, guest: &mut impl Guest) -> bool {
        if self.state == Source::StopAndCopy {
            let digest = self.enc.image_digest(self.pages);
            let device = guest.device_state();
            self.final_pages = self.queue.len();
            self.final_digest = digest;
            let bytes = auth::final_bytes(&self.session, &self.dest_nonce, &digest, &device);
            let sig = auth::sign(&self.auth.key, &bytes);
            self.push(Msg::Final {
                digest,
                sig,
                device,
            });
            let _ = self.step(T::FinalSent);
            self.final_at = now;
            self.notes.push_back(SourceNote::FinalSent);
            return true;
        }
        // Smart, round 0 over before the probe: decide now (full drains
        // and pauses below, as live's stop does).
        if !self.decided {
            self.decide(now, guest, false);
        }
        // What a page sent inline costs: the next rounds' pages are
        // written ones, which no image holds.
        let inline = self.round_pages - self.round_cid;
        if inline > 0 {
            let cid_bytes = (self.round_cid * CID_PAGE_BYTES) as u64;
            self.bytes_per_page = self.round_bytes.saturating_sub(cid_bytes) as f64 / inline as f64;
        }
        let elapsed = (now - self.round_start).as_secs_f64().max(1e-6);
        let dirty = guest.dirty_count();
        self.dirty_rate = dirty as f64 / elapsed;
        if !self.pause_pending {
            let estimate = self.estimate(dirty);
            let meets = estimate.is_some_and(|e| e <= self.config.downtime_target);
            let shrinking = (dirty as f64) < 0.9 * self.last_dirty as f64;
            self.stalled = if shrinking { 0 } else { self.stalled + 1 };
            let mut stop = meets || self.strategy == Strategy::Full;
            if !stop && self.round + 1 >= self.config.max_rounds {
                stop = true;
                self.target_missed = true;
            }
            if !stop && self.stalled >= 2 {
                if self.config.auto_converge && self.throttle_pct < 99 {
                    self.throttle_pct = if self.throttle_pct == 0 {
                        20
                    } else {
                        (self.throttle_pct + 10).min(99)
                    };
                    let f = 1.0 - f64::from(self.throttle_pct) / 100.0;
                    self.min_throttle = self.min_throttle.min(f);
                    guest.set_throttle(f);
                    self.notes.push_back(SourceNote::Throttled { factor: f });
                    self.stalled = 1;
                } else {
                    stop = true;
                    self.target_missed = true;
                }
            }
            if stop {
                self.pause_pending = true;
                self.estimate_at_pause = estimate.unwrap_or(Duration::MAX);
            } else {
                self.last_dirty = dirty;
                self.round += 1;
                if self.round == 1 && self.strategy == Strategy::LiveDelta {
                    let bytes = match self.config.delta_cache {
                        0 => DEFAULT_DELTA_CACHE,
                        b => b,
                    };
                    let pages = bytes / self.page_size;
                    self.enc.set_cache(pages.max(1));
                }
                self.queue = guest.take_dirty();
                self.start_round(now);
                self.push(Msg::RoundEnd {
                    round: self.round - 1,
                    next: self.queue.len() as u32,
                });
                self.notes.push_back(SourceNote::Round {
                    round: self.round,
                    pages: self.queue.len(),
                });
                return true;
            }
        }
        // Let the pipe drain to about one BDP before pausing: what is
        // queued would lengthen the downtime.
        if !self.drained() {
            return false;
        }
        self.pause_pending = false;
        self.pause(now, guest, Vec::new());
        true
    }

    fn pause(&mut self, now: Instant, guest: &mut impl Guest, extra: Vec<usize>) {
        guest.pause();
        let _ = self.step(T::Pause);
        self.paused_at = Some(now);
        self.bw_at_pause = self.bandwidth().unwrap_or(0.0);
        let mut q: Vec<usize> = self.queue[self.cursor..].to_vec();
        q.extend(extra);
        q.extend(guest.take_dirty());
        q.sort_unstable();
        q.dedup();
        let prev = self.round;
        self.queue = q;
        // Rounds that sent pages before the pause: none for full.
        if self.round_pages > 0 || self.round > 0 {
            self.precopy_rounds = self.round + 1;
            self.round += 1;
        }
        self.start_round(now);
        self.push(Msg::RoundEnd {
            round: prev,
            next: self.queue.len() as u32,
        });
        self.notes.push_back(SourceNote::Paused);
    }

    // Smart, undecided in round 0: decide at the probe's end (`early`
    // false: its caller checks the time), and before it take full as soon
    // as it meets the target. Returns whether it decided.
    fn probe(&mut self, now: Instant, guest: &mut impl Guest, early: bool) -> bool {
        if self.decided || self.state != Source::PreCopy {
            return false;
        }
        let Some((_, span)) = self.rate() else {
            return false;
        };
        if now >= self.round_start + self.config.probe {
            self.decide(now, guest, false);
        } else if early && span >= self.rtt.unwrap_or_default() * 2 {
            // A rate measured over two round trips at least, not one
            // burst of reports.
            self.decide(now, guest, true);
        }
        self.decided
    }

    // Smart: choose from what round 0 has measured so far, predicting from
    // now (`model::choose_midway`). With `only_full` it commits only to
    // full. Full midway through round 0 pauses at once and sends the pages
    // round 0 has not sent and the dirty ones (nothing twice that was not
    // written since), without letting the pipe drain first: an idle
    // connection would restart with a window's burst, and the pages in
    // flight must arrive anyway. At the end of round 0 it drains to one
    // BDP and pauses, as live's stop does.
    fn decide(&mut self, now: Instant, guest: &mut impl Guest, only_full: bool) {
        let elapsed = (now - self.round_start).as_secs_f64().max(1e-6);
        // What a page of round 0 has cost on the wire so far (zero pages
        // as tags, frame headers); before any, its non-zero share.
        let per_page = if self.round_pages > 0 {
            self.round_bytes as f64 / self.round_pages as f64
        } else {
            let st = self.enc.stats();
            let seen = (st.zero + st.dup + st.delta + st.full).max(1) as f64;
            self.page_size as f64 * (1.0 - st.zero as f64 / seen)
        };
        let dirty = guest.dirty_count() as f64 * self.page_size as f64;
        let x = model::Inputs {
            memory: self.pages as f64 * per_page,
            // Round 0 may end before any progress report: then what the
            // connection took is the best guess.
            bandwidth: self.bandwidth().unwrap_or(self.sent as f64 / elapsed),
            rtt: self.rtt.unwrap_or_default(),
            dirty_rate: dirty / elapsed,
            device: self.device_len as f64,
            target: self.config.downtime_target,
            max_rounds: self.config.max_rounds,
            delta_ratio: ASSUMED_DELTA_RATIO,
            encode_rate: self.config.encode_rate,
        };
        let m = model::Midway {
            sent: self.round_pages as f64 * per_page,
            dirty,
            queued: (self.sent - self.acked).saturating_sub(self.bdp()) as f64,
        };
        let (strategy, predictions) = model::choose_midway(&x, &m);
        if only_full && strategy != Strategy::Full {
            return;
        }
        // The prediction falls as round 0 goes on, so the first report at
        // which full meets the target is one where it barely does: any
        // error (a burst loss costing a retransmission timeout, a rate
        // measured on a rising slow start) and the pause misses it. Midway,
        // full waits until it fits with a margin; a later report brings
        // it there, or the probe's end decides as before.
        if only_full
            && predictions[0].downtime.as_secs_f64() > x.target.as_secs_f64() * MIDWAY_FULL_MARGIN
        {
            return;
        }
        self.decided = true;
        self.strategy = strategy;
        self.notes.push_back(SourceNote::Chose {
            strategy,
            predictions,
        });
        if strategy == Strategy::Full {
            self.estimate_at_pause = predictions[0].downtime;
            if self.cursor < self.queue.len() {
                self.pause(now, guest, Vec::new());
            } else {
                self.pause_pending = true;
            }
        }
    }

    // Whether what is in flight is down to about one BDP (at least 64 KiB).
    fn drained(&self) -> bool {
        self.sent - self.acked <= self.bdp().max(64 * 1024)
    }

    fn window(&self) -> Duration {
        (self.rtt.unwrap_or_default() * 4).max(PROGRESS_WINDOW_MIN)
    }

    /// Bandwidth over the last window, bytes per second.
    fn bandwidth(&self) -> Option<f64> {
        self.rate().map(|(bw, _)| bw)
    }

    // Bandwidth over the last window, and the time it was measured over.
    fn rate(&self) -> Option<(f64, Duration)> {
        let &(t1, b1) = self.samples.back()?;
        let w = self.window();
        let &(t0, b0) = self
            .samples
            .iter()
            .find(|(t, _)| t1 - *t <= w)
            .filter(|(t, _)| *t < t1)
            .or_else(|| self.samples.front().filter(|(t, _)| *t < t1))?;
        let bw = (b1 - b0) as f64 / (t1 - t0).as_secs_f64();
        let bw = match self.config.max_bandwidth {
            Some(cap) => bw.min(cap),
            None => bw,
        };
        Some((bw, t1 - t0))
    }

    fn bdp(&self) -> u64 {
        let rtt = self.rtt.unwrap_or_default().as_secs_f64();
        (self.bandwidth().unwrap_or(0.0) * rtt) as u64
    }

    fn inflight_cap(&self) -> u64 {
        (4 * self.bdp()).max(MIN_INFLIGHT)
    }

    // The downtime a pause now would cost with `dirty` pages to send.
    fn estimate(&self, dirty: usize) -> Option<Duration> {
        let bw = self.bandwidth()?;
        if bw <= 0.0 {
            return None;
        }
        let bytes = dirty as f64 * self.bytes_per_page
            + (self.sent - self.acked).saturating_sub(self.bdp()) as f64
            + self.device_len as f64;
        Some(Duration::from_secs_f64(bytes / bw) + self.rtt.unwrap_or_default())
    }

    /// When [`SourceSession::handle_timeout`] (or, for pacing,
    /// [`SourceSession::poll_transmit`]) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = self.config.timeout;
        match self.state {
            Source::Negotiating => Some(self.offer_at + t),
            Source::PreCopy | Source::StopAndCopy => {
                let mut at = self.last_heard + t;
                // The probe's end, once there is a bandwidth to decide by
                // (a progress report wakes the agent before that).
                if !self.decided && self.bandwidth().is_some() {
                    at = at.min(self.round_start + self.config.probe);
                }
                if let Some(t) = self.pace_wake {
                    at = at.min(t);
                }
                Some(at)
            }
            Source::AwaitCommit => Some(self.final_at.max(self.last_heard) + t),
            Source::Released if self.was_in_doubt && !self.link_down => {
                Some(self.next_query.min(self.last_heard + t))
            }
            Source::Released => Some(self.last_heard + t),
            Source::InDoubt if !self.link_down => Some(self.next_query),
            _ => None,
        }
    }

    /// Runs what is due: gives up on a silent destination.
    pub fn handle_timeout(&mut self, now: Instant, guest: &mut impl Guest) {
        // Smart decides when its probe ends, even if the connection has no
        // room (the agent then does not call poll_transmit, and the probe
        // deadline, already past, would wake it for ever).
        if now >= self.round_start + self.config.probe {
            self.probe(now, guest, false);
        }
        let t = self.config.timeout;
        let silent = match self.state {
            Source::Negotiating => now >= self.offer_at + t,
            // Silence matters only while the destination owes us word.
            Source::PreCopy | Source::StopAndCopy => {
                now >= self.last_heard + t && self.sent > self.acked
            }
            Source::AwaitCommit => now >= self.final_at.max(self.last_heard) + t,
            Source::Released => now >= self.last_heard + t,
            _ => false,
        };
        if silent {
            self.fail(now, MigrateError::Timeout(t), guest);
        }
    }

    fn report(&self, now: Instant) -> Report {
        let half_rtt = self.rtt.unwrap_or_default() / 2;
        Report {
            id: self.id,
            mode: self.config.mode,
            strategy: self.strategy,
            rounds: self.precopy_rounds,
            total: now - self.started,
            downtime: self
                .paused_at
                .map_or(Duration::ZERO, |p| (now - p).saturating_sub(half_rtt)),
            bytes: self.sent,
            pages: self.enc.stats(),
            final_pages: self.final_pages,
            estimated_downtime: self.estimate_at_pause,
            throttle: self.min_throttle,
            target_missed: self.target_missed,
            bandwidth: self.bw_at_pause,
            rtt: self.rtt.unwrap_or_default(),
        }
    }
}
