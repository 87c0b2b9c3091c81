#!/usr/bin/env python3
"""Clients with unusual manners, for tlsgate's end-to-end tests of the
decrypting path. Each but the last sends the ClientHello Python's ssl module
makes for --sni, then:

  garbage   100 KB of bytes that are not TLS, then closes
  reset     nothing: the connection is reset at once (SO_LINGER 0)
  stall     nothing, for --seconds, then closes
  flood     a TLS-looking record header claiming 16 KB, then 4 MB of zeros
  small-mss a whole HTTPS GET of --path, verified against --cafile, over a
            connection whose MSS is 200 bytes (so the ClientHello spans
            several segments, as post-quantum key shares make it); prints
            the body, exits 1 if it fails

The others exit 0 once their part is done, whatever the other side did;
every socket operation is bounded by a timeout.
"""
import argparse
import socket
import ssl
import struct
import time


def client_hello(sni):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def small_mss_get(host, port, sni, cafile, path):
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 200)
    raw.settimeout(20)
    raw.connect((host, port))
    ctx = ssl.create_default_context(cafile=cafile)
    tls = ctx.wrap_socket(raw, server_hostname=sni)
    tls.sendall(f"GET {path} HTTP/1.0\r\nHost: {sni}\r\n\r\n".encode())
    got = b""
    while True:
        chunk = tls.recv(65536)
        if not chunk:
            break
        got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    print(body.decode(errors="replace"), end="")
    return 0 if head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200") else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connect", required=True, help="address:port")
    ap.add_argument("--sni", required=True)
    ap.add_argument("--mode", choices=["garbage", "reset", "stall", "flood", "small-mss"], required=True)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--cafile")
    ap.add_argument("--path", default="/")
    a = ap.parse_args()
    host, port = a.connect.rsplit(":", 1)
    if a.mode == "small-mss":
        return small_mss_get(host, int(port), a.sni, a.cafile, a.path)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.settimeout(10)
    s.sendall(client_hello(a.sni))
    try:
        if a.mode == "garbage":
            s.sendall(bytes((i * 7 + 3) % 256 for i in range(100_000)))
        elif a.mode == "reset":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif a.mode == "stall":
            time.sleep(a.seconds)
        elif a.mode == "flood":
            s.sendall(b"\x17\x03\x03\x40\x00" + bytes(4 << 20))
    except OSError:
        pass
    s.close()


if __name__ == "__main__":
    raise SystemExit(main())
