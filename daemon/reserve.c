// SPDX-License-Identifier: MIT
/*
 * Client reserves: stocks of free device frames handed to a client in
 * batches, as the kernel's per-CPU page lists, so that a decode step whose
 * new blocks come from the stock needs no round trip. The frames are
 * allocated raw from the pool (counted as used for the watermarks); each
 * pool records which client holds each frame, so a client can only hand
 * back, or build blocks from, frames of its own reserve. When a client
 * goes, its reserve returns to the pool.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "kvmemd.h"
#include "msg.h"

/** kvmemd_reserve_init() - the frame owner table of a pool */
int kvmemd_reserve_init(struct kvmemd_pool *p, u32 nr_frames)
{
	p->owner = calloc(nr_frames ? nr_frames : 1, sizeof(*p->owner));
	p->nr_frames = nr_frames;
	return p->owner ? 0 : -ENOMEM;
}

/**
 * kvmemd_reserve_owns() - whether every one of @frames is in @c's reserve
 * of @p
 * @p:      pool
 * @c:      client
 * @frames: frame numbers (4-byte aligned inside a message)
 * @n:      how many
 */
bool kvmemd_reserve_owns(struct kvmemd_pool *p, struct kvmemd_client *c, const u32 *frames,
			 u32 n)
{
	u32 i;

	for (i = 0; i < n; i++)
		if (frames[i] >= p->nr_frames || p->owner[frames[i]] != c->id)
			return false;
	return true;
}

/** kvmemd_reserve_used() - @n frames of @c's reserve became blocks */
void kvmemd_reserve_used(struct kvmemd_pool *p, struct kvmemd_client *c, const u32 *frames,
			 u32 n)
{
	u32 i;

	for (i = 0; i < n; i++)
		p->owner[frames[i]] = 0;
	c->reserved[p->handle - 1] -= n;
}

/*
 * Give @n frames of @c's reserve back to the pool, all or none: each must
 * be the client's, and none may be named twice.
 */
static int reserve_release(struct kvmemd_pool *p, struct kvmemd_client *c, const u32 *frames,
			   u32 n)
{
	u32 i;

	for (i = 0; i < n; i++) {
		if (frames[i] >= p->nr_frames || p->owner[frames[i]] != c->id)
			goto out_restore;
		p->owner[frames[i]] = 0;	/* a repeat now fails the check */
	}
	kv_frames_free(p->pool, KV_TIER_DEVICE, n, frames);
	c->reserved[p->handle - 1] -= n;
	return 0;

out_restore:
	while (i--)
		p->owner[frames[i]] = c->id;
	return -EINVAL;
}

/**
 * kvmemd_reserve_drop() - return all of a departing client's reserves
 * @d: daemon
 * @c: client
 */
void kvmemd_reserve_drop(struct kvmemd *d, struct kvmemd_client *c)
{
	struct kvmemd_pool *p;
	u32 i, f;

	for (i = 0; i < d->nr_pools; i++) {
		p = &d->pools[i];
		for (f = 0; c->reserved[i] && f < p->nr_frames; f++)
			if (p->owner[f] == c->id)
				reserve_release(p, c, &f, 1);
	}
}

/*
 * Top @c's reserve of @p up to @target; the new frames go to @out (room
 * for @room). Reserves are filled only from memory above the device
 * tier's low watermark, never by reclaim: under pressure a client gets
 * fewer frames (or none) and goes through STEP, where reclaim runs for
 * what it needs. Returns the frames added, never an error: the releases
 * of the same request are done by then, and a failed reply would tell the
 * client they were not.
 */
static u32 reserve_grow(struct kvmemd_pool *p, struct kvmemd_client *c, u32 target,
			u32 *out, u32 room)
{
	u32 have = c->reserved[p->handle - 1], add, spare, i;
	struct kv_meminfo mi;

	if (target <= have)
		return 0;
	add = target - have < room ? target - have : room;
	kv_pool_meminfo(p->pool, &mi);
	spare = mi.tier[KV_TIER_DEVICE].free > mi.tier[KV_TIER_DEVICE].wmark[KV_WMARK_LOW] ?
		mi.tier[KV_TIER_DEVICE].free - mi.tier[KV_TIER_DEVICE].wmark[KV_WMARK_LOW] : 0;
	if (add > spare)
		add = spare;
	if (!add || kv_frames_alloc(p->pool, KV_TIER_DEVICE, add, KV_ALLOC_NOWAIT, out))
		return 0;
	for (i = 0; i < add; i++)
		p->owner[out[i]] = c->id;
	c->reserved[p->handle - 1] += add;
	return add;
}

/**
 * kvmemd_op_reserve() - the RESERVE request
 * @d:       daemon
 * @c:       client
 * @b:       request body
 * @blen:    its length
 * @out:     reply body buffer
 * @room:    its size
 * @out_len: receives the reply body's length
 *
 * Return: frames added, or a negative errno for a request refused whole
 * (before any release).
 */
int kvmemd_op_reserve(struct kvmemd *d, struct kvmemd_client *c, const void *b, size_t blen,
		      char *out, size_t room, size_t *out_len)
{
	struct kvmem_reserve_reply *rep = (struct kvmem_reserve_reply *)out;
	struct kvmem_reserve req;
	const u32 *rel;
	struct kvmemd_pool *p;
	__u32 off;
	int n;

	memset(rep, 0, sizeof(*rep));
	*out_len = sizeof(*rep);
	if (blen < 16)
		return -EINVAL;
	memcpy(&req, b, 16);
	if (req.nr_release && !req.release_off)
		return -EINVAL;
	off = req.nr_release ? req.release_off : 0;
	n = kvmem_copy_head(&req, sizeof(req), b, blen, 16, &off, 1);
	if (n)
		return n;
	if (!kvmem_all_zero(req.reserved, sizeof(req.reserved)) ||
	    req.target > KVMEM_RESERVE_MAX || req.nr_release > KVMEM_RESERVE_MAX)
		return -EINVAL;
	p = kvmemd_pool_get(d, req.pool);
	if (!p)
		return -ENOENT;
	if (req.nr_release) {
		if (req.release_off % 4 ||
		    req.nr_release > (blen - req.release_off) / sizeof(u32))
			return -EINVAL;
		rel = (const u32 *)((const char *)b + req.release_off);
		if (reserve_release(p, c, rel, req.nr_release))
			return -EINVAL;
	}
	rep->nr_added = reserve_grow(p, c, req.target, (u32 *)(rep + 1),
				     (u32)((room - sizeof(*rep)) / sizeof(u32)));
	rep->nr_reserved = c->reserved[p->handle - 1];
	*out_len += (size_t)rep->nr_added * sizeof(u32);
	return (int)rep->nr_added;
}
