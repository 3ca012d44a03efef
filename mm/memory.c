// SPDX-License-Identifier: MIT
/*
 * Writes into a sequence, as the kernel's mm/memory.c handles write faults:
 * appending tokens allocates fresh blocks on the device tier, and a write
 * into a block that another sequence shares (after fork) copies the block
 * first (copy-on-write). Both go through seq_fault(), which allocates every
 * frame the write needs before it changes anything, so a failure leaves
 * the sequence as it was.
 */
#include <stdlib.h>
#include "internal.h"

#define NO_COW		UINT32_MAX
#define FRAMES_ONSTACK	16

/*
 * Replace the shared block at table[@idx] with a private copy in @frame.
 * @held frames of the device tier (@frame among them) belong to the caller
 * and are counted in flight while the lock is dropped for the copy.
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

/*
 * Prepare an active sequence for a write: copy table[@cow] if it is shared
 * (NO_COW for none) and add @nr_new blocks. Pool locked on entry and
 * return; dropped for reclaim and for the copy. All or nothing.
 */
static int seq_fault(struct kv_seq *seq, u32 cow, u32 nr_new, u32 flags, u32 *frames)
{
	struct kv_pool *pool = seq->pool;
	u32 n = nr_new + 1;	/* one spare for a copy */
	int err;

	if (!block_shared(seq, cow))
		n--;
	if (!n)
		return 0;
	err = __kv_frames_alloc(pool, KV_TIER_DEVICE, n, flags, frames);
	if (err)
		return err;
	if (n > nr_new) {
		/* The sharer may have gone while reclaim ran unlocked. */
		err = block_shared(seq, cow) ? cow_block(seq, cow, frames[nr_new], n) : 1;
		if (err)
			__kv_frames_free(pool, KV_TIER_DEVICE, 1, &frames[nr_new]);
		if (err < 0) {
			__kv_frames_free(pool, KV_TIER_DEVICE, nr_new, frames);
			return err;
		}
	}
	seq_add_blocks(seq, frames, nr_new);
	return 0;
}

static u64 seq_slot(struct kv_seq *seq, u32 pos)
{
	struct kv_pool *pool = seq->pool;
	u32 bt = pool->geom.block_tokens;
	struct kv_block *b = kv_block(pool, seq->table[pos / bt]);

	return (u64)b->frame[KV_TIER_DEVICE] * bt + pos % bt;
}

/*
 * seq_fault() with a frame array sized for the request and the checks;
 * then, under the same lock, the slots of tokens [@pos, @pos + @n) into
 * @slots (may be NULL) and the token count raised to cover them, so that
 * the table and the count change together.
 */
static int seq_prepare_write(struct kv_seq *seq, u32 cow, u32 nr_new, u32 flags,
			     u32 pos, u32 n, u64 *slots)
{
	u32 onstack[FRAMES_ONSTACK], *frames = onstack, i;
	int err;

	if (!(seq->flags & KV_SEQ_ACTIVE) || (flags & ~KV_ALLOC_NOWAIT))
		return -EINVAL;
	err = seq_reserve(seq, seq->nr_blocks + nr_new);
	if (err)
		return err;
	if (nr_new + 1 > FRAMES_ONSTACK) {
		frames = kv_meta_alloc(seq->pool, (nr_new + 1) * sizeof(*frames));
		if (!frames)
			return -ENOMEM;
	}
	kv_pool_lock(seq->pool);
	err = seq_fault(seq, cow, nr_new, flags, frames);
	if (!err) {
		for (i = 0; slots && i < n; i++)
			slots[i] = seq_slot(seq, pos + i);
		if (pos + n > seq->nr_tokens)
			seq->nr_tokens = pos + n;
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
	u32 bt = seq->pool->geom.block_tokens;
	u32 pos = seq->nr_tokens, cow = NO_COW, nr_new;

	if (!n)
		return seq->flags & KV_SEQ_ACTIVE ? 0 : -EINVAL;
	if (n > KV_SEQ_MAX_TOKENS - pos)
		return -E2BIG;
	if (pos % bt)
		cow = seq->nr_blocks - 1;
	nr_new = (pos + n + bt - 1) / bt - seq->nr_blocks;
	return seq_prepare_write(seq, cow, nr_new, flags, pos, n, slots);
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
	if (pos >= seq->nr_tokens)
		return seq->flags & KV_SEQ_ACTIVE ? -ERANGE : -EINVAL;
	return seq_prepare_write(seq, pos / seq->pool->geom.block_tokens, 0, flags,
				 pos, 1, slot);
}
