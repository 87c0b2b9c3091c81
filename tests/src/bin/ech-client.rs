//! A TLS 1.3 client that offers Encrypted Client Hello (rustls's ECH
//! client): the real server name sealed to an ECH configuration whose public
//! name goes in the clear. For the end-to-end tests: no browser here sends a
//! real ECH without a DNS-over-HTTPS lookup first.
//!
//! `ech-client IP:PORT INNER_NAME PUBLIC_NAME CA.pem`: sends `GET /` and
//! prints what happened; exits 0 when a page came, 3 when the server did not
//! accept ECH (the client sent alert ech_required after verifying the
//! certificate for the public name), 4 when the certificate did not verify,
//! 1 otherwise.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::{EchConfig, EchMode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, EchConfigListBytes, ServerName};
use rustls::{ClientConfig, ClientConnection, Error, PeerIncompatible, RootCertStore, StreamOwned};
use tlsgate_tests::ech_config_list;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, inner, public, ca] = &args[..] else {
        eprintln!("usage: ech-client IP:PORT INNER_NAME PUBLIC_NAME CA.pem");
        std::process::exit(2);
    };
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("CA file").flatten() {
        roots.add(c).expect("CA certificate");
    }
    let list = ech_config_list(public);
    let ech = EchConfig::new(EchConfigListBytes::from(list), rustls::crypto::aws_lc_rs::hpke::ALL_SUPPORTED_SUITES)
        .expect("ECH configuration");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_ech(EchMode::Enable(ech))
        .expect("ECH with TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(inner.clone()).expect("server name");
    let conn = ClientConnection::new(Arc::new(config), name).expect("client");
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    let request = format!("GET / HTTP/1.1\r\nHost: {inner}\r\nConnection: close\r\n\r\n");
    let mut page = Vec::new();
    let result = tls.write_all(request.as_bytes()).and_then(|_| tls.read_to_end(&mut page));
    match result {
        Ok(_) => {
            println!("page: {} bytes", page.len());
        }
        Err(e) => {
            let inner = e.get_ref().and_then(|i| i.downcast_ref::<Error>()).cloned();
            println!("error: {e}");
            std::process::exit(match inner {
                Some(Error::PeerIncompatible(PeerIncompatible::ServerRejectedEncryptedClientHello(_))) => 3,
                Some(Error::InvalidCertificate(_)) => 4,
                _ if !page.is_empty() => 0,
                _ => 1,
            });
        }
    }
}
