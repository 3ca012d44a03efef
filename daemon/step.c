// SPDX-License-Identifier: MIT
/*
 * STEP: the batched per-step request. For each sequence of the batch, make
 * it resident and pinned (activate) and append its new tokens; reply with
 * each token's slot and every block-table entry that is new or changed, so
 * that the client's copy of the table stays exact without re-reading it.
 *
 * Everything is checked before anything changes: counts, offsets, padding,
 * every sequence id and every reserve frame, each sequence's tokens against
 * its limit and its reserve frames against the new blocks its tokens need.
 * A sequence's reserve frames
 * (kvmem_step_seq.nr_frames) become its first new blocks: the client
 * already wrote into them, at the slots it computed, and the daemon's
 * append gives the same slots. Then sequences are processed in order and the
 * first failure stops the batch: the ones before it are done, the failing
 * one is as it was.
 */
#include <errno.h>
#include <string.h>
#include "kvmemd.h"
#include "msg.h"

struct step_ctx {
	struct kvmem_step req;
	const char *seqs;		/* struct kvmem_step_seq array */
	const u32 *rframes;		/* reserve frames, all sequences' */
	const u32 *ids;			/* token ids, all sequences', or NULL */
	u32 nr_ids;			/* token ids used so far */
	u32 total_tokens;
	u32 flags;			/* KV_ALLOC_* */
	char *out;
	size_t room;
	u32 nr_frames;			/* frames written so far */
	u32 max_frames;			/* room for frames */
	u32 nr_slots;			/* slots written so far */
	u32 nr_given;			/* reserve frames used so far */
	bool noslots;			/* KVMEM_STEP_NOSLOTS */
};

static void step_seq_get(const struct step_ctx *x, u32 i, struct kvmem_step_seq *s)
{
	memcpy(s, x->seqs + (size_t)i * sizeof(*s), sizeof(*s));
}

/* The fixed part of a STEP, by the struct-size rule; offsets located. */
static int step_parse_head(const void *b, size_t blen, struct kvmem_step *req)
{
	const size_t head = 24;		/* nr_seqs .. pad */
	__u32 offs[3];
	int err;

	if (blen < head)
		return -EINVAL;
	memcpy(req, b, head);
	if (!req->seqs_off || req->seqs_off % 8 || req->tokens_off % 4 || req->frames_off % 4)
		return -EINVAL;
	offs[0] = req->seqs_off;
	offs[1] = req->tokens_off;
	offs[2] = req->frames_off;
	err = kvmem_copy_head(req, sizeof(*req), b, blen, head, offs, 3);
	if (err)
		return err;
	if (!req->nr_seqs || req->nr_seqs > KVMEM_STEP_MAX_SEQS ||
	    (req->flags & ~(KVMEM_NOWAIT | KVMEM_STEP_NOSLOTS)) || req->pad || req->reserved[0] ||
	    req->nr_seqs > (blen - req->seqs_off) / sizeof(struct kvmem_step_seq))
		return -EINVAL;
	return 0;
}

/*
 * An entry against its sequence as the entries before it in STEP number
 * @step leave it (@sq->step_tokens appended by them, counted afresh when
 * @sq->step is another): its tokens within the sequence's limit, and its
 * reserve frames no more than the new blocks they need (none without
 * tokens), which kv_seq_append_frames() would refuse only once the
 * entries before it were done.
 */
static int step_check_append(struct kvmemd_seq *sq, const struct kvmem_step_seq *s,
			     u64 step)
{
	const u32 bt = kv_pool_geometry(kv_seq_pool(sq->seq))->block_tokens;
	u64 pos, have, need;

	if (sq->step != step) {
		sq->step = step;
		sq->step_tokens = 0;
	}
	pos = kv_seq_tokens(sq->seq) + sq->step_tokens;

	if (pos > KV_SEQ_MAX_TOKENS || s->nr_tokens > KV_SEQ_MAX_TOKENS - pos)
		return -E2BIG;
	have = sq->step_tokens ? (pos + bt - 1) / bt : kv_seq_nr_blocks(sq->seq);
	need = (pos + s->nr_tokens + bt - 1) / bt - have;
	if (s->nr_frames > (s->nr_tokens ? need : 0))
		return -EINVAL;
	sq->step_tokens += s->nr_tokens;
	return 0;
}

/*
 * Count tokens and reserve frames, checking every id and every entry
 * (step_check_append(), under a number no earlier check of the client's
 * had, a retry of a waiting STEP included). Tokens are bounded by
 * KVMEM_STEP_MAX_TOKENS where the reply or the request carries one entry
 * per token; a sync (no slots, no ids) only by the sequence limit.
 */
