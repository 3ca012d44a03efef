// SPDX-License-Identifier: MIT
/*
 * Sequences: create, fork, truncate, free. A sequence is an ordered table
 * of blocks (like a page table) and a token count. Fork copies the table
 * and takes a reference on every block, as fork() copies page tables: its
 * cost grows with the number of blocks, never with their bytes; writes
 * into shared blocks are copied later (memory.c). A sequence also keeps
 * the token ids it was told, which name its full blocks in the prefix
 * cache (prefix.c).
 *
 * The table belongs to the thread using the sequence; it is written under
 * pool->lock so that kv_pool_check() can read every table consistently.
 */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define TABLE_MIN 8

/**
 * kv_seq_create() - create an empty, inactive sequence
 * @pool: pool
 * @out:  receives the sequence
 *
 * Return: 0 or -ENOMEM.
 */
int kv_seq_create(struct kv_pool *pool, struct kv_seq **out)
{
	struct kv_seq *seq;

	seq = kv_meta_alloc(pool, sizeof(*seq));
	if (!seq)
		return -ENOMEM;
	seq->pool = pool;
	kv_pool_lock(pool);
	list_add_tail(&seq->node, &pool->seqs);
	pool->nr_seqs++;
	count_vm_event(pool, KV_SEQ_CREATE);
	kv_pool_unlock(pool);
	*out = seq;
	return 0;
}

/**
 * seq_reserve() - make room in the table for @nr_blocks entries
 * @seq:       sequence, pool NOT locked
 * @nr_blocks: entries needed
 *
 * Return: 0 or -ENOMEM (the table is unchanged).
 */
int seq_reserve(struct kv_seq *seq, u32 nr_blocks)
{
	struct kv_pool *pool = seq->pool;
	u32 cap = seq->capacity ? seq->capacity : TABLE_MIN;
	u32 *table, *old;

	if (nr_blocks <= seq->capacity)
		return 0;
	while (cap < nr_blocks)
		cap *= 2;
	table = kv_meta_alloc(pool, (size_t)cap * sizeof(*table));
	if (!table)
		return -ENOMEM;
	if (seq->nr_blocks)
		memcpy(table, seq->table, seq->nr_blocks * sizeof(*table));
	kv_pool_lock(pool);
	old = seq->table;
	seq->table = table;
	seq->capacity = cap;
	kv_pool_unlock(pool);
	free(old);
	return 0;
}

/**
 * seq_reserve_ids() - make room for @nr_ids token ids
 * @seq:    sequence, pool NOT locked
 * @nr_ids: entries needed
 *
 * Return: 0 or -ENOMEM (the ids are unchanged).
 */
int seq_reserve_ids(struct kv_seq *seq, u32 nr_ids)
{
	u32 cap = seq->ids_cap ? seq->ids_cap : 64;
	u32 *ids;

	if (nr_ids <= seq->ids_cap)
		return 0;
	while (cap < nr_ids)
		cap = cap > UINT32_MAX / 2 ? nr_ids : cap * 2;
	ids = kv_meta_realloc(seq->pool, seq->ids, (size_t)cap * sizeof(*ids));
	if (!ids)
		return -ENOMEM;
	seq->ids = ids;
	seq->ids_cap = cap;
	return 0;
}

/**
 * kv_seq_set_tenant() - set the tenant of a sequence that holds no tokens
 * @seq:    sequence
 * @tenant: tenant (the daemon uses the uid, or a name's number): its
 *          namespace in the prefix cache and its counters; KV_TENANT_NONE
 *          keeps the sequence out of the prefix cache
 *
 * Return: 0, or -EINVAL when the sequence holds tokens.
 */
int kv_seq_set_tenant(struct kv_seq *seq, u32 tenant)
{
	if (seq->nr_tokens)
		return -EINVAL;
	seq->tenant = tenant;
	return 0;
}

/**
 * kv_seq_fork() - create a sequence sharing every block of @seq
 * @seq: parent, active or not
 * @out: receives the child, inactive
 *
 * Return: 0 or -ENOMEM (nothing changed).
 */
int kv_seq_fork(struct kv_seq *seq, struct kv_seq **out)
{
	struct kv_pool *pool = seq->pool;
	struct kv_seq *child;
	u32 i;
	int err;

	err = kv_seq_create(pool, &child);
	if (err)
		return err;
	child->tenant = seq->tenant;
	err = seq_reserve(child, seq->nr_blocks);
	err = err ?: seq_reserve_ids(child, seq->nr_ids);
	if (err) {
		kv_seq_free(child);
		return err;
	}
	if (seq->nr_ids)
		memcpy(child->ids, seq->ids, (size_t)seq->nr_ids * sizeof(*seq->ids));
	kv_pool_lock(pool);
	for (i = 0; i < seq->nr_blocks; i++) {
		child->table[i] = seq->table[i];
		kv_block_get(kv_block(pool, seq->table[i]));
	}
	child->nr_blocks = seq->nr_blocks;
	child->nr_tokens = seq->nr_tokens;
	child->nr_ids = seq->nr_ids;
	child->nr_safe = seq->nr_safe;
	child->nr_cached = seq->nr_cached;
	count_vm_event(pool, KV_SEQ_FORK);
	kv_pool_unlock(pool);
	*out = child;
	return 0;
}

