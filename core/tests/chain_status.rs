//! Certificate status as webpki judges whole paths at the packet's time,
//! on chains made for each case (rcgen; openssl for the algorithms rcgen
//! cannot sign with): an intermediate or root past its dates, a CRL past its
//! nextUpdate, name constraints, path length, the serverAuth EKU; and
//! certificates with odd fields, whose facts are still read.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension, DnType, DnValue,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, KeyIdMethod, KeyPair, NameConstraints, SerialNumber,
};
use tlsgate_core::tls::{certificate_facts, CertVerifier};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn unix(y: i32, m: u8, d: u8) -> i64 {
    rcgen::date_time_ymd(y, m, d).unix_timestamp()
}

fn ca(name: &str, from: (i32, u8, u8), to: (i32, u8, u8), constraints: BasicConstraints, issuer: Option<&Ca>) -> Ca {
    let mut p = CertificateParams::new(vec![]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(constraints);
    p.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    p.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = match issuer {
        Some(i) => p.signed_by(&key, &i.cert, &i.key).unwrap(),
        None => p.self_signed(&key).unwrap(),
    };
    Ca { cert, key }
}

fn leaf_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2030, 1, 1);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p
}

fn leaf(p: CertificateParams, issuer: &Ca) -> Vec<u8> {
    p.signed_by(&KeyPair::generate().unwrap(), &issuer.cert, &issuer.key).unwrap().der().to_vec()
}

fn names(v: &mut CertVerifier, chain: &[Vec<u8>], sni: &str, at: i64) -> Vec<&'static str> {
    v.status(chain, Some(sni), at).names()
}

#[test]
fn an_intermediate_past_its_dates_is_judged_at_the_packets_time() {
    let root = ca("Root", (2020, 1, 1), (2040, 1, 1), BasicConstraints::Unconstrained, None);
    let mid = ca("Intermediate", (2020, 1, 1), (2025, 1, 1), BasicConstraints::Unconstrained, Some(&root));
    let chain = vec![leaf(leaf_params("a.test"), &mid), mid.cert.der().to_vec()];
    let mut v = CertVerifier::new(&[root.cert.der().to_vec()], &[]).unwrap();
    assert_eq!(names(&mut v, &chain, "a.test", unix(2024, 6, 1)), ["valid"]);
    // The same chain later, in the same verifier: its cached verdict no longer holds.
    assert_eq!(names(&mut v, &chain, "a.test", unix(2026, 1, 1)), ["invalid-issuer"]);
    assert_eq!(names(&mut v, &chain, "a.test", unix(2024, 7, 1)), ["valid"]);
    // The leaf out of its own dates: expired, and the rest still judged.
    assert_eq!(names(&mut v, &chain, "a.test", unix(2031, 1, 1)), ["expired", "invalid-issuer"]);
}

#[test]
fn a_root_past_its_dates_makes_the_chain_invalid_issuer() {
    let root = ca("Short Root", (2020, 1, 1), (2025, 1, 1), BasicConstraints::Unconstrained, None);
    let chain = vec![leaf(leaf_params("b.test"), &root)];
    let mut v = CertVerifier::new(&[root.cert.der().to_vec()], &[]).unwrap();
    assert_eq!(names(&mut v, &chain, "b.test", unix(2024, 6, 1)), ["valid"]);
    assert_eq!(names(&mut v, &chain, "b.test", unix(2026, 1, 1)), ["invalid-issuer"]);
}

#[test]
fn a_crl_past_its_next_update_makes_its_statuses_invalid_crl() {
    let root = ca("CRL Root", (2020, 1, 1), (2040, 1, 1), BasicConstraints::Unconstrained, None);
    let crl = CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2025, 1, 1),
        crl_number: SerialNumber::from(7u64),
        issuing_distribution_point: None,
        revoked_certs: vec![],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&root.cert, &root.key)
    .unwrap();
    let chain = vec![leaf(leaf_params("c.test"), &root)];
    let mut v = CertVerifier::new(&[root.cert.der().to_vec()], &[crl.der().to_vec()]).unwrap();
    assert_eq!(names(&mut v, &chain, "c.test", unix(2024, 6, 1)), ["valid"]);
    assert_eq!(names(&mut v, &chain, "c.test", unix(2025, 6, 1)), ["invalid-crl"]);
}