static int step_parse_seqs(struct kvmemd_client *c, struct step_ctx *x, u64 *total,
			   u64 *frames)
{
	u64 max = (x->req.flags & KVMEM_STEP_NOSLOTS) && !x->req.tokens_off ?
		  (u64)KV_SEQ_MAX_TOKENS * KVMEM_STEP_MAX_SEQS : KVMEM_STEP_MAX_TOKENS;
	const u64 step = ++c->nr_step_checks;
	struct kvmem_step_seq s;
	struct kvmemd_seq *sq;
	int err;
	u32 i;

	*total = *frames = 0;
	for (i = 0; i < x->req.nr_seqs; i++) {
		step_seq_get(x, i, &s);
		sq = idr_find(&c->seqs, s.seq);
		if (s.nr_tokens > max || s.nr_frames > KVMEM_RESERVE_MAX)
			return -EINVAL;
		if (!sq)
			return -ENOENT;
		err = step_check_append(sq, &s, step);
		if (err)
			return err;
		*total += s.nr_tokens;
		*frames += s.nr_frames;
	}
	return *total > max || *frames > KVMEM_RESERVE_MAX ? -EINVAL : 0;
}

/*
 * No reserve frame named twice, across all the sequences: each is marked
 * (its owner set to ~client id, which no client has) as it is seen, then
 * all are given back to the client. All are the client's (checked before).
 */
static bool step_frames_distinct(struct kvmemd_client *c, struct step_ctx *x)
{
	struct kvmem_step_seq s;
	struct kvmemd_seq *sq;
	u32 i, j, at = 0, f;
	bool ok = true;
	int pass;

	for (pass = 0; pass < 2; pass++, at = 0) {
		for (i = 0; i < x->req.nr_seqs; i++) {
			step_seq_get(x, i, &s);
			sq = idr_find(&c->seqs, s.seq);
			for (j = 0; j < s.nr_frames; j++) {
				f = x->rframes[at + j];
				if (pass) {
					sq->pool->owner[f] = c->id;
				} else if (sq->pool->owner[f] != c->id) {
					ok = false;	/* marked already */
				} else {
					sq->pool->owner[f] = ~c->id;
				}
			}
			at += s.nr_frames;
		}
	}
	return ok;
}

/* Every reserve frame named must be this client's, in the right pool, once. */
static int step_parse_frames(struct kvmemd_client *c, struct step_ctx *x, const void *b,
			     size_t blen, u64 frames)
{
	struct kvmem_step_seq s;
	struct kvmemd_seq *sq;
	u32 i, at = 0;

	if (!frames)
		return 0;
	if (!x->req.frames_off || frames > (blen - x->req.frames_off) / sizeof(u32))
		return -EINVAL;
	x->rframes = (const u32 *)((const char *)b + x->req.frames_off);
	for (i = 0; i < x->req.nr_seqs; i++) {
		step_seq_get(x, i, &s);
		sq = idr_find(&c->seqs, s.seq);
		if (!kvmemd_reserve_owns(sq->pool, c, x->rframes + at, s.nr_frames))
			return -EINVAL;
		at += s.nr_frames;
	}
	return step_frames_distinct(c, x) ? 0 : -EINVAL;
}

static int step_parse(struct kvmemd_client *c, const void *b, size_t blen, struct step_ctx *x)
{
	u64 total, frames;
	int err;

	err = step_parse_head(b, blen, &x->req);
	if (err)
		return err;
	x->seqs = (const char *)b + x->req.seqs_off;
	err = step_parse_seqs(c, x, &total, &frames);
	err = err ?: step_parse_frames(c, x, b, blen, frames);
	if (err)
		return err;
	/* kvmem_copy_head() checked every offset against @blen. */
	if (x->req.tokens_off && total > (blen - x->req.tokens_off) / sizeof(u32))
		return -EINVAL;
	if (x->req.tokens_off)
		x->ids = (const u32 *)((const char *)b + x->req.tokens_off);
	x->noslots = x->req.flags & KVMEM_STEP_NOSLOTS;
	x->total_tokens = x->noslots ? 0 : (u32)total;
	x->flags = x->req.flags & KVMEM_NOWAIT ? KV_ALLOC_NOWAIT : 0;
	return 0;
}

