//! The source agent's persistent log: two hypervisor agents joined by a
//! modelled wire (5 ms each way) in virtual time, one of them crashing
//! and restarting from its log with the VMs that outlived it.
//!
//! The log is written ahead (a migration's begin before its offer leaves,
//! an incoming commit before the `Commit` does); a source agent restarted
//! while its VM is paused recovers the migration in doubt and follows the
//! destination's signed answer; one restarted while its VM still runs
//! reports the migration failed and lifts the throttle; forwarding
//! pointers survive the restart (and pace what they forward, in order,
//! in a bounded queue); a destination restarted from its log
//! never tells an in-doubt source "unknown" about a guest it runs — and,
//! shown for contrast, one restarted without it does, and two copies run.

use std::collections::VecDeque;
use std::time::Duration;

use xia_migrate::agent::{Agent, AgentConfig, AgentEvent, AgentLog, LogEntry};
use xia_migrate::guest::{DirtyModel, Guest, SyntheticGuest};
use xia_migrate::msg::Mode;
use xia_migrate::source::{MigrateError, SourceConfig, SourceNote};
use xia_migrate::state::Source;
use xia_migrate::vm::{ServiceSpec, Vm};
use xia_stack::dag::Dag;
use xia_stack::identity::Identity;
use xia_stack::time::Instant;
use xia_stack::wire::xip::{NextHeader, XipRepr};
use xia_stack::xid::{Principal, Xid};

const A: usize = 0;
const B: usize = 1;
const DELAY: Duration = Duration::from_millis(5);

fn id(kind: Principal, text: &str) -> Identity {
    let mut secret = [0u8; 32];
    for (i, b) in format!("{kind:?} {text}").bytes().enumerate() {
        secret[i % 32] = secret[i % 32].rotate_left(3) ^ b;
    }
    Identity::from_secret_bytes(kind, &secret)
}

fn ad(n: usize) -> Xid {
    id(Principal::AD, &format!("ad {n}")).xid()
}

fn host(n: usize) -> Identity {
    id(Principal::HID, &format!("host {n}"))
}

fn config(n: usize) -> AgentConfig {
    // Each agent's gateway is the other machine: the wire is all there is.
    let mut c = AgentConfig::new(
        host(n),
        id(Principal::SID, &format!("agent {n}")),
        ad(n),
        Some(host(1 - n).xid()),
    );
    c.seed = 7 + n as u64;
    c
}

fn vm(now: Instant) -> Vm {
    let memory = SyntheticGuest::new(256, 4096, 5, DirtyModel::Uniform, 200.0);
    Vm::new(
        "vm",
        memory,
        id(Principal::HID, "vm"),
        ad(A),
        Some(host(B).xid()),
        None,
        ServiceSpec::None,
        id(Principal::SID, "vm service"),
        None,
        3,
        now,
    )
    .unwrap()
}

/// What a test does when an agent reports something: nothing, or crash
/// an agent (and later restart it), or cut the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Act {
    None,
    /// Crash agent n; restart it a second later, from its log or not.
    Crash {
        n: usize,
        with_log: bool,
    },
    /// Crash agent n before what it just sent left the machine (what is
    /// on the wire from it is lost); restart it a second later from its
    /// log.
    CrashUnsent {
        n: usize,
    },
    /// Cut the wire for 11 s (past the 10 s timeouts) and crash agent n,
    /// restarting it at once from its log or not.
    CutAndCrash {
        n: usize,
        with_log: bool,
    },
}

struct Net {
    now: Instant,
    agents: [Option<Agent>; 2],
    configs: [AgentConfig; 2],
    // What each agent's driver made durable.
    logs: [AgentLog; 2],
    // Every entry, in order, with the number of packets the agent had sent
    // before it.
    entries: [Vec<(LogEntry, usize)>; 2],
    sent: [usize; 2],
    wire: VecDeque<(Instant, usize, Vec<u8>)>,
    cut_until: Option<Instant>,
    // A crashed agent's VMs, and when it restarts.
    down: [Option<(Vec<Vm>, Instant, bool)>; 2],
    events: Vec<(usize, AgentEvent)>,
}

