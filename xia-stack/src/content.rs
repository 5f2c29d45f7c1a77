//! Content chunks: CIDs and a bounded cache.
//!
//! A chunk is named by its CID, the SHA-1 of its bytes, so whoever holds a
//! copy can serve it and the receiver can check it ([`verify`]). Routers
//! and hosts keep chunks in a [`ChunkCache`]: least-recently-used, bounded
//! in bytes. (Fetching chunks over the network, with in-network caching,
//! builds on this in the transport issue.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::xid::{Principal, Xid};

/// Why a chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// The bytes do not hash to the CID they came as.
    #[error("chunk does not match {expected}: its SHA-1 is {actual}")]
    Mismatch {
        /// The CID asked for.
        expected: Xid,
        /// The CID of the bytes received.
        actual: Xid,
    },
    /// Not a CID.
    #[error("{0} is not a CID")]
    NotACid(Xid),
    /// Larger than the whole cache.
    #[error("a chunk of {size} bytes does not fit a cache of {capacity} bytes")]
    TooLarge {
        /// The chunk's size.
        size: usize,
        /// The cache's capacity.
        capacity: usize,
    },
}

/// Checks that `bytes` are the chunk `cid` names.
pub fn verify(cid: &Xid, bytes: &[u8]) -> Result<(), ContentError> {
    if cid.principal() != Principal::CID {
        return Err(ContentError::NotACid(*cid));
    }
    let actual = Xid::cid_of(bytes);
    if actual != *cid {
        return Err(ContentError::Mismatch {
            expected: *cid,
            actual,
        });
    }
    Ok(())
}

/// Splits content into chunks of at most `chunk_size` bytes (at least one
/// chunk, possibly empty) and names each.
pub fn chunk(content: &[u8], chunk_size: usize) -> Vec<(Xid, &[u8])> {
    let size = chunk_size.max(1);
    if content.is_empty() {
        return vec![(Xid::cid_of(&[]), content)];
    }
    content.chunks(size).map(|c| (Xid::cid_of(c), c)).collect()
}

/// A least-recently-used chunk cache bounded in bytes.
#[derive(Debug, Clone)]
pub struct ChunkCache {
    capacity: usize,
    used: usize,
    tick: u64,
    chunks: HashMap<Xid, (Arc<[u8]>, u64)>,
    // Use order: tick → CID; the smallest tick is the least recently used.
    order: BTreeMap<u64, Xid>,
    hits: u64,
    misses: u64,
    evictions: u64,
}

impl ChunkCache {
    /// A cache holding at most `capacity` bytes of chunks.
    pub fn new(capacity: usize) -> ChunkCache {
        ChunkCache {
            capacity,
            used: 0,
            tick: 0,
            chunks: HashMap::new(),
            order: BTreeMap::new(),
            hits: 0,
            misses: 0,
            evictions: 0,
        }
    }

    /// Bytes held.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Chunks held.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// (hits, misses, evictions) so far.
    pub fn stats(&self) -> (u64, u64, u64) {
        (self.hits, self.misses, self.evictions)
    }

    fn touch(&mut self, cid: &Xid) {
        self.tick += 1;
        if let Some((_, t)) = self.chunks.get_mut(cid) {
            self.order.remove(t);
            *t = self.tick;
            self.order.insert(self.tick, *cid);
        }
    }

    /// The chunk, if held (it becomes the most recently used).
    pub fn get(&mut self, cid: &Xid) -> Option<Arc<[u8]>> {
        match self.chunks.get(cid).map(|(b, _)| b.clone()) {
            Some(b) => {
                self.hits += 1;
                self.touch(cid);
                Some(b)
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Whether the chunk is held (no effect on recency).
    pub fn contains(&self, cid: &Xid) -> bool {
        self.chunks.contains_key(cid)
    }

    /// Stores a chunk after checking it against its CID, evicting the least
    /// recently used chunks to make room.
    pub fn insert(&mut self, cid: Xid, bytes: &[u8]) -> Result<(), ContentError> {
        verify(&cid, bytes)?;
        if bytes.len() > self.capacity {
            return Err(ContentError::TooLarge {
                size: bytes.len(),
                capacity: self.capacity,
            });
        }
        if self.chunks.contains_key(&cid) {
            self.touch(&cid);
            return Ok(());
        }
        while self.used + bytes.len() > self.capacity {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            if let Some((b, _)) = self.chunks.remove(&victim) {
                self.used -= b.len();
                self.evictions += 1;
            }
        }
        self.tick += 1;
        self.used += bytes.len();
        self.chunks.insert(cid, (bytes.into(), self.tick));
        self.order.insert(self.tick, cid);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_and_chunk() {
        let (cid, data) = chunk(b"hello world", 4)[0];
        assert_eq!(data, b"hell");
        assert_eq!(verify(&cid, b"hell"), Ok(()));
        assert!(matches!(
            verify(&cid, b"help"),
            Err(ContentError::Mismatch { .. })
        ));
        assert_eq!(chunk(b"hello world", 4).len(), 3);
        assert_eq!(chunk(b"", 4).len(), 1);
        let hid = cid.with_principal(Principal::HID);
        assert_eq!(verify(&hid, b"hell"), Err(ContentError::NotACid(hid)));
    }

    #[test]
    fn lru_bounded_in_bytes() {
        let mut c = ChunkCache::new(10);
        let a = Xid::cid_of(b"aaaa");
        let b = Xid::cid_of(b"bbbb");
        let d = Xid::cid_of(b"dddd");
        c.insert(a, b"aaaa").unwrap();
        c.insert(b, b"bbbb").unwrap();
        assert!(c.get(&a).is_some()); // a is now more recent than b
        c.insert(d, b"dddd").unwrap();
        assert!(c.contains(&a) && c.contains(&d) && !c.contains(&b));
        assert_eq!(c.used(), 8);
        assert_eq!(c.stats(), (1, 0, 1));
        assert!(matches!(
            c.insert(b, b"not b"),
            Err(ContentError::Mismatch { .. })
        ));
        let big = vec![0u8; 11];
        assert!(matches!(
            c.insert(Xid::cid_of(&big), &big),
            Err(ContentError::TooLarge { .. })
        ));
        assert!(c.get(&b).is_none());
    }
}
