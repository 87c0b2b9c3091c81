//! The event log on the control thread: session events from the workers'
//! rings, written as JSON lines (to a file, reopened on SIGUSR1 for log
//! rotation, or to standard output with `-`), optionally also to syslog
//! (RFC 5424 over the local socket), and tallied for the summary a replay
//! prints and for the metrics.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use tlsgate_core::event::SessionEvent;

/// Where events go.
pub struct EventLog {
    file: Option<BufWriter<Box<dyn Write + Send>>>,
    path: Option<PathBuf>,
    syslog: Option<Syslog>,
    /// The tally so far.
    pub summary: Summary,
}

/// Sessions by action, by rule, and the SNIs seen most.
#[derive(Default)]
pub struct Summary {
    /// Events written.
    pub sessions: u64,
    by_action: HashMap<String, u64>,
    by_reason: HashMap<String, u64>,
    by_rule: HashMap<String, u64>,
    by_sni: HashMap<String, u64>,
    not_as_asked: u64,
    first: Vec<String>,
    /// `dns` events: answers rewritten without their ECH configurations.
    dns_rewritten: u64,
    /// What the metrics show of the events, when they are served.
    pub metrics: Option<tlsgate_dataplane::metrics::Tally>,
}

/// An event file: appended to, or standard output for `-`.
fn open_file(p: &Path) -> std::io::Result<BufWriter<Box<dyn Write + Send>>> {
    let w: Box<dyn Write + Send> = if p == Path::new("-") {
        Box::new(std::io::stdout())
    } else {
        Box::new(OpenOptions::new().create(true).append(true).open(p)?)
    };
    Ok(BufWriter::new(w))
}

/// Syslog over the local datagram socket, RFC 5424: facility local0,
/// severity informational, the event's JSON as the message.
struct Syslog {
    socket: UnixDatagram,
    host: String,
    pid: u32,
}

impl Syslog {
    fn connect(path: &Path) -> std::io::Result<Syslog> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        socket.set_nonblocking(true)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map_or("-".into(), |h| h.trim().to_string());
        Ok(Syslog { socket, host, pid: std::process::id() })
    }

    /// Sends one message; a syslog daemon that cannot keep up loses it, the
    /// appliance does not wait.
    fn send(&self, json: &str) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        // RFC 3339, as RFC 5424 wants it: EVE's `+0000` becomes `Z`.
        let ts = tlsgate_core::event::eve_timestamp(now.as_nanos() as u64).replace("+0000", "Z");
        // <PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG (PRI 134: local0.info)
        let msg = format!("<134>1 {ts} {} tlsgate {} event - {json}", self.host, self.pid);
        let _ = self.socket.send(msg.as_bytes());
    }
}

/// Sessions listed one by one in the summary before it only counts.
const LISTED: usize = 25;

impl EventLog {
    /// Appends to `path` (created if missing; `-` is standard output);
    /// `None` keeps only the tally.
    pub fn open(path: Option<&Path>) -> std::io::Result<EventLog> {
        let file = match path {
            Some(p) => Some(open_file(p)?),
            None => None,
        };
        Ok(EventLog { file, path: path.map(Path::to_path_buf), syslog: None, summary: Summary::default() })
    }

    /// Also sends every event to syslog at `socket` (`/dev/log`).
    pub fn with_syslog(mut self, socket: &Path) -> std::io::Result<EventLog> {
        self.syslog = Some(Syslog::connect(socket)?);
        Ok(self)
    }

    /// Closes the file and opens its path again (after logrotate moved it):
    /// every event written before is in the old file, every later one in the
    /// new. Standard output is left as it is.
    pub fn reopen(&mut self) -> std::io::Result<()> {
        let Some(p) = self.path.clone().filter(|p| p != Path::new("-")) else { return Ok(()) };
        if let Some(f) = &mut self.file {
            f.flush()?;
        }
        self.file = Some(open_file(&p)?);
        Ok(())
    }

