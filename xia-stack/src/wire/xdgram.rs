//! The XDGRAM transport header (`nxt` 2), xia-core v2's datagram header:
//!
//! ```text
//! 0      1      2        4
//! +------+------+--------+----------
//! | nxt  | off  |  pad   | payload …
//! +------+------+--------+----------
//! ```
//!
//! `off` is the header length in 4-byte words (1 here); `nxt` is what the
//! payload is (0, data). Datagram sockets are told apart by the SIDs that
//! are the intents of the XIP destination and source DAGs, not by ports.

use super::xip::NextHeader;

/// Header length in bytes.
pub const HEADER_LEN: usize = 4;

/// Why bytes are not an XDGRAM segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XdgramError {
    /// Shorter than the header (or than `off` says).
    #[error("truncated XDGRAM header: {needed} bytes needed, {actual} present")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        actual: usize,
    },
    /// `off` is smaller than the fixed header.
    #[error("XDGRAM header length {0} words is below the minimum of 1")]
    BadOffset(u8),
}

/// A parsed XDGRAM segment: what follows it and the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdgramRepr<'a> {
    /// The payload's type.
    pub next_header: NextHeader,
    /// The payload.
    pub payload: &'a [u8],
}

impl<'a> XdgramRepr<'a> {
    /// Parses a segment (the XIP payload).
    pub fn parse(bytes: &'a [u8]) -> Result<XdgramRepr<'a>, XdgramError> {
        if bytes.len() < HEADER_LEN {
            return Err(XdgramError::Truncated {
                needed: HEADER_LEN,
                actual: bytes.len(),
            });
        }
        let off = bytes[1];
        if off == 0 {
            return Err(XdgramError::BadOffset(off));
        }
        let header = off as usize * 4;
        if bytes.len() < header {
            return Err(XdgramError::Truncated {
                needed: header,
                actual: bytes.len(),
            });
        }
        Ok(XdgramRepr {
            next_header: bytes[0].into(),
            payload: &bytes[header..],
        })
    }

    /// The segment as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.payload.len());
        v.extend_from_slice(&[self.next_header.into(), 1, 0, 0]);
        v.extend_from_slice(self.payload);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_emit() {
        let r = XdgramRepr {
            next_header: NextHeader::Data,
            payload: b"hi",
        };
        let b = r.to_bytes();
        assert_eq!(b, [0, 1, 0, 0, b'h', b'i']);
        assert_eq!(XdgramRepr::parse(&b).unwrap(), r);
        assert_eq!(
            XdgramRepr::parse(&[0, 0, 0, 0]),
            Err(XdgramError::BadOffset(0))
        );
        assert_eq!(
            XdgramRepr::parse(&[0, 2, 0, 0, 1]),
            Err(XdgramError::Truncated {
                needed: 8,
                actual: 5
            })
        );
    }
}
