//! The TCP endpoint that takes over one side of a connection mid-stream, from the state observed on the
//! wire (sequence numbers, windows, MSS, window scale, SACK-permitted, timestamps). Sans-IO: the caller
//! passes segments and `now_ns` in and pulls segments to send out; nothing here reads a clock or a socket.
//!
//! Choices made where the brief was silent:
//! - Retransmission after an RTO is go-back-N from `snd_una`; fast retransmit resends one segment and
//!   NewReno partial ACKs resend the next hole. Received SACK blocks are ignored; we send none.
//! - Zero-window probes are empty segments with `seq = snd_una - 1` (an old sequence number), which the
//!   peer answers with an ACK carrying its current window; one timer serves RTO and persist.
//! - A `snd_una` behind `snd_nxt` at takeover names bytes the original endpoint sent and we do not hold:
//!   we start from `snd_nxt` and cannot retransmit them.
//! - Forward progress for the user timeout: an ACK of new data, or any valid ACK while the peer's window is
//!   zero (the peer is alive, just not reading).
//! - Window scaling rounds the advertised window down; the right edge we remember never moves left, and
//!   we accept data up to our buffer's edge, which is never left of any edge we advertised.
//! - What the impersonated side had advertised is not in [`Takeover`]: we promise nothing until our first
//!   segment, and take whatever the peer sends within our buffer. The right edge moves only by at least
//!   one MSS (receiver silly-window avoidance).
//! - ACKs answering empty unacceptable segments, and challenge ACKs (RFC 5961 §7), are limited to one per
//!   100 ms; once closed (both FINs acknowledged) we answer only a FIN or data, so closed ends stay quiet.
//! - `sack_permitted` is accepted and unused: SACK blocks are neither sent nor acted on.

use std::collections::VecDeque;

/// Flag bits (same values as TCP's).
pub mod flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
}

/// One TCP segment as the endpoint sees it: parsed header fields and payload, no addresses or ports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Segment {
    /// Sequence number of the first octet (or of the SYN/FIN).
    pub seq: u32,
    /// Acknowledgment number (meaningful with [`flags::ACK`]).
    pub ack: u32,
    /// Flag bits, see [`flags`].
    pub flags: u8,
    /// The raw 16-bit window field, already scaled down by the sender's window scale.
    pub window: u16,
    /// Timestamps option: (TSval, TSecr).
    pub timestamps: Option<(u32, u32)>,
    /// SACK blocks received or sent; may stay empty on send.
    pub sack: Vec<(u32, u32)>,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// What the wire showed for this endpoint's side of the connection.
#[derive(Debug, Clone)]
pub struct Takeover {
    /// Next sequence number we (the impersonated side) send.
    pub snd_nxt: u32,
    /// Oldest unacknowledged sequence number (usually equal to `snd_nxt` at takeover).
    pub snd_una: u32,
    /// Next sequence number expected from the peer.
    pub rcv_nxt: u32,
    /// The peer's advertised window, already scaled (bytes).
    pub peer_window: u32,
    /// MSS the peer announced (what we may send in one segment).
    pub peer_mss: u16,
    /// Window scale the impersonated side announced (we shift our window right by it).
    pub our_wscale: u8,
    /// Window scale the peer announced (0 if none negotiated).
    pub peer_wscale: u8,
    /// Both SYNs carried SACK-permitted.
    pub sack_permitted: bool,
    /// Timestamp state, when both SYNs carried timestamps.
    pub timestamps: Option<TimestampState>,
}

/// Timestamps option state at takeover.
#[derive(Debug, Clone, Copy)]
pub struct TimestampState {
    /// Last TSval the impersonated side sent.
    pub our_last_tsval: u32,
    /// When it sent it (caller's clock, ns).
    pub our_last_tsval_at_ns: u64,
    /// Assumed clock rate of the impersonated side's TSval clock (Hz), e.g. 1000.
    pub ts_hz: u32,
    /// Last TSval seen from the peer.
    pub ts_recent: u32,
}

/// Resource and timer bounds of one endpoint.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes queued by `send()` and not yet acknowledged (default 256 KiB).
    pub send_buffer: usize,
    /// In-order bytes not yet read plus out-of-order bytes (default 256 KiB).
    pub recv_buffer: usize,
    /// Out-of-order segments held at most (default 64).
    pub max_ooo_segments: usize,
    /// Give up (RST) after this long without forward progress (default 60 s).
    pub user_timeout_ns: u64,
    /// Lower bound of the retransmission timeout (default 200 ms).
    pub min_rto_ns: u64,
    /// Upper bound of the retransmission timeout (default 60 s).
    pub max_rto_ns: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            send_buffer: 256 * 1024,
            recv_buffer: 256 * 1024,
            max_ooo_segments: 64,
            user_timeout_ns: 60 * NS_PER_SEC,
            min_rto_ns: 200 * NS_PER_MS,
            max_rto_ns: 60 * NS_PER_SEC,
        }
    }
}

/// Connection state, as far as the relay needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    /// Data flows both ways.
    Established,
    /// We sent FIN; the peer has not.
    FinWait,
    /// The peer sent FIN; we have not.
    CloseWait,
    /// Both sent FIN; ours is not yet acknowledged.
    Closing,
    /// Both FINs sent and acknowledged.
    Closed,
    /// RST sent (by `abort`) or accepted from the peer.
    Reset,
    /// The user timeout passed without progress; an RST was sent.
    TimedOut,
}

/// Counters of one endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Segments (data or FIN) sent again, for any reason.
    pub retransmissions: u64,
    /// Fast retransmits entered after three duplicate ACKs.
    pub fast_retransmits: u64,
    /// Retransmission timer expiries (with data outstanding and a non-zero window).
    pub rto_expirations: u64,
    /// Duplicate ACKs received.
    pub dup_acks: u64,
    /// Out-of-order segments (or pieces of them) buffered.
    pub ooo_buffered: u64,
    /// Out-of-order segments dropped for lack of room.
    pub ooo_dropped: u64,
    /// Zero-window probes sent.
    pub zero_window_probes: u64,
    /// Segments dropped by PAWS.
    pub paws_drops: u64,
    /// Challenge ACKs sent (RFC 5961) for in-window RSTs and SYNs.
    pub challenge_acks: u64,
    /// Segments received (all, before any check).
    pub segments_received: u64,
    /// Segments sent.
    pub segments_sent: u64,
    /// New payload bytes sent (retransmissions not counted).
    pub bytes_sent: u64,
    /// Payload bytes received in order (made readable).
    pub bytes_received: u64,
}

/// One TCP endpoint taking over one side of an established connection.
#[derive(Debug)]
pub struct TcpEndpoint {
    limits: Limits,
    // Send side.
    snd_una: u32,
    /// Next sequence number to send (moves back to `snd_una` on an RTO).
    snd_nxt: u32,
    /// Highest sequence number sent, plus one.
    snd_max: u32,
    snd_wnd: u32,
    snd_wl1: u32,
    snd_wl2: u32,
    /// `snd_una` seen at takeover: ACKs from there up to our `snd_una` are old but not bogus.
    snd_floor: u32,
    /// Bytes from `snd_una` on: unacknowledged, then unsent.
    send_buf: VecDeque<u8>,
    fin_queued: bool,
    fin_sent: bool,
    fin_acked: bool,
    mss: u32,
    peer_wscale: u8,
    our_wscale: u8,
    cwnd: u32,
    ssthresh: u32,
    /// Bytes acknowledged since the window last grew in congestion avoidance.
    ca_acked: u32,
    dup_acks: u32,
    /// Fast recovery in progress, until `snd_max` at its start is acknowledged.
    recover: Option<u32>,
    srtt_ns: Option<u64>,
    rttvar_ns: u64,
    rto_ns: u64,
    persist_ns: u64,
    /// Segment being timed without timestamps (Karn: cleared on any retransmission).
    rtt_probe: Option<(u32, u64)>,
    /// Retransmission or persist timer.
    timer: Option<u64>,
    retransmit_now: bool,
    probe_now: bool,
    progress_at: u64,
    kick: bool,
    // Receive side.
    rcv_nxt: u32,
    /// Right edge of the window we advertised; never moves left.
    rcv_adv: u32,
    recv_buf: VecDeque<u8>,
    /// Out-of-order pieces, disjoint, sorted by distance from `rcv_nxt`.
    ooo: Vec<(u32, Vec<u8>)>,
    ooo_bytes: usize,
    ooo_fin: Option<u32>,
    fin_received: bool,
    window_limit: usize,
    ack_now: bool,
    acks_owed: u8,
    last_oow_ack_ns: Option<u64>,
    ack_deadline: Option<u64>,
    unacked_segments: u32,
    last_ack_sent: u32,
    ts: Option<TsClock>,
    // Life.
    reset: bool,
    timed_out: bool,
    rst_pending: bool,
    stats: TcpStats,
}

const NS_PER_MS: u64 = 1_000_000;
const NS_PER_SEC: u64 = 1_000_000_000;
const INITIAL_RTO_NS: u64 = NS_PER_SEC;
const DELAYED_ACK_NS: u64 = 40 * NS_PER_MS;
const TIMESTAMPS_OPTION_LEN: u32 = 12;
/// Cap on immediate pure ACKs waiting to be sent (duplicate and challenge ACKs).
const MAX_ACKS_OWED: u8 = 8;
const MAX_CWND: u32 = 1 << 30;
/// Least time between ACKs answering unacceptable empty segments or in-window RSTs and SYNs.
const OOW_ACK_INTERVAL_NS: u64 = 100 * NS_PER_MS;

