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
#include <string.h>
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
	t->numa_node = -1;	/* the backend binds it, if it can (mm/mempolicy.c) */
	t->ops = p->ops[id] ? p->ops[id] : default_ops[id];
	if (id == KV_TIER_DEVICE && p->cuda && !p->ops[id]) {
		t->ops = &kv_cuda_device_ops;
		t->arg = p->cuda;
	}
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
	for (i = 0; i < KV_NR_TIERS; i++) {
		if (!pool->tier[i].ops->attach)
			continue;
		err = pool->tier[i].ops->attach(&pool->tier[i]);
		if (err)
			goto out_detach;
	}
	return 0;

out_detach:
	while (--i >= 0)
		if (pool->tier[i].ops->detach)
			pool->tier[i].ops->detach(&pool->tier[i]);
	i = KV_NR_TIERS;
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
		if (pool->tier[i].ops->detach)
			pool->tier[i].ops->detach(&pool->tier[i]);
	for (i = KV_NR_TIERS - 1; i >= 0; i--)
		tier_destroy(&pool->tier[i]);
}

/* A copy between swap and a tier the CPU cannot address (GPU memory). */
static bool copy_needs_bounce(struct kv_pool *pool, const struct kv_copy *c)
{
	u32 other;

	if (c->src_tier != KV_TIER_SWAP && c->dst_tier != KV_TIER_SWAP)
		return false;
	other = c->src_tier == KV_TIER_SWAP ? c->dst_tier : c->src_tier;
	return other != KV_TIER_SWAP && !pool->tier[other].base;
}

/**
 * bounce_init() - take the host frames that carry swap I/O of a device
 * tier the CPU cannot address
 * @pool: pool being created, watermarks set
 *
 * Return: 0, or -EINVAL for such a pool with swap but no host tier.
 */
int bounce_init(struct kv_pool *pool)
{
	u32 host = pool->tier[KV_TIER_HOST].fa.nr_total, n;
	struct kv_bounce *bb = &pool->bounce;
	int err;

	if (pool->tier[KV_TIER_DEVICE].base || !pool->tier[KV_TIER_SWAP].fa.nr_total)
		return 0;
	if (!host)
		return -EINVAL;
	n = host / 8 ? host / 8 : 1;
	n = n < KV_BOUNCE_FRAMES ? n : KV_BOUNCE_FRAMES;
	bb->frames = calloc(n, sizeof(*bb->frames));
	if (!bb->frames)
		return -ENOMEM;
	err = -pthread_mutex_init(&bb->lock, NULL);
	if (err)
		goto out_free;
	err = kv_frames_alloc(pool, KV_TIER_HOST, n, KV_ALLOC_NOWAIT, bb->frames);
	if (err)
		goto out_mutex;
	bb->nr = n;
	return 0;

out_mutex:
	pthread_mutex_destroy(&bb->lock);
out_free:
	free(bb->frames);
	bb->frames = NULL;
	return err;
}

/** bounce_destroy() - undo bounce_init() */
void bounce_destroy(struct kv_pool *pool)
{
	struct kv_bounce *bb = &pool->bounce;

	if (!bb->frames)
		return;
	kv_frames_free(pool, KV_TIER_HOST, bb->nr, bb->frames);
	pthread_mutex_destroy(&bb->lock);
	free(bb->frames);
	bb->frames = NULL;
	bb->nr = 0;
}

static const struct kv_tier_ops *copy_engine(struct kv_pool *pool, const struct kv_copy *c)
{
	if (c->src_tier == KV_TIER_SWAP || c->dst_tier == KV_TIER_SWAP)
		return pool->tier[KV_TIER_SWAP].ops;
	if (c->src_tier == KV_TIER_DEVICE || c->dst_tier == KV_TIER_DEVICE)
		return pool->tier[KV_TIER_DEVICE].ops;
	return pool->tier[c->src_tier > c->dst_tier ? c->src_tier : c->dst_tier].ops;
}

/* a batch of copies in flight on its engine */
struct leg_run {
	const struct kv_tier_ops *ops;
	void *cookie;
};

/* submit @n copies @c on their engine; a failed submit leaves nothing to wait for */
static int leg_submit(struct kv_pool *pool, const struct kv_copy *c, u32 n, struct leg_run *r)
{
	int err;

	r->ops = copy_engine(pool, c);
	r->cookie = NULL;
	err = r->ops->copy_submit(pool, c, n, &r->cookie);
	if (err)
		r->ops = NULL;
	return err;
}

