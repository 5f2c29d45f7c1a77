//! XHCP: how hosts learn their network.
//!
//! Routers beacon on every port, at a fixed interval, a datagram to the
//! broadcast HID's XHCP service (`RE HID:ff…ff SID:1110…1111`) carrying
//! their AD, their own HID (the gateway to use) and the name server's DAG.
//! A host that hears a beacon for a new AD on an interface moves that
//! interface to it — its HID and SIDs stay, its DAG changes — and raises a
//! "network changed" event, which migration and handoff build on.
//!
//! Beacon body (after the XDGRAM header), all big-endian:
//!
//! ```text
//! version u8 (1) | AD xid (24 B) | gateway HID xid (24 B) | n u8 | name server DAG (n × 28 B, n may be 0)
//! ```

use crate::dag::Dag;
use crate::wire::dag::NODE_LEN;
use crate::wire::xdgram::XdgramRepr;
use crate::wire::xip::{NextHeader, XipRepr};
use crate::xid::{Principal, Xid, XID_WIRE_LEN};

/// The XHCP service's well-known SID (xia-core's).
pub const XHCP_SID: Xid = Xid::new(
    Principal::SID,
    [
        0x11, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11, 0x11,
    ],
);

const VERSION: u8 = 1;

/// What a beacon says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Beacon {
    /// The AD the link is in.
    pub ad: Xid,
    /// The router to use as gateway.
    pub gateway: Xid,
    /// Where the name server is, if the network has one.
    pub name_server: Option<Dag>,
}

/// Why bytes are not a beacon.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeaconError {
    /// Too short for its fields.
    #[error("truncated XHCP beacon")]
    Truncated,
    /// Another version.
    #[error("XHCP beacon version {0} is not 1")]
    Version(u8),
    /// The AD or gateway is not of the right type.
    #[error("XHCP beacon names {0}, which is not of the right type")]
    WrongType(Xid),
    /// The name server DAG is malformed.
    #[error("XHCP beacon's name server DAG is malformed")]
    BadDag,
    /// Bytes after the last field.
    #[error("trailing bytes after the XHCP beacon")]
    Trailing,
}

impl Beacon {
    /// The beacon body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend_from_slice(&self.ad.to_wire());
        out.extend_from_slice(&self.gateway.to_wire());
        match &self.name_server {
            Some(d) => {
                out.push(d.len() as u8);
                out.extend_from_slice(&d.to_wire());
            }
            None => out.push(0),
        }
        out
    }

    /// Reads a beacon body.
    pub fn parse(b: &[u8]) -> Result<Beacon, BeaconError> {
        let fixed = 1 + 2 * XID_WIRE_LEN + 1;
        if b.len() < fixed {
            return Err(BeaconError::Truncated);
        }
        if b[0] != VERSION {
            return Err(BeaconError::Version(b[0]));
        }
        let xid_at =
            |i: usize| Xid::from_wire(b[i..i + XID_WIRE_LEN].try_into().expect("24 bytes"));
        let ad = xid_at(1);
        let gateway = xid_at(1 + XID_WIRE_LEN);
        if ad.principal() != Principal::AD {
            return Err(BeaconError::WrongType(ad));
        }
        if gateway.principal() != Principal::HID {
            return Err(BeaconError::WrongType(gateway));
        }
        let n = b[fixed - 1] as usize;
        let rest = &b[fixed..];
        if rest.len() < n * NODE_LEN {
            return Err(BeaconError::Truncated);
        }
        if rest.len() > n * NODE_LEN {
            return Err(BeaconError::Trailing);
        }
        let name_server = match n {
            0 => None,
            _ => Some(Dag::parse_wire(rest).map_err(|_| BeaconError::BadDag)?.0),
        };
        Ok(Beacon {
            ad,
            gateway,
            name_server,
        })
    }

    /// The whole XIP packet a router sends: to the broadcast HID's XHCP
    /// service, from the router's `AD HID`.
    pub fn packet(&self) -> Vec<u8> {
        let dst = Dag::path(&[Xid::BROADCAST_HID, XHCP_SID]).expect("two nodes");
        let src = Dag::path(&[self.ad, self.gateway]).expect("two nodes");
        let seg = XdgramRepr {
            next_header: NextHeader::Data,
            payload: &self.to_bytes(),
        }
        .to_bytes();
        // Hop limit 1: a beacon is for the link it is sent on.
        let mut repr = XipRepr::new(dst, src, NextHeader::Xdgram, 0);
        repr.hop_limit = 1;
        repr.to_bytes(&seg).expect("a beacon is small")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beacon(ns: bool) -> Beacon {
        Beacon {
            ad: Xid::new(Principal::AD, [1; 20]),
            gateway: Xid::new(Principal::HID, [2; 20]),
            name_server: ns.then(|| {
                Dag::path(&[
                    Xid::new(Principal::AD, [1; 20]),
                    crate::naming::NAME_SERVER_SID,
                ])
                .unwrap()
            }),
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        for ns in [false, true] {
            let b = beacon(ns);
            assert_eq!(Beacon::parse(&b.to_bytes()), Ok(b));
        }
        let bytes = beacon(true).to_bytes();
        for cut in 0..bytes.len() {
            assert!(Beacon::parse(&bytes[..cut]).is_err());
        }
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(Beacon::parse(&v2), Err(BeaconError::Version(2)));
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(Beacon::parse(&extra), Err(BeaconError::Trailing));
        assert_eq!(
            XHCP_SID.to_string(),
            "SID:1110000000000000000000000000000000001111"
        );
    }
}

const REGISTER_DOMAIN: &[u8] = b"xia-rs xhcp host registration v1";

/// A host's registration with its gateway: "HID h is attached here", signed
/// by h's key so no one else can claim it.
///
/// ```text
/// 'R' | HID xid (24 B) | AD xid (24 B) | public key (32 B) | signature (64 B)
/// ```
///
/// The signature covers the HID and the AD; it does not stop a replay of
/// the same registration on another link of the same AD (a nonce from the
/// beacon would; not done yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The host.
    pub hid: Xid,
    /// The AD it joins.
    pub ad: Xid,
    /// Its public key.
    pub key: crate::identity::PublicKey,
    /// Its signature over the HID and AD.
    pub signature: crate::identity::Signature,
}

