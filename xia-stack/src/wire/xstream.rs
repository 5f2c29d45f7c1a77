//! The XSTREAM transport header (`nxt` 3), xia-core v2's stream header:
//!
//! ```text
//! 0      1      2         4         8         12        16
//! +------+------+---------+---------+---------+---------+-----------+
//! | nxt  | off  |  flags  |   seq   |   ack   |   win   | options … |
//! +------+------+---------+---------+---------+---------+-----------+
//! ```
//!
//! `off` is the header length in 4-byte words (options included, at most
//! 16 + 956 bytes). Flags: FIN 0x1, SYN 0x2, RST 0x4, PSH 0x8, ACK 0x10,
//! ECE 0x40, CWR 0x80. The window is 32 bits wide.
//!
//! Options follow TCP's kind/length layout **with one difference xia-core
//! makes**: the length byte counts 4-byte words, not bytes, and every
//! option is padded to a multiple of 4 bytes (so MIGRATE options can be
//! longer than 255 bytes). Kinds: EOL 0, NOP 1 (a single byte), MSS 2
//! (4 bytes), window scale 3 (4 bytes: kind, len, 0, shift), SACK-permitted
//! 4 (4 bytes), SACK 5 (kind, len, 2 zero bytes, then 8-byte left/right
//! blocks), timestamp 8 (12 bytes: kind, len, 2 zero bytes, value, echo),
//! MIGRATE 50 and MIGRATEACK 51 (opaque bodies, zero-padded).
//!
//! xia-core has SACK compiled out; xia-rs uses the layout its disabled
//! parser expects (a 4-byte option header, then 8-byte blocks).

use std::fmt;

/// Fixed header length.
pub const HEADER_LEN: usize = 16;
/// Most option bytes (xia-core's `XTCP_OPTIONS_MAX`).
pub const MAX_OPTIONS_LEN: usize = 956;
/// Most SACK blocks in one option.
pub const MAX_SACK_BLOCKS: usize = 4;

mod field {
    pub type Field = core::ops::Range<usize>;
    pub const NXT: usize = 0;
    pub const OFF: usize = 1;
    pub const FLAGS: Field = 2..4;
    pub const SEQ: Field = 4..8;
    pub const ACK: Field = 8..12;
    pub const WIN: Field = 12..16;
}

/// Header flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u16);

impl Flags {
    /// No more data from the sender.
    pub const FIN: Flags = Flags(0x01);
    /// Synchronise sequence numbers.
    pub const SYN: Flags = Flags(0x02);
    /// Reset the connection.
    pub const RST: Flags = Flags(0x04);
    /// Push.
    pub const PSH: Flags = Flags(0x08);
    /// The ack field is significant.
    pub const ACK: Flags = Flags(0x10);
    /// ECN echo.
    pub const ECE: Flags = Flags(0x40);
    /// Congestion window reduced.
    pub const CWR: Flags = Flags(0x80);

    /// Whether all of `other`'s flags are set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, o: Flags) -> Flags {
        Flags(self.0 | o.0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Flags::SYN, "SYN"),
            (Flags::ACK, "ACK"),
            (Flags::FIN, "FIN"),
            (Flags::RST, "RST"),
            (Flags::PSH, "PSH"),
            (Flags::ECE, "ECE"),
            (Flags::CWR, "CWR"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(fl, _)| self.contains(*fl))
            .map(|(_, n)| *n)
            .collect();
        write!(f, "[{}]", set.join(","))
    }
}

/// One header option.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum XstreamOption {
    /// Maximum segment size (SYN only).
    Mss(u16),
    /// Window scale shift (SYN only).
    WindowScale(u8),
    /// SACK may be used (SYN only).
    SackPermitted,
    /// Selective acknowledgement blocks `[left, right)`.
    Sack(Vec<(u32, u32)>),
    /// Timestamps: our clock, and the peer's last value echoed.
    Timestamp {
        /// TSval.
        value: u32,
        /// TSecr.
        echo: u32,
    },
    /// A MIGRATE message (body with its zero padding).
    Migrate(Vec<u8>),
    /// A MIGRATEACK message (body with its zero padding).
    MigrateAck(Vec<u8>),
    /// An option this crate does not interpret (kind and body).
    Unknown(u8, Vec<u8>),
}

