//! The policy's action vocabulary: what a rule does with a session, what a
//! session gets when it is not decrypted, and why a session cannot be
//! decrypted; each with the name the policy file and the events use.

/// What a session finally gets when no decryption happens: the default action
/// and the undecryptable actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FinalAction {
    /// Forward the flow untouched.
    DoNotDecrypt,
    /// Drop the flow's packets.
    Block,
    /// Drop, and reset both ends.
    BlockWithReset,
}

impl FinalAction {
    /// Every final action, in the order the policy file's messages list them.
    const ALL: [FinalAction; 3] = [FinalAction::DoNotDecrypt, FinalAction::Block, FinalAction::BlockWithReset];

    /// The name in the policy file and in events.
    pub fn name(self) -> &'static str {
        match self {
            FinalAction::DoNotDecrypt => "do-not-decrypt",
            FinalAction::Block => "block",
            FinalAction::BlockWithReset => "block-with-reset",
        }
    }

    /// The final action named `name` (as [`FinalAction::name`] spells it).
    pub fn from_name(name: &str) -> Option<FinalAction> {
        FinalAction::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// A rule's action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Log the session and go on with later rules (never final).
    Monitor,
    /// Forward the flow untouched.
    DoNotDecrypt,
    /// Drop the flow's packets.
    Block,
    /// Drop, and reset both ends.
    BlockWithReset,
    /// Terminate TLS with an imported server certificate and key, or (passive)
    /// read it with the key while the flow passes untouched.
    DecryptKnownKey {
        /// Index into [`Policy::known_keys`](super::Policy::known_keys).
        known_key: usize,
        /// `mode = "passive"`: never taken over; RSA key exchange is read with the key.
        passive: bool,
    },
    /// Terminate TLS with a copy of the server certificate re-signed by a CA.
    DecryptResign {
        /// Index into [`Policy::cas`](super::Policy::cas).
        ca: usize,
    },
}

impl Action {
    /// Every action's name, in the order the policy file's messages list them.
    pub(super) const NAMES: [&'static str; 6] =
        ["monitor", "do-not-decrypt", "block", "block-with-reset", "decrypt-known-key", "decrypt-resign"];

    /// The name in the policy file and in events.
    pub fn name(self) -> &'static str {
        match self {
            Action::Monitor => "monitor",
            Action::DoNotDecrypt => "do-not-decrypt",
            Action::Block => "block",
            Action::BlockWithReset => "block-with-reset",
            Action::DecryptKnownKey { .. } => "decrypt-known-key",
            Action::DecryptResign { .. } => "decrypt-resign",
        }
    }

    /// Whether the action terminates TLS and decrypts the session
    /// (`decrypt-known-key` or `decrypt-resign`).
    pub fn is_decrypt(self) -> bool {
        matches!(self, Action::DecryptKnownKey { .. } | Action::DecryptResign { .. })
    }

    /// A decrypt action that reads the session without taking it over.
    pub fn is_passive(self) -> bool {
        matches!(self, Action::DecryptKnownKey { passive: true, .. })
    }
}

impl From<FinalAction> for Action {
    fn from(a: FinalAction) -> Action {
        match a {
            FinalAction::DoNotDecrypt => Action::DoNotDecrypt,
            FinalAction::Block => Action::Block,
            FinalAction::BlockWithReset => Action::BlockWithReset,
        }
    }
}

/// Why a session cannot be decrypted; each reason has its own configured action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Undecryptable {
    /// The client spoke SSL 2.0.
    Sslv2,
    /// The session uses TLS compression.
    Compressed,
    /// The negotiated cipher suite is not known.
    UnknownCipher,
    /// The cipher suite is known but cannot be decrypted.
    UnsupportedCipher,
    /// A resumed session whose keys were never seen.
    SessionNotCached,
    /// The handshake failed.
    HandshakeError,
    /// Decrypting the traffic failed.
    DecryptionError,
    /// The server asked for a client certificate.
    ClientAuth,
    /// The session runs over QUIC, which the decrypting path does not take
    /// over (default `block`: the client falls back to TCP, where it can be).
    Quic,
    /// The client offered Encrypted Client Hello and aborted (alert
    /// `ech_required`) when the re-signed session did not accept it: its
    /// real server name is sealed to the server's ECH key.
    Ech,
    /// A passive `decrypt-known-key` rule matched a session that cannot be
    /// read without taking it over: (EC)DHE key exchange, TLS 1.3, a cipher
    /// suite passive decryption does not know, or another certificate than the key's.
    NotPassivelyDecryptable,
}

