//! Plain DNS answers (RFC 1035) with their HTTPS and SVCB records (RFC 9460)
//! rewritten without the `ech` SvcParam (key 5), so that a client never learns
//! a server's ECH configuration and sends its real server name in clear.
//! Sans-IO: a message in, the rewritten message (or why it was left alone) out.
//!
//! Removing bytes moves everything after them, and DNS names point back into
//! the message (compression, RFC 1035 §4.1.4): every pointer the message may
//! carry (owner names, and the names in the RDATA of the types RFC 3597 §4
//! allows to be compressed) is found and moved with its target. A message
//! that cannot be read completely, or that points into removed bytes, is left
//! as it came: nothing is ever rewritten on a guess.

/// RR type SVCB.
pub const TYPE_SVCB: u16 = 64;
/// RR type HTTPS.
pub const TYPE_HTTPS: u16 = 65;
/// SvcParamKey `mandatory`.
const KEY_MANDATORY: u16 = 0;
/// SvcParamKey `ech`.
const KEY_ECH: u16 = 5;

/// Why an answer was left as it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// Not a response (QR clear), or not a standard query's.
    #[error("not a DNS answer")]
    NotAnswer,
    /// The TC bit: the answer is cut short; the client asks again over TCP.
    #[error("truncated DNS answer (TC)")]
    Truncated,
    /// Shorter than its counts, a bad name, a bad record, a pointer into removed bytes.
    #[error("malformed DNS answer")]
    Malformed,
}

/// What an answer held, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchStrip {
    /// The message ID.
    pub id: u16,
    /// The first question's name (lower-cased, no trailing dot; `.` for the root).
    pub qname: String,
    /// The first question's type.
    pub qtype: u16,
    /// The response code.
    pub rcode: u8,
    /// HTTPS and SVCB records in the answer (all sections).
    pub svcb_records: u16,
    /// `ech` SvcParams removed.
    pub removed: u16,
    /// The rewritten message, when something was removed.
    pub message: Option<Vec<u8>>,
}

/// A 16-bit value at `at`.
fn u16_at(m: &[u8], at: usize) -> Result<u16, DnsError> {
    m.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or(DnsError::Malformed)
}

/// The message as read: where its pointers and record lengths are, what to remove.
#[derive(Default)]
struct Plan {
    /// (offset of a compression pointer, its target).
    pointers: Vec<(usize, usize)>,
    /// Byte ranges to remove, in order, not overlapping.
    removed: Vec<(usize, usize)>,
    /// (offset of a 16-bit length, its new value).
    lengths: Vec<(usize, u16)>,
}

impl Plan {
    /// Where old offset `at` lands once the removals are made.
    fn moved(&self, at: usize) -> usize {
        at - self.removed.iter().filter(|&&(_, end)| end <= at).map(|&(s, e)| e - s).sum::<usize>()
    }

    fn in_removed(&self, at: usize) -> bool {
        self.removed.iter().any(|&(s, e)| (s..e).contains(&at))
    }
}

/// Skips the name at `at`, noting a pointer that ends it. Returns the offset
/// after the name.
fn skip_name(m: &[u8], mut at: usize, plan: &mut Plan) -> Result<usize, DnsError> {
    let mut len = 0usize;
    loop {
        let b = *m.get(at).ok_or(DnsError::Malformed)?;
        match b & 0xc0 {
            0x00 if b == 0 => return Ok(at + 1),
            0x00 => {
                len += usize::from(b) + 1;
                if len > 255 {
                    return Err(DnsError::Malformed);
                }
                at += usize::from(b) + 1;
            }
            0xc0 => {
                let target = usize::from(u16_at(m, at)? & 0x3fff);
                // Pointers go back (RFC 1035 §4.1.4 "a prior occurrence"): no loops.
                if target >= at {
                    return Err(DnsError::Malformed);
                }
                plan.pointers.push((at, target));
                return Ok(at + 2);
            }
            _ => return Err(DnsError::Malformed),
        }
    }
}

