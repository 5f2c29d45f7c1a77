//! A node's events, kept for the daemon's waiters: one bounded log with
//! positions instead of a channel per socket or request. A waiter notes
//! the position, checks its condition, and sleeps until the position
//! moves ([`EventLog::subscribe`]); the host daemon and the hypervisor
//! daemon both wait this way.

use std::collections::VecDeque;

use tokio::sync::watch;

/// A bounded log of events with positions, and a watch that changes when
/// they arrive.
#[derive(Debug)]
pub struct EventLog<E> {
    log: VecDeque<(u64, E)>,
    next: u64,
    cap: usize,
    changed: watch::Sender<u64>,
}

impl<E> EventLog<E> {
    /// A log keeping the last `cap` events (older ones are forgotten).
    pub fn new(cap: usize) -> EventLog<E> {
        EventLog {
            log: VecDeque::new(),
            next: 0,
            cap: cap.max(1),
            changed: watch::channel(0).0,
        }
    }

    /// Appends an event (waiters are woken by [`EventLog::notify`]).
    pub fn push(&mut self, e: E) {
        if self.log.len() >= self.cap {
            self.log.pop_front();
        }
        self.log.push_back((self.next, e));
        self.next += 1;
    }

    /// Wakes the waiters (once per step, after the events are in).
    pub fn notify(&self) {
        self.changed.send_replace(self.next);
    }

    /// A receiver whose value is the position; it changes on `notify`.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The position: events pushed after now are at or after it.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Events at or after position `from`, oldest first.
    pub fn since(&self, from: u64) -> impl Iterator<Item = &E> + '_ {
        self.log
            .iter()
            .filter(move |(seq, _)| *seq >= from)
            .map(|(_, e)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_events_with_their_positions() {
        let mut l = EventLog::new(2);
        let rx = l.subscribe();
        let at = l.position();
        for e in ["a", "b", "c"] {
            l.push(e);
        }
        assert_eq!(l.since(at).copied().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(l.since(2).copied().collect::<Vec<_>>(), ["c"]);
        assert_eq!(*rx.borrow(), 0);
        l.notify();
        assert_eq!(*rx.borrow(), 3);
    }
}
