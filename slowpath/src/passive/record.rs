//! One direction's record protection, opened: from a protected record's
//! type and fragment to its plaintext, the MAC or tag verified, for every
//! cipher in [`super::suite`] and every version from SSLv3 to TLS 1.3.

use aes::cipher::{BlockDecryptMut, InnerIvInit, KeyInit, StreamCipher};
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use hmac::{Hmac, Mac};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384};

use super::kdf::{hkdf_expand_label, DirectionKeys, Version};
use super::suite::{Bulk, MacHash, PrfHash, Suite};

/// Why a record could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// The MAC or the AEAD tag did not verify, or the padding is not TLS's:
    /// wrong keys, or a record altered on the way.
    BadMac,
    /// Too short for its protection (no room for an IV, a MAC or a tag).
    Truncated,
}

/// A record opened: its real content type (TLS 1.3 hides it inside) and plaintext.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    /// The record's content type (22 handshake, 21 alert, 23 data).
    pub content_type: u8,
    /// What it carried.
    pub plaintext: Vec<u8>,
}

/// One direction's record protection and sequence number.
pub struct RecordOpener {
    version: Version,
    protection: Protection,
    seq: u64,
}

enum Protection {
    Null(MacKey),
    Rc4(Box<rc4::Rc4<rc4::consts::U16>>, MacKey),
    Cbc { cipher: CbcKey, mac: MacKey, chained_iv: Option<Vec<u8>>, encrypt_then_mac: bool },
    Aead { key: AeadKey, iv: Vec<u8>, explicit_nonce: bool },
}

enum CbcKey {
    Aes128(Box<aes::Aes128>),
    Aes256(Box<aes::Aes256>),
    TripleDes(Box<des::TdesEde3>),
}

enum AeadKey {
    Lc(LessSafeKey),
    Ccm128(Box<ccm::Ccm<aes::Aes128, ccm::consts::U16, ccm::consts::U12>>),
    Ccm128Short(Box<ccm::Ccm<aes::Aes128, ccm::consts::U8, ccm::consts::U12>>),
    Ccm256(Box<ccm::Ccm<aes::Aes256, ccm::consts::U16, ccm::consts::U12>>),
    Ccm256Short(Box<ccm::Ccm<aes::Aes256, ccm::consts::U8, ccm::consts::U12>>),
}

struct MacKey {
    hash: Option<MacHash>,
    key: Vec<u8>,
    ssl3: bool,
}

impl RecordOpener {
    /// The opener for one direction of a TLS 1.0-1.2 or SSLv3 session.
    /// `None` if the keys do not fit the suite (which derivation never gives).
    pub fn tls12(version: Version, suite: &Suite, keys: &DirectionKeys, encrypt_then_mac: bool) -> Option<Self> {
        let mac = MacKey { hash: suite.mac, key: keys.mac_key.clone(), ssl3: version == Version::Ssl3 };
        let protection = match suite.bulk {
            Bulk::Null => Protection::Null(mac),
            Bulk::Rc4 => Protection::Rc4(Box::new(rc4::Rc4::new_from_slice(&keys.key).ok()?), mac),
            Bulk::TripleDesCbc | Bulk::Aes128Cbc | Bulk::Aes256Cbc => {
                let cipher = match suite.bulk {
                    Bulk::Aes128Cbc => CbcKey::Aes128(Box::new(aes::Aes128::new_from_slice(&keys.key).ok()?)),
                    Bulk::Aes256Cbc => CbcKey::Aes256(Box::new(aes::Aes256::new_from_slice(&keys.key).ok()?)),
                    _ => CbcKey::TripleDes(Box::new(des::TdesEde3::new_from_slice(&keys.key).ok()?)),
                };
                // Up to TLS 1.0 each record's IV is the last ciphertext block before it.
                let chained_iv = (version <= Version::Tls10).then(|| keys.iv.clone());
                Protection::Cbc { cipher, mac, chained_iv, encrypt_then_mac }
            }
            bulk => Protection::Aead {
                key: aead_key(bulk, &keys.key)?,
                iv: keys.iv.clone(),
                explicit_nonce: bulk != Bulk::ChaCha20Poly1305,
            },
        };
        Some(RecordOpener { version, protection, seq: 0 })
    }

    /// The opener for one direction of TLS 1.3 under `secret` (a handshake or
    /// application traffic secret).
    pub fn tls13(suite: &Suite, secret: &[u8]) -> Option<Self> {
        let key = hkdf_expand_label(suite.prf, secret, b"key", suite.bulk.key_len());
        let iv = hkdf_expand_label(suite.prf, secret, b"iv", 12);
        let protection = Protection::Aead { key: aead_key(suite.bulk, &key)?, iv, explicit_nonce: false };
        Some(RecordOpener { version: Version::Tls13, protection, seq: 0 })
    }

    /// Records opened so far.
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    /// Opens one record if it is this opener's, the sequence number left as
    /// it was when it is not: trial decryption, for TLS 1.3's 0-RTT records
    /// and those that follow them (AEAD keys, which keep no other state).
    pub fn try_open(&mut self, header: &[u8; 5], fragment: &[u8]) -> Result<Opened, RecordError> {
        let seq = self.seq;
        let opened = self.open(header, fragment);
        if opened.is_err() {
            self.seq = seq;
        }
        opened
    }

    /// Opens one record: `header` is its 5-byte header, `fragment` what follows.
    pub fn open(&mut self, header: &[u8; 5], fragment: &[u8]) -> Result<Opened, RecordError> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let content_type = header[0];
        let version = [header[1], header[2]];
        match &mut self.protection {
            Protection::Null(mac) => {
                let body = mac.strip(seq, content_type, version, fragment)?;
                Ok(Opened { content_type, plaintext: body.to_vec() })
            }
            Protection::Rc4(cipher, mac) => {
                let mut buf = fragment.to_vec();
                cipher.apply_keystream(&mut buf);
                let body = mac.strip(seq, content_type, version, &buf)?;
                Ok(Opened { content_type, plaintext: body.to_vec() })
            }
            Protection::Cbc { cipher, mac, chained_iv, encrypt_then_mac } => {
                let block = cipher.block_len();
                let mut fragment = fragment;
                if *encrypt_then_mac {
                    // RFC 7366: the MAC covers IV and ciphertext, and is checked first.
                    fragment = mac.strip(seq, content_type, version, fragment)?;
                }
                let (iv, ciphertext) = match chained_iv {
                    Some(iv) => (iv.clone(), fragment),
                    None => {
                        if fragment.len() < block {
                            return Err(RecordError::Truncated);
                        }
                        (fragment[..block].to_vec(), &fragment[block..])
                    }
                };
                if ciphertext.is_empty() || ciphertext.len() % block != 0 {
                    return Err(RecordError::Truncated);
                }
                if let Some(next) = chained_iv {
                    *next = ciphertext[ciphertext.len() - block..].to_vec();
                }
                let mut buf = ciphertext.to_vec();
                cipher.decrypt(&iv, &mut buf);
                let unpadded = unpad(&buf, block, self.version == Version::Ssl3)?;
                let body = if *encrypt_then_mac {
                    &buf[..unpadded]
                } else {
                    mac.strip(seq, content_type, version, &buf[..unpadded])?
                };
                Ok(Opened { content_type, plaintext: body.to_vec() })
            }
            Protection::Aead { key, iv, explicit_nonce } => {
                let tag_len = key.tag_len();
                let mut nonce = [0u8; 12];
                let ciphertext = if *explicit_nonce {
                    // TLS 1.2 GCM and CCM: 4 implicit bytes, then 8 carried in the record.
                    if fragment.len() < 8 + tag_len {
                        return Err(RecordError::Truncated);
                    }
                    nonce[..4].copy_from_slice(iv.get(..4).ok_or(RecordError::Truncated)?);
                    nonce[4..].copy_from_slice(&fragment[..8]);
                    &fragment[8..]
                } else {
                    // ChaCha20-Poly1305 in TLS 1.2 and every TLS 1.3 cipher: the IV xor the sequence number.
                    if fragment.len() < tag_len || iv.len() != 12 {
                        return Err(RecordError::Truncated);
                    }
                    nonce.copy_from_slice(iv);
                    for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
                        *n ^= s;
                    }
                    fragment
                };
                let aad: Vec<u8> = if self.version == Version::Tls13 {
                    header.to_vec()
                } else {
                    let mut a = seq.to_be_bytes().to_vec();
                    a.push(content_type);
                    a.extend_from_slice(&version);
                    a.extend_from_slice(&((ciphertext.len() - tag_len) as u16).to_be_bytes());
                    a
                };
                let mut buf = ciphertext.to_vec();
                key.open(&nonce, &aad, &mut buf)?;
                buf.truncate(buf.len() - tag_len);
                if self.version == Version::Tls13 {
                    // TLSInnerPlaintext: content, the real type, zeros.
                    let Some(end) = buf.iter().rposition(|&b| b != 0) else { return Err(RecordError::BadMac) };
                    let content_type = buf[end];
                    buf.truncate(end);
                    return Ok(Opened { content_type, plaintext: buf });
                }
                Ok(Opened { content_type, plaintext: buf })
            }
        }
    }
}

