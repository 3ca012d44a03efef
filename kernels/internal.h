/* SPDX-License-Identifier: MIT */
/* Internal interfaces of kernels/, shared by the CPU and CUDA halves. */
#ifndef _KVMEM_KERNELS_INTERNAL_H
#define _KVMEM_KERNELS_INTERNAL_H

#include <stdint.h>
#include "kernels/kvkernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most (sequence, kv head, split) work items one split decode launches. */
#define KV_SPLIT_ITEMS_MAX	8192u
/* Most splits of one sequence. */
#define KV_SPLIT_MAX		1024u

__u32 kv_decode_split_bound(const struct kv_decode_args *a);

/**
 * kv_parallel_for() - run fn(arg, i) for i in [0, n) on up to @threads threads
 * @n:       number of items
 * @threads: 0 for automatic (CPUs online, at most @n)
 * @min_per_thread: fewest items worth a thread of their own
 * @fn:      work function; items are handed out dynamically
 * @arg:     passed to @fn
 *
 * Return: 0, or -errno when a thread could not be started (the items are
 * then run by the threads that did start, so the work is always done).
 */
int kv_parallel_for(uint64_t n, unsigned int threads, uint64_t min_per_thread,
		    void (*fn)(void *arg, uint64_t i), void *arg);

#ifdef __cplusplus
}
#endif

#endif /* _KVMEM_KERNELS_INTERNAL_H */