/* Upper bound of the table entries one sequence's result may report. */
static u32 step_frames_bound(struct kv_seq *seq, u32 n, bool active)
{
	const struct kv_geometry *g = kv_pool_geometry(kv_seq_pool(seq));
	u64 after = ((u64)kv_seq_tokens(seq) + n + g->block_tokens - 1) / g->block_tokens;
	u32 nb = kv_seq_nr_blocks(seq);

	if (!active || !nb)
		return (u32)after;
	return (u32)(after - (nb - 1));
}

static int step_one(struct step_ctx *x, struct kvmemd_client *c, struct kvmemd_seq *s,
		    const struct kvmem_step_seq *ss, struct kvmem_step_seq_reply *rep,
		    u64 *slots, u32 *frames)
{
	const u32 *given = x->rframes ? x->rframes + x->nr_given : NULL;
	const u32 *ids = x->ids ? x->ids + x->nr_ids : NULL;
	u32 n = ss->nr_tokens;
	bool active = kv_seq_is_active(s->seq);
	u32 nb = kv_seq_nr_blocks(s->seq), last = KV_FRAME_NONE, first;
	int err;

	if (step_frames_bound(s->seq, n, active) > x->max_frames - x->nr_frames)
		return -ENOBUFS;
	if (active && nb)
		last = kv_seq_block_frame(s->seq, nb - 1);
	if (!active) {
		err = kv_seq_activate(s->seq, x->flags);
		if (err)
			return err;
	}
	err = kv_seq_append_frames(s->seq, n, ids, x->noslots ? NULL : slots, x->flags, given,
				   ss->nr_frames);
	if (err) {
		if (!active)
			kv_seq_deactivate_flags(s->seq, KV_DEACTIVATE_UNWRITTEN);
		return err;
	}
	kvmemd_reserve_used(s->pool, c, given, ss->nr_frames);
	x->nr_given += ss->nr_frames;
	x->nr_ids += n;
	if (!active)
		first = 0;
	else if (nb && kv_seq_block_frame(s->seq, nb - 1) != last)
		first = nb - 1;
	else
		first = nb;
	rep->nr_tokens = kv_seq_tokens(s->seq);
	rep->nr_blocks = kv_seq_nr_blocks(s->seq);
	rep->first_changed = first;
	rep->nr_slots = x->noslots ? 0 : n;
	kv_seq_block_frames(s->seq, first, rep->nr_blocks - first, frames + x->nr_frames);
	x->nr_frames += rep->nr_blocks - first;
	x->nr_slots += rep->nr_slots;
	return 0;
}

/**
 * kvmemd_op_step() - the STEP request
 * @d:       daemon
 * @c:       client
 * @b:       request body
 * @blen:    its length
 * @out:     reply body buffer
 * @room:    its size
 * @out_len: receives the reply body's length
 *
 * Return: 0, or the error that stopped the batch (the reply's batch head
 * says where).
 */
int kvmemd_op_step(struct kvmemd *d, struct kvmemd_client *c, const void *b, size_t blen,
		   char *out, size_t room, size_t *out_len)
{
	struct kvmem_step_reply *head = (struct kvmem_step_reply *)out;
	struct kvmem_step_seq_reply *reps;
	struct step_ctx x = { .out = out, .room = room };
	struct kvmem_step_seq s;
	u64 *slots;
	u32 *frames, i;
	size_t off;
	int err;

	memset(head, 0, sizeof(*head));
	head->batch.failed = -1;
	*out_len = sizeof(*head);
	err = step_parse(c, b, blen, &x);
	if (err)
		return err;
	head->seqs_off = sizeof(*head);
	off = sizeof(*head) + (size_t)x.req.nr_seqs * sizeof(*reps);
	off = (off + 7) & ~(size_t)7;
	head->slots_off = (u32)off;
	off += (size_t)x.total_tokens * sizeof(u64);
	head->frames_off = (u32)off;
	if (off > room)
		return -ENOBUFS;
	x.max_frames = (u32)((room - off) / sizeof(u32));
	reps = (struct kvmem_step_seq_reply *)(out + head->seqs_off);
	slots = (u64 *)(out + head->slots_off);
	frames = (u32 *)(out + head->frames_off);
	memset(reps, 0, (size_t)x.req.nr_seqs * sizeof(*reps));
	for (i = 0; i < x.req.nr_seqs; i++) {
		step_seq_get(&x, i, &s);
		err = step_one(&x, c, idr_find(&c->seqs, s.seq), &s, &reps[i],
			       slots + x.nr_slots, frames);
		if (err) {
			head->batch.failed = (s32)i;
			break;
		}
		head->batch.done++;
	}
	*out_len = head->frames_off + (size_t)x.nr_frames * sizeof(u32);
	return err;
}
