// SPDX-License-Identifier: MIT
/*
 * Moving blocks between tiers, as the kernel's mm/migrate.c: the frames of
 * a batch of isolated blocks are copied in one submission with the pool
 * unlocked, then switched over under the lock. Demotion (reclaim) and
 * promotion (activation) both come through here.
 */
#include <stdlib.h>
#include "internal.h"

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
 * blocks stay locked either way; the caller puts them back.
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
	u32 i;

	if (!n)
		return 0;
	c = kv_meta_alloc(pool, n * sizeof(*c));
	if (!c) {
		err = -ENOMEM;
		goto out_free_frames;
	}
	for (i = 0; i < n; i++) {
		b = blocks[i];
		c[i] = (struct kv_copy){ b->tier, b->frame[b->tier], dst, dst_frames[i] };
	}
	c_swap = dst == KV_TIER_SWAP || blocks[0]->tier == KV_TIER_SWAP;
	pool->tier[dst].nr_inflight += n;
	kv_pool_unlock(pool);
	err = kv_copy_run(pool, c, n);
	kv_pool_lock(pool);
	pool->tier[dst].nr_inflight -= n;
	free(c);
	if (err) {
		count_vm_event(pool, KV_COPY_FAIL);
		if (c_swap)
			count_vm_event(pool, KV_SWAP_FAIL);
		goto out_free_frames;
	}
	for (i = 0; i < n; i++) {
		b = blocks[i];
		src = b->tier;
		__kv_frames_free(pool, src, 1, &b->frame[src]);
		b->frame[src] = KV_FRAME_NONE;
		b->frame[dst] = dst_frames[i];
		b->tier = dst;
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
