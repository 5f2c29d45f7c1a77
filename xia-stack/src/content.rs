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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
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
    /// No answer after every retry.
    #[error("no answer for {0}")]
    TimedOut(Xid),
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

/// Serialized as its settings, counters and chunks from least to most
/// recently used. Reading rebuilds the index, checks every chunk against
/// its CID and refuses duplicates or a total that does not fit.
impl serde::Serialize for ChunkCache {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let chunks: Vec<(u64, &Xid, &serde_bytes::Bytes)> = self
            .order
            .iter()
            .filter_map(|(&tick, cid)| {
                let (bytes, _) = self.chunks.get(cid)?;
                Some((tick, cid, serde_bytes::Bytes::new(bytes)))
            })
            .collect();
        let stats = (self.tick, self.hits, self.misses, self.evictions);
        serde::Serialize::serialize(&(self.capacity, stats, chunks), s)
    }
}

impl<'de> serde::Deserialize<'de> for ChunkCache {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ChunkCache, D::Error> {
        use crate::serde_util::invalid;
        type Parts = (
            usize,
            (u64, u64, u64, u64),
            Vec<(u64, Xid, serde_bytes::ByteBuf)>,
        );
        let (capacity, (tick, hits, misses, evictions), list) =
            <Parts as serde::Deserialize>::deserialize(d)?;
        let mut cache = ChunkCache::new(capacity);
        let counters = [tick, hits, misses, evictions];
        if counters.iter().any(|&c| c > i64::MAX as u64) {
            return Err(invalid("chunk cache counter out of range"));
        }
        (cache.tick, cache.hits, cache.misses, cache.evictions) = (tick, hits, misses, evictions);
        for (t, cid, bytes) in list {
            verify(&cid, &bytes).map_err(|e| invalid(format_args!("cached chunk: {e}")))?;
            let in_order = cache
                .order
                .last_key_value()
                .is_none_or(|(&last, _)| t > last);
            if !in_order || t > tick || cache.chunks.contains_key(&cid) {
                return Err(invalid(format!("chunk {cid} out of order or twice")));
            }
            cache.used = cache
                .used
                .checked_add(bytes.len())
                .filter(|&u| u <= capacity)
                .ok_or_else(|| invalid("chunks exceed the cache capacity"))?;
            cache.order.insert(t, cid);
            cache.chunks.insert(cid, (bytes.into_vec().into(), t));
        }
        Ok(cache)
    }
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
        self.insert_evicting(cid, bytes).map(|_| ())
    }

    /// Like [`ChunkCache::insert`], and says which chunks it evicted (a
    /// router removes their routes).
    pub fn insert_evicting(&mut self, cid: Xid, bytes: &[u8]) -> Result<Vec<Xid>, ContentError> {
        verify(&cid, bytes)?;
        if bytes.len() > self.capacity {
            return Err(ContentError::TooLarge {
                size: bytes.len(),
                capacity: self.capacity,
            });
        }
        let mut evicted = Vec::new();
        if self.chunks.contains_key(&cid) {
            self.touch(&cid);
            return Ok(evicted);
        }
        while self.used + bytes.len() > self.capacity {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            if let Some((b, _)) = self.chunks.remove(&victim) {
                self.used -= b.len();
                self.evictions += 1;
                evicted.push(victim);
            }
        }
        self.tick += 1;
        self.used += bytes.len();
        self.chunks.insert(cid, (bytes.into(), self.tick));
        self.order.insert(self.tick, cid);
        Ok(evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_piece_past_the_last_is_refused_not_a_panic() {
        let total = 2 * PIECE_LEN as u32;
        let mut r = Reassembly::new();
        assert!(!r.add(total, total, &[]));
        assert!(r.add(total, 0, &vec![1; PIECE_LEN]));
    }

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

/// Most payload bytes of one chunk piece (keeps packets under a 1500-byte
/// MTU with a 3-node destination and source DAG).
pub const PIECE_LEN: usize = 1200;

/// Most bytes one chunk may have.
pub const MAX_CHUNK: usize = 16 << 20;

/// A chunk-protocol message, carried in an XDGRAM datagram to (requests)
/// or from (pieces) a DAG whose intent is the CID.
///
/// ```text
/// request: 'G' | offset u32 | length u32     (send pieces of [offset, offset+length))
/// piece:   'D' | total u32  | offset u32 | bytes…
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkMsg<'a> {
    /// Asks for a byte range of the chunk.
    Request {
        /// First byte wanted.
        offset: u32,
        /// How many.
        length: u32,
    },
    /// A piece of the chunk.
    Piece {
        /// The chunk's whole length.
        total: u32,
        /// Where this piece starts.
        offset: u32,
        /// Its bytes.
        data: &'a [u8],
    },
}

impl<'a> ChunkMsg<'a> {
    /// Reads a message; `None` if it is not one.
    pub fn parse(b: &'a [u8]) -> Option<ChunkMsg<'a>> {
        let u32_at = |i: usize| {
            b.get(i..i + 4)
                .map(|x| u32::from_be_bytes(x.try_into().expect("4 bytes")))
        };
        match b.first()? {
            b'G' if b.len() == 9 => Some(ChunkMsg::Request {
                offset: u32_at(1)?,
                length: u32_at(5)?,
            }),
            b'D' if b.len() >= 9 => {
                let (total, offset) = (u32_at(1)?, u32_at(5)?);
                let data = &b[9..];
                let fits =
                    (total as usize) <= MAX_CHUNK && offset as usize + data.len() <= total as usize;
                fits.then_some(ChunkMsg::Piece {
                    total,
                    offset,
                    data,
                })
            }
            _ => None,
        }
    }

    /// The message as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            ChunkMsg::Request { offset, length } => {
                let mut v = vec![b'G'];
                v.extend_from_slice(&offset.to_be_bytes());
                v.extend_from_slice(&length.to_be_bytes());
                v
            }
            ChunkMsg::Piece {
                total,
                offset,
                data,
            } => {
                let mut v = vec![b'D'];
                v.extend_from_slice(&total.to_be_bytes());
                v.extend_from_slice(&offset.to_be_bytes());
                v.extend_from_slice(data);
                v
            }
        }
    }
}

