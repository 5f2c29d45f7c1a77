//! The per-destination fast path (the XIA paper's route cache): remembers
//! the outcome of walking a destination DAG from a given `last`, so a
//! packet whose DAG needed fallbacks costs one hash and compare instead of
//! one table lookup per edge tried.
//!
//! The key is the destination node array with visited bits cleared, plus
//! `last`: the walk's outcome depends on nothing else but the tables. Each
//! entry records the tables' generation; any table change makes every
//! entry stale at once. The cache is a fixed array of slots indexed by
//! hash (direct-mapped), so it is bounded; a hit neither copies nor
//! allocates (the key is hashed and compared in place), a miss allocates
//! the slot's key.

use std::hash::Hasher;

use rustc_hash::FxHasher;
use xia_stack::forward::walk::{self, Checked, Verdict};
use xia_stack::forward::RouteTables;
use xia_stack::wire::dag::{EDGE_VISITED, NODE_LEN};

/// Slots in the cache (a power of two).
pub const SLOTS: usize = 4096;

/// Edge bytes with the visited bits cleared: the part of a node the walk's
/// outcome depends on.
const EDGE_MASK: u32 = u32::from_be_bytes([!EDGE_VISITED; 4]);

#[derive(Clone, Debug)]
struct Entry {
    generation: u64,
    hash: u64,
    last: u8,
    // The destination node array with visited bits cleared.
    key: Box<[u8]>,
    verdict: Verdict,
    marks: u128,
    new_last: u8,
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

fn edges_of(node: &[u8]) -> u32 {
    u32::from_be_bytes([node[24], node[25], node[26], node[27]]) & EDGE_MASK
}

/// Hashes the node array as if its visited bits were clear, plus `last`,
/// without copying it.
fn key_hash(wire: &[u8], last: u8) -> u64 {
    let mut h = FxHasher::default();
    for node in wire.chunks_exact(NODE_LEN) {
        h.write(&node[..NODE_LEN - 4]);
        h.write_u32(edges_of(node));
    }
    h.write_u8(last);
    h.finish()
}

fn key_eq(key: &[u8], wire: &[u8]) -> bool {
    key.len() == wire.len()
        && key
            .chunks_exact(NODE_LEN)
            .zip(wire.chunks_exact(NODE_LEN))
            .all(|(k, w)| k[..NODE_LEN - 4] == w[..NODE_LEN - 4] && edges_of(k) == edges_of(w))
}

impl FastPath {
    /// Packets answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Packets that took the full walk (at a node with a choice of edges).
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Like [`walk::route`], answered from the cache when it can be.
    ///
    /// Only packets standing at a node with more than one out-edge consult
    /// the cache: with a single edge the walk costs one lookup, no more
    /// than a probe, and caching it would only add the key's hashing.
    pub fn route(&mut self, tables: &RouteTables, pkt: &mut Checked<'_>) -> Verdict {
        if pkt.edge(pkt.current_node(), 1).is_none() {
            return walk::route(tables, pkt);
        }
        let last = pkt.last_raw();
        let hash = key_hash(pkt.dst_wire(), last);
        let slot = (hash as usize) & (SLOTS - 1);
        let generation = tables.generation();
        if let Some(e) = &self.slots[slot] {
            if e.generation == generation
                && e.hash == hash
                && e.last == last
                && key_eq(&e.key, pkt.dst_wire())
            {
                self.hits += 1;
                let (verdict, marks, new_last) = (e.verdict, e.marks, e.new_last);
                pkt.replay(marks, new_last);
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
        let mut key: Box<[u8]> = pkt.dst_wire().into();
        for node in key.chunks_exact_mut(NODE_LEN) {
            for e in &mut node[NODE_LEN - 4..] {
                *e &= !EDGE_VISITED;
            }
        }
        let verdict = walk::route(tables, pkt);
        if verdict != Verdict::TimeExceeded {
            self.slots[slot] = Some(Entry {
                generation,
                hash,
                last,
                key,
                verdict,
                marks: pkt.visited_bits() & !before,
                new_last: pkt.last_raw(),
            });
        }
        verdict
    }
}
