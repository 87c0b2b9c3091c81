/* Real functions for DPDK's static inline API, so that Rust can call them. */
#ifndef TLSGATE_SHIM_H
#define TLSGATE_SHIM_H
#include <stdint.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

int tg_errno(void);
unsigned tg_lcore_id(void);
uint64_t tg_rdtsc(void);
void tg_pause(void);
/* The CPUs lcore `lcore` may run on, as a bit mask of `words` 64-bit words; returns how many. */
unsigned tg_lcore_cpus(unsigned lcore, uint64_t *mask, unsigned words);

uint16_t tg_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t tg_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);

struct rte_mbuf *tg_pktmbuf_alloc(struct rte_mempool *mp);
int tg_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count);
void tg_pktmbuf_free(struct rte_mbuf *m);
char *tg_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
void tg_prefetch0(const void *p);

unsigned tg_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n, unsigned *free_space);
unsigned tg_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n, unsigned *available);
unsigned tg_ring_count(const struct rte_ring *r);
#endif
