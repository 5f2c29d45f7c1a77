//! The name service core: name → DAG records whose every change is signed
//! by the owner of the DAG's intent.
//!
//! xia-core's name server accepts any registration from anyone. Here a
//! registration names a DAG, carries the public key of its intent XID (a
//! HID or SID is the SHA-1 of that key), a sequence number, and a signature
//! over all of it. The server ([`NameServer`], sans-IO: requests in,
//! responses out) refuses a registration whose key does not certify the
//! intent, whose signature does not verify, that would take over a name
//! another intent owns, or whose sequence number is not above the one it
//! holds (a replay). An owner that moves (same intent, new AD) updates its
//! record with a higher sequence number.
//!
//! Requests and responses have a compact binary encoding
//! ([`NameRequest::to_bytes`], [`NameResponse::to_bytes`]) with strict,
//! total parsers, for the network service (well-known SID `…1113`).

use std::collections::BTreeMap;

use crate::dag::Dag;
use crate::identity::{Identity, PublicKey, Signature, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::serde_util::StaticStr;
use crate::xid::{Xid, XID_WIRE_LEN};

/// The name server's well-known SID (xia-core's).
pub const NAME_SERVER_SID: Xid = Xid::new(
    crate::xid::Principal::SID,
    [
        0x11, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11, 0x13,
    ],
);

/// Longest name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

const DOMAIN: &[u8] = b"xia-rs name registration v1";

/// Checks a name: 1–255 bytes of lowercase ASCII letters, digits, `.`,
/// `-` and `_`, not starting or ending with `.`.
pub fn check_name(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && !name.ends_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(NameError::BadName(
            name.chars().take(MAX_NAME_LEN).collect(),
        ))
    }
}

/// A signed registration (or update) of `name → dag`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The name.
    pub name: String,
    /// The address it stands for; its intent is the owner.
    pub dag: Dag,
    /// Higher than the owner's previous registration of this name.
    pub seq: u64,
    /// The public key whose SHA-1 is the DAG's intent.
    pub key: PublicKey,
    /// Signature by that key over the name, DAG and sequence number.
    pub signature: Signature,
}

fn signed_bytes(name: &str, dag: &Dag, seq: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 2 + name.len() + dag.wire_len() + 9);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&(name.len() as u16).to_be_bytes());
    m.extend_from_slice(name.as_bytes());
    m.push(dag.len() as u8);
    m.extend_from_slice(&dag.to_wire());
    m.extend_from_slice(&seq.to_be_bytes());
    m
}

impl Registration {
    /// Signs a registration with the intent's identity.
    pub fn sign(
        owner: &Identity,
        name: &str,
        dag: &Dag,
        seq: u64,
    ) -> Result<Registration, NameError> {
        check_name(name)?;
        Ok(Registration {
            name: name.to_string(),
            dag: dag.clone(),
            seq,
            key: owner.public_key(),
            signature: owner.sign(&signed_bytes(name, dag, seq)),
        })
    }

    /// Checks the name, that the key certifies the intent, and the
    /// signature.
    pub fn verify(&self) -> Result<(), NameError> {
        check_name(&self.name)?;
        let intent = *self.dag.intent();
        if !self.key.certifies(&intent) {
            return Err(NameError::WrongKey(intent));
        }
        self.key
            .verify(
                &signed_bytes(&self.name, &self.dag, self.seq),
                &self.signature,
            )
            .map_err(|_| NameError::BadSignature)
    }
}

/// Why a request was refused or could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum NameError {
    /// The name has characters or a length names may not have.
    #[error("bad name {0:?}: use 1-255 lowercase letters, digits, '.', '-', '_'")]
    BadName(String),
    /// The key's SHA-1 is not the DAG's intent.
    #[error("the key does not certify the intent {0}")]
    WrongKey(Xid),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The name belongs to another intent.
    #[error("{name:?} is owned by {owner}")]
    NotOwner {
        /// The name.
        name: String,
        /// Its owner.
        owner: Xid,
    },
    /// The sequence number is not above the stored one.
    #[error("sequence number {got} is not above {have}: a replay or a stale update")]
    Replay {
        /// The stored sequence number.
        have: u64,
        /// The one received.
        got: u64,
    },
    /// No room for another name.
    #[error("the name table is full ({0} names)")]
    Full(usize),
    /// Bytes that are not a request or response.
    #[error("malformed name-service message: {0}")]
    Malformed(#[serde(deserialize_with = "crate::serde_util::static_reason")] StaticStr),
}

/// A request to the name server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameRequest {
    /// Register or update.
    Register(Box<Registration>),
    /// Name → DAG.
    Resolve(String),
    /// Intent XID → name.
    ReverseResolve(Xid),
}

