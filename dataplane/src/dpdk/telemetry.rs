//! tlsgate's own commands on the EAL's telemetry socket, beside DPDK's
//! (`/ethdev/stats`, ...): `dpdk-telemetry.py` shows them. A command answers
//! from the values the control thread last published for it; the telemetry
//! thread never reads what an lcore writes.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

/// One value in a command's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum TelValue {
    /// A count.
    U64(u64),
    /// A text (DPDK cuts it at 127 bytes).
    Text(String),
}

/// What each command answers: its (name, value) pairs, as last published.
static ANSWERS: Mutex<BTreeMap<String, Vec<(String, TelValue)>>> = Mutex::new(BTreeMap::new());

/// Names a dictionary may hold (DPDK's `RTE_TEL_MAX_DICT_ENTRIES`).
const MAX_ENTRIES: usize = 256;

/// Registers `cmd` (`/tlsgate/...`) with its help text; it answers with
/// what [`publish`] last gave it (an empty dictionary until then).
pub fn register(cmd: &str, help: &str) -> Result<(), String> {
    let c = CString::new(cmd).map_err(|e| e.to_string())?;
    let h = CString::new(help).map_err(|e| e.to_string())?;
    // SAFETY: DPDK keeps the pointers for the process's life: both strings are
    // leaked on purpose; the callback is a plain function that never unwinds.
    let rc = unsafe { dpdk_sys::rte_telemetry_register_cmd(c.into_raw(), Some(answer), h.into_raw()) };
    if rc != 0 {
        return Err(format!("telemetry: cannot register {cmd} ({rc})"));
    }
    Ok(())
}

/// What `cmd` answers from now on.
pub fn publish(cmd: &str, entries: Vec<(String, TelValue)>) {
    if let Ok(mut a) = ANSWERS.lock() {
        a.insert(cmd.to_owned(), entries);
    }
}

/// Names as DPDK accepts them: letters, digits, `_`, `/`, `.`, `-`, at most 63 bytes.
fn dict_name(name: &str) -> CString {
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "_/.-".contains(c) { c } else { '_' }).take(63).collect();
    CString::new(clean).unwrap_or_default()
}

extern "C" fn answer(cmd: *const c_char, _params: *const c_char, d: *mut dpdk_sys::rte_tel_data) -> c_int {
    let r = catch_unwind(AssertUnwindSafe(|| {
        if cmd.is_null() || d.is_null() {
            return -1;
        }
        // SAFETY: DPDK passes the command as a NUL-terminated string and a
        // data object it owns for the duration of the call.
        let cmd = unsafe { CStr::from_ptr(cmd) }.to_string_lossy().into_owned();
        let entries = ANSWERS.lock().ok().and_then(|a| a.get(&cmd).cloned()).unwrap_or_default();
        // SAFETY: `d` is DPDK's, valid for this call; names and values are
        // NUL-terminated and live until each call returns (DPDK copies them).
        unsafe {
            dpdk_sys::rte_tel_data_start_dict(d);
            for (name, value) in entries.iter().take(MAX_ENTRIES) {
                let n = dict_name(name);
                match value {
                    TelValue::U64(v) => {
                        dpdk_sys::rte_tel_data_add_dict_u64(d, n.as_ptr(), *v);
                    }
                    TelValue::Text(t) => {
                        let cut: String = t.chars().filter(|c| *c != '\0').take(120).collect();
                        let v = CString::new(cut).unwrap_or_default();
                        dpdk_sys::rte_tel_data_add_dict_string(d, n.as_ptr(), v.as_ptr());
                    }
                }
            }
        }
        0
    }));
    r.unwrap_or(-1)
}
