//! tlsgate's operator language: the appliance settings file (EAL arguments,
//! port pairs, worker lcores, pools and queues), the decryption policy, and the
//! [`facts`] a policy is evaluated against; loaded from TOML and validated with
//! errors that name the file, the line and the field. [`hex`](mod@hex) is the
//! workspace's one way of writing bytes as hex.
//!
//! This crate knows nothing of packets or DPDK.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod facts;
pub mod hex;
pub mod policy;
mod settings;

pub use error::ConfigError;
pub use hex::{colon_hex, hex};
pub use policy::{check_crl, Policy};
pub use settings::{
    Checksums, Conflicts, DnsSettings, EalSettings, EventSettings, FlowSettings, FragmentSettings, FragmentsWhenFull,
    HandshakeEvents, IdleMode, MempoolSettings, MetricsSettings, Midstream, MirrorSettings, NormalizeSettings,
    PinnedAction, PortPair, PreludeProtocol, PreludeSettings, QueueSettings, Settings, SlowPathSettings, SlowWhenFull,
    Unjudged, WhenFull, WorkerSettings,
};
