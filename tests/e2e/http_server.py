#!/usr/bin/env python3
"""A small HTTP server for tlsgate's end-to-end tests.

GET serves files from the directory given; PUT /upload reads the body and
answers with its SHA-256 in hex, so the client can check that what it sent
arrived intact. With --cert and --key it speaks HTTPS (HTTP/1.1 by ALPN).
Binds to the address and port given; exits after --lifetime seconds at the
latest, so that a failed test never leaves it behind. With --alt-svc, every
response advertises that alternative service (`h3=":443"`: browsers then try
HTTP/3) and closes its connection, so that the next request needs a new one.
"""
import argparse
import hashlib
import http.server
import os
import ssl
import threading


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    alt_svc = None

    def end_headers(self):
        if self.alt_svc:
            self.send_header("Alt-Svc", self.alt_svc)
            self.send_header("Connection", "close")
            self.close_connection = True
        super().end_headers()

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


class TlsServer(http.server.ThreadingHTTPServer):
    """Accepts plainly and does the TLS handshake in the request's own thread,
    so that one slow handshake does not hold up the others."""

    context = None

    def finish_request(self, request, client_address):
        request.settimeout(60)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(tls, client_address)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--lifetime", type=float, default=300)
    ap.add_argument("--cert", help="certificate chain (PEM): serve HTTPS")
    ap.add_argument("--key", help="its private key (PEM)")
    ap.add_argument("--alt-svc", help='an Alt-Svc header for every response, e.g. h3=":443"')
    a = ap.parse_args()
    Handler.alt_svc = a.alt_svc
    os.chdir(a.dir)
    # Room for a hundred clients connecting at once.
    http.server.ThreadingHTTPServer.request_queue_size = 128
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        ctx.set_alpn_protocols(["http/1.1"])
        TlsServer.context = ctx
        srv = TlsServer((a.bind, a.port), Handler)
    else:
        srv = http.server.ThreadingHTTPServer((a.bind, a.port), Handler)

    threading.Timer(a.lifetime, srv.shutdown).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
