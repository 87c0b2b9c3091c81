//! QUIC Initial packets (RFC 9000, RFC 9001; version 2, RFC 9369), read the
//! way an on-path observer can: long headers parsed, the Initial keys derived
//! from the client's first Destination Connection ID, header protection
//! removed, the payload decrypted (AES-128-GCM), CRYPTO frames put back in
//! order across packets and datagrams (coalesced, out of order, repeated,
//! between PADDING, PING and ACK frames), and the TLS handshake they carry
//! read by the same [`HandshakeObserver`] as TCP's: the client's ClientHello,
//! the server's ServerHello. A Retry changes the client's DCID, hence the keys.
//! Sans-IO and bounded: at most `max_packets` Initial packets and `max_crypto`
//! bytes of CRYPTO data per direction, then the flow is judged as it is.
//!
//! The key schedule and packet protection are rustls's own QUIC primitives
//! (`rustls::quic::Keys::initial` on aws-lc-rs): the same code quinn uses to
//! speak QUIC, and nothing to get subtly wrong here.

use rustls::quic::{DirectionalKeys, Keys, Version};
use rustls::Side;

use crate::tls::reassembly::StreamReassembler;
use crate::tls::{Direction, HandshakeObserver, ObserverEvent, ObserverLimits};

/// QUIC version 1 on the wire.
pub const VERSION_1: u32 = 0x0000_0001;
/// QUIC version 2 on the wire (RFC 9369).
pub const VERSION_2: u32 = 0x6b33_43cf;

/// Why a datagram (or a packet in it) could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuicError {
    /// Shorter than its header says, or a length past the datagram.
    #[error("truncated QUIC packet")]
    Truncated,
    /// Not a long-header packet (short headers come after the handshake).
    #[error("not a long-header QUIC packet")]
    ShortHeader,
    /// A version this observer has no Initial keys for.
    #[error("unknown QUIC version {0:#010x}")]
    UnknownVersion(u32),
    /// The packet did not decrypt with the Initial keys.
    #[error("Initial packet failed to decrypt")]
    Decrypt,
    /// A frame an Initial packet may not carry, or a malformed one.
    #[error("malformed frame in an Initial packet")]
    Frame,
}

/// The kinds of long-header packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// Initial: keys anyone can derive.
    Initial,
    /// 0-RTT.
    ZeroRtt,
    /// Handshake (keys from the TLS handshake: opaque to an observer).
    Handshake,
    /// Retry: a new connection ID for the client's next Initial.
    Retry,
    /// Version Negotiation (version 0).
    VersionNegotiation,
}

/// A long header, checked against the datagram it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongHeader<'a> {
    /// Its version on the wire.
    pub version: u32,
    /// What kind of packet.
    pub kind: PacketKind,
    /// Destination Connection ID.
    pub dcid: &'a [u8],
    /// Source Connection ID.
    pub scid: &'a [u8],
    /// Offset of the packet number (Initial, 0-RTT, Handshake).
    pn_offset: usize,
    /// One past the packet's last byte in the datagram.
    pub end: usize,
}

/// Reads a QUIC variable-length integer (RFC 9000 §16) at `*at`.
fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let first = *b.get(*at)?;
    let len = 1usize << (first >> 6);
    let bytes = b.get(*at..*at + len)?;
    let mut v = u64::from(first & 0x3f);
    for &x in &bytes[1..] {
        v = (v << 8) | u64::from(x);
    }
    *at += len;
    Some(v)
}