#[test]
fn path_constraints_name_constraints_and_eku() {
    // Name constraints: the root may only vouch for corp.test.
    let mut p = CertificateParams::new(vec![]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "Corp Root");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DnsName("corp.test".into())],
        excluded_subtrees: vec![],
    });
    let key = KeyPair::generate().unwrap();
    let corp = Ca { cert: p.self_signed(&key).unwrap(), key };
    let mut v = CertVerifier::new(&[corp.cert.der().to_vec()], &[]).unwrap();
    let at = unix(2025, 1, 1);
    assert_eq!(names(&mut v, &[leaf(leaf_params("www.corp.test"), &corp)], "www.corp.test", at), ["valid"]);
    assert_eq!(names(&mut v, &[leaf(leaf_params("evil.test"), &corp)], "evil.test", at), ["invalid-issuer"]);

    // Path length 0 on an intermediate: it may sign leaves, not other
    // intermediates. (A trust anchor's own constraints are not enforced:
    // RFC 5280 leaves that to the relying party, and webpki does not.)
    let root = ca("Pathlen Root", (2020, 1, 1), (2040, 1, 1), BasicConstraints::Unconstrained, None);
    let mid = ca("Pathlen 0", (2020, 1, 1), (2040, 1, 1), BasicConstraints::Constrained(0), Some(&root));
    let deep = ca("Too Deep", (2020, 1, 1), (2040, 1, 1), BasicConstraints::Unconstrained, Some(&mid));
    let mut v = CertVerifier::new(&[root.cert.der().to_vec()], &[]).unwrap();
    let chain = vec![leaf(leaf_params("d.test"), &deep), deep.cert.der().to_vec(), mid.cert.der().to_vec()];
    assert_eq!(names(&mut v, &chain, "d.test", at), ["invalid-issuer"]);
    let chain = vec![leaf(leaf_params("d.test"), &mid), mid.cert.der().to_vec()];
    assert_eq!(names(&mut v, &chain, "d.test", at), ["valid"]);

    // A leaf for client authentication only is no TLS server's.
    let mut p = leaf_params("e.test");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    assert_eq!(names(&mut v, &[leaf(p, &root)], "e.test", at), ["invalid-issuer"]);
}

#[test]
fn odd_certificates_are_read_and_judged_for_what_can_be_judged() {
    let root = ca("Odd Root", (1950, 1, 1), (2100, 1, 1), BasicConstraints::Unconstrained, None);
    let mut v = CertVerifier::new(&[root.cert.der().to_vec()], &[]).unwrap();
    let at = unix(2025, 1, 1);

    // Dates after 2049 (GeneralizedTime), and before 1970: read; webpki
    // cannot represent a time before the epoch, so that chain is unverified.
    let mut p = leaf_params("late.test");
    p.not_after = rcgen::date_time_ymd(2061, 1, 1);
    let der = leaf(p, &root);
    assert_eq!(certificate_facts(&der).unwrap().not_after, unix(2061, 1, 1));
    assert_eq!(names(&mut v, &[der], "late.test", at), ["valid"]);
    let mut p = leaf_params("old.test");
    p.not_before = rcgen::date_time_ymd(1965, 3, 1);
    let der = leaf(p, &root);
    let f = certificate_facts(&der).unwrap();
    assert_eq!(f.not_before, unix(1965, 3, 1));
    assert_eq!(names(&mut v, &[der], "old.test", at), ["unverified"]);

    // A 20-byte serial (the most RFC 5280 allows), a longer one, a negative one.
    for (name, serial, shown) in [
        ("serial.test", vec![0x7f; 20], vec!["7F"; 20].join(":")),
        ("long-serial.test", vec![0x11; 24], vec!["11"; 24].join(":")),
        ("negative-serial.test", vec![0xfe, 0x01], "FE:01".to_string()),
    ] {
        let mut p = leaf_params(name);
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        let der = leaf(p, &root);
        assert_eq!(certificate_facts(&der).unwrap().serial, shown, "{name}");
        let statuses = names(&mut v, &[der], name, at);
        assert!(statuses == ["valid"] || statuses == ["unverified"], "{name}: {statuses:?}");
    }

    // An empty subject (the name is in the SAN only), and odd string types.
    let mut p = CertificateParams::new(vec!["empty.test".to_string()]).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let der = leaf(p, &root);
    assert_eq!(certificate_facts(&der).unwrap().subject.to_string(), "");
    assert_eq!(names(&mut v, &[der], "empty.test", at), ["valid"]);
    let mut p = leaf_params("strings.test");
    p.distinguished_name.push(DnType::OrganizationName, DnValue::BmpString("Bmp Örg".try_into().unwrap()));
    p.distinguished_name.push(DnType::OrganizationalUnitName, DnValue::TeletexString("T61 unit".try_into().unwrap()));
    p.distinguished_name.push(DnType::LocalityName, DnValue::UniversalString("Üniversal".try_into().unwrap()));
    let f = certificate_facts(&leaf(p, &root)).unwrap();
    let subject = f.subject.to_string();
    assert!(
        subject.contains("O=Bmp Örg") && subject.contains("OU=T61 unit") && subject.contains("L=Üniversal"),
        "{subject}"
    );

    // An IDN, as its punycode A-label.
    let der = leaf(leaf_params("xn--bcher-kva.test"), &root);
    assert_eq!(certificate_facts(&der).unwrap().san_dns, ["xn--bcher-kva.test"]);
    assert_eq!(names(&mut v, &[der], "xn--bcher-kva.test", at), ["valid"]);

    // An unknown critical extension: read, but not to be trusted blindly.
    let mut p = leaf_params("critical.test");
    let mut ext = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55555, 1], vec![0x05, 0x00]);
    ext.set_criticality(true);
    p.custom_extensions = vec![ext];
    let der = leaf(p, &root);
    assert_eq!(certificate_facts(&der).unwrap().san_dns, ["critical.test"]);
    assert_eq!(names(&mut v, &[der], "critical.test", at), ["unverified"]);
}