/// The next TLS 1.3 application traffic secret after a KeyUpdate.
pub fn tls13_next_secret(prf: PrfHash, secret: &[u8]) -> Vec<u8> {
    hkdf_expand_label(prf, secret, b"traffic upd", prf.output_len())
}

fn aead_key(bulk: Bulk, key: &[u8]) -> Option<AeadKey> {
    let lc = |alg: &'static aead::Algorithm| UnboundKey::new(alg, key).ok().map(|k| AeadKey::Lc(LessSafeKey::new(k)));
    match bulk {
        Bulk::Aes128Gcm => lc(&aead::AES_128_GCM),
        Bulk::Aes256Gcm => lc(&aead::AES_256_GCM),
        Bulk::ChaCha20Poly1305 => lc(&aead::CHACHA20_POLY1305),
        Bulk::Aes128Ccm { short_tag: false } => Some(AeadKey::Ccm128(Box::new(ccm::Ccm::new_from_slice(key).ok()?))),
        Bulk::Aes128Ccm { short_tag: true } => {
            Some(AeadKey::Ccm128Short(Box::new(ccm::Ccm::new_from_slice(key).ok()?)))
        }
        Bulk::Aes256Ccm { short_tag: false } => Some(AeadKey::Ccm256(Box::new(ccm::Ccm::new_from_slice(key).ok()?))),
        Bulk::Aes256Ccm { short_tag: true } => {
            Some(AeadKey::Ccm256Short(Box::new(ccm::Ccm::new_from_slice(key).ok()?)))
        }
        _ => None,
    }
}

impl AeadKey {
    fn tag_len(&self) -> usize {
        match self {
            AeadKey::Lc(k) => k.algorithm().tag_len(),
            AeadKey::Ccm128(_) | AeadKey::Ccm256(_) => 16,
            AeadKey::Ccm128Short(_) | AeadKey::Ccm256Short(_) => 8,
        }
    }

    /// Opens `buf` (ciphertext and tag) in place; the tag stays at the end.
    fn open(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> Result<(), RecordError> {
        use ccm::aead::AeadInPlace;
        let tag_len = self.tag_len();
        let (data, tag) = buf.split_at_mut(buf.len() - tag_len);
        let ok = match self {
            AeadKey::Lc(k) => {
                let n = Nonce::assume_unique_for_key(*nonce);
                k.open_in_place_separate_tag(n, Aad::from(aad), tag, data).is_ok()
            }
            AeadKey::Ccm128(k) => k.decrypt_in_place_detached(nonce.into(), aad, data, (&*tag).into()).is_ok(),
            AeadKey::Ccm128Short(k) => k.decrypt_in_place_detached(nonce.into(), aad, data, (&*tag).into()).is_ok(),
            AeadKey::Ccm256(k) => k.decrypt_in_place_detached(nonce.into(), aad, data, (&*tag).into()).is_ok(),
            AeadKey::Ccm256Short(k) => k.decrypt_in_place_detached(nonce.into(), aad, data, (&*tag).into()).is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(RecordError::BadMac)
        }
    }
}

impl CbcKey {
    fn block_len(&self) -> usize {
        match self {
            CbcKey::TripleDes(_) => 8,
            _ => 16,
        }
    }

