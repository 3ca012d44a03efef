// SPDX-License-Identifier: MIT
/*
 * libkvclient: admission advice for a client's scheduler (ADMIT).
 */
#include <errno.h>
#include <string.h>
#include "internal.h"

/**
 * kvc_admit() - ask whether a request of @nr_blocks new blocks fits the
 * device tier of @pool now, later, or never
 * @c:         connection
 * @pool:      pool from kvc_pool_open()
 * @nr_blocks: device blocks the request needs (prompt and generated
 *             tokens, every sample), at least 1
 * @rep:       receives the verdict and the frame counts behind it (free,
 *             reclaimable, the caller's reserve, total, pinned); may be
 *             NULL
 *
 * KVMEM_ADMIT_NOW: free and reclaimable frames above the device tier's min
 * watermark, and reserve frames, cover @nr_blocks; KVMEM_ADMIT_LATER: not
 * now, but the device tier is large enough once running sequences finish
 * or are deactivated; KVMEM_ADMIT_NEVER: more than the device tier holds
 * above its min watermark (no STEP could ever pin them). Nothing is
 * allocated: a STEP may still find less room, when others took it
 * meanwhile.
 *
 * Return: KVMEM_ADMIT_NOW, KVMEM_ADMIT_LATER or KVMEM_ADMIT_NEVER,
 * -EINVAL (@nr_blocks is 0), -ENOENT (a pool of another connection or
 * one the daemon does not know), -EOPNOTSUPP (a daemon without ADMIT).
 */
int kvc_admit(struct kvc *c, const struct kvc_pool *pool, uint32_t nr_blocks,
	      struct kvmem_admit_reply *rep)
{
	struct kvmem_admit req = { .nr_blocks = nr_blocks };
	struct kvmem_admit_reply r;
	int err;

	if (kvc_pool_index(c, pool) < 0)
		return -ENOENT;
	req.pool = pool->handle;
	err = kvc_call(c, KVMEM_OP_ADMIT, &req, sizeof(req), &r, sizeof(r));
	if (err < 0)
		return err;
	if (err > KVMEM_ADMIT_NEVER || (uint32_t)err != r.verdict)
		return -EBADMSG;
	if (rep)
		*rep = r;
	return err;
}