const EOL: u8 = 0;
const NOP: u8 = 1;
const MSS: u8 = 2;
const WSCALE: u8 = 3;
const SACK_PERMITTED: u8 = 4;
const SACK: u8 = 5;
const TIMESTAMP: u8 = 8;
const MIGRATE: u8 = 50;
const MIGRATE_ACK: u8 = 51;

impl XstreamOption {
    /// Bytes on the wire (a multiple of 4).
    pub fn wire_len(&self) -> usize {
        match self {
            XstreamOption::Mss(_)
            | XstreamOption::WindowScale(_)
            | XstreamOption::SackPermitted => 4,
            XstreamOption::Sack(blocks) => 4 + 8 * blocks.len(),
            XstreamOption::Timestamp { .. } => 12,
            XstreamOption::Migrate(b)
            | XstreamOption::MigrateAck(b)
            | XstreamOption::Unknown(_, b) => (2 + b.len()).div_ceil(4) * 4,
        }
    }

    fn emit(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let words = (self.wire_len() / 4) as u8;
        match self {
            XstreamOption::Mss(m) => {
                out.extend_from_slice(&[MSS, words]);
                out.extend_from_slice(&m.to_be_bytes());
            }
            XstreamOption::WindowScale(s) => out.extend_from_slice(&[WSCALE, words, 0, *s]),
            XstreamOption::SackPermitted => out.extend_from_slice(&[SACK_PERMITTED, words, 0, 0]),
            XstreamOption::Sack(blocks) => {
                out.extend_from_slice(&[SACK, words, 0, 0]);
                for (l, r) in blocks {
                    out.extend_from_slice(&l.to_be_bytes());
                    out.extend_from_slice(&r.to_be_bytes());
                }
            }
            XstreamOption::Timestamp { value, echo } => {
                out.extend_from_slice(&[TIMESTAMP, words, 0, 0]);
                out.extend_from_slice(&value.to_be_bytes());
                out.extend_from_slice(&echo.to_be_bytes());
            }
            XstreamOption::Migrate(b)
            | XstreamOption::MigrateAck(b)
            | XstreamOption::Unknown(_, b) => {
                let kind = match self {
                    XstreamOption::Migrate(_) => MIGRATE,
                    XstreamOption::MigrateAck(_) => MIGRATE_ACK,
                    XstreamOption::Unknown(k, _) => *k,
                    _ => unreachable!("matched above"),
                };
                out.extend_from_slice(&[kind, words]);
                out.extend_from_slice(b);
            }
        }
        out.resize(start + self.wire_len(), 0);
    }
}

/// Why bytes are not an XSTREAM segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XstreamError {
    /// Shorter than the header `off` announces.
    #[error("truncated XSTREAM header: {needed} bytes needed, {actual} present")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        actual: usize,
    },
    /// `off` below 4 words.
    #[error("XSTREAM header length {0} words is below the minimum of 4")]
    BadOffset(u8),
    /// An option runs past the header, or has a zero length.
    #[error("malformed option of kind {kind} at byte {at} of the options")]
    BadOption {
        /// Its kind.
        kind: u8,
        /// Where it starts.
        at: usize,
    },
    /// The options do not fit the header (emit).
    #[error("{0} bytes of options exceed the {MAX_OPTIONS_LEN}-byte limit")]
    OptionsTooLong(usize),
    /// A SACK option with too many blocks (emit).
    #[error("a SACK option carries at most {MAX_SACK_BLOCKS} blocks")]
    TooManySackBlocks,
}

