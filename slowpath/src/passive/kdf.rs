//! Key derivation of SSLv3 to TLS 1.3, from the secret a passive reader
//! learns (a premaster secret, a master secret, or TLS 1.3 traffic secrets) to
//! the keys that protect each direction's records.

use hmac::{Hmac, Mac};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384};

use super::suite::{PrfHash, Suite};

/// The protocol version, as far as the key schedule cares.
#[allow(missing_docs)] // each variant is the algorithm's own name
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    Ssl3,
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl Version {
    /// From the version field of a ServerHello (TLS 1.3 is named by its
    /// `supported_versions` extension instead).
    pub fn from_wire(v: u16) -> Option<Version> {
        Some(match v {
            0x0300 => Version::Ssl3,
            0x0301 => Version::Tls10,
            0x0302 => Version::Tls11,
            0x0303 => Version::Tls12,
            0x0304 => Version::Tls13,
            _ => return None,
        })
    }

    /// The event log's name (`tls.version`'s form).
    pub fn name(self) -> &'static str {
        match self {
            Version::Ssl3 => "SSLv3",
            Version::Tls10 => "TLS 1.0",
            Version::Tls11 => "TLS 1.1",
            Version::Tls12 => "TLS 1.2",
            Version::Tls13 => "TLS 1.3",
        }
    }
}

/// One direction's keys for TLS 1.0-1.2 and SSLv3.
#[derive(Clone, PartialEq, Eq)]
pub struct DirectionKeys {
    /// MAC key (stream and CBC suites).
    pub mac_key: Vec<u8>,
    /// Cipher key.
    pub key: Vec<u8>,
    /// CBC IV, or an AEAD nonce's implicit part.
    pub iv: Vec<u8>,
}

/// The master secret from the premaster secret. `session_hash` is the hash
/// of the handshake up to the ClientKeyExchange when the extended master
/// secret (RFC 7627) was negotiated.
pub fn master_secret(
    version: Version,
    prf: PrfHash,
    premaster: &[u8],
    client_random: &[u8; 32],
    server_random: &[u8; 32],
    session_hash: Option<&[u8]>,
) -> [u8; 48] {
    let mut out = [0u8; 48];
    if version == Version::Ssl3 {
        ssl3_expand(premaster, &[client_random, server_random], &mut out);
        return out;
    }
    match session_hash {
        Some(h) => tls_prf(version, prf, premaster, b"extended master secret", &[h], &mut out),
        None => tls_prf(version, prf, premaster, b"master secret", &[client_random, server_random], &mut out),
    }
    out
}

/// The hash of the handshake messages so far, as the extended master secret
/// takes it: MD5 || SHA-1 up to TLS 1.1, the PRF's hash in TLS 1.2.
pub fn session_hash(version: Version, prf: PrfHash, transcript: &[u8]) -> Vec<u8> {
    match (version, prf) {
        (Version::Ssl3 | Version::Tls10 | Version::Tls11, _) => {
            let mut h = Md5::digest(transcript).to_vec();
            h.extend_from_slice(&Sha1::digest(transcript));
            h
        }
        (_, PrfHash::Sha256) => Sha256::digest(transcript).to_vec(),
        (_, PrfHash::Sha384) => Sha384::digest(transcript).to_vec(),
    }
}

/// Both directions' keys (client's, server's) from the master secret.
pub fn key_block(
    version: Version,
    suite: &Suite,
    master: &[u8; 48],
    client_random: &[u8; 32],
    server_random: &[u8; 32],
) -> (DirectionKeys, DirectionKeys) {
    let mac_len = suite.mac.map_or(0, |m| m.output_len());
    let key_len = suite.bulk.key_len();
    let iv_len = suite.bulk.key_block_iv_len();
    let mut block = vec![0u8; 2 * (mac_len + key_len + iv_len)];
    if version == Version::Ssl3 {
        ssl3_expand(master, &[server_random, client_random], &mut block);
    } else {
        tls_prf(version, suite.prf, master, b"key expansion", &[server_random, client_random], &mut block);
    }
    let mut at = 0;
    let mut take = |n: usize| {
        let v = block[at..at + n].to_vec();
        at += n;
        v
    };
    let (client_mac, server_mac) = (take(mac_len), take(mac_len));
    let (client_key, server_key) = (take(key_len), take(key_len));
    let (client_iv, server_iv) = (take(iv_len), take(iv_len));
    (
        DirectionKeys { mac_key: client_mac, key: client_key, iv: client_iv },
        DirectionKeys { mac_key: server_mac, key: server_key, iv: server_iv },
    )
}

/// The TLS PRF: P_MD5 xor P_SHA1 up to TLS 1.1 (RFC 2246 §5), P_hash with the
/// suite's hash in TLS 1.2 (RFC 5246 §5).
pub fn tls_prf(version: Version, prf: PrfHash, secret: &[u8], label: &[u8], seed: &[&[u8]], out: &mut [u8]) {
    let mut full_seed = label.to_vec();
    for s in seed {
        full_seed.extend_from_slice(s);
    }
    if version < Version::Tls12 {
        // The secret's two halves, overlapping by a byte when its length is odd.
        let half = secret.len().div_ceil(2);
        let (s1, s2) = (&secret[..half], &secret[secret.len() - half..]);
        p_hash::<Hmac<Md5>>(s1, &full_seed, out);
        let mut sha = vec![0u8; out.len()];
        p_hash::<Hmac<Sha1>>(s2, &full_seed, &mut sha);
        for (o, s) in out.iter_mut().zip(sha) {
            *o ^= s;
        }
    } else {
        match prf {
            PrfHash::Sha256 => p_hash::<Hmac<Sha256>>(secret, &full_seed, out),
            PrfHash::Sha384 => p_hash::<Hmac<Sha384>>(secret, &full_seed, out),
        }
    }
}

