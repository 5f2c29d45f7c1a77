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

/// How long a [`NameKeeper`] waits before registering again after a
/// registration got no answer (the stack has already asked
/// `name_tries` times) or could not be sent (no name server yet).
pub const NAME_RETRY: std::time::Duration = std::time::Duration::from_secs(2);
/// … and after the name server refused it (the name may be someone
/// else's until that registration lapses or is withdrawn).
pub const NAME_REFUSED_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps a name registered for a DAG that may change (a VM's service, a
/// hypervisor's agent): registers when the name server does not hold the
/// current DAG, tries again after a registration that got no answer or
/// was refused, and registers again with the next sequence number when
/// the DAG changes. Sans-IO: its owner calls [`NameKeeper::poll`] with
/// the current DAG when that may have changed (a move), hands it the
/// host's events (and polls after one it took) and polls again at
/// [`NameKeeper::poll_timeout`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NameKeeper {
    name: String,
    seq: u64,
    // The registration awaiting its answer.
    pending: Option<u32>,
    // The DAG of the registration pending or stored.
    dag: Option<Dag>,
    stored: bool,
    retry: Option<Instant>,
    /// Registrations the name server refused.
    pub refusals: u64,
    /// Registrations that got no answer.
    pub timeouts: u64,
}

impl NameKeeper {
    /// Keeps `name` registered; the first registration carries sequence
    /// number `first_seq` (a daemon that may restart passes the wall
    /// clock, so that it never repeats one the name server has seen).
    pub fn new(name: &str, first_seq: u64) -> NameKeeper {
        NameKeeper {
            name: name.to_owned(),
            seq: first_seq.saturating_sub(1),
            pending: None,
            dag: None,
            stored: false,
            retry: None,
            refusals: 0,
            timeouts: 0,
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the name server holds `dag` under the name.
    pub fn is_registered(&self, dag: &Dag) -> bool {
        self.stored && self.dag.as_ref() == Some(dag)
    }

    /// Registers `dag`, signed by `owner`, if the name server does not
    /// hold it and no registration is pending. A wait after a failed
    /// registration holds for the DAG it failed for only: a move is a
    /// reason to try at once.
    pub fn poll(&mut self, host: &mut Host, now: Instant, owner: &Identity, dag: &Dag) {
        let waiting = self.retry.is_some_and(|t| t > now) && self.dag.as_ref() == Some(dag);
        if self.pending.is_some() || waiting || self.is_registered(dag) {
            return;
        }
        self.seq = self.seq.saturating_add(1);
        self.retry = None;
        self.stored = false;
        self.dag = Some(dag.clone());
        match register(host, now, owner, &self.name, dag, self.seq) {
            Ok(r) => self.pending = Some(r.id()),
            // No name server yet, or no route: later.
            Err(_) => self.retry = Some(now + NAME_RETRY),
        }
    }

    /// Takes `event` if it answers the pending registration (true).
    pub fn handle_event(&mut self, now: Instant, event: &HostEvent) -> bool {
        let HostEvent::NameAnswer { id, answer } = event else {
            return false;
        };
        if self.pending != Some(*id) {
            return false;
        }
        self.pending = None;
        match answer {
            Ok(NameResponse::Registered { seq }) if *seq == self.seq => self.stored = true,
            Err(_) => {
                self.timeouts += 1;
                self.retry = Some(now + NAME_RETRY);
            }
            Ok(_) => {
                self.refusals += 1;
                self.retry = Some(now + NAME_REFUSED_RETRY);
            }
        }
        true
    }

    /// When [`NameKeeper::poll`] may next have something to do: at once
    /// if it was never polled, then when a failed registration is due
    /// again.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.dag {
            None => Some(Instant::ZERO),
            Some(_) => self.retry,
        }
    }
}
