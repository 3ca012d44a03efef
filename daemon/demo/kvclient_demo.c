// SPDX-License-Identifier: MIT
/*
 * kvclient-demo: an inference-like client of kvmemd. Requests share a
 * system prompt: each forks the prompt's sequence, then decodes token by
 * token through libkvclient, writing every token's K/V marker into the
 * shared arena at the slot it gets; most tokens go in without a round trip
 * (kvc_append() into the client's reserve), the rest through batched
 * STEPs. More requests run than the device tier holds at once, so idle
 * ones are deactivated and the daemon demotes and later promotes their
 * blocks. Every token is checked when its request finishes. The system
 * prompt goes in with its token ids and is pinned in the prefix cache;
 * later requests find it there (kvc_prefix_match()) instead of computing
 * it again.
 *
 *   kvclient-demo [SOCKET]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/kvclient/kvclient.h"

#define NREQ	64
#define BATCH	16
#define PROMPT	100
#define MAXTOK	512

struct request {
	uint64_t seq;
	uint32_t len, target;
	uint32_t vals[MAXTOK];
};

static struct kvc_pool *pool;

/*
 * A token's marker: the first word of its last layer's V. Through
 * kvc_frame_read/write, so the same code runs on GPU memory (CUDA backend)
 * and on the CPU backend's memfd.
 */
static uint64_t marker_off(uint64_t slot)
{
	return kv_token_offset(&pool->geom, slot, pool->geom.layers - 1, KV_V, 0) -
	       slot / pool->geom.block_tokens * pool->frame_bytes;
}

static int marker_get(uint64_t slot, uint32_t *v)
{
	return kvc_frame_read(pool, (uint32_t)(slot / pool->geom.block_tokens),
			      marker_off(slot), v, sizeof(*v));
}

static int marker_set(uint64_t slot, uint32_t v)
{
	return kvc_frame_write(pool, (uint32_t)(slot / pool->geom.block_tokens),
			       marker_off(slot), &v, sizeof(v));
}

static int check(struct kvc *c, struct request *r)
{
	uint32_t bt = pool->geom.block_tokens, nb, i, v;
	const uint32_t *frames;
	int err = kvc_block_table(c, r->seq, &frames, &nb);

	for (i = 0; !err && i < r->len; i++) {
		err = marker_get((uint64_t)frames[i / bt] * bt + i % bt, &v);
		if (!err && v != r->vals[i])
			err = -EUCLEAN;
	}
	return err;
}

/* One decode token for @r: locally when possible, else through a STEP. */
static int decode_one(struct kvc *c, struct request *r, uint32_t v, uint64_t *msgs)
{
	struct kvc_step_seq s = { .seq = r->seq, .nr_tokens = 1 };
	uint64_t slot;
	int err = kvc_append(c, r->seq, 1, &slot);

	if (err == -EAGAIN) {
		if (kvc_reserve(c, pool, 256) < 0)
			kvc_sync(c);
		s.slots = &slot;
		err = kvc_step(c, &s, 1, 0, NULL);
		(*msgs)++;
	}
	if (err)
		return err;
	r->vals[r->len++] = v;
	return marker_set(slot, v);
}

static int run_batch(struct kvc *c, struct request *req, uint32_t first, uint32_t n,
		     const struct request *prompt, uint64_t *msgs)
{
	uint64_t ids[BATCH];
	uint32_t i, t;
	int err;

	for (i = 0; i < n; i++) {
		struct request *r = &req[first + i];

		*r = *prompt;
		r->target = PROMPT + 200 + (first + i) * 37 % 200;
		err = kvc_seq_fork(c, prompt->seq, &r->seq);
		if (err)
			return err;
		ids[i] = r->seq;
	}
	for (t = PROMPT; t < MAXTOK; t++) {
		for (i = 0; i < n; i++) {
			struct request *r = &req[first + i];

			if (r->len < r->target) {
				err = decode_one(c, r, (first + i) * 100000 + t, msgs);
				if (err)
					return err;
			}
		}
	}
	for (i = 0; i < n; i++) {
		err = check(c, &req[first + i]);
		if (err)
			return err;
	}
	/* Done for now: the daemon may demote these while the next batch runs. */
	return kvc_deactivate(c, ids, n);
}

/*
 * New requests with the same system prompt and their own question, as
 * another engine would send them: the prompt's whole blocks come from the
 * prefix cache, only the rest is computed (and checked).
 */
