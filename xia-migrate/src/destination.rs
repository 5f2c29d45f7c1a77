//! The destination side of a migration: a sans-IO session that drives
//! [`crate::state::Destination`] through its table.
//!
//! It reserves room for an offered guest (or refuses), rebuilds memory
//! from page messages, and when the final message arrives checks that it
//! holds every page and that the image's digest matches the source's
//! before it commits. A committed destination activates and never
//! aborts; the source keeps its paused copy until it hears of the
//! activation (a destination that crashes between the two answers
//! "unknown", and the source resumes). The agent takes the guest ([`DestinationSession::take_guest`])
//! and its device state when told to activate it.
//!
//! Pages sent by CID (dedup) are fetched by the agent from the network
//! ([`DestinationNote::Fetch`], answered with
//! [`DestinationSession::page_fetched`]); one it cannot fetch, or every
//! one when the agent has nowhere to fetch from, is asked of the source
//! ([`Msg::Want`]). A final message that arrives while pages are still
//! being fetched or asked for is held until they are in: the commit
//! still requires every page, checked against the source's digest.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use sha1::{Digest, Sha1};
use xia_stack::identity::{Identity, PublicKey};
use xia_stack::time::Instant;
use xia_stack::xid::Xid;

use crate::auth::{self, AuthError};
use crate::guest::Guest;
use crate::msg::{FrameReader, Msg, Offer, Outcome, MAX_WANT, NONCE_LEN};
use crate::pages::{Encoded, PageMsg};
use crate::source::MigrateError;

/// While the source waits for our commit and we fetch pages, a progress
/// report this often tells it we are alive.
const PROGRESS_WHILE_FETCHING: Duration = Duration::from_secs(1);
use crate::state::{Destination, DestinationEvent as T, IllegalTransition};

/// What a destination accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationConfig {
    /// Bytes of guest memory it has room for.
    pub capacity: u64,
    /// Silence from the source for this long before the commit aborts.
    pub timeout: Duration,
    /// Report progress every this many bytes received.
    pub progress_every: u64,
    /// The largest page size it takes.
    pub max_page_size: u32,
    /// The source agents (SIDs) it takes guests from; empty: any agent
    /// that proves its key.
    pub trusted: Vec<Xid>,
    /// Whether the agent fetches pages sent by CID from the network (it
    /// knows a content store); if not, it asks the source for them.
    pub fetch: bool,
}

impl Default for DestinationConfig {
    fn default() -> DestinationConfig {
        DestinationConfig {
            capacity: 4 << 30,
            timeout: Duration::from_secs(10),
            progress_every: 64 * 1024,
            max_page_size: 1 << 21,
            trusted: Vec::new(),
            fetch: false,
        }
    }
}

/// What the session tells its agent.
#[derive(Clone, Debug, PartialEq)]
pub enum DestinationNote {
    /// Room is reserved for the offered guest.
    Reserved {
        /// The migration.
        id: u64,
        /// The guest's name.
        name: String,
        /// Its memory in bytes.
        bytes: u64,
    },
    /// The offer did not fit.
    Refused {
        /// Why.
        reason: String,
    },
    /// The image is complete and verified; the guest is ours.
    Committed,
    /// Start the guest: take it with [`DestinationSession::take_guest`]
    /// (its device state is here too), then call
    /// [`DestinationSession::activated`].
    Activate {
        /// The device state.
        device: Vec<u8>,
    },
    /// Fetch page `page` by its CID and hand the result to
    /// [`DestinationSession::page_fetched`].
    Fetch {
        /// The page.
        page: u32,
        /// Its content's SHA-1.
        cid: [u8; 20],
    },
    /// A message whose signature did not hold was dropped.
    Forged(AuthError),
    /// Failed before the commit: the reservation is dropped.
    Failed {
        /// Where.
        phase: Destination,
        /// Why.
        error: MigrateError,
    },
}