/// A parsed XSTREAM segment.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct XstreamRepr<'a> {
    /// What the payload is (0).
    pub next_header: u8,
    /// Flags.
    pub flags: Flags,
    /// Sequence number of the first payload byte (or of the SYN/FIN).
    pub seq: u32,
    /// Next sequence number expected from the peer (with ACK).
    pub ack: u32,
    /// Receive window (to be scaled by the negotiated shift).
    pub window: u32,
    /// Options in order (NOP and EOL are not kept).
    pub options: Vec<XstreamOption>,
    /// The payload.
    pub payload: &'a [u8],
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl<'a> XstreamRepr<'a> {
    /// Parses a segment (an XIP payload). Known options with a wrong
    /// length are kept as [`XstreamOption::Unknown`], as TCP stacks skip
    /// them; an option that runs past the header is an error.
    pub fn parse(bytes: &'a [u8]) -> Result<XstreamRepr<'a>, XstreamError> {
        if bytes.len() < HEADER_LEN {
            return Err(XstreamError::Truncated {
                needed: HEADER_LEN,
                actual: bytes.len(),
            });
        }
        let off = bytes[field::OFF];
        if (off as usize) * 4 < HEADER_LEN {
            return Err(XstreamError::BadOffset(off));
        }
        let header = off as usize * 4;
        if bytes.len() < header {
            return Err(XstreamError::Truncated {
                needed: header,
                actual: bytes.len(),
            });
        }
        let opts = &bytes[HEADER_LEN..header];
        let mut options = Vec::new();
        let mut i = 0;
        while i < opts.len() {
            let kind = opts[i];
            match kind {
                EOL => break,
                NOP => {
                    i += 1;
                    continue;
                }
                _ => {}
            }
            let len = opts.get(i + 1).map_or(0, |w| *w as usize * 4);
            if len < 4 || i + len > opts.len() {
                return Err(XstreamError::BadOption { kind, at: i });
            }
            let body = &opts[i + 2..i + len];
            let opt = match (kind, len) {
                (MSS, 4) => XstreamOption::Mss(u16::from_be_bytes([body[0], body[1]])),
                (WSCALE, 4) => XstreamOption::WindowScale(body[1]),
                (SACK_PERMITTED, 4) => XstreamOption::SackPermitted,
                (SACK, l) if l > 4 && (l - 4) % 8 == 0 && (l - 4) / 8 <= MAX_SACK_BLOCKS => {
                    XstreamOption::Sack(
                        body[2..]
                            .chunks_exact(8)
                            .map(|b| (be32(&b[..4]), be32(&b[4..])))
                            .collect(),
                    )
                }
                (TIMESTAMP, 12) => XstreamOption::Timestamp {
                    value: be32(&body[2..6]),
                    echo: be32(&body[6..10]),
                },
                (MIGRATE, _) => XstreamOption::Migrate(body.to_vec()),
                (MIGRATE_ACK, _) => XstreamOption::MigrateAck(body.to_vec()),
                _ => XstreamOption::Unknown(kind, body.to_vec()),
            };
            options.push(opt);
            i += len;
        }
        let u16be =
            |r: core::ops::Range<usize>| u16::from_be_bytes([bytes[r.start], bytes[r.start + 1]]);
        Ok(XstreamRepr {
            next_header: bytes[field::NXT],
            flags: Flags(u16be(field::FLAGS)),
            seq: be32(&bytes[field::SEQ]),
            ack: be32(&bytes[field::ACK]),
            window: be32(&bytes[field::WIN]),
            options,
            payload: &bytes[header..],
        })
    }

    /// Header length with options.
    pub fn header_len(&self) -> usize {
        HEADER_LEN
            + self
                .options
                .iter()
                .map(XstreamOption::wire_len)
                .sum::<usize>()
    }

    /// The segment as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, XstreamError> {
        let opt_len = self.header_len() - HEADER_LEN;
        if opt_len > MAX_OPTIONS_LEN {
            return Err(XstreamError::OptionsTooLong(opt_len));
        }
        if self.options.iter().any(
            |o| matches!(o, XstreamOption::Sack(b) if b.is_empty() || b.len() > MAX_SACK_BLOCKS),
        ) {
            return Err(XstreamError::TooManySackBlocks);
        }
        let mut out = Vec::with_capacity(self.header_len() + self.payload.len());
        out.push(self.next_header);
        out.push((self.header_len() / 4) as u8);
        out.extend_from_slice(&self.flags.0.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.ack.to_be_bytes());
        out.extend_from_slice(&self.window.to_be_bytes());
        for o in &self.options {
            o.emit(&mut out);
        }
        out.extend_from_slice(self.payload);
        Ok(out)
    }
}

