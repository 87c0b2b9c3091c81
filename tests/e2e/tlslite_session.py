"""One session with RSA key exchange between tlslite-ng's client and server
(pure Python, the one stack here that still speaks SSL 3.0), on an address and
port of the caller's: the client sends REQUEST, the server answers ANSWER.
Prints the client's request and what it received, hex, one per line.

    tlslite_session.py ADDR PORT CERT KEY ssl3|tls1.0|tls1.1|tls1.2 aes128|3des|rc4[-md5]
"""
import socket, sys, threading
from tlslite import TLSConnection, HandshakeSettings, X509CertChain, parsePEMKey

def main():
    addr, port, cert, key, version, cipher = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
    ver = {"ssl3": (3, 0), "tls1.0": (3, 1), "tls1.1": (3, 2), "tls1.2": (3, 3)}[version]
    s = HandshakeSettings()
    s.minVersion = s.maxVersion = ver
    cipher, _, mac = cipher.partition("-")
    s.cipherNames = [cipher]
    s.keyExchangeNames = ["rsa"]
    s.macNames = [mac] if mac else ["sha", "sha256"]
    s.useExtendedMasterSecret = False if ver == (3, 0) else True
    chain = X509CertChain(); chain.parsePemList(open(cert).read())
    pkey = parsePEMKey(open(key).read(), private=True)
    lsock = socket.socket(); lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((addr, port)); lsock.listen(1)
    answer = b"HTTP/1.0 200 ok\r\n\r\n" + b"an SSL 3.0 page " * 300
    def serve():
        c, _ = lsock.accept()
        t = TLSConnection(c)
        t.handshakeServer(certChain=chain, privateKey=pkey, settings=s)
        req = t.read()
        t.write(answer)
        t.close()
    th = threading.Thread(target=serve); th.start()
    c = socket.create_connection((addr, port))
    t = TLSConnection(c)
    t.handshakeClientCert(settings=s)
    request = b"GET /ssl3 HTTP/1.0\r\n\r\n"
    t.write(request)
    got = b""
    while True:
        try:
            d = t.read()
        except Exception:
            break
        if not d:
            break
        got += d
    th.join()
    sys.stdout.write(request.hex() + "\n" + got.hex() + "\n")


main()