/// Parses the long header of the packet starting at `datagram[0]`.
pub fn parse_long_header(datagram: &[u8]) -> Result<LongHeader<'_>, QuicError> {
    let first = *datagram.first().ok_or(QuicError::Truncated)?;
    if first & 0x80 == 0 {
        return Err(QuicError::ShortHeader);
    }
    let version = u32::from_be_bytes(datagram.get(1..5).ok_or(QuicError::Truncated)?.try_into().unwrap_or_default());
    let mut at = 5;
    let cid = |at: &mut usize| -> Result<&[u8], QuicError> {
        let len = *datagram.get(*at).ok_or(QuicError::Truncated)? as usize;
        let id = datagram.get(*at + 1..*at + 1 + len).ok_or(QuicError::Truncated)?;
        *at += 1 + len;
        Ok(id)
    };
    let dcid = cid(&mut at)?;
    let scid = cid(&mut at)?;
    if version == 0 {
        let end = datagram.len();
        return Ok(LongHeader { version, kind: PacketKind::VersionNegotiation, dcid, scid, pn_offset: end, end });
    }
    let bits = (first >> 4) & 0x03;
    let kind = match (version, bits) {
        (VERSION_2, 1) | (VERSION_1, 0) => PacketKind::Initial,
        (VERSION_2, 2) | (VERSION_1, 1) => PacketKind::ZeroRtt,
        (VERSION_2, 3) | (VERSION_1, 2) => PacketKind::Handshake,
        (VERSION_2, 0) | (VERSION_1, 3) => PacketKind::Retry,
        _ => return Err(QuicError::UnknownVersion(version)),
    };
    if kind == PacketKind::Retry {
        let end = datagram.len();
        return Ok(LongHeader { version, kind, dcid, scid, pn_offset: end, end });
    }
    if kind == PacketKind::Initial {
        let token_len = varint(datagram, &mut at).ok_or(QuicError::Truncated)? as usize;
        at = at.checked_add(token_len).filter(|&a| a <= datagram.len()).ok_or(QuicError::Truncated)?;
    }
    let length = varint(datagram, &mut at).ok_or(QuicError::Truncated)? as usize;
    let end = at.checked_add(length).filter(|&e| e <= datagram.len()).ok_or(QuicError::Truncated)?;
    Ok(LongHeader { version, kind, dcid, scid, pn_offset: at, end })
}

/// The Initial keys of a connection, both directions.
pub struct InitialKeys {
    client: DirectionalKeys,
    server: DirectionalKeys,
}

impl InitialKeys {
    /// The keys for `version` from the client's first Destination Connection ID.
    pub fn new(version: u32, client_dcid: &[u8]) -> Result<InitialKeys, QuicError> {
        let version = match version {
            VERSION_1 => Version::V1,
            VERSION_2 => Version::V2,
            other => return Err(QuicError::UnknownVersion(other)),
        };
        // Irrefutable unless another crate turns rustls's TLS 1.2 on.
        #[allow(irrefutable_let_patterns)]
        let rustls::SupportedCipherSuite::Tls13(suite) =
            rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
        else {
            return Err(QuicError::Decrypt);
        };
        let Some(quic) = suite.quic else { return Err(QuicError::Decrypt) };
        // As the client: its own keys are `local`, the server's `remote`.
        let keys = Keys::initial(version, suite, quic, client_dcid, Side::Client);
        Ok(InitialKeys { client: keys.local, server: keys.remote })
    }

    /// Removes header protection from and decrypts the Initial packet `h`
    /// (sent by the client if `from_client`) in `datagram`; the packet number
    /// is decoded against `largest` (the largest seen that way so far).
    /// Returns the packet number and the plaintext frames.
    pub fn open(
        &self,
        datagram: &[u8],
        h: &LongHeader,
        from_client: bool,
        largest: Option<u64>,
    ) -> Result<(u64, Vec<u8>), QuicError> {
        let keys = if from_client { &self.client } else { &self.server };
        let mut packet = datagram.get(..h.end).ok_or(QuicError::Truncated)?.to_vec();
        let sample_at = h.pn_offset + 4;
        let sample_len = keys.header.sample_len();
        let sample = packet.get(sample_at..sample_at + sample_len).ok_or(QuicError::Truncated)?.to_vec();
        let (head, rest) = packet.split_at_mut(h.pn_offset);
        let pn_field = rest.get_mut(..4).ok_or(QuicError::Truncated)?;
        keys.header.decrypt_in_place(&sample, &mut head[0], pn_field).map_err(|_| QuicError::Decrypt)?;
        let pn_len = usize::from(head[0] & 0x03) + 1;
        let truncated = pn_field[..pn_len].iter().fold(0u64, |v, &b| (v << 8) | u64::from(b));
        let pn = decode_packet_number(largest, truncated, pn_len);
        let (header, payload) = packet.split_at_mut(h.pn_offset + pn_len);
        let plain = keys.packet.decrypt_in_place(pn, header, payload).map_err(|_| QuicError::Decrypt)?;
        Ok((pn, plain.to_vec()))
    }
}

