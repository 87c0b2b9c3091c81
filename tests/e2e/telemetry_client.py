#!/usr/bin/env python3
"""A client of DPDK's telemetry socket (v2), as dpdk-telemetry.py is (Debian 12's
dpdk package does not ship that script): connects to
/var/run/dpdk/PREFIX/dpdk_telemetry.v2, reads the greeting, sends each command
given and prints each answer as one JSON line.

    telemetry_client.py PREFIX /tlsgate/stats /ethdev/stats,0
"""
import json
import socket
import sys


def main():
    prefix, commands = sys.argv[1], sys.argv[2:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(5)
    s.connect(f"/var/run/dpdk/{prefix}/dpdk_telemetry.v2")
    greeting = json.loads(s.recv(16384))
    size = greeting.get("max_output_len", 16384)
    print(json.dumps(greeting))
    for c in commands:
        s.send(c.encode())
        print(json.dumps(json.loads(s.recv(size))))


if __name__ == "__main__":
    main()
