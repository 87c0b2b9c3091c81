#!/usr/bin/env python3
"""Seeds the fuzz targets from real captures.

Each classic pcap under ../shared/testdata (or the folders given) becomes one
input of the `inspector`, `interception`, `passive` and `normalizer` targets: its
frames in order, each behind a 2-byte big-endian length, as those targets
read them; the same frames sent as IP fragments (in order, reversed, with an
overlapping copy) seed `defragment` and `normalizer`. Each of
its TCP flows becomes a `prelude` input (the protocol picked by the server
port, the payloads as segments), and each certificate chain a server sent
becomes a `chain_status` input (and its certificates `forge` and
`handshake_messages` inputs, with each ClientHello body); each flow's
segments an `observer` input; the policies under examples/ and demo/
`policy` inputs; the QUIC datagrams of the pcapng captures `quic` inputs; DNS answers in the captures (and HTTPS/SVCB answers with ECH) `dns` inputs. An empty corpus barely gets past the
Ethernet header; real handshakes take the fuzzer straight into the TLS
observer, the preludes, the policy, certificate paths and the slow path's
hand-over.

    python3 fuzz/seed.py            # writes fuzz/corpus/TARGET/ for every target

STARTTLS captures of real clients and servers: run the starttls test with
TLSGATE_KEEP_CAPTURES=fuzz/captures, then `python3 fuzz/seed.py fuzz/captures`.
"""
import gzip
import pathlib
import struct
import sys

HERE = pathlib.Path(__file__).resolve().parent
# Inputs are cut to this size: past it, a capture adds length, not coverage,
# and the committed corpora stay small.
MAX_INPUT = 128 << 10


def frames(path):
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        return []  # pcapng and others: not needed for seeds
    out, off = [], 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        out.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return out


# Server ports of the prelude protocols, as the `prelude` target numbers them.
PRELUDE_PORTS = {25: 0, 587: 0, 143: 1, 110: 2, 21: 3, 5222: 4, 5269: 4, 389: 5, 5432: 6, 6667: 7}


def tcp_flows(fs):
    """{(client, server): [(from_client, payload), ...]} of the Ethernet frames fs."""
    flows, clients = {}, {}
    for f in fs:
        off, ethertype = 14, f[12:14]
        while ethertype == b"\x81\x00" and len(f) >= off + 4:
            ethertype, off = f[off + 2:off + 4], off + 4
        ip = f[off:]
        if ethertype == b"\x08\x00" and len(ip) >= 20 and ip[9] == 6:
            ihl, total = (ip[0] & 15) * 4, struct.unpack(">H", ip[2:4])[0]
            src, dst, tcp = ip[12:16], ip[16:20], ip[ihl:total]
        elif ethertype == b"\x86\xdd" and len(ip) >= 40 and ip[6] == 6:
            src, dst, tcp = ip[8:24], ip[24:40], ip[40:40 + struct.unpack(">H", ip[4:6])[0]]
        else:
            continue
        if len(tcp) < 20:
            continue
        sp, dp = struct.unpack(">HH", tcp[:4])
        payload = tcp[(tcp[12] >> 4) * 4:]
        a, b = (src, sp), (dst, dp)
        key = (a, b) if (a, b) in flows else (b, a) if (b, a) in flows else None
        if key is None:
            # The SYN's sender is the client; without one, the higher port.
            syn_only = tcp[13] & 0x12 == 0x02
            key = (a, b) if syn_only or sp > dp else (b, a)
            flows[key] = []
        if payload:
            flows[key].append((key[0] == a, payload))
    return flows


def prelude_input(server_port, segments):
    pick = PRELUDE_PORTS.get(server_port)
    if pick is None:
        connect = any(c and p.startswith(b"CONNECT ") for c, p in segments[:1])
        pick = (8 if connect else 9) | 0x80
    out = bytearray([pick])
    for from_client, payload in segments:
        for i in range(0, len(payload), 1023):
            chunk = payload[i:i + 1023]
            n = len(chunk)
            out += bytes([(0 if from_client else 1) | (n & 3) << 6, n >> 2]) + chunk
    return bytes(out)


def chains(segments):
    """Certificate chains in the server's TLS records (plaintext handshakes only)."""
    out = []
    for t, body in handshake_bodies(segments, False):
        if t == 11 and len(body) >= 3:
            certs, k = [], 3
            while k + 3 <= len(body):
                m = int.from_bytes(body[k:k + 3], "big")
                certs.append(body[k + 3:k + 3 + m])
                k += 3 + m
            out.append(certs)
    return out


def observer_input(segments):
    """Segments as the `observer` target reads them: direction bit, no skew, up to 255 bytes each."""
    out = bytearray()
    for from_client, payload in segments:
        for i in range(0, len(payload), 255):
            chunk = payload[i:i + 255]
            out += bytes([0 if from_client else 1, len(chunk)]) + chunk
    return bytes(out)


