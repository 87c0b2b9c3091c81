//! TCP conversations as captured frames, and pcap files of them.
//!
//! [`conversation_frames`] turns the byte flights of an application exchange
//! (each a run of bytes one side sent before the other answered) into the
//! Ethernet/IP/TCP frames of a whole connection: three-way handshake, data
//! segments with consistent seq/ack numbers and ACKs, FIN exchange. The
//! [`write_pcap`] writer puts frames into a pcap file.

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use etherparse::{EtherType, Ethernet2Header, IpNumber, Ipv4Header, Ipv6Header, SingleVlanHeader, TcpHeader, VlanId};
use etherparse::{Ipv6FlowLabel, TcpOptionElement, VlanPcp};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, TsResolution};

/// One captured frame: the Ethernet bytes and the capture time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Capture time, nanoseconds since the Unix epoch.
    pub unix_ns: u64,
    /// The frame from the Ethernet destination address on, without FCS.
    pub data: Vec<u8>,
}

/// The bytes one side sent before the other side sent any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flight {
    /// True for bytes the client (the side that sent the SYN) sent.
    pub from_client: bool,
    /// The application-layer bytes, in order.
    pub bytes: Vec<u8>,
}

/// How a TCP connection is laid out on the wire.
#[derive(Clone, Debug)]
pub struct TcpShape {
    /// Client address and port (the side that sends the SYN).
    pub client: (IpAddr, u16),
    /// Server address and port.
    pub server: (IpAddr, u16),
    /// 802.1Q tag on every frame, if any.
    pub vlan: Option<VlanId>,
    /// Maximum TCP payload per segment; clamped to 1..=[`MAX_SEGMENT_PAYLOAD`].
    pub mss: usize,
    /// Swap each pair of data segments within a flight.
    pub reorder: bool,
    /// Send every third data segment a second time, as an exact duplicate at
    /// the end of its flight.
    pub retransmit: bool,
    /// Time of the SYN; every later frame is [`FRAME_GAP_NS`] after the one before.
    pub start_unix_ns: u64,
}

/// Time between consecutive frames of one conversation.
pub const FRAME_GAP_NS: u64 = 50_000;
/// The MSS option value the SYN and SYN-ACK carry.
pub const SYN_MSS: u16 = 1460;
/// The largest segment payload [`TcpShape::mss`] may ask for (fits IPv4's 16-bit total length).
pub const MAX_SEGMENT_PAYLOAD: usize = 65_000;

/// The frames of a whole TCP connection carrying `flights`: SYN, SYN-ACK,
/// ACK, the data segments of each flight (ACKed by the receiver every second
/// segment, and at the end of a flight unless the receiver's own next segment
/// carries the ACK), then FIN/ACK from the client, FIN/ACK from the server and
/// the last ACK.
///
/// Client and server of different address families are put on IPv6, the IPv4
/// one as an IPv4-mapped address. Empty flights are skipped.
pub fn conversation_frames(shape: &TcpShape, flights: &[Flight]) -> Vec<Frame> {
    let mut w = Wire::new(shape);
    let mss = shape.mss.clamp(1, MAX_SEGMENT_PAYLOAD);

    w.send(Side::Client, Flags::SYN, &[]);
    w.send(Side::Server, Flags::SYN | Flags::ACK, &[]);
    w.send(Side::Client, Flags::ACK, &[]);

    let flights: Vec<&Flight> = flights.iter().filter(|f| !f.bytes.is_empty()).collect();
    let mut data_segments_sent = 0usize;
    for (i, flight) in flights.iter().enumerate() {
        let sender = if flight.from_client { Side::Client } else { Side::Server };
        let receiver = sender.other();
        let base = w.next_seq(sender);
        let chunks: Vec<&[u8]> = flight.bytes.chunks(mss).collect();
        let last = chunks.len() - 1;
        let mut order: Vec<usize> = (0..chunks.len()).collect();
        if shape.reorder {
            for pair in order.chunks_mut(2) {
                pair.reverse();
            }
        }
        let mut duplicates = Vec::new();
        for (k, &idx) in order.iter().enumerate() {
            let offset = idx * mss;
            let flags = if idx == last { Flags::ACK | Flags::PSH } else { Flags::ACK };
            let frame = w.segment(sender, base.wrapping_add(offset as u32), flags, chunks[idx]);
            data_segments_sent += 1;
            if shape.retransmit && data_segments_sent.is_multiple_of(3) {
                duplicates.push(frame.clone());
            }
            w.push(frame);
            // After each pair (in either order) the receiver holds every byte up to
            // the end of chunk k, and ACKs it.
            if k % 2 == 1 && k != last {
                let upto = base.wrapping_add(((k + 1) * mss) as u32);
                w.send_ack(receiver, upto);
            }
        }
        w.advance(sender, flight.bytes.len());
        for frame in duplicates {
            w.push(frame);
        }
        // The receiver's next segment (its own data, or the client's FIN) ACKs the flight.
        let receiver_speaks_next = match flights.get(i + 1) {
            Some(next) => next.from_client == (receiver == Side::Client),
            None => receiver == Side::Client,
        };
        if !receiver_speaks_next {
            let upto = w.next_seq(sender);
            w.send_ack(receiver, upto);
        }
    }

    w.send(Side::Client, Flags::FIN | Flags::ACK, &[]);
    w.send(Side::Server, Flags::FIN | Flags::ACK, &[]);
    w.send(Side::Client, Flags::ACK, &[]);
    w.frames
}

