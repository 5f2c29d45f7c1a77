//! The hypervisor daemon's durable log: the agent's write-ahead log
//! ([`Agent::poll_log`](xia_migrate::agent::Agent::poll_log)) in a file, so
//! that a restarted `xia hypervisor` recovers what it had under way
//! ([`Agent::restart`](xia_migrate::agent::Agent::restart)).
//!
//! **Format**: JSON lines (serde_json), one record per line. The first is
//! a header, `{"Start":{"format":1,"clock_unix_ns":N}}`: the instants in
//! the entries after it (a forwarding pointer's lapse) count from the
//! writing process's clock zero, which was `N` ns after the Unix epoch.
//! Every other line is one [`LogEntry`] as `{"Entry":…}`, or the
//! configured VMs that run elsewhere now, `{"Left":["vm1",…]}`, written
//! whenever that set changes (a VM left, or came back): a restarted daemon
//! does not start those (the agent's log alone does not tell a VM that
//! left from one that came back). JSON rather than
//! postcard because a line is self-delimiting and a torn one never parses
//! (an object cut short lacks its closing brace), so a crash mid-append is
//! recognised without a length prefix or checksum; and the file can be
//! read with `jq`. Entries are few (a handful per migration), so size and
//! speed do not matter.
//!
//! **Writing**: [`LogWriter::append`] writes the entries the agent handed
//! out and syncs the file (`fdatasync`) before it returns; the daemon
//! calls it after every step, before the step's packets are sent. When
//! the file passes [`COMPACT_AT`] bytes (or twice its size after the last
//! compaction, if larger) it is rewritten from
//! [`AgentLog::entries`] into `FILE.tmp`, synced, and renamed over the
//! file (then the directory is synced): a crash leaves the old file or
//! the new one, never a mix.
//!
//! **Reading** ([`read`]): a missing or empty file is an empty log. A
//! line that does not parse is an error naming the file, the line and the
//! entry — unless it is the last line (a crash mid-append tore it), which
//! is dropped with a warning.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xia_migrate::agent::{AgentLog, LogEntry};
use xia_stack::time::Instant;

/// The format version written in the header.
pub const FORMAT: u32 = 1;

/// The file is compacted when it grows past this many bytes (or past
/// twice its size after the last compaction, if that is more).
pub const COMPACT_AT: u64 = 1 << 20;

/// One line of the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Line {
    /// The header: the format, and the writer's clock zero.
    Start { format: u32, clock_unix_ns: u64 },
    /// An entry.
    Entry(LogEntry),
    /// The configured VMs that run elsewhere from here on.
    Left(BTreeSet<String>),
}

/// Why the log file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LogFileError {
    /// Reading, writing, syncing or renaming failed.
    #[error("migration log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line before the last one is damaged.
    #[error("migration log {path}:{line}: {what}: {why} (only a torn last line is dropped; repair or remove the file)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// "the header" or "entry N".
        what: String,
        /// Why it does not parse.
        why: String,
    },
}

/// What [`read`] found.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The entries applied, with their instants on the reader's clock.
    pub log: AgentLog,
    /// How many entries the file held.
    pub entries: usize,
    /// The configured VMs that ran elsewhere, as the file last said.
    pub left: BTreeSet<String>,
    /// A torn last line that was dropped: a warning to print.
    pub torn: Option<String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogFileError + '_ {
    move |source| LogFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `entry` with its instants moved from the clock whose zero was `from`
/// ns after the Unix epoch to the one whose zero was `to` (an instant
/// before the new zero becomes the zero: it has lapsed).
fn rebase(entry: LogEntry, from: u64, to: u64) -> LogEntry {
    match entry {
        LogEntry::Committed {
            id,
            hid,
            new_ad,
            until,
        } => {
            let unix = from.saturating_add(until.as_nanos());
            LogEntry::Committed {
                id,
                hid,
                new_ad,
                until: Instant::from_nanos(unix.saturating_sub(to)),
            }
        }
        other => other,
    }
}

/// Reads the log at `path` into an [`AgentLog`] whose instants count from
/// a clock whose zero was `clock_unix_ns` after the Unix epoch (the
/// reading daemon's). A missing file is an empty log.
pub fn read(path: &Path, clock_unix_ns: u64) -> Result<Loaded, LogFileError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(e) => return Err(io_err(path)(e)),
    };
    parse(path, &bytes, clock_unix_ns)
}

