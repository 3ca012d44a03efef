// SPDX-License-Identifier: MIT
/*
 * kvmm-demo: the mm core serving a stream of requests, with no daemon.
 *
 * Requests share a system prompt: each forks the prompt's sequence (the
 * shared blocks cost nothing), decodes tokens into its own blocks (the
 * first write into the shared partial block is copied on write), some
 * reject a speculative draft (truncate), and the device tier holds fewer
 * blocks than the running requests need, so a scheduler rotates them:
 * deactivated requests are demoted to the host tier by kvswapd and direct
 * reclaim, and promoted back when they run again. Every token's contents
 * are checked on every activation. Ends with meminfo and vmstat.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mm/mm.h"

#define NREQ		48
#define RUNNING		12
#define PROMPT		37
#define MAX_TOK		256

struct request {
	struct kv_seq *seq;
	u32 vals[MAX_TOK];
	u32 len, target;
};

static const struct kv_geometry geom = { 4, 2, 32, 16, KV_DTYPE_FP16, 0 };

static u32 *tok(struct kv_pool *pool, u64 slot)
{
	return (u32 *)((char *)kv_pool_frame_addr(pool, KV_TIER_DEVICE, 0) +
		       kv_token_offset(&geom, slot, geom.layers - 1, KV_V, 1));
}

static int check(struct kv_pool *pool, struct request *r)
{
	u32 frames[MAX_TOK / 16 + 1], i;
	int n = kv_seq_block_table(r->seq, frames, MAX_TOK / 16 + 1);

	if (n < 0)
		return n;
	for (i = 0; i < r->len; i++)
		if (*tok(pool, (u64)frames[i / 16] * 16 + i % 16) != r->vals[i])
			return -EUCLEAN;
	return 0;
}

static int append(struct kv_pool *pool, struct request *r, u32 n, u32 seed)
{
	u64 slots[8];
	u32 i;
	int err = kv_seq_append(r->seq, n, slots, 0);

	for (i = 0; !err && i < n; i++) {
		r->vals[r->len] = seed * 7919 + r->len;
		*tok(pool, slots[i]) = r->vals[r->len++];
	}
	return err;
}

/* One decode step of a running request; returns 1 when it is done. */
static int step(struct kv_pool *pool, struct request *r, u32 id, u32 it)
{
	if (append(pool, r, 4, id) < 0)
		return -1;
	if (it % 5 == 3) {		/* a draft of 4 with 2 rejected */
		r->len -= 2;
		if (kv_seq_truncate(r->seq, r->len))
			return -1;
	}
	return r->len >= r->target;
}

int main(void)
{
	struct kv_vm_tunables vm = { .watermark_scale_factor = 400 };
	struct kv_pool_params p = { .name = "demo", .geom = geom,
				    .nr_frames = { 40, 512 }, .vm = vm };
	static struct request req[NREQ], prompt;
	u32 next = 0, done = 0, it = 0, i, run[RUNNING], nrun = 0;
	struct kv_pool *pool;
	int err;

	if (kv_pool_create(&p, &pool)) {
		fprintf(stderr, "kvmm-demo: cannot create pool\n");
		return 1;
	}
	prompt.target = PROMPT;
	if (kv_seq_create(pool, &prompt.seq) || kv_seq_activate(prompt.seq, 0) ||
	    append(pool, &prompt, 8, 0) || append(pool, &prompt, 8, 0) ||
	    append(pool, &prompt, 8, 0) || append(pool, &prompt, 8, 0) ||
	    append(pool, &prompt, 5, 0))
		goto fail;
	kv_seq_deactivate(prompt.seq);
	printf("kvmm-demo: %u requests sharing a %u-token prompt, %u running at once, "
	       "device tier %u blocks\n", NREQ, PROMPT, RUNNING, p.nr_frames[0]);
	while (done < NREQ) {
		/* Admit, rotating: the oldest running request yields its slot. */
		if (next < NREQ && nrun < RUNNING) {
			req[next] = prompt;
			req[next].target = PROMPT + 40 + next * 3 % 120;
			if (kv_seq_fork(prompt.seq, &req[next].seq))
				goto fail;
			run[nrun++] = next++;
		}
		for (i = 0; i < nrun; i++) {
			struct request *r = &req[run[i]];

			err = kv_seq_activate(r->seq, 0);
			if (err == -ENOMEM)
				continue;	/* stays queued: the device tier is full */
			if (err || check(pool, r))
				goto fail;
			err = step(pool, r, run[i], it);
			kv_seq_deactivate(r->seq);
			if (err < 0)
				goto fail;
			if (err) {
				kv_seq_free(r->seq);
				done++;
				run[i--] = run[--nrun];
			}
		}
		if (++it % 25 == 0)
			printf("  step %4u: %2u/%u requests done, running %u, demoted %llu, "
			       "promoted %llu\n", it, done, NREQ, nrun,
			       (unsigned long long)kv_vmstat_read(pool, KV_PGDEMOTE),
			       (unsigned long long)kv_vmstat_read(pool, KV_PGPROMOTE));
		if (it == 50) {
			printf("\nmeminfo at step 50:\n");
			kv_pool_print_meminfo(pool, stdout);
			printf("\n");
		}
	}
	kv_seq_free(prompt.seq);
	kv_kvswapd_stop(pool);
	if (kv_pool_check(pool))
		goto fail;
	printf("kvmm-demo: all %u requests served, every token checked; pool consistent\n\n",
	       NREQ);
	kv_pool_print_vmstat(pool, stdout);
	kv_pool_destroy(pool);
	return 0;
fail:
	fprintf(stderr, "kvmm-demo: failed\n");
	return 1;
}
