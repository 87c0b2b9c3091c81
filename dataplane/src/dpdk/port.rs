//! Ethernet ports: lookup by name, configuration (queues, symmetric RSS),
//! start/stop, promiscuous mode, statistics, and the per-queue handles that a
//! single lcore owns.

use std::ffi::{CStr, CString};

use super::{Burst, Mempool, BURST};

/// The symmetric Toeplitz key: 0x6d5a repeated makes hash(a->b) == hash(b->a),
/// so both directions of a flow land on the same queue and thus the same worker.
const SYMMETRIC_RSS_KEY: [u8; 52] = {
    let mut k = [0u8; 52];
    let mut i = 0;
    while i < 52 {
        k[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    k
};

// rte_ethdev.h's RTE_ETH_RSS_* are function-like macros bindgen cannot expand;
// these are their values in DPDK 22.11 (bit numbers of RTE_ETH_FLOW_*).
const RSS_IP: u64 = (1 << 2) | (1 << 3) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 13) | (1 << 15);

/// A port-level failure, naming the port and what to try.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// No port of that name.
    #[error("port {name:?} not found; the EAL has: {known}. Add it with --vdev in [eal] args, or bind the NIC to vfio-pci with dpdk-devbind.py and name it by PCI address")]
    NotFound {
        /// The name asked for.
        name: String,
        /// The names the EAL knows.
        known: String,
    },
    /// The driver offers fewer queues than workers need.
    #[error("port {name:?} ({driver}) offers {max_rx} rx / {max_tx} tx queues, but {wanted} workers need {wanted} each; use fewer workers or give the device more queues (e.g. net_af_packet qpairs=N, net_null/net_ring: one per queue)")]
    TooFewQueues {
        /// Port name.
        name: String,
        /// Driver name.
        driver: String,
        /// Max rx queues.
        max_rx: u16,
        /// Max tx queues.
        max_tx: u16,
        /// Queues needed.
        wanted: u16,
    },
    /// A DPDK call failed.
    #[error("port {name:?}: {op} failed: {reason}")]
    Call {
        /// Port name.
        name: String,
        /// The operation.
        op: &'static str,
        /// DPDK's error text.
        reason: String,
    },
}

/// What the driver says it can do.
#[derive(Debug, Clone)]
pub struct PortInfo {
    /// Driver name (e.g. `net_null`).
    pub driver: String,
    /// Maximum rx queues.
    pub max_rx_queues: u16,
    /// Maximum tx queues.
    pub max_tx_queues: u16,
    /// RSS hash functions the device can compute (0: no RSS).
    pub rss_offloads: u64,
    /// RSS key length in bytes.
    pub rss_key_len: u8,
    /// Entries of the RSS redirection table (0: none the driver lets us set).
    pub reta_size: u16,
}

/// How a port is to be set up.
#[derive(Debug, Clone, Copy)]
pub struct PortSetup {
    /// Rx and tx queues (one of each per worker).
    pub queues: u16,
    /// Rx descriptors per queue.
    pub rx_descriptors: u16,
    /// Tx descriptors per queue.
    pub tx_descriptors: u16,
    /// Ask for symmetric RSS across the rx queues.
    pub rss: bool,
    /// With RSS, spread flows over the first this many rx queues only (the
    /// workers'; the slow-path lcores' queues after them get nothing from
    /// RSS): the redirection table is programmed so, and read back. 0: all.
    pub rss_queues: u16,
}

/// Port counters as the driver reports them.
#[derive(Debug, Clone, Copy, Default)]
pub struct PortStats {
    /// Packets received.
    pub ipackets: u64,
    /// Packets sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Rx drops because the rx queues were full (the host was too slow).
    pub imissed: u64,
    /// Erroneous received packets.
    pub ierrors: u64,
    /// Failed transmissions.
    pub oerrors: u64,
    /// Rx failures for lack of mbufs.
    pub rx_nombuf: u64,
}

/// An ethernet port, by DPDK port id.
pub struct Port {
    id: u16,
    name: String,
    info: PortInfo,
    queues: u16,
    rss: bool,
}

impl Port {
    /// Finds a port by its DPDK name (vdev name such as `net_null0`, or PCI address).
    pub fn by_name(name: &str) -> Result<Port, PortError> {
        let cname = CString::new(name).map_err(|_| PortError::NotFound { name: name.into(), known: known_ports() })?;
        let mut id = 0u16;
        // SAFETY: cname is a valid C string, id a valid out-pointer.
        let rc = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if rc != 0 {
            return Err(PortError::NotFound { name: name.into(), known: known_ports() });
        }
        let info = port_info(id).map_err(|reason| PortError::Call {
            name: name.into(),
            op: "rte_eth_dev_info_get",
            reason,
        })?;
        Ok(Port { id, name: name.to_owned(), info, queues: 0, rss: false })
    }