/// The destination side of one migration.
pub struct DestinationSession<G> {
    config: DestinationConfig,
    key: Identity,
    nonce: [u8; NONCE_LEN],
    // From the offer: the session hash and the source's key.
    session: [u8; 20],
    source_key: Option<PublicKey>,
    digest: [u8; 20],
    make: Box<dyn FnMut(usize, usize) -> G + Send>,
    state: Destination,
    id: Option<u64>,
    guest: Option<G>,
    hashes: Vec<[u8; 20]>,
    got: Vec<bool>,
    have: usize,
    reader: FrameReader,
    reported: u64,
    out: VecDeque<Vec<u8>>,
    notes: VecDeque<DestinationNote>,
    last_heard: Instant,
    pages_applied: u64,
    // Dedup: pages being fetched by CID, pages asked of the source (and
    // those still to ask), and a final message waiting for them.
    fetching: BTreeMap<u32, [u8; 20]>,
    wanting: BTreeSet<u32>,
    to_want: Vec<u32>,
    held_final: Option<([u8; 20], Vec<u8>)>,
    last_progress: Instant,
    counts: DedupCounts,
}

/// What dedup did at a destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DedupCounts {
    /// Pages that came by CID.
    pub by_cid: u64,
    /// Of those, fetched from the network.
    pub fetched: u64,
    /// Asked of the source instead (no store, or the fetch failed).
    pub wanted: u64,
}

impl<G> std::fmt::Debug for DestinationSession<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationSession")
            .field("state", &self.state)
            .field("id", &self.id)
            .field("have", &self.have)
            .finish_non_exhaustive()
    }
}

impl<G: Guest> DestinationSession<G> {
    /// A session waiting for an offer; `make(pages, page_size)` builds the
    /// blank guest that receives the memory. `key` is the agent's (the
    /// offer must name its SID); `nonce` is fresh.
    pub fn new(
        config: DestinationConfig,
        make: impl FnMut(usize, usize) -> G + Send + 'static,
        key: Identity,
        nonce: [u8; NONCE_LEN],
        now: Instant,
    ) -> DestinationSession<G> {
        DestinationSession {
            config,
            key,
            nonce,
            session: [0; 20],
            source_key: None,
            digest: [0; 20],
            make: Box::new(make),
            state: Destination::Idle,
            id: None,
            guest: None,
            hashes: Vec::new(),
            got: Vec::new(),
            have: 0,
            reader: FrameReader::default(),
            reported: 0,
            out: VecDeque::new(),
            notes: VecDeque::new(),
            last_heard: now,
            pages_applied: 0,
            fetching: BTreeMap::new(),
            wanting: BTreeSet::new(),
            to_want: Vec::new(),
            held_final: None,
            last_progress: now,
            counts: DedupCounts::default(),
        }
    }

    /// What dedup did so far.
    pub fn dedup_counts(&self) -> DedupCounts {
        self.counts
    }

    /// The agent's fetch of `page` by `cid` ended: with the bytes, or
    /// `None` if the network did not have them (the page is then asked of
    /// the source). A result for a page sent again since is ignored.
    /// Returns `Some(true)` when the bytes were taken, `Some(false)`
    /// when the page is asked of the source instead (no bytes, or bytes
    /// that do not hash to `cid`), `None` when the page was not awaited.
    pub fn page_fetched(
        &mut self,
        now: Instant,
        page: u32,
        cid: &[u8; 20],
        bytes: Option<&[u8]>,
    ) -> Option<bool> {
        if self.fetching.get(&page) != Some(cid)
            || !matches!(self.state, Destination::Reserved | Destination::Receiving)
        {
            return None;
        }
        let guest = self.guest.as_mut()?;
        let ps = guest.page_size();
        let taken = match bytes.filter(|b| b.len() == ps && xia_stack::xid::sha1(b) == *cid) {
            Some(b) => {
                self.fetching.remove(&page);
                guest.write_page(page as usize, b);
                self.counts.fetched += 1;
                self.filled(page as usize, *cid);
                true
            }
            None => {
                self.want(page);
                false
            }
        };
        // A source waiting for the commit hears that we are at it.
        if self.held_final.is_some() && now >= self.last_progress + PROGRESS_WHILE_FETCHING {
            self.last_progress = now;
            self.progress();
        }
        self.try_finish();
        Some(taken)
    }

