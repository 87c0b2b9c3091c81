//! Packet codecs for the packet path.
//!
//! [`flow_hash`] is the software dispatch step's hash: it reads addresses and
//! ports at fixed offsets (after up to two VLAN tags) and folds them so that both
//! directions of a flow hash the same. It is written by hand rather than through
//! a full header parser because it runs on every packet when the NIC has no RSS,
//! and a full parse would cost more than the forwarding itself.

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// A symmetric hash of a frame's flow: `hash(a->b) == hash(b->a)`.
///
/// TCP and UDP packets that are not fragments hash addresses and ports; other
/// IP packets (fragments included) hash addresses only; non-IP frames give
/// `None` (they carry no flow and stay on the worker that received them).
#[inline]
pub fn flow_hash(frame: &[u8]) -> Option<u32> {
    let (ethertype, l3) = skip_vlans(frame)?;
    match ethertype {
        ETHERTYPE_IPV4 => {
            let ip = frame.get(l3..l3 + 20)?;
            let ihl = ((ip[0] & 0x0f) as usize) * 4;
            let a = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
            let b = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            let ports =
                if !frag && (ip[9] == IPPROTO_TCP || ip[9] == IPPROTO_UDP) { port_pair(frame, l3 + ihl) } else { 0 };
            Some(mix(a ^ b, ports))
        }
        ETHERTYPE_IPV6 => {
            let ip = frame.get(l3..l3 + 40)?;
            let mut x = 0u32;
            for w in ip[8..40].chunks_exact(4) {
                x ^= u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
            }
            // Extension headers are not walked: their flows hash by address only.
            let ports = if ip[6] == IPPROTO_TCP || ip[6] == IPPROTO_UDP { port_pair(frame, l3 + 40) } else { 0 };
            Some(mix(x, ports))
        }
        _ => None,
    }
}

/// The ethertype after any VLAN/QinQ tags, and the offset of the L3 header.
#[inline]
pub fn skip_vlans(frame: &[u8]) -> Option<(u16, usize)> {
    let mut off = ETH_HLEN - 2;
    for _ in 0..3 {
        let et = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
        match et {
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD => off += 4,
            _ => return Some((et, off + 2)),
        }
    }
    None
}

#[inline]
fn port_pair(frame: &[u8], l4: usize) -> u32 {
    match frame.get(l4..l4 + 4) {
        Some(p) => (u16::from_be_bytes([p[0], p[1]]) ^ u16::from_be_bytes([p[2], p[3]])) as u32,
        None => 0,
    }
}

#[inline]
fn mix(addrs: u32, ports: u32) -> u32 {
    // Fibonacci hashing spreads the xor-folded key over the high bits.
    let k = ((addrs as u64) << 16) ^ ports as u64;
    (k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
}

/// Which of `n` workers owns a hash (uniform without a division).
#[inline]
pub fn worker_for(hash: u32, n: usize) -> usize {
    ((hash as u64 * n as u64) >> 32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp4(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, vlan: bool) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        if vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        }
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&sp.to_be_bytes());
        f.extend_from_slice(&dp.to_be_bytes());
        f.extend_from_slice(&[0u8; 16]);
        f
    }

    #[test]
    fn both_directions_hash_alike() {
        let a = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 443, false);
        let b = tcp4([10, 0, 0, 2], [10, 0, 0, 1], 443, 40000, false);
        assert_eq!(flow_hash(&a), flow_hash(&b));
        assert!(flow_hash(&a).is_some());
    }

    #[test]
    fn vlan_tag_is_skipped() {
        let plain = tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2, false);
        let tagged = tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2, true);
        assert_eq!(flow_hash(&plain), flow_hash(&tagged));
    }

    #[test]
    fn different_flows_spread_over_workers() {
        let mut seen = [0usize; 4];
        for p in 0..4000u16 {
            let f = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 10000 + p, 443, false);
            seen[worker_for(flow_hash(&f).unwrap(), 4)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 700), "{seen:?}");
    }

    #[test]
    fn short_and_non_ip_frames_give_none() {
        assert_eq!(flow_hash(&[]), None);
        assert_eq!(flow_hash(&[0u8; 13]), None);
        let mut arp = vec![0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(flow_hash(&arp), None);
        let truncated = &tcp4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2, false)[..30];
        assert_eq!(flow_hash(truncated), None);
    }

    #[test]
    fn truncated_ports_still_hash_addresses() {
        let f = &tcp4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2, false)[..34];
        assert!(flow_hash(f).is_some());
    }
}