impl Registration {
    fn message(hid: &Xid, ad: &Xid) -> Vec<u8> {
        let mut m = REGISTER_DOMAIN.to_vec();
        m.extend_from_slice(&hid.to_wire());
        m.extend_from_slice(&ad.to_wire());
        m
    }

    /// Signs a registration of `identity`'s HID in `ad`.
    pub fn sign(identity: &crate::identity::Identity, ad: Xid) -> Registration {
        let hid = identity.xid().with_principal(Principal::HID);
        Registration {
            hid,
            ad,
            key: identity.public_key(),
            signature: identity.sign(&Registration::message(&hid, &ad)),
        }
    }

    /// Checks the key certifies the HID and the signature.
    pub fn verify(&self) -> bool {
        self.key
            .verify_for(
                &self.hid,
                &Registration::message(&self.hid, &self.ad),
                &self.signature,
            )
            .is_ok()
    }

    /// The message body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![b'R'];
        out.extend_from_slice(&self.hid.to_wire());
        out.extend_from_slice(&self.ad.to_wire());
        out.extend_from_slice(&self.key.to_bytes());
        out.extend_from_slice(&self.signature.to_bytes());
        out
    }

    /// Reads a registration (not yet verified).
    pub fn parse(b: &[u8]) -> Option<Registration> {
        if b.len() != 1 + 2 * XID_WIRE_LEN + 32 + 64 || b[0] != b'R' {
            return None;
        }
        let hid = Xid::from_wire(b[1..25].try_into().ok()?);
        let ad = Xid::from_wire(b[25..49].try_into().ok()?);
        let key = crate::identity::PublicKey::from_bytes(b[49..81].try_into().ok()?)?;
        let sig: [u8; 64] = b[81..145].try_into().ok()?;
        Some(Registration {
            hid,
            ad,
            key,
            signature: crate::identity::Signature::from_bytes(&sig),
        })
    }

    /// The XIP packet to the gateway's XHCP service.
    pub fn packet(&self, gateway: Xid, from: Dag) -> Vec<u8> {
        let dst = Dag::path(&[self.ad, gateway, XHCP_SID]).expect("three nodes");
        let seg = XdgramRepr {
            next_header: NextHeader::Data,
            payload: &self.to_bytes(),
        }
        .to_bytes();
        XipRepr::new(dst, from, NextHeader::Xdgram, 0)
            .to_bytes(&seg)
            .expect("a registration is small")
    }
}

#[cfg(test)]
mod registration_tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn signed_registrations_round_trip_and_forgeries_fail() {
        let me = Identity::from_secret_bytes(Principal::HID, &[5; 32]);
        let ad = Xid::new(Principal::AD, [1; 20]);
        let r = Registration::sign(&me, ad);
        let back = Registration::parse(&r.to_bytes()).unwrap();
        assert_eq!(back, r);
        assert!(back.verify());
        let mut other_ad = back.clone();
        other_ad.ad = Xid::new(Principal::AD, [2; 20]);
        assert!(!other_ad.verify());
        let thief = Identity::from_secret_bytes(Principal::HID, &[6; 32]);
        let mut stolen = back;
        stolen.key = thief.public_key();
        assert!(!stolen.verify());
        assert_eq!(Registration::parse(b"R"), None);
    }
}