/// A non-TLS TCP conversation: the client sends `request`, the server answers
/// with `response`, then both close. No VLAN tag, no reordering.
pub fn tcp_conversation(
    client: (IpAddr, u16),
    server: (IpAddr, u16),
    request: &[u8],
    response: &[u8],
    mss: usize,
    start_unix_ns: u64,
) -> Vec<Frame> {
    let shape = TcpShape { client, server, vlan: None, mss, reorder: false, retransmit: false, start_unix_ns };
    let flights = [
        Flight { from_client: true, bytes: request.to_vec() },
        Flight { from_client: false, bytes: response.to_vec() },
    ];
    conversation_frames(&shape, &flights)
}

/// Writes `frames` in time order (stable for equal times) as a pcap file with
/// the Ethernet link type and nanosecond timestamps.
pub fn write_pcap(path: &Path, frames: &[Frame]) -> std::io::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let header =
        PcapHeader { datalink: DataLink::ETHERNET, ts_resolution: TsResolution::NanoSecond, ..Default::default() };
    let mut writer = PcapWriter::with_header(file, header).map_err(pcap_to_io)?;
    let mut order: Vec<&Frame> = frames.iter().collect();
    order.sort_by_key(|f| f.unix_ns);
    for frame in order {
        let len = u32::try_from(frame.data.len())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame longer than 4 GiB"))?;
        let packet = PcapPacket::new(Duration::from_nanos(frame.unix_ns), len, &frame.data);
        writer.write_packet(&packet).map_err(pcap_to_io)?;
    }
    use std::io::Write;
    writer.into_writer().flush()
}

