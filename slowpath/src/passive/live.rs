//! Passive reading on the appliance: a slow-path lcore gets a copy of every
//! packet of the flows a passive rule may read (the worker forwards the
//! originals untouched), reads the sessions the rule chose, and writes each
//! one's event when its flow ends, with what was read. Sans-IO.

use std::collections::HashMap;

use tlsgate_config::policy::KeyFormat;
use tlsgate_core::escalate::PassiveWatch;
use tlsgate_core::event::{DecryptFacts, SessionEvent};

use super::capture::{CaptureReader, Endpoint, SessionReport};
use super::{Keys, Mode, ServerKey, Unreadable};
use crate::export::Frames;

/// One lcore's passive reading.
pub struct LiveReader {
    reader: CaptureReader,
    /// Events waiting for their flow's end, by (client, server), with when the watch began.
    pending: HashMap<(Endpoint, Endpoint), (SessionEvent, u64)>,
}

impl LiveReader {
    /// A reader holding at most `max_flows` flows, each direction reordered by at most `window` bytes.
    pub fn new(max_flows: usize, window: usize) -> LiveReader {
        let mut reader = CaptureReader::new(Keys::default(), max_flows).with_window(window);
        reader.passive_only_for(Default::default());
        LiveReader { reader, pending: HashMap::new() }
    }

    /// A copy of a packet the worker forwarded; decrypted frames to `out`,
    /// events of the sessions that ended to `events`.
    pub fn copy(&mut self, now: u64, frame: &[u8], out: &mut Frames, events: &mut Vec<SessionEvent>) {
        self.reader.frame(now, frame, out);
        self.collect(events);
    }

    /// A passive rule decided to read this flow: its event waits for the flow's end.
    pub fn watch(&mut self, w: PassiveWatch, now: u64) {
        let Some(k) = w.policy.known_keys().get(w.known_key) else { return };
        // The policy took only RSA keys for passive rules; a key that still
        // cannot serve leaves the session unread, and its event says `no_key`.
        if !self.reader.has_server_key(&k.cert_sha256) {
            if let Ok(key) = ServerKey::new(&k.cert_der, &k.key_der, k.key_format == KeyFormat::Pkcs1) {
                self.reader.add_server_key(key);
            }
        }
        let ev = w.event;
        let ends = ((ev.flow.src_ip, ev.flow.src_port), (ev.flow.dest_ip, ev.flow.dest_port));
        self.reader.allow(ends);
        self.pending.insert(ends, (ev, now));
    }

    /// Timers: flows idle past their timeout end (a watched one after
    /// `watched_idle_ns`, others, whose copies stopped at their decision,
    /// after `idle_ns`); a watch whose flow never showed ends too.
    pub fn expire(
        &mut self,
        now: u64,
        idle_ns: u64,
        watched_idle_ns: u64,
        out: &mut Frames,
        events: &mut Vec<SessionEvent>,
    ) {
        self.reader.expire(now, idle_ns, watched_idle_ns, out);
        self.collect(events);
        let lost: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, (_, since))| now.saturating_sub(*since) > watched_idle_ns)
            .map(|(k, _)| *k)
            .collect();
        for k in lost {
            if let Some((ev, _)) = self.pending.remove(&k) {
                self.reader.disallow(&k);
                events.push(with_reading(ev, None));
            }
        }
    }

    /// At shutdown: every flow ends, every waiting event is written.
    pub fn finish(&mut self, now: u64, out: &mut Frames, events: &mut Vec<SessionEvent>) {
        self.reader.close_all(now, out);
        self.collect(events);
        for (_, (ev, _)) in self.pending.drain() {
            events.push(with_reading(ev, None));
        }
    }

    fn collect(&mut self, events: &mut Vec<SessionEvent>) {
        for r in self.reader.take_done() {
            let ends = (r.client, r.server);
            if let Some((ev, _)) = self.pending.remove(&ends) {
                self.reader.disallow(&ends);
                events.push(with_reading(ev, Some(&r)));
            }
        }
    }
}

/// The event with what reading its session came to (`None`: its flow was never seen whole).
fn with_reading(mut ev: SessionEvent, r: Option<&SessionReport>) -> SessionEvent {
    let mut d = DecryptFacts { mode: Some(Mode::Passive.name()), ..Default::default() };
    match r {
        Some(r) => {
            let rep = &r.report;
            d.client_version = rep.version;
            d.server_version = rep.version;
            d.bytes_to_server = rep.bytes_to_server;
            d.bytes_to_client = rep.bytes_to_client;
            d.records_to_server = rep.records_to_server;
            d.records_to_client = rep.records_to_client;
            d.records_failed = rep.mac_failures;
            d.records_not_decrypted = rep.records_not_decrypted;
            d.reason_code = rep.reason_code();
        }
        None => d.reason_code = Some(Unreadable::HandshakeNotSeen.code()),
    }
    ev.decrypt = Some(Box::new(d));
    ev
}