impl Net {
    fn new() -> Net {
        Net::with_configs([config(A), config(B)])
    }

    fn with_configs(configs: [AgentConfig; 2]) -> Net {
        let mut a = Agent::new(configs[A].clone());
        a.add_vm(vm(Instant::ZERO));
        let b = Agent::new(configs[B].clone());
        Net {
            now: Instant::ZERO,
            agents: [Some(a), Some(b)],
            configs,
            logs: [AgentLog::new(), AgentLog::new()],
            entries: [Vec::new(), Vec::new()],
            sent: [0, 0],
            wire: VecDeque::new(),
            cut_until: None,
            down: [None, None],
            events: Vec::new(),
        }
    }

    fn agent(&mut self, n: usize) -> &mut Agent {
        self.agents[n].as_mut().expect("running")
    }

    /// The driver's duty after every call: the log first, then the wire.
    fn flush(&mut self, n: usize, act: &mut impl FnMut(usize, &AgentEvent) -> Act) {
        let Some(a) = self.agents[n].as_mut() else {
            return;
        };
        while let Some(e) = a.poll_log() {
            self.logs[n].apply(&e);
            self.entries[n].push((e, self.sent[n]));
        }
        let cut = self.cut_until.is_some_and(|t| self.now < t);
        while let Some(t) = a.poll_transmit() {
            self.sent[n] += 1;
            if !cut {
                self.wire.push_back((self.now + DELAY, 1 - n, t.packet));
            }
        }
        let mut events = Vec::new();
        while let Some(e) = a.poll_event() {
            events.push(e);
        }
        for e in events {
            match act(n, &e) {
                Act::None => {}
                Act::Crash { n, with_log } => self.crash(n, Duration::from_secs(1), with_log),
                Act::CrashUnsent { n } => {
                    self.wire.retain(|w| w.1 == n);
                    self.crash(n, Duration::from_secs(1), true);
                }
                Act::CutAndCrash { n, with_log } => {
                    self.cut_until = Some(self.now + Duration::from_secs(11));
                    self.wire.clear();
                    self.crash(n, Duration::ZERO, with_log);
                }
            }
            self.events.push((n, e));
        }
    }

    fn crash(&mut self, n: usize, downtime: Duration, with_log: bool) {
        if let Some(a) = self.agents[n].take() {
            self.down[n] = Some((a.into_vms(), self.now + downtime, with_log));
        }
    }

    fn restart_due(&mut self, act: &mut impl FnMut(usize, &AgentEvent) -> Act) {
        for n in [A, B] {
            if self.down[n].as_ref().is_some_and(|d| d.1 <= self.now) {
                let (vms, _, with_log) = self.down[n].take().unwrap();
                let log = if with_log {
                    self.logs[n].clone()
                } else {
                    AgentLog::new()
                };
                self.agents[n] = Some(Agent::restart(self.configs[n].clone(), vms, &log, self.now));
                self.flush(n, act);
            }
        }
    }

    /// Runs until `end`, or until nothing is left to do.
    fn run(&mut self, end: Instant, mut act: impl FnMut(usize, &AgentEvent) -> Act) {
        for n in [A, B] {
            self.flush(n, &mut act);
        }
        while self.now < end {
            let mut next = None::<Instant>;
            let mut consider = |t: Option<Instant>| {
                if let Some(t) = t {
                    next = Some(next.map_or(t, |x: Instant| x.min(t)));
                }
            };
            consider(self.wire.front().map(|w| w.0));
            for n in [A, B] {
                consider(self.agents[n].as_ref().and_then(Agent::poll_timeout));
                consider(self.down[n].as_ref().map(|d| d.1));
            }
            let Some(next) = next else { break };
            self.now = next.max(self.now);
            self.restart_due(&mut act);
            while self.wire.front().is_some_and(|w| w.0 <= self.now) {
                let (_, to, p) = self.wire.pop_front().unwrap();
                if let Some(a) = self.agents[to].as_mut() {
                    a.handle_packet(self.now, p);
                }
                self.flush(to, &mut act);
            }
            for n in [A, B] {
                let now = self.now;
                if let Some(a) = self.agents[n].as_mut() {
                    if a.poll_timeout().is_some_and(|t| t <= now) {
                        a.handle_timeout(now);
                    }
                }
                self.flush(n, &mut act);
            }
        }
    }

