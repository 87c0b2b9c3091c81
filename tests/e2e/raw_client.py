#!/usr/bin/env python3
"""A TCP client written from raw frames, for sending what no socket sends:
a ClientHello (made by Python's own ssl module, i.e. OpenSSL) in IP
fragments, or after a decoy copy that the server's stack should drop.

It uses an address no interface has (--src), so the kernel neither answers
nor resets the server's packets; the server must have a neighbour entry for
it. Prints one JSON line: whether the server answered the decoy (it must
not) and whether it answered the ClientHello (a TLS record back).

    raw_client.py --iface c0 --src 10.77.9.3 --dst 10.77.9.2 --dst-mac 02:.. \
        --sport 41000 --sni allowed.example --mode fragments|plain|decoy-...
"""
import argparse
import json
import select
import socket
import ssl
import struct
import time

ETH_P_ALL = 0x0003


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def client_hello(sni):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


class Client:
    def __init__(self, a):
        self.a = a
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((a.iface, 0))
        self.mac = self.sock.getsockname()[4]
        self.dst_mac = bytes.fromhex(a.dst_mac.replace(":", ""))
        self.src = socket.inet_aton(a.src)
        self.dst = socket.inet_aton(a.dst)
        self.ip_id = 1000
        self.ts = 1_000_000

    def tcp(self, seq, ack, flags, payload=b"", options=b"", window=64240, bad_checksum=False):
        while len(options) % 4:
            options += b"\x01"
        off = (20 + len(options)) // 4
        hdr = struct.pack("!HHIIBBHHH", self.a.sport, 443, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, off << 4, flags,
                          window, 0, 0) + options
        seg = hdr + payload
        pseudo = self.src + self.dst + struct.pack("!BBH", 0, 6, len(seg))
        c = checksum(pseudo + seg)
        if bad_checksum:
            c ^= 0x5555
        return seg[:16] + struct.pack("!H", c) + seg[18:]

    def ip(self, l4, frag_offset=0, more=False, ip_id=None, df=True):
        ip_id = self.ip_id if ip_id is None else ip_id
        fo = (frag_offset // 8) | (0x2000 if more else 0) | (0x4000 if df and not more and frag_offset == 0 else 0)
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ip_id, fo, 64, 6, 0, self.src, self.dst)
        h = h[:10] + struct.pack("!H", checksum(h)) + h[12:]
        return self.dst_mac + self.mac + b"\x08\x00" + h + l4

    def send(self, frame):
        self.sock.send(frame)

    def timestamps(self, ecr=0, val=None):
        val = self.ts if val is None else val
        return b"\x01\x01\x08\x0a" + struct.pack("!II", val, ecr)

    def receive(self, seconds):
        """Segments from the server to us within `seconds`: (flags, seq, ack, payload)."""
        got, end = [], time.time() + seconds
        while True:
            left = end - time.time()
            if left <= 0:
                return got
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return got
            f = self.sock.recv(65535)
            if len(f) < 54 or f[12:14] != b"\x08\x00" or f[23] != 6:
                continue
            if f[26:30] != self.dst or f[30:34] != self.src:
                continue
            ihl = (f[14] & 15) * 4
            t = f[14 + ihl:]
            sport, dport, seq, ack, off, flags = struct.unpack("!HHIIBB", t[:14])
            if sport != 443 or dport != self.a.sport:
                continue
            total = struct.unpack("!H", f[16:18])[0]
            got.append((flags, seq, ack, f[14 + ihl + (off >> 4) * 4:14 + total]))
            if got[-1][3]:
                return got


def main():
    p = argparse.ArgumentParser()
    for name in ("--iface", "--src", "--dst", "--dst-mac", "--sni", "--mode"):
        p.add_argument(name, required=True)
    p.add_argument("--sport", type=int, required=True)
    a = p.parse_args()
    c = Client(a)
    hello = client_hello(a.sni)
    isn = 0x2000_0000 + a.sport
    ts = a.mode == "decoy-paws"
    syn_opts = b"\x02\x04\x05\xb4" + (c.timestamps() if ts else b"")
    result = {"mode": a.mode, "hello_bytes": len(hello), "decoy_answered": False, "answered": False}
    synack = None
    for _ in range(5):
        c.send(c.ip(c.tcp(isn, 0, 0x02, options=syn_opts)))
        for flags, seq, ack, _ in c.receive(1.0):
            if flags & 0x12 == 0x12 and ack == isn + 1:
                synack = seq
                break
        if synack is not None:
            break
    if synack is None:
        result["error"] = "no SYN-ACK"
        print(json.dumps(result))
        return
    c.ts += 10
    opts = c.timestamps() if ts else b""
    c.send(c.ip(c.tcp(isn + 1, synack + 1, 0x10, options=opts)))
    seq, ack = isn + 1, synack + 1

    def answered(frames):
        return any(pl[:1] == b"\x16" for _, _, _, pl in frames)

    if a.mode.startswith("decoy-"):
        kind = a.mode[len("decoy-"):]
        c.ts += 10
        args = dict(payload=hello, options=c.timestamps() if ts else b"")
        decoy_seq, decoy_ack, flags = seq, ack, 0x18
        if kind == "badsum":
            args["bad_checksum"] = True
        elif kind == "noack":
            flags = 0x08
        elif kind == "ackunsent":
            decoy_ack = ack + 100_000
        elif kind == "md5":
            args["options"] = b"\x13\x12" + bytes(16)
        elif kind == "paws":
            args["options"] = c.timestamps(val=c.ts - 1000)
        elif kind == "window":
            decoy_seq = seq + 8 * 1024 * 1024
        c.send(c.ip(c.tcp(decoy_seq, decoy_ack, flags, **args)))
        result["decoy_answered"] = answered(c.receive(1.5))
    c.ts += 10
    opts = c.timestamps() if ts else b""
    if a.mode == "fragments":
        seg = c.tcp(seq, ack, 0x18, payload=hello, options=opts)
        c.ip_id += 1
        pieces = [(off, seg[off:off + 64]) for off in range(0, len(seg), 64)]
        order = pieces[1::2] + pieces[0::2]  # out of order
        for off, chunk in order:
            c.send(c.ip(chunk, frag_offset=off, more=off + len(chunk) < len(seg), df=False))
    else:
        c.send(c.ip(c.tcp(seq, ack, 0x18, payload=hello, options=opts)))
    result["answered"] = answered(c.receive(3.0))
    c.send(c.ip(c.tcp(seq + len(hello), 0, 0x04)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
