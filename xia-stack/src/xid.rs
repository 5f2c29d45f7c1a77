//! XIDs and principal types: XIA's identifiers.
//!
//! An XID is a principal type (a 32-bit number on the wire) plus a 20-byte
//! identifier. The built-in types carry xia-core v2's numbers; researchers can
//! register their own types at run time by name and number, which is how XIA
//! grows new principals without a flag day.
//!
//! The text form is `TYPE:` followed by 40 hex digits. It is printed in
//! lowercase and read case-insensitively (`hid:3ACA…` is `HID:3aca…`). A 4ID
//! (`IP`) may also be written as a dotted quad, `IP:192.168.0.1`, which builds
//! the IPv4-header-shaped identifier xia-core uses. Types that have no name
//! print as `0x<hex>` (`0x40:…`) so that any XID read off the wire can be
//! printed and read back.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::RwLock;

use sha1::{Digest, Sha1};

/// Length of an XID's identifier in bytes (160 bits, a SHA-1 digest).
pub const ID_LEN: usize = 20;

/// Length of an XID on the wire: a big-endian `u32` type, then the identifier.
pub const XID_WIRE_LEN: usize = 4 + ID_LEN;

/// A principal type: what kind of thing an XID names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal(u32);

impl Principal {
    /// Undefined (xia-core's `CLICK_XIA_XID_TYPE_UNDEF`); never valid in a DAG.
    pub const UNDEFINED: Principal = Principal(0x00);
    /// Administrative domain: a network.
    pub const AD: Principal = Principal(0x10);
    /// Host.
    pub const HID: Principal = Principal(0x11);
    /// Content: SHA-1 of a chunk's bytes.
    pub const CID: Principal = Principal(0x12);
    /// Service.
    pub const SID: Principal = Principal(0x13);
    /// IPv4 (xia-core's "4ID"), for crossing IPv4 islands.
    pub const IP: Principal = Principal(0x14);
    /// Flow.
    pub const FID: Principal = Principal(0x30);
    /// Named content.
    pub const NCID: Principal = Principal(0x31);
    /// Immutable (in-network) content.
    pub const ICID: Principal = Principal(0x32);
    /// xia-core's dummy source type; reserved, never valid in a DAG.
    pub const DUMMY: Principal = Principal(0xff);

    const BUILTIN: [(&'static str, Principal); 8] = [
        ("AD", Principal::AD),
        ("HID", Principal::HID),
        ("CID", Principal::CID),
        ("SID", Principal::SID),
        ("IP", Principal::IP),
        ("FID", Principal::FID),
        ("NCID", Principal::NCID),
        ("ICID", Principal::ICID),
    ];

    /// The principal with this wire number, named or not.
    pub const fn from_u32(value: u32) -> Principal {
        Principal(value)
    }

    /// The wire number.
    pub const fn to_u32(self) -> u32 {
        self.0
    }

    /// The principal's name, if it is built in or registered.
    pub fn name(self) -> Option<&'static str> {
        if let Some((name, _)) = Self::BUILTIN.iter().find(|(_, p)| *p == self) {
            return Some(name);
        }
        registry_read()
            .iter()
            .find(|(_, v)| *v == self.0)
            .map(|(n, _)| *n)
    }

    /// Looks a principal up by name, case-insensitively (`hid` is `HID`).
    pub fn from_name(name: &str) -> Option<Principal> {
        if let Some((_, p)) = Self::BUILTIN
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            return Some(*p);
        }
        registry_read()
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| Principal(*v))
    }

    /// Whether this type is built in (xia-core v2 knows it).
    pub fn is_builtin(self) -> bool {
        Self::BUILTIN.iter().any(|(_, p)| *p == self)
    }

    /// Registers a user-defined principal type for this process.
    ///
    /// The name is 1 to 8 ASCII letters and digits starting with a letter
    /// (xia-core's limit); it is stored uppercase. Registering the same name
    /// with the same number again is allowed and returns the same principal.
    pub fn register(name: &str, value: u32) -> Result<Principal, RegisterError> {
        let valid_name = !name.is_empty()
            && name.len() <= 8
            && name.as_bytes()[0].is_ascii_alphabetic()
            && name.bytes().all(|b| b.is_ascii_alphanumeric());
        if !valid_name {
            return Err(RegisterError::BadName(name.to_string()));
        }
        if value == Self::UNDEFINED.0 || value == Self::DUMMY.0 {
            return Err(RegisterError::Reserved(value));
        }
        let upper = name.to_ascii_uppercase();
        if let Some((n, p)) = Self::BUILTIN
            .iter()
            .find(|(n, p)| n.eq_ignore_ascii_case(&upper) || p.0 == value)
        {
            return Err(RegisterError::Builtin {
                name: n.to_string(),
                value: p.0,
            });
        }
        let mut reg = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
        if let Some((n, v)) = reg.iter().find(|(n, v)| **n == upper || *v == value) {
            if **n == upper && *v == value {
                return Ok(Principal(value));
            }
            return Err(RegisterError::Taken {
                name: n.to_string(),
                value: *v,
            });
        }
        if reg.len() >= MAX_REGISTERED {
            return Err(RegisterError::Full);
        }
        // Names live for the whole process; the registry is bounded, so
        // leaking at most MAX_REGISTERED short strings is the simple way to
        // hand out `&'static str`.
        let name: &'static str = Box::leak(upper.into_boxed_str());
        reg.push((name, value));
        Ok(Principal(value))
    }
}

