//! Cleartext preludes: the exchanges after which a connection turns to TLS
//! (SMTP, IMAP, POP3, FTP, XMPP, LDAP, PostgreSQL and IRC STARTTLS, and HTTP
//! CONNECT tunnels). Sans-IO: the observer hands each side's contiguous bytes
//! in, [`Prelude::read`] says how many it used and whether TLS starts right
//! after them (on both sides), is still awaited, or never comes.
//!
//! A prelude follows the client's request to start TLS and the server's
//! answer, no more: the lines before are consumed unread (greetings,
//! capabilities, logins). The client's bytes after its request are never
//! consumed as cleartext, so a ClientHello pipelined behind the command is
//! still read as TLS. Bounded: at most `max_bytes` per side and
//! `max_exchanges` client commands.

use tlsgate_config::PreludeProtocol;

use super::observer::Direction;

/// Bounds of one prelude.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreludeLimits {
    /// Cleartext bytes per direction.
    pub max_bytes: usize,
    /// Client commands (requests).
    pub max_exchanges: u32,
}

impl Default for PreludeLimits {
    fn default() -> Self {
        PreludeLimits { max_bytes: 16 * 1024, max_exchanges: 32 }
    }
}

/// Why a prelude did not lead to TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoTls {
    /// The server refused to start TLS (or the proxy the tunnel).
    Refused,
    /// The client went on in cleartext without asking for TLS.
    Plaintext,
    /// Longer than the limits allow.
    TooLong,
    /// Bytes that are not the protocol.
    Garbled,
    /// It took longer than `flows.prelude.timeout`.
    TimedOut,
}

impl NoTls {
    /// The words in an event's reason.
    pub fn describe(self) -> &'static str {
        match self {
            NoTls::Refused => "the server refused to start TLS",
            NoTls::Plaintext => "the client went on in cleartext",
            NoTls::TooLong => "it exceeds flows.prelude's limits",
            NoTls::Garbled => "the bytes are not that protocol",
            NoTls::TimedOut => "it took longer than flows.prelude.timeout",
        }
    }
}

/// What [`Prelude::read`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing decided yet: more bytes are needed (from either side).
    Wait,
    /// TLS starts right after the bytes consumed so far, on both sides.
    Tls,
    /// The client's first bytes are TLS already: no prelude (implicit TLS).
    Direct,
    /// No TLS follows.
    NoTls(NoTls),
}

/// Where a prelude stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the client asked for TLS.
    Talking,
    /// The client asked; the server's answer is awaited. For PostgreSQL, the
    /// request was for GSSAPI encryption (the client may ask for TLS after a
    /// refusal).
    Asked { gss: bool },
}

/// One connection's prelude.
#[derive(Debug)]
pub struct Prelude {
    protocol: PreludeProtocol,
    limits: PreludeLimits,
    state: State,
    /// Bytes consumed per side (client, server).
    used: [usize; 2],
    exchanges: u32,
    /// Nothing read from the client yet.
    client_fresh: bool,
    /// IMAP: the tag of the STARTTLS command; LDAP: its message id.
    tag: Vec<u8>,
    /// HTTP CONNECT: the target asked for; bytes of a refusal's body to skip.
    target: Option<String>,
    skip_body: usize,
}

/// StartTLS's OID, as LDAP carries it (an OCTET STRING of the dotted form).
const LDAP_STARTTLS: &[u8] = b"1.3.6.1.4.1.1466.20037";
/// PostgreSQL's SSLRequest and GSSENCRequest (length 8, then the request code).
const PG_SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const PG_GSS_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

impl Prelude {
    /// A prelude of `protocol`.
    pub fn new(protocol: PreludeProtocol, limits: PreludeLimits) -> Prelude {
        Prelude {
            protocol,
            limits,
            state: State::Talking,
            used: [0, 0],
            exchanges: 0,
            client_fresh: true,
            tag: Vec::new(),
            target: None,
            skip_body: 0,
        }
    }

    /// The protocol.
    pub fn protocol(&self) -> PreludeProtocol {
        self.protocol
    }