    /// Writes one event and tallies it.
    pub fn write(&mut self, ev: &SessionEvent) -> std::io::Result<()> {
        if self.file.is_some() || self.syslog.is_some() {
            let line = serde_json::to_string(&ev.to_json())?;
            if let Some(f) = &mut self.file {
                f.write_all(line.as_bytes())?;
                f.write_all(b"\n")?;
            }
            if let Some(s) = &self.syslog {
                s.send(&line);
            }
        }
        let s = &mut self.summary;
        if let Some(t) = &mut s.metrics {
            t.record(ev);
        }
        if ev.dns.is_some() {
            s.dns_rewritten += 1;
            return Ok(());
        }
        s.sessions += 1;
        let o = &ev.outcome;
        let action = if o.asked == o.carried_out {
            o.carried_out.name().to_string()
        } else if o.cause == tlsgate_core::outcome::Cause::ReadPassively {
            // Forwarded untouched is what a passive rule asks.
            format!("{} (passive)", o.asked.name())
        } else {
            s.not_as_asked += 1;
            format!("{} (asked: {})", o.carried_out.name(), o.asked.name())
        };
        *s.by_action.entry(action).or_default() += 1;
        *s.by_reason.entry(o.cause.code().to_string()).or_default() += 1;
        *s.by_rule
            .entry(o.rule.clone().unwrap_or_else(|| "(no rule: default or undecryptable action)".into()))
            .or_default() += 1;
        let sni = match &ev.client_hello {
            Some(ch) => ch.sni.clone().unwrap_or_else(|| "(no SNI)".into()),
            None => "(not TLS)".into(),
        };
        if s.first.len() < LISTED {
            s.first.push(one_line(ev, &sni));
        }
        *s.by_sni.entry(sni).or_default() += 1;
        Ok(())
    }

    /// Flushes the file.
    pub fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Summary {
    /// Prints the tally.
    pub fn print(&self) {
        println!("sessions: {}", self.sessions);
        for line in &self.first {
            println!("  {line}");
        }
        if self.sessions as usize > self.first.len() {
            println!("  ... ({} more in the event log)", self.sessions as usize - self.first.len());
        }
        print_table("by action", &self.by_action, usize::MAX);
        print_table("by reason code", &self.by_reason, usize::MAX);
        print_table("by rule", &self.by_rule, usize::MAX);
        print_table("top SNIs", &self.by_sni, 10);
        if self.dns_rewritten > 0 {
            println!("dns answers rewritten without ECH configurations: {}", self.dns_rewritten);
        }
        if self.not_as_asked > 0 {
            println!("  ({} session(s) were not handled as the policy asked; the events say why)", self.not_as_asked);
        }
    }
}

/// `192.168.10.22:50002 -> 203.0.113.12:443 www.casino.test TLS 1.3: block-with-reset (rule "no-gambling" matched)`
fn one_line(ev: &SessionEvent, sni: &str) -> String {
    let version = ev.server_hello.as_ref().and_then(|s| s.version).map(|v| v.event_name()).unwrap_or(if ev.tls {
        "TLS"
    } else {
        "not TLS"
    });
    let o = &ev.outcome;
    let asked = if o.asked != o.carried_out { format!(" (asked: {})", o.asked.name()) } else { String::new() };
    format!(
        "{}:{} -> {}:{} {sni} {version}: {}{asked} [{}]; {}",
        ev.flow.src_ip,
        ev.flow.src_port,
        ev.flow.dest_ip,
        ev.flow.dest_port,
        o.carried_out.name(),
        o.cause.code(),
        o.reason()
    )
}

fn print_table(title: &str, m: &HashMap<String, u64>, top: usize) {
    if m.is_empty() {
        return;
    }
    println!("{title}:");
    let mut rows: Vec<_> = m.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (k, n) in rows.into_iter().take(top) {
        println!("  {n:>8}  {k}");
    }
}
