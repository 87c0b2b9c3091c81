#!/usr/bin/env python3
"""Seeds the frame-driven fuzz targets from real captures.

Each classic pcap under ../shared/testdata (or the folders given) becomes one
input of the `inspector` and `interception` targets: its frames in order,
each behind a 2-byte big-endian length, as those targets read them. An empty
corpus barely gets past the Ethernet header; real handshakes take the fuzzer
straight into the TLS observer, the policy and the slow path's hand-over.

    python3 fuzz/seed.py            # writes fuzz/corpus/{inspector,interception}/
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
            written += 1
    print(f"seeded {written} captures into {HERE / 'corpus'}")


if __name__ == "__main__":
    main()
