//! Pages on the wire: how a migration sends a page, and how the
//! destination rebuilds it.
//!
//! - a page of zeros is sent as [`Encoded::Zero`];
//! - a page whose content the destination already holds in another page
//!   (found by SHA-1) as [`Encoded::Dup`], a reference to it;
//! - a page sent before, whose old content is still in the encoder's cache,
//!   as an XOR delta against it when that is smaller ([`Encoded::Delta`],
//!   as QEMU's XBZRLE): runs of unchanged bytes are skipped;
//! - with dedup on, a page whose content the network holds (it is in the
//!   guest's [`ContentIndex`], the image it booted from) as its CID
//!   ([`Encoded::Cid`]): the destination fetches it from the nearest
//!   cache or image store instead of over the migration's path, and asks
//!   the source for it ([`crate::msg::Msg::Want`]) if it cannot;
//! - otherwise whole ([`Encoded::Full`]).
//!
//! The [`Encoder`] tracks what the destination holds, so a reference is
//! never to a page that has changed since. Wire form of one page:
//!
//! ```text
//! index u32 | tag u8 (0 zero, 1 dup, 2 delta, 3 full, 4 cid) | body
//! dup: page u32 · delta: len u16, (skip u16, len u16, len bytes)* ·
//! full: the page · cid: the content's SHA-1 (20 B)
//! ```

use std::collections::{HashMap, VecDeque};

use sha1::{Digest, Sha1};

use crate::guest::{ContentIndex, Guest};

/// How one page travels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoded {
    /// All zeros.
    Zero,
    /// The same bytes as this page at the destination.
    Dup(u32),
    /// XOR runs against the page's previous content.
    Delta(Vec<u8>),
    /// The whole page.
    Full(Vec<u8>),
    /// The page whose content has this SHA-1 (CID), to fetch from the
    /// network.
    Cid([u8; 20]),
}

/// One page to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageMsg {
    /// Which page.
    pub index: u32,
    /// Its content.
    pub enc: Encoded,
}

/// Why bytes are not a page message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// Shorter than its fields.
    #[error("truncated page message")]
    Truncated,
    /// An unknown tag.
    #[error("unknown page encoding {0}")]
    Tag(u8),
    /// A page number or delta outside the guest.
    #[error("page message out of range")]
    OutOfRange,
    /// A page by CID: the destination fetches it, it cannot apply it.
    #[error("a page by CID must be fetched")]
    ByContent,
}

impl PageMsg {
    /// Bytes on the wire.
    pub fn wire_len(&self) -> usize {
        5 + match &self.enc {
            Encoded::Zero => 0,
            Encoded::Dup(_) => 4,
            Encoded::Delta(d) => 2 + d.len(),
            Encoded::Full(d) => d.len(),
            Encoded::Cid(_) => 20,
        }
    }

    /// Appends the wire form to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.index.to_be_bytes());
        match &self.enc {
            Encoded::Zero => out.push(0),
            Encoded::Dup(j) => {
                out.push(1);
                out.extend_from_slice(&j.to_be_bytes());
            }
            Encoded::Delta(d) => {
                out.push(2);
                out.extend_from_slice(&(d.len() as u32).to_be_bytes()[2..]);
                out.extend_from_slice(d);
            }
            Encoded::Full(d) => {
                out.push(3);
                out.extend_from_slice(d);
            }
            Encoded::Cid(h) => {
                out.push(4);
                out.extend_from_slice(h);
            }
        }
    }

    /// Reads one page message of a guest with `page_size`-byte pages;
    /// returns it and the bytes it used.
    pub fn parse(b: &[u8], page_size: usize) -> Result<(PageMsg, usize), PageError> {
        if b.len() < 5 {
            return Err(PageError::Truncated);
        }
        let index = u32::from_be_bytes(b[..4].try_into().expect("4 bytes"));
        let (enc, used) = match b[4] {
            0 => (Encoded::Zero, 5),
            1 => {
                let j = b.get(5..9).ok_or(PageError::Truncated)?;
                (
                    Encoded::Dup(u32::from_be_bytes(j.try_into().expect("4 bytes"))),
                    9,
                )
            }
            2 => {
                let n = b.get(5..7).ok_or(PageError::Truncated)?;
                let n = usize::from(u16::from_be_bytes([n[0], n[1]]));
                let d = b.get(7..7 + n).ok_or(PageError::Truncated)?;
                (Encoded::Delta(d.to_vec()), 7 + n)
            }
            3 => {
                let d = b.get(5..5 + page_size).ok_or(PageError::Truncated)?;
                (Encoded::Full(d.to_vec()), 5 + page_size)
            }
            4 => {
                let h = b.get(5..25).ok_or(PageError::Truncated)?;
                (Encoded::Cid(h.try_into().expect("20 bytes")), 25)
            }
            t => return Err(PageError::Tag(t)),
        };
        Ok((PageMsg { index, enc }, used))
    }

    /// Applies it to the destination guest.
    pub fn apply(&self, guest: &mut impl Guest) -> Result<(), PageError> {
        let ps = guest.page_size();
        let i = self.index as usize;
        if i >= guest.pages() {
            return Err(PageError::OutOfRange);
        }
        match &self.enc {
            Encoded::Zero => guest.write_page(i, &vec![0; ps]),
            Encoded::Dup(j) => {
                let j = *j as usize;
                if j >= guest.pages() {
                    return Err(PageError::OutOfRange);
                }
                let mut page = vec![0; ps];
                guest.read_page(j, &mut page);
                guest.write_page(i, &page);
            }
            Encoded::Delta(d) => {
                let mut page = vec![0; ps];
                guest.read_page(i, &mut page);
                apply_delta(&mut page, d)?;
                guest.write_page(i, &page);
            }
            Encoded::Full(d) => {
                if d.len() != ps {
                    return Err(PageError::OutOfRange);
                }
                guest.write_page(i, d);
            }
            Encoded::Cid(_) => return Err(PageError::ByContent),
        }
        Ok(())
    }
}

