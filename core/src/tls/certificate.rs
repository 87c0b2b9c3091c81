//! Facts about one X.509 certificate (DER), read with x509-parser: subject,
//! issuer, SAN, serial, validity, fingerprints, key and signature algorithm,
//! in the names operators know from OpenSSL and Zeek.

use std::net::IpAddr;

use sha1::{Digest as _, Sha1};
use sha2::Sha256;
use tlsgate_config::facts::{CertificateFacts, DistinguishedName};
use x509_parser::der_parser::asn1_rs::{Any, Tag};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};
use x509_parser::public_key::PublicKey;

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// The bytes are not a DER X.509 certificate.
    #[error("not a DER X.509 certificate: {0}")]
    Parse(String),
    /// Bytes follow the certificate.
    #[error("{0} bytes after the certificate")]
    TrailingData(usize),
}

/// Facts about the DER certificate `der`.
pub fn certificate_facts(der: &[u8]) -> Result<CertificateFacts, CertificateError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| CertificateError::Parse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertificateError::TrailingData(rest.len()));
    }
    let mut san_dns = Vec::new();
    let mut san_ip = Vec::new();
    // A malformed SAN extension leaves the SAN lists empty rather than
    // refusing the whole certificate (webpki judges it for the status).
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => san_dns.push(dns.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        san_ip.push(ip);
                    }
                }
                _ => {}
            }
        }
    }
    let (key_type, key_bits) = key_type_and_bits(&cert);
    Ok(CertificateFacts {
        subject: distinguished_name(cert.subject()),
        issuer: distinguished_name(cert.issuer()),
        san_dns,
        san_ip,
        serial: serial_hex(cert.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        sha1: Sha1::digest(der).into(),
        sha256: Sha256::digest(der).into(),
        key_type: key_type.to_string(),
        key_bits,
        signature_algorithm: signature_algorithm_name(&cert.signature_algorithm.algorithm.to_id_string()),
    })
}

/// A name's attributes in certificate order, with short attribute names.
fn distinguished_name(name: &X509Name<'_>) -> DistinguishedName {
    let mut attributes = Vec::new();
    for rdn in name.iter_rdn() {
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let short = attribute_short_name(&oid).map(str::to_string).unwrap_or(oid);
            attributes.push((short, attribute_value(atv.attr_value())));
        }
    }
    DistinguishedName { attributes }
}

/// OpenSSL's short names for the attributes seen in server certificates.
fn attribute_short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.13" => "description",
        "2.5.4.15" => "businessCategory",
        "2.5.4.17" => "postalCode",
        "2.5.4.41" => "name",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.97" => "organizationIdentifier",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.3.6.1.4.1.311.60.2.1.1" => "jurisdictionL",
        "1.3.6.1.4.1.311.60.2.1.2" => "jurisdictionST",
        "1.3.6.1.4.1.311.60.2.1.3" => "jurisdictionC",
        _ => return None,
    })
}

/// The text of an attribute value, whatever its string type.
fn attribute_value(value: &Any<'_>) -> String {
    let data = value.data;
    match value.tag() {
        Tag::BmpString => {
            let units: Vec<u16> = data.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16_lossy(&units)
        }
        Tag::UniversalString => data
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('\u{fffd}'))
            .collect(),
        // UTF8String, PrintableString, IA5String, TeletexString (taken as
        // Latin-1-ish UTF-8, as OpenSSL shows it), and anything else.
        _ => String::from_utf8_lossy(data).into_owned(),
    }
}

/// Upper-case colon hex of the serial, without the DER sign byte.
fn serial_hex(raw: &[u8]) -> String {
    let bytes = match raw {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => raw,
    };
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn key_type_and_bits(cert: &X509Certificate<'_>) -> (&'static str, u32) {
    let spki = cert.public_key();
    let bits = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    match spki.algorithm.algorithm.to_id_string().as_str() {
        // rsaEncryption, RSASSA-PSS
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => {
            let size = match spki.parsed() {
                Ok(PublicKey::RSA(rsa)) => rsa.key_size(),
                _ => 0,
            };
            ("rsa", bits(size))
        }
        "1.2.840.10045.2.1" => {
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
            let size = match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => 256, // P-256
                Some("1.3.132.0.34") => 384,        // P-384
                Some("1.3.132.0.35") => 521,        // P-521
                Some("1.3.132.0.33") => 224,        // P-224
                Some("1.3.132.0.10") => 256,        // secp256k1
                _ => match spki.parsed() {
                    Ok(PublicKey::EC(point)) => point.key_size(),
                    _ => 0,
                },
            };
            ("ecdsa", bits(size))
        }
        "1.3.101.112" => ("ed25519", 256),
        "1.3.101.113" => ("ed448", 456),
        // DSA: the size of the public value y (p's size is in the parameters).
        "1.2.840.10040.4.1" => {
            let size = match spki.parsed() {
                Ok(PublicKey::DSA(y)) => y.iter().skip_while(|b| **b == 0).count() * 8,
                _ => 0,
            };
            ("dsa", bits(size))
        }
        _ => ("unknown", bits(spki.subject_public_key.data.len() * 8)),
    }
}

/// OpenSSL's long name of a signature algorithm OID; the OID itself if unknown.
pub fn signature_algorithm_name(oid: &str) -> String {
    let name = match oid {
        "1.2.840.113549.1.1.2" => "md2WithRSAEncryption",
        "1.2.840.113549.1.1.4" => "md5WithRSAEncryption",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "rsassaPss",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.14" => "sha224WithRSAEncryption",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.10045.4.3.1" => "ecdsa-with-SHA224",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.3.101.112" => "ED25519",
        "1.3.101.113" => "ED448",
        "1.2.840.10040.4.3" => "dsaWithSHA1",
        "2.16.840.1.101.3.4.3.1" => "dsa_with_SHA224",
        "2.16.840.1.101.3.4.3.2" => "dsa_with_SHA256",
        _ => return oid.to_string(),
    };
    name.to_string()
}

/// Parses a DER certificate just far enough to compare names (for the
/// status module): (subject DER, issuer DER, notBefore, notAfter).
pub(crate) fn names_and_validity(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>, i64, i64)> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some((
        cert.subject().as_raw().to_vec(),
        cert.issuer().as_raw().to_vec(),
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}