/// The name server's answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NameResponse {
    /// The registration was stored.
    Registered {
        /// Its sequence number.
        seq: u64,
    },
    /// The record asked for.
    Record {
        /// The name.
        name: String,
        /// Its DAG.
        dag: Dag,
        /// Its sequence number.
        seq: u64,
    },
    /// No such name or intent.
    NotFound,
    /// The request was refused.
    Refused(NameError),
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    dag: Dag,
    seq: u64,
}

/// The name server's state.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NameServer {
    records: BTreeMap<String, Record>,
    by_intent: BTreeMap<Xid, String>,
    limit: usize,
}

impl NameServer {
    /// A server holding at most `limit` names.
    pub fn new(limit: usize) -> NameServer {
        NameServer {
            records: BTreeMap::new(),
            by_intent: BTreeMap::new(),
            limit,
        }
    }

    /// Refuses restored state whose reverse index names a missing record.
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(name) = self
            .by_intent
            .values()
            .find(|n| !self.records.contains_key(*n))
        {
            return Err(format!(
                "name server index names {name:?}, which it does not hold"
            ));
        }
        Ok(())
    }

    /// Names held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Answers one request.
    pub fn handle(&mut self, req: &NameRequest) -> NameResponse {
        match req {
            NameRequest::Register(r) => match self.register(r) {
                Ok(()) => NameResponse::Registered { seq: r.seq },
                Err(e) => NameResponse::Refused(e),
            },
            NameRequest::Resolve(name) => match self.records.get(name) {
                Some(rec) => NameResponse::Record {
                    name: name.clone(),
                    dag: rec.dag.clone(),
                    seq: rec.seq,
                },
                None => NameResponse::NotFound,
            },
            NameRequest::ReverseResolve(xid) => match self.by_intent.get(xid) {
                Some(name) => {
                    let rec = &self.records[name];
                    NameResponse::Record {
                        name: name.clone(),
                        dag: rec.dag.clone(),
                        seq: rec.seq,
                    }
                }
                None => NameResponse::NotFound,
            },
        }
    }

    fn register(&mut self, r: &Registration) -> Result<(), NameError> {
        r.verify()?;
        let intent = *r.dag.intent();
        match self.records.get(&r.name) {
            Some(old) if *old.dag.intent() != intent => {
                return Err(NameError::NotOwner {
                    name: r.name.clone(),
                    owner: *old.dag.intent(),
                })
            }
            Some(old) if r.seq <= old.seq => {
                return Err(NameError::Replay {
                    have: old.seq,
                    got: r.seq,
                })
            }
            Some(_) => {}
            None if self.records.len() >= self.limit => return Err(NameError::Full(self.limit)),
            None => {}
        }
        self.by_intent.insert(intent, r.name.clone());
        self.records.insert(
            r.name.clone(),
            Record {
                dag: r.dag.clone(),
                seq: r.seq,
            },
        );
        Ok(())
    }
}