/// The impersonated side's TSval clock, continued.
#[derive(Debug, Clone, Copy)]
struct TsClock {
    base: u32,
    base_ns: u64,
    hz: u32,
    last_sent: u32,
    recent: u32,
}

impl TsClock {
    /// TSval for `now_ns` by the impersonated clock, not yet forced monotonic.
    fn raw(&self, now_ns: u64) -> u32 {
        let ticks = u128::from(now_ns.saturating_sub(self.base_ns)) * u128::from(self.hz) / u128::from(NS_PER_SEC);
        // Truncation is the TSval wrap-around.
        self.base.wrapping_add(ticks as u32)
    }

    /// TSval to put on a segment sent at `now_ns`: never behind the last one sent.
    fn next(&mut self, now_ns: u64) -> u32 {
        let v = self.raw(now_ns);
        if seq_gt(v, self.last_sent) {
            self.last_sent = v;
        }
        self.last_sent
    }
}

impl TcpEndpoint {
    /// Starts an endpoint from the state observed on the wire.
    pub fn takeover(t: Takeover, limits: Limits, now_ns: u64) -> TcpEndpoint {
        let floor = if seq_lt(t.snd_una, t.snd_nxt) && t.snd_nxt.wrapping_sub(t.snd_una) < 1 << 30 {
            t.snd_una
        } else {
            t.snd_nxt
        };
        let ts = t.timestamps.map(|s| TsClock {
            base: s.our_last_tsval,
            base_ns: s.our_last_tsval_at_ns,
            hz: s.ts_hz.max(1),
            last_sent: s.our_last_tsval,
            recent: s.ts_recent,
        });
        let announced = if t.peer_mss == 0 { 536 } else { u32::from(t.peer_mss) };
        let overhead = if ts.is_some() { TIMESTAMPS_OPTION_LEN } else { 0 };
        let mss = announced.saturating_sub(overhead).max(64);
        let rto_ns = INITIAL_RTO_NS.clamp(limits.min_rto_ns, limits.max_rto_ns.max(limits.min_rto_ns));
        TcpEndpoint {
            snd_una: t.snd_nxt,
            snd_nxt: t.snd_nxt,
            snd_max: t.snd_nxt,
            snd_wnd: t.peer_window,
            snd_wl1: t.rcv_nxt.wrapping_sub(1),
            snd_wl2: floor,
            snd_floor: floor,
            send_buf: VecDeque::new(),
            fin_queued: false,
            fin_sent: false,
            fin_acked: false,
            mss,
            peer_wscale: t.peer_wscale.min(14),
            our_wscale: t.our_wscale.min(14),
            cwnd: 10 * mss,
            ssthresh: u32::MAX,
            ca_acked: 0,
            dup_acks: 0,
            recover: None,
            srtt_ns: None,
            rttvar_ns: 0,
            rto_ns,
            persist_ns: rto_ns,
            rtt_probe: None,
            timer: None,
            retransmit_now: false,
            probe_now: false,
            progress_at: now_ns,
            kick: false,
            rcv_nxt: t.rcv_nxt,
            // What the impersonated side advertised is not known here: promise nothing yet. Data the peer
            // sends within the old window is still taken as far as our buffer reaches.
            rcv_adv: t.rcv_nxt,
            recv_buf: VecDeque::new(),
            ooo: Vec::new(),
            ooo_bytes: 0,
            ooo_fin: None,
            fin_received: false,
            window_limit: usize::MAX,
            ack_now: false,
            acks_owed: 0,
            last_oow_ack_ns: None,
            ack_deadline: None,
            unacked_segments: 0,
            last_ack_sent: t.rcv_nxt,
            ts,
            reset: false,
            timed_out: false,
            rst_pending: false,
            stats: TcpStats::default(),
            limits,
        }
    }

    /// A segment from the peer (already parsed from the wire).
    pub fn on_segment(&mut self, seg: &Segment, now_ns: u64) {
        self.on_segment_with(seg, &seg.payload, now_ns);
    }

    /// A segment from the peer whose payload is read in place (out of the
    /// frame it came in); `seg`'s own payload is not read.
    pub fn on_segment_with(&mut self, seg: &Segment, payload: &[u8], now_ns: u64) {
        self.stats.segments_received += 1;
        if self.reset || self.timed_out {
            return;
        }
        let is_rst = seg.flags & flags::RST != 0;
        let payload_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let seg_len = payload_len
            .saturating_add(u32::from(seg.flags & flags::SYN != 0))
            .saturating_add(u32::from(seg.flags & flags::FIN != 0));
        if self.state() == TcpState::Closed {
            // Like TIME-WAIT: answer a retransmitted FIN (or data), ignore the rest; answering pure ACKs
            // would start an ACK war with a peer that does the same.
            if !is_rst && (seg.flags & flags::FIN != 0 || !payload.is_empty()) {
                self.owe_ack();
            }
            return;
        }
        // PAWS (RFC 7323 §5): an older TSval than ts_recent marks an old duplicate.
        if let (Some(ts), Some((tsval, _))) = (&self.ts, seg.timestamps) {
            if !is_rst && seq_lt(tsval, ts.recent) {
                self.stats.paws_drops += 1;
                self.answer_unacceptable(seg_len, now_ns);
                return;
            }
        }
        let wnd = self.recv_space() as u32;
        let acceptable = if wnd == 0 {
            // Special allowance: ACKs and RSTs at exactly rcv_nxt still count; data is trimmed below.
            seg.seq == self.rcv_nxt
        } else {
            let in_wnd = |s: u32| s.wrapping_sub(self.rcv_nxt) < wnd;
            in_wnd(seg.seq) || (seg_len > 0 && in_wnd(seg.seq.wrapping_add(seg_len - 1)))
        };
        if !acceptable {
            if !is_rst {
                // Still take a valid ACK (a zero window of ours must not stall the other direction).
                if seg.flags & (flags::ACK | flags::SYN) == flags::ACK && self.ack_in_range(seg.ack) {
                    self.process_ack(seg, payload.is_empty(), now_ns);
                }
                self.answer_unacceptable(seg_len, now_ns);
            }
            return;
        }
        if is_rst {
            // RFC 5961 §3: exact match resets, anything else in the window earns a challenge ACK.
            if seg.seq == self.rcv_nxt {
                self.enter_reset();
            } else {
                self.challenge_ack(now_ns);
            }
            return;
        }
        if seg.flags & flags::SYN != 0 {
            // RFC 5961 §4.
            self.challenge_ack(now_ns);
            return;
        }
        if seg.flags & flags::ACK == 0 {
            return;
        }
        if seq_gt(seg.ack, self.snd_max) {
            self.answer_unacceptable(seg_len, now_ns);
            return;
        }
        if let (Some(ts), Some((tsval, _))) = (&mut self.ts, seg.timestamps) {
            if seq_le(seg.seq, self.last_ack_sent) && seq_ge(tsval, ts.recent) {
                ts.recent = tsval;
            }
        }
        self.process_ack(seg, payload.is_empty(), now_ns);
        self.process_data(seg, payload, now_ns);
        self.arm_timer(now_ns);
    }

    /// Queues application bytes to send; returns how many were accepted (bounded by `send_buffer`).
    pub fn send(&mut self, data: &[u8]) -> usize {
        if self.fin_queued || self.reset || self.timed_out {
            return 0;
        }
        let n = data.len().min(self.limits.send_buffer.saturating_sub(self.send_buf.len()));
        if n > 0 {
            if !self.busy() {
                self.kick = true;
            }
            self.send_buf.extend(&data[..n]);
        }
        n
    }

    /// Hands the in-order received bytes to `read` in place (one or two
    /// slices, in order), then drops them; returns how many.
    pub fn recv_with(&mut self, mut read: impl FnMut(&[u8])) -> usize {
        let n = self.recv_buf.len();
        let (a, b) = self.recv_buf.as_slices();
        for part in [a, b] {
            if !part.is_empty() {
                read(part);
            }
        }
        self.recv_buf.clear();
        if n > 0 {
            self.check_window_update();
        }
        n
    }

    /// Moves in-order received bytes into `out`; returns how many.
    pub fn recv(&mut self, out: &mut Vec<u8>) -> usize {
        // Slice by slice: a byte-wise drain costs more than the AES-GCM of the same bytes.
        self.recv_with(|part| out.extend_from_slice(part))
    }
    /// Gives back the buffers' spare room (a finished connection lingers
    /// only to answer a retransmitted FIN); what they hold stays.
    pub fn shrink(&mut self) {
        self.send_buf.shrink_to_fit();
        self.recv_buf.shrink_to_fit();
        self.ooo.shrink_to_fit();
    }

    /// Bytes of buffer room held (send, receive and out of order).
    pub fn capacity(&self) -> usize {
        self.send_buf.capacity() + self.recv_buf.capacity() + self.ooo.iter().map(|(_, v)| v.capacity()).sum::<usize>()
    }

    /// Bytes received in order and not yet read (the relay uses it for back-pressure).
    pub fn readable(&self) -> usize {
        self.recv_buf.len()
    }

    /// Bytes queued and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.send_buf.len()
    }

    /// Caps the window we advertise (bytes). It never shrinks the right edge already advertised
    /// (RFC 7323 §2.4, RFC 9293); it only stops opening it.
    pub fn set_window_limit(&mut self, bytes: usize) {
        self.window_limit = bytes;
        self.check_window_update();
    }

    /// Sends FIN after all queued data.
    pub fn close(&mut self) {
        if !self.fin_queued && !self.reset && !self.timed_out {
            if !self.busy() {
                self.kick = true;
            }
            self.fin_queued = true;
        }
    }

    /// Aborts: the next `poll_transmit` returns an RST.
    pub fn abort(&mut self) {
        if !self.reset && !self.timed_out {
            self.enter_reset();
            self.rst_pending = true;
        }
    }

    /// The next segment to send, if any: RST, owed ACKs, retransmissions, zero-window probes, data within
    /// the peer's window and our congestion window, FIN, delayed or window-update ACKs.
    pub fn poll_transmit(&mut self, now_ns: u64) -> Option<Segment> {
        let mut seg = Segment::default();
        let payload = self.next_segment(now_ns, &mut seg)?;
        copy_out(&self.send_buf, payload, &mut seg.payload);
        Some(seg)
    }

    /// The next segment's header into `out` (its payload left empty) and its
    /// payload read in place from the send buffer (one or two slices, in
    /// order): the bytes go from here straight into the frame.
    pub fn poll_transmit_ref(&mut self, now_ns: u64, out: &mut Segment) -> Option<[&[u8]; 2]> {
        let range = self.next_segment(now_ns, out)?;
        Some(ring_slices(&self.send_buf, range))
    }

    /// The next segment's header into `out`, and which bytes of the send
    /// buffer it carries.
    fn next_segment(&mut self, now_ns: u64, out: &mut Segment) -> Option<std::ops::Range<usize>> {
        if self.rst_pending {
            self.rst_pending = false;
            let seq = self.snd_max;
            return Some(self.segment(seq, flags::RST | flags::ACK, 0..0, now_ns, out));
        }
        if self.reset || self.timed_out {
            return None;
        }
        if self.kick {
            self.kick = false;
            self.progress_at = now_ns;
        }
        if self.ack_deadline.is_some_and(|d| d <= now_ns) {
            self.ack_now = true;
        }
        if self.acks_owed > 0 {
            self.acks_owed -= 1;
            return Some(self.pure_ack(now_ns, out));
        }
        let mut sent = None;
        if self.retransmit_now {
            self.retransmit_now = false;
            sent = self.retransmit_first(now_ns, out);
        }
        if sent.is_none() && self.probe_now {
            self.probe_now = false;
            self.stats.zero_window_probes += 1;
            let seq = self.snd_una.wrapping_sub(1);
            sent = Some(self.segment(seq, flags::ACK, 0..0, now_ns, out));
        }
        if sent.is_none() {
            sent = self.send_next(now_ns, out);
        }
        if sent.is_none() && self.ack_now {
            sent = Some(self.pure_ack(now_ns, out));
        }
        self.arm_timer(now_ns);
        sent
    }

    /// When the endpoint next needs `on_timeout` called even if nothing arrives (retransmission or
    /// persist timer, delayed ACK, user timeout).
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.reset || self.timed_out {
            return None;
        }
        [self.timer, self.ack_deadline, self.user_deadline()].into_iter().flatten().min()
    }

    /// Runs due timers.
    pub fn on_timeout(&mut self, now_ns: u64) {
        if self.reset || self.timed_out {
            return;
        }
        if self.user_deadline().is_some_and(|d| d <= now_ns) {
            self.timed_out = true;
            self.rst_pending = true;
            self.timer = None;
            self.ack_deadline = None;
            return;
        }
        if self.ack_deadline.is_some_and(|d| d <= now_ns) {
            self.ack_deadline = None;
            self.ack_now = true;
        }
        if self.timer.is_some_and(|d| d <= now_ns) {
            self.timer = None;
            if self.snd_wnd == 0 && self.has_unsent() {
                self.probe_now = true;
                self.persist_ns = (self.persist_ns.saturating_mul(2)).min(self.limits.max_rto_ns);
                self.timer = Some(now_ns.saturating_add(self.persist_ns));
            } else if self.outstanding() {
                self.stats.rto_expirations += 1;
                let flight = self.snd_max.wrapping_sub(self.snd_una);
                self.ssthresh = (flight / 2).max(2 * self.mss);
                self.ca_acked = 0;
                self.cwnd = self.mss;
                self.recover = None;
                self.dup_acks = 0;
                self.snd_nxt = self.snd_una;
                self.rtt_probe = None;
                self.rto_ns = (self.rto_ns.saturating_mul(2)).min(self.limits.max_rto_ns);
                self.timer = Some(now_ns.saturating_add(self.rto_ns));
            }
        }
        self.arm_timer(now_ns);
    }

    /// The connection state.
    pub fn state(&self) -> TcpState {
        if self.timed_out {
            TcpState::TimedOut
        } else if self.reset {
            TcpState::Reset
        } else if self.fin_received && self.fin_acked {
            TcpState::Closed
        } else if self.fin_received && self.fin_sent {
            TcpState::Closing
        } else if self.fin_sent {
            TcpState::FinWait
        } else if self.fin_received {
            TcpState::CloseWait
        } else {
            TcpState::Established
        }
    }

    /// FIN received and all data before it read.
    pub fn peer_closed(&self) -> bool {
        self.fin_received && self.recv_buf.is_empty()
    }

    /// The counters.
    pub fn stats(&self) -> TcpStats {
        self.stats
    }

    // ---- receive side ----

    /// Bytes from `rcv_nxt` to the right edge of our buffer (in-order unread bytes use the rest).
    fn recv_space(&self) -> usize {
        self.limits.recv_buffer.saturating_sub(self.recv_buf.len()).min(1 << 30)
    }

    /// The window we would offer now: free buffer capped by the window limit, rounded down to our scale.
    fn offered_window(&self) -> u32 {
        let w = self.recv_space().min(self.window_limit) as u32;
        let raw = (w >> self.our_wscale).min(u32::from(u16::MAX));
        raw << self.our_wscale
    }

    /// The window field to put on a segment; advances (never retracts) `rcv_adv`.
    fn advertise(&mut self) -> u16 {
        if seq_lt(self.rcv_adv, self.rcv_nxt) {
            // The peer filled our buffer beyond what we had advertised.
            self.rcv_adv = self.rcv_nxt;
        }
        let mut wnd = self.offered_window();
        let promised = self.rcv_adv.wrapping_sub(self.rcv_nxt);
        let edge = self.rcv_nxt.wrapping_add(wnd);
        // Receiver silly-window avoidance (RFC 9293 §3.8.6.2.2): move the edge right only by a useful step.
        let step = self.mss.min((self.limits.recv_buffer / 2) as u32).max(1);
        if seq_lt(edge, self.rcv_adv.wrapping_add(step)) {
            // Keep the promised edge (rounded down to our scale; our buffer edge is at or beyond it).
            wnd = promised;
        }
        let raw = (wnd >> self.our_wscale).min(u32::from(u16::MAX));
        let edge = self.rcv_nxt.wrapping_add(raw << self.our_wscale);
        if seq_gt(edge, self.rcv_adv) {
            self.rcv_adv = edge;
        }
        raw as u16
    }

    fn check_window_update(&mut self) {
        let edge = self.rcv_nxt.wrapping_add(self.offered_window());
        if seq_gt(edge, self.rcv_adv) {
            let grow = edge.wrapping_sub(self.rcv_adv);
            let threshold = (2 * self.mss).min((self.limits.recv_buffer / 2) as u32).max(1);
            if grow >= threshold {
                self.ack_now = true;
            }
        }
    }

    fn process_data(&mut self, seg: &Segment, payload: &[u8], now_ns: u64) {
        let fin = seg.flags & flags::FIN != 0;
        if self.fin_received {
            if !payload.is_empty() || fin {
                self.owe_ack();
            }
            return;
        }
        let mut seq = seg.seq;
        let mut data: &[u8] = payload;
        let behind = self.rcv_nxt.wrapping_sub(seq) as i32;
        if behind > 0 {
            let cut = (behind as usize).min(data.len());
            data = &data[cut..];
            seq = self.rcv_nxt;
            if data.is_empty() && !fin {
                // Entirely old: the peer may have lost our ACK.
                self.owe_ack();
                return;
            }
        }
        let off = seq.wrapping_sub(self.rcv_nxt) as usize;
        let room = self.recv_space().saturating_sub(off);
        let trimmed = data.len() > room;
        let fin_fits = !trimmed;
        data = &data[..data.len().min(room)];
        if trimmed {
            self.owe_ack();
        }
        if !data.is_empty() {
            if off == 0 {
                self.recv_buf.extend(data);
                self.rcv_nxt = self.rcv_nxt.wrapping_add(data.len() as u32);
                self.stats.bytes_received += data.len() as u64;
                let filled = self.drain_ooo();
                if filled || !self.ooo.is_empty() {
                    self.ack_now = true;
                } else {
                    self.unacked_segments += 1;
                    if self.unacked_segments >= 2 {
                        self.ack_now = true;
                    } else if self.ack_deadline.is_none() {
                        self.ack_deadline = Some(now_ns.saturating_add(DELAYED_ACK_NS));
                    }
                }
            } else {
                self.insert_ooo(seq, data);
                self.owe_ack();
            }
        }
        if fin && fin_fits {
            let fin_seq = seq.wrapping_add(data.len() as u32);
            if fin_seq == self.rcv_nxt {
                self.consume_fin();
            } else if seq_gt(fin_seq, self.rcv_nxt) {
                self.ooo_fin = Some(fin_seq);
            }
        }
        if let Some(f) = self.ooo_fin {
            if f == self.rcv_nxt {
                self.consume_fin();
            } else if seq_lt(f, self.rcv_nxt) {
                self.ooo_fin = None;
            }
        }
    }

    fn consume_fin(&mut self) {
        self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
        self.fin_received = true;
        self.ooo_fin = None;
        self.ooo.clear();
        self.ooo_bytes = 0;
        self.ack_now = true;
    }

    /// Stores the parts of `[seq, seq+len)` no held piece covers. `seq` is ahead of `rcv_nxt` and the
    /// range ends within our buffer, so held bytes stay within `recv_buffer`.
    fn insert_ooo(&mut self, seq: u32, data: &[u8]) {
        let base = self.rcv_nxt;
        let start = seq.wrapping_sub(base) as usize;
        let end = start + data.len();
        let mut pieces: Vec<(usize, usize)> = Vec::new();
        let mut cursor = start;
        for (s, d) in &self.ooo {
            let ps = s.wrapping_sub(base) as usize;
            let pe = ps + d.len();
            if pe <= cursor {
                continue;
            }
            if ps >= end {
                break;
            }
            if ps > cursor {
                pieces.push((cursor, ps));
            }
            cursor = cursor.max(pe);
        }
        if cursor < end {
            pieces.push((cursor, end));
        }
        if pieces.is_empty() {
            return;
        }
        let total: usize = pieces.iter().map(|(s, e)| e - s).sum();
        if self.ooo.len() + pieces.len() > self.limits.max_ooo_segments
            || self.recv_buf.len() + self.ooo_bytes + total > self.limits.recv_buffer
        {
            self.stats.ooo_dropped += 1;
            return;
        }
        for (s, e) in pieces {
            let piece = data[s - start..e - start].to_vec();
            let at = self.ooo.partition_point(|(q, _)| (q.wrapping_sub(base) as usize) < s);
            self.ooo.insert(at, (base.wrapping_add(s as u32), piece));
            self.ooo_bytes += e - s;
            self.stats.ooo_buffered += 1;
        }
    }

    /// Moves out-of-order pieces that now touch `rcv_nxt` into the in-order buffer; true if any did.
    fn drain_ooo(&mut self) -> bool {
        let mut moved = false;
        while let Some((s, _)) = self.ooo.first() {
            let ahead = s.wrapping_sub(self.rcv_nxt) as i32;
            if ahead > 0 {
                break;
            }
            let (s, d) = self.ooo.remove(0);
            self.ooo_bytes -= d.len();
            let skip = self.rcv_nxt.wrapping_sub(s) as usize;
            if skip < d.len() {
                let tail = &d[skip..];
                self.recv_buf.extend(tail);
                self.rcv_nxt = self.rcv_nxt.wrapping_add(tail.len() as u32);
                self.stats.bytes_received += tail.len() as u64;
                moved = true;
            }
        }
        moved
    }

    fn owe_ack(&mut self) {
        self.acks_owed = (self.acks_owed + 1).min(MAX_ACKS_OWED);
    }

    /// The ACK RFC 9293 asks for when a segment is dropped: always for one that occupies sequence space
    /// (the peer may have lost our ACK of it), rate limited for an empty one.
    fn answer_unacceptable(&mut self, seg_len: u32, now_ns: u64) {
        if seg_len > 0 {
            self.owe_ack();
        } else {
            self.owe_ack_limited(now_ns);
        }
    }

    /// An ACK answering an empty unacceptable segment (a zero-window probe, a stray or forged ACK):
    /// at most one per `OOW_ACK_INTERVAL_NS`, so that two confused ends cannot ping-pong forever.
    fn owe_ack_limited(&mut self, now_ns: u64) {
        if self.oow_ack_allowed(now_ns) {
            self.last_oow_ack_ns = Some(now_ns);
            self.owe_ack();
        }
    }

    fn oow_ack_allowed(&self, now_ns: u64) -> bool {
        !matches!(self.last_oow_ack_ns, Some(t) if now_ns.saturating_sub(t) < OOW_ACK_INTERVAL_NS)
    }

    /// RFC 5961 §7 asks for challenge ACKs to be rate limited: same limit as above.
    fn challenge_ack(&mut self, now_ns: u64) {
        if self.oow_ack_allowed(now_ns) {
            self.stats.challenge_acks += 1;
        }
        self.owe_ack_limited(now_ns);
    }

    fn enter_reset(&mut self) {
        self.reset = true;
        self.send_buf.clear();
        self.ooo.clear();
        self.ooo_bytes = 0;
        self.timer = None;
        self.ack_deadline = None;
        self.acks_owed = 0;
    }

    // ---- send side ----

    fn ack_in_range(&self, ack: u32) -> bool {
        seq_ge(ack, self.snd_una) && seq_le(ack, self.snd_max)
    }

    fn process_ack(&mut self, seg: &Segment, no_payload: bool, now_ns: u64) {
        let ack = seg.ack;
        let peer_wnd = u32::from(seg.window) << self.peer_wscale;
        if seq_lt(ack, self.snd_una) {
            // Only an ACK of bytes the original endpoint sent before takeover may still update the window.
            if !seq_ge(ack, self.snd_floor) {
                return;
            }
        } else if ack == self.snd_una {
            if no_payload
                && seg.flags & flags::FIN == 0
                && peer_wnd == self.snd_wnd
                && self.snd_wnd > 0
                && self.outstanding()
            {
                self.on_dup_ack();
            }
        } else {
            self.on_new_ack(seg, now_ns);
        }
        if seq_lt(self.snd_wl1, seg.seq) || (self.snd_wl1 == seg.seq && seq_le(self.snd_wl2, ack)) {
            let was_zero = self.snd_wnd == 0;
            self.snd_wnd = peer_wnd;
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = ack;
            if peer_wnd == 0 {
                // Bytes past the peer's right edge are lost to it: send them again when it opens.
                self.snd_nxt = self.snd_una;
                self.progress_at = now_ns;
                if !was_zero {
                    self.persist_ns = self.rto_ns;
                    self.timer = None;
                }
            } else if was_zero {
                self.persist_ns = self.rto_ns;
                self.timer = None;
            }
        } else if self.snd_wnd == 0 {
            self.progress_at = now_ns;
        }
    }

    fn on_dup_ack(&mut self) {
        self.stats.dup_acks += 1;
        self.dup_acks += 1;
        if self.recover.is_some() {
            self.cwnd = (self.cwnd + self.mss).min(MAX_CWND);
        } else if self.dup_acks == 3 {
            self.stats.fast_retransmits += 1;
            let flight = self.snd_max.wrapping_sub(self.snd_una);
            self.ssthresh = (flight / 2).max(2 * self.mss);
            self.ca_acked = 0;
            self.cwnd = self.ssthresh + 3 * self.mss;
            self.recover = Some(self.snd_max);
            self.retransmit_now = true;
        }
    }

    fn on_new_ack(&mut self, seg: &Segment, now_ns: u64) {
        let ack = seg.ack;
        let acked = ack.wrapping_sub(self.snd_una);
        // RTT sample: from TSecr when timestamps are on, else from the timed segment (Karn).
        let sample = match (&self.ts, seg.timestamps) {
            (Some(ts), Some((_, tsecr))) => {
                let ticks = ts.raw(now_ns).wrapping_sub(tsecr);
                (ticks < 1 << 30).then(|| u64::from(ticks) * NS_PER_SEC / u64::from(ts.hz))
            }
            _ => match self.rtt_probe {
                Some((seq, at)) if seq_gt(ack, seq) => {
                    self.rtt_probe = None;
                    Some(now_ns.saturating_sub(at))
                }
                _ => None,
            },
        };
        if let Some(r) = sample {
            self.update_rtt(r);
        }
        let data_acked = (acked as usize).min(self.send_buf.len());
        self.send_buf.drain(..data_acked);
        if self.fin_sent && acked as usize > data_acked {
            self.fin_acked = true;
        }
        self.snd_una = ack;
        self.snd_floor = ack;
        if seq_lt(self.snd_nxt, ack) {
            self.snd_nxt = ack;
        }
        self.progress_at = now_ns;
        self.dup_acks = 0;
        match self.recover {
            Some(rec) if seq_ge(ack, rec) => {
                self.cwnd = self.ssthresh.min(MAX_CWND);
                self.recover = None;
            }
            Some(_) => {
                // NewReno partial ACK: the next hole is lost too.
                self.retransmit_now = true;
                self.cwnd = self.cwnd.saturating_sub(acked).saturating_add(self.mss).max(self.mss);
            }
            // Grown by the bytes acknowledged, not by the ACKs (RFC 3465): a
            // receiver that acknowledges many segments at once (GRO, LRO,
            // ACK thinning) would otherwise hold the window back. Slow start
            // takes at most two segments an ACK; congestion avoidance one
            // segment a window's worth of bytes acknowledged.
            None if self.cwnd < self.ssthresh => {
                self.cwnd = self.cwnd.saturating_add(acked.min(2 * self.mss)).min(MAX_CWND);
            }
            None => {
                self.ca_acked = self.ca_acked.saturating_add(acked);
                if self.ca_acked >= self.cwnd {
                    self.ca_acked -= self.cwnd;
                    self.cwnd = self.cwnd.saturating_add(self.mss).min(MAX_CWND);
                }
            }
        }
        // Restart the retransmission timer for what is still outstanding.
        self.timer = None;
    }

    /// RFC 6298 §2.
    fn update_rtt(&mut self, r: u64) {
        match self.srtt_ns {
            None => {
                self.srtt_ns = Some(r);
                self.rttvar_ns = r / 2;
            }
            Some(srtt) => {
                self.rttvar_ns = (3 * self.rttvar_ns + srtt.abs_diff(r)) / 4;
                self.srtt_ns = Some((7 * srtt + r) / 8);
            }
        }
        let srtt = self.srtt_ns.unwrap_or(r);
        let rto = srtt.saturating_add((4 * self.rttvar_ns).max(NS_PER_MS));
        self.rto_ns = rto.clamp(self.limits.min_rto_ns, self.limits.max_rto_ns.max(self.limits.min_rto_ns));
    }

    /// Data or FIN sent and not yet acknowledged.
    fn outstanding(&self) -> bool {
        self.snd_una != self.snd_max
    }

    /// Data or a FIN not yet sent (from `snd_nxt`).
    fn has_unsent(&self) -> bool {
        let off = self.snd_nxt.wrapping_sub(self.snd_una) as usize;
        off < self.send_buf.len() || (self.fin_queued && !self.fin_acked && off == self.send_buf.len())
    }

    fn busy(&self) -> bool {
        self.outstanding() || !self.send_buf.is_empty() || (self.fin_queued && !self.fin_acked)
    }

    fn user_deadline(&self) -> Option<u64> {
        let waiting = self.outstanding() || (self.snd_wnd == 0 && self.has_unsent());
        waiting.then(|| self.progress_at.saturating_add(self.limits.user_timeout_ns))
    }

    /// Starts the retransmission (or persist) timer if something needs it, stops it if nothing does.
    fn arm_timer(&mut self, now_ns: u64) {
        let persist = self.snd_wnd == 0 && self.has_unsent();
        if !self.outstanding() && !persist {
            self.timer = None;
        } else if self.timer.is_none() {
            let after = if persist { self.persist_ns } else { self.rto_ns };
            self.timer = Some(now_ns.saturating_add(after));
        }
    }

    /// Fast retransmit or NewReno partial ACK: the first unacknowledged segment again.
    fn retransmit_first(&mut self, now_ns: u64, out: &mut Segment) -> Option<std::ops::Range<usize>> {
        if !self.outstanding() {
            return None;
        }
        let len = (self.mss as usize).min(self.send_buf.len());
        let with_fin = self.fin_sent && len == self.send_buf.len();
        if len == 0 && !with_fin {
            return None;
        }
        let flags = if with_fin { flags::ACK | flags::FIN } else { flags::ACK };
        let end = self.snd_una.wrapping_add(len as u32 + u32::from(with_fin));
        if seq_lt(self.snd_nxt, end) {
            self.snd_nxt = end;
        }
        self.stats.retransmissions += 1;
        self.rtt_probe = None;
        let seq = self.snd_una;
        Some(self.segment(seq, flags, 0..len, now_ns, out))
    }

    /// Data from `snd_nxt` within the windows, with FIN after the last byte when closing.
    fn send_next(&mut self, now_ns: u64, out: &mut Segment) -> Option<std::ops::Range<usize>> {
        let off = self.snd_nxt.wrapping_sub(self.snd_una) as usize;
        let unsent = self.send_buf.len().saturating_sub(off);
        let mut len = 0usize;
        if unsent > 0 && self.snd_wnd > 0 {
            let wnd = self.snd_wnd.min(self.cwnd) as usize;
            let usable = wnd.saturating_sub(off);
            len = (self.mss as usize).min(usable).min(unsent);
            // Sender-side silly window avoidance: a short segment only when it ends the data or the pipe
            // is empty.
            if len < self.mss as usize && len < unsent && off > 0 {
                len = 0;
            }
        }
        let fin = self.fin_queued && !self.fin_acked && off + len == self.send_buf.len();
        if len == 0 && !fin {
            return None;
        }
        let seq = self.snd_nxt;
        let end = seq.wrapping_add(len as u32 + u32::from(fin));
        if seq_lt(seq, self.snd_max) {
            self.stats.retransmissions += 1;
            self.rtt_probe = None;
        } else if self.ts.is_none() && self.rtt_probe.is_none() && len > 0 {
            self.rtt_probe = Some((seq, now_ns));
        }
        if seq_gt(end, self.snd_max) {
            let new_from = if seq_gt(self.snd_max, seq) { self.snd_max } else { seq };
            let new_bytes = end.wrapping_sub(new_from).saturating_sub(u32::from(fin));
            self.stats.bytes_sent += u64::from(new_bytes);
            self.snd_max = end;
        }
        self.snd_nxt = end;
        let mut f = flags::ACK;
        if fin {
            f |= flags::FIN;
            self.fin_sent = true;
        }
        if len > 0 && off + len == self.send_buf.len() {
            f |= flags::PSH;
        }
        Some(self.segment(seq, f, off..off + len, now_ns, out))
    }

    fn pure_ack(&mut self, now_ns: u64, out: &mut Segment) -> std::ops::Range<usize> {
        let seq = self.snd_nxt;
        self.segment(seq, flags::ACK, 0..0, now_ns, out)
    }

    /// Writes a segment's header into `out` (its payload emptied); fills in
    /// ACK, window and timestamps (every segment we send acknowledges
    /// everything received). Returns `payload`, the bytes of the send buffer
    /// it carries.
    fn segment(
        &mut self,
        seq: u32,
        flags: u8,
        payload: std::ops::Range<usize>,
        now_ns: u64,
        out: &mut Segment,
    ) -> std::ops::Range<usize> {
        let window = self.advertise();
        let timestamps = self.ts.as_mut().map(|ts| (ts.next(now_ns), ts.recent));
        self.ack_now = false;
        self.ack_deadline = None;
        self.unacked_segments = 0;
        self.last_ack_sent = self.rcv_nxt;
        self.stats.segments_sent += 1;
        out.seq = seq;
        out.ack = self.rcv_nxt;
        out.flags = flags;
        out.window = window;
        out.timestamps = timestamps;
        out.sack.clear();
        out.payload.clear();
        payload
    }
}

