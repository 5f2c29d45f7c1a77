//! Naming on the host: a name-server role and a resolver.
//!
//! A host can serve names ([`Host::serve_names`]): datagrams to the
//! well-known name-server SID are answered by an
//! [`NameServer`](crate::naming::NameServer). Any host can ask one
//! ([`Host::name_request`], or [`Host::resolve`] with the name server XHCP
//! announced): requests leave from the host's resolver SID with a request
//! id, and answers come back as [`HostEvent::NameAnswer`] — except the
//! answers for streams opened by name ([`Host::connect_name`]), which the
//! host uses itself to connect them.

use rand_chacha::rand_core::RngCore;

use super::{Host, HostError, HostEvent};
use crate::dag::Dag;
use crate::forward::Route;
use crate::identity::Identity;
use crate::naming::{
    encode_message, split_message, NameRequest, NameResponse, NameServer, NAME_SERVER_SID,
};
use crate::time::Instant;
use crate::wire::xdgram::XdgramRepr;
use crate::wire::xip::{NextHeader, XipRepr, DEFAULT_HOP_LIMIT};
use crate::xid::{Principal, Xid};

/// Why a name did not resolve to a DAG.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The name server has no record of the name.
    #[error("{0}: name not known")]
    NotFound(String),
    /// The name server refused the request (`why` is its reason).
    #[error("{name}: {why}")]
    Refused {
        /// The name.
        name: String,
        /// The name server's reason.
        why: String,
    },
}

impl ResolveError {
    /// What a name server's answer to resolving `name` means.
    pub fn from_answer(
        name: &str,
        answer: &Result<NameResponse, String>,
    ) -> Result<Dag, ResolveError> {
        match answer {
            Ok(NameResponse::Record { dag, .. }) => Ok(dag.clone()),
            Ok(_) => Err(ResolveError::NotFound(name.to_string())),
            Err(why) => Err(ResolveError::Refused {
                name: name.to_string(),
                why: why.clone(),
            }),
        }
    }
}

impl Host {
    /// Makes this host a name server holding at most `limit` names.
    pub fn serve_names(&mut self, limit: usize) {
        let _ = self.tables.insert(NAME_SERVER_SID, Route::LOCAL);
        self.names = Some(NameServer::new(limit));
    }

    /// This host's name-server DAG, if it serves names.
    pub fn name_server_dag(&self) -> Option<Dag> {
        self.names.as_ref()?;
        self.dag().append_xid(NAME_SERVER_SID).ok()
    }

    /// Sends `req` to the name server at `server`; the answer arrives as
    /// [`HostEvent::NameAnswer`] with the returned id.
    pub fn name_request(&mut self, server: &Dag, req: &NameRequest) -> Result<u32, HostError> {
        let sid = match self.resolver {
            Some(s) => s,
            None => {
                let s = Identity::generate(Principal::SID, &mut self.rng).xid();
                let _ = self.tables.insert(s, Route::LOCAL);
                self.resolver = Some(s);
                s
            }
        };
        let id = self.rng.next_u32();
        let src = self
            .dag()
            .append_xid(sid)
            .map_err(|_| HostError::NoRoute(*server.intent()))?;
        let body = encode_message(id, &req.to_bytes());
        self.send_datagram(server, src, &body)?;
        Ok(id)
    }

    /// Sets the name server to use (when it is known by configuration
    /// rather than from XHCP).
    pub fn set_name_server(&mut self, server: Dag) {
        self.name_server = Some(server);
    }

    /// Resolves `name` with the name server XHCP announced.
    pub fn resolve(&mut self, name: &str) -> Result<u32, HostError> {
        let server = self.name_server.clone().ok_or(HostError::NoNameServer)?;
        self.name_request(&server, &NameRequest::Resolve(name.to_string()))
    }

    /// Sends one XDGRAM datagram from `src` to `dst`.
    pub(super) fn send_datagram(
        &mut self,
        dst: &Dag,
        src: Dag,
        payload: &[u8],
    ) -> Result<(), HostError> {
        self.send_datagram_with(dst, src, payload, DEFAULT_HOP_LIMIT)
    }

    /// Sends one XDGRAM datagram from `src` to `dst` with `hop_limit`.
    pub(super) fn send_datagram_with(
        &mut self,
        dst: &Dag,
        src: Dag,
        payload: &[u8],
        hop_limit: u8,
    ) -> Result<(), HostError> {
        let seg = XdgramRepr {
            next_header: NextHeader::Data,
            payload,
        }
        .to_bytes();
        let mut repr = XipRepr::new(dst.clone(), src, NextHeader::Xdgram, 0);
        repr.hop_limit = hop_limit;
        let pkt = repr
            .to_bytes(&seg)
            .map_err(|_| HostError::TooLarge(payload.len()))?;
        self.send_packet(pkt, dst)
    }

    /// A datagram to the name-server SID or the resolver SID; `true` if it
    /// was one of those.
    pub(super) fn deliver_names(
        &mut self,
        now: Instant,
        intent: &Xid,
        src: &Dag,
        payload: &[u8],
    ) -> bool {
        if *intent == NAME_SERVER_SID {
            let Some(server) = self.names.as_mut() else {
                return false;
            };
            let Ok((id, body)) = split_message(payload) else {
                self.counters.malformed += 1;
                return true;
            };
            let answer = match NameRequest::parse(body) {
                Ok(req) => server.handle(&req),
                Err(e) => NameResponse::Refused(e),
            };
            if let Ok(me) = self.dag().append_xid(NAME_SERVER_SID) {
                let _ = self.send_datagram(src, me, &encode_message(id, &answer.to_bytes()));
            }
            return true;
        }
        if Some(*intent) == self.resolver {
            match split_message(payload).and_then(|(id, body)| Ok((id, NameResponse::parse(body)?)))
            {
                Ok((id, answer)) => {
                    if !self.resolved(now, id, &answer) {
                        self.push_event(HostEvent::NameAnswer { id, answer });
                    }
                }
                Err(_) => self.counters.malformed += 1,
            }
            return true;
        }
        false
    }
}