    /// The target of an HTTP CONNECT (`host:port`), once read.
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }

    /// Reads `data` (the contiguous bytes `from` has sent that are not
    /// consumed yet): returns the bytes it consumed and what it found.
    pub fn read(&mut self, from: Direction, data: &[u8]) -> (usize, Found) {
        let side = usize::from(from == Direction::ToClient);
        if from == Direction::ToServer && self.client_fresh && !data.is_empty() {
            self.client_fresh = false;
            // A TLS record or an SSLv2 hello before the server said anything:
            // TLS without a prelude (implicit TLS on this port).
            if self.used[1] == 0 && (data[0] == 0x16 || data[0] & 0x80 != 0) {
                return (0, Found::Direct);
            }
        }
        let mut at = 0;
        loop {
            let rest = &data[at..];
            let (n, found) = match from {
                Direction::ToServer => self.client_unit(rest),
                Direction::ToClient => self.server_unit(rest),
            };
            at += n;
            self.used[side] += n;
            if self.used[side] > self.limits.max_bytes || self.exchanges > self.limits.max_exchanges {
                return (at, Found::NoTls(NoTls::TooLong));
            }
            match found {
                Some(Found::Wait) => return (at, Found::Wait),
                Some(f) => return (at, f),
                None if n == 0 => {
                    // An incomplete unit: waits, unless it can never fit.
                    if self.used[side] + rest.len() > self.limits.max_bytes {
                        return (at, Found::NoTls(NoTls::TooLong));
                    }
                    return (at, Found::Wait);
                }
                None => {}
            }
        }
    }

    /// One unit (line, message) from the client: bytes consumed (0: it is
    /// incomplete, or the client must wait for the server), and what it means.
    fn client_unit(&mut self, data: &[u8]) -> (usize, Option<Found>) {
        use PreludeProtocol as P;
        if let State::Asked { .. } = self.state {
            // The client waits for the answer; its next bytes are TLS (or
            // pipelined, which the server must refuse to act on).
            return (0, Some(Found::Wait));
        }
        match self.protocol {
            P::Smtp | P::Imap | P::Pop3 | P::Ftp | P::Irc => {
                let Some(line) = line(data) else { return (0, None) };
                self.exchanges += 1;
                let words: Vec<&[u8]> = trimmed(line).split(|b| *b == b' ').filter(|w| !w.is_empty()).collect();
                let is = |w: Option<&&[u8]>, what: &str| w.is_some_and(|w| w.eq_ignore_ascii_case(what.as_bytes()));
                let asks = match self.protocol {
                    P::Smtp | P::Irc => is(words.first(), "STARTTLS"),
                    P::Pop3 => is(words.first(), "STLS"),
                    P::Ftp => {
                        is(words.first(), "AUTH")
                            && (is(words.get(1), "TLS") || is(words.get(1), "SSL") || is(words.get(1), "TLS-C"))
                    }
                    _ => {
                        let asks = is(words.get(1), "STARTTLS");
                        if asks {
                            self.tag = words[0].to_vec();
                        }
                        asks
                    }
                };
                if asks {
                    self.state = State::Asked { gss: false };
                }
                (line.len(), None)
            }
            P::Xmpp => match element(data, b"<starttls") {
                Some(end) => {
                    self.exchanges += 1;
                    self.state = State::Asked { gss: false };
                    (end, None)
                }
                // Stream headers and the rest are consumed as they come, up to a tag's start.
                None => (consumable_xml(data), None),
            },
            P::Ldap => {
                let Some(len) = ber_length(data) else {
                    return (
                        0,
                        if data.first().is_some_and(|b| *b != 0x30) {
                            Some(Found::NoTls(NoTls::Garbled))
                        } else {
                            None
                        },
                    );
                };
                let msg = &data[..len];
                self.exchanges += 1;
                // LDAPMessage { messageID, [APPLICATION 23] ExtendedRequest { [0] requestName } }
                if let Some((id, op)) = ldap_message(msg) {
                    if op.first() == Some(&0x77) && contains(op, LDAP_STARTTLS) {
                        self.tag = id.to_vec();
                        self.state = State::Asked { gss: false };
                    }
                }
                (len, None)
            }
            P::Postgres => {
                let Some(request) = data.get(..8) else { return (0, None) };
                self.exchanges += 1;
                if request == PG_SSL_REQUEST {
                    self.state = State::Asked { gss: false };
                    (8, None)
                } else if request == PG_GSS_REQUEST {
                    self.state = State::Asked { gss: true };
                    (8, None)
                } else {
                    // A StartupMessage: the session goes on in cleartext.
                    (0, Some(Found::NoTls(NoTls::Plaintext)))
                }
            }
            P::HttpConnect => {
                let Some(end) = header_end(data) else { return (0, None) };
                self.exchanges += 1;
                let head = &data[..end];
                let first = line(head).map(trimmed).unwrap_or_default();
                let mut words = first.split(|b| *b == b' ');
                if words.next() != Some(b"CONNECT".as_slice()) {
                    return (0, Some(Found::NoTls(NoTls::Plaintext)));
                }
                self.target = words.next().map(|t| String::from_utf8_lossy(t).into_owned());
                self.state = State::Asked { gss: false };
                (end, None)
            }
        }
    }

    /// One unit from the server.
    fn server_unit(&mut self, data: &[u8]) -> (usize, Option<Found>) {
        use PreludeProtocol as P;
        let asked = matches!(self.state, State::Asked { .. });
        match self.protocol {
            P::Smtp | P::Ftp => {
                let Some(line) = line(data) else { return (0, None) };
                let t = trimmed(line);
                // "250-..." goes on; "250 ..." (or "250") ends a reply.
                let last = t.len() < 4 || t[3] == b' ';
                if !asked || !last {
                    return (line.len(), None);
                }
                let ok = if self.protocol == P::Smtp { t.starts_with(b"220") } else { t.starts_with(b"234") };
                (line.len(), Some(if ok { Found::Tls } else { Found::NoTls(NoTls::Refused) }))
            }
            P::Pop3 => {
                let Some(line) = line(data) else { return (0, None) };
                if !asked {
                    return (line.len(), None);
                }
                let ok = line.starts_with(b"+OK");
                (line.len(), Some(if ok { Found::Tls } else { Found::NoTls(NoTls::Refused) }))
            }
            P::Imap => {
                let Some(line) = line(data) else { return (0, None) };
                let mut words = trimmed(line).split(|b| *b == b' ');
                if !asked || words.next() != Some(self.tag.as_slice()) {
                    // Untagged responses, continuations, other commands' answers.
                    return (line.len(), None);
                }
                let ok = words.next().is_some_and(|w| w.eq_ignore_ascii_case(b"OK"));
                (line.len(), Some(if ok { Found::Tls } else { Found::NoTls(NoTls::Refused) }))
            }
            P::Irc => {
                let Some(line) = line(data) else { return (0, None) };
                // ":server 670 nick :STARTTLS successful" / 691 failed.
                let numeric = trimmed(line).split(|b| *b == b' ').nth(1).unwrap_or_default();
                match (asked, numeric) {
                    (true, b"670") => (line.len(), Some(Found::Tls)),
                    (true, b"691") => (line.len(), Some(Found::NoTls(NoTls::Refused))),
                    _ => (line.len(), None),
                }
            }
            P::Xmpp => {
                if asked {
                    if let Some(end) = element(data, b"<proceed") {
                        return (end, Some(Found::Tls));
                    }
                    if let Some(end) = element(data, b"<failure") {
                        return (end, Some(Found::NoTls(NoTls::Refused)));
                    }
                }
                (consumable_xml(data), None)
            }
            P::Ldap => {
                let Some(len) = ber_length(data) else { return (0, None) };
                let msg = &data[..len];
                if asked {
                    // [APPLICATION 24] ExtendedResponse { resultCode ENUMERATED, ... } to our message id.
                    if let Some((id, op)) = ldap_message(msg) {
                        if id == self.tag.as_slice() && op.first() == Some(&0x78) {
                            let code = ber_inner(op).and_then(|inner| match inner {
                                [0x0a, 1, code, ..] => Some(*code),
                                _ => None,
                            });
                            let found = if code == Some(0) { Found::Tls } else { Found::NoTls(NoTls::Refused) };
                            return (len, Some(found));
                        }
                    }
                }
                (len, None)
            }
            P::Postgres => {
                let Some(&answer) = data.first() else { return (0, None) };
                match (self.state, answer) {
                    (State::Asked { gss: false }, b'S') => (1, Some(Found::Tls)),
                    (State::Asked { gss: false }, b'N') => (1, Some(Found::NoTls(NoTls::Refused))),
                    // GSSAPI refused: the client may ask for TLS next.
                    (State::Asked { gss: true }, b'N') => {
                        self.state = State::Talking;
                        (1, None)
                    }
                    (State::Asked { gss: true }, b'G') => (1, Some(Found::NoTls(NoTls::Plaintext))),
                    _ => (0, Some(Found::NoTls(NoTls::Garbled))),
                }
            }
            P::HttpConnect => {
                if self.skip_body > 0 {
                    let n = self.skip_body.min(data.len());
                    self.skip_body -= n;
                    return (n, None);
                }
                let Some(end) = header_end(data) else { return (0, None) };
                let head = &data[..end];
                let status = line(head).map(trimmed).unwrap_or_default().split(|b| *b == b' ').nth(1);
                let status = status.unwrap_or_default();
                if !asked {
                    return (0, Some(Found::NoTls(NoTls::Garbled)));
                }
                if status.first() == Some(&b'2') {
                    return (end, Some(Found::Tls));
                }
                // Refused (407 asks for credentials): the client may try again
                // on the same connection, after the answer's body.
                self.skip_body = content_length(head);
                self.state = State::Talking;
                if header_says_close(head) {
                    return (end, Some(Found::NoTls(NoTls::Refused)));
                }
                (end, None)
            }
        }
    }
}

