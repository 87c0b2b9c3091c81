//! Decrypted traffic as a mirror port would show it: each decrypted flow's
//! plaintext as one synthetic TCP connection (its own three-way handshake,
//! the client's bytes and the server's bytes each in their own sequence
//! space, FINs at the end) between the flow's real addresses and ports, so
//! that any analyser that follows TCP streams reads the plaintext.

use crate::tcp::{flags, Segment};
use crate::wire::FlowTemplate;

/// Payload bytes per synthetic segment.
const CHUNK: usize = 1400;
/// Initial sequence numbers of the synthetic connection (arbitrary).
const CLIENT_ISN: u32 = 0x1000_0000;
const SERVER_ISN: u32 = 0x2000_0000;

/// One decrypted flow's synthetic stream.
#[derive(Debug, Clone)]
pub struct DecryptedStream {
    template: FlowTemplate,
    client_next: u32,
    server_next: u32,
    finished: bool,
}

/// Frames with their times (ns).
pub type Frames = Vec<(u64, Vec<u8>)>;

impl DecryptedStream {
    /// Starts the stream: SYN, SYN-ACK, ACK at `now_ns`, appended to `out`.
    pub fn new(template: FlowTemplate, now_ns: u64, out: &mut Frames) -> DecryptedStream {
        let s = DecryptedStream {
            template,
            client_next: CLIENT_ISN.wrapping_add(1),
            server_next: SERVER_ISN.wrapping_add(1),
            finished: false,
        };
        out.push((now_ns, s.template.frame(false, &seg(CLIENT_ISN, 0, flags::SYN, &[]))));
        out.push((now_ns, s.template.frame(true, &seg(SERVER_ISN, s.client_next, flags::SYN | flags::ACK, &[]))));
        out.push((now_ns, s.template.frame(false, &seg(s.client_next, s.server_next, flags::ACK, &[]))));
        s
    }

    /// Plaintext sent by the client (else by the server), as segments appended to `out`.
    pub fn data(&mut self, from_client: bool, bytes: &[u8], now_ns: u64, out: &mut Frames) {
        if self.finished {
            return;
        }
        for chunk in bytes.chunks(CHUNK) {
            let (seq, ack) =
                if from_client { (self.client_next, self.server_next) } else { (self.server_next, self.client_next) };
            let frame = self.template.frame(!from_client, &seg(seq, ack, flags::ACK | flags::PSH, chunk));
            out.push((now_ns, frame));
            let next = seq.wrapping_add(chunk.len() as u32);
            if from_client {
                self.client_next = next;
            } else {
                self.server_next = next;
            }
        }
    }

    /// Ends the stream: a FIN each way.
    pub fn finish(&mut self, now_ns: u64, out: &mut Frames) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let fin = flags::FIN | flags::ACK;
        out.push((now_ns, self.template.frame(false, &seg(self.client_next, self.server_next, fin, &[]))));
        out.push((
            now_ns,
            self.template.frame(true, &seg(self.server_next, self.client_next.wrapping_add(1), fin, &[])),
        ));
    }
}

fn seg(seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Segment {
    Segment { seq, ack, flags, window: 65535, timestamps: None, sack: Vec::new(), payload: payload.to_vec() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{build_frame, segment_of};
    use tlsgate_core::packet::TcpFrame;

    #[test]
    fn a_stream_is_a_handshake_then_both_directions_in_order_then_fins() {
        let mut c = [0u8; 16];
        c[12..].copy_from_slice(&[10, 0, 0, 1]);
        let mut s = [0u8; 16];
        s[12..].copy_from_slice(&[10, 0, 0, 2]);
        let l2 = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let first = build_frame(&l2, false, (c, 40000), (s, 443), &seg(1, 1, flags::ACK, b"x"));
        let t = TcpFrame::parse(&first).unwrap();
        let tpl = FlowTemplate::from_client_frame(&t);
        let mut out = Vec::new();
        let mut st = DecryptedStream::new(tpl, 5, &mut out);
        st.data(true, &vec![b'a'; 3000], 6, &mut out);
        st.data(false, b"reply", 7, &mut out);
        st.finish(8, &mut out);
        st.finish(9, &mut out);
        assert_eq!(out.len(), 3 + 3 + 1 + 2);
        let segs: Vec<(TcpFrame, Segment)> = out
            .iter()
            .map(|(_, f)| {
                let t = TcpFrame::parse(f).unwrap();
                (t, segment_of(&t))
            })
            .collect();
        assert_eq!(segs[0].1.flags, flags::SYN);
        assert_eq!(segs[1].1.flags, flags::SYN | flags::ACK);
        assert_eq!(segs[1].0.src_port, 443);
        let client_bytes: Vec<u8> = segs[3..6].iter().flat_map(|(_, s)| s.payload.clone()).collect();
        assert_eq!(client_bytes, vec![b'a'; 3000]);
        assert_eq!(segs[4].1.seq, segs[3].1.seq + 1400);
        assert_eq!(segs[6].1.payload, b"reply");
        assert_eq!(segs[6].1.ack, segs[5].1.seq + 200);
        assert!(segs[7].1.flags & flags::FIN != 0 && segs[8].1.flags & flags::FIN != 0);
    }
}