/// Whether the Retry packet `retry` (the whole datagram from its first byte)
/// carries the integrity tag RFC 9001 §5.8 (RFC 9369 §3.3.3 for version 2)
/// computes over it and the client's original Destination Connection ID
/// `odcid`. Anyone on the path can compute it, so it proves only that the
/// Retry answers this client's Initial: an off-path packet with a guessed
/// header does not re-key the flow.
pub fn retry_integrity_ok(version: u32, odcid: &[u8], retry: &[u8]) -> bool {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
    let (key, nonce): ([u8; 16], [u8; 12]) = match version {
        VERSION_1 => (
            [0xbe, 0x0c, 0x69, 0x0b, 0x9f, 0x66, 0x57, 0x5a, 0x1d, 0x76, 0x6b, 0x54, 0xe3, 0x68, 0xc8, 0x4e],
            [0x46, 0x15, 0x99, 0xd3, 0x5d, 0x63, 0x2b, 0xf2, 0x23, 0x98, 0x25, 0xbb],
        ),
        VERSION_2 => (
            [0x8f, 0xb4, 0xb0, 0x1b, 0x56, 0xac, 0x48, 0xe2, 0x60, 0xfb, 0xcb, 0xce, 0xad, 0x7c, 0xcc, 0x92],
            [0xd8, 0x69, 0x69, 0xbc, 0x2d, 0x7c, 0x6d, 0x99, 0x90, 0xef, 0xb0, 0x4a],
        ),
        _ => return false,
    };
    let Some(split) = retry.len().checked_sub(16) else { return false };
    let (packet, tag) = retry.split_at(split);
    let Ok(odcid_len) = u8::try_from(odcid.len()) else { return false };
    let mut pseudo = Vec::with_capacity(1 + odcid.len() + packet.len());
    pseudo.push(odcid_len);
    pseudo.extend_from_slice(odcid);
    pseudo.extend_from_slice(packet);
    let Ok(key) = UnboundKey::new(&AES_128_GCM, &key) else { return false };
    let key = LessSafeKey::new(key);
    let mut nothing = [];
    match key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&pseudo), &mut nothing) {
        Ok(expected) => aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_ref(), tag).is_ok(),
        Err(_) => false,
    }
}

/// Connection IDs remembered per connection at most.
pub const MAX_CIDS: usize = 8;

/// Adds `cid` to `cids` unless it is there or the list is full.
pub fn note_cid(cids: &mut Vec<Box<[u8]>>, cid: &[u8]) {
    if cids.len() < MAX_CIDS && !cids.iter().any(|c| &c[..] == cid) {
        cids.push(cid.into());
    }
}

/// Whether `datagram` (from a client) begins a new connection: its first
/// packet an Initial that opens with keys from its own Destination
/// Connection ID and carries the start of a ClientHello (CRYPTO at offset 0).
/// A connection's later Initials do not: their keys come from the DCID of
/// its first one, and their DCID is the server's by then.
pub fn starts_connection(datagram: &[u8]) -> bool {
    let Ok(h) = parse_long_header(datagram) else { return false };
    if h.kind != PacketKind::Initial {
        return false;
    }
    let Ok(keys) = InitialKeys::new(h.version, h.dcid) else { return false };
    let Ok((_, plain)) = keys.open(datagram, &h, true, None) else { return false };
    crypto_frames(&plain).is_ok_and(|frames| frames.iter().any(|&(offset, _)| offset == 0))
}

