//! Synthetic load: Ethernet/IPv4/TCP frames of many flows and mixed sizes, as
//! a TLS-heavy link carries them (small ACKs, mid-size handshake records,
//! full-size data segments).

use etherparse::PacketBuilder;

/// Frame sizes (bytes on the wire, without FCS) cycled through, roughly the
/// simple IMIX: mostly small, some mid-size, some full-size.
pub const IMIX: [usize; 12] = [64, 64, 64, 64, 64, 64, 64, 594, 594, 594, 594, 1514];

/// `count` frames over `flows` TCP flows (client 10.1.x.y -> server
/// 10.2.0.z:443 and back), sizes cycling through `sizes`.
pub fn tcp_frames(count: usize, flows: usize, sizes: &[usize]) -> Vec<Vec<u8>> {
    let flows = flows.max(1);
    (0..count)
        .map(|i| {
            let f = (i % flows) as u32;
            let to_server = (i / flows).is_multiple_of(2);
            let client = [10, 1, (f >> 8) as u8, f as u8];
            let server = [10, 2, 0, (f % 7) as u8 + 1];
            let cport = 20000 + (f % 40000) as u16;
            let size = sizes[i % sizes.len()].max(54);
            let payload = vec![(i & 0xff) as u8; size - 54];
            let (src, dst, sp, dp) =
                if to_server { (client, server, cport, 443) } else { (server, client, 443, cport) };
            let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4(src, dst, 64)
                .tcp(sp, dp, 1000 + i as u32, 65535)
                .ack(1);
            let mut out = Vec::with_capacity(size);
            b.write(&mut out, &payload).expect("writing to a Vec cannot fail");
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_asked_sizes_and_parse() {
        let f = tcp_frames(24, 5, &IMIX);
        assert_eq!(f.len(), 24);
        for (i, fr) in f.iter().enumerate() {
            assert_eq!(fr.len(), IMIX[i % IMIX.len()]);
            let p = etherparse::SlicedPacket::from_ethernet(fr).unwrap();
            assert!(matches!(p.transport, Some(etherparse::TransportSlice::Tcp(_))));
        }
    }
}
