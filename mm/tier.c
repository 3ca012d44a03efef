// SPDX-License-Identifier: MIT
/*
 * Tiers: arena set-up through each tier's backend, and the copy engine
 * choice. The swap tier's backend runs every copy that involves a swap
 * slot (it alone does I/O; the other side is CPU-addressable); otherwise
 * the device tier's backend runs every copy that involves the device tier
 * (it alone can reach device memory), and a copy between lower tiers is
 * run by the lower (slower) tier's backend.
 */
#include <stdlib.h>
#include "internal.h"

static const struct kv_tier_ops *default_ops[KV_NR_TIERS] = {
	[KV_TIER_DEVICE] = &kv_cpu_device_ops,
	[KV_TIER_HOST] = &kv_host_memfd_ops,
	[KV_TIER_SWAP] = &kv_swap_file_ops,
};

static int tier_init(struct kv_pool *pool, int id, const struct kv_pool_params *p)
{
	struct kv_tier *t = &pool->tier[id];
	int err;

	t->pool = pool;
	t->id = id;
	t->ops = p->ops[id] ? p->ops[id] : default_ops[id];
	INIT_LIST_HEAD(&t->lru[KV_LRU_INACTIVE]);
	INIT_LIST_HEAD(&t->lru[KV_LRU_ACTIVE]);
	err = pthread_cond_init(&t->kvswapd.wait, NULL);
	if (err)
		return -err;
	err = frame_alloc_init(&t->fa, p->nr_frames[id]);
	if (err)
		goto out_cond;
	t->fa.clustered = id == KV_TIER_SWAP;
	err = t->ops->arena_create(t);
	if (err)
		goto out_fa;
	return 0;

out_fa:
	frame_alloc_destroy(&t->fa);
out_cond:
	pthread_cond_destroy(&t->kvswapd.wait);
	return err;
}

static void tier_destroy(struct kv_tier *t)
{
	t->ops->arena_destroy(t);
	frame_alloc_destroy(&t->fa);
	pthread_cond_destroy(&t->kvswapd.wait);
}

/**
 * tiers_init() - create every tier's frame allocator and arena
 * @pool: pool being created
 * @p:    its parameters
 */
int tiers_init(struct kv_pool *pool, const struct kv_pool_params *p)
{
	int i, err;

	for (i = 0; i < KV_NR_TIERS; i++) {
		err = tier_init(pool, i, p);
		if (err)
			goto out_destroy;
	}
	return 0;

out_destroy:
	while (--i >= 0)
		tier_destroy(&pool->tier[i]);
	return err;
}

/** tiers_destroy() - undo tiers_init() */
void tiers_destroy(struct kv_pool *pool)
{
	int i;

	for (i = KV_NR_TIERS - 1; i >= 0; i--)
		tier_destroy(&pool->tier[i]);
}

static const struct kv_tier_ops *copy_engine(struct kv_pool *pool, const struct kv_copy *c)
{
	if (c->src_tier == KV_TIER_SWAP || c->dst_tier == KV_TIER_SWAP)
		return pool->tier[KV_TIER_SWAP].ops;
	if (c->src_tier == KV_TIER_DEVICE || c->dst_tier == KV_TIER_DEVICE)
		return pool->tier[KV_TIER_DEVICE].ops;
	return pool->tier[c->src_tier > c->dst_tier ? c->src_tier : c->dst_tier].ops;
}

/**
 * kv_copy_run() - copy blocks and wait for the copies to complete
 * @pool: pool, NOT locked
 * @c:    copies; all must be served by the same engine
 * @n:    number of copies
 *
 * Return: 0, or a negative errno when any copy failed (then the contents
 * of every destination frame are undefined).
 */
int kv_copy_run(struct kv_pool *pool, const struct kv_copy *c, u32 n)
{
	const struct kv_tier_ops *ops;
	void *cookie = NULL;
	int err;

	if (!n)
		return 0;
	if (kv_should_fail(pool, KV_FAULT_COPY))
		return -EIO;
	ops = copy_engine(pool, c);
	err = ops->copy_submit(pool, c, n, &cookie);
	if (err)
		return err;
	return ops->copy_wait(pool, cookie);
}