def handshake_bodies(segments, from_client):
    """The bodies of the plaintext handshake messages one side sent."""
    stream = b"".join(p for c, p in segments if c == from_client)
    hs, i = b"", 0
    while i + 5 <= len(stream):
        kind, n = stream[i], struct.unpack(">H", stream[i + 3:i + 5])[0]
        if kind == 22:
            hs += stream[i + 5:i + 5 + n]
        elif kind not in (20, 21, 22):
            break
        i += 5 + n
    out, j = [], 0
    while j + 4 <= len(hs):
        t, n = hs[j], int.from_bytes(hs[j + 1:j + 4], "big")
        out.append((t, hs[j + 4:j + 4 + n]))
        j += 4 + n
    return out


def pcapng_frames(path):
    """The Ethernet frames of a pcapng file's enhanced packet blocks (little-endian sections)."""
    data, out, off = path.read_bytes(), [], 0
    links = []
    while off + 12 <= len(data):
        kind, length = struct.unpack("<II", data[off:off + 8])
        if length < 12 or off + length > len(data):
            break
        body = data[off + 8:off + length - 4]
        if kind == 1:
            links.append(struct.unpack("<H", body[:2])[0])
        elif kind == 6 and len(body) >= 20:
            iface, _, _, incl = struct.unpack("<IIII", body[:16])
            if iface < len(links) and links[iface] == 1:
                out.append(body[20:20 + incl])
        off += length
    return out


def quic_datagrams(fs):
    """UDP payloads to or from port 443 in Ethernet frames, as the `quic` target reads them."""
    out = bytearray()
    for f in fs:
        off, ethertype = 14, f[12:14]
        ip = f[off:]
        if ethertype == b"\x08\x00" and len(ip) >= 28 and ip[9] == 17:
            udp = ip[(ip[0] & 15) * 4:]
        elif ethertype == b"\x86\xdd" and len(ip) >= 48 and ip[6] == 17:
            udp = ip[40:]
        else:
            continue
        sp, dp = struct.unpack(">HH", udp[:4])
        if 443 not in (sp, dp):
            continue
        payload = udp[8:][:0x7fff]
        out += struct.pack(">H", len(payload) | (0 if dp == 443 else 0x8000)) + payload
    return bytes(out)


def dns_answers(fs):
    """UDP payloads from port 53 in Ethernet frames (IPv4 or IPv6): DNS answers, one input each."""
    out = []
    for f in fs:
        ip = f[14:]
        if f[12:14] == b"\x08\x00" and len(ip) >= 28 and ip[9] == 17:
            udp = ip[(ip[0] & 15) * 4:]
        elif f[12:14] == b"\x86\xdd" and len(ip) >= 48 and ip[6] == 17:
            udp = ip[40:]
        else:
            continue
        if struct.unpack(">H", udp[:2])[0] == 53:
            out.append(udp[8:])
    return out


def dns_name(name):
    return b"".join(bytes([len(l)]) + l.encode() for l in name.split(".") if l) + b"\0"


def ech_answers():
    """HTTPS and SVCB answers with ECH, as BIND 9 sends them: key 5 among the
    others, a mandatory list naming it, a CNAME pointing back after it."""
    ech = b"\x00\x05\x00\x10" + bytes(range(16))
    alpn = b"\x00\x01\x00\x06\x02h2\x02h3"
    hint = b"\x00\x04\x00\x04\x0a\x00\x00\x02"
    mandatory = b"\x00\x00\x00\x04\x00\x01\x00\x05"

    def rr(owner, rtype, rdata):
        return owner + struct.pack(">HHIH", rtype, 1, 300, len(rdata)) + rdata

    def answer(qname, qtype, rrs):
        head = struct.pack(">HHHHHH", 0x4242, 0x8580, 1, len(rrs), 0, 0)
        return head + dns_name(qname) + struct.pack(">HH", qtype, 1) + b"".join(rrs)

    ptr = b"\xc0\x0c"
    https = b"\x00\x01\x00" + alpn + hint + ech
    svcb = b"\x00\x01" + dns_name("www.shop.test") + mandatory + alpn + ech
    return [
        answer("www.shop.test", 65, [rr(ptr, 65, https)]),
        answer("svc.shop.test", 64, [rr(ptr, 64, svcb), rr(ptr, 5, b"\x03www\xc0\x0c"), rr(ptr, 1, b"\x0a\0\0\x02")]),
        answer("www.shop.test", 65, [rr(ptr, 65, https), rr(ptr, 65, b"\x00\x02\x00" + ech)]),
    ]


def ip_checksum(header):
    if len(header) % 2:
        header += b"\0"
    total = sum(struct.unpack(">%dH" % (len(header) // 2), header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def fragment_frame(f, step, variant):
    """An untagged IPv4 TCP frame cut into IP fragments of `step` bytes:
    in order, reversed, or with an overlapping copy of other bytes."""
    if f[12:14] != b"\x08\x00" or len(f) < 34 or f[23] != 6:
        return [f]
    ihl = (f[14] & 15) * 4
    total = struct.unpack(">H", f[16:18])[0]
    head, body = f[:14 + ihl], f[14 + ihl:14 + total]
    if len(body) <= step:
        return [f]
    out = []
    for off in range(0, len(body), step):
        chunk = body[off:off + step]
        more = off + len(chunk) < len(body)
        h = bytearray(head)
        h[16:18] = struct.pack(">H", ihl + len(chunk))
        h[20:22] = struct.pack(">H", (off // 8) | (0x2000 if more else 0))
        h[24:26] = b"\0\0"
        h[24:26] = struct.pack(">H", ip_checksum(bytes(h[14:14 + ihl])))
        out.append(bytes(h) + chunk)
    if variant == "reversed":
        out.reverse()
    elif variant == "overlap":
        evil = bytearray(out[0])
        evil[14 + ihl:] = bytes(len(evil) - 14 - ihl)
        out.insert(1, bytes(evil))
    return out


def generated(stem, fs):
    """The capture with its TCP frames sent as IP fragments, three ways."""
    blobs = []
    for step, variant in ((64, "in-order"), (24, "reversed"), (512, "overlap")):
        pieces = []
        for f in fs[:200]:
            pieces += fragment_frame(f, step, variant)
        blobs.append(b"".join(struct.pack(">H", len(p)) + p for p in pieces)[:MAX_INPUT])
    return blobs


def write(target, name, blob):
    d = HERE / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(blob)


def chain_input(certs):
    blob = bytes([1]) + struct.pack(">q", 1_500_000_000)
    for c in certs:
        if len(c) < 65536:
            blob += struct.pack(">H", len(c)) + c
    return blob


def main():
    roots = [pathlib.Path(a) for a in sys.argv[1:]] or [HERE.parent.parent / "shared" / "testdata"]
    written = 0
    for root in roots:
        for pcap in sorted([*root.rglob("*.pcap"), *root.rglob("*.pcap.gz")]):
            fs = [f for f in frames(pcap) if len(f) < 65536]
            if not fs:
                continue
            blob = b"".join(struct.pack(">H", len(f)) + f for f in fs)
            for target in ("inspector", "interception", "passive"):
                write(target, pcap.stem, blob[:MAX_INPUT])
            # The normalizer's first byte picks its settings.
            write("normalizer", pcap.stem, b"\0" + blob[:MAX_INPUT])
            for m, blob in enumerate(generated(pcap.stem, fs)):
                write("defragment", f"{pcap.stem}-{m}", blob)
                write("normalizer", f"{pcap.stem}-fragmented-{m}", b"\0" + blob)
            for n, ((_, (_, port)), segments) in enumerate(tcp_flows(fs).items()):
                if not segments:
                    continue
                d = HERE / "corpus" / "prelude"
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{pcap.stem}-{n}").write_bytes(prelude_input(port, segments)[:1 << 18])
                for m, certs in enumerate(chains(segments)):
                    d = HERE / "corpus" / "chain_status"
                    d.mkdir(parents=True, exist_ok=True)
                    (d / f"{pcap.stem}-{n}-{m}").write_bytes(chain_input(certs))
                    for k, cert in enumerate(certs):
                        write("forge", f"{pcap.stem}-{n}-{m}-{k}", cert)
                        write("handshake_messages", f"cert-{pcap.stem}-{n}-{m}-{k}", cert)
                write("observer", f"{pcap.stem}-{n}", observer_input(segments)[:1 << 18])
                for m, (kind, body) in enumerate(handshake_bodies(segments, True)):
                    if kind == 1:
                        write("handshake_messages", f"hello-{pcap.stem}-{n}-{m}", body)
                first = next((p for c, p in segments if c), b"")
                if first[:1] == b"\x80" or (first[:1] < b"\x14" and len(first) > 2 and first[2:3] == b"\x01"):
                    write("handshake_messages", f"sslv2-{pcap.stem}-{n}", first[2:])

            for m, msg in enumerate(dns_answers(fs)):
                write("dns", f"{pcap.stem}-{m}", msg)
            written += 1
    for m, msg in enumerate(ech_answers()):
        write("dns", f"ech-{m}", msg)
    for root in roots:
        for pcap in sorted(root.rglob("*.pcapng")):
            blob = quic_datagrams(pcapng_frames(pcap))
            if blob:
                write("quic", pcap.stem, blob[:MAX_INPUT])
    for toml in sorted([*HERE.parent.glob("examples/*.toml"), *HERE.parent.glob("demo/*.toml")]):
        write("policy", toml.name, toml.read_bytes())
    print(f"seeded {written} captures into {HERE / 'corpus'}")


if __name__ == "__main__":
    main()
