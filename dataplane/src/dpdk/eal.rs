//! The Environment Abstraction Layer: one per process, initialised from an
//! argument list and cleaned up on drop.

use std::ffi::{c_char, c_int, CString};
use std::sync::atomic::{AtomicBool, Ordering};

static EAL_STARTED: AtomicBool = AtomicBool::new(false);

/// Why the EAL did not start.
#[derive(Debug, thiserror::Error)]
pub enum EalError {
    /// `rte_eal_init` was already called in this process; DPDK allows it once.
    #[error("the DPDK EAL is already initialised in this process (DPDK allows one EAL per process)")]
    AlreadyStarted,
    /// An argument contained a NUL byte.
    #[error("EAL argument {0:?} contains a NUL byte")]
    BadArgument(String),
    /// `rte_eal_init` failed.
    #[error("DPDK EAL initialisation failed ({reason}); {hint}")]
    Init {
        /// DPDK's own error text.
        reason: String,
        /// What the operator can try.
        hint: &'static str,
    },
}

/// The running EAL. Dropping it calls `rte_eal_cleanup`.
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Starts the EAL with `args` (without the program name, which is added).
    /// DPDK's log goes to stderr, so that stdout carries only tlsgate's output.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, EalError> {
        if EAL_STARTED.swap(true, Ordering::SeqCst) {
            return Err(EalError::AlreadyStarted);
        }
        let mut owned = vec![CString::new("tlsgate").expect("literal has no NUL")];
        for a in args {
            let a = a.as_ref();
            owned.push(CString::new(a).map_err(|_| EalError::BadArgument(a.to_owned()))?);
        }
        let mut argv: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        argv.push(std::ptr::null_mut());
        log_to_stderr();
        // SAFETY: argv is a NULL-terminated array of pointers to NUL-terminated
        // strings that outlive the call (`owned`); the EAL may permute argv's
        // entries, which only reorders our own pointer vector.
        let rc = unsafe { dpdk_sys::rte_eal_init((argv.len() - 1) as c_int, argv.as_mut_ptr()) };
        if rc < 0 {
            let (code, reason) = super::errno_text();
            return Err(EalError::Init { reason, hint: hint_for(code, args) });
        }
        Ok(Eal { _private: () })
    }

    /// The main lcore (the one that called `init`).
    pub fn main_lcore(&self) -> u32 {
        // SAFETY: the EAL is initialised (self exists).
        unsafe { dpdk_sys::rte_get_main_lcore() }
    }

    /// Whether `lcore` was enabled by the EAL's lcore arguments.
    pub fn lcore_enabled(&self, lcore: u32) -> bool {
        if lcore >= dpdk_sys::RTE_MAX_LCORE {
            return false;
        }
        // SAFETY: the EAL is initialised and lcore is in range.
        unsafe { dpdk_sys::rte_lcore_is_enabled(lcore) != 0 }
    }

    /// Number of ethernet ports the EAL found (PCI devices and vdevs).
    pub fn port_count(&self) -> u16 {
        // SAFETY: the EAL is initialised.
        unsafe { dpdk_sys::rte_eth_dev_count_avail() }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: called once, after every lcore has returned (the runtime waits
        // for its workers before it drops the Eal).
        unsafe {
            dpdk_sys::rte_eal_cleanup();
        }
    }
}

/// Sends DPDK's log to stderr instead of its default (stdout and syslog).
fn log_to_stderr() {
    extern "C" {
        fn fdopen(fd: c_int, mode: *const c_char) -> *mut dpdk_sys::FILE;
    }
    // SAFETY: fd 2 is open for the process's lifetime; the FILE is never closed.
    let f = unsafe { fdopen(2, c"w".as_ptr()) };
    if !f.is_null() {
        // SAFETY: f is a valid FILE*; rte_openlog_stream may be called before init.
        unsafe {
            dpdk_sys::rte_openlog_stream(f);
        }
    }
}

fn hint_for<S: AsRef<str>>(code: i32, args: &[S]) -> &'static str {
    let has = |p: &str| args.iter().any(|a| a.as_ref().starts_with(p));
    match code {
        libc_enomem if libc_enomem == 12 && !has("--no-huge") => {
            "no hugepages: reserve some (echo 1024 > /proc/sys/vm/nr_hugepages) or add --no-huge to [eal] args"
        }
        12 => "out of memory: lower [mempool] mbufs or give --socket-mem / -m more memory",
        13 => "permission denied: run as root (DPDK needs access to hugepages and devices)",
        19 | 2 => "a --vdev or -a device was not found: check the driver name (net_null, net_pcap, net_ring, net_af_packet, net_tap) and its arguments",
        22 => "an EAL argument is invalid: check [eal] args (see `dpdk-testpmd --help` for the EAL options)",
        114 | 17 => "another DPDK process may be running: add --in-memory or a distinct --file-prefix",
        _ => "check [eal] args; run with --log-level=eal:debug for DPDK's own account",
    }
}