/// Wraps an encoded request or response with the request id that pairs
/// them on the wire (a datagram service may answer out of order).
pub fn encode_message(id: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(4 + body.len());
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Splits a message into its request id and body.
pub fn split_message(bytes: &[u8]) -> Result<(u32, &[u8]), NameError> {
    if bytes.len() < 4 {
        return Err(NameError::Malformed("truncated"));
    }
    let (id, body) = bytes.split_at(4);
    Ok((u32::from_be_bytes(id.try_into().expect("4 bytes")), body))
}

// Encoding: a type byte, then fields; strings are u16 length + bytes,
// DAGs a node count byte + the node array, XIDs their 24-byte wire form.

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_dag(out: &mut Vec<u8>, d: &Dag) {
    out.push(d.len() as u8);
    out.extend_from_slice(&d.to_wire());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], NameError> {
        if self.0.len() < n {
            return Err(NameError::Malformed("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, NameError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, NameError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn string(&mut self) -> Result<String, NameError> {
        let n = u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")) as usize;
        let s = std::str::from_utf8(self.take(n)?)
            .map_err(|_| NameError::Malformed("name is not UTF-8"))?;
        Ok(s.to_string())
    }
    fn dag(&mut self) -> Result<Dag, NameError> {
        let n = self.u8()? as usize;
        let wire = self.take(n * crate::wire::dag::NODE_LEN)?;
        Dag::parse_wire(wire)
            .map(|(d, _)| d)
            .map_err(|_| NameError::Malformed("bad DAG"))
    }
    fn xid(&mut self) -> Result<Xid, NameError> {
        Ok(Xid::from_wire(
            self.take(XID_WIRE_LEN)?.try_into().expect("24 bytes"),
        ))
    }
    fn end(&self) -> Result<(), NameError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(NameError::Malformed("trailing bytes"))
        }
    }
}

impl NameRequest {
    /// The request as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            NameRequest::Register(r) => {
                out.push(1);
                put_str(&mut out, &r.name);
                put_dag(&mut out, &r.dag);
                out.extend_from_slice(&r.seq.to_be_bytes());
                out.extend_from_slice(&r.key.to_bytes());
                out.extend_from_slice(&r.signature.to_bytes());
            }
            NameRequest::Resolve(name) => {
                out.push(2);
                put_str(&mut out, name);
            }
            NameRequest::ReverseResolve(x) => {
                out.push(3);
                out.extend_from_slice(&x.to_wire());
            }
        }
        out
    }

    /// Reads a request.
    pub fn parse(bytes: &[u8]) -> Result<NameRequest, NameError> {
        let mut r = Reader(bytes);
        let req = match r.u8()? {
            1 => {
                let name = r.string()?;
                let dag = r.dag()?;
                let seq = r.u64()?;
                let key_bytes: [u8; PUBLIC_KEY_LEN] =
                    r.take(PUBLIC_KEY_LEN)?.try_into().expect("32 bytes");
                let key = PublicKey::from_bytes(&key_bytes)
                    .ok_or(NameError::Malformed("bad public key"))?;
                let sig: [u8; SIGNATURE_LEN] = r.take(SIGNATURE_LEN)?.try_into().expect("64 bytes");
                NameRequest::Register(Box::new(Registration {
                    name,
                    dag,
                    seq,
                    key,
                    signature: Signature::from_bytes(&sig),
                }))
            }
            2 => NameRequest::Resolve(r.string()?),
            3 => NameRequest::ReverseResolve(r.xid()?),
            _ => return Err(NameError::Malformed("unknown request type")),
        };
        r.end()?;
        Ok(req)
    }
}