/// How many user-defined principal types a process may register.
pub const MAX_REGISTERED: usize = 64;

static REGISTRY: RwLock<Vec<(&'static str, u32)>> = RwLock::new(Vec::new());

fn registry_read() -> std::sync::RwLockReadGuard<'static, Vec<(&'static str, u32)>> {
    // The registry holds plain data; a panic elsewhere cannot leave it torn.
    REGISTRY.read().unwrap_or_else(|e| e.into_inner())
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "0x{:x}", self.0),
        }
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl FromStr for Principal {
    type Err = XidError;

    fn from_str(s: &str) -> Result<Self, XidError> {
        if let Some(p) = Principal::from_name(s) {
            return Ok(p);
        }
        let hex = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .filter(|h| !h.is_empty() && h.len() <= 8 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        match hex.and_then(|h| u32::from_str_radix(h, 16).ok()) {
            Some(v) if v != Principal::UNDEFINED.0 && v != Principal::DUMMY.0 => Ok(Principal(v)),
            _ => Err(XidError::UnknownType(s.to_string())),
        }
    }
}

/// Why a principal type could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The name is not 1–8 ASCII letters and digits starting with a letter.
    #[error("principal name {0:?} must be 1 to 8 ASCII letters or digits, starting with a letter")]
    BadName(String),
    /// 0x00 (undefined) and 0xff (xia-core's dummy source) are reserved.
    #[error("principal number {0:#x} is reserved")]
    Reserved(u32),
    /// The name or number belongs to a built-in type.
    #[error("{name} ({value:#x}) is a built-in principal type")]
    Builtin {
        /// The built-in type's name.
        name: String,
        /// The built-in type's number.
        value: u32,
    },
    /// The name or number is already registered to something else.
    #[error("principal type {name} ({value:#x}) is already registered")]
    Taken {
        /// The registered name.
        name: String,
        /// The registered number.
        value: u32,
    },
    /// [`MAX_REGISTERED`] types are registered already.
    #[error("no room for more principal types (at most {MAX_REGISTERED})")]
    Full,
}

/// Why a string is not an XID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XidError {
    /// No `:` between the type and the identifier.
    #[error("expected TYPE:ID, found no ':' in {0:?}")]
    MissingColon(String),
    /// The type is neither built in, registered, nor a `0x` number.
    #[error("unknown principal type {0:?}")]
    UnknownType(String),
    /// The identifier does not have 40 hex digits.
    #[error("the ID must be 40 hex digits, found {found} characters")]
    BadIdLength {
        /// How many characters the identifier had.
        found: usize,
    },
    /// A character of the identifier is not a hex digit.
    #[error("character {position} of the ID is {found:?}, not a hex digit")]
    BadHexDigit {
        /// Position in the identifier, from 0.
        position: usize,
        /// The offending character.
        found: char,
    },
    /// `IP:` followed by something with dots that is not a dotted quad.
    #[error("{0:?} is not a dotted-quad IPv4 address")]
    BadIpv4(String),
}

/// An XIA identifier: a principal type and 20 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Xid {
    principal: Principal,
    id: [u8; ID_LEN],
}

impl Xid {
    /// The broadcast HID, all ones.
    pub const BROADCAST_HID: Xid = Xid::new(Principal::HID, [0xff; ID_LEN]);

    /// An XID from its parts.
    pub const fn new(principal: Principal, id: [u8; ID_LEN]) -> Xid {
        Xid { principal, id }
    }

    /// The principal type.
    pub const fn principal(&self) -> Principal {
        self.principal
    }

    /// The 20-byte identifier.
    pub const fn id(&self) -> &[u8; ID_LEN] {
        &self.id
    }

