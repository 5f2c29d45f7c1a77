//! The migration control protocol's states and transition tables, one per
//! side, transactional as in Clark et al. (NSDI'05): negotiate (capacity
//! check and reservation), pre-copy rounds (live mode only), stop-and-copy,
//! commit (the destination confirms it holds a complete image before the
//! source lets go), activation.
//!
//! [`Source::next`] and [`Destination::next`] look a transition up in the
//! tables below and return [`IllegalTransition`] for any pair they do not
//! list. The invariant the tables keep is that exactly one copy of the
//! guest runs: the source's guest is the one until the source has seen
//! the destination's commit ([`Source::owns_guest`]), and a failure before
//! that — refusal, timeout, lost link, crashed peer — aborts to the source
//! resuming it. After the commit the destination's copy is the guest and
//! the source only releases resources.
//!
//! Source:
//!
//! | from         | transition    | to           |
//! |--------------|---------------|--------------|
//! | Idle         | Offer         | Negotiating  |
//! | Negotiating  | Accepted      | PreCopy      |
//! | Negotiating  | Refused       | Aborted      |
//! | PreCopy      | RoundDone     | PreCopy      |
//! | PreCopy      | Pause         | StopAndCopy  |
//! | StopAndCopy  | FinalSent     | AwaitCommit  |
//! | AwaitCommit  | Committed     | Released     |
//! | AwaitCommit  | Fail          | InDoubt      |
//! | InDoubt      | Committed     | Released     |
//! | InDoubt      | NotCommitted  | Aborted      |
//! | Released     | Activated     | Done         |
//! | Released     | Fail          | InDoubt      |
//! | before AwaitCommit | Fail    | Aborted      |
//!
//! Full (stop-and-copy) migration pauses at once: `Accepted` then `Pause`
//! with no `RoundDone`. Destination:
//!
//! | from         | transition    | to           |
//! |--------------|---------------|--------------|
//! | Idle         | Offered       | Reserved     |
//! | Idle         | Refuse        | Aborted      |
//! | Reserved     | Pages         | Receiving    |
//! | Receiving    | Pages         | Receiving    |
//! | Reserved     | FinalReceived | Complete     |
//! | Receiving    | FinalReceived | Complete     |
//! | Complete     | Commit        | Committed    |
//! | Committed    | Activate      | Active       |
//! | before Committed | Fail      | Aborted      |
//!
//! A destination that has committed never aborts: if the link is lost
//! after its commit, it activates anyway. So a source that fails while
//! waiting for the commit cannot simply resume — the commit may be on its
//! way, lost, or the destination may already run the guest (the two
//! generals' problem). It goes *in doubt*: the guest stays paused, and the
//! source asks the destination (or whoever can answer for it) until it
//! learns whether it committed; only a "not committed" lets it resume.
//! At no point do two copies run.

use std::fmt;

/// A transition a table does not have.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("illegal migration transition {via} from {from}")]
pub struct IllegalTransition {
    /// The state.
    pub from: String,
    /// The transition.
    pub via: String,
}

/// The source side's states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Nothing under way; the guest runs here.
    Idle,
    /// Offer sent, waiting for the destination's reservation.
    Negotiating,
    /// Copying pages while the guest runs (round after round).
    PreCopy,
    /// The guest is paused; the last dirty pages and the device state go.
    StopAndCopy,
    /// Everything sent; waiting for the destination's commit.
    AwaitCommit,
    /// Failed while waiting for the commit: the guest stays paused until
    /// the destination's outcome is known.
    InDoubt,
    /// The destination committed: the guest is its now; we release.
    Released,
    /// The destination reported activation.
    Done,
    /// Failed before the commit: the guest resumes here.
    Aborted,
}

/// The source side's transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceEvent {
    /// We send the offer.
    Offer,
    /// The destination reserved capacity.
    Accepted,
    /// The destination refused.
    Refused,
    /// A pre-copy round ended and another begins.
    RoundDone,
    /// We pause the guest for the final copy.
    Pause,
    /// The final pages and the device state are sent.
    FinalSent,
    /// The destination's commit arrived (or, in doubt, it says it
    /// committed).
    Committed,
    /// In doubt, the destination says it did not commit (and will not).
    NotCommitted,
    /// The destination's activation arrived.
    Activated,
    /// A timeout, a lost link, a crashed peer, or an abort.
    Fail,
}

/// The destination side's states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// Nothing under way.
    Idle,
    /// Capacity reserved for the offered guest.
    Reserved,
    /// Pages arriving.
    Receiving,
    /// A complete image held (pages and device state, checked).
    Complete,
    /// Commit sent: the guest is ours.
    Committed,
    /// The guest runs here.
    Active,
    /// Failed before committing: the reservation is dropped.
    Aborted,
}

