// SPDX-License-Identifier: MIT
/*
 * Activation: make every block of a sequence resident on the device tier
 * and pin it there, as mlock() faults pages in and locks them; and
 * deactivation, which unpins and hands the blocks back to reclaim.
 *
 * Activation pins the blocks already on the device, isolates those on the
 * host, allocates device frames for them (reclaiming others if needed),
 * promotes them in batches and pins them. On any failure every pin it took
 * is dropped: the sequence is inactive as before, with its contents intact;
 * blocks already promoted stay on the device tier, unpinned.
 */
#include <stdlib.h>
#include "internal.h"

/*
 * Wait until no block of @seq is being moved. Pool locked (dropped while
 * waiting). Returns 0, or -EAGAIN when NOWAIT finds a locked block.
 */
static int seq_wait_unlocked(struct kv_seq *seq, u32 flags)
{
	struct kv_pool *pool = seq->pool;
	u32 i;

restart:
	for (i = 0; i < seq->nr_blocks; i++) {
		if (!(kv_block(pool, seq->table[i])->flags & KV_BLOCK_LOCKED))
			continue;
		if (flags & KV_ALLOC_NOWAIT)
			return -EAGAIN;
		count_vm_event(pool, KV_LOCKED_WAIT);
		pthread_cond_wait(&pool->unlocked, &pool->lock);
		goto restart;
	}
	return 0;
}

/*
 * Pin the device-resident blocks; isolate the others into @host, those on
 * the host tier first, then those in swap (a batch of copies has one
 * source tier).
 */
static u32 seq_pin_or_isolate(struct kv_seq *seq, struct kv_block **host)
{
	struct kv_pool *pool = seq->pool;
	struct kv_block *b;
	u32 i, m = 0, t;

	for (i = 0; i < seq->nr_blocks; i++) {
		b = kv_block(pool, seq->table[i]);
		if (b->tier == KV_TIER_DEVICE)
			kv_block_pin(pool, b);
	}
	for (t = KV_TIER_HOST; t < KV_NR_TIERS; t++) {
		for (i = 0; i < seq->nr_blocks; i++) {
			b = kv_block(pool, seq->table[i]);
			if (b->tier != t)
				continue;
			kv_block_isolate(pool, b);
			host[m++] = b;
		}
	}
	return m;
}

/* Blocks of @host from @first on that share its tier, at most @max. */
static u32 same_tier_run(struct kv_block **host, u32 first, u32 m, u32 max)
{
	u32 n = 1;

	while (first + n < m && n < max && host[first + n]->tier == host[first]->tier)
		n++;
	return n;
}

/* Undo seq_pin_or_isolate() after a failed promotion. */
static void seq_unpin_putback(struct kv_seq *seq, struct kv_block **host, u32 m)
{
	struct kv_pool *pool = seq->pool;
	struct kv_block *b;
	u32 i;

	for (i = 0; i < seq->nr_blocks; i++) {
		b = kv_block(pool, seq->table[i]);
		if (!(b->flags & KV_BLOCK_LOCKED))
			kv_block_unpin(pool, b);
	}
	for (i = 0; i < m; i++)
		kv_block_putback(pool, host[i]);
	pthread_cond_broadcast(&pool->unlocked);
}

/*
 * Promote the isolated blocks in @host to the device tier and pin them, in
 * chunks: each chunk's promotion frees host frames that the next chunk's
 * reclaim may need, so a sequence can trade places with cold device blocks
 * even when the host tier has little room. A chunk that cannot get frames
 * is halved before giving up. *@done counts the blocks promoted.
 */
static int seq_promote(struct kv_seq *seq, struct kv_block **host, u32 m,
		       u32 *frames, u32 flags, u32 *done)
{
	struct kv_pool *pool = seq->pool;
	u32 chunk = m, i;
	int err;

	while (*done < m) {
		if (chunk > m - *done)
			chunk = m - *done;
		chunk = same_tier_run(host, *done, m, chunk);
		err = __kv_frames_alloc(pool, KV_TIER_DEVICE, chunk, flags | KV_ALLOC_PROMOTE,
					frames);
		if (err == -ENOMEM && chunk > 1) {
			chunk /= 2;
			continue;
		}
		if (err)
			return err;
		err = kv_migrate_blocks(pool, host + *done, chunk, KV_TIER_DEVICE, frames);
		if (err)
			return err;
		for (i = *done; i < *done + chunk; i++) {
			kv_block_pin(pool, host[i]);
			kv_block_putback(pool, host[i]);
		}
		*done += chunk;
		pthread_cond_broadcast(&pool->unlocked);
	}
	return 0;
}

