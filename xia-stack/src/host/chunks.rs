//! Content on the host: publishing chunks and fetching them by CID.
//!
//! A published chunk is held in the host's [`ChunkCache`](crate::content::ChunkCache)
//! and its CID is a local XID, so requests whose walk reaches it are
//! answered here. A fetch sends a request to a DAG whose intent is the CID
//! (typically `RE ( AD HID ) CID`: any node holding the chunk on the way
//! may answer), reassembles the pieces, checks them against the CID, asks
//! again for missing ranges after a timeout, and reports the result as
//! [`HostEvent::ChunkFetched`].

use std::time::Duration;

use rand_chacha::rand_core::RngCore;

use super::{Host, HostError, HostEvent};
use crate::content::{pieces, verify, ChunkMsg, ContentError, Reassembly};
use crate::dag::Dag;
use crate::forward::Route;
use crate::identity::Identity;
use crate::time::Instant;
use crate::wire::xip::XipRepr;
use crate::xid::{Principal, Xid};

/// How long a fetch waits for missing pieces before asking again.
pub const FETCH_RETRY: Duration = Duration::from_millis(500);
/// How many times it asks before giving up.
pub const FETCH_TRIES: u32 = 8;
/// Most fetches in progress at once.
pub const MAX_FETCHES: usize = 256;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Fetch {
    id: u32,
    cid: Xid,
    dag: Dag,
    parts: Reassembly,
    deadline: Instant,
    #[serde(deserialize_with = "crate::serde_util::counter32")]
    tries: u32,
}

impl Fetch {
    /// Refuses restored reassembly state that could index out of bounds.
    pub(super) fn check(&self) -> Result<(), String> {
        self.parts.check()
    }
}

impl Host {
    /// Publishes `bytes` as a chunk; returns its CID.
    pub fn put_chunk(&mut self, bytes: &[u8]) -> Result<Xid, HostError> {
        let cid = Xid::cid_of(bytes);
        self.chunks.insert(cid, bytes).map_err(HostError::Content)?;
        let _ = self.tables.insert(cid, Route::LOCAL);
        Ok(cid)
    }

    /// The DAG under which this host serves `cid`: `RE ( AD HID ) CID`, so a
    /// router holding the chunk may answer first.
    pub fn content_dag(&self, cid: Xid) -> Dag {
        Dag::content(self.config.interfaces[0].ad, self.hid, cid)
    }

    /// Fetches the chunk that `dag`'s intent (a CID) names.
    pub fn fetch_chunk(&mut self, dag: &Dag, now: Instant) -> Result<u32, HostError> {
        let cid = *dag.intent();
        if cid.principal() != Principal::CID {
            return Err(HostError::Content(ContentError::NotACid(cid)));
        }
        if self.fetches.len() >= MAX_FETCHES {
            return Err(HostError::QueueFull);
        }
        let id = self.rng.next_u32();
        self.fetches.push(Fetch {
            id,
            cid,
            dag: dag.clone(),
            parts: Reassembly::new(),
            deadline: now + FETCH_RETRY,
            tries: 1,
        });
        self.request_range(dag, 0, u32::MAX)?;
        Ok(id)
    }

    fn fetcher_dag(&mut self) -> Result<Dag, HostError> {
        let sid = match self.fetcher {
            Some(s) => s,
            None => {
                let s = Identity::generate(Principal::SID, &mut self.rng).xid();
                let _ = self.tables.insert(s, Route::LOCAL);
                self.fetcher = Some(s);
                s
            }
        };
        self.dag()
            .append_xid(sid)
            .map_err(|_| HostError::NoRoute(sid))
    }

    fn request_range(&mut self, dag: &Dag, offset: u32, length: u32) -> Result<(), HostError> {
        let src = self.fetcher_dag()?;
        self.send_datagram(dag, src, &ChunkMsg::Request { offset, length }.to_bytes())
    }

    /// A datagram whose walk ended at a CID (a request to us) or at the
    /// fetcher SID (a piece for us); `true` if it was one of those.
    pub(super) fn deliver_chunks(&mut self, now: Instant, repr: &XipRepr, payload: &[u8]) -> bool {
        let intent = *repr.dst.intent();
        if intent.principal() == Principal::CID {
            let Some(ChunkMsg::Request { offset, length }) = ChunkMsg::parse(payload) else {
                self.counters.malformed += 1;
                return true;
            };
            let Some(chunk) = self.chunks.get(&intent) else {
                return false;
            };
            let Ok(src) = self.dag().append_xid(intent) else {
                return true;
            };
            for piece in pieces(&chunk, offset, length) {
                let _ = self.send_datagram(&repr.src, src.clone(), &piece);
            }
            self.counters.chunks_served += 1;
            return true;
        }
        if Some(intent) != self.fetcher {
            return false;
        }
        let Some(ChunkMsg::Piece {
            total,
            offset,
            data,
        }) = ChunkMsg::parse(payload)
        else {
            self.counters.malformed += 1;
            return true;
        };
        let cid = *repr.src.intent();
        let Some(i) = self.fetches.iter().position(|f| f.cid == cid) else {
            return true; // a late copy of a finished fetch
        };
        if !self.fetches[i].parts.add(total, offset, data) {
            self.counters.malformed += 1;
            return true;
        }
        let Some(bytes) = self.fetches[i].parts.complete().map(<[u8]>::to_vec) else {
            return true;
        };
        let f = self.fetches.remove(i);
        let result = verify(&f.cid, &bytes).map(|()| bytes);
        if let Ok(b) = &result {
            // Keep it: we can serve it too now.
            let _ = self.chunks.insert(f.cid, b);
        }
        let _ = now;
        self.push_event(HostEvent::ChunkFetched {
            id: f.id,
            cid: f.cid,
            result,
        });
        true
    }

    /// Asks again for what is missing, or gives up.
    pub(super) fn chunk_timeouts(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.fetches.len() {
            if self.fetches[i].deadline > now {
                i += 1;
                continue;
            }
            if self.fetches[i].tries >= FETCH_TRIES {
                let f = self.fetches.remove(i);
                self.push_event(HostEvent::ChunkFetched {
                    id: f.id,
                    cid: f.cid,
                    result: Err(ContentError::TimedOut(f.cid)),
                });
                continue;
            }
            let f = &mut self.fetches[i];
            f.tries += 1;
            f.deadline = now + FETCH_RETRY;
            let (offset, length) = f.parts.missing().unwrap_or((0, u32::MAX));
            let dag = f.dag.clone();
            let _ = self.request_range(&dag, offset, length);
            i += 1;
        }
    }

    /// The earliest fetch deadline.
    pub(super) fn chunk_timeout(&self) -> Option<Instant> {
        self.fetches.iter().map(|f| f.deadline).min()
    }
}
