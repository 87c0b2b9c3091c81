#!/usr/bin/env python3
"""A small HTTP server for tlsgate's end-to-end tests.

GET serves files from the directory given; PUT /upload reads the body and
answers with its SHA-256 in hex, so the client can check that what it sent
arrived intact. Binds to the address and port given; exits after --lifetime
seconds at the latest, so that a failed test never leaves it behind.
"""
import argparse
import hashlib
import http.server
import os
import threading


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_PUT(self):
        length = int(self.headers.get("Content-Length", "0"))
        digest = hashlib.sha256()
        left = length
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
        body = (digest.hexdigest() + "\n").encode()
        self.send_response(200 if left == 0 else 400)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--lifetime", type=float, default=300)
    a = ap.parse_args()
    os.chdir(a.dir)
    srv = http.server.ThreadingHTTPServer((a.bind, a.port), Handler)
    threading.Timer(a.lifetime, srv.shutdown).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