/// RFC 9000 Appendix A.3.
fn decode_packet_number(largest: Option<u64>, truncated: u64, pn_len: usize) -> u64 {
    let expected = largest.map_or(0, |l| l + 1);
    let win = 1u64 << (pn_len * 8);
    let half = win / 2;
    let candidate = (expected & !(win - 1)) | truncated;
    if candidate + half <= expected && candidate < (1u64 << 62) - win {
        candidate + win
    } else if candidate > expected + half && candidate >= win {
        candidate - win
    } else {
        candidate
    }
}

/// The CRYPTO frames of an Initial packet's plaintext: (offset, data).
/// PADDING, PING, ACK and CONNECTION_CLOSE are skipped; any other frame
/// is not allowed in an Initial packet.
pub fn crypto_frames(plain: &[u8]) -> Result<Vec<(u64, &[u8])>, QuicError> {
    let mut out = Vec::new();
    let mut at = 0;
    let e = QuicError::Frame;
    while at < plain.len() {
        let kind = varint(plain, &mut at).ok_or(e)?;
        match kind {
            0x00 | 0x01 => {}
            0x02 | 0x03 => {
                // largest, delay, range count, first range, then ranges (gap, length)
                let _ = varint(plain, &mut at).ok_or(e)?;
                let _ = varint(plain, &mut at).ok_or(e)?;
                let ranges = varint(plain, &mut at).ok_or(e)?;
                let _ = varint(plain, &mut at).ok_or(e)?;
                for _ in 0..ranges.min(plain.len() as u64) {
                    let _ = varint(plain, &mut at).ok_or(e)?;
                    let _ = varint(plain, &mut at).ok_or(e)?;
                }
                if kind == 0x03 {
                    for _ in 0..3 {
                        let _ = varint(plain, &mut at).ok_or(e)?;
                    }
                }
            }
            0x06 => {
                let offset = varint(plain, &mut at).ok_or(e)?;
                let len = varint(plain, &mut at).ok_or(e)? as usize;
                let data = plain.get(at..at.checked_add(len).ok_or(e)?).ok_or(e)?;
                at += len;
                out.push((offset, data));
            }
            0x1c => {
                let _ = varint(plain, &mut at).ok_or(e)?;
                let _ = varint(plain, &mut at).ok_or(e)?;
                let len = varint(plain, &mut at).ok_or(e)? as usize;
                at = at.checked_add(len).filter(|&a| a <= plain.len()).ok_or(e)?;
            }
            _ => return Err(e),
        }
    }
    Ok(out)
}

/// How much of a QUIC flow is read before it is judged as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicLimits {
    /// Initial packets read per direction.
    pub max_packets: u32,
    /// Bytes of CRYPTO data buffered per direction (also the highest offset accepted).
    pub max_crypto: usize,
}

impl Default for QuicLimits {
    fn default() -> Self {
        QuicLimits { max_packets: 16, max_crypto: 64 * 1024 }
    }
}

/// What one datagram showed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DatagramSeen {
    /// Initial packets decrypted.
    pub initials: u32,
    /// Packets that did not decrypt or parse.
    pub undecodable: u32,
    /// A Retry or a Version Negotiation packet came.
    pub retry: bool,
}

