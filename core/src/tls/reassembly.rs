//! One direction of a TCP byte stream, put back in order from segments that
//! arrive out of order, twice, or overlapping. Bounded: every byte it holds
//! lies in a window of `cap` bytes starting at the first unread byte.
//!
//! Sequence numbers are 32-bit and wrap; the reassembler works on 64-bit
//! stream offsets (bytes since the start of the stream) and maps each
//! segment's sequence number to an offset by its signed distance from the
//! end of the contiguous data, so wrap-around needs no special case.
//!
//! Bytes already read are kept a while (up to `cap` of them), so that a
//! retransmission can be compared with what was judged: [`conflicts`]
//! says whether a segment brings other bytes than those already received at
//! its place (an inline evasion; the first bytes are the ones that count).
//!
//! [`conflicts`]: StreamReassembler::conflicts

use std::collections::BTreeMap;

/// Default reassembly cap per direction (64 KiB).
pub const DEFAULT_REASSEMBLY_CAP: usize = 64 * 1024;

/// Most out-of-order pieces held at once. Each piece costs a map entry as
/// well as its bytes; this keeps a stream of one-byte holes from turning the
/// byte cap into a much larger heap footprint.
const MAX_OUT_OF_ORDER_PIECES: usize = 256;

/// Why a segment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReassemblyError {
    /// Storing the segment would hold more than the cap (unread contiguous
    /// bytes plus out-of-order bytes), or it lies beyond the window of `cap`
    /// bytes after the first unread byte. Nothing of it was stored.
    #[error("reassembly buffer cap exceeded")]
    Overflow,
    /// Too many separate out-of-order pieces are waiting for their gaps.
    #[error("too many out-of-order segments waiting")]
    TooManyHoles,
}

/// One TCP direction's byte stream, reassembled.
#[derive(Debug, Clone)]
pub struct StreamReassembler {
    cap: usize,
    /// Sequence number of the byte at stream offset 0; `None` until known.
    base_seq: Option<u32>,
    /// Stream offset of the first unread byte, `contiguous[read]`.
    head_offset: u64,
    /// In-order bytes; those before `read` are consumed, kept (at most
    /// `cap` of them) to compare retransmissions with, and dropped lazily (so
    /// that consuming many small records costs no quadratic copying).
    contiguous: Vec<u8>,
    read: usize,
    /// Out-of-order pieces by stream offset; never overlapping each other,
    /// all past the end of `contiguous`.
    out_of_order: BTreeMap<u64, Vec<u8>>,
    out_of_order_bytes: usize,
}

impl StreamReassembler {
    /// A reassembler holding at most `cap` bytes.
    pub fn new(cap: usize) -> StreamReassembler {
        StreamReassembler {
            cap,
            base_seq: None,
            head_offset: 0,
            contiguous: Vec::new(),
            read: 0,
            out_of_order: BTreeMap::new(),
            out_of_order_bytes: 0,
        }
    }

    /// The sequence number of the stream's first byte, once known.
    pub fn stream_start(&self) -> Option<u32> {
        self.base_seq
    }

    /// Sets the sequence number of the stream's first byte (the SYN's ISN + 1).
    /// Without it the first segment pushed starts the stream. Setting the same
    /// value again (a retransmitted SYN) changes nothing; a different value
    /// starts the stream anew.
    pub fn set_next_seq(&mut self, seq: u32) {
        if self.base_seq == Some(seq) {
            return;
        }
        self.clear();
        self.base_seq = Some(seq);
    }

    /// Adds one segment's payload. Bytes already received (or consumed) are
    /// kept as first received; retransmissions and overlaps only fill gaps.
    pub fn push(&mut self, seq: u32, payload: &[u8]) -> Result<(), ReassemblyError> {
        if payload.is_empty() {
            return Ok(());
        }
        let base_seq = *self.base_seq.get_or_insert(seq);
        let end_offset = self.end_offset();
        // Offsets past 4 GiB wrap the same way sequence numbers do.
        let next_seq = base_seq.wrapping_add(end_offset as u32);
        // Signed distance on the 32-bit circle; negative = before what we have.
        let distance = i64::from(seq.wrapping_sub(next_seq) as i32);
        let start = end_offset as i64 + distance;
        let stop = start + payload.len() as i64;
        if stop <= end_offset as i64 {
            return Ok(()); // entirely old: a retransmission
        }
        // Drop the part that is already in order.
        let skip = (end_offset as i64 - start).max(0) as usize;
        let start = start.max(end_offset as i64) as u64;
        let data = payload.get(skip..).unwrap_or_default();
        let window_end = self.head_offset + self.cap as u64;
        if start + data.len() as u64 > window_end {
            return Err(ReassemblyError::Overflow);
        }
        self.insert_gaps(start, data)?;
        self.drain_in_order();
        Ok(())
    }