/// The name at `at` as text (pointers followed, bounded), lower-cased. A
/// pointer names a prior occurrence: what it leads to ends before it.
fn name_text(m: &[u8], mut at: usize) -> Result<String, DnsError> {
    let mut out = String::new();
    let (mut limit, mut len) = (m.len(), 0usize);
    for _ in 0..128 {
        let b = *m.get(at).ok_or(DnsError::Malformed)?;
        match b & 0xc0 {
            0x00 if b == 0 => {
                if out.is_empty() {
                    out.push('.');
                }
                return Ok(out);
            }
            0x00 => {
                let end = at + 1 + usize::from(b);
                len += usize::from(b) + 1;
                if end >= limit || len > 255 {
                    return Err(DnsError::Malformed);
                }
                if !out.is_empty() {
                    out.push('.');
                }
                for &c in &m[at + 1..end] {
                    if c.is_ascii_graphic() && c != b'.' && c != b'\\' {
                        out.push(char::from(c.to_ascii_lowercase()));
                    } else {
                        out.push_str(&format!("\\{c:03}"));
                    }
                }
                at = end;
            }
            0xc0 => {
                let target = usize::from(u16_at(m, at)? & 0x3fff);
                if target >= at || at + 2 > limit {
                    return Err(DnsError::Malformed);
                }
                limit = at;
                at = target;
            }
            _ => return Err(DnsError::Malformed),
        }
    }
    Err(DnsError::Malformed)
}

/// Types whose RDATA may hold compressed names (RFC 3597 §4), and where:
/// the names an RDATA starts with.
fn compressed_names(rtype: u16) -> usize {
    match rtype {
        2..=5 | 7..=9 | 12 => 1, // NS, MD, MF, CNAME, MB, MG, MR, PTR
        6 | 14 => 2,             // SOA (mname, rname), MINFO
        _ => 0,
    }
}

/// Reads an SVCB/HTTPS RDATA at `start..end` and plans the removal of its
/// `ech` parameter (and of `ech` from its `mandatory` list). Returns whether
/// one was removed.
fn plan_svcb(m: &[u8], start: usize, end: usize, rdlength_at: usize, plan: &mut Plan) -> Result<bool, DnsError> {
    // SvcPriority, then TargetName (never compressed, but a pointer is moved
    // if one is there), within the RDATA.
    let mut at = skip_name(m.get(..end).ok_or(DnsError::Malformed)?, start + 2, plan)?;
    let mut cut = 0usize;
    let mut found = false;
    let mut mandatory: Option<(usize, usize)> = None;
    while at < end {
        let key = u16_at(m, at)?;
        let len = usize::from(u16_at(m, at + 2)?);
        let value_end = at + 4 + len;
        if value_end > end {
            return Err(DnsError::Malformed);
        }
        match key {
            KEY_ECH => {
                plan.removed.push((at, value_end));
                cut += value_end - at;
                found = true;
            }
            // A list of 2-byte keys, given once (RFC 9460 §8): anything else cannot be rewritten safely.
            KEY_MANDATORY if len % 2 != 0 || mandatory.is_some() => return Err(DnsError::Malformed),
            KEY_MANDATORY => mandatory = Some((at, value_end)),
            _ => {}
        }
        at = value_end;
    }
    if !found {
        return Ok(false);
    }
    if let Some((param, value_end)) = mandatory {
        // A mandatory list naming ech would make the record one to ignore (RFC 9460 §8).
        let keys = (param + 4..value_end).step_by(2);
        let named: Vec<usize> = keys.filter(|&k| u16_at(m, k).is_ok_and(|v| v == KEY_ECH)).collect();
        if !named.is_empty() {
            let remaining = (value_end - param - 4) / 2 - named.len();
            if remaining == 0 {
                plan.removed.push((param, value_end));
                cut += value_end - param;
            } else {
                for k in named {
                    plan.removed.push((k, k + 2));
                    cut += 2;
                }
                plan.lengths.push((param + 2, (remaining * 2) as u16));
            }
        }
    }
    plan.lengths.push((rdlength_at, (end - start - cut) as u16));
    Ok(true)
}

