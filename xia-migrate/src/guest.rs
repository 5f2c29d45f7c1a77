//! Guests: what a migration moves.
//!
//! [`Guest`] is the interface a hypervisor agent drives: memory as pages
//! with dirty tracking, pause and resume, and the device state. The
//! guest's XIA host stack (its HID and SID keys, open connections) travels
//! as part of the device state.
//!
//! [`SyntheticGuest`] stands in for a VM in the simulator and the
//! daemons. Its memory is real bytes: each page's content is derived from
//! the seed, the page number and how often it has been written, so a copy
//! can be checked page by page. While running it dirties pages at a rate
//! (pages per second of guest time) following a [`DirtyModel`]; a throttle
//! in (0, 1] slows it, as auto-converge throttles a vCPU.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a migration needs of a guest.
pub trait Guest {
    /// Bytes per page.
    fn page_size(&self) -> usize;
    /// Number of pages.
    fn pages(&self) -> usize;
    /// Copies page `i` into `out` (`page_size` bytes).
    fn read_page(&self, i: usize, out: &mut [u8]);
    /// Overwrites page `i` (at the destination).
    fn write_page(&mut self, i: usize, data: &[u8]);
    /// The pages written since the last call (ascending), and clears the
    /// log: the first call after creation returns every page.
    fn take_dirty(&mut self) -> Vec<usize>;
    /// How many pages are dirty now, without clearing the log.
    fn dirty_count(&self) -> usize;
    /// Slows the guest's vCPUs to `factor` of their speed, in (0, 1]
    /// (auto-converge); 1 lifts the throttle.
    fn set_throttle(&mut self, factor: f64);
    /// Stops the guest: no page changes until [`Guest::resume`].
    fn pause(&mut self);
    /// Starts it again.
    fn resume(&mut self);
    /// Whether it runs.
    fn is_running(&self) -> bool;
    /// The device state (vCPU, devices, the XIA stack), opaque.
    fn device_state(&self) -> Vec<u8>;
    /// Restores the device state (at the destination).
    fn set_device_state(&mut self, state: &[u8]);
    /// Page contents the network is known to hold (the pages of the image
    /// the guest booted from, which an image store serves by CID): a
    /// source with dedup on sends such pages as their CID. Computed when
    /// asked (once per migration); `None` by default.
    fn content_index(&self) -> Option<ContentIndex> {
        None
    }
}

/// A set of page contents by SHA-1 (their CIDs): what a source may send
/// by reference for the destination to fetch from the network.
#[derive(Clone, PartialEq, Eq)]
pub struct ContentIndex(pub Arc<HashSet<[u8; 20]>>);

impl ContentIndex {
    /// Whether it holds a page with this SHA-1.
    pub fn contains(&self, hash: &[u8; 20]) -> bool {
        self.0.contains(hash)
    }
}

impl std::fmt::Debug for ContentIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContentIndex({} pages)", self.0.len())
    }
}

/// A base image several guests boot from: the pages it covers start with
/// the image's content in every guest that uses it (until written), so an
/// image store can serve them by CID to any destination.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Image {
    /// Its content's seed (the same image, the same bytes).
    pub seed: u64,
    /// The share of a guest's non-zero pages it covers, in [0, 1].
    pub share: f64,
}

impl Image {
    /// Whether page `i` starts with the image's content.
    pub fn covers(&self, i: usize) -> bool {
        let x = page_hash(self.seed ^ 0x696d_6167_6521, i as u64, 0);
        ((x % 1_000_000) as f64) < self.share.clamp(0.0, 1.0) * 1_000_000.0
    }

    /// The image's content for page `i` (`out` is one page).
    pub fn page(&self, i: usize, out: &mut [u8]) {
        initial_page(self.seed, i, out);
    }

    /// The SHA-1s of the image's pages among the first `pages`.
    pub fn manifest(&self, pages: usize, page_size: usize) -> ContentIndex {
        let mut page = vec![0; page_size];
        let set = (0..pages)
            .filter(|&i| self.covers(i))
            .map(|i| {
                self.page(i, &mut page);
                xia_stack::xid::sha1(&page)
            })
            .collect();
        ContentIndex(Arc::new(set))
    }
}

