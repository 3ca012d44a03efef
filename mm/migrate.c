// SPDX-License-Identifier: MIT
/*
 * Moving blocks between tiers, as the kernel's mm/migrate.c: the frames of
 * a batch of isolated blocks are copied in one submission with the pool
 * unlocked, then switched over under the lock. Demotion (reclaim) and
 * promotion (activation) both come through here.
 *
 * The swap cache, as the kernel's: a block of the prefix cache read back
 * from swap keeps its slot (such a block never changes: a write copies it
 * first), so that demoting it to swap again is free of I/O; the copies go
 * when swap needs room (swapcache_drop()) or the block is freed.
 */
#include <stdlib.h>
#include "internal.h"

/*
 * Switch @b from its frame in @src to @frame in @dst, keeping (or using) a
 * swap cache slot where there is one to keep.
 */
static void migrate_frames(struct kv_pool *pool, struct kv_block *b, int src, int dst, u32 frame)
{
	if (src == KV_TIER_SWAP && (b->flags & KV_BLOCK_CACHED)) {
		b->flags |= KV_BLOCK_SWAPCACHE;		/* the slot stays, clean */
		pool->nr_swapcache++;
	} else {
		__kv_frames_free(pool, src, 1, &b->frame[src]);
		b->frame[src] = KV_FRAME_NONE;
	}
	if (dst == KV_TIER_SWAP && (b->flags & KV_BLOCK_SWAPCACHE)) {
		__kv_frames_free(pool, dst, 1, &frame);	/* not needed: no I/O */
		b->flags &= ~KV_BLOCK_SWAPCACHE;
		pool->nr_swapcache--;
		count_vm_event(pool, KV_SWAPCACHE_HIT);
	} else {
		b->frame[dst] = frame;
	}
	b->tier = dst;
}

/**
 * swapcache_free() - free the clean swap copy that @b keeps while resident
 * @pool: pool, locked
 * @b:    block with KV_BLOCK_SWAPCACHE, not locked (no move relies on it)
 */
void swapcache_free(struct kv_pool *pool, struct kv_block *b)
{
	__kv_frames_free(pool, KV_TIER_SWAP, 1, &b->frame[KV_TIER_SWAP]);
	b->frame[KV_TIER_SWAP] = KV_FRAME_NONE;
	b->flags &= ~KV_BLOCK_SWAPCACHE;
	pool->nr_swapcache--;
}

/**
 * swapcache_drop() - free the swap slots of up to @nr blocks that keep a
 * clean copy there while resident elsewhere (no I/O)
 * @pool: pool, locked
 * @nr:   slots wanted
 *
 * Return: slots freed.
 */
u32 swapcache_drop(struct kv_pool *pool, u32 nr)
{
	struct kv_block *b;
	u32 i, done = 0;

	/* Resume where the last drop stopped: each descriptor is looked at
	 * once per round of drops, not once per drop. */
	for (i = 0; i < pool->nr_blocks && done < nr && pool->nr_swapcache; i++) {
		b = kv_block(pool, pool->swapcache_scan);
		if (++pool->swapcache_scan == pool->nr_blocks)
			pool->swapcache_scan = 0;
		if (!(b->flags & KV_BLOCK_SWAPCACHE) || (b->flags & KV_BLOCK_LOCKED))
			continue;
		swapcache_free(pool, b);
		done++;
	}
	count_vm_events(pool, KV_SWAPCACHE_DROP, done);
	return done;
}

/**
 * kv_migrate_blocks() - move isolated blocks to tier @dst
 * @pool:       pool, locked on entry and on return; dropped for the copy
 * @blocks:     blocks isolated by the caller (KV_BLOCK_LOCKED), all resident
 *              on one tier other than @dst
 * @n:          number of blocks
 * @dst:        destination tier
 * @dst_frames: frames of @dst allocated by the caller, one per block; this
 *              function owns them from here on
 *
 * All or nothing: on success every block is resident on @dst and its old
 * frame is free; on failure no block moved and @dst_frames are freed. The
 * blocks stay locked either way; the caller puts them back. A failed read
 * from swap also takes the cached blocks it could not read out of the
 * prefix cache (prefix_drop_lost()), so the caller's reference may be the
 * last one.
 *
 * Return: 0, -ENOMEM (no memory for the copy list) or the copy's error.
 */
int kv_migrate_blocks(struct kv_pool *pool, struct kv_block **blocks, u32 n,
		      int dst, const u32 *dst_frames)
{
	struct kv_copy *c;
	struct kv_block *b;
	bool c_swap = false;
	int err, src;
	u32 i, k = 0;

	if (!n)
		return 0;
	c = kv_meta_alloc(pool, n * sizeof(*c));
	if (!c) {
		err = -ENOMEM;
		goto out_free_frames;
	}
	for (i = 0; i < n; i++) {
		b = blocks[i];
		if (dst == KV_TIER_SWAP && (b->flags & KV_BLOCK_SWAPCACHE))
			continue;	/* its slot holds it already */
		c[k++] = (struct kv_copy){ b->tier, b->frame[b->tier], dst, dst_frames[i] };
	}
	c_swap = dst == KV_TIER_SWAP || blocks[0]->tier == KV_TIER_SWAP;
	pool->tier[dst].nr_inflight += n;
	kv_pool_unlock(pool);
	err = kv_copy_run(pool, c, k);
	kv_pool_lock(pool);
	pool->tier[dst].nr_inflight -= n;
	free(c);
	if (err) {
		count_vm_event(pool, KV_COPY_FAIL);
		if (c_swap)
			count_vm_event(pool, KV_SWAP_FAIL);
		if (blocks[0]->tier == KV_TIER_SWAP)
			prefix_drop_lost(pool, blocks, n);
		goto out_free_frames;
	}
	for (i = 0; i < n; i++) {
		b = blocks[i];
		src = b->tier;
		migrate_frames(pool, b, src, dst, dst_frames[i]);
		if (b->flags & KV_BLOCK_CACHED) {
			pool->prefix.nr_cached[src]--;
			pool->prefix.nr_cached[dst]++;
		}
		pool->tier[src].nr_locked--;
		pool->tier[dst].nr_locked++;
	}
	count_vm_events(pool, dst < src ? KV_PGPROMOTE : KV_PGDEMOTE, n);
	if (src == KV_TIER_SWAP || dst == KV_TIER_SWAP)
		count_vm_events(pool, src == KV_TIER_SWAP ? KV_PSWPIN : KV_PSWPOUT, n);
	return 0;

out_free_frames:
	__kv_frames_free(pool, dst, n, dst_frames);
	return err;
}