    fn want(&mut self, page: u32) {
        self.fetching.remove(&page);
        if self.wanting.insert(page) {
            self.counts.wanted += 1;
            self.to_want.push(page);
        }
    }

    // Page `i` now holds content with SHA-1 `hash`.
    fn filled(&mut self, i: usize, hash: [u8; 20]) {
        self.hashes[i] = hash;
        if !std::mem::replace(&mut self.got[i], true) {
            self.have += 1;
        }
    }

    // A held final message whose pages are all in: commit (or fail).
    fn try_finish(&mut self) {
        if self.fetching.is_empty() && self.wanting.is_empty() {
            if let Some((digest, device)) = self.held_final.take() {
                if let Err(e) = self.finish(digest, device) {
                    self.fail(e);
                }
            }
        }
    }

    /// Its state.
    pub fn state(&self) -> Destination {
        self.state
    }

    /// The migration, once offered.
    pub fn id(&self) -> Option<u64> {
        self.id
    }

    /// The source agent's SID, once its offer is verified.
    pub fn source(&self) -> Option<Xid> {
        self.source_key.as_ref().map(auth::sid_of)
    }

    /// Whether `abort` (from a query connection) is the source's.
    fn abort_is_authentic(&self, sig: &[u8; 64], reason: &str) -> Result<(), AuthError> {
        let key = self.source_key.as_ref().ok_or(AuthError::NoKey("abort"))?;
        auth::verify(key, &auth::abort_bytes(&self.session, reason), sig, "abort")
    }

    /// What it would answer a query with.
    pub fn outcome(&self) -> Outcome {
        match self.state {
            Destination::Idle => Outcome::Unknown,
            Destination::Reserved | Destination::Receiving | Destination::Complete => {
                Outcome::Receiving
            }
            Destination::Aborted => Outcome::Aborted,
            Destination::Committed => Outcome::Committed,
            Destination::Active => Outcome::Active,
        }
    }

    /// Page messages taken so far.
    pub fn pages_applied(&self) -> u64 {
        self.pages_applied
    }

    /// The next thing to tell the agent.
    pub fn poll_note(&mut self) -> Option<DestinationNote> {
        self.notes.pop_front()
    }

    /// The agent has started the guest: the source may let go of its
    /// paused copy.
    pub fn activated(&mut self) {
        if self.step(T::Activate).is_ok() {
            let sig = auth::sign(&self.key, &auth::activated_bytes(&self.session));
            self.push(Msg::Activated {
                id: self.id.unwrap_or(0),
                sig,
            });
        }
    }

    /// The committed guest, to start (once).
    pub fn take_guest(&mut self) -> Option<G> {
        if matches!(self.state, Destination::Committed | Destination::Active) {
            self.guest.take()
        } else {
            None
        }
    }