    /// The same identifier under another principal type.
    pub const fn with_principal(self, principal: Principal) -> Xid {
        Xid::new(principal, self.id)
    }

    /// The CID of a chunk of content: SHA-1 of its bytes.
    pub fn cid_of(content: &[u8]) -> Xid {
        Xid::new(Principal::CID, sha1(content))
    }

    /// The 4ID for an IPv4 address: an identifier shaped like an IPv4
    /// header (version/IHL 0x45, TTL-ish bytes xia-core sets) carrying the
    /// address in its last four bytes.
    pub fn from_ipv4(addr: Ipv4Addr) -> Xid {
        let mut id = [0u8; ID_LEN];
        id[0] = 0x45;
        id[5] = 0x01;
        id[8] = 0xfa;
        id[9] = 0xfa;
        id[16..20].copy_from_slice(&addr.octets());
        Xid::new(Principal::IP, id)
    }

    /// The IPv4 address of a 4ID built by [`Xid::from_ipv4`], if this is one.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        let shaped = Xid::from_ipv4(Ipv4Addr::UNSPECIFIED);
        let same_shape = self.principal == Principal::IP && self.id[..16] == shaped.id[..16];
        same_shape.then(|| Ipv4Addr::new(self.id[16], self.id[17], self.id[18], self.id[19]))
    }

    /// The wire form: big-endian type, then the identifier.
    pub fn to_wire(&self) -> [u8; XID_WIRE_LEN] {
        let mut out = [0u8; XID_WIRE_LEN];
        out[..4].copy_from_slice(&self.principal.0.to_be_bytes());
        out[4..].copy_from_slice(&self.id);
        out
    }

    /// Reads the wire form. Any type number is accepted here; whether the
    /// type is known is the forwarding engine's business.
    pub fn from_wire(bytes: &[u8; XID_WIRE_LEN]) -> Xid {
        let mut ty = [0u8; 4];
        ty.copy_from_slice(&bytes[..4]);
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&bytes[4..]);
        Xid::new(Principal(u32::from_be_bytes(ty)), id)
    }

    /// The identifier as 40 lowercase hex digits.
    pub fn id_hex(&self) -> String {
        hex_lower(&self.id)
    }
}

/// SHA-1 of some bytes: how every self-certifying identifier is made.
pub fn sha1(bytes: &[u8]) -> [u8; ID_LEN] {
    Sha1::digest(bytes).into()
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// Decodes hex digits into `out` (the caller checks that `text` has
/// exactly `2 * out.len()` ASCII characters); `Err(i)` names the first
/// character that is not a hex digit.
pub(crate) fn decode_hex(text: &[u8], out: &mut [u8]) -> Result<(), usize> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    for (i, slot) in out.iter_mut().enumerate() {
        let hi = nibble(text[2 * i]).ok_or(2 * i)?;
        let lo = nibble(text[2 * i + 1]).ok_or(2 * i + 1)?;
        *slot = hi << 4 | lo;
    }
    Ok(())
}

impl FromStr for Xid {
    type Err = XidError;

    fn from_str(s: &str) -> Result<Self, XidError> {
        let (ty, id_text) = s
            .split_once(':')
            .ok_or_else(|| XidError::MissingColon(s.to_string()))?;
        let principal: Principal = ty.parse()?;
        if principal == Principal::IP && id_text.contains('.') {
            let addr: Ipv4Addr = id_text
                .parse()
                .map_err(|_| XidError::BadIpv4(id_text.to_string()))?;
            return Ok(Xid::from_ipv4(addr));
        }
        let bad_digit = |position: usize| {
            let found = id_text.chars().nth(position).unwrap_or('?');
            XidError::BadHexDigit { position, found }
        };
        // A non-ASCII character is reported as a bad digit, by character
        // position, before the length: its byte length would mislead.
        if let Some(position) = id_text.chars().position(|c| !c.is_ascii()) {
            return Err(bad_digit(position));
        }
        if id_text.len() != 2 * ID_LEN {
            return Err(XidError::BadIdLength {
                found: id_text.len(),
            });
        }
        let mut id = [0u8; ID_LEN];
        decode_hex(id_text.as_bytes(), &mut id).map_err(bad_digit)?;
        Ok(Xid::new(principal, id))
    }
}

/// Compact: the type number and the 20 bytes.
impl serde::Serialize for Principal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Principal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Principal, D::Error> {
        <u32 as serde::Deserialize>::deserialize(d).map(Principal)
    }
}

/// Compact: the type number, then the 20-byte identifier.
impl serde::Serialize for Xid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&(self.principal, self.id), s)
    }
}

