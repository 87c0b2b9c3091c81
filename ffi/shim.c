/* Out-of-line copies of DPDK's static inline functions. Each is a direct call;
 * the compiler inlines DPDK's body here, so the cost over C is one call. */
/* cpu_set_t and CPU_ISSET (rte_cpuset_t) are GNU extensions. */
#define _GNU_SOURCE
#include <sched.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_pause.h>
#include <rte_prefetch.h>
#include <rte_ethdev.h>
#include "shim.h"

int tg_errno(void) { return rte_errno; }
unsigned tg_lcore_id(void) { return rte_lcore_id(); }
uint64_t tg_rdtsc(void) { return rte_rdtsc(); }
void tg_pause(void) { rte_pause(); }
unsigned tg_lcore_cpus(unsigned lcore, uint64_t *mask, unsigned words)
{
    rte_cpuset_t set = rte_lcore_cpuset(lcore);
    unsigned n = 0;
    for (unsigned c = 0; c < CPU_SETSIZE && c / 64 < words; c++) {
        if (CPU_ISSET(c, &set)) {
            mask[c / 64] |= (uint64_t)1 << (c % 64);
            n++;
        }
    }
    return n;
}

uint16_t tg_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t tg_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *tg_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int tg_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void tg_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
char *tg_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
void tg_prefetch0(const void *p) { rte_prefetch0(p); }

unsigned tg_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n, unsigned *free_space)
{
	return rte_ring_enqueue_burst(r, objs, n, free_space);
}

unsigned tg_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n, unsigned *available)
{
	return rte_ring_dequeue_burst(r, objs, n, available);
}

unsigned tg_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }
