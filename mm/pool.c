// SPDX-License-Identifier: MIT
/*
 * Pools: creation and destruction, geometry, tunables. A pool is to kvmem
 * what a zone is to the kernel: one KV geometry with an arena per tier,
 * its own free lists, LRU lists, watermarks and reclaimers.
 */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define WSF_DEFAULT	10
#define WSF_MAX		3000
#define BATCH_DEFAULT	32

static int tunables_fill(struct kv_vm_tunables *dst, const struct kv_vm_tunables *src)
{
	*dst = *src;
	if (!dst->watermark_scale_factor)
		dst->watermark_scale_factor = WSF_DEFAULT;
	if (!dst->reclaim_batch)
		dst->reclaim_batch = BATCH_DEFAULT;
	if (dst->watermark_scale_factor > WSF_MAX || dst->reclaim_batch > KV_RECLAIM_BATCH_MAX ||
	    dst->min_free_kbytes > (1ull << 40))
		return -EINVAL;
	return 0;
}

/*
 * The bytes of a tier's frames fit every offset and length computed from
 * them (size_t, off_t, a file offset plus a length); a swap transfer moves
 * a frame in one request of 32-bit length.
 */
static int tier_bytes_check(const struct kv_pool_params *p)
{
	const u64 fb = kv_frame_bytes(&p->geom);
	int t;

	for (t = 0; t < KV_NR_TIERS; t++)
		if (p->nr_frames[t] && fb > KV_TIER_BYTES_MAX / p->nr_frames[t])
			return -E2BIG;
	return p->nr_frames[KV_TIER_SWAP] && fb > UINT32_MAX ? -E2BIG : 0;
}

static int params_check(const struct kv_pool_params *p)
{
	if (!kv_geometry_valid(&p->geom) || !p->nr_frames[KV_TIER_DEVICE])
		return -EINVAL;
	if (p->name && strlen(p->name) >= sizeof(((struct kv_pool *)0)->name))
		return -ENAMETOOLONG;
	if (p->flags & ~(KV_POOL_NO_KVSWAPD | KV_POOL_NO_PREFIX | KV_POOL_PREFIX_GLOBAL))
		return -EINVAL;
	if ((u64)p->nr_frames[KV_TIER_DEVICE] + p->nr_frames[KV_TIER_HOST] +
	    p->nr_frames[KV_TIER_SWAP] > UINT32_MAX / 2 || tier_bytes_check(p))
		return -E2BIG;
	if (p->nr_frames[KV_TIER_SWAP] && !p->ops[KV_TIER_SWAP] &&
	    (p->swap.fd < 0 || p->swap.engine > KV_SWAP_PSYNC))
		return -EINVAL;
	return placement_check(p->place);
}

static int pool_sync_init(struct kv_pool *pool)
{
	int err;

	err = pthread_mutex_init(&pool->lock, NULL);
	if (err)
		return -err;
	err = pthread_cond_init(&pool->unlocked, NULL);
	if (err) {
		pthread_mutex_destroy(&pool->lock);
		return -err;
	}
	return 0;
}

/**
 * kv_pool_create() - create a pool: arenas, frame allocators, descriptors
 * @p:   parameters
 * @out: receives the pool
 *
 * Starts the kvswapd threads unless KV_POOL_NO_KVSWAPD. A placement
 * (@p->place) binds the CPU arenas to its node and the kvswapd threads to
 * its CPUs where the kernel allows; what took shows in kv_pool_meminfo().
 *
 * Return: 0; -EINVAL for a bad geometry, tunable, flag or node number;
 * -ENAMETOOLONG; -E2BIG for too many frames or bytes (tier_bytes_check());
 * -ENOSPC when the swap area cannot be allocated; -ENOMEM or the
 * backend's error.
 */