fn parse(path: &Path, bytes: &[u8], clock_unix_ns: u64) -> Result<Loaded, LogFileError> {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // A file that ends with its newline splits into an empty last piece.
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut out = Loaded::default();
    let mut writer_zero = None;
    for (i, text) in lines.iter().enumerate() {
        let line = i + 1;
        let what = if i == 0 {
            "the header".to_string()
        } else {
            format!("entry {i}")
        };
        let parsed = serde_json::from_slice::<Line>(text).map_err(|e| e.to_string());
        let parsed = match (parsed, i) {
            (Ok(Line::Start { format, .. }), _) if format != FORMAT => {
                Err(format!("format {format}, this daemon reads {FORMAT}"))
            }
            (Ok(Line::Entry(_) | Line::Left(_)), 0) => {
                Err("the first line is not the header".to_string())
            }
            (Ok(Line::Start { .. }), i) if i > 0 => Err("a second header".to_string()),
            (p, _) => p,
        };
        match parsed {
            Ok(Line::Start { clock_unix_ns, .. }) => writer_zero = Some(clock_unix_ns),
            Ok(Line::Entry(e)) => {
                let from = writer_zero.expect("the header came first");
                out.log.apply(&rebase(e, from, clock_unix_ns));
                out.entries += 1;
            }
            Ok(Line::Left(v)) => out.left = v,
            Err(why) if line == lines.len() => {
                out.torn = Some(format!(
                    "{}:{line}: dropped a torn last line ({what}: {why}), as a crash mid-append leaves",
                    path.display()
                ));
            }
            Err(why) => {
                return Err(LogFileError::Corrupt {
                    path: path.to_path_buf(),
                    line,
                    what,
                    why,
                })
            }
        }
    }
    Ok(out)
}

fn line(l: &Line) -> Vec<u8> {
    let mut v = serde_json::to_vec(l).expect("log entries serialise");
    v.push(b'\n');
    v
}

/// The open log: entries are appended and synced; it is compacted as it
/// grows.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    log: AgentLog,
    left: BTreeSet<String>,
    clock_unix_ns: u64,
    bytes: u64,
    bound: u64,
    compactions: u64,
}

impl LogWriter {
    /// Writes `log` and the VMs that `left` as a fresh file at `path`
    /// (atomically, replacing what was there) and opens it for appending;
    /// instants count from a clock whose zero was `clock_unix_ns` after
    /// the Unix epoch.
    pub fn create(
        path: &Path,
        log: AgentLog,
        left: BTreeSet<String>,
        clock_unix_ns: u64,
    ) -> Result<LogWriter, LogFileError> {
        let (file, bytes) = write_compacted(path, &log, &left, clock_unix_ns)?;
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            log,
            left,
            clock_unix_ns,
            bytes,
            bound: COMPACT_AT.max(2 * bytes),
            compactions: 0,
        })
    }

    /// Appends `entries`, and the VMs that `left` if they changed, and
    /// syncs the file; compacts it (forgetting the forwarding pointers
    /// lapsed by `now`) if it grew past its bound. When this returns `Ok`
    /// the entries are durable.
    pub fn append(
        &mut self,
        entries: &[LogEntry],
        left: &BTreeSet<String>,
        now: Instant,
    ) -> Result<(), LogFileError> {
        if entries.is_empty() && *left == self.left {
            return Ok(());
        }
        let mut buf = Vec::new();
        for e in entries {
            buf.extend(line(&Line::Entry(e.clone())));
            self.log.apply(e);
        }
        if *left != self.left {
            buf.extend(line(&Line::Left(left.clone())));
            self.left.clone_from(left);
        }
        self.file.write_all(&buf).map_err(io_err(&self.path))?;
        self.file.sync_data().map_err(io_err(&self.path))?;
        self.bytes += buf.len() as u64;
        if self.bytes > self.bound {
            self.compact(now)?;
        }
        Ok(())
    }

    /// Rewrites the file from the log's compacted entries.
    pub fn compact(&mut self, now: Instant) -> Result<(), LogFileError> {
        self.log.forget_expired(now);
        let (file, bytes) = write_compacted(&self.path, &self.log, &self.left, self.clock_unix_ns)?;
        self.file = file;
        self.bytes = bytes;
        self.bound = COMPACT_AT.max(2 * bytes);
        self.compactions += 1;
        Ok(())
    }

    /// The log as the file holds it.
    pub fn log(&self) -> &AgentLog {
        &self.log
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its size now, in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// How often it was compacted since it was opened.
    pub fn compactions(&self) -> u64 {
        self.compactions
    }
}

