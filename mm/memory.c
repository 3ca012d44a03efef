// SPDX-License-Identifier: MIT
/*
 * Writes into a sequence, as the kernel's mm/memory.c handles write faults:
 * appending tokens allocates fresh blocks on the device tier, and a write
 * into a block that another sequence shares (after fork) copies the block
 * first (copy-on-write). Both go through seq_fault(), which allocates every
 * frame the write needs before it changes anything, so a failure leaves
 * the sequence as it was.
 *
 * A write that succeeds hands the prefix cache the sequence's blocks that
 * filled before it (their K and V are written by now: a failed write says
 * nothing of them), and records the new tokens' ids, which name the blocks
 * they fill at the next write.
 */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define NO_COW		UINT32_MAX
#define FRAMES_ONSTACK	16

/*
 * Replace the shared block at table[@idx] with a private copy in @frame.
 * @held frames of the device tier (@frame among them) allocated by the
 * caller are counted in flight while the lock is dropped for the copy
 * (frames given by the caller are counted already).
 */
static int cow_block(struct kv_seq *seq, u32 idx, u32 frame, u32 held)
{
	struct kv_pool *pool = seq->pool;
	struct kv_block *old = kv_block(pool, seq->table[idx]), *nb;
	struct kv_copy c = { KV_TIER_DEVICE, old->frame[KV_TIER_DEVICE], KV_TIER_DEVICE, frame };
	int err;

	/* old is pinned by this sequence: it cannot move while unlocked. */
	pool->tier[KV_TIER_DEVICE].nr_inflight += held;
	kv_pool_unlock(pool);
	err = kv_copy_run(pool, &c, 1);
	kv_pool_lock(pool);
	pool->tier[KV_TIER_DEVICE].nr_inflight -= held;
	if (err) {
		count_vm_event(pool, KV_COPY_FAIL);
		return err;
	}
	nb = kv_block_alloc(pool, KV_TIER_DEVICE, frame);
	nb->flags |= KV_BLOCK_REFERENCED;
	kv_block_pin(pool, nb);
	seq->table[idx] = kv_block_idx(pool, nb);
	kv_block_unpin(pool, old);
	kv_block_put(pool, old);
	count_vm_event(pool, KV_COW_COPY);
	return 0;
}

static bool block_shared(struct kv_seq *seq, u32 idx)
{
	return idx != NO_COW && kv_block(seq->pool, seq->table[idx])->refcount > 1;
}

/* Add @n fresh pinned blocks in @frames at the end of the table. */
static void seq_add_blocks(struct kv_seq *seq, const u32 *frames, u32 n)
{
	struct kv_pool *pool = seq->pool;
	struct kv_block *b;
	u32 i;

	for (i = 0; i < n; i++) {
		b = kv_block_alloc(pool, KV_TIER_DEVICE, frames[i]);
		b->flags |= KV_BLOCK_REFERENCED;
		kv_block_pin(pool, b);
		seq->table[seq->nr_blocks++] = kv_block_idx(pool, b);
	}
}

/**
 * struct write_req - what a write into a sequence needs
 * @cow:      table index to copy if shared, or NO_COW
 * @nr_new:   blocks to add at the end
 * @flags:    KV_ALLOC_*
 * @pos:      first token written
 * @n:        tokens written; the count is raised to cover them
 * @slots:    receives their slots, or NULL
 * @given:    frames handed out raw (kv_frames_alloc()) to use for the
 *            first @nr_given new blocks
 * @nr_given: entries of @given, <= @nr_new
 * @ids:      the written tokens' ids, or NULL
 */
struct write_req {
	u32 cow;
	u32 nr_new;
	u32 flags;
	u32 pos;
	u32 n;
	u64 *slots;
	const u32 *given;
	u32 nr_given;
	const u32 *ids;
};

/*
 * Prepare an active sequence for a write: take the given frames, allocate
 * the rest, copy table[cow] if it is shared and add the new blocks. Pool
 * locked on entry and return; dropped for reclaim and for the copy. All or
 * nothing. @frames has room for nr_new + 1 entries.
 */
