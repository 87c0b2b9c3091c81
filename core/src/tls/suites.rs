//! The cipher suites passive and key-log decryption read: how each one
//! exchanges its key, protects its records and derives its keys. The
//! inspector asks it whether a passive rule can read a session at all.

/// How the premaster secret is agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyExchange {
    /// The client encrypts it to the server certificate's RSA key: readable
    /// with that key.
    Rsa,
    /// (EC)DHE: only a key log opens it.
    Ephemeral,
    /// TLS 1.3: only a key log opens it.
    Tls13,
}

/// The record protection.
#[allow(missing_docs)] // each variant is the algorithm's own name
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bulk {
    Null,
    Rc4,
    TripleDesCbc,
    Aes128Cbc,
    Aes256Cbc,
    Aes128Gcm,
    Aes256Gcm,
    /// AES-CCM with a 16-byte tag, or an 8-byte one (`_CCM_8`).
    Aes128Ccm {
        short_tag: bool,
    },
    Aes256Ccm {
        short_tag: bool,
    },
    ChaCha20Poly1305,
}

/// The MAC of a stream or CBC suite.
#[allow(missing_docs)] // each variant is the algorithm's own name
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacHash {
    Md5,
    Sha1,
    Sha256,
    Sha384,
}

/// The hash of the TLS 1.2 PRF (and of TLS 1.3's key schedule).
#[allow(missing_docs)] // each variant is the algorithm's own name
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrfHash {
    Sha256,
    Sha384,
}

/// One cipher suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    /// The code in the ServerHello.
    pub id: u16,
    /// How the premaster secret is agreed.
    pub kx: KeyExchange,
    /// How records are protected.
    pub bulk: Bulk,
    /// `None` for AEAD suites.
    pub mac: Option<MacHash>,
    /// The PRF's hash (TLS 1.2) or the key schedule's (TLS 1.3).
    pub prf: PrfHash,
}

impl Bulk {
    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Bulk::Null => 0,
            Bulk::Rc4 | Bulk::Aes128Cbc | Bulk::Aes128Gcm | Bulk::Aes128Ccm { .. } => 16,
            Bulk::TripleDesCbc => 24,
            Bulk::Aes256Cbc | Bulk::Aes256Gcm | Bulk::Aes256Ccm { .. } | Bulk::ChaCha20Poly1305 => 32,
        }
    }

    /// Length of the IV taken from the TLS 1.0-1.2 key block: a CBC IV (used
    /// as such up to TLS 1.0), the implicit part of an AEAD nonce.
    pub fn key_block_iv_len(self) -> usize {
        match self {
            Bulk::Null | Bulk::Rc4 => 0,
            Bulk::TripleDesCbc => 8,
            Bulk::Aes128Cbc | Bulk::Aes256Cbc => 16,
            Bulk::Aes128Gcm | Bulk::Aes256Gcm | Bulk::Aes128Ccm { .. } | Bulk::Aes256Ccm { .. } => 4,
            Bulk::ChaCha20Poly1305 => 12,
        }
    }

    /// Block length of a CBC suite.
    pub fn block_len(self) -> Option<usize> {
        match self {
            Bulk::TripleDesCbc => Some(8),
            Bulk::Aes128Cbc | Bulk::Aes256Cbc => Some(16),
            _ => None,
        }
    }
}

impl MacHash {
    /// MAC (and MAC key) length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            MacHash::Md5 => 16,
            MacHash::Sha1 => 20,
            MacHash::Sha256 => 32,
            MacHash::Sha384 => 48,
        }
    }
}

impl PrfHash {
    /// Output length of the hash.
    pub fn output_len(self) -> usize {
        match self {
            PrfHash::Sha256 => 32,
            PrfHash::Sha384 => 48,
        }
    }
}

