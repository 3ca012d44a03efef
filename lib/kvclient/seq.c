// SPDX-License-Identifier: MIT
/*
 * libkvclient: sequences, the batched STEP, activation, and the client's
 * copy of each block table that STEP replies keep exact.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static struct kvc_seq *seq_find(struct kvc *c, uint64_t id)
{
	uint32_t slot = (uint32_t)id;

	if (!slot || slot > c->seqs_cap || !c->seqs[slot - 1] || c->seqs[slot - 1]->id != id)
		return NULL;
	return c->seqs[slot - 1];
}

static int seq_add(struct kvc *c, uint64_t id)
{
	uint32_t slot = (uint32_t)id, cap;
	struct kvc_seq **seqs, *s;

	if (!slot)
		return -EBADMSG;
	if (slot > c->seqs_cap) {
		cap = c->seqs_cap ? c->seqs_cap : 64;
		while (cap < slot)
			cap *= 2;
		seqs = realloc(c->seqs, cap * sizeof(*seqs));
		if (!seqs)
			return -ENOMEM;
		memset(seqs + c->seqs_cap, 0, (cap - c->seqs_cap) * sizeof(*seqs));
		c->seqs = seqs;
		c->seqs_cap = cap;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->id = id;
	free(c->seqs[slot - 1] ? c->seqs[slot - 1]->frames : NULL);
	free(c->seqs[slot - 1]);
	c->seqs[slot - 1] = s;
	return 0;
}

static void seq_del(struct kvc *c, uint64_t id)
{
	struct kvc_seq *s = seq_find(c, id);

	if (!s)
		return;
	c->seqs[(uint32_t)id - 1] = NULL;
	free(s->frames);
	free(s);
}

/* Free every sequence record (kvc_close). */
void kvc_seqs_destroy(struct kvc *c)
{
	uint32_t i;

	for (i = 0; i < c->seqs_cap; i++) {
		if (c->seqs[i])
			free(c->seqs[i]->frames);
		free(c->seqs[i]);
	}
	free(c->seqs);
}

/* Set entries [first, nr_blocks) of the copy from @frames. */
static int seq_update(struct kvc_seq *s, uint32_t first, uint32_t nr_blocks,
		      const uint32_t *frames)
{
	uint32_t cap = s->cap ? s->cap : 16, *f;

	if (first > nr_blocks || (first > s->nr_blocks && s->valid))
		return -EBADMSG;
	if (nr_blocks > s->cap) {
		while (cap < nr_blocks)
			cap *= 2;
		f = realloc(s->frames, cap * sizeof(*f));
		if (!f)
			return -ENOMEM;
		s->frames = f;
		s->cap = cap;
	}
	memcpy(s->frames + first, frames, (nr_blocks - first) * sizeof(*frames));
	s->nr_blocks = nr_blocks;
	return 0;
}

static int seq_simple(struct kvc *c, uint16_t op, uint32_t pool, uint64_t seq, uint32_t n,
		      struct kvmem_seq_reply *rep)
{
	struct kvmem_seq_req req = { .pool = pool, .nr_tokens = n, .seq = seq };
	size_t len;
	void *r;
	int err;

	err = kvc_request(c, op, &req, sizeof(req), &r, &len);
	if (err < 0)
		return err;
	if (rep) {
		if (len < sizeof(*rep))
			return -EBADMSG;
		memcpy(rep, r, sizeof(*rep));
	}
	return 0;
}

/**
 * kvc_seq_create() - create an empty sequence in a pool
 * @c:    connection
 * @pool: pool from kvc_pool_open()
 * @seq:  receives its id
 *
 * Return: 0, -ENOENT, -EMFILE (too many sequences), -ENOMEM.
 */
int kvc_seq_create(struct kvc *c, const struct kvc_pool *pool, uint64_t *seq)
{
	struct kvmem_seq_reply rep;
	int err;

	err = seq_simple(c, KVMEM_OP_SEQ_CREATE, pool->handle, 0, 0, &rep);
	if (err)
		return err;
	err = seq_add(c, rep.seq);
	if (err)
		return err;
	*seq = rep.seq;
	return 0;
}

/**
 * kvc_seq_fork() - a new sequence sharing every block of @seq (n > 1
 * sampling, beam search); it starts inactive
 * @c:     connection
 * @seq:   parent
 * @child: receives the child's id
 *
 * Return: 0, -ENOENT, -EMFILE, -ENOMEM.
 */
int kvc_seq_fork(struct kvc *c, uint64_t seq, uint64_t *child)
{
	struct kvmem_seq_reply rep;
	int err;

	err = seq_simple(c, KVMEM_OP_SEQ_FORK, 0, seq, 0, &rep);
	if (err)
		return err;
	err = seq_add(c, rep.seq);
	if (err)
		return err;
	*child = rep.seq;
	return 0;
}

/**
 * kvc_seq_truncate() - drop tokens from the end (a rejected draft)
 * @c:         connection
 * @seq:       sequence
 * @nr_tokens: tokens to keep
 *
 * Return: 0, -ENOENT, -EINVAL (more tokens than it holds).
 */