static int seq_fault(struct kv_seq *seq, const struct write_req *w, u32 *frames)
{
	struct kv_pool *pool = seq->pool;
	u32 nr_alloc = w->nr_new - w->nr_given + block_shared(seq, w->cow);
	u32 *mine = frames + w->nr_given;
	int err;

	err = kv_frames_take_raw(pool, KV_TIER_DEVICE, w->nr_given, w->given);
	if (err)
		return err;
	/* Neither raw nor a block's while reclaim may drop the lock below. */
	pool->tier[KV_TIER_DEVICE].nr_inflight += w->nr_given;
	if (w->nr_given)
		memcpy(frames, w->given, w->nr_given * sizeof(*frames));
	err = nr_alloc ? __kv_frames_alloc(pool, KV_TIER_DEVICE, nr_alloc, w->flags, mine) : 0;
	if (err)
		goto out_give;
	if (w->nr_new - w->nr_given < nr_alloc) {
		/* The sharer may have gone while reclaim ran unlocked. */
		err = block_shared(seq, w->cow) ?
		      cow_block(seq, w->cow, frames[w->nr_new], nr_alloc) : 1;
		if (err)
			__kv_frames_free(pool, KV_TIER_DEVICE, 1, &frames[w->nr_new]);
		if (err < 0) {
			__kv_frames_free(pool, KV_TIER_DEVICE, nr_alloc - 1, mine);
			goto out_give;
		}
	}
	pool->tier[KV_TIER_DEVICE].nr_inflight -= w->nr_given;
	seq_add_blocks(seq, frames, w->nr_new);
	return 0;

out_give:
	pool->tier[KV_TIER_DEVICE].nr_inflight -= w->nr_given;
	kv_frames_give_raw(pool, KV_TIER_DEVICE, w->nr_given, w->given);
	return err;
}

static u64 seq_slot(struct kv_seq *seq, u32 pos)
{
	struct kv_pool *pool = seq->pool;
	u32 bt = pool->geom.block_tokens;
	struct kv_block *b = kv_block(pool, seq->table[pos / bt]);

	return (u64)b->frame[KV_TIER_DEVICE] * bt + pos % bt;
}

/* The written tokens' ids extend the known ones, or end them. */
static void seq_note_ids(struct kv_seq *seq, const struct write_req *w)
{
	if (w->pos < seq->nr_tokens)
		prefix_seq_cut(seq, w->pos);
	if (w->ids && seq->nr_ids == w->pos) {
		memcpy(seq->ids + w->pos, w->ids, (size_t)w->n * sizeof(*w->ids));
		seq->nr_ids = w->pos + w->n;
	}
}

/*
 * seq_fault() with a frame array sized for the request and the checks;
 * then, under the same lock, the slots of the written tokens and the token
 * count raised to cover them, so that the table and the count change
 * together.
 */
static int seq_prepare_write(struct kv_seq *seq, const struct write_req *w)
{
	u32 onstack[FRAMES_ONSTACK], *frames = onstack, i, old;
	int err;

	if (!(seq->flags & KV_SEQ_ACTIVE) || (w->flags & ~KV_ALLOC_NOWAIT) ||
	    w->nr_given > w->nr_new)
		return -EINVAL;
	err = seq_reserve(seq, seq->nr_blocks + w->nr_new);
	if (!err && w->ids && seq->nr_ids == w->pos)
		err = seq_reserve_ids(seq, w->pos + w->n);
	if (err)
		return err;
	if (w->nr_new + 1 > FRAMES_ONSTACK) {
		frames = kv_meta_alloc(seq->pool, (w->nr_new + 1) * sizeof(*frames));
		if (!frames)
			return -ENOMEM;
	}
	kv_pool_lock(seq->pool);
	old = seq->nr_tokens;
	err = seq_fault(seq, w, frames);
	if (!err) {
		for (i = 0; w->slots && i < w->n; i++)
			w->slots[i] = seq_slot(seq, w->pos + i);
		/* A write that succeeds says the earlier tokens are written. */
		seq->nr_safe = old;
		seq_note_ids(seq, w);
		if (w->pos + w->n > seq->nr_tokens)
			seq->nr_tokens = w->pos + w->n;
		prefix_publish(seq, PUBLISH_ACTIVE);
	}
	kv_pool_unlock(seq->pool);
	if (frames != onstack)
		free(frames);
	return err;
}

