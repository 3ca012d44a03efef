// SPDX-License-Identifier: MIT
/*
 * Admission advice: ADMIT tells a client's scheduler whether a request of
 * N new blocks fits a pool's device tier now, later (once the running
 * sequences finish), or never, from one meminfo snapshot of the pool. It
 * allocates nothing: a scheduler asks before it starts a request, and
 * under the pressure of what it admitted it deactivates (preempts) a
 * running one, as vLLM's scheduler does with its block manager.
 */
#include <errno.h>
#include <string.h>
#include "kvmemd.h"
#include "msg.h"

/*
 * Device frames reclaim could free now: cached blocks it may evict, and
 * other unpinned blocks on the device's LRU lists as far as the tiers
 * below have room for them (free frames, or cached blocks there that
 * eviction would make room of).
 */
static u32 admit_reclaimable(const struct kv_meminfo *mi)
{
	const struct kv_tier_info *dev = &mi->tier[KV_TIER_DEVICE];
	u64 lru = (u64)dev->active + dev->inactive, room = 0;
	int t;

	for (t = KV_TIER_DEVICE + 1; t < KV_NR_TIERS; t++)
		room += (u64)mi->tier[t].free + mi->tier[t].evictable;
	lru = lru > dev->evictable ? lru - dev->evictable : 0;
	return dev->evictable + (u32)(lru < room ? lru : room);
}

/**
 * admit_verdict() - KVMEM_ADMIT_* for @nr_blocks new blocks
 * @mi:        meminfo snapshot of the pool
 * @reserve:   frames in the asking client's reserve of the pool
 * @nr_blocks: blocks the request needs
 * @rep:       filled in with the verdict and the numbers behind it
 *
 * A STEP's allocations take the free frames down to the device tier's min
 * watermark and no further (the frames below it are reclaim's; a client's
 * reserve is taken above the low one): what a request can have now is the
 * free and reclaimable frames less min, plus the caller's reserve; what it
 * can ever have is the tier's frames less min.
 *
 * Return: the verdict.
 */
static u32 admit_verdict(const struct kv_meminfo *mi, u32 reserve, u32 nr_blocks,
				struct kvmem_admit_reply *rep)
{
	const struct kv_tier_info *dev = &mi->tier[KV_TIER_DEVICE];
	const u32 min = dev->wmark[KV_WMARK_MIN];
	u64 now;

	rep->free = dev->free;
	rep->reclaimable = admit_reclaimable(mi);
	rep->reserve = reserve;
	rep->total = dev->total;
	rep->pinned = dev->pinned;
	now = (u64)rep->free + rep->reclaimable;
	now = (now > min ? now - min : 0) + rep->reserve;
	if (nr_blocks <= now)
		rep->verdict = KVMEM_ADMIT_NOW;
	else if ((u64)nr_blocks + min <= dev->total)
		rep->verdict = KVMEM_ADMIT_LATER;
	else
		rep->verdict = KVMEM_ADMIT_NEVER;
	return rep->verdict;
}

/**
 * kvmemd_op_admit() - the ADMIT request
 * @d:       daemon
 * @c:       client
 * @b:       request body
 * @blen:    its length
 * @out:     reply body buffer (at least a struct kvmem_admit_reply)
 * @room:    its size
 * @out_len: receives the reply body's length
 *
 * Return: KVMEM_ADMIT_NOW, _LATER or _NEVER; -EINVAL (no blocks asked
 * for, reserved fields not zero), -E2BIG (a longer body with a non-zero
 * tail), -ENOENT (unknown pool).
 */
int kvmemd_op_admit(struct kvmemd *d, struct kvmemd_client *c, const void *b, size_t blen,
		    char *out, size_t room, size_t *out_len)
{
	struct kvmem_admit_reply *rep = (struct kvmem_admit_reply *)out;
	struct kvmem_admit req;
	struct kvmemd_pool *p;
	struct kv_meminfo mi;
	int err;

	if (room < sizeof(*rep))
		return -ENOBUFS;
	*out_len = 0;
	err = kvmem_copy_body(&req, sizeof(req), b, blen);
	if (err)
		return err;
	if (!req.nr_blocks || !kvmem_all_zero(req.reserved, sizeof(req.reserved)))
		return -EINVAL;
	p = kvmemd_pool_get(d, req.pool);
	if (!p)
		return -ENOENT;
	memset(rep, 0, sizeof(*rep));
	*out_len = sizeof(*rep);
	kv_pool_meminfo(p->pool, &mi);
	return (int)admit_verdict(&mi, c->reserved[p->handle - 1], req.nr_blocks, rep);
}