    fn migrate(&mut self, mode: Mode) -> u64 {
        let to = self.agent(B).dag();
        let now = self.now;
        let config = SourceConfig {
            mode,
            ..SourceConfig::default()
        };
        self.agent(A).migrate(now, "vm", &to, config).unwrap()
    }

    /// Where the VM runs: (at A, at B).
    fn runs(&self) -> (bool, bool) {
        let at = |n: usize| {
            self.agents[n]
                .as_ref()
                .and_then(|a| a.vm("vm"))
                .is_some_and(Vm::is_running)
        };
        (at(A), at(B))
    }

    fn notes(&self, n: usize) -> Vec<String> {
        self.events
            .iter()
            .filter(|(k, _)| *k == n)
            .map(|(_, e)| format!("{e:?}").chars().take(100).collect())
            .collect()
    }

    fn failure(&self) -> Option<(Source, MigrateError)> {
        self.events.iter().find_map(|(_, e)| match e {
            AgentEvent::Outgoing {
                note: SourceNote::Failed { phase, error },
                ..
            } => Some((*phase, error.clone())),
            _ => None,
        })
    }

    fn done(&self) -> bool {
        self.events.iter().any(|(_, e)| {
            matches!(
                e,
                AgentEvent::Outgoing {
                    note: SourceNote::Done(_),
                    ..
                }
            )
        })
    }
}

fn end() -> Instant {
    Instant::from_secs(120)
}

#[test]
fn a_migration_is_logged_ahead_of_what_it_sends_and_the_log_compacts() {
    let mut net = Net::new();
    let mid = net.migrate(Mode::Live);
    // Began is the first entry, logged before the first packet left.
    net.flush(A, &mut |_, _| Act::None);
    assert!(
        matches!(&net.entries[A][0], (LogEntry::Began { recovery, .. }, 0) if recovery.id == mid),
        "{:?}",
        net.entries[A]
    );
    net.run(end(), |_, _| Act::None);
    assert!(net.done(), "{:?}", net.notes(A));
    assert_eq!(net.runs(), (false, true));
    let kinds: Vec<&str> = net.entries[A]
        .iter()
        .map(|(e, _)| match e {
            LogEntry::Began { .. } => "began",
            LogEntry::Accepted { .. } => "accepted",
            LogEntry::Committed { .. } => "committed",
            LogEntry::Ended { done: true, .. } => "done",
            LogEntry::Ended { done: false, .. } => "failed",
            LogEntry::Incoming { .. } => "incoming",
            LogEntry::Restarted { .. } => "restarted",
        })
        .collect();
    assert_eq!(kinds, ["began", "accepted", "committed", "done"]);
    assert_eq!(
        net.entries[B]
            .iter()
            .map(|(e, _)| e.clone())
            .collect::<Vec<_>>(),
        [
            LogEntry::Incoming {
                id: mid,
                active: false
            },
            LogEntry::Incoming {
                id: mid,
                active: true
            }
        ]
    );
    // Compacted: nothing under way, the pointer kept until it lapses.
    let log = &net.logs[A];
    assert_eq!(log.in_flight().count(), 0);
    let compact = log.entries();
    assert!(
        matches!(compact.as_slice(), [LogEntry::Committed { id, .. }] if *id == mid),
        "{compact:?}"
    );
    // Entries survive storage (postcard) and rebuild the same log.
    let mut again = AgentLog::new();
    for e in &compact {
        let bytes = postcard::to_allocvec(e).unwrap();
        again.apply(&postcard::from_bytes(&bytes).unwrap());
    }
    assert_eq!(&again, log);
    let mut lapsed = again.clone();
    lapsed.forget_expired(net.now + Duration::from_secs(61));
    assert!(lapsed.entries().is_empty());
}