    /// DPDK port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The name it was found by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Driver capabilities.
    pub fn info(&self) -> &PortInfo {
        &self.info
    }

    /// Whether symmetric RSS is active (set by `configure`).
    pub fn rss_active(&self) -> bool {
        self.rss
    }

    /// Whether the device can spread flows over queues by RSS.
    pub fn offers_rss(&self) -> bool {
        self.info.rss_offloads & RSS_IP != 0
    }

    /// Whether the device can spread flows by RSS over a chosen subset of its
    /// queues: RSS with a redirection table the driver lets us program.
    pub fn offers_rss_with_reta(&self) -> bool {
        self.offers_rss() && self.info.reta_size > 0
    }

    fn fail(&self, op: &'static str, rc: i32) -> PortError {
        PortError::Call { name: self.name.clone(), op, reason: super::strerror(rc) }
    }

    /// Configures queues (rx from `pool`) and, if asked and possible, symmetric RSS.
    pub fn configure(&mut self, setup: PortSetup, pool: &Mempool) -> Result<(), PortError> {
        let q = setup.queues;
        if q > self.info.max_rx_queues || q > self.info.max_tx_queues {
            return Err(PortError::TooFewQueues {
                name: self.name.clone(),
                driver: self.info.driver.clone(),
                max_rx: self.info.max_rx_queues,
                max_tx: self.info.max_tx_queues,
                wanted: q,
            });
        }
        let mut conf = dpdk_sys::rte_eth_conf::default();
        let mut key = SYMMETRIC_RSS_KEY;
        self.rss = setup.rss && q > 1 && self.offers_rss();
        if self.rss {
            conf.rxmode.mq_mode = dpdk_sys::RTE_ETH_MQ_RX_RSS;
            let key_len = match self.info.rss_key_len {
                0 => 40,
                n => n.min(key.len() as u8),
            };
            conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
            conf.rx_adv_conf.rss_conf.rss_key_len = key_len;
            // Addresses only, not ports: a TCP segment sent in IP fragments
            // (whose later fragments carry no ports) must reach the worker
            // that owns its flow, to be reassembled and judged there. Flows
            // between the same two hosts share a worker.
            conf.rx_adv_conf.rss_conf.rss_hf = RSS_IP & self.info.rss_offloads;
        }
        // SAFETY: conf is fully initialised and outlives the call (DPDK copies it,
        // including the key).
        let rc = unsafe { dpdk_sys::rte_eth_dev_configure(self.id, q, q, &conf) };
        if rc != 0 {
            return Err(self.fail("rte_eth_dev_configure", rc));
        }
        // SAFETY: plain query on a valid port id.
        let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(self.id) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        for qi in 0..q {
            // SAFETY: valid port and queue index; NULL conf means driver defaults;
            // the pool outlives the port (pools live as long as the EAL).
            let rc = unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    self.id,
                    qi,
                    setup.rx_descriptors,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            if rc != 0 {
                return Err(self.fail("rte_eth_rx_queue_setup", rc));
            }
            // SAFETY: as above.
            let rc = unsafe {
                dpdk_sys::rte_eth_tx_queue_setup(self.id, qi, setup.tx_descriptors, socket, std::ptr::null())
            };
            if rc != 0 {
                return Err(self.fail("rte_eth_tx_queue_setup", rc));
            }
        }
        self.queues = q;
        if self.rss && setup.rss_queues > 0 && setup.rss_queues < q {
            match self.restrict_rss(setup.rss_queues) {
                Ok(()) => {}
                // A driver that reports a table but refuses to set it (or sets
                // it otherwise): no RSS, software dispatch instead.
                Err(_) => {
                    return self.configure(PortSetup { rss: false, ..setup }, pool);
                }
            }
        }
        Ok(())
    }