/// One QUIC flow's Initial packets, both directions, into TLS handshake events.
pub struct QuicObserver {
    limits: QuicLimits,
    version: Option<u32>,
    keys: Option<InitialKeys>,
    /// The Destination Connection ID the keys come from (the client's
    /// first, or the one a Retry gave it).
    client_dcid: Vec<u8>,
    /// Every connection ID the connection's long headers go to: the client's
    /// first DCID, a Retry's, the server's own (at most [`MAX_CIDS`]).
    cids: Vec<Box<[u8]>>,
    /// Packets read per direction (client, server), and the largest number.
    packets: [u32; 2],
    largest: [Option<u64>; 2],
    /// CRYPTO data per direction, by offset.
    crypto: [StreamReassembler; 2],
    /// Bytes already handed to the TLS observer per direction.
    delivered: [u32; 2],
    tls: HandshakeObserver,
    /// A Retry changed the keys.
    retried: bool,
}

impl QuicObserver {
    /// A flow seen from its first client datagram on.
    pub fn new(limits: QuicLimits) -> QuicObserver {
        let mut tls = HandshakeObserver::new(ObserverLimits {
            max_buffer: limits.max_crypto + 5 * (limits.max_crypto / 16384 + 1),
            defer_fingerprints: true,
            ..ObserverLimits::default()
        });
        tls.set_initial_seq(Direction::ToServer, 0);
        tls.set_initial_seq(Direction::ToClient, 0);
        let crypto = || {
            let mut r = StreamReassembler::new(limits.max_crypto);
            r.set_next_seq(0);
            r
        };
        QuicObserver {
            limits,
            version: None,
            keys: None,
            client_dcid: Vec::new(),
            cids: Vec::new(),
            packets: [0; 2],
            largest: [None; 2],
            crypto: [crypto(), crypto()],
            delivered: [0; 2],
            tls,
            retried: false,
        }
    }

    /// The version the client speaks (once its first Initial was seen).
    pub fn version(&self) -> Option<u32> {
        self.version
    }

    /// Whether a Retry came.
    pub fn retried(&self) -> bool {
        self.retried
    }

    /// The connection IDs this connection's long headers go to: the client's
    /// first Destination Connection ID, the one a Retry gave it, the server's
    /// own. A client Initial to another is another connection.
    pub fn connection_ids(&self) -> &[Box<[u8]>] {
        &self.cids
    }

    fn know(&mut self, cid: &[u8]) {
        note_cid(&mut self.cids, cid);
    }

    /// Whether either side reached its packet limit.
    pub fn exhausted(&self) -> bool {
        self.packets.iter().any(|&n| n >= self.limits.max_packets)
    }

    /// Reads one UDP payload (sent by the client if `from_client`): every
    /// long-header packet coalesced in it.
    pub fn on_datagram(&mut self, from_client: bool, datagram: &[u8]) -> DatagramSeen {
        let mut seen = DatagramSeen::default();
        let mut rest = datagram;
        let side = usize::from(!from_client);
        while !rest.is_empty() {
            let h = match parse_long_header(rest) {
                Ok(h) => h,
                Err(_) => {
                    seen.undecodable += u32::from(rest.iter().any(|&b| b != 0));
                    break;
                }
            };
            match h.kind {
                PacketKind::VersionNegotiation if !from_client => {
                    seen.retry = true;
                    break;
                }
                PacketKind::Retry if !from_client => {
                    // A client takes one Retry, and only with the tag that
                    // binds it to its own Initial (RFC 9000 §17.2.5.2).
                    let version = self.version.unwrap_or(h.version);
                    if self.retried || self.keys.is_none() || !retry_integrity_ok(version, &self.client_dcid, rest) {
                        seen.undecodable += 1;
                        break;
                    }
                    seen.retry = true;
                    // The client's next Initial goes to the Retry's SCID, with keys from it.
                    self.keys = InitialKeys::new(version, h.scid).ok();
                    self.client_dcid = h.scid.to_vec();
                    self.know(h.scid);
                    self.retried = true;
                    self.crypto[0] = fresh(self.limits.max_crypto);
                    self.largest[0] = None;
                    break;
                }
                PacketKind::Initial if self.packets[side] < self.limits.max_packets => {
                    if from_client && (self.keys.is_none() || self.version.is_some_and(|v| v != h.version)) {
                        self.version = Some(h.version);
                        self.keys = InitialKeys::new(h.version, h.dcid).ok();
                        self.client_dcid = h.dcid.to_vec();
                        self.know(h.dcid);
                    }
                    let opened = self.keys.as_ref().map(|k| k.open(rest, &h, from_client, self.largest[side]));
                    match opened {
                        Some(Ok((pn, plain))) => {
                            if !from_client {
                                self.know(h.scid);
                            }
                            seen.initials += 1;
                            self.packets[side] += 1;
                            self.largest[side] = Some(self.largest[side].map_or(pn, |l| l.max(pn)));
                            self.take_crypto(from_client, &plain);
                        }
                        _ => seen.undecodable += 1,
                    }
                }
                _ => {}
            }
            rest = rest.get(h.end..).unwrap_or_default();
        }
        seen
    }

