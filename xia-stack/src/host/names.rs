//! Naming on the host: a name-server role and a resolver.
//!
//! A host can serve names ([`Host::serve_names`]): datagrams to the
//! well-known name-server SID are answered by an
//! [`NameServer`](crate::naming::NameServer). Any host can ask one
//! ([`Host::name_request`], or [`Host::resolve`] with the name server XHCP
//! announced): requests leave from the host's resolver SID with a request
//! id, and answers come back as [`HostEvent::NameAnswer`] — except the
//! answers for streams opened by name ([`Host::connect_name`]), which the
//! host uses itself to connect them. A request unanswered for
//! [`HostConfig::name_timeout`](super::HostConfig::name_timeout) is sent
//! again, up to `name_tries` times; then it fails: a
//! [`HostEvent::NameAnswer`] with an error, or a stream that fails with
//! [`ResolveError::NoAnswer`].

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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
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
    /// The name server did not answer, however often asked
    /// ([`HostConfig::name_tries`](super::HostConfig::name_tries)).
    #[error("{0}: no answer from the name server")]
    NoAnswer(String),
}

/// A name request awaiting its answer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Pending {
    server: Dag,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    due: Instant,
    tries: u8,
}

/// Most name requests awaiting answers; the oldest is failed to make room.
const MAX_PENDING: usize = 1024;

/// The refusal text of a request that timed out.
pub const NO_ANSWER: &str = "no answer from the name server";

impl ResolveError {
    /// What a name server's answer to resolving `name` means.
    pub fn from_answer(
        name: &str,
        answer: &Result<NameResponse, String>,
    ) -> Result<Dag, ResolveError> {
        match answer {
            Ok(NameResponse::Record { dag, .. }) => Ok(dag.clone()),
            Ok(_) => Err(ResolveError::NotFound(name.to_string())),
            Err(why) if why == NO_ANSWER => Err(ResolveError::NoAnswer(name.to_string())),
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

    /// Sends `req` to the name server at `server` at `now`; the answer
    /// arrives as [`HostEvent::NameAnswer`] with the returned id (an
    /// `Err` holding [`NO_ANSWER`] if every try went unanswered).
    pub fn name_request(
        &mut self,
        now: Instant,
        server: &Dag,
        req: &NameRequest,
    ) -> Result<u32, HostError> {
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
        if self.name_pending.len() >= MAX_PENDING {
            if let Some((&old, _)) = self.name_pending.iter().min_by_key(|(_, p)| p.due) {
                self.name_pending.remove(&old);
                self.name_failed(now, old);
            }
        }
        // Pending before it is sent: a host that is its own name server
        // answers at once.
        self.name_pending.insert(
            id,
            Pending {
                server: server.clone(),
                body: body.clone(),
                due: now + self.config.name_timeout,
                tries: 1,
            },
        );
        if let Err(e) = self.send_datagram(server, src, &body) {
            self.name_pending.remove(&id);
            return Err(e);
        }
        Ok(id)
    }

    /// When the next name request is due to be repeated or failed.
    pub(super) fn name_timeout(&self) -> Option<Instant> {
        self.name_pending.values().map(|p| p.due).min()
    }

    /// Repeats or fails the name requests that are due.
    pub(super) fn name_timeouts(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .name_pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let Some(mut p) = self.name_pending.remove(&id) else {
                continue;
            };
            if p.tries >= self.config.name_tries {
                self.name_failed(now, id);
                continue;
            }
            p.tries += 1;
            p.due = now + self.config.name_timeout;
            let src = self
                .resolver
                .and_then(|sid| self.dag().append_xid(sid).ok());
            if let Some(src) = src {
                let _ = self.send_datagram(&p.server, src, &p.body);
            }
            self.name_pending.insert(id, p);
        }
    }

    // Request `id` got no answer.
    fn name_failed(&mut self, now: Instant, id: u32) {
        if !self.resolve_failed(now, id) {
            self.push_event(HostEvent::NameAnswer {
                id,
                answer: Err(NO_ANSWER.to_string()),
            });
        }
    }

    /// Sets the name server to use (when it is known by configuration
    /// rather than from XHCP).
    pub fn set_name_server(&mut self, server: Dag) {
        self.name_server = Some(server);
    }

    /// Resolves `name` with the name server XHCP announced.
    pub fn resolve(&mut self, now: Instant, name: &str) -> Result<u32, HostError> {
        let server = self.name_server.clone().ok_or(HostError::NoNameServer)?;
        self.name_request(now, &server, &NameRequest::Resolve(name.to_string()))
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
                // An answer to a request we no longer wait for (a repeat's
                // second answer, or one that came too late) is dropped.
                Ok((id, answer)) if self.name_pending.remove(&id).is_some() => {
                    if !self.resolved(now, id, &answer) {
                        self.push_event(HostEvent::NameAnswer { id, answer });
                    }
                }
                Ok(_) => {}
                Err(_) => self.counters.malformed += 1,
            }
            return true;
        }
        false
    }
}