/// Reads a DNS answer and removes the `ech` SvcParam from every HTTPS and
/// SVCB record in it.
pub fn strip_ech(m: &[u8]) -> Result<EchStrip, DnsError> {
    if m.len() < 12 {
        return Err(DnsError::Malformed);
    }
    let flags = u16_at(m, 2)?;
    if flags & 0x8000 == 0 || (flags >> 11) & 0x0f != 0 {
        return Err(DnsError::NotAnswer);
    }
    if flags & 0x0200 != 0 {
        return Err(DnsError::Truncated);
    }
    let counts = [u16_at(m, 4)?, u16_at(m, 6)?, u16_at(m, 8)?, u16_at(m, 10)?];
    let mut plan = Plan::default();
    let mut at = 12;
    let mut question = None;
    for _ in 0..counts[0] {
        let name_at = at;
        at = skip_name(m, at, &mut plan)?;
        let qtype = u16_at(m, at)?;
        u16_at(m, at + 2)?;
        question.get_or_insert((name_at, qtype));
        at += 4;
    }
    let records = u32::from(counts[1]) + u32::from(counts[2]) + u32::from(counts[3]);
    let (mut svcb_records, mut removed) = (0u16, 0u16);
    for _ in 0..records {
        at = skip_name(m, at, &mut plan)?;
        let rtype = u16_at(m, at)?;
        let rdlength_at = at + 8;
        let rdlength = usize::from(u16_at(m, rdlength_at)?);
        let start = at + 10;
        let end = start + rdlength;
        if end > m.len() {
            return Err(DnsError::Malformed);
        }
        // The names an RDATA holds end within it.
        let rdata_view = &m[..end];
        let mut name_at = start;
        for _ in 0..compressed_names(rtype) {
            name_at = skip_name(rdata_view, name_at, &mut plan)?;
        }
        if rtype == 15 && rdlength >= 3 {
            skip_name(rdata_view, start + 2, &mut plan)?; // MX: preference, exchange
        }
        if rtype == TYPE_SVCB || rtype == TYPE_HTTPS {
            svcb_records = svcb_records.saturating_add(1);
            if plan_svcb(m, start, end, rdlength_at, &mut plan)? {
                removed = removed.saturating_add(1);
            }
        }
        at = end;
    }
    if at != m.len() {
        return Err(DnsError::Malformed);
    }
    let (qname, qtype) = match question {
        Some((name_at, qtype)) => (name_text(m, name_at)?, qtype),
        None => (String::new(), 0),
    };
    let mut strip =
        EchStrip { id: u16_at(m, 0)?, qname, qtype, rcode: (flags & 0x0f) as u8, svcb_records, removed, message: None };
    if removed == 0 {
        return Ok(strip);
    }
    plan.removed.sort_unstable();
    if plan.pointers.iter().any(|&(_, target)| plan.in_removed(target)) {
        return Err(DnsError::Malformed);
    }
    let mut out = Vec::with_capacity(m.len());
    let mut from = 0;
    for &(s, e) in &plan.removed {
        out.extend_from_slice(&m[from..s]);
        from = e;
    }
    out.extend_from_slice(&m[from..]);
    for &(at, target) in &plan.pointers {
        if !plan.in_removed(at) {
            let p = plan.moved(at);
            out[p..p + 2].copy_from_slice(&(0xc000 | plan.moved(target) as u16).to_be_bytes());
        }
    }
    for &(at, value) in &plan.lengths {
        let p = plan.moved(at);
        out[p..p + 2].copy_from_slice(&value.to_be_bytes());
    }
    strip.message = Some(out);
    Ok(strip)
}

/// The name of an RR type as events give it (`HTTPS`, `A`, ...; else `TYPE<n>`).
pub fn type_name(t: u16) -> String {
    match t {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        41 => "OPT".into(),
        TYPE_SVCB => "SVCB".into(),
        TYPE_HTTPS => "HTTPS".into(),
        255 => "ANY".into(),
        other => format!("TYPE{other}"),
    }
}