    fn take_crypto(&mut self, from_client: bool, plain: &[u8]) {
        let side = usize::from(!from_client);
        let Ok(frames) = crypto_frames(plain) else { return };
        for (offset, data) in frames {
            if offset.saturating_add(data.len() as u64) > self.limits.max_crypto as u64 {
                continue;
            }
            let _ = self.crypto[side].push(offset as u32, data);
        }
        // The handshake messages in order, as TLS records for the observer.
        let dir = if from_client { Direction::ToServer } else { Direction::ToClient };
        loop {
            let ready = self.crypto[side].contiguous();
            if ready.is_empty() {
                break;
            }
            let n = ready.len().min(16_384);
            let mut record = Vec::with_capacity(5 + n);
            record.extend_from_slice(&[22, 3, 3]);
            record.extend_from_slice(&(n as u16).to_be_bytes());
            record.extend_from_slice(&ready[..n]);
            self.crypto[side].consume(n);
            self.tls.on_segment(dir, self.delivered[side], &record);
            self.delivered[side] = self.delivered[side].wrapping_add(record.len() as u32);
        }
    }

    /// The next TLS handshake event (ClientHello, ServerHello, ...).
    pub fn poll_event(&mut self) -> Option<ObserverEvent> {
        let mut ev = self.tls.poll_event()?;
        if let ObserverEvent::ClientHello(ch) = &mut ev {
            ch.quic = true;
        }
        Some(ev)
    }
}

