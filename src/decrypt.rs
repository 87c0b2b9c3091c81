//! The replay's reading pass: after the data plane has judged a capture,
//! the sessions it may read are decrypted from the capture itself, with a
//! key log (`--keylog`) and with the imported keys of passive
//! `decrypt-known-key` rules where the policy chose them. The plaintext goes
//! to `--decrypted` as synthetic TCP streams; each session's event gets a
//! `decrypt` object saying what was read.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use crate::plaintext::PlaintextOut;
use serde_json::{json, Value};
use tlsgate_config::policy::{KeyFormat, Policy};
use tlsgate_slowpath::passive::capture::{CaptureReader, SessionReport};
use tlsgate_slowpath::passive::keylog::KeyLog;
use tlsgate_slowpath::passive::{Keys, ServerKey};

/// Flows held at once by the reading pass.
const MAX_FLOWS: usize = 1 << 20;

/// What the reading pass is given.
pub struct Reading<'a> {
    /// The key log's text, if `--keylog` was given.
    pub keylog: Option<String>,
    /// The policy, whose passive known keys are used.
    pub policy: Option<&'a Policy>,
    /// Where the decrypted streams go.
    pub decrypted: Option<&'a Path>,
}

/// (client address, client port, server address, server port).
type Endpoints = (IpAddr, u16, IpAddr, u16);

/// Reads `capture` (Ethernet frames); events appended to `events` after byte
/// `events_from` get their `decrypt` object. Returns the summary lines.
pub fn read(capture: &Path, events: &Path, events_from: u64, how: Reading) -> Result<Vec<String>, String> {
    let mut keylog = how.keylog.as_deref().map(KeyLog::parse);
    let mut summary = Vec::new();
    if let Some(k) = &keylog {
        summary.push(format!(
            "key log: {} session(s), {} line(s) not understood, {} not used",
            k.sessions(),
            k.bad_lines,
            k.unused_lines
        ));
    }
    let mut server_keys = Vec::new();
    if let Some(p) = how.policy {
        for k in p.passive_keys() {
            match ServerKey::new(&k.cert_der, &k.key_der, k.key_format == KeyFormat::Pkcs1) {
                Ok(key) => server_keys.push(key),
                Err(e) => summary.push(format!("known key {:?}: {e}", k.name)),
            }
        }
    }
    let text = std::fs::read_to_string(events).unwrap_or_default();
    let from = (events_from as usize).min(text.len());
    let (before, new) = text.split_at(from);
    let mut lines: Vec<Value> = new.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    // Sessions the policy read passively; the key log opens any session.
    let passive: HashSet<Endpoints> =
        lines.iter().filter(|e| e["policy"]["reason_code"] == "read_passively").filter_map(endpoints).collect();
    let keys = Keys::new(keylog.take(), server_keys);
    let mut reader = CaptureReader::new(keys, MAX_FLOWS);
    reader.passive_only_for(passive.iter().map(|e| ((e.0, e.1), (e.2, e.3))).collect());
    let mut out = match how.decrypted {
        Some(p) => Some(PlaintextOut::open(None, Some(p))?),
        None => None,
    };
    // Read whole: a read interrupted by one of the process's signals is retried by `fs::read`.
    let raw = std::fs::read(capture).map_err(|e| format!("{}: {e}", capture.display()))?;
    let bad = |e: pcap_file::PcapError| format!("reading {}: {e}", capture.display());
    let mut pcap = pcap_file::pcap::PcapReader::new(&raw[..]).map_err(bad)?;
    let mut frames = Vec::new();
    let mut last = 0;
    while let Some(p) = pcap.next_packet() {
        let p = p.map_err(bad)?;
        last = p.timestamp.as_nanos() as u64;
        reader.frame(last, &p.data, &mut frames);
        if let Some(o) = &mut out {
            o.frames(&frames).map_err(|e| format!("writing the decrypted capture: {e}"))?;
        }
        frames.clear();
    }
    let reports = reader.finish(last, &mut frames);
    if let Some(mut o) = out {
        o.frames(&frames).map_err(|e| e.to_string())?;
        o.finish().map_err(|e| e.to_string())?;
    }

    let mut used = vec![false; reports.len()];
    for e in &mut lines {
        let Some(ends) = endpoints(e) else { continue };
        let found = reports.iter().enumerate().find(|(i, r)| {
            !used[*i] && (r.client.0, r.client.1, r.server.0, r.server.1) == ends && r.report.cipher_suite.is_some()
        });
        let Some((i, r)) = found else { continue };
        // Only sessions a key log or a passive rule concerns get a `decrypt` object.
        if r.report.mode.is_none() && how.keylog.is_none() && !passive.contains(&ends) {
            continue;
        }
        used[i] = true;
        if let Some(o) = e.as_object_mut() {
            o.insert("decrypt".into(), decrypt_object(r));
        }
    }
    // Sessions the data plane wrote no event for (a replay without a policy only bridges): their own.
    for (r, _) in reports.iter().zip(&used).filter(|(r, used)| !**used && r.report.mode.is_some()) {
        lines.push(json!({
            "timestamp": tlsgate_core::event::eve_timestamp(r.first_ns),
            "event_type": "tls",
            "src_ip": r.client.0.to_string(),
            "src_port": r.client.1,
            "dest_ip": r.server.0.to_string(),
            "dest_port": r.server.1,
            "proto": "TCP",
            "tls": { "version": r.report.version },
            "decrypt": decrypt_object(r),
        }));
    }
    let mut f = File::create(events).map_err(|e| format!("{}: {e}", events.display()))?;
    f.write_all(before.as_bytes()).map_err(|e| e.to_string())?;
    for e in &lines {
        writeln!(f, "{e}").map_err(|e| e.to_string())?;
    }

    let read = reports.iter().filter(|r| r.report.mode.is_some()).count();
    let by = |m: &str| reports.iter().filter(|r| r.report.mode.map(|x| x.name()) == Some(m)).count();
    summary.push(format!(
        "decrypted: {read} of {} TLS session(s) ({} passive, {} key log)",
        reports.len(),
        by("passive"),
        by("keylog")
    ));
    for r in reports
        .iter()
        .filter(|r| r.report.mode.is_some() || passive.contains(&(r.client.0, r.client.1, r.server.0, r.server.1)))
    {
        let rep = &r.report;
        let what = match (rep.mode, rep.unreadable) {
            (Some(m), _) => format!(
                "{}: {} plaintext bytes to the server, {} to the client{}",
                m.name(),
                rep.bytes_to_server,
                rep.bytes_to_client,
                if rep.mac_failures > 0 {
                    format!(", {} record(s) failed their MAC", rep.mac_failures)
                } else {
                    String::new()
                }
            ),
            (None, Some(u)) => format!("not read: {}", u.code()),
            (None, None) => "not read".to_string(),
        };
        summary.push(format!("  {}:{} -> {}:{}  {what}", r.client.0, r.client.1, r.server.0, r.server.1));
    }
    Ok(summary)
}