/// The name of a response code (RFC 1035, RFC 6895).
pub fn rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        other => format!("RCODE{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> Vec<u8> {
        let mut v = Vec::new();
        for l in n.split('.').filter(|l| !l.is_empty()) {
            v.push(l.len() as u8);
            v.extend_from_slice(l.as_bytes());
        }
        v.push(0);
        v
    }

    fn param(key: u16, value: &[u8]) -> Vec<u8> {
        let mut v = key.to_be_bytes().to_vec();
        v.extend_from_slice(&(value.len() as u16).to_be_bytes());
        v.extend_from_slice(value);
        v
    }

    fn rr(owner: &[u8], rtype: u16, rdata: &[u8]) -> Vec<u8> {
        let mut v = owner.to_vec();
        v.extend_from_slice(&rtype.to_be_bytes());
        v.extend_from_slice(&1u16.to_be_bytes());
        v.extend_from_slice(&300u32.to_be_bytes());
        v.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        v.extend_from_slice(rdata);
        v
    }

    /// A response to `qname`/`qtype` with `answers` (owner names given whole).
    fn answer(qname: &str, qtype: u16, answers: &[Vec<u8>], additional: &[Vec<u8>]) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1];
        m.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&(additional.len() as u16).to_be_bytes());
        m.extend(name(qname));
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        for a in answers.iter().chain(additional) {
            m.extend_from_slice(a);
        }
        m
    }

    fn https_rdata(priority: u16, target: &[u8], params: &[Vec<u8>]) -> Vec<u8> {
        let mut v = priority.to_be_bytes().to_vec();
        v.extend_from_slice(target);
        for p in params {
            v.extend_from_slice(p);
        }
        v
    }

    const POINTER_TO_QNAME: [u8; 2] = [0xc0, 12];

    #[test]
    fn ech_is_removed_and_everything_after_it_still_points_right() {
        let alpn = param(1, b"\x02h2\x02h3");
        let ech = param(KEY_ECH, &[0xfe, 0x0d, 0, 4, 1, 2, 3, 4]);
        let hint = param(4, &[192, 0, 2, 1]);
        let first =
            rr(&POINTER_TO_QNAME, TYPE_HTTPS, &https_rdata(1, &[0], &[alpn.clone(), ech.clone(), hint.clone()]));
        // A CNAME after it whose target points into the first record's owner... and back to the question.
        let second_owner_at = 12 + name("shop.test").len() + 4 + first.len();
        let cname = rr(&POINTER_TO_QNAME, 5, &[3, b'w', b'w', b'w', 0xc0, 12]);
        let third = rr(&[0xc0, second_owner_at as u8 + 12], 1, &[192, 0, 2, 7]); // points at the CNAME's "www"
        let m = answer("shop.test", TYPE_HTTPS, &[first, cname, third], &[]);
        let s = strip_ech(&m).unwrap();
        assert_eq!((s.qname.as_str(), s.qtype, s.svcb_records, s.removed), ("shop.test", TYPE_HTTPS, 1, 1));
        let out = s.message.unwrap();
        assert_eq!(out.len(), m.len() - ech.len());
        // Read again: no ech left, the names the same.
        let again = strip_ech(&out).unwrap();
        assert_eq!((again.svcb_records, again.removed, again.message), (1, 0, None));
        let expected = answer(
            "shop.test",
            TYPE_HTTPS,
            &[
                rr(&POINTER_TO_QNAME, TYPE_HTTPS, &https_rdata(1, &[0], &[alpn, hint])),
                rr(&POINTER_TO_QNAME, 5, &[3, b'w', b'w', b'w', 0xc0, 12]),
                rr(&[0xc0, (second_owner_at - ech.len()) as u8 + 12], 1, &[192, 0, 2, 7]),
            ],
            &[],
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn a_mandatory_ech_goes_from_the_mandatory_list_too() {
        let ech = param(KEY_ECH, &[9; 6]);
        let only =
            rr(&POINTER_TO_QNAME, TYPE_SVCB, &https_rdata(1, &name("svc.test"), &[param(0, &[0, 5]), ech.clone()]));
        let both = rr(
            &POINTER_TO_QNAME,
            TYPE_HTTPS,
            &https_rdata(2, &[0], &[param(0, &[0, 1, 0, 5]), param(1, b"\x02h3"), ech.clone()]),
        );
        let m = answer("svc.test", TYPE_SVCB, &[only, both], &[]);
        let out = strip_ech(&m).unwrap().message.unwrap();
        let expected = answer(
            "svc.test",
            TYPE_SVCB,
            &[
                rr(&POINTER_TO_QNAME, TYPE_SVCB, &https_rdata(1, &name("svc.test"), &[])),
                rr(&POINTER_TO_QNAME, TYPE_HTTPS, &https_rdata(2, &[0], &[param(0, &[0, 1]), param(1, b"\x02h3")])),
            ],
            &[],
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn answers_without_ech_and_unreadable_ones_are_left_alone() {
        let plain = answer("a.test", 1, &[rr(&POINTER_TO_QNAME, 1, &[192, 0, 2, 1])], &[]);
        let s = strip_ech(&plain).unwrap();
        assert_eq!((s.svcb_records, s.removed, s.message, s.rcode), (0, 0, None, 0));
        let https = rr(&POINTER_TO_QNAME, TYPE_HTTPS, &https_rdata(1, &[0], &[param(KEY_ECH, &[1, 2])]));
        let m = answer("a.test", TYPE_HTTPS, &[https], &[]);
        let mut query = m.clone();
        query[2] &= 0x7f;
        assert_eq!(strip_ech(&query), Err(DnsError::NotAnswer));
        let mut tc = m.clone();
        tc[2] |= 0x02;
        assert_eq!(strip_ech(&tc), Err(DnsError::Truncated));
        for cut in 0..m.len() {
            assert!(strip_ech(&m[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = m.clone();
        trailing.push(0);
        assert_eq!(strip_ech(&trailing), Err(DnsError::Malformed));
        // A pointer forward (a loop) and a parameter past its RDATA.
        let mut looped = m.clone();
        looped[12 + name("a.test").len() + 4] = 0xc0;
        looped[12 + name("a.test").len() + 5] = 60;
        assert_eq!(strip_ech(&looped), Err(DnsError::Malformed));
        let long = rr(&POINTER_TO_QNAME, TYPE_HTTPS, &[0, 1, 0, 0, 5, 0, 9, 1]);
        assert_eq!(strip_ech(&answer("a.test", TYPE_HTTPS, &[long], &[])), Err(DnsError::Malformed));
        // A pointer into the ech parameter itself: left as it came.
        let https = https_rdata(1, &[0], &[param(KEY_ECH, &name("x.test"))]);
        let into = 12 + name("a.test").len() + 4 + 2 + 10 + 3 + 4;
        let bad = rr(&[0xc0, into as u8], 1, &[192, 0, 2, 1]);
        let m = answer("a.test", TYPE_HTTPS, &[rr(&POINTER_TO_QNAME, TYPE_HTTPS, &https), bad], &[]);
        assert_eq!(strip_ech(&m), Err(DnsError::Malformed));
    }

    #[test]
    fn a_name_in_rdata_that_runs_past_it_is_malformed() {
        // An MF record (RFC 3597 lets its name be compressed) whose RDATA is
        // no name: read as one it would run into the next record, which the
        // rewrite changes (found by the fuzzer).
        let mf = rr(&POINTER_TO_QNAME, 4, &[2, 1, 0, 3, 4, 5, 6]);
        let https = rr(&POINTER_TO_QNAME, TYPE_HTTPS, &https_rdata(2, &[0], &[param(KEY_ECH, &[0; 16])]));
        assert_eq!(strip_ech(&answer("a.test", 1, &[mf, https], &[])), Err(DnsError::Malformed));
    }

    #[test]
    fn a_mandatory_list_of_odd_length_or_given_twice_is_malformed() {
        // Its keys are 2 bytes each, and it is given once; an odd-length list
        // naming ech would be rewritten with a length its bytes do not have
        // (found by the fuzzer).
        let odd = https_rdata(1, &[0], &[param(0, &[0, 1, 0, 5, 0]), param(KEY_ECH, &[0; 16])]);
        let m = answer("a.test", TYPE_HTTPS, &[rr(&POINTER_TO_QNAME, TYPE_HTTPS, &odd)], &[]);
        assert_eq!(strip_ech(&m), Err(DnsError::Malformed));
        let twice = https_rdata(1, &[0], &[param(0, &[0, 5]), param(0, &[0, 5]), param(KEY_ECH, &[0; 16])]);
        let m = answer("a.test", TYPE_HTTPS, &[rr(&POINTER_TO_QNAME, TYPE_HTTPS, &twice)], &[]);
        assert_eq!(strip_ech(&m), Err(DnsError::Malformed));
        // The fuzzer's own input.
        let found: &[u8] = &[
            66, 66, 133, 128, 0, 1, 0, 3, 0, 0, 0, 0, 0, 0, 64, 0, 1, 192, 12, 0, 64, 0, 1, 0, 0, 1, 44, 0, 55, 0, 1,
            3, 119, 119, 119, 4, 115, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11, 12, 13, 14, 15, 192, 12, 0, 5,
            0, 1, 51, 0, 5, 0, 16, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 192, 12, 0, 8, 0, 1, 0, 255,
            1, 44, 0, 6, 3, 119, 119, 119, 192, 12, 192, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 10, 0, 0, 2,
        ];
        assert_eq!(strip_ech(found), Err(DnsError::Malformed));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 7;
        for len in 0..400 {
            let m: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = strip_ech(&m);
        }
    }
}