int kvc_seq_truncate(struct kvc *c, uint64_t seq, uint32_t nr_tokens)
{
	struct kvmem_seq_reply rep;
	struct kvc_seq *s;
	int err;

	err = seq_simple(c, KVMEM_OP_SEQ_TRUNCATE, 0, seq, nr_tokens, &rep);
	if (err)
		return err;
	s = seq_find(c, seq);
	if (s && rep.nr_blocks <= s->nr_blocks)
		s->nr_blocks = rep.nr_blocks;
	return 0;
}

/**
 * kvc_seq_free() - free a sequence
 * @c:   connection
 * @seq: sequence
 *
 * Return: 0 or -ENOENT.
 */
int kvc_seq_free(struct kvc *c, uint64_t seq)
{
	int err = seq_simple(c, KVMEM_OP_SEQ_FREE, 0, seq, 0, NULL);

	if (!err)
		seq_del(c, seq);
	return err;
}

static int batch(struct kvc *c, uint16_t op, const uint64_t *seqs, uint32_t n,
		 uint32_t flags, int32_t *failed)
{
	struct kvmem_seq_batch *req = (struct kvmem_seq_batch *)(c->buf + sizeof(struct kvmem_hdr));
	struct kvmem_batch_reply rep;
	size_t len = sizeof(*req) + (size_t)n * sizeof(uint64_t);
	struct kvc_seq *s;
	uint32_t i;
	void *r;
	int err;

	if (len > KVMEM_MSG_MAX - sizeof(struct kvmem_hdr))
		return -E2BIG;
	memset(req, 0, sizeof(*req));
	req->nr = n;
	req->flags = flags;
	req->ids_off = sizeof(*req);
	memcpy(req + 1, seqs, (size_t)n * sizeof(uint64_t));
	for (i = 0; i < n; i++) {
		s = seq_find(c, seqs[i]);
		if (s)
			s->valid = 0;
	}
	err = kvc_request(c, op, req, len, &r, &len);
	if (failed && len >= sizeof(rep)) {
		memcpy(&rep, r, sizeof(rep));
		*failed = rep.failed;
	}
	return err < 0 ? err : 0;
}

/**
 * kvc_activate() - make sequences resident on the device and pinned
 * @c:      connection
 * @seqs:   sequence ids
 * @n:      how many
 * @flags:  KVMEM_NOWAIT: -EAGAIN instead of waiting or reclaiming
 * @failed: receives the index that failed, or -1; may be NULL
 *
 * All or nothing. Their block tables must be read again (kvc_block_table()
 * does it) since activation may move blocks; kvc_step() activates too, and
 * returns the tables with it.
 *
 * Return: 0, -ENOENT, -EAGAIN, -ENOMEM (the device tier cannot hold them),
 * -EIO.
 */
int kvc_activate(struct kvc *c, const uint64_t *seqs, uint32_t n, uint32_t flags,
		 int32_t *failed)
{
	return batch(c, KVMEM_OP_ACTIVATE, seqs, n, flags, failed);
}

/**
 * kvc_deactivate() - unpin sequences; their blocks may then be reclaimed
 * @c:    connection
 * @seqs: sequence ids
 * @n:    how many
 *
 * The caller's kernels must be done with their blocks (on a GPU: the work
 * queued on them has completed).
 *
 * Return: 0 or -ENOENT (then none was deactivated).
 */
int kvc_deactivate(struct kvc *c, const uint64_t *seqs, uint32_t n)
{
	return batch(c, KVMEM_OP_DEACTIVATE, seqs, n, 0, NULL);
}

/**
 * kvc_block_table() - a sequence's block table (device frames)
 * @c:         connection
 * @seq:       active sequence
 * @frames:    receives the table, valid until the next call on @c
 * @nr_blocks: receives its length
 *
 * Served from the copy the last kvc_step() updated, without a round trip;
 * asks the daemon only when that copy is not exact.
 *
 * Return: 0, -ENOENT, -EINVAL (not active).
 */
int kvc_block_table(struct kvc *c, uint64_t seq, const uint32_t **frames,
		    uint32_t *nr_blocks)
{
	struct kvmem_seq_req req = { .seq = seq };
	struct kvmem_seq_reply rep;
	struct kvc_seq *s = seq_find(c, seq);
	size_t len;
	void *r;
	int err;

	if (!s)
		return -ENOENT;
	if (!s->valid) {
		err = kvc_request(c, KVMEM_OP_BLOCK_TABLE, &req, sizeof(req), &r, &len);
		if (err < 0)
			return err;
		memcpy(&rep, r, sizeof(rep));
		if (len < sizeof(rep) + (size_t)rep.nr_blocks * sizeof(uint32_t))
			return -EBADMSG;
		s->valid = 0;
		err = seq_update(s, 0, rep.nr_blocks, (const uint32_t *)((char *)r + sizeof(rep)));
		if (err)
			return err;
		s->valid = 1;
	}
	*frames = s->frames;
	*nr_blocks = s->nr_blocks;
	return 0;
}

