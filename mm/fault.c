// SPDX-License-Identifier: MIT
/*
 * Fault injection, as SQLite's FAULTSIM and the kernel's fail_nth: arm a set
 * of sites and the nth call at any of them fails (and every later one when
 * persistent). Tests drive every error path of mm/ with it. Metadata
 * allocations go through here so that an out-of-memory can be injected.
 */
#include <stdlib.h>
#include "internal.h"

/**
 * kv_pool_fault_inject() - arm fault injection on a pool
 * @pool:    pool
 * @sites:   KV_FAULT_* mask; 0 disarms
 * @nth:     the call, counted from 1 at any armed site, that fails
 * @persist: when non-zero every call after the nth fails too
 */
void kv_pool_fault_inject(struct kv_pool *pool, u32 sites, u64 nth, int persist)
{
	struct kv_fault *f = &pool->fault;

	__atomic_store_n(&f->sites, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&f->calls, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&f->fired, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&f->nth, nth, __ATOMIC_SEQ_CST);
	__atomic_store_n(&f->persist, persist, __ATOMIC_SEQ_CST);
	__atomic_store_n(&f->sites, sites, __ATOMIC_SEQ_CST);
}

/** kv_pool_fault_fired() - failures injected since the pool was last armed */
u64 kv_pool_fault_fired(struct kv_pool *pool)
{
	return __atomic_load_n(&pool->fault.fired, __ATOMIC_SEQ_CST);
}

/**
 * kv_should_fail() - whether this call at @site must fail
 * @pool: pool
 * @site: one KV_FAULT_* bit
 */
bool kv_should_fail(struct kv_pool *pool, u32 site)
{
	struct kv_fault *f = &pool->fault;
	u64 call, nth;

	if (!(__atomic_load_n(&f->sites, __ATOMIC_RELAXED) & site))
		return false;
	call = __atomic_add_fetch(&f->calls, 1, __ATOMIC_SEQ_CST);
	nth = __atomic_load_n(&f->nth, __ATOMIC_SEQ_CST);
	if (call == nth || (__atomic_load_n(&f->persist, __ATOMIC_SEQ_CST) && call > nth)) {
		__atomic_add_fetch(&f->fired, 1, __ATOMIC_SEQ_CST);
		return true;
	}
	return false;
}

/**
 * kv_meta_alloc() - allocate zeroed metadata for a pool
 * @pool: pool (for fault injection)
 * @size: bytes
 *
 * Return: the memory, or NULL on failure (real or injected).
 */
void *kv_meta_alloc(struct kv_pool *pool, size_t size)
{
	if (kv_should_fail(pool, KV_FAULT_META))
		return NULL;
	return calloc(1, size);
}

/**
 * kv_meta_realloc() - resize metadata allocated by kv_meta_alloc()
 * @pool: pool (for fault injection)
 * @p:    old memory; left untouched on failure
 * @size: new size in bytes
 */
void *kv_meta_realloc(struct kv_pool *pool, void *p, size_t size)
{
	if (kv_should_fail(pool, KV_FAULT_META))
		return NULL;
	return realloc(p, size);
}
