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
    /// Another DPDK process holds this one's runtime directory or telemetry socket.
    #[error("{0}")]
    InUse(String),
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
        if let Err(e) = preflight(args) {
            EAL_STARTED.store(false, Ordering::SeqCst);
            return Err(e);
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

    /// The CPUs an enabled `lcore` may run on (`--lcores` maps lcores to CPU
    /// sets; with `-l` each lcore runs on the CPU of its number).
    pub fn lcore_cpus(&self, lcore: u32) -> Vec<usize> {
        if !self.lcore_enabled(lcore) {
            return Vec::new();
        }
        let mut mask = [0u64; 16];
        // SAFETY: the EAL is initialised, lcore is enabled, and mask has room
        // for the 16 words the call is told of.
        unsafe { dpdk_sys::tg_lcore_cpus(lcore, mask.as_mut_ptr(), mask.len() as u32) };
        (0..mask.len() * 64).filter(|&c| mask[c / 64] & (1 << (c % 64)) != 0).collect()
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

/// The value of EAL option `name` (`--name=v` or `--name v`).
fn option<'a, S: AsRef<str>>(args: &'a [S], name: &str) -> Option<&'a str> {
    let mut it = args.iter().map(AsRef::as_ref);
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            return Some(v);
        }
        if a == name {
            return it.next();
        }
    }
    None
}

/// Where the EAL keeps its runtime files for these arguments (as
/// `eal_create_runtime_dir` picks it: /var/run/dpdk for root, else
/// $XDG_RUNTIME_DIR/dpdk or /tmp/dpdk; then the file prefix, "rte" by default).
pub fn runtime_dir<S: AsRef<str>>(args: &[S]) -> std::path::PathBuf {
    let prefix = option(args, "--file-prefix").unwrap_or("rte");
    // SAFETY: geteuid has no preconditions.
    let base = if unsafe { libc::geteuid() } == 0 {
        "/var/run".to_string()
    } else {
        std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into())
    };
    std::path::Path::new(&base).join("dpdk").join(prefix)
}

/// What stops an EAL with these arguments from starting beside another DPDK
/// process, found before DPDK is asked (which would say it in several lines
/// of its own and fail with no error code): the runtime directory's config
/// file locked by a live primary process (unless `--in-memory`), or its
/// telemetry socket answered by one (unless `--no-telemetry`).
pub fn preflight<S: AsRef<str>>(args: &[S]) -> Result<(), EalError> {
    let has = |f: &str| args.iter().any(|a| a.as_ref() == f);
    let dir = runtime_dir(args);
    let prefix = dir.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    if !has("--in-memory") {
        if let Some(pid) = config_locked_by(&dir.join("config")) {
            return Err(EalError::InUse(format!(
                "another DPDK process (pid {pid}) runs with file prefix {prefix:?} ({}): give this one its own \
                 --file-prefix in [eal] args, or add --in-memory",
                dir.display()
            )));
        }
    }
    let socket = dir.join("dpdk_telemetry.v2");
    if !has("--no-telemetry") && telemetry_answers(&socket) {
        return Err(EalError::InUse(format!(
            "the telemetry socket {} is in use by another DPDK process: give this one its own --file-prefix \
             in [eal] args, or add --no-telemetry",
            socket.display()
        )));
    }
    Ok(())
}

/// The pid of the process holding a write lock on `path`, if one does.
fn config_locked_by(path: &std::path::Path) -> Option<i32> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).ok()?;
    // SAFETY: flock is plain data; zeroed is a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: the fd is open for the call; F_GETLK only writes into `lock`.
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut lock) };
    (rc == 0 && lock.l_type != libc::F_UNLCK as libc::c_short).then_some(lock.l_pid)
}

/// Whether a process accepts connections on the (SOCK_SEQPACKET) telemetry socket at `path`.
fn telemetry_answers(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || !path.exists() {
        return false;
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain socket calls on a descriptor this function owns and closes.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return false;
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        let rc = libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len);
        libc::close(fd);
        rc == 0
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