    /// Programs the RSS redirection table so that entry i sends to queue
    /// i mod `queues`, then reads it back: flows land on the first `queues`
    /// rx queues only.
    pub fn restrict_rss(&self, queues: u16) -> Result<(), PortError> {
        let size = self.info.reta_size as usize;
        let group = dpdk_sys::RTE_ETH_RETA_GROUP_SIZE as usize;
        if size == 0 || queues == 0 {
            return Err(PortError::Call {
                name: self.name.clone(),
                op: "rte_eth_dev_rss_reta_update",
                reason: "the driver has no redirection table".into(),
            });
        }
        let mut table: Vec<dpdk_sys::rte_eth_rss_reta_entry64> = reta_spread(size, queues)
            .chunks(group)
            .map(|chunk| {
                let mut e = dpdk_sys::rte_eth_rss_reta_entry64 { mask: u64::MAX, reta: [0; 64] };
                if chunk.len() < group {
                    e.mask = (1u64 << chunk.len()) - 1;
                }
                e.reta[..chunk.len()].copy_from_slice(chunk);
                e
            })
            .collect();
        // SAFETY: table holds size.div_ceil(64) entries, as the call reads for
        // a table of `size` entries; valid port id.
        let rc = unsafe { dpdk_sys::rte_eth_dev_rss_reta_update(self.id, table.as_mut_ptr(), size as u16) };
        if rc != 0 {
            return Err(self.fail("rte_eth_dev_rss_reta_update", rc));
        }
        let got = self.rss_table()?;
        if got.len() != size || got.iter().any(|&q| q >= queues) {
            return Err(PortError::Call {
                name: self.name.clone(),
                op: "rte_eth_dev_rss_reta_query",
                reason: format!("the table read back sends flows to queue {} or above", queues),
            });
        }
        Ok(())
    }

    /// The RSS redirection table as the driver reports it: entry i names the
    /// rx queue of packets whose hash is i modulo the table's size.
    pub fn rss_table(&self) -> Result<Vec<u16>, PortError> {
        let size = self.info.reta_size as usize;
        let group = dpdk_sys::RTE_ETH_RETA_GROUP_SIZE as usize;
        if size == 0 {
            return Err(PortError::Call {
                name: self.name.clone(),
                op: "rte_eth_dev_rss_reta_query",
                reason: "the driver has no redirection table".into(),
            });
        }
        let mut read: Vec<dpdk_sys::rte_eth_rss_reta_entry64> = (0..size.div_ceil(group))
            .map(|i| {
                let n = (size - i * group).min(group);
                let mask = if n == group { u64::MAX } else { (1u64 << n) - 1 };
                dpdk_sys::rte_eth_rss_reta_entry64 { mask, reta: [u16::MAX; 64] }
            })
            .collect();
        // SAFETY: read holds size.div_ceil(64) entries, as the call writes for a
        // table of `size` entries (the masked ones only); valid port id.
        let rc = unsafe { dpdk_sys::rte_eth_dev_rss_reta_query(self.id, read.as_mut_ptr(), size as u16) };
        if rc != 0 {
            return Err(self.fail("rte_eth_dev_rss_reta_query", rc));
        }
        Ok(read.iter().flat_map(|e| e.reta.iter().copied()).take(size).collect())
    }

    /// Starts the port.
    pub fn start(&self) -> Result<(), PortError> {
        // SAFETY: valid, configured port.
        let rc = unsafe { dpdk_sys::rte_eth_dev_start(self.id) };
        if rc != 0 {
            return Err(self.fail("rte_eth_dev_start", rc));
        }
        Ok(())
    }

    /// Stops the port (no-op error if already stopped).
    pub fn stop(&self) {
        // SAFETY: valid port; stopping a stopped port is harmless.
        unsafe {
            dpdk_sys::rte_eth_dev_stop(self.id);
        }
    }

    /// Closes the port, releasing the driver's resources (net_pcap closes and
    /// flushes its output file here). Call after `stop`.
    pub fn close(&self) {
        // SAFETY: valid, stopped port; no queue handle is used after this (the
        // workers have returned before the runtime closes ports).
        unsafe {
            dpdk_sys::rte_eth_dev_close(self.id);
        }
    }

    /// Turns promiscuous mode on: a bump in the wire forwards every frame.
    /// Drivers without the notion (net_null, net_ring, net_pcap) report
    /// "not supported", which is fine.
    pub fn set_promiscuous(&self) {
        // SAFETY: valid port.
        unsafe {
            dpdk_sys::rte_eth_promiscuous_enable(self.id);
        }
    }