/// How a synthetic guest chooses the pages it writes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DirtyModel {
    /// Every page alike.
    Uniform,
    /// A writable working set: the first `pages` pages take `share` of
    /// the writes, the rest the remainder.
    HotSet {
        /// Pages in the hot set.
        pages: usize,
        /// Share of writes that land in it, in [0, 1].
        share: f64,
    },
    /// Zipf-distributed over the pages (page 0 the most written), with
    /// exponent `s` > 0.
    Zipf {
        /// The exponent.
        s: f64,
    },
}

/// A synthetic guest.
#[derive(Debug, Clone)]
pub struct SyntheticGuest {
    page_size: usize,
    seed: u64,
    memory: Vec<u8>,
    // Writes per page so far: page content is a function of this.
    version: Vec<u32>,
    dirty: Vec<u64>,
    model: DirtyModel,
    rate: f64,
    throttle: f64,
    running: bool,
    rng: ChaCha8Rng,
    // Fractional writes carried between calls to `run`.
    carry: f64,
    // Cumulative Zipf weights (only for the Zipf model).
    zipf_cdf: Vec<f64>,
    device: Vec<u8>,
    image: Option<Image>,
}

/// The share of pages that start (and stay, until written) all zero.
pub const ZERO_SHARE: f64 = 0.25;