    /// The next frame to write to the connection.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if !self.to_want.is_empty() {
            let wants = std::mem::take(&mut self.to_want);
            for pages in wants.chunks(MAX_WANT) {
                self.push(Msg::Want {
                    pages: pages.to_vec(),
                });
            }
        }
        self.out.pop_front()
    }

    fn step(&mut self, t: T) -> Result<(), IllegalTransition> {
        self.state = self.state.next(t)?;
        Ok(())
    }

    fn push(&mut self, m: Msg) {
        self.out.push_back(m.to_frame());
    }

    /// Bytes that arrived on the connection.
    pub fn handle_bytes(&mut self, now: Instant, data: &[u8]) {
        self.reader.push(data);
        self.last_heard = now;
        loop {
            match self.reader.next_msg() {
                Ok(Some(m)) => {
                    if let Err(e) = self.handle_msg(m) {
                        self.fail(e);
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.fail(MigrateError::Protocol(e));
                    break;
                }
            }
        }
        if matches!(self.state, Destination::Reserved | Destination::Receiving)
            && self.reader.received >= self.reported + self.config.progress_every
        {
            self.progress();
        }
    }

    /// A message that arrived outside the session's connection (an
    /// in-doubt source's abort, on a new one): handled as in turn, without
    /// the connection's reader, which may have stopped mid-frame where the
    /// old connection broke.
    pub fn handle_message(&mut self, m: Msg) {
        if let Err(e) = self.handle_msg(m) {
            self.fail(e);
        }
    }

    fn progress(&mut self) {
        self.reported = self.reader.received;
        self.push(Msg::Progress {
            received: self.reader.received,
        });
    }

    fn handle_msg(&mut self, m: Msg) -> Result<(), MigrateError> {
        match m {
            Msg::Offer(o) if self.state == Destination::Idle => {
                let bytes = u64::from(o.pages) * u64::from(o.page_size);
                let reason = if let Err(e) = self.authenticate(&o) {
                    Some(format!("authentication failed: {e}"))
                } else if o.page_size > self.config.max_page_size {
                    Some(format!("page size {} too large", o.page_size))
                } else if bytes > self.config.capacity {
                    Some(format!(
                        "no room: {bytes} bytes asked, {} free",
                        self.config.capacity
                    ))
                } else {
                    None
                };
                self.id = Some(o.id);
                if let Some(reason) = reason {
                    self.step(T::Refuse)?;
                    self.push(Msg::Refuse {
                        id: o.id,
                        reason: reason.clone(),
                    });
                    self.notes.push_back(DestinationNote::Refused { reason });
                    return Ok(());
                }
                self.step(T::Offered)?;
                let (pages, ps) = (o.pages as usize, o.page_size as usize);
                self.guest = Some((self.make)(pages, ps));
                self.hashes = vec![[0; 20]; pages];
                self.got = vec![false; pages];
                let key = self.key.public_key().to_bytes();
                let sig = auth::sign(
                    &self.key,
                    &auth::accept_bytes(&self.session, &key, &self.nonce),
                );
                self.push(Msg::Accept {
                    id: o.id,
                    key,
                    nonce: self.nonce,
                    sig,
                });
                self.notes.push_back(DestinationNote::Reserved {
                    id: o.id,
                    name: o.name,
                    bytes,
                });
            }
            Msg::Pages { data, .. } => {
                self.step(T::Pages)?;
                let ps = self.guest.as_ref().expect("reserved").page_size();
                let mut at = 0;
                let mut page = vec![0; ps];
                let bad = |e: crate::pages::PageError| {
                    MigrateError::PeerAborted(format!("bad page message: {e}"))
                };
                while at < data.len() {
                    let (p, used) = PageMsg::parse(&data[at..], ps).map_err(bad)?;
                    at += used;
                    self.pages_applied += 1;
                    let (i, page_no) = (p.index as usize, p.index);
                    if let Encoded::Cid(cid) = p.enc {
                        if i >= self.got.len() {
                            return Err(bad(crate::pages::PageError::OutOfRange));
                        }
                        self.counts.by_cid += 1;
                        if std::mem::replace(&mut self.got[i], false) {
                            self.have -= 1;
                        }
                        self.wanting.remove(&page_no);
                        if self.config.fetch {
                            self.fetching.insert(page_no, cid);
                            self.notes
                                .push_back(DestinationNote::Fetch { page: page_no, cid });
                        } else {
                            self.want(page_no);
                        }
                        continue;
                    }
                    let guest = self.guest.as_mut().expect("reserved");
                    p.apply(guest).map_err(bad)?;
                    // Sent again since: a fetch or want under way is moot.
                    self.fetching.remove(&page_no);
                    self.wanting.remove(&page_no);
                    guest.read_page(i, &mut page);
                    self.filled(i, Sha1::digest(&page).into());
                }
                self.try_finish();
            }
            Msg::RoundEnd { .. } if self.state != Destination::Idle => self.progress(),
            Msg::Final {
                digest,
                sig,
                device,
            } => {
                // Only the source's key, signing for our nonce, can end
                // the copy: a replayed migration never gets here.
                let bytes = auth::final_bytes(&self.session, &self.nonce, &digest, &device);
                let checked = match self.source_key.as_ref() {
                    Some(k) => auth::verify(k, &bytes, &sig, "final"),
                    None => Err(AuthError::NoKey("final")),
                };
                if let Err(e) = checked {
                    self.notes.push_back(DestinationNote::Forged(e));
                    return Ok(());
                }
                if !self.fetching.is_empty() || !self.wanting.is_empty() {
                    self.held_final = Some((digest, device));
                    return Ok(());
                }
                self.finish(digest, device)?;
            }
            Msg::Abort { id, sig, reason } if Some(id) == self.id => {
                if let Err(e) = self.abort_is_authentic(&sig, &reason) {
                    self.notes.push_back(DestinationNote::Forged(e));
                    return Ok(());
                }
                if self.step(T::Fail).is_ok() {
                    self.guest = None;
                    self.notes.push_back(DestinationNote::Failed {
                        phase: Destination::Receiving,
                        error: MigrateError::PeerAborted(reason),
                    });
                }
            }
            Msg::Query { id, nonce } => {
                let outcome = if Some(id) == self.id {
                    self.outcome()
                } else {
                    Outcome::Unknown
                };
                self.push(auth::outcome_msg(&self.key, id, outcome, &nonce));
            }
            other => {
                return Err(MigrateError::Illegal(IllegalTransition {
                    from: format!("{:?}", self.state),
                    via: format!("{other:?}").chars().take(40).collect(),
                }))
            }
        }
        Ok(())
    }

    // The final message with every page in: check the image, commit and
    // hand the guest over.
    fn finish(&mut self, digest: [u8; 20], device: Vec<u8>) -> Result<(), MigrateError> {
        self.step(T::FinalReceived)?;
        let pages = self.got.len();
        if self.have != pages {
            return Err(MigrateError::PeerAborted(format!(
                "incomplete image: {} of {pages} pages",
                self.have
            )));
        }
        let mut h = Sha1::new();
        for x in &self.hashes {
            h.update(x);
        }
        let mine: [u8; 20] = h.finalize().into();
        if mine != digest {
            return Err(MigrateError::PeerAborted(
                "image digest mismatch: the copy differs from the source".into(),
            ));
        }
        let id = self.id.unwrap_or(0);
        self.step(T::Commit)?;
        self.digest = digest;
        let sig = auth::sign(&self.key, &auth::commit_bytes(&self.session, &digest));
        self.push(Msg::Commit { id, sig });
        self.notes.push_back(DestinationNote::Committed);
        if let Some(g) = self.guest.as_mut() {
            g.set_device_state(&device);
        }
        self.notes.push_back(DestinationNote::Activate { device });
        Ok(())
    }

    // Checks an offer: a key that signs it, addressed to us, from an agent
    // we take guests from. Keeps the session hash and the source's key.
    fn authenticate(&mut self, o: &Offer) -> Result<(), AuthError> {
        let key = auth::public_key(&o.key, "offer")?;
        let me = self.key.xid();
        if o.to != me {
            return Err(AuthError::NotForUs { to: o.to, me });
        }
        auth::verify(&key, &o.signed_bytes(), &o.sig, "offer")?;
        let source = auth::sid_of(&key);
        if !self.config.trusted.is_empty() && !self.config.trusted.contains(&source) {
            return Err(AuthError::Untrusted(source));
        }
        self.session = o.session();
        self.source_key = Some(key);
        Ok(())
    }

    fn fail(&mut self, error: MigrateError) {
        let phase = self.state;
        if self.step(T::Fail).is_ok() {
            self.guest = None;
            let reason = error.to_string();
            self.push(auth::abort_msg(
                &self.key,
                self.id.unwrap_or(0),
                &self.session,
                &reason,
            ));
            self.notes
                .push_back(DestinationNote::Failed { phase, error });
        }
    }

    /// The connection failed: before the commit, the reservation goes.
    pub fn handle_link_lost(&mut self) {
        self.fail(MigrateError::LinkLost);
    }

    /// When [`DestinationSession::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        matches!(
            self.state,
            Destination::Reserved | Destination::Receiving | Destination::Complete
        )
        .then(|| self.last_heard + self.config.timeout)
    }

    /// Gives up on a silent source.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|t| t <= now) {
            self.fail(MigrateError::Timeout(self.config.timeout));
        }
    }
}