/// XOR runs of `new` against `old`: (skip u16, len u16, len bytes)*; `None`
/// when that is not smaller than `limit`.
pub fn encode_delta(old: &[u8], new: &[u8], limit: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < new.len() {
        let start = i;
        while i < new.len() && old[i] == new[i] && i - start < usize::from(u16::MAX) {
            i += 1;
        }
        if i == new.len() {
            break;
        }
        let skip = i - start;
        let lit = i;
        while i < new.len() && old[i] != new[i] && i - lit < usize::from(u16::MAX) {
            i += 1;
        }
        out.extend_from_slice(&(skip as u16).to_be_bytes());
        out.extend_from_slice(&((i - lit) as u16).to_be_bytes());
        out.extend(old[lit..i].iter().zip(&new[lit..i]).map(|(a, b)| a ^ b));
        if out.len() >= limit {
            return None;
        }
    }
    Some(out)
}

fn apply_delta(page: &mut [u8], d: &[u8]) -> Result<(), PageError> {
    let (mut at, mut k) = (0usize, 0usize);
    while k < d.len() {
        let h = d.get(k..k + 4).ok_or(PageError::Truncated)?;
        let skip = usize::from(u16::from_be_bytes([h[0], h[1]]));
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        k += 4;
        at += skip;
        let x = d.get(k..k + len).ok_or(PageError::Truncated)?;
        let dst = page.get_mut(at..at + len).ok_or(PageError::OutOfRange)?;
        for (p, v) in dst.iter_mut().zip(x) {
            *p ^= v;
        }
        at += len;
        k += len;
    }
    Ok(())
}

/// Counters of an encoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodeStats {
    /// Pages sent, by encoding.
    pub zero: u64,
    /// References to equal pages.
    pub dup: u64,
    /// XOR deltas.
    pub delta: u64,
    /// Whole pages.
    pub full: u64,
    /// Pages sent as their CID (dedup).
    pub cid: u64,
    /// Bytes on the wire.
    pub bytes: u64,
}

/// The source side: chooses each page's encoding, remembering what the
/// destination holds.
#[derive(Debug)]
pub struct Encoder {
    page_size: usize,
    // What each page at the destination holds (by SHA-1), and one page
    // holding each content.
    held: HashMap<u32, [u8; 20]>,
    by_hash: HashMap<[u8; 20], u32>,
    // The XBZRLE cache: last sent content of recently sent pages.
    cache: HashMap<u32, Vec<u8>>,
    order: VecDeque<u32>,
    cache_pages: usize,
    // Dedup: contents the network holds.
    content: Option<ContentIndex>,
    stats: EncodeStats,
}