impl fmt::Display for XstreamRepr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "XSTREAM {:?} seq={} ack={} win={} len={}",
            self.flags,
            self.seq,
            self.ack,
            self.window,
            self.payload.len()
        )?;
        for o in &self.options {
            write!(f, " {o:?}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_syn_bytes_as_xia_core_writes_them() {
        let syn = XstreamRepr {
            next_header: 0,
            flags: Flags::SYN,
            seq: 1000,
            ack: 0,
            window: 65535,
            options: vec![
                XstreamOption::Mss(1400),
                XstreamOption::WindowScale(7),
                XstreamOption::Timestamp { value: 5, echo: 0 },
            ],
            payload: &[],
        };
        let b = syn.to_bytes().unwrap();
        assert_eq!(
            b,
            [
                0, 9, 0, 2, 0, 0, 3, 0xe8, 0, 0, 0, 0, 0, 0, 0xff, 0xff, // header, off = 36/4
                2, 1, 0x05, 0x78, // MSS, 1 word
                3, 1, 0, 7, // window scale
                8, 3, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, // timestamp, 3 words
            ]
        );
        assert_eq!(XstreamRepr::parse(&b).unwrap(), syn);
    }

    #[test]
    fn test_sack_migrate_and_payload_round_trip() {
        let seg = XstreamRepr {
            next_header: 0,
            flags: Flags::ACK | Flags::PSH,
            seq: 7,
            ack: 9,
            window: 1 << 20,
            options: vec![
                XstreamOption::Sack(vec![(100, 200), (300, 400)]),
                XstreamOption::Migrate(vec![1, 2, 3, 4, 5, 6]),
            ],
            payload: b"data",
        };
        let b = seg.to_bytes().unwrap();
        assert_eq!(b[1] as usize * 4, 16 + 20 + 8);
        assert_eq!(&b[16..18], &[5, 5]);
        assert_eq!(&b[36..38], &[50, 2]);
        assert_eq!(XstreamRepr::parse(&b).unwrap(), seg);
    }

    #[test]
    fn test_bad_segments() {
        assert!(matches!(
            XstreamRepr::parse(&[0; 10]),
            Err(XstreamError::Truncated { .. })
        ));
        let mut b = [0u8; 16];
        b[1] = 3;
        assert_eq!(XstreamRepr::parse(&b), Err(XstreamError::BadOffset(3)));
        let mut b = vec![0u8; 20];
        b[1] = 5;
        b[16] = 2;
        b[17] = 2; // 8 bytes claimed, 4 present
        assert_eq!(
            XstreamRepr::parse(&b),
            Err(XstreamError::BadOption { kind: 2, at: 0 })
        );
        b[17] = 0;
        assert_eq!(
            XstreamRepr::parse(&b),
            Err(XstreamError::BadOption { kind: 2, at: 0 })
        );
        // NOP then EOL then junk: fine.
        let mut b = vec![0u8; 20];
        b[1] = 5;
        b[16] = 1;
        b[17] = 0;
        b[18] = 77;
        assert_eq!(XstreamRepr::parse(&b).unwrap().options, vec![]);
    }
}