static int seq_activate_locked(struct kv_seq *seq, struct kv_block **host,
			       u32 *frames, u32 flags)
{
	struct kv_pool *pool = seq->pool;
	u32 i, m, done = 0;
	int err;

	err = seq_wait_unlocked(seq, flags);
	if (err)
		return err;
	m = seq_pin_or_isolate(seq, host);
	if (m) {
		seq->flags |= KV_SEQ_ACTIVATING;
		err = seq_promote(seq, host, m, frames, flags, &done);
		seq->flags &= ~KV_SEQ_ACTIVATING;
		if (err) {
			seq_unpin_putback(seq, host + done, m - done);
			return err;
		}
	}
	for (i = 0; i < seq->nr_blocks; i++)
		mark_block_accessed(pool, kv_block(pool, seq->table[i]));
	seq->flags |= KV_SEQ_ACTIVE;
	count_vm_event(pool, KV_SEQ_ACTIVATE);
	return 0;
}

/**
 * kv_seq_activate() - make a sequence resident on the device tier, pinned
 * @seq:   sequence; activating an active one does nothing
 * @flags: KV_ALLOC_NOWAIT: fail with -EAGAIN instead of waiting for a
 *         block being moved or reclaiming directly
 *
 * Until kv_seq_deactivate(), none of its blocks moves, and
 * kv_seq_block_table() gives the frames kernels may read and write.
 *
 * Return: 0; -EINVAL (bad flags); -EAGAIN; -ENOMEM (the device tier cannot
 * hold the sequence); -EIO (a copy failed). On error nothing is pinned and
 * the sequence is unchanged (some of its blocks may have been promoted).
 */
int kv_seq_activate(struct kv_seq *seq, u32 flags)
{
	struct kv_pool *pool = seq->pool;
	struct kv_block **host = NULL;
	u32 *frames = NULL;
	int err;

	if (flags & ~KV_ALLOC_NOWAIT)
		return -EINVAL;
	if (seq->flags & KV_SEQ_ACTIVE)
		return 0;
	if (seq->nr_blocks) {
		host = kv_meta_alloc(pool, seq->nr_blocks * sizeof(*host));
		frames = kv_meta_alloc(pool, seq->nr_blocks * sizeof(*frames));
		if (!host || !frames) {
			err = -ENOMEM;
			goto out_free;
		}
	}
	kv_pool_lock(pool);
	err = seq_activate_locked(seq, host, frames, flags);
	kv_pool_unlock(pool);
out_free:
	free(frames);
	free(host);
	return err;
}

/**
 * kv_seq_deactivate() - unpin a sequence's blocks; they become reclaimable
 * @seq: sequence; deactivating an inactive one does nothing
 *
 * The caller's kernels must be done with the blocks (on a GPU: the stream
 * work that uses them has completed): its full blocks with known token ids
 * enter the prefix cache, and a block cached already as another is
 * replaced by the cached one.
 */
void kv_seq_deactivate(struct kv_seq *seq)
{
	kv_seq_deactivate_flags(seq, 0);
}

/**
 * kv_seq_deactivate_flags() - kv_seq_deactivate(), or with
 * KV_DEACTIVATE_UNWRITTEN the undoing of an activation whose caller never
 * ran kernels on the sequence (a failed batch): nothing is published, as
 * its last tokens' K and V may not be written
 * @seq:   sequence
 * @flags: 0 or KV_DEACTIVATE_UNWRITTEN
 */
void kv_seq_deactivate_flags(struct kv_seq *seq, u32 flags)
{
	struct kv_pool *pool = seq->pool;
	u32 i;

	kv_pool_lock(pool);
	if (seq->flags & KV_SEQ_ACTIVE) {
		for (i = 0; i < seq->nr_blocks; i++)
			kv_block_unpin(pool, kv_block(pool, seq->table[i]));
		seq->flags &= ~KV_SEQ_ACTIVE;
		if (!(flags & KV_DEACTIVATE_UNWRITTEN)) {
			seq->nr_safe = seq->nr_tokens;
			prefix_publish(seq, PUBLISH_DEDUP);
		}
		count_vm_event(pool, KV_SEQ_DEACTIVATE);
	}
	kv_pool_unlock(pool);
}