    /// Driver counters.
    pub fn stats(&self) -> PortStats {
        let mut s = dpdk_sys::rte_eth_stats::default();
        // SAFETY: valid port and out-pointer.
        unsafe { dpdk_sys::rte_eth_stats_get(self.id, &mut s) };
        PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// The handles of queue `q`: one rx and one tx. Call once per queue; the
    /// handles are the only way to touch the queue, which is what makes the
    /// packet path lock-free.
    pub fn queue_pair(&mut self, q: u16) -> Option<(RxQueue, TxQueue)> {
        if q >= self.queues {
            return None;
        }
        Some((RxQueue { port: self.id, queue: q }, TxQueue { port: self.id, queue: q }))
    }
}

/// The receive side of one queue of one port, owned by one lcore.
pub struct RxQueue {
    port: u16,
    queue: u16,
}

/// The transmit side of one queue of one port, owned by one lcore.
pub struct TxQueue {
    port: u16,
    queue: u16,
}

impl RxQueue {
    /// Receives into the free room of `burst`; returns how many arrived.
    #[inline]
    pub fn recv(&mut self, burst: &mut Burst) -> usize {
        let room = burst.room();
        if room == 0 {
            return 0;
        }
        // SAFETY: the slots after len are free; DPDK writes at most `room` owned
        // mbufs there; grow() then records exactly the count written.
        unsafe {
            let dst = burst.raw_ptr().add(burst.len());
            let n = dpdk_sys::tg_eth_rx_burst(self.port, self.queue, dst, room as u16) as usize;
            burst.grow(n);
            n
        }
    }

    /// DPDK port id.
    pub fn port_id(&self) -> u16 {
        self.port
    }
}

impl TxQueue {
    /// Sends from the front of `burst`; what was sent leaves the burst, what the
    /// queue had no room for stays, in order.
    #[inline]
    pub fn send(&mut self, burst: &mut Burst) -> usize {
        if burst.is_empty() {
            return 0;
        }
        debug_assert!(burst.len() <= BURST);
        // SAFETY: the burst's first len slots are owned mbufs; DPDK takes over
        // the first n, which consume_front then forgets.
        unsafe {
            let n = dpdk_sys::tg_eth_tx_burst(self.port, self.queue, burst.raw_ptr(), burst.len() as u16) as usize;
            burst.consume_front(n);
            n
        }
    }
}

fn port_info(id: u16) -> Result<PortInfo, String> {
    let mut info = dpdk_sys::rte_eth_dev_info::default();
    // SAFETY: valid port id and out-pointer.
    let rc = unsafe { dpdk_sys::rte_eth_dev_info_get(id, &mut info) };
    if rc != 0 {
        return Err(super::strerror(rc));
    }
    let driver = if info.driver_name.is_null() {
        String::from("unknown")
    } else {
        // SAFETY: driver_name is a static NUL-terminated string owned by the driver.
        unsafe { CStr::from_ptr(info.driver_name) }.to_string_lossy().into_owned()
    };
    Ok(PortInfo {
        driver,
        max_rx_queues: info.max_rx_queues,
        max_tx_queues: info.max_tx_queues,
        rss_offloads: info.flow_type_rss_offloads,
        rss_key_len: info.hash_key_size,
        reta_size: info.reta_size,
    })
}

/// A redirection table of `size` entries over queues `0..queues`, each queue
/// as often as the next (entry i to queue i mod queues).
pub fn reta_spread(size: usize, queues: u16) -> Vec<u16> {
    (0..size).map(|i| (i % queues.max(1) as usize) as u16).collect()
}

/// Names of every port the EAL found, for error messages.
fn known_ports() -> String {
    let mut names = Vec::new();
    for id in 0..dpdk_sys::RTE_MAX_ETHPORTS as u16 {
        // SAFETY: any id may be asked about.
        if unsafe { dpdk_sys::rte_eth_dev_is_valid_port(id) } == 0 {
            continue;
        }
        let mut buf = [0 as std::ffi::c_char; dpdk_sys::RTE_ETH_NAME_MAX_LEN as usize];
        // SAFETY: buf is RTE_ETH_NAME_MAX_LEN long, as the API requires.
        if unsafe { dpdk_sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) } == 0 {
            // SAFETY: the call NUL-terminated buf.
            names.push(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned());
        }
    }
    if names.is_empty() {
        "no ports".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::reta_spread;

    #[test]
    fn the_redirection_table_names_only_worker_queues_and_each_as_often() {
        for (size, workers) in [(64, 2), (128, 3), (512, 7), (52, 4)] {
            let t = reta_spread(size, workers);
            assert_eq!(t.len(), size);
            assert!(t.iter().all(|&q| q < workers), "{size} entries over {workers} queues: {t:?}");
            let counts: Vec<usize> = (0..workers).map(|w| t.iter().filter(|&&q| q == w).count()).collect();
            let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(hi - lo <= 1, "uneven spread {counts:?}");
        }
    }
}