/// The destination side's transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DestinationEvent {
    /// An offer arrived and fits: we reserve.
    Offered,
    /// An offer arrived and does not fit.
    Refuse,
    /// Pages arrived.
    Pages,
    /// The final pages and the device state arrived.
    FinalReceived,
    /// We commit.
    Commit,
    /// We start the guest.
    Activate,
    /// A timeout, a lost link, a crashed peer, or an abort.
    Fail,
}

const SOURCE_TABLE: &[(Source, SourceEvent, Source)] = {
    use Source::*;
    use SourceEvent as E;
    &[
        (Idle, E::Offer, Negotiating),
        (Negotiating, E::Accepted, PreCopy),
        (Negotiating, E::Refused, Aborted),
        (PreCopy, E::RoundDone, PreCopy),
        (PreCopy, E::Pause, StopAndCopy),
        (StopAndCopy, E::FinalSent, AwaitCommit),
        (AwaitCommit, E::Committed, Released),
        (AwaitCommit, E::Fail, InDoubt),
        (InDoubt, E::Committed, Released),
        (InDoubt, E::NotCommitted, Aborted),
        (Released, E::Activated, Done),
        (Released, E::Fail, InDoubt),
    ]
};

const DESTINATION_TABLE: &[(Destination, DestinationEvent, Destination)] = {
    use Destination::*;
    use DestinationEvent as E;
    &[
        (Idle, E::Offered, Reserved),
        (Idle, E::Refuse, Aborted),
        (Reserved, E::Pages, Receiving),
        (Receiving, E::Pages, Receiving),
        (Reserved, E::FinalReceived, Complete),
        (Receiving, E::FinalReceived, Complete),
        (Complete, E::Commit, Committed),
        (Committed, E::Activate, Active),
    ]
};

/// Every source state.
pub const SOURCE_STATES: [Source; 9] = [
    Source::Idle,
    Source::Negotiating,
    Source::PreCopy,
    Source::StopAndCopy,
    Source::AwaitCommit,
    Source::InDoubt,
    Source::Released,
    Source::Done,
    Source::Aborted,
];

/// Every destination state.
pub const DESTINATION_STATES: [Destination; 7] = [
    Destination::Idle,
    Destination::Reserved,
    Destination::Receiving,
    Destination::Complete,
    Destination::Committed,
    Destination::Active,
    Destination::Aborted,
];

fn name<T: fmt::Debug>(t: T) -> String {
    format!("{t:?}")
}

// The edge (from, via) of a table, or the error naming both.
fn lookup<S, E>(table: &[(S, E, S)], from: S, via: E) -> Result<S, IllegalTransition>
where
    S: Copy + Eq + fmt::Debug,
    E: Copy + Eq + fmt::Debug,
{
    table
        .iter()
        .find(|(f, t, _)| *f == from && *t == via)
        .map(|(_, _, to)| *to)
        .ok_or_else(|| IllegalTransition {
            from: name(from),
            via: name(via),
        })
}

impl Source {
    /// The state `e` leads to, or an error if the table has no such edge.
    pub fn next(self, e: SourceEvent) -> Result<Source, IllegalTransition> {
        if e == SourceEvent::Fail
            && matches!(
                self,
                Source::Negotiating | Source::PreCopy | Source::StopAndCopy
            )
        {
            return Ok(Source::Aborted);
        }
        lookup(SOURCE_TABLE, self, e)
    }

    /// Whether the guest is this side's (before the destination's commit
    /// was seen; and after an abort, when it resumes here). In doubt,
    /// neither side may run it yet.
    pub fn owns_guest(self) -> bool {
        !matches!(self, Source::Released | Source::Done | Source::InDoubt)
    }

    /// Whether the guest runs on this side in this state (it is paused
    /// for the final copy and while waiting for the commit).
    pub fn guest_runs(self) -> bool {
        matches!(
            self,
            Source::Idle | Source::Negotiating | Source::PreCopy | Source::Aborted
        )
    }
}

impl Destination {
    /// The state `e` leads to, or an error if the table has no such edge.
    pub fn next(self, e: DestinationEvent) -> Result<Destination, IllegalTransition> {
        // Failing before the commit aborts; after it, there is no edge.
        if e == DestinationEvent::Fail
            && matches!(
                self,
                Destination::Reserved | Destination::Receiving | Destination::Complete
            )
        {
            return Ok(Destination::Aborted);
        }
        lookup(DESTINATION_TABLE, self, e)
    }

    /// Whether the guest is this side's (from the commit on).
    pub fn owns_guest(self) -> bool {
        matches!(self, Destination::Committed | Destination::Active)
    }
}