/// The event's `decrypt` object for a session read (or not).
fn decrypt_object(r: &SessionReport) -> Value {
    let rep = &r.report;
    let mut v = json!({
        "mode": rep.mode.map(|m| m.name()),
        "version": rep.version,
        "cipher_suite": rep.cipher_suite.map(|c| format!("0x{c:04x}")),
        "records_to_server": rep.records_to_server,
        "records_to_client": rep.records_to_client,
        "bytes_to_server": rep.bytes_to_server,
        "bytes_to_client": rep.bytes_to_client,
        "records_failed": rep.mac_failures,
        "records_not_decrypted": rep.records_not_decrypted,
        "reason_code": rep.reason_code(),
        "resumed": rep.resumed,
        "extended_master_secret": rep.extended_master_secret,
        "truncated": rep.truncated,
    });
    if let Some(early) = rep.early_data {
        v["early_data"] = json!(early.name());
        if rep.early_data_refused_bytes > 0 {
            v["early_data_refused_bytes"] = json!(rep.early_data_refused_bytes);
        }
        if rep.early_data_not_held_bytes > 0 {
            v["early_data_not_held_bytes"] = json!(rep.early_data_not_held_bytes);
        }
    }
    v
}

/// A `tls` event's client and server.
fn endpoints(e: &Value) -> Option<Endpoints> {
    if e["event_type"] != "tls" {
        return None;
    }
    let ip = |k: &str| e[k].as_str()?.parse::<IpAddr>().ok();
    let port = |k: &str| e[k].as_u64().and_then(|p| u16::try_from(p).ok());
    Some((ip("src_ip")?, port("src_port")?, ip("dest_ip")?, port("dest_port")?))
}