/// P_hash (RFC 5246 §5): A(i) = HMAC(secret, A(i-1)), out = HMAC(secret, A(i) + seed)...
fn p_hash<M: Mac + hmac::digest::KeyInit + Clone>(secret: &[u8], seed: &[u8], out: &mut [u8]) {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let Ok(keyed) = <M as hmac::digest::KeyInit>::new_from_slice(secret) else { return };
    let mut a = {
        let mut m = keyed.clone();
        m.update(seed);
        m.finalize().into_bytes().to_vec()
    };
    let mut filled = 0;
    while filled < out.len() {
        let mut m = keyed.clone();
        m.update(&a);
        m.update(seed);
        let chunk = m.finalize().into_bytes();
        let n = chunk.len().min(out.len() - filled);
        out[filled..filled + n].copy_from_slice(&chunk[..n]);
        filled += n;
        let mut m = keyed.clone();
        m.update(&a);
        a = m.finalize().into_bytes().to_vec();
    }
}

/// SSLv3's derivation (RFC 6101 §6.1, §6.2.2): MD5(secret + SHA1("A" + secret
/// + seed)) + MD5(secret + SHA1("BB" + secret + seed)) + ...
fn ssl3_expand(secret: &[u8], seed: &[&[u8]], out: &mut [u8]) {
    let mut filled = 0;
    let mut i = 0u8;
    while filled < out.len() {
        let salt = vec![b'A' + i; usize::from(i) + 1];
        let mut sha = Sha1::new();
        sha.update(&salt);
        sha.update(secret);
        for s in seed {
            sha.update(s);
        }
        let inner = sha.finalize();
        let mut md5 = Md5::new();
        md5.update(secret);
        md5.update(inner);
        let chunk = md5.finalize();
        let n = chunk.len().min(out.len() - filled);
        out[filled..filled + n].copy_from_slice(&chunk[..n]);
        filled += n;
        i += 1;
    }
}

/// TLS 1.3's HKDF-Expand-Label (RFC 8446 §7.1) with an empty context, for
/// `key`, `iv` and `traffic upd`: every output here fits in one HMAC block.
pub fn hkdf_expand_label(prf: PrfHash, secret: &[u8], label: &[u8], len: usize) -> Vec<u8> {
    let mut info = Vec::with_capacity(4 + 6 + label.len());
    info.extend_from_slice(&(len as u16).to_be_bytes());
    info.push((6 + label.len()) as u8);
    info.extend_from_slice(b"tls13 ");
    info.extend_from_slice(label);
    info.push(0); // empty context
    info.push(1); // T(1)
    let block = match prf {
        PrfHash::Sha256 => hmac_once::<Hmac<Sha256>>(secret, &info),
        PrfHash::Sha384 => hmac_once::<Hmac<Sha384>>(secret, &info),
    };
    block[..len.min(block.len())].to_vec()
}

fn hmac_once<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    match <M as hmac::digest::KeyInit>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length.
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn tls12_prf_sha256_matches_the_published_test_vector() {
        // The P_SHA256 vector circulated with RFC 5246 (ietf-tls, 2009).
        let secret = unhex("9b be 43 6b a9 40 f0 17 b1 76 52 84 9a 71 db 35");
        let seed = unhex("a0 ba 9f 93 6c da 31 18 27 a6 f7 96 ff d5 19 8c");
        let mut out = [0u8; 100];
        tls_prf(Version::Tls12, PrfHash::Sha256, &secret, b"test label", &[&seed], &mut out);
        let want = unhex(
            "e3 f2 29 ba 72 7b e1 7b 8d 12 26 20 55 7c d4 53 c2 aa b2 1d 07 c3 d4 95 32 9b 52 d4 e6 1e db 5a
             6b 30 17 91 e9 0d 35 c9 c9 a4 6b 4e 14 ba f9 af 0f a0 22 f7 07 7d ef 17 ab fd 37 97 c0 56 4b ab
             4f bc 91 66 6e 9d ef 9b 97 fc e3 4f 79 67 89 ba a4 80 82 d1 22 ee 42 c5 a7 2e 5a 51 10 ff f7 01
             87 34 7b 66",
        );
        assert_eq!(out.to_vec(), want);
    }

    #[test]
    fn tls13_expand_label_matches_rfc8448() {
        // RFC 8448 §3, the server's handshake traffic secret and its key and IV.
        let secret =
            unhex("b6 7b 7d 69 0c c1 6c 4e 75 e5 42 13 cb 2d 37 b4 e9 c9 12 bc de d9 10 5d 42 be fd 59 d3 91 ad 38");
        assert_eq!(
            hkdf_expand_label(PrfHash::Sha256, &secret, b"key", 16),
            unhex("3f ce 51 60 09 c2 17 27 d0 f2 e4 e8 6e e4 03 bc")
        );
        assert_eq!(
            hkdf_expand_label(PrfHash::Sha256, &secret, b"iv", 12),
            unhex("5d 31 3e b2 67 12 76 ee 13 00 0b 30")
        );
    }

    #[test]
    fn tls10_prf_splits_an_odd_secret_with_one_shared_byte() {
        // Different seeds give different output; the same inputs the same.
        let mut a = [0u8; 48];
        let mut b = [0u8; 48];
        tls_prf(Version::Tls10, PrfHash::Sha256, &[7; 47], b"master secret", &[&[1; 64]], &mut a);
        tls_prf(Version::Tls11, PrfHash::Sha384, &[7; 47], b"master secret", &[&[1; 64]], &mut b);
        assert_eq!(a, b, "TLS 1.0 and 1.1 share the MD5/SHA-1 PRF whatever the suite");
        assert_ne!(a, [0; 48]);
    }
}
