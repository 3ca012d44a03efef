// SPDX-License-Identifier: MIT
/*
 * LRU lists, as the kernel's mm/swap.c: two lists per tier (active and
 * inactive), newest at the head, and mark_accessed() promotion.
 *
 * A block is used by pinning it (activation), which takes it off the LRU,
 * so a reference is recorded at activation: the first sets REFERENCED, the
 * second (while still referenced) promotes the block to the active list.
 * Unpinned blocks go back on the list their ACTIVE flag names. Aging and
 * the second chance are in vmscan.c.
 */
#include "internal.h"

/** lru_add() - put an unpinned resident block at the head of its list */
void lru_add(struct kv_pool *pool, struct kv_block *b)
{
	struct kv_tier *t = &pool->tier[b->tier];
	int lru = b->flags & KV_BLOCK_ACTIVE ? KV_LRU_ACTIVE : KV_LRU_INACTIVE;

	list_add(&b->lru, &t->lru[lru]);
	t->nr_lru[lru]++;
	b->flags |= KV_BLOCK_LRU;
}

/** lru_del() - take a block off its LRU list, if it is on one */
void lru_del(struct kv_pool *pool, struct kv_block *b)
{
	struct kv_tier *t;

	if (!(b->flags & KV_BLOCK_LRU))
		return;
	t = &pool->tier[b->tier];
	list_del_init(&b->lru);
	t->nr_lru[b->flags & KV_BLOCK_ACTIVE ? KV_LRU_ACTIVE : KV_LRU_INACTIVE]--;
	b->flags &= ~KV_BLOCK_LRU;
}

/**
 * mark_block_accessed() - record a use of a block
 * @pool: pool, locked
 * @b:    block
 *
 * inactive,unreferenced -> inactive,referenced -> active,unreferenced,
 * as folio_mark_accessed().
 */
void mark_block_accessed(struct kv_pool *pool, struct kv_block *b)
{
	bool on_lru = b->flags & KV_BLOCK_LRU;

	if (!(b->flags & KV_BLOCK_REFERENCED)) {
		b->flags |= KV_BLOCK_REFERENCED;
		return;
	}
	if (b->flags & KV_BLOCK_ACTIVE)
		return;
	if (on_lru)
		lru_del(pool, b);
	b->flags = (b->flags | KV_BLOCK_ACTIVE) & ~KV_BLOCK_REFERENCED;
	count_vm_event(pool, KV_PGACTIVATE);
	if (on_lru)
		lru_add(pool, b);
}
