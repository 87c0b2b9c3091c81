#!/usr/bin/env python3
"""The server side of a STARTTLS prelude, for tlsgate's tests: it speaks
just enough of PROTOCOL (smtp, imap, pop3, ftp, xmpp, irc, postgres, ldap)
for `openssl s_client -starttls PROTOCOL` to ask for TLS, says yes (or, with
--refuse, no), then does the TLS handshake with Python's ssl module and reads
until the client closes. One connection, then it exits; --lifetime bounds it.
"""
import argparse
import socket
import ssl
import threading

LDAP_STARTTLS = b"1.3.6.1.4.1.1466.20037"


def lines_until(conn, pred):
    """Reads lines until one satisfies pred; returns it."""
    buf = b""
    while True:
        while b"\n" not in buf:
            chunk = conn.recv(4096)
            if not chunk:
                raise EOFError
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        if pred(line.strip()):
            return line.strip()


def read_until(conn, marker):
    buf = b""
    while marker not in buf:
        chunk = conn.recv(4096)
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def read_ber(conn):
    """One BER element (header and content)."""
    head = conn.recv(2, socket.MSG_WAITALL)
    n = head[1]
    if n & 0x80:
        extra = conn.recv(n & 0x7F, socket.MSG_WAITALL)
        head += extra
        n = int.from_bytes(extra, "big")
    return head + conn.recv(n, socket.MSG_WAITALL)


def prelude(proto, conn, refuse):
    """Plays the server's part; True if TLS follows."""
    send = conn.sendall
    if proto == "smtp":
        send(b"220 mail.starttls.test ESMTP\r\n")
        lines_until(conn, lambda l: l.upper().startswith((b"EHLO", b"HELO")))
        send(b"250-mail.starttls.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
        lines_until(conn, lambda l: l.upper() == b"STARTTLS")
        send(b"454 4.7.0 TLS not available\r\n" if refuse else b"220 2.0.0 Ready to start TLS\r\n")
    elif proto == "imap":
        send(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n")
        while True:
            line = lines_until(conn, lambda l: True)
            tag, _, cmd = line.partition(b" ")
            if cmd.upper() == b"CAPABILITY":
                send(b"* CAPABILITY IMAP4rev1 STARTTLS\r\n" + tag + b" OK done\r\n")
            elif cmd.upper() == b"STARTTLS":
                send(tag + (b" NO not now\r\n" if refuse else b" OK Begin TLS negotiation now\r\n"))
                break
    elif proto == "pop3":
        send(b"+OK POP3 ready\r\n")
        while True:
            line = lines_until(conn, lambda l: True).upper()
            if line == b"CAPA":
                send(b"+OK\r\nSTLS\r\n.\r\n")
            elif line == b"STLS":
                send(b"-ERR no\r\n" if refuse else b"+OK Begin TLS negotiation\r\n")
                break
    elif proto == "ftp":
        send(b"220-Welcome\r\n220 FTP ready\r\n")
        lines_until(conn, lambda l: l.upper().startswith(b"AUTH"))
        send(b"534 no\r\n" if refuse else b"234 AUTH TLS OK.\r\n")
    elif proto == "xmpp":
        read_until(conn, b">")
        send(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            b"xmlns:stream='http://etherx.jabber.org/streams' id='t1' from='starttls.test' version='1.0'>"
            b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
            b"</stream:features>"
        )
        read_until(conn, b"<starttls")
        if refuse:
            send(b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>")
        else:
            send(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    elif proto == "irc":
        lines_until(conn, lambda l: l.upper() == b"STARTTLS")
        send(b":irc.starttls.test 020 * :Please wait while we process your connection\r\n")
        if refuse:
            send(b":irc.starttls.test 691 * :STARTTLS failed\r\n")
        else:
            send(b":irc.starttls.test 670 * :STARTTLS successful, go ahead with TLS handshake\r\n")
    elif proto == "postgres":
        request = conn.recv(8, socket.MSG_WAITALL)
        if request[4:] == bytes([0x04, 0xD2, 0x16, 0x30]):  # GSSENCRequest
            send(b"N")
            request = conn.recv(8, socket.MSG_WAITALL)
        send(b"N" if refuse else b"S")
    elif proto == "ldap":
        msg = read_ber(conn)
        assert LDAP_STARTTLS in msg, msg
        msg_id = msg[4]  # short-form message id
        code = 2 if refuse else 0
        op = bytes([0x0A, 1, code, 0x04, 0, 0x04, 0])
        body = bytes([0x02, 1, msg_id, 0x78, len(op)]) + op
        send(bytes([0x30, len(body)]) + body)
    return not refuse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", required=True)
    ap.add_argument("--addr", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--refuse", action="store_true")
    ap.add_argument("--lifetime", type=float, default=20)
    a = ap.parse_args()
    threading.Timer(a.lifetime, lambda: __import__("os")._exit(3)).start()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((a.addr, a.port))
    srv.listen(1)
    print("listening", flush=True)
    conn, _ = srv.accept()
    try:
        if prelude(a.protocol, conn, a.refuse):
            tls = ctx.wrap_socket(conn, server_side=True)
            while tls.recv(4096):
                pass
    except (EOFError, ssl.SSLError, ConnectionError):
        pass
    conn.close()
    __import__("os")._exit(0)


if __name__ == "__main__":
    main()
