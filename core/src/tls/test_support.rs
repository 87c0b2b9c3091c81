//! Builders of TLS records and handshake messages for the unit tests.

/// A TLS record of content type `kind` (record version 0x0303).
pub fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut r = vec![kind, 3, 3];
    r.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    r.extend_from_slice(payload);
    r
}

/// A handshake message: type, 24-bit length, body.
pub fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = body.len() as u32;
    let mut m = vec![kind, (len >> 16) as u8, (len >> 8) as u8, len as u8];
    m.extend_from_slice(body);
    m
}

/// One extension: type, length, data.
pub fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut e = kind.to_be_bytes().to_vec();
    e.extend_from_slice(&(data.len() as u16).to_be_bytes());
    e.extend_from_slice(data);
    e
}

/// A 16-bit-length-prefixed vector of 16-bit values.
pub fn u16_list(values: &[u16]) -> Vec<u8> {
    let mut v = ((values.len() * 2) as u16).to_be_bytes().to_vec();
    for x in values {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v
}

/// server_name extension data for one host name.
pub fn sni(name: &str) -> Vec<u8> {
    let mut entry = vec![0u8];
    entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
    entry.extend_from_slice(name.as_bytes());
    let mut d = (entry.len() as u16).to_be_bytes().to_vec();
    d.extend_from_slice(&entry);
    d
}

/// ALPN extension data.
pub fn alpn(protocols: &[&str]) -> Vec<u8> {
    let mut list = Vec::new();
    for p in protocols {
        list.push(p.len() as u8);
        list.extend_from_slice(p.as_bytes());
    }
    let mut d = (list.len() as u16).to_be_bytes().to_vec();
    d.extend_from_slice(&list);
    d
}

/// supported_versions extension data as a client sends it.
pub fn client_versions(versions: &[u16]) -> Vec<u8> {
    let mut d = vec![(versions.len() * 2) as u8];
    for v in versions {
        d.extend_from_slice(&v.to_be_bytes());
    }
    d
}

/// A ClientHello body.
pub fn client_hello(version: u16, session_id: &[u8], ciphers: &[u16], extensions: &[Vec<u8>]) -> Vec<u8> {
    let mut b = version.to_be_bytes().to_vec();
    b.extend_from_slice(&[0x11; 32]);
    b.push(session_id.len() as u8);
    b.extend_from_slice(session_id);
    b.extend_from_slice(&u16_list(ciphers));
    b.extend_from_slice(&[1, 0]);
    let exts: Vec<u8> = extensions.concat();
    if !extensions.is_empty() {
        b.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        b.extend_from_slice(&exts);
    }
    b
}

/// A ServerHello body.
pub fn server_hello(random: [u8; 32], session_id: &[u8], cipher: u16, extensions: &[Vec<u8>]) -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend_from_slice(&random);
    b.push(session_id.len() as u8);
    b.extend_from_slice(session_id);
    b.extend_from_slice(&cipher.to_be_bytes());
    b.push(0);
    let exts: Vec<u8> = extensions.concat();
    b.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    b.extend_from_slice(&exts);
    b
}

/// A Certificate message body (TLS <= 1.2) holding `certs`.
pub fn certificate(certs: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for c in certs {
        let len = c.len() as u32;
        list.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
        list.extend_from_slice(c);
    }
    let len = list.len() as u32;
    let mut b = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8];
    b.extend_from_slice(&list);
    b
}

/// The ClientHello of a Chrome 143 (Android) as recorded by a fingerprinting
/// service, rebuilt from its published JA3 text and JA4_ro (original order):
/// ja3 = 98487aa16281980e7d1120d399efb6a4, ja4 = t13d1516h2_8daaf6152771_d8a2da3f94cd.
pub fn chrome_client_hello() -> Vec<u8> {
    let ciphers = [
        0x3a3a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014, 0x009c, 0x009d,
        0x002f, 0x0035,
    ];
    let sigalgs = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601];
    let extensions = vec![
        extension(0x2a2a, &[]),                                         // GREASE
        extension(0x002d, &[1, 1]),                                     // psk_key_exchange_modes
        extension(0x0033, &[0, 5, 0x4a, 0x4a, 0, 1, 0]),                // key_share (GREASE entry)
        extension(0x0010, &alpn(&["h2", "http/1.1"])),                  // ALPN
        extension(0xfe0d, &[0, 0, 1, 0, 1, 0x6b, 0, 0x20, 0, 0, 0]),    // encrypted_client_hello
        extension(0x0017, &[]),                                         // extended_master_secret
        extension(0x44cd, &[0, 3, 2, 0x68, 0x32]),                      // application_settings
        extension(0x0000, &sni("Tls-Outer.BrowserLeaks.com")),          // server_name
        extension(0x000b, &[1, 0]),                                     // ec_point_formats
        extension(0x000a, &u16_list(&[0x9a9a, 4588, 29, 23, 24])),      // supported_groups
        extension(0x002b, &client_versions(&[0xdada, 0x0304, 0x0303])), // supported_versions
        extension(0xff01, &[0]),                                        // renegotiation_info
        extension(0x0023, &[]),                                         // session_ticket
        extension(0x0012, &[]),                                         // signed_certificate_timestamp
        extension(0x0005, &[1, 0, 0, 0, 0]),                            // status_request
        extension(0x000d, &u16_list(&sigalgs)),                         // signature_algorithms
        extension(0x001b, &[2, 0, 2]),                                  // compress_certificate
        extension(0x1a1a, &[0]),                                        // GREASE
    ];
    client_hello(0x0303, &[0x26; 32], &ciphers, &extensions)
}
