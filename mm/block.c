// SPDX-License-Identifier: MIT
/*
 * Block descriptors: allocation, references and pins, as struct page's
 * refcount and mlock count. The prefix cache holds one reference on each
 * block it caches (KV_BLOCK_CACHED).
 *
 * A pool has one descriptor per frame of all its tiers together, so a block
 * (which holds at least one frame) can always get one. A block lives while
 * its refcount is above zero: one reference per sequence table entry, plus
 * one held by whoever isolated it for a move. A pinned block (pincount > 0)
 * is resident on the device tier, off the LRU, and never moves.
 */
#include <stdlib.h>
#include "internal.h"

/** blocks_init() - allocate the descriptor array, all free */
int blocks_init(struct kv_pool *pool)
{
	u32 i, n = 0;

	for (i = 0; i < KV_NR_TIERS; i++)
		n += pool->tier[i].fa.nr_total;
	pool->blocks = calloc(n ? n : 1, sizeof(*pool->blocks));
	if (!pool->blocks)
		return -ENOMEM;
	pool->free_blocks = malloc((n ? n : 1) * sizeof(*pool->free_blocks));
	if (!pool->free_blocks) {
		free(pool->blocks);
		pool->blocks = NULL;
		return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		pool->blocks[i].tier = KV_TIER_NONE;
		INIT_LIST_HEAD(&pool->blocks[i].lru);
		pool->free_blocks[i] = n - 1 - i;
	}
	pool->nr_blocks = n;
	pool->nr_free_blocks = n;
	return 0;
}

/** blocks_destroy() - free the descriptor array */
void blocks_destroy(struct kv_pool *pool)
{
	free(pool->blocks);
	free(pool->free_blocks);
	pool->blocks = NULL;
	pool->free_blocks = NULL;
}

/**
 * kv_block_alloc() - take a descriptor for a block resident at (tier, frame)
 * @pool:  pool, locked
 * @tier:  tier holding @frame
 * @frame: frame allocated by the caller, now owned by the block
 *
 * Return: the block with one reference, unpinned and on no list; NULL when
 * no descriptor is free (cannot happen while frames are accounted).
 */
struct kv_block *kv_block_alloc(struct kv_pool *pool, int tier, u32 frame)
{
	struct kv_block *b;
	int i;

	if (!pool->nr_free_blocks)
		return NULL;
	b = kv_block(pool, pool->free_blocks[--pool->nr_free_blocks]);
	b->refcount = 1;
	b->pincount = 0;
	b->flags = 0;
	b->tier = tier;
	for (i = 0; i < KV_NR_TIERS; i++)
		b->frame[i] = KV_FRAME_NONE;
	b->frame[tier] = frame;
	return b;
}

/** kv_block_get() - take a reference; pool locked */
void kv_block_get(struct kv_block *b)
{
	b->refcount++;
}

static void kv_block_free(struct kv_pool *pool, struct kv_block *b)
{
	int i;

	if (b->pincount || (b->flags & KV_BLOCK_LOCKED))
		fprintf(stderr, "kvmem: freeing block %u with pins %u flags %#x\n",
			kv_block_idx(pool, b), b->pincount, b->flags);
	lru_del(pool, b);
	if (b->flags & KV_BLOCK_SWAPCACHE)
		pool->nr_swapcache--;
	for (i = 0; i < KV_NR_TIERS; i++) {
		if (b->frame[i] != KV_FRAME_NONE)
			__kv_frames_free(pool, i, 1, &b->frame[i]);
		b->frame[i] = KV_FRAME_NONE;
	}
	b->tier = KV_TIER_NONE;
	b->flags = 0;
	pool->free_blocks[pool->nr_free_blocks++] = kv_block_idx(pool, b);
}

/**
 * kv_block_put() - drop a reference, freeing the block and its frames on
 * the last one
 * @pool: pool, locked
 * @b:    block
 */
void kv_block_put(struct kv_pool *pool, struct kv_block *b)
{
	if (!b->refcount) {
		fprintf(stderr, "kvmem: put of free block %u\n", kv_block_idx(pool, b));
		return;
	}
	if (!--b->refcount)
		kv_block_free(pool, b);
	else if (b->refcount == 1 && (b->flags & KV_BLOCK_CACHED))
		prefix_recheck(pool, b);	/* only the prefix cache holds it now */
}

/**
 * kv_block_pin() - pin a block resident on the device tier
 * @pool: pool, locked
 * @b:    block, not locked
 *
 * The first pin takes the block off the LRU: pinned blocks are never
 * scanned, moved or reclaimed.
 */
void kv_block_pin(struct kv_pool *pool, struct kv_block *b)
{
	if (b->pincount++)
		return;
	lru_del(pool, b);
	pool->tier[b->tier].nr_pinned++;
}

/**
 * kv_block_unpin() - drop a pin; the last one puts the block on the LRU
 * @pool: pool, locked
 * @b:    pinned block
 */
void kv_block_unpin(struct kv_pool *pool, struct kv_block *b)
{
	if (--b->pincount)
		return;
	pool->tier[b->tier].nr_pinned--;
	lru_add(pool, b);
}

/**
 * kv_block_isolate() - take an unpinned block for a move
 * @pool: pool, locked
 * @b:    block, unpinned and unlocked
 *
 * Takes it off the LRU, flags it locked and holds a reference, so that it
 * outlives every sequence that drops it while the move runs unlocked.
 */
void kv_block_isolate(struct kv_pool *pool, struct kv_block *b)
{
	lru_del(pool, b);
	b->flags |= KV_BLOCK_LOCKED;
	kv_block_get(b);
	pool->tier[b->tier].nr_locked++;
	if (b->flags & KV_BLOCK_CACHED)
		prefix_recheck(pool, b);
}

/**
 * kv_block_putback() - end a move: unlock, back on the LRU, drop the
 * isolation reference; a clean swap copy goes if the block left the
 * prefix cache meanwhile (only a cached block keeps one)
 * @pool: pool, locked
 * @b:    locked block; the caller broadcasts pool->unlocked
 */
void kv_block_putback(struct kv_pool *pool, struct kv_block *b)
{
	b->flags &= ~KV_BLOCK_LOCKED;
	pool->tier[b->tier].nr_locked--;
	/* left the cache during the move (prefix_drop_lost()): may change now */
	if (b->flags & KV_BLOCK_LOST) {
		b->flags &= ~KV_BLOCK_LOST;
		if (b->flags & KV_BLOCK_SWAPCACHE)
			swapcache_free(pool, b);
	}
	if (!b->pincount && b->refcount > 1)
		lru_add(pool, b);
	kv_block_put(pool, b);
}