/// Both machines as a Graphviz graph (the `Fail` edges left out).
pub fn to_dot() -> String {
    let mut s =
        String::from("digraph migration {\n  subgraph cluster_source { label=\"source\";\n");
    for (f, e, t) in SOURCE_TABLE {
        s.push_str(&format!("    src_{f:?} -> src_{t:?} [label=\"{e:?}\"];\n"));
    }
    s.push_str("  }\n  subgraph cluster_destination { label=\"destination\";\n");
    for (f, e, t) in DESTINATION_TABLE {
        s.push_str(&format!("    dst_{f:?} -> dst_{t:?} [label=\"{e:?}\"];\n"));
    }
    s.push_str("  }\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_and_full_paths() {
        use SourceEvent as S;
        let mut s = Source::Idle;
        for e in [
            S::Offer,
            S::Accepted,
            S::RoundDone,
            S::RoundDone,
            S::Pause,
            S::FinalSent,
            S::Committed,
            S::Activated,
        ] {
            s = s.next(e).unwrap();
        }
        assert_eq!(s, Source::Done);
        // Full: pause straight after the reservation.
        let full = [S::Offer, S::Accepted, S::Pause, S::FinalSent];
        let s = full
            .iter()
            .try_fold(Source::Idle, |s, e| s.next(*e))
            .unwrap();
        assert_eq!(s, Source::AwaitCommit);
        use DestinationEvent as D;
        let mut d = Destination::Idle;
        for e in [
            D::Offered,
            D::Pages,
            D::Pages,
            D::FinalReceived,
            D::Commit,
            D::Activate,
        ] {
            d = d.next(e).unwrap();
        }
        assert_eq!(d, Destination::Active);
    }

    #[test]
    fn illegal_transitions_are_errors() {
        assert!(Source::Idle.next(SourceEvent::Pause).is_err());
        assert!(Source::PreCopy.next(SourceEvent::Committed).is_err());
        assert_eq!(
            Source::Released.next(SourceEvent::Fail),
            Ok(Source::InDoubt),
            "no abort after the commit: in doubt until the activation is known"
        );
        assert_eq!(
            Source::AwaitCommit.next(SourceEvent::Fail),
            Ok(Source::InDoubt),
            "no resuming blind"
        );
        assert!(!Source::InDoubt.owns_guest() && !Source::InDoubt.guest_runs());
        assert!(Source::Idle.next(SourceEvent::Fail).is_err());
        assert!(Destination::Idle.next(DestinationEvent::Commit).is_err());
        assert!(
            Destination::Receiving
                .next(DestinationEvent::Commit)
                .is_err(),
            "commit needs a complete image"
        );
        assert!(
            Destination::Committed.next(DestinationEvent::Fail).is_err(),
            "a committed destination activates"
        );
        let e = Source::Idle.next(SourceEvent::Pause).unwrap_err();
        assert_eq!(
            e.to_string(),
            "illegal migration transition Pause from Idle"
        );
    }

    /// At every point, with every failure, at most one side owns the
    /// guest, and exactly one once an in-doubt source has learnt the
    /// destination's outcome.
    #[test]
    fn exactly_one_owner_at_every_failure_point() {
        use DestinationEvent as D;
        use SourceEvent as S;
        // Lock-step run of a live migration; fail at each step on either side.
        let steps: [(Option<S>, Option<D>); 8] = [
            (Some(S::Offer), None),
            (Some(S::Accepted), Some(D::Offered)),
            (Some(S::RoundDone), Some(D::Pages)),
            (Some(S::Pause), None),
            (Some(S::FinalSent), Some(D::FinalReceived)),
            (None, Some(D::Commit)),
            (Some(S::Committed), None),
            (Some(S::Activated), Some(D::Activate)),
        ];
        for fail_at in 0..=steps.len() {
            let (mut s, mut d) = (Source::Idle, Destination::Idle);
            for (k, (se, de)) in steps.iter().enumerate() {
                if k == fail_at {
                    // Whichever side can still fail does.
                    s = s.next(S::Fail).unwrap_or(s);
                    d = d.next(D::Fail).unwrap_or(d);
                    break;
                }
                if let Some(e) = se {
                    s = s.next(*e).unwrap();
                }
                if let Some(e) = de {
                    d = d.next(*e).unwrap();
                }
            }
            // Never two owners; in doubt, none until the outcome is known.
            let owners = usize::from(s.owns_guest()) + usize::from(d.owns_guest());
            assert!(owners <= 1, "step {fail_at}: {s:?} / {d:?}");
            if s == Source::InDoubt {
                s = s
                    .next(if d.owns_guest() {
                        S::Committed
                    } else {
                        S::NotCommitted
                    })
                    .unwrap();
            }
            let owners = usize::from(s.owns_guest()) + usize::from(d.owns_guest());
            assert_eq!(owners, 1, "step {fail_at}: {s:?} / {d:?}");
        }
        assert!(to_dot().contains("src_PreCopy -> src_StopAndCopy"));
    }
}