    /// Decrypts whole blocks in place.
    fn decrypt(&self, iv: &[u8], buf: &mut [u8]) {
        use cbc::cipher::block_padding::NoPadding;
        let result = match self {
            CbcKey::Aes128(k) => cbc::Decryptor::<aes::Aes128>::inner_iv_slice_init((**k).clone(), iv)
                .map(|d| d.decrypt_padded_mut::<NoPadding>(buf).map(|_| ())),
            CbcKey::Aes256(k) => cbc::Decryptor::<aes::Aes256>::inner_iv_slice_init((**k).clone(), iv)
                .map(|d| d.decrypt_padded_mut::<NoPadding>(buf).map(|_| ())),
            CbcKey::TripleDes(k) => cbc::Decryptor::<des::TdesEde3>::inner_iv_slice_init((**k).clone(), iv)
                .map(|d| d.decrypt_padded_mut::<NoPadding>(buf).map(|_| ())),
        };
        // The IV has the block's length and `buf` whole blocks: checked by the caller.
        debug_assert!(matches!(result, Ok(Ok(()))));
    }
}

/// The plaintext length (content and MAC) after the CBC padding: TLS's
/// (every padding byte holds the padding length), or SSLv3's (only the last).
/// Looks at every byte the longest padding could cover, whatever the real
/// length, so that the time taken does not depend on it.
fn unpad(buf: &[u8], block: usize, ssl3: bool) -> Result<usize, RecordError> {
    let Some(&pad) = buf.last() else { return Err(RecordError::Truncated) };
    let pad = usize::from(pad);
    if ssl3 {
        if pad >= block || pad + 1 > buf.len() {
            return Err(RecordError::BadMac);
        }
        return Ok(buf.len() - pad - 1);
    }
    if pad + 1 > buf.len() {
        return Err(RecordError::BadMac);
    }
    let mut bad = 0u8;
    let span = buf.len().min(256);
    for (i, &b) in buf[buf.len() - span..].iter().rev().enumerate() {
        // Bytes within the padding must equal it; those before it are not looked at.
        let inside = u8::from(i <= pad).wrapping_neg();
        bad |= inside & (b ^ pad as u8);
    }
    if bad != 0 {
        return Err(RecordError::BadMac);
    }
    Ok(buf.len() - pad - 1)
}

impl MacKey {
    /// Checks the MAC at the end of `data` and returns what it covers.
    fn strip<'a>(&self, seq: u64, content_type: u8, version: [u8; 2], data: &'a [u8]) -> Result<&'a [u8], RecordError> {
        let Some(hash) = self.hash else { return Ok(data) };
        let len = hash.output_len();
        if data.len() < len {
            return Err(RecordError::Truncated);
        }
        let (body, tag) = data.split_at(data.len() - len);
        let mut head = seq.to_be_bytes().to_vec();
        head.push(content_type);
        if !self.ssl3 {
            head.extend_from_slice(&version);
        }
        head.extend_from_slice(&(body.len() as u16).to_be_bytes());
        let want = if self.ssl3 { ssl3_mac(hash, &self.key, &head, body) } else { hmac(hash, &self.key, &head, body) };
        if constant_time_eq(&want, tag) {
            Ok(body)
        } else {
            Err(RecordError::BadMac)
        }
    }
}