/**
 * kv_seq_append() - append tokens to an active sequence
 * @seq:   active sequence
 * @n:     tokens to append
 * @slots: receives each new token's slot (frame * block_tokens + offset on
 *         the device tier), where the caller's kernels write its K and V;
 *         may be NULL
 * @flags: KV_ALLOC_NOWAIT or 0
 *
 * Allocates the blocks needed, pinned, and copies the partly filled last
 * block first if another sequence shares it.
 *
 * Return: 0; -EINVAL (not active, bad flags); -E2BIG (past
 * KV_SEQ_MAX_TOKENS); -EAGAIN (NOWAIT and below min); -ENOMEM; -EIO (the
 * copy failed). On error the sequence is unchanged.
 */
int kv_seq_append(struct kv_seq *seq, u32 n, u64 *slots, u32 flags)
{
	return kv_seq_append_frames(seq, n, NULL, slots, flags, NULL, 0);
}

/**
 * kv_seq_append_ids() - kv_seq_append() of tokens whose ids are known
 * @seq:   active sequence
 * @n:     tokens to append
 * @ids:   their ids; NULL as kv_seq_append()
 * @slots: receives each new token's slot; may be NULL
 * @flags: KV_ALLOC_NOWAIT or 0
 *
 * Blocks whose tokens all have known ids enter the prefix cache once
 * full and written (at the sequence's next write, deactivation or free).
 * Ids count only when every earlier token's id is known.
 *
 * Return: as kv_seq_append().
 */
int kv_seq_append_ids(struct kv_seq *seq, u32 n, const u32 *ids, u64 *slots, u32 flags)
{
	return kv_seq_append_frames(seq, n, ids, slots, flags, NULL, 0);
}

/**
 * kv_seq_append_frames() - kv_seq_append() whose first new blocks use
 * frames the caller holds raw
 * @seq:       active sequence
 * @n:         tokens to append
 * @ids:       their ids, or NULL (kv_seq_append_ids())
 * @slots:     receives each new token's slot; may be NULL
 * @flags:     KV_ALLOC_NOWAIT or 0
 * @frames:    device frames from kv_frames_alloc() (a client's reserve)
 * @nr_frames: how many; at most the number of new blocks the tokens need
 *
 * The frames become the new blocks in order; blocks needed beyond them
 * are allocated. A client that assigned its reserve frames to a sequence
 * itself (writing K and V there already) tells the pool here, and gets the
 * same slots it computed.
 *
 * Return: as kv_seq_append(); -EINVAL also when a frame was not handed out
 * raw, or there are more frames than new blocks. On error nothing changes
 * and the frames stay the caller's.
 */
int kv_seq_append_frames(struct kv_seq *seq, u32 n, const u32 *ids, u64 *slots, u32 flags,
			 const u32 *frames, u32 nr_frames)
{
	u32 bt = seq->pool->geom.block_tokens, pos = seq->nr_tokens;
	struct write_req w = { .cow = NO_COW, .flags = flags, .pos = pos, .n = n,
			       .slots = slots, .given = frames, .nr_given = nr_frames,
			       .ids = ids };

	if (!n)
		return (seq->flags & KV_SEQ_ACTIVE) && !nr_frames ? 0 : -EINVAL;
	if (n > KV_SEQ_MAX_TOKENS - pos)
		return -E2BIG;
	if (pos % bt)
		w.cow = seq->nr_blocks - 1;
	w.nr_new = (pos + n + bt - 1) / bt - seq->nr_blocks;
	return seq_prepare_write(seq, &w);
}

/**
 * kv_seq_write() - make a token of an active sequence writable
 * @seq:   active sequence
 * @pos:   token index, < kv_seq_tokens()
 * @slot:  receives the token's slot
 * @flags: KV_ALLOC_NOWAIT or 0
 *
 * Copies the token's block first if another sequence shares it.
 *
 * Return: 0; -EINVAL (not active, bad flags); -ERANGE (@pos past the end);
 * -EAGAIN; -ENOMEM; -EIO. On error the sequence is unchanged.
 */
int kv_seq_write(struct kv_seq *seq, u32 pos, u64 *slot, u32 flags)
{
	struct write_req w = { .cow = pos / seq->pool->geom.block_tokens, .flags = flags,
			       .pos = pos, .n = 1, .slots = slot };

	if (pos >= seq->nr_tokens)
		return seq->flags & KV_SEQ_ACTIVE ? -ERANGE : -EINVAL;
	return seq_prepare_write(seq, &w);
}
