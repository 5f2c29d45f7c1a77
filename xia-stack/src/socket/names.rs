//! Names: [`resolve`] and [`register`] through the host's name server.

use super::SocketError;
use crate::dag::Dag;
use crate::host::{Host, HostError, HostEvent, ResolveError};
use crate::identity::Identity;
use crate::naming::{NameRequest, NameResponse, Registration};
use crate::time::Instant;

/// Asks the host's name server (from XHCP or [`Host::set_name_server`])
/// for the DAG registered under `name` (xia-core's `XgetDAGbyName`). The
/// answer comes as a [`HostEvent::NameAnswer`]; [`Resolution::answer`]
/// reads it.
pub fn resolve(host: &mut Host, now: Instant, name: &str) -> Result<Resolution, SocketError> {
    let id = host.resolve(now, name)?;
    Ok(Resolution {
        id,
        name: name.to_string(),
    })
}

/// Registers `name → dag` with the host's name server (xia-core's
/// `XregisterName`), signed by `owner`, whose key must certify the DAG's
/// intent (a service's SID key). `seq` must be above the owner's previous
/// registration of the name: the name server refuses replays. A name
/// names may not be is refused here ([`SocketError::Name`]). The
/// answer comes as a [`HostEvent::NameAnswer`];
/// [`NameRegistration::answer`] reads it.
pub fn register(
    host: &mut Host,
    now: Instant,
    owner: &Identity,
    name: &str,
    dag: &Dag,
    seq: u64,
) -> Result<NameRegistration, SocketError> {
    let reg = Registration::sign(owner, name, dag, seq).map_err(SocketError::Name)?;
    let server = host.name_server().cloned().ok_or(HostError::NoNameServer)?;
    let id = host.name_request(now, &server, &NameRequest::Register(Box::new(reg)))?;
    Ok(NameRegistration {
        id,
        name: name.to_string(),
    })
}

/// A name lookup under way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    id: u32,
    name: String,
}

impl Resolution {
    /// The request id its [`HostEvent::NameAnswer`] carries.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The name looked up.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// If `event` is this lookup's answer: the DAG, or
    /// [`SocketError::Resolve`] (not known, or refused).
    pub fn answer(&self, event: &HostEvent) -> Option<Result<Dag, SocketError>> {
        match event {
            HostEvent::NameAnswer { id, answer } if *id == self.id => {
                Some(ResolveError::from_answer(&self.name, answer).map_err(SocketError::Resolve))
            }
            _ => None,
        }
    }
}

/// A registration under way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameRegistration {
    id: u32,
    name: String,
}

impl NameRegistration {
    /// The request id its [`HostEvent::NameAnswer`] carries.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The name registered.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// If `event` is this registration's answer: the sequence number
    /// stored, or [`SocketError::Refused`] with the name server's reason
    /// (a wrong key, a replay, a name owned by another intent…).
    pub fn answer(&self, event: &HostEvent) -> Option<Result<u64, SocketError>> {
        match event {
            HostEvent::NameAnswer { id, answer } if *id == self.id => Some(match answer {
                Ok(NameResponse::Registered { seq }) => Ok(*seq),
                Ok(NameResponse::Refused(e)) => Err(SocketError::Refused(e.to_string())),
                Ok(other) => Err(SocketError::Refused(format!("unexpected answer {other:?}"))),
                Err(why) => Err(SocketError::Refused(why.clone())),
            }),
            _ => None,
        }
    }
}
