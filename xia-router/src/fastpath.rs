//! The per-destination fast path (the XIA paper's route cache): remembers
//! the outcome of walking a destination DAG from a given `last`, so a
//! packet whose DAG needed fallbacks costs one hash and compare instead of
//! one table lookup per edge tried.
//!
//! The key is the destination node array with visited bits cleared, plus
//! `last`: the walk's outcome depends on nothing else but the tables. Each
//! entry records the tables' generation; any table change makes every
//! entry stale at once. The cache is a fixed array of slots indexed by
//! hash (direct-mapped), so it is bounded and never allocates per packet
//! beyond a slot's key.

use std::hash::Hasher;

use rustc_hash::FxHasher;
use xia_stack::dag::MAX_NODES;
use xia_stack::forward::walk::{self, Checked, Verdict};
use xia_stack::forward::RouteTables;
use xia_stack::wire::dag::{EDGE_VISITED, NODE_LEN};

/// Slots in the cache (a power of two).
pub const SLOTS: usize = 4096;
const MAX_KEY: usize = MAX_NODES * NODE_LEN + 1;

#[derive(Clone, Debug)]
struct Entry {
    generation: u64,
    key: Box<[u8]>,
    verdict: Verdict,
    marks: u128,
    last: u8,
}

/// The cache.
#[derive(Clone, Debug)]
pub struct FastPath {
    slots: Box<[Option<Entry>]>,
    hits: u64,
    misses: u64,
}

impl Default for FastPath {
    fn default() -> FastPath {
        FastPath {
            slots: vec![None; SLOTS].into_boxed_slice(),
            hits: 0,
            misses: 0,
        }
    }
}

impl FastPath {
    /// Packets answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Packets that took the full walk.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Like [`walk::route`], answered from the cache when it can be.
    pub fn route(&mut self, tables: &RouteTables, pkt: &mut Checked<'_>) -> Verdict {
        let mut key = [0u8; MAX_KEY];
        let wire = pkt.dst_wire();
        let len = wire.len() + 1;
        key[..wire.len()].copy_from_slice(wire);
        for edges in key[..wire.len()].chunks_exact_mut(NODE_LEN) {
            for e in &mut edges[NODE_LEN - 4..] {
                *e &= !EDGE_VISITED;
            }
        }
        key[len - 1] = pkt.last_raw();
        let key = &key[..len];
        let mut h = FxHasher::default();
        h.write(key);
        let slot = (h.finish() as usize) & (SLOTS - 1);
        let generation = tables.generation();
        if let Some(e) = &self.slots[slot] {
            if e.generation == generation && *e.key == *key {
                self.hits += 1;
                let (verdict, marks, last) = (e.verdict, e.marks, e.last);
                pkt.replay(marks, last);
                return match verdict {
                    Verdict::Forward { .. } | Verdict::Broadcast if !pkt.decrement_hop_limit() => {
                        Verdict::TimeExceeded
                    }
                    v => v,
                };
            }
        }
        self.misses += 1;
        let before = pkt.visited_bits();
        let verdict = walk::route(tables, pkt);
        if verdict != Verdict::TimeExceeded {
            self.slots[slot] = Some(Entry {
                generation,
                key: key.into(),
                verdict,
                marks: pkt.visited_bits() & !before,
                last: pkt.last_raw(),
            });
        }
        verdict
    }
}
