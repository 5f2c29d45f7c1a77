//! The router's content cache: chunks seen passing through are kept (in a
//! byte-bounded LRU) and served to later requests that reach the router.
//!
//! A chunk piece is recognised by its XDGRAM payload (the chunk protocol of
//! [`xia_stack::content`]) and by its source DAG's intent being a CID.
//! Pieces are reassembled per CID (at most [`MAX_PARTIAL`] chunks at
//! once); a complete chunk is checked against its CID before it is kept,
//! and its CID becomes a local route, so a request whose DAG offers the
//! CID (`RE ( AD HID ) CID`) stops here. Evicted chunks lose their route.

use std::collections::BTreeMap;

use xia_stack::content::{pieces, ChunkCache, ChunkMsg, Reassembly};
use xia_stack::dag::Dag;
use xia_stack::forward::{Route, RouteTables};
use xia_stack::wire::xdgram::XdgramRepr;
use xia_stack::wire::xip::{NextHeader, Packet, XipRepr};
use xia_stack::xid::{Principal, Xid};

/// Most chunks being reassembled at once.
pub const MAX_PARTIAL: usize = 64;

/// A router's chunk cache.
#[derive(Debug)]
pub struct ContentCache {
    chunks: ChunkCache,
    partial: BTreeMap<Xid, Reassembly>,
}

impl ContentCache {
    /// A cache of `bytes` bytes.
    pub fn new(bytes: usize) -> ContentCache {
        ContentCache {
            chunks: ChunkCache::new(bytes),
            partial: BTreeMap::new(),
        }
    }

    /// Looks at a packet passing through: if it is a chunk piece, keeps it;
    /// returns whether a chunk was completed and cached.
    pub fn observe(&mut self, packet: &[u8], tables: &mut RouteTables) -> bool {
        let view = Packet::new_unchecked(packet);
        if view.next_header() != NextHeader::Xdgram {
            return false;
        }
        // Cheap test first: is the source's intent a CID?
        let snode = view.src_count() as usize;
        let Some(src_intent) = snode.checked_sub(1).and_then(|i| view.src_node(i)) else {
            return false;
        };
        if src_intent.xid.principal() != Principal::CID {
            return false;
        }
        let cid = src_intent.xid;
        let Ok(seg) = XdgramRepr::parse(view.payload()) else {
            return false;
        };
        let Some(ChunkMsg::Piece {
            total,
            offset,
            data,
        }) = ChunkMsg::parse(seg.payload)
        else {
            return false;
        };
        if self.chunks.contains(&cid) {
            return false;
        }
        if !self.partial.contains_key(&cid) && self.partial.len() >= MAX_PARTIAL {
            // Forget the oldest partial chunk (the smallest key is as good as
            // any: this is a bound, not a policy).
            self.partial.pop_first();
        }
        let parts = self.partial.entry(cid).or_default();
        if !parts.add(total, offset, data) {
            self.partial.remove(&cid);
            return false;
        }
        let Some(bytes) = parts.complete().map(<[u8]>::to_vec) else {
            return false;
        };
        self.partial.remove(&cid);
        match self.chunks.insert_evicting(cid, &bytes) {
            Ok(evicted) => {
                for old in evicted {
                    tables.remove(&old);
                }
                let _ = tables.insert(cid, Route::LOCAL);
                true
            }
            // A chunk that does not match its CID is not kept.
            Err(_) => false,
        }
    }

    /// Answers a chunk request delivered to the router: the pieces, as XIP
    /// packets from `own` + the CID to the requester. `None` if the packet
    /// is not a request for a chunk held here.
    pub fn serve(&mut self, packet: &[u8], own: &Dag) -> Option<Vec<Vec<u8>>> {
        let view = Packet::new_unchecked(packet);
        let repr = XipRepr::parse(&view).ok()?;
        let cid = *repr.dst.intent();
        if repr.next_header != NextHeader::Xdgram || cid.principal() != Principal::CID {
            return None;
        }
        let seg = XdgramRepr::parse(view.payload()).ok()?;
        let ChunkMsg::Request { offset, length } = ChunkMsg::parse(seg.payload)? else {
            return None;
        };
        let chunk = self.chunks.get(&cid)?;
        let src = own.append_xid(cid).ok()?;
        let out = pieces(&chunk, offset, length)
            .into_iter()
            .filter_map(|piece| {
                let seg = XdgramRepr {
                    next_header: NextHeader::Data,
                    payload: &piece,
                }
                .to_bytes();
                XipRepr::new(repr.src.clone(), src.clone(), NextHeader::Xdgram, 0)
                    .to_bytes(&seg)
                    .ok()
            })
            .collect();
        Some(out)
    }

    /// (chunks held, bytes held).
    pub fn usage(&self) -> (usize, usize) {
        (self.chunks.len(), self.chunks.used())
    }
}
