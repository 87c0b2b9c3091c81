//! The inline normaliser's TCP half: per flow being inspected, a model of
//! what each receiving stack accepts, so that the observer judges exactly
//! the bytes the server (and the client) will take, and nothing else.
//!
//! A segment the receiver would drop teaches the observer nothing: a bad IP
//! or TCP checksum, data without the ACK flag, an ACK of data never sent,
//! data that starts past the receive window, a timestamp older than the
//! last one accepted (PAWS, RFC 7323), a TCP-MD5 option (RFC 2385) where
//! none was set up at the handshake (or none where one was). A RST counts
//! only exactly at the next sequence number (RFC 5961); any other is ignored,
//! so that a flow cannot be made to look closed or mid-stream. Checks that
//! need the handshake (window, ACK, MD5) apply once both SYNs were seen.

use crate::packet::{tcp_flags, TcpFrame};

crate::labels! {
    /// What the normaliser found in a segment (each is counted; the session's
    /// event lists those it met under `evasion`).
    pub enum Anomaly {
    /// The IPv4 header or TCP checksum is wrong.
    BadChecksum => bad_checksum,
    /// Data (or FIN) without the ACK flag after the handshake.
    NoAck => no_ack,
    /// It acknowledges data the other side never sent.
    AckOfUnsent => ack_of_unsent,
    /// Its data starts past the receiver's window.
    OutOfWindow => out_of_window,
    /// Its timestamp is older than one the receiver already took (PAWS).
    PawsOld => paws_old,
    /// A TCP-MD5 option where the handshake set up none, or none where it did.
    TcpMd5 => tcp_md5,
    /// A RST not exactly at the next sequence number.
    RstNotInWindow => rst_not_in_window,
    /// It resends bytes already judged, with other bytes.
    ConflictingRetransmission => conflicting_retransmission,
    /// Its IP fragments overlapped (the datagram was discarded).
    FragmentOverlap => fragment_overlap,
    }
}

/// What one side has sent, as its receiver knows it.
#[derive(Debug, Clone, Copy, Default)]
struct Sender {
    /// Its SYN was seen (so its sequence space is known).
    syn: bool,
    /// It offered window scaling in its SYN: the shift.
    wscale: Option<u8>,
    /// Its SYN carried TCP-MD5.
    md5: bool,
    /// One past the highest sequence number it sent (SYN and FIN count).
    max_end: u32,
    /// The right edge of the window it last advertised to the other side.
    window_edge: Option<u32>,
    /// Its newest timestamp value accepted.
    ts_recent: Option<u32>,
}

/// Both directions of a flow being inspected.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TcpTrack {
    /// Index 0: the client's segments; 1: the server's.
    senders: [Sender; 2],
}

/// `a` is after `b` on the 32-bit sequence circle.
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl TcpTrack {
    /// Whether the receiver of `t` (sent by the client if `from_client`)
    /// would take it; why not if not. Changes nothing.
    pub(super) fn check(&self, t: &TcpFrame, from_client: bool, checksums: bool) -> Result<(), Anomaly> {
        if checksums && !t.checksums_ok() {
            return Err(Anomaly::BadChecksum);
        }
        let me = &self.senders[usize::from(!from_client)];
        let peer = &self.senders[usize::from(from_client)];
        let handshake = me.syn && peer.syn;
        if t.has(tcp_flags::RST) {
            let exact = if me.syn {
                t.seq == me.max_end
            } else if peer.syn && t.has(tcp_flags::ACK) {
                // A reset answering a SYN: it must acknowledge it.
                t.ack == peer.max_end
            } else {
                true // picked up mid-stream: nothing to compare with
            };
            return if exact { Ok(()) } else { Err(Anomaly::RstNotInWindow) };
        }
        if t.has(tcp_flags::SYN) {
            return Ok(());
        }
        let options = t.options();
        if handshake && options.md5 != (me.md5 && peer.md5) {
            return Err(Anomaly::TcpMd5);
        }
        let carries = t.payload_len() > 0 || t.has(tcp_flags::FIN);
        if !t.has(tcp_flags::ACK) {
            return if carries { Err(Anomaly::NoAck) } else { Ok(()) };
        }
        if peer.syn && after(t.ack, peer.max_end) {
            return Err(Anomaly::AckOfUnsent);
        }
        if let (true, Some(edge)) = (handshake && carries, peer.window_edge) {
            if !after(edge, t.seq) {
                return Err(Anomaly::OutOfWindow);
            }
        }
        if let (Some((tsval, _)), Some(recent)) = (options.timestamps, me.ts_recent) {
            if after(recent, tsval) {
                return Err(Anomaly::PawsOld);
            }
        }
        Ok(())
    }

    /// Learns from a segment its receiver takes.
    pub(super) fn learn(&mut self, t: &TcpFrame, from_client: bool) {
        let both_scale = self.senders.iter().all(|s| s.wscale.is_some());
        let me = &mut self.senders[usize::from(!from_client)];
        let options = t.options();
        if t.has(tcp_flags::SYN) {
            if !me.syn || t.seq_end() != me.max_end {
                me.max_end = t.seq_end();
            }
            me.syn = true;
            me.wscale = options.wscale;
            me.md5 = options.md5;
        } else if !me.syn || after(t.seq_end(), me.max_end) {
            me.max_end = t.seq_end();
        }
        if t.has(tcp_flags::ACK) {
            // The window field of a SYN is never scaled (RFC 7323).
            let shift = if t.has(tcp_flags::SYN) || !both_scale { 0 } else { me.wscale.unwrap_or(0) };
            me.window_edge = Some(t.ack.wrapping_add(u32::from(t.window) << shift));
        }
        if let Some((tsval, _)) = options.timestamps {
            if me.ts_recent.is_none_or(|r| !after(r, tsval)) {
                me.ts_recent = Some(tsval);
            }
        }
    }
}

/// The anomalies a session met, counted (for its event).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evasions([u32; Anomaly::COUNT]);

impl Evasions {
    /// Notes one.
    pub fn note(&mut self, a: Anomaly) {
        self.0[a as usize] = self.0[a as usize].saturating_add(1);
    }

    /// Whether none was met.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&n| n == 0)
    }

    /// (name, count) of each met.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u32)> + '_ {
        Anomaly::ALL.iter().zip(self.0.iter()).filter(|(_, &n)| n > 0).map(|(a, &n)| (a.name(), n))
    }
}
