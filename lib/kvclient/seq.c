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

/** kvc_seq_lookup() - the client's record of sequence @id, or NULL */
struct kvc_seq *kvc_seq_lookup(struct kvc *c, uint64_t id)
{
	return seq_find(c, id);
}

static void seq_record_free(struct kvc_seq *s)
{
	if (!s)
		return;
	free(s->frames);
	free(s->pend);
	free(s->lids);
	free(s);
}

static int seq_add(struct kvc *c, uint64_t id, uint32_t pool, struct kvc_seq **out)
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
	s->pool = pool;
	s->private_tail = 1;
	seq_record_free(c->seqs[slot - 1]);
	c->seqs[slot - 1] = s;
	*out = s;
	return 0;
}

static void seq_del(struct kvc *c, uint64_t id)
{
	struct kvc_seq *s = seq_find(c, id);

	if (!s)
		return;
	c->seqs[(uint32_t)id - 1] = NULL;
	seq_record_free(s);
}

/* Free every sequence record (kvc_close). */
void kvc_seqs_destroy(struct kvc *c)
{
	uint32_t i;

	for (i = 0; i < c->seqs_cap; i++)
		seq_record_free(c->seqs[i]);
	free(c->seqs);
}

/* Room for @nr blocks in the table copy and the pending list. */
static int seq_grow(struct kvc_seq *s, uint32_t nr)
{
	uint32_t cap = s->cap ? s->cap : 16, *f;

	if (nr <= s->cap)
		return 0;
	while (cap < nr)
		cap *= 2;
	f = realloc(s->frames, cap * sizeof(*f));
	if (!f)
		return -ENOMEM;
	s->frames = f;
	f = realloc(s->pend, cap * sizeof(*f));
	if (!f)
		return -ENOMEM;
	s->pend = f;
	s->cap = cap;
	return 0;
}

/* Set entries [first, nr_blocks) of the copy from @frames. */
static int seq_update(struct kvc_seq *s, uint32_t first, uint32_t nr_blocks,
		      const uint32_t *frames)
{
	int err;

	if (first > nr_blocks || (first > s->nr_blocks && s->valid))
		return -EBADMSG;
	err = seq_grow(s, nr_blocks);
	if (err)
		return err;
	if (nr_blocks > first)
		memcpy(s->frames + first, frames, (nr_blocks - first) * sizeof(*frames));
	s->nr_blocks = nr_blocks;
	return 0;
}

static int seq_simple(struct kvc *c, uint16_t op, uint32_t pool, uint64_t seq, uint32_t n,
		      struct kvmem_seq_reply *rep)
{
	struct kvmem_seq_req req = { .pool = pool, .nr_tokens = n, .seq = seq };
	int err = kvc_call(c, op, &req, sizeof(req), rep, sizeof(*rep));

	return err < 0 ? err : 0;
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
	int idx = kvc_pool_index(c, pool), err;
	struct kvc_seq *s;

	if (idx < 0)
		return -ENOENT;
	err = seq_simple(c, KVMEM_OP_SEQ_CREATE, pool->handle, 0, 0, &rep);
	if (err)
		return err;
	err = seq_add(c, rep.seq, (uint32_t)idx, &s);
	if (err)
		return err;
	*seq = rep.seq;
	return 0;
}

static int sync_seqs(struct kvc *c, const uint64_t *seqs, uint32_t n);

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
	struct kvc_seq *p = seq_find(c, seq), *s;
	struct kvmem_seq_reply rep;
	int err;

	if (!p)
		return -ENOENT;
	err = sync_seqs(c, &seq, 1);
	if (err)
		return err;
	err = seq_simple(c, KVMEM_OP_SEQ_FORK, 0, seq, 0, &rep);
	if (err)
		return err;
	err = seq_add(c, rep.seq, p->pool, &s);
	if (err)
		return err;
	s->nr_tokens = s->synced = rep.nr_tokens;
	s->private_tail = 0;
	p->private_tail = 0;
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
	struct kvc_seq *s = seq_find(c, seq);
	struct kvmem_seq_reply rep;
	int err;

	err = s ? sync_seqs(c, &seq, 1) : 0;
	if (err)
		return err;
	err = seq_simple(c, KVMEM_OP_SEQ_TRUNCATE, 0, seq, nr_tokens, &rep);
	if (err)
		return err;
	if (s) {
		if (rep.nr_blocks <= s->nr_blocks)
			s->nr_blocks = rep.nr_blocks;
		s->nr_tokens = s->synced = rep.nr_tokens;
		s->private_tail = 0;	/* a fork may share the kept tail */
	}
	return 0;
}

