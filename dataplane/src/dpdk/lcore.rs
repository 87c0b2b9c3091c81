//! Lcores: launching a closure on a worker lcore, and the cheap per-lcore
//! primitives the packet loop needs (lcore id, TSC, pause).

use std::any::Any;
use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The calling thread's lcore id (`u32::MAX` on a non-EAL thread).
#[inline]
pub fn lcore_id() -> u32 {
    // SAFETY: reads a thread-local; no preconditions.
    unsafe { dpdk_sys::tg_lcore_id() }
}

/// The time-stamp counter.
#[inline]
pub fn tsc() -> u64 {
    // SAFETY: rdtsc has no preconditions.
    unsafe { dpdk_sys::tg_rdtsc() }
}

/// TSC ticks per second, as measured by the EAL.
pub fn tsc_hz() -> u64 {
    // SAFETY: valid after EAL init; before it returns 0, which callers treat as unknown.
    unsafe { dpdk_sys::rte_get_tsc_hz() }
}

/// A CPU pause hint for short spin-waits.
#[inline]
pub fn pause() {
    // SAFETY: the pause instruction has no preconditions.
    unsafe { dpdk_sys::tg_pause() }
}

/// Makes the calling thread's sleeps last what they ask for: its timer slack
/// (how late the kernel may wake it, 50 us by default) set to 1 us. An idle
/// lcore sleeps in steps of 10 us; with the default slack each would be 60.
pub fn precise_sleeps() {
    // SAFETY: PR_SET_TIMERSLACK takes a value and affects only the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }
}

/// Wall-clock time from the TSC: one `clock_gettime` at start, then cheap
/// reads. Workers and slow-path lcores keep time with it, so the TSvals the
/// workers see and the ones the slow path continues come from one kind of clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    tsc0: u64,
    unix0_ns: u64,
    ns_per_tick: f64,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        let unix0_ns =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Clock { tsc0: tsc(), unix0_ns, ns_per_tick: 1e9 / tsc_hz().max(1) as f64 }
    }

    /// Nanoseconds since the Unix epoch.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.unix0_ns + (tsc().wrapping_sub(self.tsc0) as f64 * self.ns_per_tick) as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Why a closure could not be launched on an lcore.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The lcore is busy, disabled or the main lcore.
    #[error("cannot launch on lcore {lcore}: {reason}")]
    Launch {
        /// The lcore.
        lcore: u32,
        /// DPDK's error text.
        reason: String,
    },
}

/// A closure running on a worker lcore; `wait` joins it.
pub struct LcoreHandle {
    lcore: u32,
    waited: bool,
}

type Job = Box<dyn FnOnce() -> i32 + Send + 'static>;

impl LcoreHandle {
    /// Runs `f` on worker lcore `lcore`. A panic inside `f` is caught at the
    /// lcore boundary and reported as exit code -1 (it never unwinds into C).
    pub fn launch<F>(lcore: u32, f: F) -> Result<LcoreHandle, LaunchError>
    where
        F: FnOnce() -> i32 + Send + 'static,
    {
        let job: Box<Job> = Box::new(Box::new(f));
        let arg = Box::into_raw(job) as *mut c_void;
        // SAFETY: trampoline matches lcore_function_t; arg is a leaked Box<Job>
        // that the trampoline takes back exactly once. On failure DPDK never
        // calls it, so we take it back here.
        let rc = unsafe { dpdk_sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
        if rc != 0 {
            // SAFETY: arg came from Box::into_raw above and was not consumed.
            drop(unsafe { Box::from_raw(arg as *mut Job) });
            return Err(LaunchError::Launch { lcore, reason: super::strerror(rc) });
        }
        Ok(LcoreHandle { lcore, waited: false })
    }

    /// The lcore this runs on.
    pub fn lcore(&self) -> u32 {
        self.lcore
    }

    /// Waits for the closure to return and gives its return value.
    pub fn wait(mut self) -> i32 {
        self.waited = true;
        // SAFETY: the lcore was launched by us; waiting is always allowed on the main lcore.
        unsafe { dpdk_sys::rte_eal_wait_lcore(self.lcore) }
    }
}

impl Drop for LcoreHandle {
    fn drop(&mut self) {
        if !self.waited {
            // SAFETY: as in wait(); a launched closure must be joined before the
            // state it borrows through Arcs can be torn down.
            unsafe {
                dpdk_sys::rte_eal_wait_lcore(self.lcore);
            }
        }
    }
}

unsafe extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: arg is the Box<Job> leaked by `launch`, passed to us exactly once.
    let job = unsafe { Box::from_raw(arg as *mut Job) };
    match catch_unwind(AssertUnwindSafe(job)) {
        Ok(rc) => rc,
        Err(p) => {
            eprintln!("tlsgate: lcore {} panicked: {}", lcore_id(), panic_text(&p));
            -1
        }
    }
}

fn panic_text(p: &Box<dyn Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}