fn fresh(cap: usize) -> StreamReassembler {
    let mut r = StreamReassembler::new(cap);
    r.set_next_seq(0);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_read_as_rfc_9000_shows() {
        // RFC 9000 Appendix A.1's examples.
        for (bytes, value) in [
            (&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c][..], 151_288_809_941_952_652u64),
            (&[0x9d, 0x7f, 0x3e, 0x7d][..], 494_878_333),
            (&[0x7b, 0xbd][..], 15_293),
            (&[0x25][..], 37),
            (&[0x40, 0x25][..], 37),
        ] {
            let mut at = 0;
            assert_eq!(varint(bytes, &mut at), Some(value));
            assert_eq!(at, bytes.len());
        }
        let mut at = 0;
        assert_eq!(varint(&[0xc2, 0x19], &mut at), None);
    }

    #[test]
    fn packet_numbers_decode_as_rfc_9000_shows() {
        // RFC 9000 Appendix A.3: largest 0xa82f30ea, truncated 0x9b32 (2 bytes).
        assert_eq!(decode_packet_number(Some(0xa82f_30ea), 0x9b32, 2), 0xa82f_9b32);
        assert_eq!(decode_packet_number(None, 2, 4), 2);
    }

    /// A client Initial of `version` carrying `crypto` at `offset`, protected
    /// with rustls as a QUIC client protects it (packet number `pn`).
    fn client_initial(version: u32, dcid: &[u8], pn: u32, offset: u64, crypto: &[u8]) -> Vec<u8> {
        let v = if version == VERSION_2 { Version::V2 } else { Version::V1 };
        #[allow(irrefutable_let_patterns)]
        let rustls::SupportedCipherSuite::Tls13(suite) =
            rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
        else {
            unreachable!()
        };
        let keys = Keys::initial(v, suite, suite.quic.unwrap(), dcid, Side::Client);
        let mut frames = vec![0x06];
        frames.extend_from_slice(&(0x8000_0000u32 | offset as u32).to_be_bytes()); // 4-byte varint
        frames.extend_from_slice(&(0x4000u16 | crypto.len() as u16).to_be_bytes());
        frames.extend_from_slice(crypto);
        frames.extend_from_slice(&[0x01, 0x00, 0x00]); // PING, PADDING
        let kind = if version == VERSION_2 { 1 } else { 0 };
        let mut header = vec![0xc0 | kind << 4 | 0x03];
        header.extend_from_slice(&version.to_be_bytes());
        header.push(dcid.len() as u8);
        header.extend_from_slice(dcid);
        header.extend_from_slice(&[0, 0]); // no SCID, no token
        let length = 4 + frames.len() + 16;
        header.extend_from_slice(&(0x4000u16 | length as u16).to_be_bytes());
        let pn_at = header.len();
        header.extend_from_slice(&pn.to_be_bytes());
        let tag = keys.local.packet.encrypt_in_place(u64::from(pn), &header, &mut frames).unwrap();
        let mut packet = header;
        packet.extend_from_slice(&frames);
        packet.extend_from_slice(tag.as_ref());
        let sample = packet[pn_at + 4..pn_at + 20].to_vec();
        let (head, rest) = packet.split_at_mut(pn_at);
        keys.local.header.encrypt_in_place(&sample, &mut head[0], &mut rest[..4]).unwrap();
        packet
    }

    #[test]
    fn initials_of_both_versions_are_read_across_coalesced_packets_out_of_order() {
        // The handshake message, as CRYPTO frames carry it (no record layer).
        let hello = &crate::tls::test_support::handshake(1, &crate::tls::test_support::chrome_client_hello())[..];
        let half = hello.len() / 2;
        for version in [VERSION_1, VERSION_2] {
            let dcid = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
            // The second half first, then the first, coalesced in one datagram.
            let mut datagram = client_initial(version, &dcid, 1, half as u64, &hello[half..]);
            datagram.extend(client_initial(version, &dcid, 2, 0, &hello[..half]));
            let h = parse_long_header(&datagram).unwrap();
            assert_eq!((h.version, h.kind, h.dcid), (version, PacketKind::Initial, &dcid[..]));
            let mut o = QuicObserver::new(QuicLimits::default());
            let seen = o.on_datagram(true, &datagram);
            assert_eq!(seen.initials, 2, "version {version:#x}");
            let Some(ObserverEvent::ClientHello(ch)) = o.poll_event() else { panic!("no ClientHello ({version:#x})") };
            assert_eq!(ch.sni.as_deref(), Some("tls-outer.browserleaks.com"));
            assert!(ch.quic);
            // Keys from another DCID do not open it.
            let other = InitialKeys::new(version, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
            assert_eq!(other.open(&datagram, &h, true, None).err(), Some(QuicError::Decrypt));
        }
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        for g in [&[][..], &[0xc0], &[0xc0, 0, 0, 0, 1, 200], &[0x40, 1, 2, 3]] {
            assert!(parse_long_header(g).is_err());
        }
        let mut o = QuicObserver::new(QuicLimits::default());
        let seen = o.on_datagram(true, &[0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0x41, 0x00, 1, 2, 3]);
        assert_eq!(seen.initials, 0);
        assert!(o.poll_event().is_none());
        assert_eq!(crypto_frames(&[0x08, 0]), Err(QuicError::Frame));
        assert_eq!(crypto_frames(&[0x06, 0, 0x50]), Err(QuicError::Frame));
    }
}
