#!/usr/bin/env python3
"""Seeds the fuzz targets from real captures.

Each classic pcap under ../shared/testdata (or the folders given) becomes one
input of the `inspector` and `interception` targets: its frames in order,
each behind a 2-byte big-endian length, as those targets read them. Each of
its TCP flows becomes a `prelude` input (the protocol picked by the server
port, the payloads as segments), and each certificate chain a server sent
becomes a `chain_status` input. An empty corpus barely gets past the
Ethernet header; real handshakes take the fuzzer straight into the TLS
observer, the preludes, the policy, certificate paths and the slow path's
hand-over.

    python3 fuzz/seed.py            # writes fuzz/corpus/{inspector,interception,prelude,chain_status}/

STARTTLS captures of real clients and servers: run the starttls test with
TLSGATE_KEEP_CAPTURES=fuzz/captures, then `python3 fuzz/seed.py fuzz/captures`.
"""
import pathlib
import struct
import sys

HERE = pathlib.Path(__file__).resolve().parent


def frames(path):
    data = path.read_bytes()
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
    stream = b"".join(p for c, p in segments if not c)
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
        body = hs[j + 4:j + 4 + n]
        if t == 11 and len(body) >= 3:
            certs, k = [], 3
            while k + 3 <= len(body):
                m = int.from_bytes(body[k:k + 3], "big")
                certs.append(body[k + 3:k + 3 + m])
                k += 3 + m
            out.append(certs)
        j += 4 + n
    return out


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
        for pcap in sorted(root.rglob("*.pcap")):
            fs = [f for f in frames(pcap) if len(f) < 65536]
            if not fs:
                continue
            blob = b"".join(struct.pack(">H", len(f)) + f for f in fs)
            for target in ("inspector", "interception"):
                d = HERE / "corpus" / target
                d.mkdir(parents=True, exist_ok=True)
                (d / pcap.stem).write_bytes(blob[:1 << 20])
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
            written += 1
    print(f"seeded {written} captures into {HERE / 'corpus'}")


if __name__ == "__main__":
    main()