/// The first line of `data` with its `\n`, if complete.
fn line(data: &[u8]) -> Option<&[u8]> {
    data.iter().position(|b| *b == b'\n').map(|i| &data[..=i])
}

/// A line without its line ending.
fn trimmed(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let [rest @ .., b'\r' | b'\n'] = l {
        l = rest;
    }
    l
}

/// The end of an HTTP header block (after the blank line), if complete.
fn header_end(data: &[u8]) -> Option<usize> {
    data.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn header(head: &[u8], name: &str) -> Option<Vec<u8>> {
    head.split(|b| *b == b'\n').skip(1).find_map(|l| {
        let l = trimmed(l);
        let colon = l.iter().position(|b| *b == b':')?;
        l[..colon].eq_ignore_ascii_case(name.as_bytes()).then(|| l[colon + 1..].trim_ascii().to_vec())
    })
}

fn content_length(head: &[u8]) -> usize {
    header(head, "content-length").and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()).unwrap_or(0)
}

fn header_says_close(head: &[u8]) -> bool {
    header(head, "connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The end of the first `tag` element in `data` (its start tag if it closes
/// itself, else through its end tag), if complete.
fn element(data: &[u8], tag: &[u8]) -> Option<usize> {
    let start = data.windows(tag.len()).position(|w| w == tag)?;
    let close = start + data[start..].iter().position(|b| *b == b'>')?;
    if data[close - 1] == b'/' {
        return Some(close + 1);
    }
    let name = &tag[1..];
    let mut end_tag = b"</".to_vec();
    end_tag.extend_from_slice(name);
    let end = close + data[close..].windows(end_tag.len()).position(|w| w == end_tag.as_slice())?;
    Some(end + data[end..].iter().position(|b| *b == b'>')? + 1)
}

/// XML bytes that can be consumed without cutting into a tag that may turn
/// out to be the one looked for: everything before the last `<`, or all of
/// it when it holds no `<`.
fn consumable_xml(data: &[u8]) -> usize {
    match data.iter().rposition(|b| *b == b'<') {
        Some(i) => i,
        None => data.len(),
    }
}

/// The length of the BER element `data` starts with (header included), if complete.
fn ber_length(data: &[u8]) -> Option<usize> {
    let (header, len) = ber_header(data)?;
    let total = header.checked_add(len)?;
    (data.len() >= total).then_some(total)
}

/// (header length, content length) of the BER element `data` starts with.
fn ber_header(data: &[u8]) -> Option<(usize, usize)> {
    let first = *data.get(1)?;
    if first & 0x80 == 0 {
        return Some((2, usize::from(first)));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let len = data.get(2..2 + n)?.iter().fold(0usize, |a, b| a << 8 | usize::from(*b));
    Some((2 + n, len))
}

/// The content of the BER element `data` starts with.
fn ber_inner(data: &[u8]) -> Option<&[u8]> {
    let (header, len) = ber_header(data)?;
    data.get(header..header.checked_add(len)?)
}

/// An LDAPMessage's message id (its INTEGER's bytes) and protocol operation (the element after it).
fn ldap_message(msg: &[u8]) -> Option<(&[u8], &[u8])> {
    let body = ber_inner(msg)?;
    if body.first() != Some(&0x02) {
        return None;
    }
    let id = ber_inner(body)?;
    let (h, l) = ber_header(body)?;
    Some((id, body.get(h + l..)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{ToClient as S, ToServer as C};

    /// Plays a conversation (who, bytes) and returns what each step found,
    /// with the bytes the prelude left unconsumed on each side.
    fn play(protocol: PreludeProtocol, talk: &[(Direction, &[u8])]) -> (Found, Vec<u8>, Vec<u8>) {
        let mut p = Prelude::new(protocol, PreludeLimits::default());
        let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        for (dir, bytes) in talk {
            let side = usize::from(*dir == S);
            pending[side].extend_from_slice(bytes);
            let (n, found) = p.read(*dir, &pending[side]);
            pending[side].drain(..n);
            if found != Found::Wait {
                let [c, s] = pending;
                return (found, c, s);
            }
            // The other side may have waited for this one.
            let other = 1 - side;
            let odir = if other == 0 { C } else { S };
            let (n, found) = p.read(odir, &pending[other]);
            pending[other].drain(..n);
            if found != Found::Wait {
                let [c, s] = pending;
                return (found, c, s);
            }
        }
        let [c, s] = pending;
        (Found::Wait, c, s)
    }

    const CH: &[u8] = &[0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0];

    #[test]
    fn smtp_starttls_and_a_pipelined_client_hello() {
        let (f, c, s) = play(
            PreludeProtocol::Smtp,
            &[
                (S, b"220 mail.example ESMTP\r\n"),
                (C, b"EHLO client\r\n"),
                (S, b"250-mail.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n"),
                (C, b"STARTTLS\r\n"),
                (S, b"220 2.0.0 Ready to start TLS\r\n"),
            ],
        );
        assert_eq!((f, c.len(), s.len()), (Found::Tls, 0, 0));
        // The ClientHello right behind the command stays unconsumed: it is TLS.
        let mut talk: Vec<(Direction, &[u8])> = vec![(S, b"220 hi\r\n"), (C, b"ehlo x\r\n"), (S, b"250 ok\r\n")];
        let pipelined = [b"STARTTLS\r\n".as_slice(), CH].concat();
        talk.push((C, &pipelined));
        talk.push((S, b"220 go ahead\r\n"));
        let (f, c, _) = play(PreludeProtocol::Smtp, &talk);
        assert_eq!((f, c.as_slice()), (Found::Tls, CH));
        let (f, ..) = play(
            PreludeProtocol::Smtp,
            &[(S, b"220 hi\r\n"), (C, b"STARTTLS\r\n"), (S, b"454 4.7.0 TLS not available\r\n")],
        );
        assert_eq!(f, Found::NoTls(NoTls::Refused));
    }

    #[test]
    fn imap_pop3_ftp_irc() {
        let (f, ..) = play(
            PreludeProtocol::Imap,
            &[
                (S, b"* OK IMAP4rev1 ready\r\n"),
                (C, b"a1 CAPABILITY\r\n"),
                (S, b"* CAPABILITY IMAP4rev1 STARTTLS\r\na1 OK done\r\n"),
                (C, b"a2 STARTTLS\r\n"),
                (S, b"* OK still here\r\na2 OK Begin TLS negotiation now\r\n"),
            ],
        );
        assert_eq!(f, Found::Tls);
        let (f, ..) = play(PreludeProtocol::Imap, &[(C, b"x STARTTLS\r\n"), (S, b"x BAD no\r\n")]);
        assert_eq!(f, Found::NoTls(NoTls::Refused));
        let (f, ..) = play(PreludeProtocol::Pop3, &[(S, b"+OK POP3\r\n"), (C, b"STLS\r\n"), (S, b"+OK Begin TLS\r\n")]);
        assert_eq!(f, Found::Tls);
        let (f, ..) = play(
            PreludeProtocol::Ftp,
            &[(S, b"220-Welcome\r\n220 FTP ready\r\n"), (C, b"AUTH TLS\r\n"), (S, b"234 AUTH TLS OK.\r\n")],
        );
        assert_eq!(f, Found::Tls);
        let (f, ..) = play(
            PreludeProtocol::Irc,
            &[
                (C, b"STARTTLS\r\n"),
                (S, b":irc.example NOTICE * :*** Looking up your hostname\r\n"),
                (S, b":irc.example 670 * :STARTTLS successful, go ahead with TLS handshake\r\n"),
            ],
        );
        assert_eq!(f, Found::Tls);
    }

    #[test]
    fn xmpp_ldap_postgres() {
        let (f, ..) = play(
            PreludeProtocol::Xmpp,
            &[
                (C, b"<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client' version='1.0'>"),
                (S, b"<?xml version='1.0'?><stream:stream from='example.com' id='x' version='1.0'>"),
                (S, b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"),
                (C, b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
                (S, b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
            ],
        );
        assert_eq!(f, Found::Tls);
        // LDAP: ExtendedRequest (id 1) with the StartTLS OID; ExtendedResponse success.
        let mut req = vec![0x30, 0x1d, 0x02, 0x01, 0x01, 0x77, 0x18, 0x80, 0x16];
        req.extend_from_slice(LDAP_STARTTLS);
        let resp = [0x30, 0x0c, 0x02, 0x01, 0x01, 0x78, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00];
        let (f, ..) = play(PreludeProtocol::Ldap, &[(C, &req), (S, &resp)]);
        assert_eq!(f, Found::Tls);
        let mut refused = resp;
        refused[9] = 2; // protocolError
        assert_eq!(play(PreludeProtocol::Ldap, &[(C, &req), (S, &refused)]).0, Found::NoTls(NoTls::Refused));
        // PostgreSQL: GSSAPI refused, then SSL accepted (what libpq does).
        let (f, ..) =
            play(PreludeProtocol::Postgres, &[(C, &PG_GSS_REQUEST), (S, b"N"), (C, &PG_SSL_REQUEST), (S, b"S")]);
        assert_eq!(f, Found::Tls);
        assert_eq!(play(PreludeProtocol::Postgres, &[(C, &PG_SSL_REQUEST), (S, b"N")]).0, Found::NoTls(NoTls::Refused));
        // A direct TLS ClientHello (PostgreSQL 17's sslnegotiation=direct): no prelude.
        assert_eq!(play(PreludeProtocol::Postgres, &[(C, CH)]).0, Found::Direct);
    }

    #[test]
    fn http_connect_with_a_refusal_first() {
        let (f, c, _) = play(
            PreludeProtocol::HttpConnect,
            &[
                (C, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
                (S, b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 5\r\n\r\nnope!"),
                (C, b"CONNECT example.com:443 HTTP/1.1\r\nProxy-Authorization: Basic eDp5\r\n\r\n"),
                (S, b"HTTP/1.1 200 Connection established\r\n\r\n"),
                (C, CH),
            ],
        );
        assert_eq!((f, c.len()), (Found::Tls, 0));
        let mut p = Prelude::new(PreludeProtocol::HttpConnect, PreludeLimits::default());
        assert_eq!(p.read(C, b"CONNECT a.test:8443 HTTP/1.1\r\n\r\n").1, Found::Wait);
        assert_eq!(p.target(), Some("a.test:8443"));
        let (f, ..) = play(
            PreludeProtocol::HttpConnect,
            &[(C, b"CONNECT x:1 HTTP/1.1\r\n\r\n"), (S, b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n")],
        );
        assert_eq!(f, Found::NoTls(NoTls::Refused));
    }

    #[test]
    fn endless_and_odd_preludes_are_bounded() {
        let mut p = Prelude::new(PreludeProtocol::Smtp, PreludeLimits { max_bytes: 1024, max_exchanges: 4 });
        let mut found = Found::Wait;
        for _ in 0..10 {
            found = p.read(C, b"NOOP\r\n").1;
            if found != Found::Wait {
                break;
            }
        }
        assert_eq!(found, Found::NoTls(NoTls::TooLong));
        // A line that never ends.
        let mut p = Prelude::new(PreludeProtocol::Imap, PreludeLimits { max_bytes: 1024, max_exchanges: 4 });
        assert_eq!(p.read(S, &[b'x'; 2000]).1, Found::NoTls(NoTls::TooLong));
        // Garbage of every kind never panics.
        let mut x: u32 = 7;
        for protocol in [
            PreludeProtocol::Smtp,
            PreludeProtocol::Imap,
            PreludeProtocol::Pop3,
            PreludeProtocol::Ftp,
            PreludeProtocol::Xmpp,
            PreludeProtocol::Ldap,
            PreludeProtocol::Postgres,
            PreludeProtocol::Irc,
            PreludeProtocol::HttpConnect,
        ] {
            for _ in 0..300 {
                let mut p = Prelude::new(protocol, PreludeLimits { max_bytes: 512, max_exchanges: 8 });
                let bytes: Vec<u8> = (0..64)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        [b'\r', b'\n', b'<', b'>', b'/', 0x30, 0x84, b' ', b'2'][(x % 9) as usize]
                    })
                    .collect();
                let dir = if x.is_multiple_of(2) { C } else { S };
                let (n, _) = p.read(dir, &bytes);
                assert!(n <= bytes.len());
            }
        }
    }
}