impl Undecryptable {
    /// Every reason, in the policy file's order.
    pub const ALL: [Undecryptable; 11] = [
        Undecryptable::Sslv2,
        Undecryptable::Compressed,
        Undecryptable::UnknownCipher,
        Undecryptable::UnsupportedCipher,
        Undecryptable::SessionNotCached,
        Undecryptable::HandshakeError,
        Undecryptable::DecryptionError,
        Undecryptable::ClientAuth,
        Undecryptable::Quic,
        Undecryptable::Ech,
        Undecryptable::NotPassivelyDecryptable,
    ];

    /// The key in `[policy.undecryptable]` and the reason in events.
    pub fn name(self) -> &'static str {
        match self {
            Undecryptable::Sslv2 => "sslv2",
            Undecryptable::Compressed => "compressed",
            Undecryptable::UnknownCipher => "unknown_cipher",
            Undecryptable::UnsupportedCipher => "unsupported_cipher",
            Undecryptable::SessionNotCached => "session_not_cached",
            Undecryptable::HandshakeError => "handshake_error",
            Undecryptable::DecryptionError => "decryption_error",
            Undecryptable::ClientAuth => "client_auth",
            Undecryptable::Quic => "quic",
            Undecryptable::Ech => "ech",
            Undecryptable::NotPassivelyDecryptable => "not_passively_decryptable",
        }
    }

    /// The reason named `name` (as [`Undecryptable::name`] spells it).
    pub fn from_name(name: &str) -> Option<Undecryptable> {
        Undecryptable::ALL.into_iter().find(|u| u.name() == name)
    }

    /// The event reason code: `undecryptable_` followed by [`Undecryptable::name`]
    /// (`undecryptable_client_auth`). Stable: event consumers match on it.
    pub fn code(self) -> &'static str {
        match self {
            Undecryptable::Sslv2 => "undecryptable_sslv2",
            Undecryptable::Compressed => "undecryptable_compressed",
            Undecryptable::UnknownCipher => "undecryptable_unknown_cipher",
            Undecryptable::UnsupportedCipher => "undecryptable_unsupported_cipher",
            Undecryptable::SessionNotCached => "undecryptable_session_not_cached",
            Undecryptable::HandshakeError => "undecryptable_handshake_error",
            Undecryptable::DecryptionError => "undecryptable_decryption_error",
            Undecryptable::ClientAuth => "undecryptable_client_auth",
            Undecryptable::Quic => "undecryptable_quic",
            Undecryptable::Ech => "undecryptable_ech",
            Undecryptable::NotPassivelyDecryptable => "undecryptable_not_passively_decryptable",
        }
    }

    /// The reason's position in [`Undecryptable::ALL`].
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// A rule as listed: its name, action and whether it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    /// The rule's name (unique in the policy).
    pub name: String,
    /// Its action.
    pub action: Action,
    /// False: the rule is skipped.
    pub enabled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_go_both_ways() {
        for a in FinalAction::ALL {
            assert_eq!(FinalAction::from_name(a.name()), Some(a));
            assert_eq!(Action::from(a).name(), a.name());
        }
        assert_eq!(FinalAction::from_name("inherit"), None);
        for (i, u) in Undecryptable::ALL.into_iter().enumerate() {
            assert_eq!(u.index(), i);
            assert_eq!(Undecryptable::from_name(u.name()), Some(u));
            assert_eq!(u.code(), format!("undecryptable_{}", u.name()));
        }
        assert_eq!(Undecryptable::from_name("undecryptable_sslv2"), None);
        assert_eq!(Undecryptable::ClientAuth.code(), "undecryptable_client_auth");
    }

    #[test]
    fn action_names_and_decrypt() {
        let all = [
            Action::Monitor,
            Action::DoNotDecrypt,
            Action::Block,
            Action::BlockWithReset,
            Action::DecryptKnownKey { known_key: 0, passive: false },
            Action::DecryptResign { ca: 0 },
        ];
        assert_eq!(all.map(Action::name), Action::NAMES);
        assert_eq!(all.map(Action::is_decrypt), [false, false, false, false, true, true]);
    }
}