fn pcap_to_io(e: pcap_file::PcapError) -> std::io::Error {
    match e {
        pcap_file::PcapError::IoError(io) => io,
        other => std::io::Error::other(other.to_string()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Client,
    Server,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

#[derive(Clone, Copy)]
struct Flags(u8);

impl Flags {
    const FIN: Flags = Flags(1);
    const SYN: Flags = Flags(2);
    const PSH: Flags = Flags(8);
    const ACK: Flags = Flags(16);

    fn has(self, f: Flags) -> bool {
        self.0 & f.0 != 0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

/// Addresses as they go into the IP header, both of one family.
enum Addrs {
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
}

/// One endpoint's sending state.
struct Endpoint {
    port: u16,
    mac: [u8; 6],
    /// Sequence number of the next byte this side sends.
    next_seq: u32,
    ip_id: u16,
    window: u16,
}

/// Builds the frames of one connection in order, stamping times.
struct Wire {
    addrs: Addrs,
    vlan: Option<VlanId>,
    client: Endpoint,
    server: Endpoint,
    now_ns: u64,
    frames: Vec<Frame>,
}

impl Wire {
    fn new(shape: &TcpShape) -> Wire {
        let addrs = match (shape.client.0, shape.server.0) {
            (IpAddr::V4(c), IpAddr::V4(s)) => Addrs::V4(c.octets(), s.octets()),
            (c, s) => Addrs::V6(as_v6(c).octets(), as_v6(s).octets()),
        };
        // Initial sequence numbers: fixed per 4-tuple and start time, far from zero.
        let isn = |port: u16, other: u16| {
            let x = shape.start_unix_ns ^ (u64::from(port) << 32) ^ (u64::from(other) << 16);
            (splitmix(x) >> 32) as u32
        };
        let endpoint = |addr: IpAddr, port: u16, other: u16, last_mac: u8, window: u16| Endpoint {
            port,
            mac: mac_for(addr, last_mac),
            next_seq: isn(port, other),
            ip_id: (isn(other, port) & 0xffff) as u16,
            window,
        };
        Wire {
            addrs,
            vlan: shape.vlan,
            client: endpoint(shape.client.0, shape.client.1, shape.server.1, 1, 64_240),
            server: endpoint(shape.server.0, shape.server.1, shape.client.1, 2, 65_160),
            now_ns: shape.start_unix_ns,
            frames: Vec::new(),
        }
    }

    fn endpoint(&mut self, side: Side) -> &mut Endpoint {
        match side {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
        }
    }

    fn next_seq(&self, side: Side) -> u32 {
        match side {
            Side::Client => self.client.next_seq,
            Side::Server => self.server.next_seq,
        }
    }

    fn advance(&mut self, side: Side, bytes: usize) {
        let e = self.endpoint(side);
        e.next_seq = e.next_seq.wrapping_add(bytes as u32);
    }

    /// Sends a segment at the side's next sequence number (a SYN or FIN takes one).
    fn send(&mut self, side: Side, flags: Flags, payload: &[u8]) {
        let seq = self.next_seq(side);
        let frame = self.segment(side, seq, flags, payload);
        self.push(frame);
        let used = payload.len() + usize::from(flags.has(Flags::SYN)) + usize::from(flags.has(Flags::FIN));
        self.advance(side, used);
    }

    /// A pure ACK from `side` acknowledging everything before `ack`.
    fn send_ack(&mut self, side: Side, ack: u32) {
        let seq = self.next_seq(side);
        let frame = self.segment_with_ack(side, seq, Some(ack), Flags::ACK, &[]);
        self.push(frame);
    }

    fn push(&mut self, data: Vec<u8>) {
        self.frames.push(Frame { unix_ns: self.now_ns, data });
        self.now_ns += FRAME_GAP_NS;
    }

    /// A segment from `side` with sequence number `seq`, ACKing all the peer has sent.
    fn segment(&mut self, side: Side, seq: u32, flags: Flags, payload: &[u8]) -> Vec<u8> {
        let ack = if flags.has(Flags::ACK) { Some(self.next_seq(side.other())) } else { None };
        self.segment_with_ack(side, seq, ack, flags, payload)
    }

    fn segment_with_ack(&mut self, side: Side, seq: u32, ack: Option<u32>, flags: Flags, payload: &[u8]) -> Vec<u8> {
        let (src_mac, dst_mac, src_port, dst_port, window) = {
            let (me, peer) = match side {
                Side::Client => (&self.client, &self.server),
                Side::Server => (&self.server, &self.client),
            };
            (me.mac, peer.mac, me.port, peer.port, me.window)
        };
        let ip_id = {
            let e = self.endpoint(side);
            e.ip_id = e.ip_id.wrapping_add(1);
            e.ip_id
        };

        let mut tcp = TcpHeader::new(src_port, dst_port, seq, window);
        tcp.syn = flags.has(Flags::SYN);
        tcp.fin = flags.has(Flags::FIN);
        tcp.psh = flags.has(Flags::PSH);
        if let Some(ack) = ack {
            tcp.ack = true;
            tcp.acknowledgment_number = ack;
        }
        if tcp.syn {
            // Cannot fail: one MSS option is 4 bytes, far below the 40-byte limit.
            tcp.set_options(&[TcpOptionElement::MaximumSegmentSize(SYN_MSS)]).expect("MSS option fits");
        }

        let tcp_len = tcp.header_len() + payload.len();
        let mut out = Vec::with_capacity(14 + 4 + 40 + tcp_len);
        let ip_type = match self.addrs {
            Addrs::V4(..) => EtherType::IPV4,
            Addrs::V6(..) => EtherType::IPV6,
        };
        match self.vlan {
            Some(vlan_id) => {
                let eth =
                    Ethernet2Header { source: src_mac, destination: dst_mac, ether_type: EtherType::VLAN_TAGGED_FRAME };
                out.extend_from_slice(&eth.to_bytes());
                let tag = SingleVlanHeader {
                    pcp: VlanPcp::ZERO,
                    drop_eligible_indicator: false,
                    vlan_id,
                    ether_type: ip_type,
                };
                out.extend_from_slice(&tag.to_bytes());
            }
            None => {
                let eth = Ethernet2Header { source: src_mac, destination: dst_mac, ether_type: ip_type };
                out.extend_from_slice(&eth.to_bytes());
            }
        }
        // The payload is at most MAX_SEGMENT_PAYLOAD bytes, so neither the IP
        // lengths nor the TCP checksum can overflow below.
        match self.addrs {
            Addrs::V4(c, s) => {
                let (src, dst) = if side == Side::Client { (c, s) } else { (s, c) };
                let mut ip = Ipv4Header::new(tcp_len as u16, 64, IpNumber::TCP, src, dst).expect("segment fits IPv4");
                ip.identification = ip_id;
                ip.header_checksum = ip.calc_header_checksum();
                tcp.checksum = tcp.calc_checksum_ipv4(&ip, payload).expect("segment fits IPv4");
                out.extend_from_slice(&ip.to_bytes());
            }
            Addrs::V6(c, s) => {
                let (src, dst) = if side == Side::Client { (c, s) } else { (s, c) };
                let ip = Ipv6Header {
                    traffic_class: 0,
                    flow_label: Ipv6FlowLabel::ZERO,
                    payload_length: tcp_len as u16,
                    next_header: IpNumber::TCP,
                    hop_limit: 64,
                    source: src,
                    destination: dst,
                };
                tcp.checksum = tcp.calc_checksum_ipv6(&ip, payload).expect("segment fits IPv6");
                out.extend_from_slice(&ip.to_bytes());
            }
        }
        out.extend_from_slice(&tcp.to_bytes());
        out.extend_from_slice(payload);
        out
    }
}

fn as_v6(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// A locally administered MAC address derived from the IP address, so that
/// every host keeps one MAC across conversations.
fn mac_for(addr: IpAddr, tag: u8) -> [u8; 6] {
    let h = match addr {
        IpAddr::V4(a) => splitmix(u64::from(u32::from(a))),
        IpAddr::V6(a) => splitmix((u128::from(a) as u64) ^ ((u128::from(a) >> 64) as u64)),
    };
    let b = h.to_be_bytes();
    [0x02, tag, b[0], b[1], b[2], b[3]]
}

/// SplitMix64's output function: a cheap, well-spread 64-bit mix.
pub(crate) fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    /// A TCP segment as read back from a frame.
    #[derive(Debug, Clone)]
    pub(crate) struct Seg {
        pub src_port: u16,
        pub seq: u32,
        pub ack: Option<u32>,
        pub syn: bool,
        pub fin: bool,
        pub payload: Vec<u8>,
    }

    /// Parses a frame, checking the IP and TCP checksums.
    pub(crate) fn parse(frame: &[u8]) -> Seg {
        let p = SlicedPacket::from_ethernet(frame).expect("frame parses");
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else { panic!("not TCP") };
        let h = tcp.to_header();
        let sum = match &p.net {
            Some(NetSlice::Ipv4(ip)) => {
                let iph = ip.header().to_header();
                assert_eq!(iph.header_checksum, iph.calc_header_checksum(), "IPv4 checksum");
                h.calc_checksum_ipv4(&iph, tcp.payload()).unwrap()
            }
            Some(NetSlice::Ipv6(ip)) => h.calc_checksum_ipv6(&ip.header().to_header(), tcp.payload()).unwrap(),
            _ => panic!("not IP"),
        };
        assert_eq!(h.checksum, sum, "TCP checksum");
        Seg {
            src_port: h.source_port,
            seq: h.sequence_number,
            ack: h.ack.then_some(h.acknowledgment_number),
            syn: h.syn,
            fin: h.fin,
            payload: tcp.payload().to_vec(),
        }
    }

    /// The payload bytes each direction carried, reassembled by sequence
    /// number (duplicates dropped); checks that there are no gaps and that
    /// every ACK stays within what the other side sent.
    pub(crate) fn reassemble(frames: &[Frame], client_port: u16) -> (Vec<u8>, Vec<u8>) {
        let segs: Vec<Seg> = frames.iter().map(|f| parse(&f.data)).collect();
        let side = |from_client: bool| {
            let mine: Vec<&Seg> = segs.iter().filter(|s| (s.src_port == client_port) == from_client).collect();
            let syn = mine.iter().find(|s| s.syn).expect("SYN present");
            assert!(mine.iter().any(|s| s.fin), "FIN present");
            let isn = syn.seq;
            let mut pieces: Vec<(u32, &[u8])> = mine
                .iter()
                .filter(|s| !s.payload.is_empty())
                .map(|s| (s.seq.wrapping_sub(isn), &s.payload[..]))
                .collect();
            pieces.sort_by_key(|p| p.0);
            pieces.dedup();
            let mut out = Vec::new();
            for (off, bytes) in pieces {
                assert_eq!(off as usize, out.len() + 1, "no gap or overlap");
                out.extend_from_slice(bytes);
            }
            (isn, out)
        };
        let (c_isn, c) = side(true);
        let (s_isn, s) = side(false);
        for seg in &segs {
            if let Some(ack) = seg.ack {
                let (isn, len) = if seg.src_port == client_port { (s_isn, s.len()) } else { (c_isn, c.len()) };
                assert!(ack.wrapping_sub(isn) as usize <= len + 2, "ACK beyond what the peer sent");
            }
        }
        (c, s)
    }

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn http_conversation_reassembles() {
        let req = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec();
        let resp = vec![b'x'; 5000];
        let frames = tcp_conversation((v4("10.0.0.1"), 40000), (v4("10.0.0.2"), 80), &req, &resp, 1460, 0);
        let (c, s) = reassemble(&frames, 40000);
        assert_eq!(c, req);
        assert_eq!(s, resp);
        // SYN, SYN-ACK, ACK, 1 request segment, 4 response segments, ACKs, 3 closing.
        assert!(frames.len() >= 3 + 1 + 4 + 3);
        assert!(frames.windows(2).all(|w| w[1].unix_ns == w[0].unix_ns + FRAME_GAP_NS));
    }

    #[test]
    fn mixed_families_go_on_ipv6_and_vlan_tags_parse() {
        let shape = TcpShape {
            client: (v4("10.0.0.1"), 1234),
            server: ("2001:db8::1".parse().unwrap(), 443),
            vlan: Some(VlanId::try_new(42).unwrap()),
            mss: 100,
            reorder: true,
            retransmit: true,
            start_unix_ns: 7,
        };
        let flights = [Flight { from_client: true, bytes: vec![1; 1000] }];
        let frames = conversation_frames(&shape, &flights);
        let (c, s) = reassemble(&frames, 1234);
        assert_eq!(c, vec![1; 1000]);
        assert!(s.is_empty());
        let p = SlicedPacket::from_ethernet(&frames[0].data).unwrap();
        assert!(matches!(p.net, Some(NetSlice::Ipv6(_))));
        assert!(p.vlan.is_some());
    }

    #[test]
    fn write_pcap_round_trips() {
        let frames = tcp_conversation((v4("10.0.0.1"), 40000), (v4("10.0.0.2"), 80), b"hi", b"there", 1460, 5);
        let mut shuffled = frames.clone();
        shuffled.reverse();
        let dir = std::env::temp_dir().join(format!("tlsgate-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("round.pcap");
        write_pcap(&path, &shuffled).unwrap();
        let mut reader = pcap_file::pcap::PcapReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.header().datalink, DataLink::ETHERNET);
        let mut back = Vec::new();
        while let Some(p) = reader.next_packet() {
            let p = p.unwrap();
            back.push(Frame { unix_ns: p.timestamp.as_nanos() as u64, data: p.data.into_owned() });
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(back, frames);
    }
}