impl SyntheticGuest {
    /// A guest of `pages` pages of `page_size` bytes, content from `seed`,
    /// writing `rate` pages per second by `model` while running.
    pub fn new(
        pages: usize,
        page_size: usize,
        seed: u64,
        model: DirtyModel,
        rate: f64,
    ) -> SyntheticGuest {
        let zipf_cdf = match model {
            DirtyModel::Zipf { s } => {
                let mut acc = 0.0;
                (0..pages)
                    .map(|k| {
                        acc += 1.0 / ((k + 1) as f64).powf(s.max(1e-6));
                        acc
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        let mut g = SyntheticGuest::zeroed(pages, page_size, seed, model, rate, zipf_cdf);
        for i in 0..pages {
            // About a quarter of the pages start zero (never written).
            if page_hash(seed, i as u64, 0) % 4 != 0 {
                g.fill(i);
            }
        }
        g.device = format!("synthetic guest seed {seed}").into_bytes();
        g
    }

    // All pages zero, all dirty, running.
    fn zeroed(
        pages: usize,
        page_size: usize,
        seed: u64,
        model: DirtyModel,
        rate: f64,
        zipf_cdf: Vec<f64>,
    ) -> SyntheticGuest {
        let mut g = SyntheticGuest {
            page_size,
            seed,
            memory: vec![0; pages * page_size],
            version: vec![0; pages],
            dirty: vec![u64::MAX; pages.div_ceil(64)],
            model,
            rate: rate.max(0.0),
            throttle: 1.0,
            running: true,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6d69_6772_6174_6521),
            carry: 0.0,
            zipf_cdf,
            device: Vec::new(),
            image: None,
        };
        // Clear the bits past the last page.
        if pages % 64 != 0 {
            if let Some(last) = g.dirty.last_mut() {
                *last = (1u64 << (pages % 64)) - 1;
            }
        }
        g
    }

    /// The same guest booted from `image`: its non-zero pages that the
    /// image covers start with the image's content.
    pub fn with_image(mut self, image: Image) -> SyntheticGuest {
        self.image = Some(image);
        for i in 0..self.pages() {
            if self.version[i] == 0 && page_hash(self.seed, i as u64, 0) % 4 != 0 {
                self.fill(i);
            }
        }
        self
    }

    /// The image it booted from.
    pub fn image(&self) -> Option<Image> {
        self.image
    }

    /// A blank guest of the same shape, to receive a migration.
    pub fn blank(pages: usize, page_size: usize) -> SyntheticGuest {
        // Zeroed memory, not a seeded image wiped: filling it would cost
        // the destination tens of milliseconds per 64 MiB before it can
        // accept (time the source would count as RTT).
        let mut g =
            SyntheticGuest::zeroed(pages, page_size, 0, DirtyModel::Uniform, 0.0, Vec::new());
        g.running = false;
        g
    }

    /// The dirtying rate in pages per second, throttle included.
    pub fn effective_rate(&self) -> f64 {
        self.rate * self.throttle
    }

    /// The whole memory.
    pub fn memory(&self) -> &[u8] {
        &self.memory
    }

    /// Runs for `dt` of guest time: writes pages if running.
    pub fn run(&mut self, dt: Duration) {
        if !self.running || self.pages() == 0 {
            return;
        }
        self.carry += self.effective_rate() * dt.as_secs_f64();
        let n = self.carry.floor();
        self.carry -= n;
        for _ in 0..n as u64 {
            let i = self.pick();
            self.version[i] = self.version[i].wrapping_add(1);
            self.fill(i);
            self.dirty[i / 64] |= 1 << (i % 64);
        }
    }

    fn pick(&mut self) -> usize {
        let pages = self.pages();
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        match self.model {
            DirtyModel::Uniform => (u * pages as f64) as usize % pages,
            DirtyModel::HotSet { pages: hot, share } => {
                let hot = hot.clamp(1, pages);
                let v = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                if u < share || hot == pages {
                    (v * hot as f64) as usize % hot
                } else {
                    hot + (v * (pages - hot) as f64) as usize % (pages - hot)
                }
            }
            DirtyModel::Zipf { .. } => {
                let total = *self.zipf_cdf.last().unwrap_or(&1.0);
                let target = u * total;
                self.zipf_cdf
                    .partition_point(|&c| c < target)
                    .min(pages - 1)
            }
        }
    }

    // Page i's content for its current version.
    fn fill(&mut self, i: usize) {
        let (seed, v) = (self.seed, self.version[i]);
        let ps = self.page_size;
        let page = &mut self.memory[i * ps..(i + 1) * ps];
        // Most writes touch a few words of a page (so deltas pay), the
        // first write of a page fills it.
        if v == 0 {
            match self.image.filter(|m| m.covers(i)) {
                Some(m) => initial_page(m.seed, i, page),
                None => initial_page(seed, i, page),
            }
        } else {
            let mut x = page_hash(seed, i as u64, u64::from(v)) | 1;
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x as usize) % ps;
                page[at] = (x >> 32) as u8;
            }
        }
    }
}

// A page's first content: a xorshift stream from the seed and the page.
fn initial_page(seed: u64, i: usize, page: &mut [u8]) {
    let mut x = page_hash(seed, i as u64, 0) | 1;
    for chunk in page.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn page_hash(seed: u64, page: u64, version: u64) -> u64 {
    let mut x = seed
        ^ page.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ version.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

impl Guest for SyntheticGuest {
    fn page_size(&self) -> usize {
        self.page_size
    }
    fn pages(&self) -> usize {
        self.version.len()
    }
    fn read_page(&self, i: usize, out: &mut [u8]) {
        let ps = self.page_size;
        out[..ps].copy_from_slice(&self.memory[i * ps..(i + 1) * ps]);
    }
    fn write_page(&mut self, i: usize, data: &[u8]) {
        let ps = self.page_size;
        self.memory[i * ps..(i + 1) * ps].copy_from_slice(&data[..ps]);
    }
    fn take_dirty(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        for (w, bits) in self.dirty.iter_mut().enumerate() {
            let mut b = std::mem::take(bits);
            while b != 0 {
                let t = b.trailing_zeros() as usize;
                out.push(w * 64 + t);
                b &= b - 1;
            }
        }
        out
    }
    fn dirty_count(&self) -> usize {
        self.dirty.iter().map(|w| w.count_ones() as usize).sum()
    }
    fn set_throttle(&mut self, factor: f64) {
        self.throttle = factor.clamp(0.0, 1.0);
    }
    fn pause(&mut self) {
        self.running = false;
    }
    fn resume(&mut self) {
        self.running = true;
    }
    fn is_running(&self) -> bool {
        self.running
    }
    fn device_state(&self) -> Vec<u8> {
        self.device.clone()
    }
    fn set_device_state(&mut self, state: &[u8]) {
        self.device = state.to_vec();
    }
    fn content_index(&self) -> Option<ContentIndex> {
        self.image.map(|m| m.manifest(self.pages(), self.page_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_are_seeded_and_dirtying_is_tracked() {
        let mut a = SyntheticGuest::new(1000, 4096, 7, DirtyModel::Uniform, 10_000.0);
        let b = SyntheticGuest::new(1000, 4096, 7, DirtyModel::Uniform, 10_000.0);
        assert_eq!(a.memory(), b.memory());
        assert_eq!(a.take_dirty().len(), 1000, "first: everything");
        assert!(a.take_dirty().is_empty());
        a.run(Duration::from_millis(10)); // 100 writes
        let d = a.take_dirty();
        assert!((60..=100).contains(&d.len()), "{}", d.len());
        assert_ne!(a.memory(), b.memory());
        a.pause();
        a.run(Duration::from_secs(1));
        assert!(a.take_dirty().is_empty(), "a paused guest writes nothing");
        let zeros = (0..1000)
            .filter(|&i| a.memory()[i * 4096..(i + 1) * 4096].iter().all(|&x| x == 0))
            .count();
        assert!((150..350).contains(&zeros), "{zeros} zero pages");
    }

    #[test]
    fn guests_booted_from_one_image_share_its_pages_until_they_write_them() {
        let image = Image {
            seed: 5,
            share: 0.5,
        };
        let mut a =
            SyntheticGuest::new(2000, 256, 1, DirtyModel::Uniform, 1000.0).with_image(image);
        let b = SyntheticGuest::new(2000, 256, 2, DirtyModel::Uniform, 0.0).with_image(image);
        let index = a.content_index().unwrap();
        let page = |g: &SyntheticGuest, i: usize| g.memory()[i * 256..(i + 1) * 256].to_vec();
        let nonzero = |g: &SyntheticGuest, i: usize| page(g, i).iter().any(|&x| x != 0);
        let shared: Vec<usize> = (0..2000)
            .filter(|&i| image.covers(i) && nonzero(&a, i) && nonzero(&b, i))
            .collect();
        assert!((300..700).contains(&shared.len()), "{}", shared.len());
        for &i in &shared {
            assert_eq!(page(&a, i), page(&b, i));
            assert!(index.contains(&xia_stack::xid::sha1(&page(&a, i))));
        }
        // Pages the image does not cover are the guest's own.
        let own = (0..2000)
            .find(|&i| !image.covers(i) && nonzero(&a, i))
            .unwrap();
        assert!(!index.contains(&xia_stack::xid::sha1(&page(&a, own))));
        // A write makes a page the guest's own.
        a.take_dirty();
        a.run(Duration::from_secs(1));
        let written = a.take_dirty();
        let i = *written.iter().find(|i| shared.contains(i)).unwrap();
        assert!(!index.contains(&xia_stack::xid::sha1(&page(&a, i))));
    }

    #[test]
    fn a_hot_set_takes_its_share_and_the_throttle_slows_writing() {
        let mut g = SyntheticGuest::new(
            10_000,
            64,
            1,
            DirtyModel::HotSet {
                pages: 100,
                share: 0.9,
            },
            100_000.0,
        );
        g.take_dirty();
        g.run(Duration::from_millis(10)); // 1000 writes
        let d = g.take_dirty();
        let hot = d.iter().filter(|&&i| i < 100).count();
        assert!(
            hot >= 90,
            "the hot set is small, so its pages repeat: {hot}"
        );
        assert!(d.len() < 300, "{}", d.len());
        g.set_throttle(0.1);
        g.run(Duration::from_millis(10)); // 100 writes
        assert!(g.take_dirty().len() <= 100);
        let mut z = SyntheticGuest::new(10_000, 64, 1, DirtyModel::Zipf { s: 1.2 }, 100_000.0);
        z.take_dirty();
        z.run(Duration::from_millis(10));
        let d = z.take_dirty();
        assert!(d.contains(&0) && d.len() < 1000, "{}", d.len());
    }
}