static int prefix_requests(struct kvc *c, const struct request *prompt)
{
	static struct request r;
	struct kvmem_prefix_match_reply hit;
	uint64_t slots[PROMPT + 32], query = 0, found = 0;
	struct kvc_step_seq s = { .slots = slots };
	uint32_t i, k;
	int m, err, ferr;

	for (k = 0; k < 8; k++) {
		r = *prompt;
		for (i = PROMPT; i < PROMPT + 32; i++)
			r.vals[i] = 0xdef00000 + k * 1000 + i;
		r.len = PROMPT + 32;
		err = kvc_seq_create(c, pool, &r.seq);
		if (err)
			return err;
		m = kvc_prefix_match(c, r.seq, r.vals, r.len, &hit);
		err = m < 0 ? m : 0;
		s.seq = r.seq;
		s.nr_tokens = r.len - (uint32_t)(m < 0 ? 0 : m);
		s.token_ids = r.vals + (m < 0 ? 0 : m);
		err = err ?: kvc_step(c, &s, 1, 0, NULL);
		for (i = 0; !err && i < s.nr_tokens; i++)
			err = marker_set(slots[i], r.vals[m + i]);
		err = err ?: check(c, &r);
		/* The sequence goes whatever happened to it. */
		ferr = kvc_seq_free(c, r.seq);
		err = err ?: ferr;
		if (err)
			return err;
		query += r.len;
		found += (uint32_t)m;
	}
	printf("kvclient-demo: 8 new requests on the same system prompt: %llu of %llu prompt "
	       "tokens found in the prefix cache, the rest computed; all checked\n",
	       (unsigned long long)found, (unsigned long long)query);
	return 0;
}

int main(int argc, char **argv)
{
	static struct request req[NREQ], prompt;
	struct kvc_step_seq s;
	uint64_t slots[PROMPT], msgs = 0, tokens = 0;
	uint32_t i, b;
	struct kvc *c;
	int err;

	err = kvc_connect(argc > 1 ? argv[1] : NULL, &c);
	err = err ?: kvc_pool_open(c, "default", &pool);
	err = err ?: kvc_seq_create(c, pool, &prompt.seq);
	if (err)
		goto fail;
	for (i = 0; i < PROMPT; i++)
		prompt.vals[i] = 0xabc00000 + i;	/* token ids; their K/V marker alike */
	s = (struct kvc_step_seq){ .seq = prompt.seq, .nr_tokens = PROMPT,
				   .token_ids = prompt.vals, .slots = slots };
	err = kvc_step(c, &s, 1, 0, NULL);
	if (err)
		goto fail;
	for (i = 0; i < PROMPT && !err; i++)
		err = marker_set(slots[i], prompt.vals[i]);
	if (err)
		goto fail;
	prompt.len = PROMPT;
	err = kvc_prefix_pin(c, prompt.seq, "demo-system");
	if (err < 0 && err != -EEXIST)
		goto fail;
	err = kvc_deactivate(c, &prompt.seq, 1);
	if (err)
		goto fail;
	printf("kvclient-demo: %u requests sharing a %u-token prompt, %u at a time; "
	       "pool %u device blocks of %u tokens in %s\n", NREQ, PROMPT, BATCH,
	       pool->nr_frames[KVMEM_TIER_DEVICE], pool->geom.block_tokens,
	       pool->backend == KVMEM_BACKEND_CUDA ? "GPU memory (cuda backend)" :
	       "a host memfd (cpu backend)");
	for (b = 0; b < NREQ; b += BATCH) {
		err = run_batch(c, req, b, BATCH, &prompt, &msgs);
		if (err)
			goto fail;
		printf("  requests %2u-%2u done and checked\n", b, b + BATCH - 1);
	}
	/* Come back to the first batch: its blocks were demoted meanwhile. */
	for (i = 0; i < BATCH; i++) {
		err = kvc_activate(c, &req[i].seq, 1, 0, NULL);
		err = err ?: check(c, &req[i]);
		err = err ?: kvc_deactivate(c, &req[i].seq, 1);
		if (err)
			goto fail;
	}
	for (i = 0; i < NREQ; i++) {
		tokens += req[i].len - PROMPT;
		err = kvc_seq_free(c, req[i].seq);
		if (err)
			goto fail;
	}
	printf("kvclient-demo: %llu tokens decoded with %llu STEP requests; every token "
	       "checked, the first batch again after its blocks came back\n",
	       (unsigned long long)tokens, (unsigned long long)msgs);
	err = prefix_requests(c, &prompt);
	if (err)
		goto fail;
	kvc_close(c);
	return 0;
fail:
	fprintf(stderr, "kvclient-demo: %s\n", strerror(-err));
	return 1;
}