/// The pieces answering a request for `[offset, offset + length)` of
/// `chunk`, as message bytes.
pub fn pieces(chunk: &[u8], offset: u32, length: u32) -> Vec<Vec<u8>> {
    let total = chunk.len() as u32;
    let start = offset.min(total) as usize;
    let end = (offset as u64 + length as u64).min(total as u64) as usize;
    if chunk.is_empty() {
        return vec![ChunkMsg::Piece {
            total,
            offset: 0,
            data: &[],
        }
        .to_bytes()];
    }
    (start..end)
        .step_by(PIECE_LEN)
        .map(|at| {
            let data = &chunk[at..(at + PIECE_LEN).min(end)];
            ChunkMsg::Piece {
                total,
                offset: at as u32,
                data,
            }
            .to_bytes()
        })
        .collect()
}

/// Reassembles a chunk from pieces arriving in any order, any number of
/// times; bounded by [`MAX_CHUNK`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Reassembly {
    total: Option<usize>,
    #[serde(with = "serde_bytes")]
    buf: Vec<u8>,
    have: Vec<bool>,
    received: usize,
}

impl Default for Reassembly {
    fn default() -> Self {
        Reassembly::new()
    }
}

impl Reassembly {
    /// Nothing received yet.
    pub fn new() -> Reassembly {
        Reassembly {
            total: None,
            buf: Vec::new(),
            have: Vec::new(),
            received: 0,
        }
    }

    /// Refuses restored state [`Reassembly::add`] could index out of
    /// bounds with.
    pub(crate) fn check(&self) -> Result<(), String> {
        let consistent = match self.total {
            None => self.buf.is_empty() && self.have.is_empty() && self.received == 0,
            Some(t) => {
                t <= MAX_CHUNK
                    && self.buf.len() == t
                    && self.have.len() == t.div_ceil(PIECE_LEN).max(1)
                    && self.received == self.have.iter().filter(|h| **h).count()
            }
        };
        if !consistent {
            return Err("chunk reassembly state is inconsistent".into());
        }
        Ok(())
    }

    /// Adds a piece; `false` if it contradicts the pieces so far (another
    /// total length).
    pub fn add(&mut self, total: u32, offset: u32, data: &[u8]) -> bool {
        let total = total as usize;
        match self.total {
            None => {
                self.total = Some(total);
                self.buf = vec![0; total];
                self.have = vec![false; total.div_ceil(PIECE_LEN).max(1)];
            }
            Some(t) if t != total => return false,
            Some(_) => {}
        }
        let at = offset as usize;
        if at % PIECE_LEN != 0 || at + data.len() > total {
            return false;
        }
        let i = at / PIECE_LEN;
        // A piece must start inside the chunk (an empty piece at the very
        // end of a chunk whose length is a multiple of the piece size
        // would index past the map).
        if i >= self.have.len() || (data.is_empty() && total > 0) {
            return false;
        }
        if !self.have[i] {
            self.have[i] = true;
            self.buf[at..at + data.len()].copy_from_slice(data);
            self.received += 1;
        }
        true
    }

    /// The first missing byte range, if any (to ask again).
    pub fn missing(&self) -> Option<(u32, u32)> {
        let total = self.total?;
        let first = self.have.iter().position(|h| !h)?;
        let run = self.have[first..].iter().take_while(|h| !**h).count();
        let start = first * PIECE_LEN;
        let end = ((first + run) * PIECE_LEN).min(total);
        Some((start as u32, (end - start) as u32))
    }

    /// The chunk, once every piece is in.
    pub fn complete(&self) -> Option<&[u8]> {
        (self.total.is_some() && self.have.iter().all(|h| *h)).then_some(&self.buf[..])
    }
}

#[cfg(test)]
mod chunk_tests {
    use super::*;

    #[test]
    fn pieces_reassemble_in_any_order_and_missing_ranges_are_reported() {
        let chunk: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let ps = pieces(&chunk, 0, chunk.len() as u32);
        assert_eq!(ps.len(), 5);
        let mut r = Reassembly::new();
        for p in ps.iter().skip(1).rev() {
            let ChunkMsg::Piece {
                total,
                offset,
                data,
            } = ChunkMsg::parse(p).unwrap()
            else {
                panic!()
            };
            assert!(r.add(total, offset, data));
        }
        assert_eq!(r.missing(), Some((0, 1200)));
        assert!(r.complete().is_none());
        let ChunkMsg::Piece {
            total,
            offset,
            data,
        } = ChunkMsg::parse(&ps[0]).unwrap()
        else {
            panic!()
        };
        r.add(total, offset, data);
        assert_eq!(r.complete(), Some(&chunk[..]));
        assert_eq!(
            ChunkMsg::parse(
                &ChunkMsg::Request {
                    offset: 1,
                    length: 2
                }
                .to_bytes()
            ),
            Some(ChunkMsg::Request {
                offset: 1,
                length: 2
            })
        );
        assert_eq!(
            ChunkMsg::parse(b"D\0\0\0\x01\0\0\0\x05xx"),
            None,
            "piece past the end"
        );
        assert_eq!(ChunkMsg::parse(b"Q"), None);
        assert!(!r.add(99, 0, b"x"), "another total");
    }
}
