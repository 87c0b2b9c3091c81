//! Bytes written as lower-case hex: the one way the whole workspace prints
//! hashes and fingerprints, run together ([`hex`]) or with colons between the
//! bytes ([`colon_hex`], the `tls.fingerprint` style of events).

/// Lower-case hex with no separators (`1e58fdc1`).
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        push_byte(&mut s, b);
    }
    s
}

/// Colon-separated lower-case hex (`1e:58:fd:c1`, `tls.fingerprint` style).
pub fn colon_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, &b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        push_byte(&mut s, b);
    }
    s
}

/// Appends the two hex digits of `b`.
fn push_byte(s: &mut String, b: u8) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    s.push(char::from(DIGITS[usize::from(b >> 4)]));
    s.push(char::from(DIGITS[usize::from(b & 0xf)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_case_with_and_without_colons() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x1e, 0x58, 0xfd, 0xc1, 0x00, 0xff]), "1e58fdc100ff");
        assert_eq!(colon_hex(&[]), "");
        assert_eq!(colon_hex(&[0x0a]), "0a");
        assert_eq!(colon_hex(&[0x1e, 0x58, 0xfd, 0xc1]), "1e:58:fd:c1");
        let all: Vec<u8> = (0..=255).collect();
        let want: Vec<String> = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&all), want.concat());
        assert_eq!(colon_hex(&all), want.join(":"));
    }
}