// Writes `log` and `left` to `path.tmp`, syncs it, renames it over
// `path`, syncs the directory; returns the file opened for appending and
// its size.
fn write_compacted(
    path: &Path,
    log: &AgentLog,
    left: &BTreeSet<String>,
    clock_unix_ns: u64,
) -> Result<(File, u64), LogFileError> {
    let mut buf = line(&Line::Start {
        format: FORMAT,
        clock_unix_ns,
    });
    for e in log.entries() {
        buf.extend(line(&Line::Entry(e)));
    }
    buf.extend(line(&Line::Left(left.clone())));
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&buf).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // The rename is durable once the directory is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    Ok((file, buf.len() as u64))
}

/// Nanoseconds since the Unix epoch now.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use xia_migrate::source::Recovery;
    use xia_stack::dag::Dag;
    use xia_stack::xid::{Principal, Xid};

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xia-hvlog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn entries() -> Vec<LogEntry> {
        let to = Dag::path(&[
            Xid::new(Principal::AD, [1; 20]),
            Xid::new(Principal::HID, [2; 20]),
            Xid::new(Principal::SID, [3; 20]),
        ])
        .unwrap();
        vec![
            LogEntry::Began {
                recovery: Recovery {
                    id: 7,
                    name: "vm1".into(),
                    session: [9; 20],
                },
                to: to.clone(),
                timeout: Duration::from_secs(10),
            },
            LogEntry::Accepted { id: 7 },
            LogEntry::Began {
                recovery: Recovery {
                    id: 8,
                    name: "vm2".into(),
                    session: [4; 20],
                },
                to,
                timeout: Duration::from_secs(10),
            },
            LogEntry::Committed {
                id: 8,
                hid: Xid::new(Principal::HID, [5; 20]),
                new_ad: Xid::new(Principal::AD, [1; 20]),
                until: Instant::from_nanos(60_000_000_000),
            },
            LogEntry::Incoming {
                id: 99,
                active: true,
            },
            LogEntry::Ended { id: 7, done: false },
        ]
    }

    fn vms(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn applied(es: &[LogEntry]) -> AgentLog {
        let mut l = AgentLog::new();
        for e in es {
            l.apply(e);
        }
        l
    }

    #[test]
    fn entries_round_trip_through_the_file_and_a_restart() {
        let d = dir("round");
        let path = d.join("hv1.migrations.log");
        let none = vms(&[]);
        let mut w = LogWriter::create(&path, AgentLog::new(), none.clone(), 1_000).unwrap();
        let es = entries();
        w.append(&es[..2], &none, Instant::ZERO).unwrap();
        // vm2 left when its migration committed.
        w.append(&es[2..], &vms(&["vm2"]), Instant::ZERO).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // The header, none left at the start, the entries, vm2 left.
        assert_eq!(text.lines().count(), 3 + es.len(), "{text}");
        assert!(text.starts_with("{\"Start\":{\"format\":1,"), "{text}");
        assert!(text.ends_with("{\"Left\":[\"vm2\"]}\n"), "{text}");
        // Read on the same clock: the same log.
        let got = read(&path, 1_000).unwrap();
        assert_eq!(got.entries, es.len());
        assert_eq!(got.left, vms(&["vm2"]));
        assert!(got.torn.is_none());
        assert_eq!(got.log, applied(&es));
        assert_eq!(&got.log, w.log());
        // Read by a process whose clock started 10 s later: the pointer
        // lapses 10 s earlier on its clock.
        let later = read(&path, 1_000 + 10_000_000_000).unwrap();
        let until = later.log.entries().into_iter().find_map(|e| match e {
            LogEntry::Committed { until, .. } => Some(until),
            _ => None,
        });
        assert_eq!(until, Some(Instant::from_nanos(50_000_000_000)));
        // Compacted: the same log, fewer lines (vm1's migration ended).
        w.compact(Instant::ZERO).unwrap();
        let compacted = std::fs::read_to_string(&path).unwrap();
        assert!(compacted.lines().count() < text.lines().count());
        let again = read(&path, 1_000).unwrap();
        assert_eq!(again.log, applied(&es));
        assert_eq!(again.left, vms(&["vm2"]));
        assert!(!d.join("hv1.migrations.log.tmp").exists());
        // A missing file is an empty log.
        let none = read(&d.join("nothing.log"), 0).unwrap();
        assert_eq!((none.entries, none.log), (0, AgentLog::new()));
        assert!(none.left.is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_torn_last_entry_is_dropped_with_a_warning() {
        let d = dir("torn");
        let path = d.join("hv.log");
        let none = BTreeSet::new();
        let mut w = LogWriter::create(&path, AgentLog::new(), none.clone(), 0).unwrap();
        let es = entries();
        w.append(&es, &none, Instant::ZERO).unwrap();
        let full = std::fs::read(&path).unwrap();
        // Cut in the middle of the last entry: it goes, the rest stays.
        let cut = full.len() - 9;
        std::fs::write(&path, &full[..cut]).unwrap();
        let got = read(&path, 0).unwrap();
        assert_eq!(got.entries, es.len() - 1);
        assert_eq!(got.log, applied(&es[..es.len() - 1]));
        let warning = got.torn.unwrap();
        assert!(
            warning.contains(&format!("hv.log:{}:", es.len() + 2)) && warning.contains("torn"),
            "{warning}"
        );
        // A tail of zeros (a crash after the size grew, before the data
        // was written) is torn too.
        let mut zeros = full.clone();
        zeros.extend([0u8; 32]);
        std::fs::write(&path, &zeros).unwrap();
        let got = read(&path, 0).unwrap();
        assert_eq!((got.entries, got.torn.is_some()), (es.len(), true));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_corrupt_entry_before_the_end_is_refused_with_its_line() {
        let d = dir("corrupt");
        let path = d.join("hv.log");
        let none = BTreeSet::new();
        let mut w = LogWriter::create(&path, AgentLog::new(), none.clone(), 0).unwrap();
        w.append(&entries(), &none, Instant::ZERO).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        // Line 4: the header, none left, Began, Accepted.
        lines[3] = lines[3].replace("Accepted", "Acepted");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let e = read(&path, 0).unwrap_err().to_string();
        assert!(
            e.contains("hv.log:4: entry 3:") && e.contains("Acepted"),
            "{e}"
        );
        // A header of another format, or none, is refused too.
        lines[3] = lines[3].replace("Acepted", "Accepted");
        let other = lines[0].replace("\"format\":1", "\"format\":2");
        let mut bad = lines.clone();
        bad[0] = other;
        std::fs::write(&path, bad.join("\n") + "\n").unwrap();
        let e = read(&path, 0).unwrap_err().to_string();
        assert!(e.contains("hv.log:1: the header: format 2"), "{e}");
        std::fs::write(&path, lines[1..].join("\n") + "\n").unwrap();
        let e = read(&path, 0).unwrap_err().to_string();
        assert!(
            e.contains("hv.log:1:") && e.contains("not the header"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_file_is_compacted_past_its_bound() {
        let d = dir("compact");
        let path = d.join("hv.log");
        let none = BTreeSet::new();
        let mut w = LogWriter::create(&path, AgentLog::new(), none.clone(), 0).unwrap();
        let es = entries();
        // Migrations that begin and end: the compacted log is tiny.
        let mut n = 0;
        while w.compactions() == 0 {
            let mut batch = Vec::new();
            for _ in 0..100 {
                let mut e = es[0].clone();
                if let LogEntry::Began { recovery, .. } = &mut e {
                    recovery.id = n;
                }
                batch.extend([e, LogEntry::Ended { id: n, done: false }]);
                n += 1;
            }
            w.append(&batch, &none, Instant::ZERO).unwrap();
            assert!(n < 100_000, "never compacted");
        }
        assert!(w.bytes() < 1024, "{} bytes after compaction", w.bytes());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), w.bytes());
        assert_eq!(read(&path, 0).unwrap().log, *w.log());
        let _ = std::fs::remove_dir_all(&d);
    }
}