    /// The in-order bytes not yet consumed.
    pub fn contiguous(&self) -> &[u8] {
        self.contiguous.get(self.read..).unwrap_or_default()
    }

    /// Marks the first `n` contiguous bytes as read (at most all of them).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.unread());
        self.read += n;
        self.head_offset += n as u64;
        if self.read > self.cap {
            // Keep the last half cap of what was read.
            let cut = self.read - self.cap / 2;
            self.contiguous.drain(..cut);
            self.read -= cut;
        }
    }

    /// Whether the segment `(seq, payload)` carries bytes that differ from
    /// bytes already received at the same stream offsets (read and kept,
    /// unread, or out of order). Bytes read and no longer kept, and bytes not
    /// received yet, are not compared.
    pub fn conflicts(&self, seq: u32, payload: &[u8]) -> bool {
        let Some(base_seq) = self.base_seq else { return false };
        if payload.is_empty() {
            return false;
        }
        let end_offset = self.end_offset() as i64;
        let next_seq = base_seq.wrapping_add(end_offset as u32);
        let start = end_offset + i64::from(seq.wrapping_sub(next_seq) as i32);
        let stop = start + payload.len() as i64;
        let differ = |from: i64, to: i64, held: &[u8], held_start: i64| {
            let (a, b) = (from.max(start).max(held_start), to.min(stop).min(held_start + held.len() as i64));
            a < b
                && payload.get((a - start) as usize..(b - start) as usize)
                    != held.get((a - held_start) as usize..(b - held_start) as usize)
        };
        let kept_start = (self.head_offset - self.read as u64) as i64;
        if differ(kept_start, end_offset, &self.contiguous, kept_start) {
            return true;
        }
        if stop <= end_offset {
            return false;
        }
        for (&at, piece) in self.out_of_order.range(..stop as u64).rev() {
            let at = at as i64;
            if at + (piece.len() as i64) <= start {
                break;
            }
            if differ(at, at + piece.len() as i64, piece, at) {
                return true;
            }
        }
        false
    }

    /// The in-order bytes still kept (read or not), and the sequence
    /// number of the first; `None` before the stream start is known.
    pub fn kept(&self) -> Option<(u32, &[u8])> {
        let base = self.base_seq?;
        let first = self.head_offset - self.read as u64;
        Some((base.wrapping_add(first as u32), &self.contiguous))
    }

    /// Takes the in-order bytes kept (read or not) out, with the sequence
    /// number of the first; the stream is left empty at its position.
    pub fn take_kept(&mut self) -> Option<(u32, Vec<u8>)> {
        let (start, _) = self.kept()?;
        let bytes = std::mem::take(&mut self.contiguous);
        self.release();
        Some((start, bytes))
    }

    /// Bytes held: contiguous unread plus out-of-order (read bytes kept
    /// for comparison not counted; they are at most `cap`).
    pub fn buffered(&self) -> usize {
        self.unread() + self.out_of_order_bytes
    }

    fn unread(&self) -> usize {
        self.contiguous.len().saturating_sub(self.read)
    }

    /// The cap given at construction.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Drops the bytes already read (no retransmission is compared with them
    /// any more); unread and out-of-order bytes stay.
    pub fn forget_read(&mut self) {
        if self.read == self.contiguous.len() {
            self.contiguous.clear();
        } else {
            self.contiguous.drain(..self.read);
        }
        self.read = 0;
    }

    /// Frees every buffer (the stream position is kept).
    pub fn release(&mut self) {
        self.head_offset = self.end_offset();
        self.contiguous = Vec::new();
        self.read = 0;
        self.out_of_order = BTreeMap::new();
        self.out_of_order_bytes = 0;
    }

    fn clear(&mut self) {
        self.head_offset = 0;
        self.contiguous.clear();
        self.read = 0;
        self.out_of_order.clear();
        self.out_of_order_bytes = 0;
    }

    /// Stream offset one past the contiguous bytes.
    fn end_offset(&self) -> u64 {
        self.head_offset + self.unread() as u64
    }

    /// Stores the parts of `[start, start + data.len())` that no earlier
    /// out-of-order piece covers. Checks every limit before changing anything.
    fn insert_gaps(&mut self, start: u64, data: &[u8]) -> Result<(), ReassemblyError> {
        let stop = start + data.len() as u64;
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        let mut cursor = start;
        // The piece that starts before `start` may cover its beginning.
        if let Some((&s, v)) = self.out_of_order.range(..start).next_back() {
            cursor = cursor.max(s + v.len() as u64);
        }
        for (&s, v) in self.out_of_order.range(start..stop) {
            if s > cursor {
                pieces.push((cursor, s));
            }
            cursor = cursor.max(s + v.len() as u64);
        }
        if cursor < stop {
            pieces.push((cursor, stop));
        }
        let added: u64 = pieces.iter().map(|(a, b)| b - a).sum();
        if self.buffered() as u64 + added > self.cap as u64 {
            return Err(ReassemblyError::Overflow);
        }
        let fills_head = pieces.first().is_some_and(|(a, _)| *a == self.end_offset());
        if !fills_head && self.out_of_order.len() + pieces.len() > MAX_OUT_OF_ORDER_PIECES {
            return Err(ReassemblyError::TooManyHoles);
        }
        for (a, b) in pieces {
            let from = (a - start) as usize;
            let to = (b - start) as usize;
            let Some(bytes) = data.get(from..to) else { continue };
            self.out_of_order_bytes += bytes.len();
            // A piece that continues the one before it is appended to it (a
            // cheap append; joining a piece after it would copy that piece).
            let adjacent_before =
                self.out_of_order.range(..a).next_back().filter(|(k, v)| **k + v.len() as u64 == a).map(|(k, _)| *k);
            match adjacent_before.and_then(|k| self.out_of_order.get_mut(&k)) {
                Some(prev) => prev.extend_from_slice(bytes),
                None => {
                    self.out_of_order.insert(a, bytes.to_vec());
                }
            }
        }
        Ok(())
    }

    /// Moves out-of-order pieces that now continue the contiguous bytes.
    fn drain_in_order(&mut self) {
        loop {
            let end = self.end_offset();
            let Some(entry) = self.out_of_order.first_entry() else { break };
            if *entry.key() != end {
                break;
            }
            let bytes = entry.remove();
            self.out_of_order_bytes -= bytes.len();
            if self.unread() == 0 {
                self.contiguous = bytes;
                self.read = 0;
            } else {
                self.contiguous.extend_from_slice(&bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn in_order_segments_concatenate() {
        let data = stream(300);
        let mut r = StreamReassembler::new(1024);
        r.set_next_seq(1000);
        for (i, chunk) in data.chunks(100).enumerate() {
            r.push(1000 + (i * 100) as u32, chunk).unwrap();
        }
        assert_eq!(r.contiguous(), &data[..]);
        r.consume(150);
        assert_eq!(r.contiguous(), &data[150..]);
        assert_eq!(r.buffered(), 150);
    }

    #[test]
    fn reversed_segments_reassemble() {
        let data = stream(500);
        let mut r = StreamReassembler::new(1024);
        r.set_next_seq(7);
        let chunks: Vec<_> = data.chunks(50).enumerate().collect();
        for (i, chunk) in chunks.iter().rev() {
            r.push(7 + (i * 50) as u32, chunk).unwrap();
        }
        assert_eq!(r.contiguous(), &data[..]);
        assert_eq!(r.buffered(), 500);
    }

    #[test]
    fn duplicates_and_old_retransmissions_are_ignored() {
        let data = stream(200);
        let mut r = StreamReassembler::new(1024);
        r.set_next_seq(0);
        r.push(0, &data[..100]).unwrap();
        r.push(0, &data[..100]).unwrap();
        r.consume(80);
        r.push(0, &data[..100]).unwrap();
        r.push(50, &data[50..150]).unwrap();
        r.push(100, &data[100..]).unwrap();
        r.push(100, &data[100..]).unwrap();
        assert_eq!(r.contiguous(), &data[80..]);
    }

    #[test]
    fn first_arrived_bytes_win_in_overlaps() {
        let mut r = StreamReassembler::new(1024);
        r.set_next_seq(100);
        r.push(105, b"BBBBB").unwrap(); // 105..110
        r.push(112, b"CC").unwrap(); // 112..114
                                     // Overlaps both pieces and the gaps around them.
        r.push(100, b"xxxxxxxxxxxxxxxxyy").unwrap(); // 100..118
        assert_eq!(r.contiguous(), b"xxxxxBBBBBxxCCxxyy");
        // An overlap of already in-order bytes changes nothing.
        r.push(104, b"zzzzzzzzzzzzzzzzzzzz").unwrap(); // 104..124
        assert_eq!(r.contiguous(), b"xxxxxBBBBBxxCCxxyyzzzzzz");
    }

    #[test]
    fn conflicting_retransmissions_are_seen_where_bytes_are_kept() {
        let mut r = StreamReassembler::new(64);
        r.set_next_seq(100);
        r.push(100, b"hello world").unwrap();
        r.push(120, b"tail").unwrap(); // out of order: 120..124
        assert!(!r.conflicts(100, b"hello"));
        assert!(r.conflicts(100, b"jello"));
        assert!(!r.conflicts(106, b"world\0\0\0\0\0\0\0\0\0tail")); // a gap is not compared
        assert!(r.conflicts(110, b"d\0\0\0\0\0\0\0\0\0tale"));
        assert!(!r.conflicts(90, b"0123456789hello")); // before the stream: not compared
                                                       // Read bytes stay comparable.
        r.consume(11);
        assert!(r.conflicts(104, b"X"));
        assert!(!r.conflicts(104, b"o"));
        // Past what is kept: not compared, never wrong.
        for i in 0..10 {
            r.push(111 + i * 9, b"ninebytes").unwrap_or(());
            r.consume(r.contiguous().len());
        }
        assert!(!r.conflicts(100, b"jello"));
    }

    #[test]
    fn first_segment_starts_the_stream_without_syn() {
        let mut r = StreamReassembler::new(64);
        r.push(555, b"hello").unwrap();
        r.push(560, b" world").unwrap();
        assert_eq!(r.contiguous(), b"hello world");
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let data = stream(40);
        let mut r = StreamReassembler::new(1024);
        let isn = u32::MAX - 9; // 10 bytes before the wrap
        r.set_next_seq(isn);
        r.push(isn.wrapping_add(20), &data[20..]).unwrap(); // after the wrap, out of order
        r.push(isn, &data[..15]).unwrap(); // spans the wrap
        r.push(isn.wrapping_add(10), &data[10..25]).unwrap(); // starts at seq 0, overlaps both
        assert_eq!(r.contiguous(), &data[..]);
        // A retransmission from before the wrap is recognized as old.
        r.push(isn, &data[..5]).unwrap();
        assert_eq!(r.contiguous().len(), 40);
    }

    #[test]
    fn contiguous_overflow_is_refused_and_nothing_stored() {
        let mut r = StreamReassembler::new(100);
        r.set_next_seq(0);
        r.push(0, &stream(80)).unwrap();
        assert_eq!(r.push(80, &stream(30)), Err(ReassemblyError::Overflow));
        assert_eq!(r.buffered(), 80);
        r.consume(50);
        r.push(80, &stream(30)).unwrap();
        assert_eq!(r.buffered(), 60);
    }

    #[test]
    fn out_of_order_beyond_the_window_is_refused() {
        let mut r = StreamReassembler::new(100);
        r.set_next_seq(0);
        assert_eq!(r.push(95, &stream(10)), Err(ReassemblyError::Overflow));
        assert_eq!(r.push(1_000_000, b"x"), Err(ReassemblyError::Overflow));
        assert_eq!(r.buffered(), 0);
        r.push(90, &stream(10)).unwrap();
        assert_eq!(r.buffered(), 10);
        assert!(r.contiguous().is_empty());
    }

    #[test]
    fn total_never_exceeds_cap() {
        let mut r = StreamReassembler::new(1000);
        r.set_next_seq(0);
        let mut x: u32 = 12345;
        for _ in 0..5000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let seq = (x >> 8) % 1400;
            let len = (x >> 20) % 200;
            let _ = r.push(seq, &vec![0u8; len as usize]);
            assert!(r.buffered() <= 1000);
            if x.is_multiple_of(7) {
                let n = r.contiguous().len() / 2;
                r.consume(n);
            }
        }
    }

    #[test]
    fn many_holes_are_refused() {
        let mut r = StreamReassembler::new(64 * 1024);
        r.set_next_seq(0);
        let mut refused = false;
        for i in 0..1000u32 {
            if r.push(1 + i * 2, b"x") == Err(ReassemblyError::TooManyHoles) {
                refused = true;
                break;
            }
        }
        assert!(refused);
        // The head can still be filled.
        r.push(0, b"y").unwrap();
        assert_eq!(r.contiguous(), b"yx");
    }

    #[test]
    fn same_syn_twice_keeps_data_new_isn_restarts() {
        let mut r = StreamReassembler::new(64);
        r.set_next_seq(10);
        r.push(10, b"abc").unwrap();
        r.set_next_seq(10);
        assert_eq!(r.contiguous(), b"abc");
        r.set_next_seq(99);
        assert!(r.contiguous().is_empty());
        r.push(99, b"z").unwrap();
        assert_eq!(r.contiguous(), b"z");
    }
}