static size_t step_build(struct kvc *c, const struct kvc_step_seq *seqs, uint32_t n,
			 uint32_t flags, uint64_t total)
{
	struct kvmem_step *req = (struct kvmem_step *)(c->buf + sizeof(struct kvmem_hdr));
	struct kvmem_step_seq *ss = (struct kvmem_step_seq *)(req + 1);
	uint32_t i, *tok = (uint32_t *)(ss + n);
	bool ids = true;

	memset(req, 0, sizeof(*req));
	req->nr_seqs = n;
	req->flags = flags;
	req->seqs_off = sizeof(*req);
	for (i = 0; i < n; i++) {
		ss[i] = (struct kvmem_step_seq){ .seq = seqs[i].seq, .nr_tokens = seqs[i].nr_tokens };
		if (seqs[i].nr_tokens && !seqs[i].token_ids)
			ids = false;
	}
	if (!ids)
		return sizeof(*req) + n * sizeof(*ss);
	req->tokens_off = (uint32_t)((char *)tok - (char *)req);
	for (i = 0; i < n; i++) {
		memcpy(tok, seqs[i].token_ids, seqs[i].nr_tokens * sizeof(*tok));
		tok += seqs[i].nr_tokens;
	}
	return sizeof(*req) + n * sizeof(*ss) + total * sizeof(*tok);
}

/* Copy each done sequence's slots out and update its table copy. */
static int step_apply(struct kvc *c, struct kvc_step_seq *seqs, const char *r, size_t len)
{
	const struct kvmem_step_reply *h = (const void *)r;
	struct kvmem_step_seq_reply sr;
	const char *slots, *frames;
	struct kvc_seq *s;
	uint32_t i;
	int err;

	if (len < sizeof(*h) || h->seqs_off > len || h->slots_off > len || h->frames_off > len ||
	    h->batch.done > (len - h->seqs_off) / sizeof(sr))
		return -EBADMSG;
	slots = r + h->slots_off;
	frames = r + h->frames_off;
	for (i = 0; i < h->batch.done; i++) {
		memcpy(&sr, r + h->seqs_off + (size_t)i * sizeof(sr), sizeof(sr));
		if (sr.nr_slots != seqs[i].nr_tokens || sr.first_changed > sr.nr_blocks ||
		    (size_t)(r + len - frames) / 4 < sr.nr_blocks - sr.first_changed ||
		    (size_t)(r + len - slots) / 8 < sr.nr_slots)
			return -EBADMSG;
		memcpy(seqs[i].slots, slots, (size_t)sr.nr_slots * sizeof(uint64_t));
		slots += (size_t)sr.nr_slots * sizeof(uint64_t);
		s = seq_find(c, seqs[i].seq);
		if (s) {
			if (!s->valid)
				sr.first_changed = 0;	/* the reply has it all then */
			err = seq_update(s, sr.first_changed, sr.nr_blocks, (const uint32_t *)frames);
			if (err)
				return err;
			s->valid = 1;
		}
		frames += (size_t)(sr.nr_blocks - sr.first_changed) * sizeof(uint32_t);
	}
	return 0;
}

/**
 * kvc_step() - one engine step for a batch of sequences, in one round trip
 * @c:      connection
 * @seqs:   the sequences, their new tokens and where their slots go
 * @n:      how many, 1..KVMEM_STEP_MAX_SEQS
 * @flags:  KVMEM_NOWAIT
 * @failed: receives the index that failed, or -1; may be NULL
 *
 * Each sequence is made resident and pinned, its tokens appended, its
 * slots written to seqs[i].slots, and the client's copy of its block table
 * updated (kvc_block_table() then needs no round trip). Processing stops at
 * the first failure: the sequences before it are done, the failed one is
 * unchanged.
 *
 * Return: 0, -EINVAL, -ENOENT, -EAGAIN, -ENOMEM, -ENOBUFS (reply too
 * large: split the batch), -EIO.
 */
int kvc_step(struct kvc *c, struct kvc_step_seq *seqs, uint32_t n, uint32_t flags,
	     int32_t *failed)
{
	struct kvmem_step_reply h;
	uint64_t total = 0;
	uint32_t i;
	size_t len;
	void *r;
	int err, err2;

	if (!n || n > KVMEM_STEP_MAX_SEQS)
		return -EINVAL;
	for (i = 0; i < n; i++)
		total += seqs[i].nr_tokens;
	if (total > KVMEM_STEP_MAX_TOKENS)
		return -EINVAL;
	len = step_build(c, seqs, n, flags, total);
	err = kvc_request(c, KVMEM_OP_STEP, c->buf + sizeof(struct kvmem_hdr), len, &r, &len);
	if (len < sizeof(h))
		return err < 0 ? err : -EBADMSG;
	memcpy(&h, r, sizeof(h));
	if (failed)
		*failed = h.batch.failed;
	err2 = step_apply(c, seqs, r, len);
	return err < 0 ? err : err2;
}
