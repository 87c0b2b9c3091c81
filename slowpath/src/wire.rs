//! Between frames and the TCP endpoints: a decrypted flow's addresses as a
//! template that makes frames toward either end, and segments read out of
//! frames. Sans-IO, like everything the slow path's lcores drive.

use etherparse::{PacketBuilder, TcpOptionElement};
use tlsgate_core::packet::{tcp_flags, Addr, TcpFrame};

use crate::tcp::{flags, Segment};

/// How a decrypted flow's frames look: the link-layer header as the client's
/// frames carry it (MACs, VLAN tags, EtherType), and both endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowTemplate {
    /// Link-layer header of a frame toward the server (as the client sent it).
    l2_to_server: Vec<u8>,
    /// The same toward the client (MACs swapped).
    l2_to_client: Vec<u8>,
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// The client's address.
    pub client_ip: Addr,
    /// The server's address.
    pub server_ip: Addr,
    /// The client's port.
    pub client_port: u16,
    /// The server's port.
    pub server_port: u16,
}

/// Hop limit of the frames the slow path makes.
const TTL: u8 = 64;

impl FlowTemplate {
    /// From a frame the client sent (parsed as `t`).
    pub fn from_client_frame(t: &TcpFrame) -> FlowTemplate {
        let l2 = t.link_header().to_vec();
        let mut swapped = l2.clone();
        swapped[0..6].copy_from_slice(&l2[6..12]);
        swapped[6..12].copy_from_slice(&l2[0..6]);
        FlowTemplate {
            l2_to_server: l2,
            l2_to_client: swapped,
            ipv6: t.ipv6,
            client_ip: t.src,
            server_ip: t.dst,
            client_port: t.src_port,
            server_port: t.dst_port,
        }
    }

    /// The whole frame carrying `seg` toward the client (else toward the server).
    pub fn frame(&self, to_client: bool, seg: &Segment) -> Vec<u8> {
        let (l2, src, dst, sp, dp) = if to_client {
            (&self.l2_to_client, self.server_ip, self.client_ip, self.server_port, self.client_port)
        } else {
            (&self.l2_to_server, self.client_ip, self.server_ip, self.client_port, self.server_port)
        };
        build_frame(l2, self.ipv6, (src, sp), (dst, dp), seg)
    }
}

/// An Ethernet frame: `l2` (up to and including the EtherType), then IP and TCP made from `seg`.
pub fn build_frame(l2: &[u8], ipv6: bool, src: (Addr, u16), dst: (Addr, u16), seg: &Segment) -> Vec<u8> {
    let builder = if ipv6 {
        PacketBuilder::ipv6(src.0, dst.0, TTL)
    } else {
        let v4 = |a: Addr| [a[12], a[13], a[14], a[15]];
        PacketBuilder::ipv4(v4(src.0), v4(dst.0), TTL)
    };
    let mut tcp = builder.tcp(src.1, dst.1, seg.seq, seg.window);
    if seg.flags & flags::ACK != 0 {
        tcp = tcp.ack(seg.ack);
    }
    if seg.flags & flags::SYN != 0 {
        tcp = tcp.syn();
    }
    if seg.flags & flags::FIN != 0 {
        tcp = tcp.fin();
    }
    if seg.flags & flags::RST != 0 {
        tcp = tcp.rst();
    }
    if seg.flags & flags::PSH != 0 {
        tcp = tcp.psh();
    }
    let mut out = Vec::with_capacity(l2.len() + 72 + seg.payload.len());
    out.extend_from_slice(l2);
    // One timestamps option (10 bytes) always fits the 40 bytes TCP allows.
    let tcp = match seg.timestamps {
        Some((val, ecr)) => tcp.options(&[TcpOptionElement::Timestamp(val, ecr)]),
        None => Ok(tcp),
    };
    let written = match tcp {
        Ok(tcp) => tcp.write(&mut out, &seg.payload).is_ok(),
        Err(_) => false,
    };
    // Writing into a Vec cannot fail; a payload over 64 KiB is never made (segments are MSS-sized).
    debug_assert!(written);
    out
}

/// The segment a frame carries, for a TCP endpoint.
pub fn segment_of(t: &TcpFrame) -> Segment {
    let o = t.options();
    Segment {
        seq: t.seq,
        ack: t.ack,
        flags: t.flags & (tcp_flags::FIN | tcp_flags::SYN | tcp_flags::RST | tcp_flags::PSH | tcp_flags::ACK),
        window: t.window,
        timestamps: o.timestamps,
        sack: Vec::new(),
        payload: t.payload().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(vlan: bool) -> Vec<u8> {
        let seg = Segment {
            seq: 1000,
            ack: 5000,
            flags: flags::ACK | flags::PSH,
            window: 512,
            timestamps: Some((7, 9)),
            sack: Vec::new(),
            payload: b"hello".to_vec(),
        };
        let mut l2 = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        if vlan {
            l2.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        }
        l2.extend_from_slice(&[0x08, 0x00]);
        let mut c = [0u8; 16];
        c[12..].copy_from_slice(&[10, 0, 0, 1]);
        let mut s = [0u8; 16];
        s[12..].copy_from_slice(&[10, 0, 0, 2]);
        build_frame(&l2, false, (c, 40000), (s, 443), &seg)
    }

    #[test]
    fn frames_toward_the_client_swap_macs_addresses_and_ports_and_keep_the_vlan() {
        for vlan in [false, true] {
            let f = client_frame(vlan);
            let t = TcpFrame::parse(&f).expect("a TCP frame");
            let seg = segment_of(&t);
            assert_eq!((seg.seq, seg.ack, seg.window, seg.timestamps), (1000, 5000, 512, Some((7, 9))));
            assert_eq!(seg.payload, b"hello");
            let tpl = FlowTemplate::from_client_frame(&t);
            let back = tpl.frame(true, &seg);
            let b = TcpFrame::parse(&back).expect("a TCP frame");
            assert_eq!((b.src, b.dst, b.src_port, b.dst_port), (t.dst, t.src, 443, 40000));
            assert_eq!(&back[0..6], &f[6..12]);
            assert_eq!(&back[6..12], &f[0..6]);
            assert_eq!(b.vlan, t.vlan);
            assert_eq!(segment_of(&b), seg);
            // Toward the server it is the client's frame again.
            assert_eq!(tpl.frame(false, &seg), f);
        }
    }
}