/// The suite with this code, if decryption knows it.
pub fn by_id(id: u16) -> Option<Suite> {
    use Bulk::*;
    use KeyExchange::{Ephemeral as E, Rsa as R, Tls13 as T};
    use MacHash::*;
    const S256: PrfHash = PrfHash::Sha256;
    const S384: PrfHash = PrfHash::Sha384;
    let (kx, bulk, mac, prf) = match id {
        0x0001 => (R, Null, Some(Md5), S256),
        0x0002 => (R, Null, Some(Sha1), S256),
        0x003B => (R, Null, Some(Sha256), S256),
        0x0004 => (R, Rc4, Some(Md5), S256),
        0x0005 => (R, Rc4, Some(Sha1), S256),
        0x000A => (R, TripleDesCbc, Some(Sha1), S256),
        0x002F => (R, Aes128Cbc, Some(Sha1), S256),
        0x0035 => (R, Aes256Cbc, Some(Sha1), S256),
        0x003C => (R, Aes128Cbc, Some(Sha256), S256),
        0x003D => (R, Aes256Cbc, Some(Sha256), S256),
        0x009C => (R, Aes128Gcm, None, S256),
        0x009D => (R, Aes256Gcm, None, S384),
        0xC09C => (R, Aes128Ccm { short_tag: false }, None, S256),
        0xC09D => (R, Aes256Ccm { short_tag: false }, None, S256),
        0xC0A0 => (R, Aes128Ccm { short_tag: true }, None, S256),
        0xC0A1 => (R, Aes256Ccm { short_tag: true }, None, S256),
        // DHE_RSA
        0x0016 => (E, TripleDesCbc, Some(Sha1), S256),
        0x0033 => (E, Aes128Cbc, Some(Sha1), S256),
        0x0039 => (E, Aes256Cbc, Some(Sha1), S256),
        0x0067 => (E, Aes128Cbc, Some(Sha256), S256),
        0x006B => (E, Aes256Cbc, Some(Sha256), S256),
        0x009E => (E, Aes128Gcm, None, S256),
        0x009F => (E, Aes256Gcm, None, S384),
        0xC09E => (E, Aes128Ccm { short_tag: false }, None, S256),
        0xC09F => (E, Aes256Ccm { short_tag: false }, None, S256),
        0xC0A2 => (E, Aes128Ccm { short_tag: true }, None, S256),
        0xC0A3 => (E, Aes256Ccm { short_tag: true }, None, S256),
        0xCCAA => (E, ChaCha20Poly1305, None, S256),
        // ECDHE_ECDSA
        0xC007 => (E, Rc4, Some(Sha1), S256),
        0xC008 => (E, TripleDesCbc, Some(Sha1), S256),
        0xC009 => (E, Aes128Cbc, Some(Sha1), S256),
        0xC00A => (E, Aes256Cbc, Some(Sha1), S256),
        0xC023 => (E, Aes128Cbc, Some(Sha256), S256),
        0xC024 => (E, Aes256Cbc, Some(Sha384), S384),
        0xC02B => (E, Aes128Gcm, None, S256),
        0xC02C => (E, Aes256Gcm, None, S384),
        0xC0AC => (E, Aes128Ccm { short_tag: false }, None, S256),
        0xC0AD => (E, Aes256Ccm { short_tag: false }, None, S256),
        0xC0AE => (E, Aes128Ccm { short_tag: true }, None, S256),
        0xC0AF => (E, Aes256Ccm { short_tag: true }, None, S256),
        0xCCA9 => (E, ChaCha20Poly1305, None, S256),
        // ECDHE_RSA
        0xC011 => (E, Rc4, Some(Sha1), S256),
        0xC012 => (E, TripleDesCbc, Some(Sha1), S256),
        0xC013 => (E, Aes128Cbc, Some(Sha1), S256),
        0xC014 => (E, Aes256Cbc, Some(Sha1), S256),
        0xC027 => (E, Aes128Cbc, Some(Sha256), S256),
        0xC028 => (E, Aes256Cbc, Some(Sha384), S384),
        0xC02F => (E, Aes128Gcm, None, S256),
        0xC030 => (E, Aes256Gcm, None, S384),
        0xCCA8 => (E, ChaCha20Poly1305, None, S256),
        // TLS 1.3
        0x1301 => (T, Aes128Gcm, None, S256),
        0x1302 => (T, Aes256Gcm, None, S384),
        0x1303 => (T, ChaCha20Poly1305, None, S256),
        0x1304 => (T, Aes128Ccm { short_tag: false }, None, S256),
        0x1305 => (T, Aes128Ccm { short_tag: true }, None, S256),
        _ => return None,
    };
    Some(Suite { id, kx, bulk, mac, prf })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aead_suites_have_no_mac_and_cbc_suites_have_one() {
        for id in 0..=u16::MAX {
            if let Some(s) = by_id(id) {
                let aead = matches!(
                    s.bulk,
                    Bulk::Aes128Gcm
                        | Bulk::Aes256Gcm
                        | Bulk::Aes128Ccm { .. }
                        | Bulk::Aes256Ccm { .. }
                        | Bulk::ChaCha20Poly1305
                );
                assert_eq!(s.mac.is_none(), aead, "{id:#06x}");
                assert_eq!(s.kx == KeyExchange::Tls13, id >> 8 == 0x13, "{id:#06x}");
            }
        }
    }
}