/**
 * kvc_seq_free() - free a sequence
 * @c:   connection
 * @seq: sequence
 *
 * Reserve frames it took locally and the daemon never heard of go back to
 * the client's reserve.
 *
 * Return: 0 or -ENOENT.
 */
int kvc_seq_free(struct kvc *c, uint64_t seq)
{
	struct kvc_seq *s = seq_find(c, seq);
	struct kvc_stock *st;
	int err = seq_simple(c, KVMEM_OP_SEQ_FREE, 0, seq, 0, NULL);

	if (err || !s)
		return err;
	st = c->stock[s->pool];
	if (s->nr_pend)
		memcpy(st->frames + st->nr, s->pend, s->nr_pend * sizeof(uint32_t));
	st->nr += s->nr_pend;
	st->pending -= s->nr_pend;
	seq_del(c, seq);
	return 0;
}

static int batch(struct kvc *c, uint16_t op, const uint64_t *seqs, uint32_t n,
		 uint32_t flags, int32_t *failed)
{
	struct kvmem_seq_batch *req = (struct kvmem_seq_batch *)(c->buf + sizeof(struct kvmem_hdr));
	struct kvmem_batch_reply rep = { .failed = -1 };
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
	err = kvc_request(c, op, req, len, &r, &len);
	if (len >= sizeof(rep))
		memcpy(&rep, r, sizeof(rep));
	if (failed)
		*failed = rep.failed;
	for (i = 0; i < rep.done; i++) {
		s = seq_find(c, seqs[i]);
		if (s) {
			s->valid = 0;
			s->active = op == KVMEM_OP_ACTIVATE;
		}
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
 * Tokens appended locally (kvc_append()) are told to the daemon first. The
 * caller's kernels must be done with the blocks (on a GPU: the work queued
 * on them has completed).
 *
 * Return: 0 or -ENOENT (then none was deactivated).
 */
int kvc_deactivate(struct kvc *c, const uint64_t *seqs, uint32_t n)
{
	int err = sync_seqs(c, seqs, n);

	return err ? err : batch(c, KVMEM_OP_DEACTIVATE, seqs, n, 0, NULL);
}

/**
 * kvc_block_table() - a sequence's block table (device frames)
 * @c:         connection
 * @seq:       active sequence
 * @frames:    receives the table, valid until the next call on @c
 * @nr_blocks: receives its length
 *
 * Served from the copy that kvc_step() and kvc_append() keep, without a
 * round trip; asks the daemon only when that copy is not exact.
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
		err = sync_seqs(c, &seq, 1);
		if (err)
			return err;
		err = kvc_request(c, KVMEM_OP_BLOCK_TABLE, &req, sizeof(req), &r, &len);
		if (err < 0)
			return err;
		memcpy(&rep, r, sizeof(rep));
		if (len < sizeof(rep) + (size_t)rep.nr_blocks * sizeof(uint32_t))
			return -EBADMSG;
		err = seq_update(s, 0, rep.nr_blocks, (const uint32_t *)((char *)r + sizeof(rep)));
		if (err)
			return err;
		s->valid = 1;
	}
	*frames = s->frames;
	*nr_blocks = s->nr_blocks;
	return 0;
}

/*
 * Keep the ids of @n tokens about to be appended locally; without ids (or
 * memory for them) no ids go for this sequence until the next sync.
 */
static void seq_note_ids(struct kvc_seq *s, const uint32_t *ids, uint32_t n)
{
	uint32_t have = s->nr_tokens - s->synced, cap = s->lids_cap ? s->lids_cap : 64, *l;

	if (!ids || s->lids_lost || n > KVMEM_STEP_MAX_TOKENS - have) {
		s->lids_lost = 1;
		return;
	}
	while (cap < have + n)
		cap *= 2;
	if (cap > s->lids_cap) {
		l = realloc(s->lids, cap * sizeof(*l));
		if (!l) {
			s->lids_lost = 1;
			return;
		}
		s->lids = l;
		s->lids_cap = cap;
	}
	memcpy(s->lids + have, ids, n * sizeof(*ids));
}

/**
 * kvc_append_ids() - append tokens to an active sequence without a round trip
 * @c:     connection
 * @seq:   sequence, active, with an exact table copy (after a kvc_step())
 * @n:     tokens
 * @ids:   their ids, kept until the daemon hears of the tokens (the prefix
 *         cache names blocks by them); NULL when unknown
 * @slots: receives their slots
 *
 * Tokens go into the sequence's last block when it is its own, and into
 * new blocks taken from the client's reserve (kvc_reserve()); the daemon
 * hears of them with the next request that names the sequence (kvc_step(),
 * kvc_deactivate(), kvc_sync(), ...). Nothing is sent.
 *
 * Return: 0, -ENOENT, or -EAGAIN when this needs the daemon (the sequence
 * is not active, its tail block is shared and must be copied, or the
 * reserve is short): use kvc_step() then.
 */
int kvc_append_ids(struct kvc *c, uint64_t seq, uint32_t n, const uint32_t *ids,
		   uint64_t *slots)
{
	struct kvc_seq *s = seq_find(c, seq);
	const struct kvc_pool *p;
	struct kvc_stock *st;
	uint32_t bt, pos, need, i, tail;

	if (!s)
		return -ENOENT;
	if (!n)
		return 0;
	if (!s->active || !s->valid || n > KVMEM_STEP_MAX_TOKENS)
		return -EAGAIN;
	p = c->pools[s->pool];
	bt = p->geom.block_tokens;
	pos = s->nr_tokens;
	tail = pos - (s->nr_blocks - !!s->nr_blocks) * bt;	/* tokens in the last block */
	if (n == 1 && s->nr_blocks && tail < bt) {
		/* The decode step: one token into the last block, no division. */
		if (tail && !s->private_tail)
			return -EAGAIN;
		slots[0] = (uint64_t)s->frames[s->nr_blocks - 1] * bt + tail;
		seq_note_ids(s, ids, 1);
		s->nr_tokens = pos + 1;
		return 0;
	}
	if (pos % bt && !s->private_tail)
		return -EAGAIN;
	st = c->stock[s->pool];
	need = (uint32_t)(((uint64_t)pos + n + bt - 1) / bt) - s->nr_blocks;
	if (need > st->nr || seq_grow(s, s->nr_blocks + need))
		return -EAGAIN;
	for (i = 0; i < need; i++) {
		s->frames[s->nr_blocks++] = st->frames[--st->nr];
		s->pend[s->nr_pend++] = s->frames[s->nr_blocks - 1];
	}
	st->pending += need;
	for (i = 0; i < n; i++)
		slots[i] = (uint64_t)s->frames[(pos + i) / bt] * bt + (pos + i) % bt;
	seq_note_ids(s, ids, n);
	s->nr_tokens = pos + n;
	if (need)
		s->private_tail = 1;
	return 0;
}


/**
 * kvc_append() - kvc_append_ids() without token ids (the blocks these
 * tokens fill never enter the prefix cache)
 * @c:     connection
 * @seq:   sequence
 * @n:     tokens
 * @slots: receives their slots
 *
 * Return: as kvc_append_ids().
 */
int kvc_append(struct kvc *c, uint64_t seq, uint32_t n, uint64_t *slots)
{
	return kvc_append_ids(c, seq, n, NULL, slots);
}

/*
 * One RESERVE request for stock @st of @pool: give back its @nr_release
 * first frames (all of them, or none), then top the daemon's count of the
 * reserve up to @target; the frames it adds join the stock. Return: frames
 * added, or a negative errno (the stock unchanged).
 */
static int reserve_call(struct kvc *c, const struct kvc_pool *pool, struct kvc_stock *st,
			uint32_t target, uint32_t nr_release)
{
	struct kvmem_reserve_reply rep;
	struct kvmem_reserve *req;
	size_t len, size = sizeof(*req) + (size_t)nr_release * sizeof(uint32_t);
	void *r;
	int err;

	req = calloc(1, size);
	if (!req)
		return -ENOMEM;
	req->pool = pool->handle;
	req->target = target;
	req->nr_release = nr_release;
	req->release_off = nr_release ? sizeof(*req) : 0;
	memcpy(req + 1, st->frames, (size_t)nr_release * sizeof(uint32_t));
	err = kvc_request(c, KVMEM_OP_RESERVE, req, size, &r, &len);
	free(req);
	if (err < 0)
		return err;
	if (!r || len < sizeof(rep))
		return -EBADMSG;
	memcpy(&rep, r, sizeof(rep));
	if (len < sizeof(rep) + (size_t)rep.nr_added * sizeof(uint32_t) ||
	    st->nr - nr_release + rep.nr_added > KVMEM_RESERVE_MAX)
		return -EBADMSG;
	st->nr -= nr_release;
	memmove(st->frames, st->frames + nr_release, st->nr * sizeof(uint32_t));
	memcpy(st->frames + st->nr, (char *)r + sizeof(rep), rep.nr_added * sizeof(uint32_t));
	st->nr += rep.nr_added;
	return err;
}

/**
 * kvc_reserve() - top the client's reserve of a pool up to @nr free frames
 * @c:    connection
 * @pool: pool
 * @nr:   free frames wanted in hand, 0..KVMEM_RESERVE_MAX (including those
 *        held already; frames made blocks but not yet told count apart)
 *
 * The daemon fills reserves only from memory above the pool's low
 * watermark: under pressure fewer frames, or none, are added, and the
 * client's appends go through kvc_step(), where reclaim makes room.
 *
 * Return: frames added (possibly fewer than asked, or 0), -EINVAL,
 * -ENOENT.
 */
int kvc_reserve(struct kvc *c, const struct kvc_pool *pool, uint32_t nr)
{
	int idx = kvc_pool_index(c, pool);
	struct kvc_stock *st;

	if (idx < 0)
		return -ENOENT;
	st = c->stock[idx];
	if (nr > KVMEM_RESERVE_MAX || nr + st->pending > KVMEM_RESERVE_MAX)
		return -EINVAL;
	return reserve_call(c, pool, st, nr + st->pending, 0);
}

/**
 * kvc_reserve_release() - give the client's reserve of a pool back
 * @c:    connection
 * @pool: pool
 *
 * The reserve's free frames (not those made blocks by kvc_append_ids(),
 * which the daemon learns of with the sequence) return to the pool in one
 * round trip, as the kernel drains its per-CPU page lists before it calls
 * memory exhausted: a kvc_step() that failed with -ENOMEM may find them
 * then. kvc_reserve() fills the reserve again later.
 *
 * Return: frames given back (0 when the reserve held none), -ENOENT, or
 * the daemon's error (the reserve is kept then).
 */
int kvc_reserve_release(struct kvc *c, const struct kvc_pool *pool)
{
	int idx = kvc_pool_index(c, pool), err;
	struct kvc_stock *st;
	uint32_t n;

	if (idx < 0)
		return -ENOENT;
	st = c->stock[idx];
	n = st->nr;
	if (!n)
		return 0;
	/* the target is what stays counted, the frames made blocks: none added */
	err = reserve_call(c, pool, st, st->pending, n);
	return err < 0 ? err : (int)n;
}

/*
 * Token ids go only when every sequence sends all of its tokens' ids:
 * those of its local appends first, then those of its new tokens.
 */
static bool seq_has_ids(struct kvc *c, const struct kvc_step_seq *ss)
{
	struct kvc_seq *s = seq_find(c, ss->seq);

	return (!ss->nr_tokens || ss->token_ids) &&
	       !(s && s->nr_tokens != s->synced && s->lids_lost);
}

static bool step_ids(struct kvc *c, const struct kvc_step_seq *seqs, uint32_t n)
{
	uint64_t tokens = 0;
	struct kvc_seq *s;
	uint32_t i;

	for (i = 0; i < n; i++) {
		if (!seq_has_ids(c, &seqs[i]))
			return false;
		s = seq_find(c, seqs[i].seq);
		tokens += seqs[i].nr_tokens + (s ? s->nr_tokens - s->synced : 0);
	}
	/* The daemon takes ids for at most one step's worth of tokens. */
	return tokens <= KVMEM_STEP_MAX_TOKENS;
}

/*
 * Check a STEP before building it: no sequence twice (its local tokens
 * would be counted twice), and the message and token limits.
 */
static int step_check(struct kvc *c, const struct kvc_step_seq *seqs, uint32_t n,
		      uint32_t flags)
{
	uint64_t total = 0, local = 0, words = 0;
	struct kvc_seq *s;
	uint32_t i;

	c->stamp++;
	for (i = 0; i < n; i++) {
		s = seq_find(c, seqs[i].seq);
		if (s) {
			if (s->stamp == c->stamp)
				return -EINVAL;
			s->stamp = c->stamp;
			local += s->nr_tokens - s->synced;
			words += s->nr_pend;
		}
		total += seqs[i].nr_tokens;
	}
	/* NOSLOTS tells only what was appended locally: no new tokens. */
	if (total > KVMEM_STEP_MAX_TOKENS || (total && (flags & KVMEM_STEP_NOSLOTS)) ||
	    (total + local > KVMEM_STEP_MAX_TOKENS && !(flags & KVMEM_STEP_NOSLOTS)))
		return -EINVAL;
	if (words > KVMEM_RESERVE_MAX)		/* reserve frames, all pools together */
		return -E2BIG;
	if (step_ids(c, seqs, n))
		words += total + local;
	if (sizeof(struct kvmem_step) + n * sizeof(struct kvmem_step_seq) + words * 4 >
	    KVMEM_MSG_MAX - sizeof(struct kvmem_hdr))
		return -E2BIG;
	return 0;
}

/* Build a STEP: each sequence's locally appended tokens and frames first. */
static size_t step_build(struct kvc *c, const struct kvc_step_seq *seqs, uint32_t n,
			 uint32_t flags, uint64_t *total)
{
	struct kvmem_step *req = (struct kvmem_step *)(c->buf + sizeof(struct kvmem_hdr));
	struct kvmem_step_seq *ss = (struct kvmem_step_seq *)(req + 1);
	uint32_t i, *out = (uint32_t *)(ss + n), nf = 0;
	bool ids = step_ids(c, seqs, n);
	struct kvc_seq *s;

	memset(req, 0, sizeof(*req));
	req->nr_seqs = n;
	req->flags = flags;
	req->seqs_off = sizeof(*req);
	*total = 0;
	for (i = 0; i < n; i++) {
		s = seq_find(c, seqs[i].seq);
		ss[i] = (struct kvmem_step_seq){ .seq = seqs[i].seq, .nr_tokens = seqs[i].nr_tokens };
		if (s) {
			ss[i].nr_tokens += s->nr_tokens - s->synced;
			ss[i].nr_frames = s->nr_pend;
			if (s->nr_pend)
				memcpy(out + nf, s->pend, s->nr_pend * sizeof(*out));
			nf += s->nr_pend;
		}
		*total += ss[i].nr_tokens;
	}
	if (nf)
		req->frames_off = (uint32_t)((char *)out - (char *)req);
	out += nf;
	if (ids && *total) {
		req->tokens_off = (uint32_t)((char *)out - (char *)req);
		for (i = 0; i < n; i++) {
			s = seq_find(c, seqs[i].seq);
			if (s && s->nr_tokens != s->synced) {
				memcpy(out, s->lids, (s->nr_tokens - s->synced) * sizeof(*out));
				out += s->nr_tokens - s->synced;
			}
			if (seqs[i].nr_tokens)
				memcpy(out, seqs[i].token_ids, seqs[i].nr_tokens * sizeof(*out));
			out += seqs[i].nr_tokens;
		}
	}
	return (size_t)((char *)out - (char *)req);
}

/* The daemon took sequence @s's local state and @new more tokens. */
static void seq_synced(struct kvc *c, struct kvc_seq *s, uint32_t new)
{
	c->stock[s->pool]->pending -= s->nr_pend;
	if (new || s->nr_tokens != s->synced)
		s->private_tail = 1;
	s->nr_pend = 0;
	s->lids_lost = 0;
	s->nr_tokens += new;
	s->synced = s->nr_tokens;
	s->active = 1;
}

/* Copy each done sequence's slots out and update its table copy. */
static int step_apply(struct kvc *c, struct kvc_step_seq *seqs, const char *r, size_t len)
{
	const struct kvmem_step_reply *h = (const void *)r;
	struct kvmem_step_seq_reply sr;
	const char *slots, *frames;
	struct kvc_seq *s;
	uint32_t i, local;
	int err;

	if (len < sizeof(*h) || h->seqs_off > len || h->slots_off > len || h->frames_off > len ||
	    h->batch.done > (len - h->seqs_off) / sizeof(sr))
		return -EBADMSG;
	slots = r + h->slots_off;
	frames = r + h->frames_off;
	for (i = 0; i < h->batch.done; i++) {
		memcpy(&sr, r + h->seqs_off + (size_t)i * sizeof(sr), sizeof(sr));
		s = seq_find(c, seqs[i].seq);
		local = s ? s->nr_tokens - s->synced : 0;
		if ((sr.nr_slots != seqs[i].nr_tokens + local &&
		     !(sr.nr_slots == 0 && !seqs[i].nr_tokens)) || sr.first_changed > sr.nr_blocks ||
		    (size_t)(r + len - frames) / 4 < sr.nr_blocks - sr.first_changed ||
		    (size_t)(r + len - slots) / 8 < sr.nr_slots)
			return -EBADMSG;
		if (seqs[i].nr_tokens)
			memcpy(seqs[i].slots, slots + (size_t)local * sizeof(uint64_t),
			       (size_t)seqs[i].nr_tokens * sizeof(uint64_t));
		slots += (size_t)sr.nr_slots * sizeof(uint64_t);
		if (s) {
			/*
			 * A partial update applies only to an exact copy; one
			 * from entry 0 (an activation) makes any copy exact.
			 */
			if (s->valid || !sr.first_changed) {
				err = seq_update(s, sr.first_changed, sr.nr_blocks,
						 (const uint32_t *)frames);
				if (err)
					return err;
				s->valid = 1;
			}
			seq_synced(c, s, seqs[i].nr_tokens);
		}
		frames += (size_t)(sr.nr_blocks - sr.first_changed) * sizeof(uint32_t);
	}
	return 0;
}

/* One STEP message for the whole batch. */
static int step_msg(struct kvc *c, struct kvc_step_seq *seqs, uint32_t n, uint32_t flags,
		    int32_t *failed)
{
	struct kvmem_step_reply h;
	uint64_t total;
	size_t len;
	void *r;
	int err, err2;

	err = step_check(c, seqs, n, flags);	/* kvc_step() checked @n */
	if (err)
		return err;
	len = step_build(c, seqs, n, flags, &total);
	err = kvc_request(c, KVMEM_OP_STEP, c->buf + sizeof(struct kvmem_hdr), len, &r, &len);
	if (len < sizeof(h))
		return err < 0 ? err : -EBADMSG;
	memcpy(&h, r, sizeof(h));
	if (failed)
		*failed = h.batch.failed;
	err2 = step_apply(c, seqs, r, len);
	return err < 0 ? err : err2;
}

/*
 * A batch mixing sequences with ids and without: two STEPs, those with ids
 * first. @failed is mapped back to the caller's indices.
 */
static int step_split(struct kvc *c, struct kvc_step_seq *seqs, uint32_t n, uint32_t flags,
		      int32_t *failed)
{
	struct kvc_step_seq *part = malloc(n * sizeof(*part));
	uint32_t *idx = malloc(n * sizeof(*idx)), i, k = 0, first;
	int32_t f = -1;
	int err = -ENOMEM, pass;

	if (failed)
		*failed = -1;
	if (!part || !idx)
		goto out;
	for (pass = 0; pass < 2; pass++) {
		first = k;
		for (i = 0; i < n; i++) {
			if (seq_has_ids(c, &seqs[i]) == !pass) {
				idx[k] = i;
				part[k++] = seqs[i];
			}
		}
		err = step_msg(c, part + first, k - first, flags, &f);
		for (i = first; i < k; i++)	/* slots were written through the copies */
			seqs[idx[i]] = part[i];
		if (err) {
			/* A second part failing before any of it ran: the first is done. */
			if (failed && (f >= 0 || pass))
				*failed = (int32_t)idx[first + (f >= 0 ? (uint32_t)f : 0)];
			break;
		}
	}
out:
	free(part);
	free(idx);
	return err;
}

/**
 * kvc_step() - one engine step for a batch of sequences, in one round trip
 * @c:      connection
 * @seqs:   the sequences, their new tokens and where their slots go
 * @n:      how many, 1..KVMEM_STEP_MAX_SEQS
 * @flags:  KVMEM_NOWAIT; KVMEM_STEP_NOSLOTS when no sequence appends new
 *          tokens (slots are then not returned)
 * @failed: receives the index that failed, or -1; may be NULL
 *
 * Each sequence is made resident and pinned, its tokens appended (after
 * any it got locally through kvc_append(), which the daemon learns of
 * here), its slots written to seqs[i].slots, and the client's copy of its
 * block table updated (kvc_block_table() then needs no round trip).
 * Processing stops at the first failure: the sequences before it are done,
 * the failed one is unchanged. A batch that mixes sequences with token ids
 * and without goes as two messages, those with ids first (so that the
 * others cost them no caching); a failure in the second means the first
 * is done.
 *
 * Return: 0, -EINVAL (bad counts, a sequence named twice), -E2BIG (the
 * request would not fit one message), -ENOENT, -EAGAIN, -ENOMEM,
 * -ENOBUFS (reply too large: split the batch), -EIO.
 */
int kvc_step(struct kvc *c, struct kvc_step_seq *seqs, uint32_t n, uint32_t flags,
	     int32_t *failed)
{
	uint32_t i, with = 0;
	int err;

	if (failed)
		*failed = -1;	/* until a reply says which */
	if (!n || n > KVMEM_STEP_MAX_SEQS)
		return -EINVAL;
	for (i = 0; i < n; i++)
		with += seq_has_ids(c, &seqs[i]);
	if (!with || with == n)
		return step_msg(c, seqs, n, flags, failed);
	/* The whole batch's rules (no sequence twice, the limits) first. */
	err = step_check(c, seqs, n, flags);
	if (err) {
		if (failed)
			*failed = -1;
		return err;
	}
	return step_split(c, seqs, n, flags, failed);
}

/* Sequences per sync STEP: the reply carries their local tokens' slots. */
#define SYNC_BATCH 256

/* Tell the daemon what @seqs got locally, in STEPs of no new tokens. */
static int sync_seqs(struct kvc *c, const uint64_t *seqs, uint32_t n)
{
	struct kvc_step_seq batch[SYNC_BATCH];
	uint64_t slots[1], tokens = 0, frames = 0;
	struct kvc_seq *s;
	uint32_t i, k = 0, local;
	int err;

	for (i = 0; i < n; i++) {
		s = seq_find(c, seqs[i]);
		if (!s || s->nr_tokens == s->synced)
			continue;
		/*
		 * Batches of at most a step's tokens, so that their ids can go,
		 * and of at most one reserve's frames, all pools together.
		 */
		local = s->nr_tokens - s->synced;
		if (k && (k == SYNC_BATCH || tokens + local > KVMEM_STEP_MAX_TOKENS ||
			  frames + s->nr_pend > KVMEM_RESERVE_MAX)) {
			err = kvc_step(c, batch, k, KVMEM_STEP_NOSLOTS, NULL);
			if (err)
				return err;
			k = 0;
			tokens = 0;
			frames = 0;
		}
		batch[k++] = (struct kvc_step_seq){ .seq = seqs[i], .slots = slots };
		tokens += local;
		frames += s->nr_pend;
	}
	return k ? kvc_step(c, batch, k, KVMEM_STEP_NOSLOTS, NULL) : 0;
}

/**
 * kvc_sync() - tell the daemon every token and block appended locally
 * @c: connection
 *
 * Return: 0 or the first STEP's error.
 */
int kvc_sync(struct kvc *c)
{
	uint64_t *ids = malloc((c->seqs_cap + 1) * sizeof(*ids));
	uint32_t i, n = 0;
	int err;

	if (!ids)
		return -ENOMEM;
	for (i = 0; i < c->seqs_cap; i++)
		if (c->seqs[i] && c->seqs[i]->nr_tokens != c->seqs[i]->synced)
			ids[n++] = c->seqs[i]->id;
	err = sync_seqs(c, ids, n);
	free(ids);
	return err;
}