fn hmac(hash: MacHash, key: &[u8], head: &[u8], body: &[u8]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], head: &[u8], body: &[u8]) -> Vec<u8> {
        match <M as hmac::digest::KeyInit>::new_from_slice(key) {
            Ok(mut m) => {
                m.update(head);
                m.update(body);
                m.finalize().into_bytes().to_vec()
            }
            // HMAC takes keys of any length.
            Err(_) => Vec::new(),
        }
    }
    match hash {
        MacHash::Md5 => run::<Hmac<Md5>>(key, head, body),
        MacHash::Sha1 => run::<Hmac<Sha1>>(key, head, body),
        MacHash::Sha256 => run::<Hmac<Sha256>>(key, head, body),
        MacHash::Sha384 => run::<Hmac<Sha384>>(key, head, body),
    }
}

/// SSLv3's MAC (RFC 6101 §5.2.3.1): hash(key + pad2 + hash(key + pad1 + seq + type + length + content)).
fn ssl3_mac(hash: MacHash, key: &[u8], head: &[u8], body: &[u8]) -> Vec<u8> {
    fn run<D: Digest>(pads: usize, key: &[u8], head: &[u8], body: &[u8]) -> Vec<u8> {
        let mut inner = D::new();
        inner.update(key);
        inner.update(vec![0x36u8; pads]);
        inner.update(head);
        inner.update(body);
        let inner = inner.finalize();
        let mut outer = D::new();
        outer.update(key);
        outer.update(vec![0x5cu8; pads]);
        outer.update(inner);
        outer.finalize().to_vec()
    }
    match hash {
        MacHash::Md5 => run::<Md5>(48, key, head, body),
        _ => run::<Sha1>(40, key, head, body),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_padding_is_checked_byte_by_byte() {
        let mut b = vec![0xaa; 29];
        b.extend_from_slice(&[2, 2, 2]);
        assert_eq!(unpad(&b, 16, false), Ok(29));
        b[30] = 1;
        assert_eq!(unpad(&b, 16, false), Err(RecordError::BadMac));
        // SSLv3 looks at the length byte only, and bounds it by the block.
        assert_eq!(unpad(&b, 16, true), Ok(29));
        let mut long = vec![0u8; 32];
        long[31] = 20;
        assert_eq!(unpad(&long, 16, true), Err(RecordError::BadMac));
        assert_eq!(unpad(&[200], 16, false), Err(RecordError::BadMac));
    }

    #[test]
    fn tls13_nonces_follow_the_sequence_number() {
        // Sealed with aws-lc-rs as a TLS 1.3 sender would; opened in order, and
        // a record replayed out of order fails its tag.
        let suite = super::super::suite::by_id(0x1301).unwrap();
        let secret = [7u8; 32];
        let key = hkdf_expand_label(suite.prf, &secret, b"key", 16);
        let iv = hkdf_expand_label(suite.prf, &secret, b"iv", 12);
        let sealer = LessSafeKey::new(UnboundKey::new(&aead::AES_128_GCM, &key).unwrap());
        let seal = |seq: u64, inner: &[u8]| {
            let mut nonce = [0u8; 12];
            nonce.copy_from_slice(&iv);
            for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
                *n ^= s;
            }
            let header = [23, 3, 3, 0, (inner.len() + 16) as u8];
            let mut buf = inner.to_vec();
            sealer.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(header), &mut buf).unwrap();
            (header, buf)
        };
        let mut o = RecordOpener::tls13(&suite, &secret).unwrap();
        let (h0, r0) = seal(0, b"hello\x17\0\0");
        let (h1, r1) = seal(1, b"\x01\x15");
        assert_eq!(o.open(&h0, &r0), Ok(Opened { content_type: 23, plaintext: b"hello".to_vec() }));
        assert_eq!(o.open(&h1, &r1), Ok(Opened { content_type: 21, plaintext: vec![1] }));
        assert_eq!(o.open(&h0, &r0), Err(RecordError::BadMac));
        // A record with no content type at all (only zeros) is refused.
        let mut o = RecordOpener::tls13(&suite, &secret).unwrap();
        let (h, r) = seal(0, &[0, 0]);
        assert_eq!(o.open(&h, &r), Err(RecordError::BadMac));
    }
}