#[test]
fn the_log_is_bounded() {
    let mut log = AgentLog::new();
    let to = Dag::path(&[ad(B), host(B).xid()]).unwrap();
    for i in 0..5000u64 {
        log.apply(&LogEntry::Incoming {
            id: i,
            active: true,
        });
        log.apply(&LogEntry::Committed {
            id: i,
            hid: id(Principal::HID, &format!("vm {i}")).xid(),
            new_ad: ad(B),
            until: Instant::from_secs(i),
        });
        // One VM migrating again and again: one record.
        log.apply(&LogEntry::Began {
            recovery: xia_migrate::Recovery {
                id: i,
                name: "vm".into(),
                session: [0; 20],
            },
            to: to.clone(),
            timeout: Duration::from_secs(10),
        });
    }
    let e = log.entries();
    let count = |f: fn(&LogEntry) -> bool| e.iter().filter(|x| f(x)).count();
    assert_eq!(count(|x| matches!(x, LogEntry::Began { .. })), 1);
    assert_eq!(count(|x| matches!(x, LogEntry::Incoming { .. })), 1024);
    assert_eq!(count(|x| matches!(x, LogEntry::Committed { .. })), 4096);
    // The pointers dropped were the soonest to lapse.
    assert!(e.iter().all(|x| match x {
        LogEntry::Committed { until, .. } => *until >= Instant::from_secs(5000 - 4096),
        _ => true,
    }));
}

/// Runs a live migration in which the source agent dies as it pauses the
/// VM for the final copy; `unsent`: before the final copy left the
/// machine.
fn source_crash_at_pause(unsent: bool) -> Net {
    let mut net = Net::new();
    net.migrate(Mode::Live);
    let mut once = true;
    net.run(end(), |n, e| match e {
        AgentEvent::Outgoing {
            note: SourceNote::Paused,
            ..
        } if n == A && std::mem::take(&mut once) => {
            if unsent {
                Act::CrashUnsent { n: A }
            } else {
                Act::Crash {
                    n: A,
                    with_log: true,
                }
            }
        }
        _ => Act::None,
    });
    assert!(net.notes(A).iter().any(|n| n.contains("InDoubt")));
    assert!(net.entries[A]
        .iter()
        .any(|(e, _)| matches!(e, LogEntry::Restarted { count: 1 })));
    assert_eq!(net.logs[A].in_flight().count(), 0, "ended in the log too");
    net
}

#[test]
fn a_source_restarted_with_its_vm_paused_asks_and_lets_go_if_the_destination_committed() {
    // The final copy had left: the destination committed and runs the VM;
    // the restarted source learns it in doubt and releases its copy.
    let net = source_crash_at_pause(false);
    assert!(net.done(), "{:?}", net.notes(A));
    assert_eq!(net.runs(), (false, true));
}

#[test]
fn a_source_restarted_with_its_vm_paused_resumes_it_if_the_destination_did_not_commit() {
    // The final copy died with the process: the destination says it has
    // not committed, the source aborts it and resumes. One copy, here.
    let net = source_crash_at_pause(true);
    assert_eq!(net.runs(), (true, false), "{:?}", net.notes(A));
    let (phase, error) = net.failure().expect("reported");
    assert_eq!(phase, Source::InDoubt);
    assert!(error.to_string().contains("in-doubt resolution"), "{error}");
    // The source's abort came on its new connection; the destination took
    // it as such, not as the rest of the page message the old connection
    // broke off in.
    let b = net.notes(B);
    assert!(b.iter().any(|n| n.contains("IncomingFailed")), "{b:?}");
    assert!(!b.iter().any(|n| n.contains("bad page message")), "{b:?}");
}