/// Writing to an endpoint queues bytes to send, as far as its send buffer
/// has room (`Ok(0)` when full): a TLS connection writes its records straight in.
impl std::io::Write for TcpEndpoint {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(self.send(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn seq_le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

fn seq_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

fn seq_ge(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

/// Bytes `range` of a ring buffer, in place: the part in its first slice,
/// then the part in its second (either may be empty).
fn ring_slices(buf: &VecDeque<u8>, range: std::ops::Range<usize>) -> [&[u8]; 2] {
    let (a, b) = buf.as_slices();
    let (off, end) = (range.start, range.end);
    let first = a.get(off.min(a.len())..end.min(a.len())).unwrap_or_default();
    let second = b.get(off.saturating_sub(a.len())..end.saturating_sub(a.len())).unwrap_or_default();
    [first, second]
}

/// Bytes `range` of a ring buffer into `v` (replacing what it held), copied
/// slice by slice (not byte by byte).
fn copy_out(buf: &VecDeque<u8>, range: std::ops::Range<usize>, v: &mut Vec<u8>) {
    v.clear();
    for part in ring_slices(buf, range) {
        v.extend_from_slice(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic, no crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }

        fn per_mille(&mut self, p: u64) -> bool {
            self.below(1000) < p
        }
    }

    /// One direction of the scripted channel.
    #[derive(Default)]
    struct Link {
        loss_per_mille: u64,
        dup_per_mille: u64,
        delay_ns: u64,
        jitter_ns: u64,
        dead: bool,
        /// Drop the n-th segment carrying payload (0-based), once.
        drop_data_nth: Option<usize>,
        data_seen: usize,
        queue: Vec<(u64, u64, Segment)>,
        order: u64,
        /// (time sent, header and payload length) of every segment offered to the link.
        log: Vec<(u64, Segment, usize)>,
    }

    impl Link {
        fn push(&mut self, rng: &mut Rng, now: u64, seg: Segment) {
            let header = Segment { payload: Vec::new(), ..seg.clone() };
            self.log.push((now, header, seg.payload.len()));
            if self.dead {
                return;
            }
            if !seg.payload.is_empty() {
                let n = self.data_seen;
                self.data_seen += 1;
                if self.drop_data_nth == Some(n) {
                    return;
                }
            }
            if rng.per_mille(self.loss_per_mille) {
                return;
            }
            let copies = if rng.per_mille(self.dup_per_mille) { 2 } else { 1 };
            for _ in 0..copies {
                let at = now + self.delay_ns + rng.below(self.jitter_ns + 1);
                self.queue.push((at, self.order, seg.clone()));
                self.order += 1;
            }
        }

        fn next_time(&self) -> Option<u64> {
            self.queue.iter().map(|(t, _, _)| *t).min()
        }

        fn pop_due(&mut self, now: u64) -> Option<Segment> {
            let i = (0..self.queue.len())
                .filter(|&i| self.queue[i].0 <= now)
                .min_by_key(|&i| (self.queue[i].0, self.queue[i].1))?;
            Some(self.queue.swap_remove(i).2)
        }
    }

    /// A (impersonating the server) and B (the client) joined by two links, on a virtual clock.
    struct Net {
        now: u64,
        a: TcpEndpoint,
        b: TcpEndpoint,
        ab: Link,
        ba: Link,
        rng: Rng,
    }

    const ISS_A: u32 = 0x1000_0000;
    const ISS_B: u32 = 0x7000_0000;

    fn takeover_pair(iss_a: u32, iss_b: u32, ts: bool) -> (Takeover, Takeover) {
        let a = Takeover {
            snd_nxt: iss_a,
            snd_una: iss_a,
            rcv_nxt: iss_b,
            peer_window: 64 * 1024,
            peer_mss: 1460,
            our_wscale: 7,
            peer_wscale: 7,
            sack_permitted: true,
            timestamps: ts.then_some(TimestampState {
                our_last_tsval: 1000,
                our_last_tsval_at_ns: 0,
                ts_hz: 1000,
                ts_recent: 50_000,
            }),
        };
        let b = Takeover {
            snd_nxt: iss_b,
            snd_una: iss_b,
            rcv_nxt: iss_a,
            timestamps: ts.then_some(TimestampState {
                our_last_tsval: 50_000,
                our_last_tsval_at_ns: 0,
                ts_hz: 1000,
                ts_recent: 1000,
            }),
            ..a.clone()
        };
        (a, b)
    }

    impl Net {
        fn new(ta: Takeover, tb: Takeover, la: Limits, lb: Limits, seed: u64) -> Net {
            let link = || Link { delay_ns: NS_PER_MS, ..Link::default() };
            Net {
                now: 0,
                a: TcpEndpoint::takeover(ta, la, 0),
                b: TcpEndpoint::takeover(tb, lb, 0),
                ab: link(),
                ba: link(),
                rng: Rng(seed | 1),
            }
        }

        fn pair(ts: bool) -> Net {
            let (ta, tb) = takeover_pair(ISS_A, ISS_B, ts);
            Net::new(ta, tb, Limits::default(), Limits::default(), 7)
        }

        /// A's segments are read in place (their payload as the slow path
        /// frames it, out of the send ring), B's copied: every transfer
        /// checks both ways of sending.
        fn flush(&mut self) {
            for _ in 0..100_000 {
                let mut seg = Segment::default();
                if let Some(parts) = self.a.poll_transmit_ref(self.now, &mut seg) {
                    assert!(seg.payload.is_empty());
                    seg.payload = parts.concat();
                    self.ab.push(&mut self.rng, self.now, seg);
                } else if let Some(s) = self.b.poll_transmit(self.now) {
                    self.ba.push(&mut self.rng, self.now, s);
                } else {
                    return;
                }
            }
            panic!("endpoints never stop transmitting");
        }

        /// Advances to the next event and runs it; false when nothing is left to happen.
        fn step(&mut self) -> bool {
            self.flush();
            let next = [self.ab.next_time(), self.ba.next_time(), self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(t) = next else { return false };
            self.now = self.now.max(t);
            while let Some(s) = self.ab.pop_due(self.now) {
                self.b.on_segment(&s, self.now);
                self.flush();
            }
            while let Some(mut s) = self.ba.pop_due(self.now) {
                // A reads payloads in place, as the slow path does out of a
                // frame; what the segment itself holds must not be read.
                let payload = std::mem::replace(&mut s.payload, b"not read".to_vec());
                self.a.on_segment_with(&s, &payload, self.now);
                self.flush();
            }
            if self.a.poll_timeout().is_some_and(|d| d <= self.now) {
                self.a.on_timeout(self.now);
            }
            if self.b.poll_timeout().is_some_and(|d| d <= self.now) {
                self.b.on_timeout(self.now);
            }
            self.flush();
            true
        }

        /// Sends `ab` from A to B and `ba` from B to A, both reading everything; returns what arrived.
        fn transfer(&mut self, ab: &[u8], ba: &[u8], mut check: impl FnMut(&Net)) -> (Vec<u8>, Vec<u8>) {
            let (mut sent_a, mut sent_b) = (0, 0);
            let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
            let deadline = self.now + 600 * NS_PER_SEC;
            loop {
                sent_a += self.a.send(&ab[sent_a..]);
                sent_b += self.b.send(&ba[sent_b..]);
                self.a.recv(&mut got_a);
                self.b.recv(&mut got_b);
                check(self);
                if got_b.len() >= ab.len() && got_a.len() >= ba.len() && self.a.unacked() == 0 && self.b.unacked() == 0
                {
                    return (got_b, got_a);
                }
                assert!(self.step(), "stalled: sent {sent_a}/{sent_b}, got {}/{}", got_b.len(), got_a.len());
                assert!(
                    self.now < deadline,
                    "too slow: got {}/{} of {}/{}",
                    got_b.len(),
                    got_a.len(),
                    ab.len(),
                    ba.len()
                );
            }
        }
    }

    fn pattern(len: usize, salt: u64) -> Vec<u8> {
        let mut rng = Rng(salt | 1);
        (0..len).map(|_| rng.next() as u8).collect()
    }

    #[test]
    fn tcp_megabyte_each_way_without_loss() {
        let mut net = Net::pair(true);
        let (x, y) = (pattern(1 << 20, 1), pattern(1 << 20, 2));
        let (at_b, at_a) = net.transfer(&x, &y, |_| {});
        assert!(at_b == x && at_a == y);
        assert_eq!(net.a.stats().retransmissions, 0);
        assert_eq!(net.b.stats().retransmissions, 0);
        assert_eq!(net.a.stats().bytes_sent, 1 << 20);
        assert_eq!(net.b.stats().bytes_received, 1 << 20);
    }

    #[test]
    fn tcp_lossy_reordering_duplicating_link_delivers_intact() {
        for seed in 0..4u64 {
            let ts = seed % 2 == 0;
            let (ta, tb) = takeover_pair(ISS_A.wrapping_add(seed as u32 * 0x3777_7777), ISS_B, ts);
            let mut net = Net::new(ta, tb, Limits::default(), Limits::default(), seed * 31 + 5);
            for link in [&mut net.ab, &mut net.ba] {
                link.loss_per_mille = 50;
                link.dup_per_mille = 30;
                link.jitter_ns = 3 * NS_PER_MS;
            }
            let (x, y) = (pattern(1 << 20, 3), pattern(1 << 20, 4));
            let (at_b, at_a) = net.transfer(&x, &y, |_| {});
            assert!(at_b == x && at_a == y, "timestamps {ts}");
            assert!(net.a.stats().retransmissions > 0 && net.b.stats().retransmissions > 0);
            assert!(net.a.stats().ooo_buffered > 0);
        }
    }

    #[test]
    fn tcp_single_loss_repaired_by_fast_retransmit() {
        let mut net = Net::pair(true);
        net.ab.drop_data_nth = Some(20);
        let x = pattern(200_000, 5);
        let (at_b, _) = net.transfer(&x, &[], |_| {});
        assert!(at_b == x);
        let s = net.a.stats();
        assert_eq!(s.fast_retransmits, 1);
        assert_eq!(s.rto_expirations, 0);
        assert_eq!(s.retransmissions, 1);
        assert!(s.dup_acks >= 3);
    }

    #[test]
    fn tcp_rto_backs_off_then_user_timeout_resets() {
        let mut net = Net::pair(false);
        net.ab.dead = true;
        assert_eq!(net.a.send(&pattern(10_000, 6)), 10_000);
        while net.a.state() != TcpState::TimedOut {
            assert!(net.step());
            assert!(net.now < 120 * NS_PER_SEC);
        }
        net.flush();
        // First-segment transmissions: original at 0, then RTOs after 1, 2, 4, 8, 16 s.
        let times: Vec<u64> =
            net.ab.log.iter().filter(|(_, s, n)| s.seq == ISS_A && *n > 0).map(|(t, _, _)| *t).collect();
        let gaps: Vec<u64> = times.windows(2).map(|w| (w[1] - w[0]) / NS_PER_SEC).collect();
        assert_eq!(gaps, [1, 2, 4, 8, 16]);
        assert!(net.a.stats().rto_expirations >= 5);
        let (t, last, _) = net.ab.log.last().unwrap();
        assert_eq!(last.flags & flags::RST, flags::RST);
        assert_eq!(last.seq, ISS_A.wrapping_add(10_000));
        assert_eq!(*t, 60 * NS_PER_SEC);
        assert_eq!(net.a.poll_transmit(net.now), None);
    }

    #[test]
    fn tcp_zero_window_probes_back_off_and_transfer_resumes() {
        let mut net = Net::pair(true);
        let x = pattern(1 << 20, 7);
        let mut sent = 0;
        while net.now < 20 * NS_PER_SEC {
            sent += net.a.send(&x[sent..]);
            assert!(net.step());
        }
        // B never read: its buffer is full and A holds the rest.
        // (Short of full by less than one window-scale unit: the window is rounded down.)
        assert!(net.b.readable() > Limits::default().recv_buffer - 128);
        let probes: Vec<u64> = net
            .ab
            .log
            .iter()
            .filter(|(_, s, n)| *n == 0 && s.flags == flags::ACK && s.seq == net.a.snd_una.wrapping_sub(1))
            .map(|(t, _, _)| *t)
            .collect();
        assert!(probes.len() >= 3, "{probes:?}");
        assert_eq!(net.a.stats().zero_window_probes, probes.len() as u64);
        let gaps: Vec<u64> = probes.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.windows(2).all(|g| g[1] == (2 * g[0]).min(Limits::default().max_rto_ns)), "{gaps:?}");
        assert_eq!(net.a.state(), TcpState::Established);
        // B reads again: everything arrives.
        let mut got = Vec::new();
        net.b.recv(&mut got);
        loop {
            sent += net.a.send(&x[sent..]);
            net.b.recv(&mut got);
            if got.len() == x.len() && net.a.unacked() == 0 {
                break;
            }
            assert!(net.step());
            assert!(net.now < 200 * NS_PER_SEC);
        }
        assert!(got == x);
    }

    #[test]
    fn tcp_window_limit_throttles_sender() {
        let limit = 8 * 1024;
        let (mut ta, tb) = takeover_pair(ISS_A, ISS_B, true);
        ta.peer_window = limit as u32;
        let mut net = Net::new(ta, tb, Limits::default(), Limits::default(), 9);
        net.b.set_window_limit(limit);
        let x = pattern(300_000, 8);
        let mut max_flight = 0;
        let (at_b, _) = net.transfer(&x, &[], |n| {
            let flight = n.a.snd_max.wrapping_sub(n.a.snd_una);
            max_flight = max_flight.max(flight);
            assert!(flight as usize <= limit, "{flight}");
        });
        assert!(at_b == x);
        assert!(max_flight as usize > limit / 2);
        // B's advertised right edge never moved left.
        let mut edge = ISS_A;
        for (_, s, _) in &net.ba.log {
            let e = s.ack.wrapping_add(u32::from(s.window) << 7);
            assert!(seq_ge(e, edge));
            edge = e;
        }
    }

    #[test]
    fn tcp_window_limit_never_shrinks_advertised_edge() {
        let mut net = Net::pair(false);
        let x = pattern(400_000, 10);
        let (mut sent, mut got) = (0, Vec::new());
        let mut step = |net: &mut Net, got: &mut Vec<u8>| {
            sent += net.a.send(&x[sent..]);
            net.b.recv(got);
            assert!(net.step());
        };
        while got.len() < 100_000 {
            step(&mut net, &mut got);
        }
        // Limit 0 mid-transfer: the edge already advertised stays, and nothing beyond it arrives.
        net.b.set_window_limit(0);
        let promised = net.b.rcv_adv;
        let logged = net.ba.log.len();
        let until = net.now + 5 * NS_PER_SEC;
        while net.now < until {
            step(&mut net, &mut got);
        }
        for (_, s, _) in &net.ba.log[logged..] {
            let edge = s.ack.wrapping_add(u32::from(s.window) << 7);
            assert!(seq_ge(edge, promised.wrapping_sub(127)), "edge moved left");
            assert!(seq_le(edge, promised), "edge opened despite the limit");
        }
        // Filled up to the edge, short of it by less than one scale unit (the window is rounded down).
        assert!(seq_le(net.b.rcv_nxt, promised) && promised.wrapping_sub(net.b.rcv_nxt) < 128);
        assert!(net.a.stats().zero_window_probes > 0);
        // Lifted: the rest arrives.
        net.b.set_window_limit(usize::MAX);
        while got.len() < x.len() || net.a.unacked() > 0 {
            step(&mut net, &mut got);
            assert!(net.now < until + 60 * NS_PER_SEC);
        }
        assert!(got == x);
    }

    #[test]
    fn tcp_takeover_with_bytes_in_flight_takes_their_ack_window() {
        let (mut ta, _) = takeover_pair(ISS_A, ISS_B, false);
        ta.snd_una = ISS_A.wrapping_sub(500);
        let mut a = TcpEndpoint::takeover(ta, Limits::default(), 0);
        // The peer acknowledges part of what the original endpoint sent, closing its window.
        let mut ack = from_b(ISS_B, flags::ACK, &[]);
        ack.ack = ISS_A.wrapping_sub(100);
        ack.window = 0;
        a.on_segment(&ack, 0);
        assert_eq!(a.snd_wnd, 0);
        a.send(b"data");
        assert_eq!(a.poll_transmit(0), None);
        assert!(a.poll_timeout().is_some());
        // Then it acknowledges all of it and opens: our data goes.
        ack.ack = ISS_A;
        ack.window = 100;
        a.on_segment(&ack, 10);
        let s = a.poll_transmit(10).expect("data");
        assert_eq!((s.seq, s.payload.as_slice()), (ISS_A, &b"data"[..]));
    }

    #[test]
    fn tcp_fin_both_ways_closes() {
        let mut net = Net::pair(true);
        let (x, y) = (pattern(10_000, 11), pattern(5_000, 12));
        let (at_b, at_a) = net.transfer(&x, &y, |_| {});
        assert!(at_b == x && at_a == y);
        net.a.close();
        while net.b.state() != TcpState::CloseWait {
            assert!(net.step());
        }
        assert_eq!(net.a.state(), TcpState::FinWait);
        assert!(net.b.peer_closed());
        assert_eq!(net.b.send(b"bye"), 3);
        net.b.close();
        let mut got = Vec::new();
        while !(net.a.state() == TcpState::Closed && net.b.state() == TcpState::Closed) {
            net.a.recv(&mut got);
            assert!(net.step());
        }
        net.a.recv(&mut got);
        assert_eq!(got, b"bye");
        assert!(net.a.peer_closed());
        assert_eq!(net.a.send(b"late"), 0);
        // Then all is quiet: no ACK war between the closed ends, one FIN each way.
        let mut steps = 0;
        while net.step() {
            steps += 1;
            assert!(steps < 100);
        }
        let fins = |l: &Link| l.log.iter().filter(|(_, s, _)| s.flags & flags::FIN != 0).count();
        assert_eq!((fins(&net.ab), fins(&net.ba)), (1, 1));
        assert_eq!(net.a.state(), TcpState::Closed);
    }

    #[test]
    fn tcp_delayed_ack_every_second_segment_or_40ms() {
        let mut a = lone_a(false);
        a.on_segment(&from_b(ISS_B, flags::ACK, &[1; 1448]), 0);
        assert_eq!(a.poll_transmit(0), None);
        assert_eq!(a.poll_timeout(), Some(DELAYED_ACK_NS));
        a.on_timeout(DELAYED_ACK_NS);
        let ack = a.poll_transmit(DELAYED_ACK_NS).expect("delayed ACK");
        assert_eq!(ack.ack, ISS_B.wrapping_add(1448));
        // Two segments: acknowledged at once.
        a.on_segment(&from_b(ISS_B.wrapping_add(1448), flags::ACK, &[2; 1448]), NS_PER_SEC);
        assert_eq!(a.poll_transmit(NS_PER_SEC), None);
        a.on_segment(&from_b(ISS_B.wrapping_add(2896), flags::ACK, &[3; 1448]), NS_PER_SEC);
        let ack = a.poll_transmit(NS_PER_SEC).expect("ACK of the second segment");
        assert_eq!(ack.ack, ISS_B.wrapping_add(3 * 1448));
        assert_eq!(a.poll_transmit(NS_PER_SEC), None);
        // Out of order: a duplicate ACK at once, per segment.
        for i in 0..3u32 {
            a.on_segment(&from_b(ISS_B.wrapping_add((5 + i) * 1448), flags::ACK, &[4; 1448]), NS_PER_SEC);
        }
        for _ in 0..3 {
            let dup = a.poll_transmit(NS_PER_SEC).expect("duplicate ACK");
            assert_eq!((dup.ack, dup.payload.len()), (ISS_B.wrapping_add(3 * 1448), 0));
        }
        assert_eq!(a.poll_transmit(NS_PER_SEC), None);
    }

    #[test]
    fn tcp_rtt_estimation_follows_rfc6298_and_karn() {
        // Without timestamps: no sample from a retransmitted segment; the backed-off RTO stays.
        let mut a = lone_a(false);
        a.send(&[1; 1000]);
        assert!(a.poll_transmit(0).is_some());
        assert_eq!(a.poll_timeout(), Some(NS_PER_SEC));
        a.on_timeout(NS_PER_SEC);
        let again = a.poll_transmit(NS_PER_SEC).expect("retransmission");
        assert_eq!((again.seq, again.payload.len()), (ISS_A, 1000));
        let mut ack = from_b(ISS_B, flags::ACK, &[]);
        ack.ack = ISS_A.wrapping_add(1000);
        a.on_segment(&ack, NS_PER_SEC + 100 * NS_PER_MS);
        assert_eq!((a.srtt_ns, a.rto_ns), (None, 2 * NS_PER_SEC));
        // A fresh segment gives a sample: SRTT = R, RTTVAR = R/2, RTO = max(min_rto, SRTT + 4 RTTVAR).
        a.send(&[2; 1000]);
        let t0 = 2 * NS_PER_SEC;
        assert!(a.poll_transmit(t0).is_some());
        ack.ack = ISS_A.wrapping_add(2000);
        a.on_segment(&ack, t0 + 100 * NS_PER_MS);
        assert_eq!(a.srtt_ns, Some(100 * NS_PER_MS));
        assert_eq!(a.rto_ns, 300 * NS_PER_MS);
        assert_eq!(a.poll_timeout(), None);

        // With timestamps: RTT from TSecr.
        let mut a = lone_a(true);
        a.send(&[1; 1000]);
        let s = a.poll_transmit(0).expect("data");
        let mut ack = from_b(ISS_B, flags::ACK, &[]);
        ack.ack = ISS_A.wrapping_add(1000);
        ack.timestamps = Some((50_001, s.timestamps.expect("TSval").0));
        a.on_segment(&ack, 30 * NS_PER_MS);
        assert_eq!(a.srtt_ns, Some(30 * NS_PER_MS));
        assert_eq!(a.rto_ns, Limits::default().min_rto_ns);
    }

    fn lone_a(ts: bool) -> TcpEndpoint {
        let (ta, _) = takeover_pair(ISS_A, ISS_B, ts);
        TcpEndpoint::takeover(ta, Limits::default(), 0)
    }

    fn from_b(seq: u32, flags: u8, payload: &[u8]) -> Segment {
        Segment { seq, ack: ISS_A, flags, window: 512, timestamps: None, sack: Vec::new(), payload: payload.to_vec() }
    }

    #[test]
    fn tcp_rst_exact_resets_in_window_challenges() {
        let mut a = lone_a(false);
        // Out of window: ignored silently.
        a.on_segment(&from_b(ISS_B.wrapping_add(1 << 30), flags::RST, &[]), 0);
        assert_eq!(a.poll_transmit(0), None);
        // In window, not exact: challenge ACK, no reset.
        a.on_segment(&from_b(ISS_B.wrapping_add(100), flags::RST, &[]), 0);
        assert_eq!(a.state(), TcpState::Established);
        let ack = a.poll_transmit(0).expect("challenge ACK");
        assert_eq!((ack.flags, ack.ack, ack.seq), (flags::ACK, ISS_B, ISS_A));
        assert_eq!(a.stats().challenge_acks, 1);
        // Exact: reset, nothing more sent.
        a.on_segment(&from_b(ISS_B, flags::RST, &[]), 0);
        assert_eq!(a.state(), TcpState::Reset);
        assert_eq!(a.poll_transmit(0), None);
        assert_eq!(a.send(b"x"), 0);
    }

    #[test]
    fn tcp_abort_sends_rst_at_snd_nxt() {
        let mut a = lone_a(false);
        a.send(&[7; 3000]);
        while a.poll_transmit(0).is_some() {}
        a.abort();
        let rst = a.poll_transmit(1).expect("RST");
        assert_eq!((rst.flags & flags::RST, rst.seq), (flags::RST, ISS_A.wrapping_add(3000)));
        assert_eq!(a.poll_transmit(2), None);
        assert_eq!(a.state(), TcpState::Reset);
    }

    #[test]
    fn tcp_tsval_continues_impersonated_clock_and_paws_drops_old() {
        let mut a = lone_a(true);
        a.send(b"hello");
        let s = a.poll_transmit(5 * NS_PER_SEC).expect("data");
        assert_eq!(s.timestamps, Some((1000 + 5000, 50_000)));
        // PAWS: an older TSval is dropped (and answered with an ACK), a current one accepted.
        let mut old = from_b(ISS_B, flags::ACK, b"old");
        old.timestamps = Some((49_000, 6000));
        a.on_segment(&old, 5 * NS_PER_SEC);
        assert_eq!((a.readable(), a.stats().paws_drops), (0, 1));
        let mut fresh = from_b(ISS_B, flags::ACK, b"new");
        fresh.timestamps = Some((50_010, 6000));
        a.on_segment(&fresh, 5 * NS_PER_SEC);
        assert_eq!(a.readable(), 3);
        // RSTs are exempt from PAWS.
        let mut rst = from_b(ISS_B.wrapping_add(3), flags::RST, &[]);
        rst.timestamps = Some((1, 0));
        a.on_segment(&rst, 5 * NS_PER_SEC);
        assert_eq!(a.state(), TcpState::Reset);

        // Over a lossy, reordering transfer every TSval follows the clock and never goes back.
        let mut net = Net::pair(true);
        net.ab.loss_per_mille = 30;
        net.ab.jitter_ns = 2 * NS_PER_MS;
        let (x, y) = (pattern(200_000, 13), pattern(50_000, 14));
        let (at_b, at_a) = net.transfer(&x, &y, |_| {});
        assert!(at_b == x && at_a == y);
        let mut last = 1000u32;
        for (t, s, _) in &net.ab.log {
            let (v, _) = s.timestamps.expect("timestamps on every segment");
            assert!(seq_ge(v, last));
            assert_eq!(v, 1000 + (t / NS_PER_MS) as u32);
            last = v;
        }
    }

    #[test]
    fn tcp_ooo_flood_stays_within_recv_buffer() {
        let (ta, _) = takeover_pair(ISS_A, ISS_B, false);
        let limits = Limits { recv_buffer: 64 * 1024, max_ooo_segments: 64, ..Limits::default() };
        let mut a = TcpEndpoint::takeover(ta, limits.clone(), 0);
        let mut rng = Rng(99);
        for i in 0..10_000u64 {
            let ahead = 1 + rng.below(300_000) as u32;
            let len = 1 + rng.below(1400) as usize;
            a.on_segment(&from_b(ISS_B.wrapping_add(ahead), flags::ACK, &vec![1; len]), i);
            while a.poll_transmit(i).is_some() {}
            assert!(a.ooo.len() <= limits.max_ooo_segments);
            assert!(a.readable() + a.ooo_bytes <= limits.recv_buffer);
            assert_eq!(a.ooo_bytes, a.ooo.iter().map(|(_, d)| d.len()).sum::<usize>());
        }
        assert!(a.stats().ooo_dropped > 0 && a.stats().ooo_buffered > 0);
        assert_eq!(a.readable(), 0);
        // The hole filled: what was held becomes readable, still within the bound.
        a.on_segment(&from_b(ISS_B, flags::ACK, &vec![2; 64 * 1024]), 20_000);
        assert_eq!(a.readable(), limits.recv_buffer);
        assert!(a.ooo.is_empty() && a.ooo_bytes == 0);
    }

    #[test]
    fn tcp_sequence_wraparound_transfer() {
        let (ta, tb) = takeover_pair(u32::MAX - 30_000, u32::MAX - 70_000, true);
        let mut net = Net::new(ta, tb, Limits::default(), Limits::default(), 17);
        net.ab.loss_per_mille = 20;
        net.ba.loss_per_mille = 20;
        net.ab.jitter_ns = NS_PER_MS;
        let (x, y) = (pattern(100_000, 15), pattern(100_000, 16));
        let (at_b, at_a) = net.transfer(&x, &y, |_| {});
        assert!(at_b == x && at_a == y);
        assert_eq!(net.a.snd_una, (u32::MAX - 30_000).wrapping_add(100_000));
        net.a.close();
        net.b.close();
        while !(net.a.state() == TcpState::Closed && net.b.state() == TcpState::Closed) {
            assert!(net.step());
        }
    }

    #[test]
    fn tcp_random_garbage_never_panics() {
        for ts in [false, true] {
            let (ta, _) = takeover_pair(ISS_A, ISS_B, ts);
            let limits = Limits { recv_buffer: 32 * 1024, send_buffer: 32 * 1024, ..Limits::default() };
            let mut a = TcpEndpoint::takeover(ta, limits.clone(), 0);
            let mut rng = Rng(1234);
            let mut now = 0u64;
            let mut sink = Vec::new();
            for i in 0..10_000 {
                now += rng.below(50 * NS_PER_MS);
                let near =
                    |rng: &mut Rng, base: u32| base.wrapping_add(rng.below(200_000) as u32).wrapping_sub(100_000);
                let seq = if rng.per_mille(500) { near(&mut rng, a.rcv_nxt) } else { rng.next() as u32 };
                let ack = if rng.per_mille(500) { near(&mut rng, a.snd_una) } else { rng.next() as u32 };
                let len = rng.below(3000) as usize;
                let seg = Segment {
                    seq,
                    ack,
                    flags: rng.next() as u8 | if rng.per_mille(700) { flags::ACK } else { 0 },
                    window: rng.next() as u16,
                    timestamps: rng.per_mille(700).then(|| (rng.next() as u32, rng.next() as u32)),
                    sack: (0..rng.below(4)).map(|_| (rng.next() as u32, rng.next() as u32)).collect(),
                    payload: (0..len).map(|_| rng.next() as u8).collect(),
                };
                a.on_segment(&seg, now);
                if i % 7 == 0 {
                    a.send(&[0x55; 5000]);
                }
                if i % 11 == 0 {
                    a.recv(&mut sink);
                    sink.clear();
                }
                if i % 13 == 0 {
                    a.set_window_limit(rng.below(70_000) as usize);
                }
                if a.poll_timeout().is_some_and(|d| d <= now) {
                    a.on_timeout(now);
                }
                let mut n = 0;
                while a.poll_transmit(now).is_some() {
                    n += 1;
                    assert!(n < 1000);
                }
                assert!(a.readable() + a.ooo_bytes <= limits.recv_buffer);
                assert!(a.unacked() <= limits.send_buffer);
                assert!(a.ooo.len() <= limits.max_ooo_segments);
            }
        }
    }

    #[test]
    fn a_range_of_a_wrapped_ring_is_copied_as_it_reads() {
        let mut buf: VecDeque<u8> = VecDeque::with_capacity(16);
        buf.extend(0..12u8);
        buf.drain(..8);
        buf.extend(12..24u8); // wraps: the bytes are 8..24 in two slices
        assert!(!buf.as_slices().1.is_empty(), "the ring wraps");
        let all: Vec<u8> = buf.iter().copied().collect();
        // One buffer for every copy: what a longer copy left must not show.
        let mut v = vec![0xee; 64];
        for off in 0..all.len() {
            for len in 0..=all.len() - off {
                copy_out(&buf, off..off + len, &mut v);
                assert_eq!(v, all[off..off + len], "{off}+{len}");
            }
        }
    }

    /// A receiver that acknowledges six segments at a time (as GRO makes
    /// Linux do): slow start still grows two segments an ACK, and congestion
    /// avoidance one segment a window, as with an ACK every segment or two.
    #[test]
    fn the_window_grows_by_bytes_acknowledged_not_by_acks() {
        let mut a = lone_a(false);
        let mss = a.mss;
        a.snd_wnd = 1 << 24;
        assert_eq!(a.send(&pattern(1 << 20, 3)), 256 * 1024);
        let stretch = |a: &mut TcpEndpoint, now: u64| {
            let mut sent = Vec::new();
            while let Some(s) = a.poll_transmit(now) {
                sent.push(s);
            }
            // One ACK per six segments sent (the last covers what is left).
            let mut acked = a.snd_una;
            for chunk in sent.chunks(6) {
                let last = chunk.last().unwrap();
                acked = last.seq.wrapping_add(last.payload.len() as u32);
                let mut ack = from_b(ISS_B, flags::ACK, &[]);
                ack.ack = acked;
                ack.window = u16::MAX;
                a.on_segment(&ack, now);
            }
            acked
        };
        // Slow start: ten segments' worth, two ACKs of six and four: +2 MSS each.
        let before = a.cwnd;
        stretch(&mut a, 1);
        assert_eq!(a.cwnd, before + 4 * mss, "slow start");
        // Congestion avoidance from 20 segments: a window's bytes acknowledged add one segment.
        a.ssthresh = 10 * mss;
        a.cwnd = 20 * mss;
        a.ca_acked = 0;
        stretch(&mut a, 2);
        assert_eq!(a.cwnd, 21 * mss, "one segment a window");
        stretch(&mut a, 3);
        assert_eq!(a.cwnd, 22 * mss, "and again");
    }
}