/* Drop the table entries from @keep on; pool locked. */
static void seq_release_blocks(struct kv_seq *seq, u32 keep)
{
	struct kv_pool *pool = seq->pool;
	struct kv_block *b;

	while (seq->nr_blocks > keep) {
		b = kv_block(pool, seq->table[--seq->nr_blocks]);
		if (seq->flags & KV_SEQ_ACTIVE)
			kv_block_unpin(pool, b);
		prefix_touch(pool, b);
		kv_block_put(pool, b);
	}
}

/**
 * kv_seq_truncate() - drop tokens from the end of a sequence
 * @seq:       sequence
 * @nr_tokens: tokens to keep, at most kv_seq_tokens()
 *
 * Blocks left empty are released; a partly kept block stays and later
 * appends overwrite its tail (copying it first if it is shared).
 *
 * Return: 0, or -EINVAL when @nr_tokens exceeds the sequence.
 */
int kv_seq_truncate(struct kv_seq *seq, u32 nr_tokens)
{
	struct kv_pool *pool = seq->pool;
	u32 bt = pool->geom.block_tokens;

	if (nr_tokens > seq->nr_tokens)
		return -EINVAL;
	kv_pool_lock(pool);
	seq_release_blocks(seq, (nr_tokens + bt - 1) / bt);
	seq->nr_tokens = nr_tokens;
	prefix_seq_cut(seq, nr_tokens);
	kv_pool_unlock(pool);
	return 0;
}

/**
 * kv_seq_free() - release every block of a sequence and free it
 * @seq: sequence, active or not; NULL is ignored
 *
 * Its full blocks with known token ids stay in the prefix cache, except
 * those of its last append while active (their K and V may not be
 * written).
 */
void kv_seq_free(struct kv_seq *seq)
{
	struct kv_pool *pool;

	if (!seq)
		return;
	pool = seq->pool;
	kv_pool_lock(pool);
	prefix_publish(seq, PUBLISH_FINAL);
	seq_release_blocks(seq, 0);
	list_del_init(&seq->node);
	pool->nr_seqs--;
	count_vm_event(pool, KV_SEQ_FREE);
	kv_pool_unlock(pool);
	free(seq->table);
	free(seq->ids);
	free(seq);
}

/** kv_seq_pool() - the pool a sequence belongs to */
struct kv_pool *kv_seq_pool(const struct kv_seq *seq)
{
	return seq->pool;
}

/** kv_seq_tokens() - tokens held by a sequence */
u32 kv_seq_tokens(const struct kv_seq *seq)
{
	return seq->nr_tokens;
}

/** kv_seq_nr_blocks() - blocks in a sequence's table */
u32 kv_seq_nr_blocks(const struct kv_seq *seq)
{
	return seq->nr_blocks;
}

/** kv_seq_is_active() - whether a sequence is activated (pinned) */
int kv_seq_is_active(const struct kv_seq *seq)
{
	return !!(seq->flags & KV_SEQ_ACTIVE);
}

/**
 * kv_seq_block_frames() - device frames of blocks [@first, @first + @n) of
 * an active sequence, under one lock
 * @seq:    active sequence
 * @first:  first block index
 * @n:      blocks; @first + @n <= kv_seq_nr_blocks()
 * @frames: receives the frames
 *
 * Return: 0, or -EINVAL when the sequence is not active or the range is
 * past its table.
 */
int kv_seq_block_frames(struct kv_seq *seq, u32 first, u32 n, u32 *frames)
{
	struct kv_pool *pool = seq->pool;
	u32 i;

	if (!(seq->flags & KV_SEQ_ACTIVE) || first > seq->nr_blocks || n > seq->nr_blocks - first)
		return -EINVAL;
	kv_pool_lock(pool);
	for (i = 0; i < n; i++)
		frames[i] = kv_block(pool, seq->table[first + i])->frame[KV_TIER_DEVICE];
	kv_pool_unlock(pool);
	return 0;
}

/**
 * kv_seq_block_table() - device frames of an active sequence's blocks
 * @seq:    active sequence
 * @frames: receives one frame number per block, in order
 * @n:      room in @frames
 *
 * The frames stay valid until the sequence is deactivated, truncated or
 * freed, or a write copies a shared block.
 *
 * Return: the number of blocks, -EINVAL when the sequence is not active,
 * -ENOSPC when @n is too small.
 */
int kv_seq_block_table(struct kv_seq *seq, u32 *frames, u32 n)
{
	if (!(seq->flags & KV_SEQ_ACTIVE))
		return -EINVAL;
	if (n < seq->nr_blocks)
		return -ENOSPC;
	kv_seq_block_frames(seq, 0, seq->nr_blocks, frames);
	return (int)seq->nr_blocks;
}

/**
 * kv_seq_block_frame() - device frame of one block of an active sequence
 * @seq: active sequence
 * @idx: block index, < kv_seq_nr_blocks()
 *
 * Return: the frame, or KV_FRAME_NONE when the sequence is not active or
 * @idx is out of range.
 */
u32 kv_seq_block_frame(struct kv_seq *seq, u32 idx)
{
	struct kv_pool *pool = seq->pool;
	u32 frame;

	if (!(seq->flags & KV_SEQ_ACTIVE) || idx >= seq->nr_blocks)
		return KV_FRAME_NONE;
	kv_pool_lock(pool);
	frame = kv_block(pool, seq->table[idx])->frame[KV_TIER_DEVICE];
	kv_pool_unlock(pool);
	return frame;
}