#[test]
fn a_source_restarted_after_the_commit_lets_go_and_keeps_the_pointer() {
    let mut net = Net::new();
    let mid = net.migrate(Mode::Full);
    // The agent dies as the commit arrives: the activation message that
    // follows is lost with it. (Stop well within the pointer's 60 s.)
    let mut once = true;
    net.run(Instant::from_secs(20), |n, e| match e {
        AgentEvent::Outgoing {
            note: SourceNote::Committed,
            ..
        } if n == A && std::mem::take(&mut once) => Act::Crash {
            n: A,
            with_log: true,
        },
        _ => Act::None,
    });
    assert!(net.done(), "{:?}", net.notes(A));
    assert_eq!(net.runs(), (false, true));
    // The restarted agent kept the forwarding pointer: a packet still sent
    // to the VM's old address goes on to its new AD.
    let vm_hid = id(Principal::HID, "vm").xid();
    let dst = Dag::path(&[ad(A), vm_hid]).unwrap();
    let src = Dag::path(&[ad(9), id(Principal::HID, "peer").xid()]).unwrap();
    let packet = XipRepr::new(dst, src, NextHeader::Data, 4)
        .to_bytes(b"late")
        .unwrap();
    let now = net.now;
    let a = net.agent(A);
    a.handle_packet(now, packet);
    assert_eq!(a.counters().forwarded, 1);
    assert_eq!(a.counters().redirects, 1);
    let out = a.poll_transmit().expect("forwarded");
    let repr = XipRepr::parse_header(&xia_stack::wire::xip::Packet::new_unchecked(
        &out.packet[..],
    ))
    .unwrap();
    assert!(repr.dst.nodes().iter().any(|n| n.xid == ad(B)));
    assert!(net.entries[A]
        .iter()
        .any(|(e, _)| matches!(e, LogEntry::Ended { id, done: true } if *id == mid)));
}

#[test]
fn a_source_restarted_with_its_vm_running_reports_the_migration_failed() {
    let mut net = Net::new();
    net.migrate(Mode::Live);
    let mut once = true;
    net.run(end(), |n, e| match e {
        AgentEvent::Outgoing {
            note: SourceNote::Round { round: 0, .. },
            ..
        } if n == A && std::mem::take(&mut once) => Act::Crash {
            n: A,
            with_log: true,
        },
        _ => Act::None,
    });
    assert_eq!(net.runs(), (true, false), "{:?}", net.notes(A));
    assert_eq!(
        net.failure(),
        Some((
            Source::PreCopy,
            MigrateError::Cancelled("the source agent restarted".into())
        ))
    );
    // The destination gave the reservation up when the source fell silent.
    assert!(
        net.notes(B).iter().any(|n| n.contains("IncomingFailed")),
        "{:?}",
        net.notes(B)
    );
}

/// The destination's process dies after it started the VM (the VM lives
/// on), and the source missed the commit: in doubt, it asks the
/// restarted destination.
fn destination_restart(with_log: bool) -> Net {
    let mut net = Net::new();
    net.migrate(Mode::Full);
    let mut once = true;
    net.run(end(), |n, e| match e {
        AgentEvent::Activated { .. } if n == B && std::mem::take(&mut once) => {
            Act::CutAndCrash { n: B, with_log }
        }
        _ => Act::None,
    });
    net
}

#[test]
fn a_destination_restarted_from_its_log_never_says_unknown_about_its_guest() {
    let net = destination_restart(true);
    assert!(net.notes(A).iter().any(|n| n.contains("InDoubt")));
    assert!(net.done(), "{:?}", net.notes(A));
    assert_eq!(net.runs(), (false, true), "exactly one copy, at B");
}

#[test]
fn without_its_log_a_restarted_destination_would_let_two_copies_run() {
    // Why the incoming commit is logged before the Commit leaves: the
    // restarted agent answers "unknown", the source resumes its copy, and
    // the destination's VM runs on too.
    let net = destination_restart(false);
    assert_eq!(net.runs(), (true, true), "{:?}", net.notes(A));
}

#[test]
fn restarts_are_deterministic() {
    let run = || {
        let mut net = Net::new();
        net.migrate(Mode::Live);
        let mut once = true;
        net.run(end(), |n, e| match e {
            AgentEvent::Outgoing {
                note: SourceNote::FinalSent,
                ..
            } if n == A && std::mem::take(&mut once) => Act::Crash {
                n: A,
                with_log: true,
            },
            _ => Act::None,
        });
        assert_eq!(net.runs().0 as u8 + net.runs().1 as u8, 1);
        (net.notes(A), net.notes(B), net.now)
    };
    assert_eq!(run(), run());
}