/* wait for @r if it was submitted; @err: the step's error so far */
static int leg_wait(struct kv_pool *pool, struct leg_run *r, int err)
{
	int e = r->ops ? r->ops->copy_wait(pool, r->cookie) : 0;

	r->ops = NULL;
	return err ? err : e;
}

/* One batch on the engine that serves it, waited for. */
static int copy_direct(struct kv_pool *pool, const struct kv_copy *c, u32 n)
{
	struct leg_run r;

	return leg_wait(pool, &r, leg_submit(pool, c, n, &r));
}

/*
 * The bounce frames' halves: the first takes (nr + 1) / 2 of them, the
 * second the rest, so that an odd count leaves none idle. @h: which half.
 */
static u32 bounce_half(const struct kv_bounce *bb, u32 h)
{
	return h ? bb->nr / 2 : (bb->nr + 1) / 2;
}

/*
 * Part @p of a bounced batch @c of @n copies: parts take the halves of the
 * bounce frames in turn (p % 2), or the only frame. Its first leg (source
 * to bounce frame) goes into @leg[0], its second (bounce frame to
 * destination) into @leg[1]. Return: its copies, 0 past the last part.
 */
static u32 bounce_part(struct kv_bounce *bb, const struct kv_copy *c, u32 n, u32 p,
		       struct kv_copy (*leg)[KV_BOUNCE_FRAMES])
{
	const u32 h = bb->nr > 1 ? p % 2 : 0, size = bb->nr > 1 ? bounce_half(bb, h) : 1;
	const u32 base = h ? bounce_half(bb, 0) : 0;
	const u64 i = bb->nr > 1 ? (u64)(p / 2) * bb->nr + base : p;
	u32 m, k, f;

	if (i >= n)
		return 0;
	m = n - i < size ? (u32)(n - i) : size;
	for (k = 0; k < m; k++) {
		f = bb->frames[base + k];
		leg[0][k] = (struct kv_copy){ c[i + k].src_tier, c[i + k].src_frame,
					      KV_TIER_HOST, f };
		leg[1][k] = (struct kv_copy){ KV_TIER_HOST, f, c[i + k].dst_tier,
					      c[i + k].dst_frame };
	}
	return m;
}

/*
 * Swap <-> GPU memory: each part of the batch goes through the bounce
 * frames, swap to host then host to device (or the reverse). The two
 * halves of the bounce frames take turns: step s runs part s - 1's second
 * leg beside part s's first leg, the one on the device engine submitted
 * first, so that its copies run while the swap I/O (done as it is
 * submitted) does. With one bounce frame the legs run one after another.
 */
static int copy_bounced(struct kv_pool *pool, const struct kv_copy *c, u32 n)
{
	struct kv_copy leg[2][2][KV_BOUNCE_FRAMES];	/* [part % 2][first, second leg] */
	struct kv_bounce *bb = &pool->bounce;
	const struct kv_tier_ops *swap = pool->tier[KV_TIER_SWAP].ops;
	struct leg_run run[2] = { { NULL, NULL }, { NULL, NULL } };
	u32 s, m_in, m_out = 0;	/* copies of part s, of part s - 1 */
	int err = 0;

	if (!bb->nr)
		return -EOPNOTSUPP;
	pthread_mutex_lock(&bb->lock);
	for (s = 0; !err; s++, m_out = m_in) {
		/* run[0]: part s - 1 out of the bounce frames; run[1]: part s in */
		const struct kv_copy *out, *in;
		bool out_first;

		m_in = bounce_part(bb, c, n, s, leg[s % 2]);
		out = m_out ? leg[(s + 1) % 2][1] : NULL;
		in = m_in ? leg[s % 2][0] : NULL;
		if (!out && !in)
			break;
		out_first = bb->nr == 1 || !in || (out && copy_engine(pool, out) != swap);
		if (out && out_first) {
			err = leg_submit(pool, out, m_out, &run[0]);
			if (bb->nr == 1)
				err = leg_wait(pool, &run[0], err);
		}
		if (in && !err)
			err = leg_submit(pool, in, m_in, &run[1]);
		if (out && !out_first && !err)
			err = leg_submit(pool, out, m_out, &run[0]);
		err = leg_wait(pool, &run[0], err);
		err = leg_wait(pool, &run[1], err);
	}
	pthread_mutex_unlock(&bb->lock);
	return err;
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
	if (!n)
		return 0;
	if (kv_should_fail(pool, KV_FAULT_COPY))
		return -EIO;
	if (copy_needs_bounce(pool, c))
		return copy_bounced(pool, c, n);
	return copy_direct(pool, c, n);
}