/// Ed448 and DSA (which rcgen cannot sign with), made by openssl.
#[test]
fn keys_and_signatures_webpki_cannot_check_are_unverified() {
    let dir = std::env::temp_dir().join(format!("tlsgate-chain-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let params = dir.join("dsa.params");
    let ok = std::process::Command::new("openssl")
        .args(["genpkey", "-genparam", "-algorithm", "DSA", "-pkeyopt", "dsa_paramgen_bits:2048", "-out"])
        .arg(&params)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl genpkey -genparam DSA");
    let dsa = vec!["-paramfile".to_string(), params.display().to_string()];
    for (alg, how) in [("ED448", vec!["-algorithm".to_string(), "ED448".to_string()]), ("DSA", dsa)] {
        let key = dir.join(format!("{alg}.key"));
        let cert = dir.join(format!("{alg}.der"));
        let ok = std::process::Command::new("openssl")
            .arg("genpkey")
            .args(&how)
            .arg("-out")
            .arg(&key)
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl genpkey {alg}");
        // A server's certificate (not openssl's default CA profile).
        let conf = dir.join("req.cnf");
        std::fs::write(
            &conf,
            "[req]\ndistinguished_name = dn\nx509_extensions = ext\nprompt = no\n[dn]\nCN = odd.test\n\
             [ext]\nsubjectAltName = DNS:odd.test\nbasicConstraints = critical,CA:FALSE\n\
             extendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        let ok = std::process::Command::new("openssl")
            .args(["req", "-x509", "-config"])
            .arg(&conf)
            .arg("-key")
            .arg(&key)
            .args(["-days", "30", "-outform", "DER", "-out"])
            .arg(&cert)
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl req {alg}");
        let der = std::fs::read(&cert).unwrap();
        let f = certificate_facts(&der).unwrap();
        assert_eq!(f.san_dns, ["odd.test"], "{alg}");
        assert!(!f.key_type.is_empty(), "{alg}: {f:?}");
        let now = f.not_before + 60;
        // Trusted as a root, it still cannot be checked.
        let mut v =
            CertVerifier::new(std::slice::from_ref(&der), &[]).unwrap_or_else(|_| CertVerifier::new(&[], &[]).unwrap());
        let statuses = v.status(&[der], Some("odd.test"), now).names();
        assert!(statuses.contains(&"unverified") || statuses.contains(&"self-signed"), "{alg}: {statuses:?}");
        assert!(!statuses.contains(&"valid") && !statuses.contains(&"invalid-certificate"), "{alg}: {statuses:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