#[test]
fn a_record_for_a_running_vm_is_reported_failed_in_its_phase() {
    // Straight from a log: the VM runs, so the final copy never began.
    let mut v = vm(Instant::ZERO);
    v.set_throttle(0.2);
    let mut log = AgentLog::new();
    log.apply(&LogEntry::Began {
        recovery: xia_migrate::Recovery {
            id: 1,
            name: "vm".into(),
            session: [0; 20],
        },
        to: Dag::path(&[ad(B), host(B).xid()]).unwrap(),
        timeout: Duration::from_secs(10),
    });
    let mut a = Agent::restart(config(A), vec![v], &log, Instant::ZERO);
    assert!(matches!(
        a.poll_event(),
        Some(AgentEvent::Outgoing {
            note: SourceNote::Failed {
                phase: Source::Negotiating,
                ..
            },
            ..
        })
    ));
    let entries: Vec<LogEntry> = std::iter::from_fn(|| a.poll_log()).collect();
    assert_eq!(
        entries,
        [
            LogEntry::Restarted { count: 1 },
            LogEntry::Ended { id: 1, done: false }
        ]
    );
    let vms = a.into_vms();
    assert_eq!(vms.len(), 1);
    assert!(vms[0].is_running());
}

#[test]
fn packets_for_a_vm_that_left_are_paced_in_order_and_bounded() {
    // A slow pacer (10 kB/s) and a short queue (16), to see both.
    let mut a_config = config(A);
    a_config.forward_rate = Some(10_000);
    a_config.buffer_packets = 16;
    let mut net = Net::with_configs([a_config, config(B)]);
    net.migrate(Mode::Full);
    net.run(end(), |_, _| Act::None);
    assert!(net.done(), "{:?}", net.notes(A));
    // 30 packets of 1000 bytes for the VM at its old address, at once.
    let vm_hid = id(Principal::HID, "vm").xid();
    let dst = Dag::path(&[ad(A), vm_hid]).unwrap();
    let src = Dag::path(&[ad(9), id(Principal::HID, "peer").xid()]).unwrap();
    let t0 = net.now;
    let a = net.agent(A);
    while a.poll_transmit().is_some() {}
    for i in 0..30u8 {
        let p = XipRepr::new(dst.clone(), src.clone(), NextHeader::Data, 1000)
            .to_bytes(&[i; 1000])
            .unwrap();
        a.handle_packet(t0, p);
    }
    // What leaves toward AD B, and when (the XCMP redirect goes back to
    // the sender at once).
    fn take(a: &mut Agent, now: Instant) -> Vec<(Instant, u8)> {
        let mut out = Vec::new();
        while let Some(t) = a.poll_transmit() {
            let p = xia_stack::wire::xip::Packet::new_unchecked(&t.packet[..]);
            let repr = XipRepr::parse_header(&p).unwrap();
            if repr.dst.nodes().iter().any(|n| n.xid == ad(B)) {
                out.push((now, t.packet[repr.header_len()]));
            }
        }
        out
    }
    let mut out = take(a, t0);
    let burst = out.len();
    // The 8 KiB bucket: a few at once, not all.
    assert!((1..=9).contains(&burst), "{burst}");
    // The rest waits in a queue of 16; what did not fit was dropped.
    assert_eq!(a.counters().buffer_drops, 30 - 16 - burst as u64);
    while let Some(t) = a.poll_timeout() {
        if t > t0 + Duration::from_secs(10) {
            break;
        }
        a.handle_timeout(t);
        out.extend(take(a, t));
    }
    assert_eq!(out.len(), burst + 16, "{out:?}");
    assert_eq!(a.counters().forwarded, out.len() as u64);
    // In order, and paced: a packet (1000 bytes and a header) every
    // 100 ms and a bit at 10 kB/s.
    assert!(out.windows(2).all(|w| w[0].1 < w[1].1), "{out:?}");
    for w in out[burst..].windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!(
            (Duration::from_millis(100)..Duration::from_millis(120)).contains(&gap),
            "{gap:?}"
        );
    }
    let c = a.counters();
    assert_eq!(c.max_pacer_wait, out.last().unwrap().0 - t0);
    // Drained: the pacer keeps no timer.
    assert!(a
        .poll_timeout()
        .is_none_or(|t| t > t0 + Duration::from_secs(10)));
}