impl Encoder {
    /// An encoder for `page_size`-byte pages keeping the last content of up
    /// to `cache_pages` pages for deltas (0: no deltas).
    pub fn new(page_size: usize, cache_pages: usize) -> Encoder {
        Encoder {
            page_size,
            held: HashMap::new(),
            by_hash: HashMap::new(),
            cache: HashMap::new(),
            order: VecDeque::new(),
            cache_pages,
            content: None,
            stats: EncodeStats::default(),
        }
    }

    /// Sends pages whose content is in `index` as their CID from now on
    /// (`None`: never).
    pub fn set_content_index(&mut self, index: Option<ContentIndex>) {
        self.content = index;
    }

    /// Its counters.
    pub fn stats(&self) -> EncodeStats {
        self.stats
    }

    /// Keeps the last content of up to `pages` pages for deltas from now
    /// on (0: no deltas; pages cached before stay until evicted).
    pub fn set_cache(&mut self, pages: usize) {
        self.cache_pages = pages;
        while self.order.len() > pages {
            if let Some(old) = self.order.pop_front() {
                self.cache.remove(&old);
            }
        }
    }

    /// SHA-1 over the SHA-1 of every page the destination holds, in page
    /// order (a page never sent counts as 20 zero bytes): what the
    /// destination must find over its own copy.
    pub fn image_digest(&self, pages: usize) -> [u8; 20] {
        let mut h = Sha1::new();
        for i in 0..pages {
            h.update(self.held.get(&(i as u32)).unwrap_or(&[0; 20]));
        }
        h.finalize().into()
    }

    /// The message for page `index` with content `page`.
    pub fn encode(&mut self, index: u32, page: &[u8]) -> PageMsg {
        self.encode_as(index, page, true)
    }

    /// The message for page `index` carrying its content (never a CID):
    /// for a page the destination could not fetch.
    pub fn encode_inline(&mut self, index: u32, page: &[u8]) -> PageMsg {
        self.encode_as(index, page, false)
    }