int kv_pool_create(const struct kv_pool_params *p, struct kv_pool **out)
{
	struct kv_pool *pool;
	int err;

	err = params_check(p);
	if (err)
		return err;
	pool = calloc(1, sizeof(*pool));
	if (!pool)
		return -ENOMEM;
	err = tunables_fill(&pool->vm, &p->vm);
	if (err)
		goto out_free;
	snprintf(pool->name, sizeof(pool->name), "%s", p->name ? p->name : "default");
	pool->geom = p->geom;
	pool->frame_bytes = kv_frame_bytes(&p->geom);
	pool->flags = p->flags;
	pool->swap = p->swap;
	pool->place.numa_node = -1;
	if (p->place)
		pool->place = *p->place;
	INIT_LIST_HEAD(&pool->seqs);
	err = pool_sync_init(pool);
	if (err)
		goto out_free;
	err = tiers_init(pool, p);
	if (err)
		goto out_sync;
	err = blocks_init(pool);
	if (err)
		goto out_tiers;
	err = prefix_init(pool);
	if (err)
		goto out_blocks;
	kv_setup_watermarks(pool);
	err = bounce_init(pool);
	if (err)
		goto out_prefix;
	if (!(p->flags & KV_POOL_NO_KVSWAPD)) {
		err = kv_kvswapd_start(pool);
		if (err)
			goto out_bounce;
	}
	*out = pool;
	return 0;

out_bounce:
	bounce_destroy(pool);
out_prefix:
	prefix_destroy(pool);
out_blocks:
	blocks_destroy(pool);
out_tiers:
	tiers_destroy(pool);
out_sync:
	pthread_cond_destroy(&pool->unlocked);
	pthread_mutex_destroy(&pool->lock);
out_free:
	free(pool);
	return err;
}

/**
 * kv_pool_destroy() - stop reclaim, free every sequence left, free the pool
 * @pool: pool; no other thread may use it any more
 */
void kv_pool_destroy(struct kv_pool *pool)
{
	struct kv_seq *seq, *tmp;

	if (!pool)
		return;
	kv_kvswapd_stop(pool);
	list_for_each_entry_safe(seq, tmp, &pool->seqs, node)
		kv_seq_free(seq);
	bounce_destroy(pool);
	prefix_destroy(pool);
	blocks_destroy(pool);
	tiers_destroy(pool);
	pthread_cond_destroy(&pool->unlocked);
	pthread_mutex_destroy(&pool->lock);
	free(pool);
}

/** kv_pool_geometry() - the pool's geometry */
const struct kv_geometry *kv_pool_geometry(const struct kv_pool *pool)
{
	return &pool->geom;
}

/**
 * kv_pool_frame_addr() - CPU address of a frame
 * @pool:  pool
 * @tier:  KV_TIER_*
 * @frame: frame number
 *
 * Return: the address, or NULL when the tier is not CPU-addressable (a GPU
 * arena) or the frame is out of range.
 */
void *kv_pool_frame_addr(struct kv_pool *pool, int tier, u32 frame)
{
	struct kv_tier *t;

	if (tier < 0 || tier >= KV_NR_TIERS)
		return NULL;
	t = &pool->tier[tier];
	if (!t->base || frame >= t->fa.nr_total)
		return NULL;
	return (char *)t->base + frame * pool->frame_bytes;
}

/**
 * kv_pool_set_tunables() - change the reclaim tunables at run time
 * @pool: pool
 * @vm:   new values; zero fields take their defaults
 *
 * Watermarks are recomputed, and kvswapd woken where a tier now sits
 * below its new low watermark.
 *
 * Return: 0, or -EINVAL with nothing changed.
 */
int kv_pool_set_tunables(struct kv_pool *pool, const struct kv_vm_tunables *vm)
{
	struct kv_vm_tunables nv;
	int i, err;

	err = tunables_fill(&nv, vm);
	if (err)
		return err;
	kv_pool_lock(pool);
	pool->vm = nv;
	kv_setup_watermarks(pool);
	for (i = 0; i < KV_NR_TIERS; i++)
		if (tier_nr_free(&pool->tier[i]) < pool->tier[i].wmark[KV_WMARK_LOW])
			kvswapd_wakeup(pool, i);
	kv_pool_unlock(pool);
	return 0;
}

/** kv_pool_get_tunables() - read the reclaim tunables in effect */
void kv_pool_get_tunables(struct kv_pool *pool, struct kv_vm_tunables *vm)
{
	kv_pool_lock(pool);
	*vm = pool->vm;
	kv_pool_unlock(pool);
}

/**
 * kv_pool_device_export() - how another process maps the device arena
 * @pool: pool
 * @e:    filled in; its descriptors stay owned by the pool
 *
 * Return: 0, or -EOPNOTSUPP when the backend cannot be shared.
 */
int kv_pool_device_export(struct kv_pool *pool, struct kv_device_export *e)
{
	struct kv_tier *t = &pool->tier[KV_TIER_DEVICE];

	memset(e, 0, sizeof(*e));
	if (!t->ops->arena_export)
		return -EOPNOTSUPP;
	return t->ops->arena_export(t, e);
}

/** kv_pool_device_desc() - the device tier's backend, as meminfo shows it */
const char *kv_pool_device_desc(struct kv_pool *pool)
{
	struct kv_tier *t = &pool->tier[KV_TIER_DEVICE];

	return t->desc ? t->desc : t->ops->name;
}