impl NameResponse {
    /// The response as bytes. A refusal carries its reason as text.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            NameResponse::Registered { seq } => {
                out.push(1);
                out.extend_from_slice(&seq.to_be_bytes());
            }
            NameResponse::Record { name, dag, seq } => {
                out.push(2);
                put_str(&mut out, name);
                put_dag(&mut out, dag);
                out.extend_from_slice(&seq.to_be_bytes());
            }
            NameResponse::NotFound => out.push(3),
            NameResponse::Refused(e) => {
                out.push(4);
                let text = e.to_string();
                put_str(&mut out, &text[..text.len().min(u16::MAX as usize)]);
            }
        }
        out
    }

    /// Reads a response; a refusal's reason comes back as its text.
    pub fn parse(bytes: &[u8]) -> Result<Result<NameResponse, String>, NameError> {
        let mut r = Reader(bytes);
        let resp = match r.u8()? {
            1 => Ok(NameResponse::Registered { seq: r.u64()? }),
            2 => {
                let name = r.string()?;
                let dag = r.dag()?;
                let seq = r.u64()?;
                Ok(NameResponse::Record { name, dag, seq })
            }
            3 => Ok(NameResponse::NotFound),
            4 => Err(r.string()?),
            _ => return Err(NameError::Malformed("unknown response type")),
        };
        r.end()?;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xid::Principal;

    fn id(seed: u8) -> Identity {
        Identity::from_secret_bytes(Principal::SID, &[seed; 32])
    }

    fn dag_for(owner: &Identity, ad: u8) -> Dag {
        Dag::path(&[
            Xid::new(Principal::AD, [ad; 20]),
            Xid::new(Principal::HID, [9; 20]),
            owner.xid(),
        ])
        .unwrap()
    }

    #[test]
    fn well_known_sid() {
        assert_eq!(
            NAME_SERVER_SID.to_string(),
            "SID:1110000000000000000000000000000000001113"
        );
    }

    #[test]
    fn register_resolve_update_and_reverse() {
        let mut ns = NameServer::new(10);
        let web = id(1);
        let r1 = Registration::sign(&web, "www.example", &dag_for(&web, 1), 1).unwrap();
        assert_eq!(
            ns.handle(&NameRequest::Register(Box::new(r1))),
            NameResponse::Registered { seq: 1 }
        );
        // The service moves to AD 2 and updates its record.
        let r2 = Registration::sign(&web, "www.example", &dag_for(&web, 2), 2).unwrap();
        assert_eq!(
            ns.handle(&NameRequest::Register(Box::new(r2))),
            NameResponse::Registered { seq: 2 }
        );
        let expect = NameResponse::Record {
            name: "www.example".into(),
            dag: dag_for(&web, 2),
            seq: 2,
        };
        assert_eq!(
            ns.handle(&NameRequest::Resolve("www.example".into())),
            expect
        );
        assert_eq!(ns.handle(&NameRequest::ReverseResolve(web.xid())), expect);
        assert_eq!(
            ns.handle(&NameRequest::Resolve("nope".into())),
            NameResponse::NotFound
        );
    }

    #[test]
    fn forged_and_replayed_updates_are_refused() {
        let mut ns = NameServer::new(10);
        let owner = id(1);
        let thief = id(2);
        let good = Registration::sign(&owner, "bank", &dag_for(&owner, 1), 5).unwrap();
        assert!(matches!(
            ns.handle(&NameRequest::Register(Box::new(good.clone()))),
            NameResponse::Registered { .. }
        ));
        // Replayed: the same signed registration again.
        assert_eq!(
            ns.handle(&NameRequest::Register(Box::new(good.clone()))),
            NameResponse::Refused(NameError::Replay { have: 5, got: 5 })
        );
        // An older, validly signed one.
        let old = Registration::sign(&owner, "bank", &dag_for(&owner, 3), 4).unwrap();
        assert!(matches!(
            ns.handle(&NameRequest::Register(Box::new(old))),
            NameResponse::Refused(NameError::Replay { .. })
        ));
        // Another intent taking the name, with its own valid key.
        let takeover = Registration::sign(&thief, "bank", &dag_for(&thief, 7), 99).unwrap();
        assert!(matches!(
            ns.handle(&NameRequest::Register(Box::new(takeover))),
            NameResponse::Refused(NameError::NotOwner { .. })
        ));
        // The owner's DAG signed with the wrong key.
        let mut wrong_key = Registration::sign(&owner, "bank", &dag_for(&owner, 7), 6).unwrap();
        wrong_key.key = thief.public_key();
        assert!(matches!(
            ns.handle(&NameRequest::Register(Box::new(wrong_key))),
            NameResponse::Refused(NameError::WrongKey(_))
        ));
        // A tampered DAG under the owner's signature.
        let mut tampered = Registration::sign(&owner, "bank", &dag_for(&owner, 1), 7).unwrap();
        tampered.dag = dag_for(&owner, 66);
        assert_eq!(
            ns.handle(&NameRequest::Register(Box::new(tampered))),
            NameResponse::Refused(NameError::BadSignature)
        );
        // Still the original record.
        match ns.handle(&NameRequest::Resolve("bank".into())) {
            NameResponse::Record { dag, seq, .. } => {
                assert_eq!((dag, seq), (dag_for(&owner, 1), 5))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_are_checked_and_the_table_is_bounded() {
        assert!(check_name("a.b-c_d9").is_ok());
        for bad in ["", ".a", "a.", "UPPER", "sp ace", &"x".repeat(256)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let mut ns = NameServer::new(1);
        let (a, b) = (id(1), id(2));
        ns.handle(&NameRequest::Register(Box::new(
            Registration::sign(&a, "a", &dag_for(&a, 1), 1).unwrap(),
        )));
        assert_eq!(
            ns.handle(&NameRequest::Register(Box::new(
                Registration::sign(&b, "b", &dag_for(&b, 1), 1).unwrap()
            ))),
            NameResponse::Refused(NameError::Full(1))
        );
    }

    #[test]
    fn encoding_round_trips_and_garbage_is_refused() {
        let owner = id(1);
        let reg = Registration::sign(&owner, "svc", &dag_for(&owner, 1), 3).unwrap();
        for req in [
            NameRequest::Register(Box::new(reg.clone())),
            NameRequest::Resolve("svc".into()),
            NameRequest::ReverseResolve(owner.xid()),
        ] {
            assert_eq!(NameRequest::parse(&req.to_bytes()).unwrap(), req);
        }
        let rec = NameResponse::Record {
            name: "svc".into(),
            dag: dag_for(&owner, 1),
            seq: 3,
        };
        assert_eq!(NameResponse::parse(&rec.to_bytes()).unwrap(), Ok(rec));
        let refused = NameResponse::Refused(NameError::BadSignature);
        assert_eq!(
            NameResponse::parse(&refused.to_bytes()).unwrap(),
            Err("bad signature".into())
        );
        let bytes = NameRequest::Register(Box::new(reg)).to_bytes();
        for cut in 0..bytes.len() {
            assert!(NameRequest::parse(&bytes[..cut]).is_err());
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(
            NameRequest::parse(&extra),
            Err(NameError::Malformed("trailing bytes"))
        );
        assert!(NameRequest::parse(&[9]).is_err());
    }
}