impl<'de> serde::Deserialize<'de> for Xid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Xid, D::Error> {
        let (principal, id) = <(Principal, [u8; ID_LEN]) as serde::Deserialize>::deserialize(d)?;
        Ok(Xid::new(principal, id))
    }
}

impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.principal, hex_lower(&self.id))
    }
}

impl fmt::Debug for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "AD:0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn text_round_trip_lowercase() {
        let x: Xid = "hid:0123456789ABCDEF0123456789abcdef01234567"
            .parse()
            .unwrap();
        assert_eq!(x.principal(), Principal::HID);
        assert_eq!(
            x.to_string(),
            "HID:0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(A.parse::<Xid>().unwrap().to_string(), A);
    }

    #[test]
    fn builtin_numbers_match_xia_core_v2() {
        let pairs = [
            ("AD", 0x10),
            ("HID", 0x11),
            ("CID", 0x12),
            ("SID", 0x13),
            ("IP", 0x14),
            ("FID", 0x30),
            ("NCID", 0x31),
            ("ICID", 0x32),
        ];
        for (name, value) in pairs {
            assert_eq!(Principal::from_name(name).unwrap().to_u32(), value);
            assert_eq!(Principal::from_u32(value).name(), Some(name));
        }
    }

    #[test]
    fn ipv4_layout() {
        let x: Xid = "IP:192.168.0.1".parse().unwrap();
        assert_eq!(x.to_string(), "IP:4500000000010000fafa000000000000c0a80001");
        assert_eq!(x.ipv4(), Some(Ipv4Addr::new(192, 168, 0, 1)));
        assert_eq!(x.to_wire()[..4], [0, 0, 0, 0x14]);
        assert!("HID:0123456789abcdef0123456789abcdef01234567"
            .parse::<Xid>()
            .unwrap()
            .ipv4()
            .is_none());
    }

    #[test]
    fn strict_errors() {
        let e = |s: &str| s.parse::<Xid>().unwrap_err();
        assert_eq!(e("AD0123"), XidError::MissingColon("AD0123".into()));
        assert_eq!(e("XX:00"), XidError::UnknownType("XX".into()));
        assert_eq!(e("AD:0x23"), XidError::BadIdLength { found: 4 });
        assert_eq!(
            e("AD:0x23456789abcdef0123456789abcdef01234567"),
            XidError::BadHexDigit {
                position: 1,
                found: 'x'
            }
        );
        assert_eq!(e(&format!("{A}:junk")), XidError::BadIdLength { found: 45 });
        assert_eq!(e("IP:1.2.3"), XidError::BadIpv4("1.2.3".into()));
        assert_eq!(e("IP:256.2.3.4"), XidError::BadIpv4("256.2.3.4".into()));
        assert_eq!(
            e("AD:0123456789abcdef0123456789abcdef0123456é"),
            XidError::BadHexDigit {
                position: 39,
                found: 'é'
            }
        );
        assert_eq!(e("0xff:00"), XidError::UnknownType("0xff".into()));
        assert_eq!(e("0x+10:00"), XidError::UnknownType("0x+10".into()));
    }

    #[test]
    fn unnamed_types_print_as_numbers_and_read_back() {
        let x = Xid::new(Principal::from_u32(0x1234_5678), [7; ID_LEN]);
        let text = x.to_string();
        assert!(text.starts_with("0x12345678:0707"));
        assert_eq!(text.parse::<Xid>().unwrap(), x);
    }

    #[test]
    fn register_user_types() {
        let p = Principal::register("geo", 0x7001).unwrap();
        assert_eq!(p.name(), Some("GEO"));
        assert_eq!(Principal::register("GEO", 0x7001), Ok(p));
        assert!(matches!(
            Principal::register("GEO", 0x7002),
            Err(RegisterError::Taken { .. })
        ));
        assert!(matches!(
            Principal::register("hid", 0x7003),
            Err(RegisterError::Builtin { .. })
        ));
        assert!(matches!(
            Principal::register("1abc", 0x7004),
            Err(RegisterError::BadName(_))
        ));
        assert_eq!(
            Principal::register("ZERO", 0),
            Err(RegisterError::Reserved(0))
        );
        let x: Xid = "geo:0123456789abcdef0123456789abcdef01234567"
            .parse()
            .unwrap();
        assert_eq!(x.principal(), p);
    }

    #[test]
    fn cid_is_sha1_of_content() {
        // SHA-1("abc") from FIPS 180-1.
        assert_eq!(
            Xid::cid_of(b"abc").to_string(),
            "CID:a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
