//! tlsgate's interception path, on dedicated slow-path lcores: taking over
//! both TCP connections of a flow mid-stream, rustls facing the client (with
//! a re-signed or the imported certificate) and facing the server, the
//! forged-certificate cache, passive known-key decryption, and plaintext
//! export.
//!
//! Not built yet: until it is, the fast path carries out decrypt decisions as
//! do-not-decrypt (or as their undecryptable action) and says so in the event.
#![forbid(unsafe_code)]