    fn encode_as(&mut self, index: u32, page: &[u8], by_cid: bool) -> PageMsg {
        let hash: [u8; 20] = Sha1::digest(page).into();
        if by_cid
            && self.content.as_ref().is_some_and(|c| c.contains(&hash))
            && self.held.get(&index) != Some(&hash)
        {
            // Until the destination has fetched it, the page is neither a
            // dup target nor a delta base there.
            self.stats.cid += 1;
            self.held.insert(index, hash);
            if self.cache.remove(&index).is_some() {
                self.order.retain(|&p| p != index);
            }
            let msg = PageMsg {
                index,
                enc: Encoded::Cid(hash),
            };
            self.stats.bytes += msg.wire_len() as u64;
            return msg;
        }
        let enc = if page.iter().all(|&b| b == 0) {
            self.stats.zero += 1;
            Encoded::Zero
        } else if let Some(j) = self
            .by_hash
            .get(&hash)
            .copied()
            .filter(|j| *j != index && self.held.get(j) == Some(&hash))
        {
            self.stats.dup += 1;
            Encoded::Dup(j)
        } else if let Some(d) = self
            .cache
            .get(&index)
            .and_then(|old| encode_delta(old, page, self.page_size * 3 / 4))
        {
            self.stats.delta += 1;
            Encoded::Delta(d)
        } else {
            self.stats.full += 1;
            Encoded::Full(page.to_vec())
        };
        self.held.insert(index, hash);
        self.by_hash.insert(hash, index);
        if self.cache_pages > 0 && self.cache.insert(index, page.to_vec()).is_none() {
            self.order.push_back(index);
            if self.order.len() > self.cache_pages {
                if let Some(old) = self.order.pop_front() {
                    self.cache.remove(&old);
                }
            }
        }
        let msg = PageMsg { index, enc };
        self.stats.bytes += msg.wire_len() as u64;
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::{DirtyModel, SyntheticGuest};
    use proptest::prelude::*;
    use std::time::Duration;

    /// Sends the dirty pages of `src` to `dst` through the wire form.
    fn round(src: &mut SyntheticGuest, dst: &mut SyntheticGuest, enc: &mut Encoder) {
        let ps = src.page_size();
        let mut page = vec![0; ps];
        let mut wire = Vec::new();
        for i in src.take_dirty() {
            src.read_page(i, &mut page);
            enc.encode(i as u32, &page).emit(&mut wire);
        }
        let mut at = 0;
        while at < wire.len() {
            let (m, used) = PageMsg::parse(&wire[at..], ps).unwrap();
            m.apply(dst).unwrap();
            at += used;
        }
    }

    #[test]
    fn zero_dup_delta_and_full_pages_rebuild_the_guest() {
        let mut src = SyntheticGuest::new(
            2000,
            4096,
            3,
            DirtyModel::HotSet {
                pages: 50,
                share: 0.9,
            },
            20_000.0,
        );
        // Two pages with the same content.
        let mut p = vec![0; 4096];
        src.read_page(1, &mut p);
        src.write_page(2, &p);
        let mut dst = SyntheticGuest::blank(2000, 4096);
        let mut enc = Encoder::new(4096, 1024);
        round(&mut src, &mut dst, &mut enc);
        src.run(Duration::from_millis(50));
        round(&mut src, &mut dst, &mut enc);
        src.pause();
        round(&mut src, &mut dst, &mut enc);
        assert!(src.memory() == dst.memory(), "memory differs");
        let s = enc.stats();
        assert!(
            s.zero > 300 && s.dup >= 1 && s.delta > 10 && s.full > 1000,
            "{s:?}"
        );
        // Deltas of a few changed bytes are tiny.
        assert!(s.bytes < (s.full + s.delta) * 4096, "{s:?}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut g = SyntheticGuest::blank(4, 64);
        assert_eq!(PageMsg::parse(&[0, 0, 0, 1], 64), Err(PageError::Truncated));
        assert_eq!(PageMsg::parse(&[0, 0, 0, 1, 9], 64), Err(PageError::Tag(9)));
        let m = PageMsg {
            index: 9,
            enc: Encoded::Zero,
        };
        assert_eq!(m.apply(&mut g), Err(PageError::OutOfRange));
        let d = PageMsg {
            index: 1,
            enc: Encoded::Delta(vec![0, 60, 0, 10, 1, 2]),
        };
        assert!(d.apply(&mut g).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn memory_after_migration_equals_memory_at_pause(
            seed in any::<u64>(),
            pages in 1usize..400,
            rate in 0.0f64..50_000.0,
            rounds in 1usize..5,
            cache in 0usize..200,
            model in prop_oneof![
                Just(DirtyModel::Uniform),
                (1usize..100, 0.0f64..1.0).prop_map(|(p, s)| DirtyModel::HotSet { pages: p, share: s }),
                (0.5f64..2.0).prop_map(|s| DirtyModel::Zipf { s }),
            ],
        ) {
            let mut src = SyntheticGuest::new(pages, 256, seed, model, rate);
            let mut dst = SyntheticGuest::blank(pages, 256);
            let mut enc = Encoder::new(256, cache);
            for _ in 0..rounds {
                round(&mut src, &mut dst, &mut enc);
                src.run(Duration::from_millis(20));
            }
            src.pause();
            round(&mut src, &mut dst, &mut enc);
            prop_assert!(src.memory() == dst.memory());
        }

        #[test]
        fn with_dedup_memory_after_migration_equals_memory_at_pause(
            seed in any::<u64>(),
            pages in 1usize..300,
            rate in 0.0f64..20_000.0,
            rounds in 1usize..4,
            share in 0.0f64..1.0,
        ) {
            use crate::guest::Image;
            let image = Image { seed: seed ^ 1, share };
            let mut src = SyntheticGuest::new(pages, 256, seed, DirtyModel::Uniform, rate)
                .with_image(image);
            let mut dst = SyntheticGuest::blank(pages, 256);
            let mut enc = Encoder::new(256, 64);
            enc.set_content_index(src.content_index());
            // The store: the image's pages by CID.
            let mut store = HashMap::new();
            let mut p = vec![0; 256];
            for i in (0..pages).filter(|&i| image.covers(i)) {
                image.page(i, &mut p);
                store.insert(xia_stack::xid::sha1(&p), p.clone());
            }
            for r in 0..=rounds {
                if r == rounds {
                    src.pause();
                }
                let mut page = vec![0; 256];
                for i in src.take_dirty() {
                    src.read_page(i, &mut page);
                    let mut wire = Vec::new();
                    enc.encode(i as u32, &page).emit(&mut wire);
                    let (m, _) = PageMsg::parse(&wire, 256).unwrap();
                    match m.enc {
                        Encoded::Cid(h) => dst.write_page(i, &store[&h]),
                        _ => m.apply(&mut dst).unwrap(),
                    }
                }
                src.run(Duration::from_millis(20));
            }
            prop_assert!(src.memory() == dst.memory());
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = PageMsg::parse(&bytes, 256);
        }
    }
}
