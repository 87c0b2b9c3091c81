/* Everything tlsgate binds from DPDK. bindgen reads this file; shim.c defines
 * the tg_* functions, which are real symbols for DPDK's static inline API. */
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_ring.h>
#include <rte_ethdev.h>
#include <rte_bus_vdev.h>
#include <rte_telemetry.h>

#include "shim.h"
