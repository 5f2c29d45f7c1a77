//! A host core as a [`Node`](crate::node::Node), with what a daemon needs
//! around it: the host's events, kept for whoever waits for them, and a
//! counter that changes whenever new ones arrive.
//!
//! Events are few kinds and every waiter knows which it wants, so instead
//! of one channel per socket there is one log: a waiter notes the log's
//! position, checks its condition, and sleeps until the position moves
//! ([`HostNode::subscribe`]). Chunk fetches keep their (possibly large)
//! results in a map by id until taken ([`HostNode::take_fetched`]); they
//! wake waiters but are not in the log.

use std::collections::BTreeMap;

use tokio::sync::watch;
use xia_stack::content::ContentError;
use xia_stack::forward::{PortId, Transmit};
use xia_stack::host::{Host, HostEvent};
use xia_stack::time::Instant;

use crate::event_log::EventLog;
use crate::node::Node;

/// Events kept for waiters (older ones are forgotten).
pub const EVENT_LOG: usize = 4096;

/// Fetched chunks kept until taken.
pub const FETCHED: usize = 64;

/// A host and its event log.
#[derive(Debug)]
pub struct HostNode {
    /// The host.
    pub host: Host,
    events: EventLog<HostEvent>,
    fetched: BTreeMap<u32, Result<Vec<u8>, ContentError>>,
}

impl HostNode {
    /// Wraps `host`.
    pub fn new(host: Host) -> HostNode {
        HostNode {
            host,
            events: EventLog::new(EVENT_LOG),
            fetched: BTreeMap::new(),
        }
    }

    /// A receiver whose value is the log position; it changes when events
    /// arrive.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.events.subscribe()
    }

    /// The log position: events after it are new.
    pub fn position(&self) -> u64 {
        self.events.position()
    }

    /// Events at or after position `from`, oldest first.
    pub fn events_since(&self, from: u64) -> impl Iterator<Item = &HostEvent> + '_ {
        self.events.since(from)
    }

    /// Takes the result of chunk fetch `id`, if it has ended.
    pub fn take_fetched(&mut self, id: u32) -> Option<Result<Vec<u8>, ContentError>> {
        self.fetched.remove(&id)
    }
}

impl Node for HostNode {
    fn handle_packet(&mut self, now: Instant, port: PortId, packet: Vec<u8>) {
        self.host.handle_packet(now, port, packet);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.host.handle_timeout(now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.host.poll_timeout()
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.host.poll_transmit()
    }
    fn after_step(&mut self, _now: Instant) {
        let mut changed = false;
        while let Some(e) = self.host.poll_event() {
            changed = true;
            match e {
                // Kept apart, by id, until taken: not in the log.
                HostEvent::ChunkFetched { id, result, .. } => {
                    if self.fetched.len() >= FETCHED {
                        self.fetched.pop_first();
                    }
                    self.fetched.insert(id, result);
                }
                e => self.events.push(e),
            }
        }
        if changed {
            // Wakes waiters even when only a fetch ended (the position
            // then stays; a watch notifies on every send).
            self.events.notify();
        }
    }
}
