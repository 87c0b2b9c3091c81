//! The NSS key log format (what `SSLKEYLOGFILE` makes browsers, curl and
//! OpenSSL write, and Wireshark reads): secrets by client random, and
//! Wireshark's `RSA` lines (premaster secrets by the start of their encryption).

use std::collections::HashMap;

/// What a key log holds for one client random.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// `CLIENT_RANDOM`: a TLS 1.0-1.2 (or SSLv3) master secret.
    pub master: Option<[u8; 48]>,
    /// TLS 1.3 `CLIENT_EARLY_TRAFFIC_SECRET` (0-RTT data).
    pub client_early: Option<Vec<u8>>,
    /// TLS 1.3 `CLIENT_HANDSHAKE_TRAFFIC_SECRET`.
    pub client_handshake: Option<Vec<u8>>,
    /// TLS 1.3 `SERVER_HANDSHAKE_TRAFFIC_SECRET`.
    pub server_handshake: Option<Vec<u8>>,
    /// TLS 1.3 `CLIENT_TRAFFIC_SECRET_0`.
    pub client_traffic_0: Option<Vec<u8>>,
    /// TLS 1.3 `SERVER_TRAFFIC_SECRET_0`.
    pub server_traffic_0: Option<Vec<u8>>,
}

/// A key log, read.
#[derive(Default)]
pub struct KeyLog {
    by_random: HashMap<[u8; 32], Secrets>,
    /// `RSA <first 8 bytes of the encrypted premaster> <premaster>`.
    rsa: HashMap<[u8; 8], Vec<u8>>,
    /// Lines that are neither comments nor a known label with good hex.
    pub bad_lines: usize,
    /// Lines with a label this reader does not use (exporter secrets).
    pub unused_lines: usize,
}

impl std::fmt::Debug for Secrets {
    /// Says which secrets are there, never what they are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("master", &self.master.is_some())
            .field("client_early", &self.client_early.is_some())
            .field("client_handshake", &self.client_handshake.is_some())
            .field("server_handshake", &self.server_handshake.is_some())
            .field("client_traffic_0", &self.client_traffic_0.is_some())
            .field("server_traffic_0", &self.server_traffic_0.is_some())
            .finish()
    }
}

impl KeyLog {
    /// Reads a key log's text. Never fails: lines it cannot read are counted.
    pub fn parse(text: &str) -> KeyLog {
        let mut log = KeyLog::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_ascii_whitespace();
            let (Some(label), Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
                log.bad_lines += 1;
                continue;
            };
            let (Some(a), Some(b)) = (unhex(a), unhex(b)) else {
                log.bad_lines += 1;
                continue;
            };
            if label == "RSA" {
                match <[u8; 8]>::try_from(a.as_slice()) {
                    Ok(k) if b.len() == 48 => {
                        log.rsa.insert(k, b);
                    }
                    _ => log.bad_lines += 1,
                }
                continue;
            }
            let Ok(random) = <[u8; 32]>::try_from(a.as_slice()) else {
                log.bad_lines += 1;
                continue;
            };
            let known = matches!(
                label,
                "CLIENT_RANDOM"
                    | "CLIENT_EARLY_TRAFFIC_SECRET"
                    | "CLIENT_HANDSHAKE_TRAFFIC_SECRET"
                    | "SERVER_HANDSHAKE_TRAFFIC_SECRET"
                    | "CLIENT_TRAFFIC_SECRET_0"
                    | "SERVER_TRAFFIC_SECRET_0"
            );
            if !known {
                if matches!(label, "EXPORTER_SECRET" | "EARLY_EXPORTER_SECRET") {
                    log.unused_lines += 1;
                } else {
                    log.bad_lines += 1;
                }
                continue;
            }
            // TLS 1.3 secrets are a hash long (32 or 48 bytes); a master secret is 48.
            let fits = if label == "CLIENT_RANDOM" { b.len() == 48 } else { b.len() == 32 || b.len() == 48 };
            if !fits {
                log.bad_lines += 1;
                continue;
            }
            let s = log.by_random.entry(random).or_default();
            match label {
                "CLIENT_RANDOM" => s.master = b.as_slice().try_into().ok(),
                "CLIENT_EARLY_TRAFFIC_SECRET" => s.client_early = Some(b),
                "CLIENT_HANDSHAKE_TRAFFIC_SECRET" => s.client_handshake = Some(b),
                "SERVER_HANDSHAKE_TRAFFIC_SECRET" => s.server_handshake = Some(b),
                "CLIENT_TRAFFIC_SECRET_0" => s.client_traffic_0 = Some(b),
                _ => s.server_traffic_0 = Some(b),
            }
        }
        log
    }

    /// The secrets logged for a session's client random.
    pub fn secrets(&self, client_random: &[u8; 32]) -> Option<&Secrets> {
        self.by_random.get(client_random)
    }

    /// The premaster secret logged for an encrypted premaster (Wireshark's `RSA` line).
    pub fn rsa_premaster(&self, encrypted: &[u8]) -> Option<&[u8]> {
        let k: [u8; 8] = encrypted.get(..8)?.try_into().ok()?;
        self.rsa.get(&k).map(Vec::as_slice)
    }

    /// Sessions (client randoms) the log has secrets for.
    pub fn sessions(&self) -> usize {
        self.by_random.len()
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 1024 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labels_counts_garbage_and_never_prints_secrets() {
        let r = "ab".repeat(32);
        let text = format!(
            "# comment\n\nCLIENT_RANDOM {r} {}\nCLIENT_TRAFFIC_SECRET_0 {r} {}\nEXPORTER_SECRET {r} {}\n\
             CLIENT_RANDOM zz {}\nCLIENT_RANDOM {r}\nRSA 0102030405060708 {}\nHELLO {r} 00\nCLIENT_RANDOM {r} 0102\n",
            "11".repeat(48),
            "22".repeat(32),
            "33".repeat(32),
            "11".repeat(48),
            "44".repeat(48),
        );
        let log = KeyLog::parse(&text);
        assert_eq!(log.bad_lines, 4);
        assert_eq!(log.unused_lines, 1);
        let s = log.secrets(&[0xab; 32]).unwrap();
        assert_eq!(s.master, Some([0x11; 48]));
        assert_eq!(s.client_traffic_0.as_deref(), Some(&[0x22; 32][..]));
        assert_eq!(log.rsa_premaster(&[1, 2, 3, 4, 5, 6, 7, 8, 9]), Some(&[0x44; 48][..]));
        let shown = format!("{s:?}");
        assert!(!shown.contains("17") && !shown.contains("11, 17"), "{shown}");
        assert!(shown.contains("master: true"));
    }
}
