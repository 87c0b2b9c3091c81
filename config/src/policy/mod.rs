//! The decryption policy: an ordered list of rules, each a set of conditions on
//! a session's [facts](crate::facts) and an action, plus the objects the rules
//! name (resigning CAs, imported server keys, certificates, the trust store).
//!
//! [`Policy::load`] reads and checks the TOML file (`file.rs`), loads the PEM
//! objects (`objects.rs`), and compiles the rules into bitset indexes
//! (`compile.rs`) so that [`Policy::evaluate`] (`eval.rs`) costs a few hash
//! look-ups and bitset ANDs per session however many rules there are.
//!
//! Evaluation is three-valued: a condition whose fact has not been seen yet is
//! unknown, and a decision that depends on it waits for the next phase.

mod compile;
mod eval;
mod file;
mod objects;

pub use compile::Policy;
pub use eval::{Decision, Evaluation};
pub use file::{Action, FinalAction, RuleInfo, Undecryptable};
pub use objects::{CaObject, KeyFormat, KnownKey, Trust};
