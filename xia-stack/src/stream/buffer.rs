//! The receive side's reassembly buffer.

use std::collections::{BTreeMap, VecDeque};

/// In-order bytes ready for the application plus out-of-order segments
/// waiting for a gap to fill, both bounded.
///
/// Out-of-order data is keyed by absolute stream offset (a `u64` that never
/// wraps), so the key order stays right across 32-bit sequence wrap.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Reassembly {
    #[serde(with = "crate::serde_util::deque_bytes")]
    ready: VecDeque<u8>,
    capacity: usize,
    ooo: BTreeMap<u64, Vec<u8>>,
    max_segments: usize,
    /// Stream offset of the next in-order byte (RCV.NXT as a u64).
    delivered: u64,
    /// Start offsets of the most recently stored out-of-order segments,
    /// newest first (for the order of SACK blocks, RFC 2018 4).
    recent: VecDeque<u64>,
}

/// How many recent arrivals are remembered for SACK ordering.
const RECENT_LIMIT: usize = 4;

impl Reassembly {
    pub(crate) fn new(capacity: usize, max_segments: usize) -> Reassembly {
        Reassembly {
            ready: VecDeque::new(),
            capacity,
            ooo: BTreeMap::new(),
            max_segments,
            delivered: 0,
            recent: VecDeque::new(),
        }
    }

    /// Refuses restored state the arithmetic here could overflow on.
    pub(crate) fn check(&self) -> Result<(), String> {
        // Stream offsets count bytes: a real stream never gets near 2^62.
        let limit = 1u64 << 62;
        let ooo_ok = self
            .ooo
            .iter()
            .all(|(&k, seg)| k < limit && seg.len() as u64 <= limit);
        if self.delivered >= limit || !ooo_ok || self.recent.iter().any(|&k| k >= limit) {
            return Err("receive buffer offsets out of range".into());
        }
        Ok(())
    }

    /// Free space: what the receive window may offer. Out-of-order data
    /// lies inside this window, so it needs no extra room.
    pub(crate) fn free(&self) -> usize {
        self.capacity.saturating_sub(self.ready.len())
    }

    /// The buffer's size: the most the window may offer.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Raises the size to `capacity` (receive-buffer autotuning); the
    /// buffer never shrinks, since the window it offered must stay valid.
    pub(crate) fn grow(&mut self, capacity: usize) {
        self.capacity = self.capacity.max(capacity);
    }

    /// Bytes ready to read.
    pub(crate) fn readable(&self) -> usize {
        self.ready.len()
    }

    /// Stores `data` that starts `rel` bytes past the next expected byte
    /// (the caller has trimmed it to the window). Returns how far the next
    /// expected byte advanced.
    pub(crate) fn insert(&mut self, rel: usize, data: &[u8]) -> usize {
        if data.is_empty() {
            return 0;
        }
        if rel > 0 {
            // Bounded: beyond the limit, an out-of-order segment is dropped
            // and the sender will repeat it.
            let key = self.delivered + rel as u64;
            let keep_new = self.ooo.get(&key).is_none_or(|old| old.len() < data.len());
            if keep_new && (self.ooo.len() < self.max_segments || self.ooo.contains_key(&key)) {
                self.ooo.insert(key, data.to_vec());
                self.recent.retain(|&k| k != key);
                self.recent.push_front(key);
                self.recent.truncate(RECENT_LIMIT);
            }
            return 0;
        }
        let before = self.delivered;
        self.push_ready(data);
        while let Some((&k, _)) = self.ooo.first_key_value() {
            if k > self.delivered {
                break;
            }
            let Some(seg) = self.ooo.remove(&k) else {
                break;
            };
            let skip = (self.delivered - k) as usize;
            if skip < seg.len() {
                self.push_ready(&seg[skip..]);
            }
        }
        (self.delivered - before) as usize
    }

    fn push_ready(&mut self, data: &[u8]) {
        // Never beyond capacity, even if a caller's trimming were wrong.
        let n = data.len().min(self.free());
        self.ready.extend(&data[..n]);
        self.delivered += n as u64;
    }

    /// Up to `max` SACK blocks describing the out-of-order data, as
    /// `[start, end)` offsets relative to the next expected byte: the block
    /// holding the most recent arrival first, then other recent ones, then
    /// the rest in ascending order (RFC 2018 4).
    pub(crate) fn sack_blocks(&self, max: usize) -> Vec<(u64, u64)> {
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (&k, seg) in &self.ooo {
            let end = k.saturating_add(seg.len() as u64);
            match merged.last_mut() {
                Some(last) if k <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((k, end)),
            }
        }
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(max.min(merged.len()));
        let recent = self
            .recent
            .iter()
            .filter_map(|&k| merged.iter().copied().find(|&(s, e)| s <= k && k < e));
        for b in recent.chain(merged.iter().copied()) {
            if out.len() >= max {
                break;
            }
            if b.0 > self.delivered && !out.contains(&b) {
                out.push(b);
            }
        }
        out.iter()
            .map(|&(s, e)| (s - self.delivered, e - self.delivered))
            .collect()
    }

    /// Copies ready bytes out.
    pub(crate) fn read(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.ready.len());
        let (a, b) = self.ready.as_slices();
        let from_a = n.min(a.len());
        out[..from_a].copy_from_slice(&a[..from_a]);
        out[from_a..n].copy_from_slice(&b[..n - from_a]);
        self.ready.drain(..n);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reorders_and_deduplicates() {
        let mut r = Reassembly::new(100, 4);
        assert_eq!(r.insert(3, b"def"), 0);
        assert_eq!(r.insert(4, b"ef"), 0);
        assert_eq!(r.insert(0, b"abcd"), 6);
        let mut out = [0; 10];
        assert_eq!(r.read(&mut out), 6);
        assert_eq!(&out[..6], b"abcdef");
        assert_eq!(r.free(), 100);
    }

    #[test]
    fn out_of_order_is_bounded() {
        let mut r = Reassembly::new(100, 2);
        r.insert(10, b"a");
        r.insert(20, b"b");
        r.insert(30, b"c");
        assert_eq!(r.ooo.len(), 2);
    }

    #[test]
    fn sack_blocks_put_the_newest_first() {
        let mut r = Reassembly::new(100, 8);
        r.insert(10, b"ab");
        r.insert(12, b"cd");
        r.insert(30, b"x");
        r.insert(20, b"yz");
        assert_eq!(r.sack_blocks(4), vec![(20, 22), (30, 31), (10, 14)]);
        assert_eq!(r.sack_blocks(1), vec![(20, 22)]);
        r.insert(0, &[0; 14]);
        assert_eq!(r.sack_blocks(4), vec![(6, 8), (16, 17)]);
    }
}
